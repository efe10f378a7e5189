"""Kept import path for the sampling protocol and the ShuffleNet v1 space.

The mechanics live in `core.py`, each family's bounds in its own module. Nothing here
imports Ray: `ray_space()` imports it when called.
"""

from __future__ import annotations

from .core import FixedTrial, RandomTrial, SpaceBase, TrialLike
from .shufflenet_v1 import ShuffleNetV1Space

__all__ = ["FixedTrial", "RandomTrial", "ShuffleNetV1Space", "SpaceBase", "TrialLike"]
