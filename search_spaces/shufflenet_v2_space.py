"""ShuffleNet v2's search space: SPOS's knobs (a depthwise kernel per unit, stage repeats)
plus the width. The network it samples is `shufflenet_v2.py`; this file is never exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .sampling import SpaceBase, TrialLike, cat, integer
from .shufflenet_v2 import KERNELS, Arch, make_arch


@dataclass(frozen=True)
class ShuffleNetV2Space(SpaceBase):
    """SPOS's space: a depthwise kernel per unit, plus stage repeats and the width.

    Every unit up to the largest repeats has its own kernel label (`kernel_stage3_u5`),
    drawn on every trial so the sampler sees one fixed space; units past a stage's
    sampled repeats ignore theirs.
    """

    kernels: tuple[int, ...] = (3, 5, 7)
    widths: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    repeats: tuple[tuple[int, int], ...] = ((4, 4), (8, 8), (4, 4))
    in_channels: int = 3
    num_classes: int = 1000
    small_input: bool = False
    name: str = field(default="shufflenet_v2")

    def validate(self) -> None:
        self._nonempty("kernels", "widths", "repeats")
        self._check_choices("kernels", KERNELS)
        self._check_widths()
        self._check_repeats(high=16)

    def _choose(self, trial: TrialLike) -> dict[str, Any]:
        c: dict[str, Any] = {}
        for s, (lo, hi) in zip(self._stages(), self.repeats, strict=True):
            c[f"repeats_{s}"] = integer(trial, f"repeats_{s}", lo, hi)
            c.update({f"kernel_{s}_u{u}": cat(trial, f"kernel_{s}_u{u}", self.kernels) for u in range(hi)})
        return c

    def _build(self, c: dict[str, Any], width: float) -> Arch:
        kernels = tuple(tuple(c[f"kernel_{s}_u{u}"] for u in range(c[f"repeats_{s}"])) for s in self._stages())
        return make_arch(width=width, kernels=kernels, **self._io(None, None))

    def decode(self, arch: Arch) -> dict[str, Any] | None:
        if not isinstance(arch, Arch) or len(arch.stages) != len(self.repeats):
            return None
        c: dict[str, Any] = {}
        for s, st, (_lo, hi) in zip(self._stages(), arch.stages, self.repeats, strict=True):
            c[f"repeats_{s}"] = st.repeats
            # units past the repeats are unused: any allowed kernel replays the same arch
            c.update({f"kernel_{s}_u{u}": st.kernels[u] if u < st.repeats else self.kernels[0] for u in range(hi)})
        return c

    def lut_archs(self, classes: int | None = None, in_channels: int | None = None) -> list[Arch]:
        """One arch per (width, kernel) with two units per stage: a part depends on its own
        kernel only, so mixed kernels add no new part."""
        return [make_arch(width=w, kernels=tuple((k,) * min(hi, 2) for _lo, hi in self.repeats),
                          **self._io(classes, in_channels))
                for w in self.widths for k in self.kernels]
