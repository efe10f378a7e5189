"""ResNeXt's search space: cardinality x base width (the paper's trade at equal complexity),
stage repeats and a width multiplier. The network it samples is `resnext.py`; this file is
never exported.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .resnext import Arch, make_arch
from .sampling import SpaceBase, TrialLike, cat, integer


@dataclass(frozen=True)
class ResNeXtSpace(SpaceBase):
    """Cardinality x base width (the paper's trade at equal complexity), depth and width."""

    cardinalities: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    base_widths: tuple[int, ...] = (4, 8, 16, 32, 64)
    widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    repeats: tuple[tuple[int, int], ...] = ((1, 3), (1, 4), (1, 6), (1, 3))
    in_channels: int = 3
    num_classes: int = 1000
    small_input: bool = False
    name: str = field(default="resnext")

    FIRST_STAGE: ClassVar[int] = 1

    def validate(self) -> None:
        self._nonempty("cardinalities", "base_widths", "widths", "repeats")
        # any positive ints: the paper's equal-complexity pairs use base widths 14, 24 and 40
        self._check_ints("cardinalities", 1, 128)
        self._check_ints("base_widths", 1, 256)
        self._check_widths()
        self._check_repeats(high=40)

    def _choose(self, trial: TrialLike) -> dict[str, Any]:
        c: dict[str, Any] = {"cardinality": cat(trial, "cardinality", self.cardinalities),
                             "base_width": cat(trial, "base_width", self.base_widths)}
        c.update({f"repeats_{s}": integer(trial, f"repeats_{s}", *rr)
                  for s, rr in zip(self._stages(), self.repeats, strict=True)})
        return c

    def _build(self, c: dict[str, Any], width: float) -> Arch:
        return make_arch(cardinality=c["cardinality"], base_width=c["base_width"],
                         repeats=tuple(c[f"repeats_{s}"] for s in self._stages()), width=width,
                         **self._io(None, None))

    def decode(self, arch: Arch) -> dict[str, Any] | None:
        st = arch.stages
        if (not isinstance(arch, Arch) or len(st) != len(self.repeats)
                or len({(s.cardinality, s.base_width) for s in st}) > 1):
            return None
        c: dict[str, Any] = {"cardinality": st[0].cardinality, "base_width": st[0].base_width}
        c.update({f"repeats_{n}": s.repeats for n, s in zip(self._stages(), st, strict=True)})
        return c

    def lut_archs(self, classes: int | None = None, in_channels: int | None = None) -> list[Arch]:
        """Every (cardinality, base width, width) with two blocks per stage: both block kinds."""
        out = []
        for card, bw, w in itertools.product(self.cardinalities, self.base_widths, self.widths):
            try:
                out.append(make_arch(cardinality=card, base_width=bw, width=w,
                                     repeats=tuple(min(hi, 2) for _lo, hi in self.repeats),
                                     **self._io(classes, in_channels)))
            except ValueError:
                continue
        return out
