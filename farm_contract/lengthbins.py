"""Token-length bins of Fernandez et al. (ACL 2025), one definition for both sides.

Workers pick dataset prompts by bin and name requests' bins; reports group
run points into input × output cells. A bin b holds the lengths in
(b/√2, b·√2]; lengths outside every bin get an open-ended name ("I<32",
"O>512"). Part of the wire contract: imports nothing of the project.
"""

from __future__ import annotations

import math
from typing import Literal

INPUT_BINS: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
OUTPUT_BINS: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)

Kind = Literal["input", "output"]


def length_bin(length: int, kind: Kind = "input") -> int | None:
    """The Fernandez et al. bin of a token length: b with b/√2 < length ≤ b·√2.

    None when the length lies outside the bins' range (below 23 or above 11,585
    input tokens; below 6 or above 724 output tokens).
    """
    bins = INPUT_BINS if kind == "input" else OUTPUT_BINS
    if length <= 0:
        return None
    for b in bins:
        if b / math.sqrt(2) < length <= b * math.sqrt(2):
            return b
    return None


def bin_name(length: int, kind: Kind = "input") -> str:
    """A name for the bin of a length: "I128", "O64"; "I<32" / "I>8192" outside the range."""
    return bin_key(length, kind)[1]


def bin_key(length: int | None, kind: Kind = "input") -> tuple[float, str]:
    """(sort key, name) of the bin of `length`: (128, "I128"), (-1, "I<32"),
    (inf, "I>8192"), (-inf, "I?") for an unknown length."""
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
