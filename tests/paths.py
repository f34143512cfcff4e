"""The repository's paths for tests, wherever in tests/ a test module sits."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: farm/, workers/, examples/, docs/, deploy/ and tests/ are under it."""
