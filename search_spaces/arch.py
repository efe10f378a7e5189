"""Kept import path: ShuffleNet v1's architecture types now live in `shufflenet_v1.py`."""

from __future__ import annotations

from .core import SMALL_INPUT_MAX, ArchBase, round_to_multiple
from .shufflenet_v1 import KERNELS, PLACEMENTS, Arch, StageSpec

__all__ = ["KERNELS", "PLACEMENTS", "SMALL_INPUT_MAX", "Arch", "ArchBase", "StageSpec", "round_to_multiple"]
