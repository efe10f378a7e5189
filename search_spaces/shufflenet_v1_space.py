"""ShuffleNet v1's search space: the bounds of the paper's knobs and how a trial picks them.

The network it samples is `shufflenet_v1.py`; this file is never exported.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .sampling import SpaceBase, TrialLike, cat, integer
from .shufflenet_v1 import BASE_CHANNELS, KERNELS, PLACEMENTS, Arch, make_arch


@dataclass(frozen=True)
class ShuffleNetV1Space(SpaceBase):
    """Bounds of the search. Defaults span the paper's knobs and a little beyond."""

    groups: tuple[int, ...] = (1, 2, 3, 4, 8)
    per_stage_groups: bool = False
    widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    repeats: tuple[tuple[int, int], ...] = ((2, 6), (4, 10), (2, 6))
    placements: tuple[str, ...] = ("before_dw",)
    kernels: tuple[int, ...] = (3,)
    bottleneck_ratios: tuple[float, ...] = (0.25,)
    in_channels: int = 3
    num_classes: int = 1000
    small_input: bool = False
    name: str = field(default="shufflenet_v1")

    #: MACs do not grow monotonically with groups (the channel rule widens with them)
    ENUMERATE: ClassVar[tuple[str, ...]] = ("groups",)

    def validate(self) -> None:
        self._nonempty("groups", "widths", "placements", "kernels", "bottleneck_ratios", "repeats")
        self._check_choices("groups", list(BASE_CHANNELS))
        self._check_widths()
        self._check_choices("placements", PLACEMENTS)
        self._check_choices("kernels", KERNELS)
        self._check_choices("bottleneck_ratios", (0.125, 0.25, 0.5))
        self._check_repeats()

    @property
    def n_stages(self) -> int:
        return len(self.repeats)

    def _choose(self, trial: TrialLike) -> dict[str, Any]:
        c: dict[str, Any] = {}
        if self.per_stage_groups:
            c.update({f"groups_{s}": cat(trial, f"groups_{s}", self.groups) for s in self._stages()})
        else:
            c["groups"] = cat(trial, "groups", self.groups)
        c.update({f"repeats_{s}": integer(trial, f"repeats_{s}", *rr)
                  for s, rr in zip(self._stages(), self.repeats, strict=True)})
        c["shuffle"] = cat(trial, "shuffle", self.placements)
        c.update({f"kernel_{s}": cat(trial, f"kernel_{s}", self.kernels) for s in self._stages()})
        c["bottleneck_ratio"] = cat(trial, "bottleneck_ratio", self.bottleneck_ratios)
        return c

    def _build(self, c: dict[str, Any], width: float) -> Arch:
        st = self._stages()
        groups = tuple(c[f"groups_{s}"] for s in st) if self.per_stage_groups else (c["groups"],) * len(st)
        return make_arch(groups=groups, width=width, repeats=tuple(c[f"repeats_{s}"] for s in st),
                         shuffle=c["shuffle"], kernel=tuple(c[f"kernel_{s}"] for s in st),
                         bottleneck_ratio=c["bottleneck_ratio"], **self._io(None, None))

    def decode(self, arch: Arch) -> dict[str, Any] | None:
        st = arch.stages
        if (not isinstance(arch, Arch) or len(st) != self.n_stages or len({s.shuffle for s in st}) > 1
                or len({s.bottleneck_ratio for s in st}) > 1
                or (not self.per_stage_groups and len({s.groups for s in st}) > 1)):
            return None
        c: dict[str, Any] = {}
        for name, s in zip(self._stages(), st, strict=True):
            if self.per_stage_groups:
                c[f"groups_{name}"] = s.groups
            c[f"repeats_{name}"] = s.repeats
            c[f"kernel_{name}"] = s.kernel
        if not self.per_stage_groups:
            c["groups"] = st[0].groups
        c["shuffle"], c["bottleneck_ratio"] = st[0].shuffle, st[0].bottleneck_ratio
        return c

    def lut_archs(self, classes: int | None = None, in_channels: int | None = None) -> list[Arch]:
        """One arch per combination of the choices that change a part; repeats cut to <= 2.

        Two units per stage cover both of a stage's unit kinds (stride 2 first, stride 1
        after), so longer repeats add no new part.
        """
        n = self.n_stages
        group_sets = (list(itertools.product(self.groups, repeat=n)) if self.per_stage_groups
                      else [(g,) * n for g in self.groups])
        repeats = tuple(min(hi, 2) for _lo, hi in self.repeats)
        archs = []
        for gs, width, ratio, placement, ks in itertools.product(
            group_sets, self.widths, self.bottleneck_ratios, self.placements,
            itertools.product(self.kernels, repeat=n),
        ):
            try:
                archs.append(make_arch(groups=gs, width=width, repeats=repeats, shuffle=placement, kernel=ks,
                                       bottleneck_ratio=ratio, **self._io(classes, in_channels)))
            except ValueError:
                continue  # a combination the channel rule cannot build; sampling cannot produce it either
        return archs
