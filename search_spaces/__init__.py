"""What can be searched: architecture families, their networks, presets and spaces.

Each family is a model module (the network: `shufflenet_v1.py`) and a space module beside
it (the search space: `shufflenet_v1_space.py`); this file registers them by name and
offers the generic entry points (`preset`, `build_model`, `get_space`, `Arch.from_dict`)
that dispatch on an architecture's `family`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from . import resnext as _resnext
from . import shufflenet_v1 as _v1
from . import shufflenet_v1_supernet as _v1_supernet
from . import shufflenet_v2 as _v2
from .network import ArchBase, Block, MacsPart, unknown_preset
from .registry import (
    Family,
    family_of,
    family_of_preset,
    get_family,
    get_space,
    list_families,
    list_spaces,
    register_family,
)
from .resnext_space import ResNeXtSpace
from .sampling import FixedTrial, RandomTrial, SpaceBase
from .shuffle import channel_shuffle
from .shufflenet_v1 import KERNELS, PLACEMENTS, Arch, StageSpec, make_arch, shufflenet_v1, stage_channels
from .shufflenet_v1_space import ShuffleNetV1Space
from .shufflenet_v2_space import ShuffleNetV2Space

register_family(_v1, ShuffleNetV1Space, supernet=_v1_supernet)
register_family(_v2, ShuffleNetV2Space)
register_family(_resnext, ResNeXtSpace)


class _Presets(Mapping[str, str]):
    """Every registered preset name -> its family name (a live view, in registration order)."""

    def _all(self) -> dict[str, str]:
        return {n: f for f in list_families() for n in get_family(f).PRESETS}

    def __getitem__(self, name: str) -> str:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


PRESETS: Mapping[str, str] = _Presets()


def preset(name: str) -> Any:
    """A preset of any family by its torchvision-style name, e.g. `resnext50_32x4d`."""
    fam = family_of_preset(name)
    if fam is None:
        raise ValueError(unknown_preset(name, PRESETS, [next(iter(get_family(f).PRESETS)) for f in list_families()]))
    return fam.preset(name)


def build_model(arch: Any) -> nn.Module:
    """The one builder: an architecture of any family in, an `nn.Module` out."""
    return family_of(arch).build_model(arch)


__all__ = [
    "KERNELS",
    "PLACEMENTS",
    "PRESETS",
    "Arch",
    "ArchBase",
    "Block",
    "Family",
    "FixedTrial",
    "MacsPart",
    "RandomTrial",
    "ResNeXtSpace",
    "ShuffleNetV1Space",
    "ShuffleNetV2Space",
    "SpaceBase",
    "StageSpec",
    "build_model",
    "channel_shuffle",
    "family_of",
    "family_of_preset",
    "get_family",
    "get_space",
    "list_families",
    "list_spaces",
    "make_arch",
    "preset",
    "register_family",
    "shufflenet_v1",
    "stage_channels",
    "unknown_preset",
]
