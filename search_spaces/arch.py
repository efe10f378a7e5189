"""ShuffleNet v1 architecture as plain, frozen, hashable data.

An architecture is data, not code: the builder, the MACs counter, the exporter and the
search all read the same `Arch`. Model code only ever sees ints, floats and strings.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

#: Proxy images at or below this side get the small-input stem (stride 1, no max-pool), so a
#: 28-64 px proxy keeps enough resolution for three stride-2 stages.
SMALL_INPUT_MAX = 64

PLACEMENTS: tuple[str, ...] = ("before_dw", "after_dw", "after_pw2", "both", "none")
KERNELS: tuple[int, ...] = (3, 5, 7)


@dataclass(frozen=True)
class StageSpec:
    """One stage: `repeats` units, the first with stride 2 (paper, Table 1)."""

    out_channels: int
    repeats: int
    groups: int
    shuffle: str = "before_dw"
    kernel: int = 3
    bottleneck_ratio: float = 0.25

    def mid_channels(self) -> float:
        """Bottleneck width; the official code uses out_channels // 4."""
        return self.out_channels * self.bottleneck_ratio


@dataclass(frozen=True)
class Arch:
    """A complete ShuffleNet v1 network.

    `small_input` swaps the stride-2 stem conv and max-pool for a stride-1 conv, as for
    32x32 proxy images; the body (stages) is unchanged, so proxy and deploy models share
    every searched choice.
    """

    stem_channels: int
    stages: tuple[StageSpec, ...]
    in_channels: int = 3
    num_classes: int = 1000
    small_input: bool = False
    family: str = field(default="shufflenet_v1")

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "arch") -> Arch:
        """Build from a dict (e.g. parsed JSON) with one-line errors naming the key."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        for key in ("stem_channels", "stages"):
            if key not in data:
                raise ValueError(f"{source}: missing required key '{key}'")
        stages_raw = data["stages"]
        if not isinstance(stages_raw, list) or not stages_raw:
            raise ValueError(f"{source}: 'stages' must be a non-empty list, got {stages_raw!r}")
        stage_keys = {f.name for f in fields(StageSpec)}
        stages = []
        for i, s in enumerate(stages_raw):
            where = f"{source}: stages[{i}]"
            if not isinstance(s, dict):
                raise ValueError(f"{where}: expected an object, got {s!r}")
            bad = sorted(set(s) - stage_keys)
            if bad:
                raise ValueError(f"{where}: unknown key(s) {bad}; known keys are {sorted(stage_keys)}")
            for key in ("out_channels", "repeats", "groups"):
                if key not in s:
                    raise ValueError(f"{where}: missing required key '{key}'")
            stages.append(StageSpec(**s))
        arch = cls(**{**data, "stages": tuple(stages)})
        arch.validate()
        return arch

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, separators=None if indent else (",", ":"))

    @classmethod
    def from_json(cls, text: str, *, source: str = "arch") -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return cls.from_dict(data, source=source)

    @property
    def arch_id(self) -> str:
        """Stable id: sha256 of the canonical JSON (never Python's salted `hash`)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def with_io(self, *, in_channels: int, num_classes: int, small_input: bool) -> Arch:
        """The same body with a stem and head for another input (proxy vs deploy)."""
        return replace(self, in_channels=in_channels, num_classes=num_classes, small_input=small_input)

    def for_proxy(self, *, in_channels: int, num_classes: int, resolution: int) -> Arch:
        """The same body for proxy training at `resolution`: the one rule for the stem."""
        return self.with_io(in_channels=in_channels, num_classes=num_classes, small_input=resolution <= SMALL_INPUT_MAX)

    # -- validation ------------------------------------------------------------------
    def validate(self) -> Arch:
        """Raise ValueError naming the stage, the field, the rule and the value."""
        _check_int("stem_channels", self.stem_channels, 1)
        _check_int("in_channels", self.in_channels, 1)
        _check_int("num_classes", self.num_classes, 1)
        if not isinstance(self.small_input, bool):
            raise ValueError(f"small_input must be true or false, got {self.small_input!r}")
        if self.family != "shufflenet_v1":
            raise ValueError(f"family must be 'shufflenet_v1', got {self.family!r}")
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ValueError("stages must be a non-empty tuple of StageSpec")
        in_ch = self.stem_channels
        for i, s in enumerate(self.stages):
            name = f"stage {i + 2}"  # the paper numbers the first searched stage 2
            _check_int(f"{name}: out_channels", s.out_channels, 1)
            _check_int(f"{name}: repeats", s.repeats, 1)
            _check_int(f"{name}: groups", s.groups, 1)
            if s.shuffle not in PLACEMENTS:
                raise ValueError(f"{name}: shuffle must be one of {list(PLACEMENTS)}, got {s.shuffle!r}")
            if s.kernel not in KERNELS:
                raise ValueError(f"{name}: kernel must be one of {list(KERNELS)}, got {s.kernel!r}")
            if isinstance(s.bottleneck_ratio, bool) or not isinstance(s.bottleneck_ratio, (int, float)) or not (
                0 < s.bottleneck_ratio <= 1
            ):
                raise ValueError(f"{name}: bottleneck_ratio must be in (0, 1], got {s.bottleneck_ratio!r}")
            g = s.groups
            mid = s.mid_channels()
            if s.out_channels % g:
                raise ValueError(f"{name}: out_channels {s.out_channels} is not divisible by groups={g}")
            if not float(mid).is_integer() or mid < 1:
                if s.bottleneck_ratio == 0.25:
                    raise ValueError(
                        f"{name}: out_channels {s.out_channels} is not divisible by 4*groups={4 * g}"
                    )
                raise ValueError(
                    f"{name}: out_channels*bottleneck_ratio must be a positive integer, "
                    f"got {s.out_channels}*{s.bottleneck_ratio}={mid}"
                )
            if int(mid) % g:
                if s.bottleneck_ratio == 0.25:
                    raise ValueError(
                        f"{name}: out_channels {s.out_channels} is not divisible by 4*groups={4 * g}"
                    )
                raise ValueError(
                    f"{name}: bottleneck channels {int(mid)} (out_channels*bottleneck_ratio) "
                    f"are not divisible by groups={g}"
                )
            if s.out_channels <= in_ch:
                raise ValueError(
                    f"{name}: out_channels {s.out_channels} must exceed its input channels {in_ch} "
                    "(the stride-2 unit concatenates the input with new channels)"
                )
            if (s.out_channels - in_ch) % g:
                raise ValueError(
                    f"{name}: out_channels - input channels = {s.out_channels}-{in_ch} is not "
                    f"divisible by groups={g}"
                )
            # the first pointwise conv of every stage but the first is grouped over its input
            if i > 0 and in_ch % g:
                raise ValueError(f"{name}: input channels {in_ch} are not divisible by groups={g}")
            in_ch = s.out_channels
        return self

    @property
    def out_channels(self) -> int:
        return self.stages[-1].out_channels


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def round_to_multiple(value: float, multiple: int) -> int:
    """Nearest multiple (half rounds up), never below one multiple."""
    return max(multiple, int(math.floor(value / multiple + 0.5)) * multiple)
