"""Token-length bins of Fernandez et al. (ACL 2025), as `workers/workload.py` defines them.

Replicated here because the coordinator side never imports `workers`; a unit
test keeps both copies equal. A bin b holds the lengths in (b/√2, b·√2];
lengths outside every bin get an open-ended bin ("I<32", "O>512").
"""

from __future__ import annotations

import math
from typing import Literal

INPUT_BINS: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
OUTPUT_BINS: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)

Kind = Literal["input", "output"]


def length_bin(length: int, kind: Kind = "input") -> int | None:
    """The bin centre holding `length`, or None outside every bin."""
    bins = INPUT_BINS if kind == "input" else OUTPUT_BINS
    if length <= 0:
        return None
    for b in bins:
        if b / math.sqrt(2) < length <= b * math.sqrt(2):
            return b
    return None


def bin_key(length: int | None, kind: Kind = "input") -> tuple[float, str]:
    """(sort key, name) of the bin of `length`: (128, "I128"), (-inf, "I<32"), ..."""
    prefix = "I" if kind == "input" else "O"
    bins = INPUT_BINS if kind == "input" else OUTPUT_BINS
    if length is None:
        return (-math.inf, f"{prefix}?")
    b = length_bin(length, kind)
    if b is not None:
        return (float(b), f"{prefix}{b}")
    if length <= bins[0]:
        return (-1.0, f"{prefix}<{bins[0]}")
    return (math.inf, f"{prefix}>{bins[-1]}")
