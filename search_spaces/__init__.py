"""What can be searched: architecture types, space bounds, model builders."""

from __future__ import annotations

from .arch import KERNELS, PLACEMENTS, Arch, StageSpec
from .registry import get_space, list_spaces, register_space
from .shuffle import channel_shuffle
from .shufflenet_v1 import PRESETS, build_model, make_arch, preset, shufflenet_v1, stage_channels
from .space import RandomTrial, ShuffleNetV1Space

__all__ = [
    "KERNELS",
    "PLACEMENTS",
    "PRESETS",
    "RandomTrial",
    "Arch",
    "ShuffleNetV1Space",
    "StageSpec",
    "build_model",
    "channel_shuffle",
    "get_space",
    "list_spaces",
    "make_arch",
    "preset",
    "register_space",
    "shufflenet_v1",
    "stage_channels",
]
