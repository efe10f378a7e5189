"""What every family's network shares: architecture data (serialisation, identity, the
validation skeleton), shape arithmetic, MACs parts and timeable blocks.

Standard library only: `shufflenas export` copies the parts of this file a family's
`build_model` needs into a torch-only `model.py` (`registry.network_source`), so an
exported network is built by the very code the search used. The search space and the
sampling protocol live apart, in `sampling.py`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

#: Proxy images at or below this side get the small-input stem (stride 1, no max-pool), so a
#: 28-64 px proxy keeps enough resolution for three stride-2 stages.
SMALL_INPUT_MAX = 64

#: family name -> architecture type, filled as each family's Arch class is defined
ARCH_TYPES: dict[str, type[ArchBase]] = {}


def conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def stem_out_hw(h: int, w: int, small_input: bool) -> tuple[int, int]:
    """Size after a 3x3 stem conv (stride 1 for small inputs, else stride 2 and a 3x3/2 max-pool)."""
    s = 1 if small_input else 2
    h, w = conv_out(h, 3, s, 1), conv_out(w, 3, s, 1)
    if not small_input:
        h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
    return h, w


def check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def round_to_multiple(value: float, multiple: int) -> int:
    """Nearest multiple (half rounds up), never below one multiple."""
    return max(multiple, int(math.floor(value / multiple + 0.5)) * multiple)


def plain(value: Any) -> Any:
    """Tuples to lists, recursively, so JSON and dict forms agree."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def unknown_preset(name: str, known: Iterable[str], examples: Iterable[str] = ()) -> str:
    """One short line for a preset typo: the closest names (difflib), else a few examples."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f"unknown preset {name!r}; did you mean {', '.join(close[:-1]) + ' or ' if close[1:] else ''}{close[-1]}?"
    shown = list(dict.fromkeys(examples)) or known[:3]
    return f"unknown preset {name!r} ({len(known)} presets, e.g. {', '.join(shown)})"


# ---------------------------------------------------------------------------- architectures


class ArchBase:
    """Mixin of every family's frozen dataclass `Arch`: serialisation, identity, I/O swaps
    and the validation skeleton.

    Subclasses set `FAMILY`, `STAGE` (the stage record) and `STAGE_KEYS` (its required
    keys), have the fields `family`, `stem_channels`, `stages`, `in_channels`,
    `num_classes` and `small_input`, and implement `_check_stage`.
    """

    FAMILY: ClassVar[str] = ""
    STAGE: ClassVar[type] = object
    STAGE_KEYS: ClassVar[tuple[str, ...]] = ()
    #: the number the first stage is called by in messages (the ShuffleNet papers start at 2)
    FIRST_STAGE: ClassVar[int] = 2
    #: integer fields besides the stages that must be >= 1
    POSITIVE: ClassVar[tuple[str, ...]] = ("stem_channels",)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.FAMILY:
            if cls.FAMILY in ARCH_TYPES:  # a registry refuses duplicates instead of overwriting
                raise ValueError(f"architecture family {cls.FAMILY!r} is already defined")
            ARCH_TYPES[cls.FAMILY] = cls

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))  # type: ignore[call-overload]

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, separators=None if indent else (",", ":"))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "arch") -> Any:
        """Build the family that `data["family"]` names, with one-line errors naming the key."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        family = data.get("family", cls.FAMILY or "shufflenet_v1")
        target = ARCH_TYPES.get(family) if isinstance(family, str) else None
        if target is None:
            raise ValueError(f"{source}: family must be one of {sorted(ARCH_TYPES)}, got {family!r}")
        known = {f.name for f in fields(target)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        for key in ("stem_channels", "stages"):
            if key not in data:
                raise ValueError(f"{source}: missing required key '{key}'")
        try:
            stages = parse_records(data, "stages", target.STAGE, target.STAGE_KEYS, source)
            arch = target(**{**data, "stages": stages})
        except TypeError as e:  # a wrong argument count or name in a nested record
            raise ValueError(f"{source}: {e}") from None
        return arch.validate()

    @classmethod
    def from_json(cls, text: str, *, source: str = "arch") -> Any:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return cls.from_dict(data, source=source)

    @property
    def arch_id(self) -> str:
        """Stable id: sha256 of the canonical JSON (never Python's salted `hash`)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def with_io(self, *, in_channels: int, num_classes: int, small_input: bool) -> Any:
        """The same body with a stem and head for another input (proxy vs deploy)."""
        return replace(self, in_channels=in_channels, num_classes=num_classes, small_input=small_input)  # type: ignore[type-var]

    def for_proxy(self, *, in_channels: int, num_classes: int, resolution: int) -> Any:
        """The same body for proxy training at `resolution`: the one rule for the stem."""
        return self.with_io(in_channels=in_channels, num_classes=num_classes, small_input=resolution <= SMALL_INPUT_MAX)

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> Any:
        """Raise ValueError naming the stage, the field, the rule and the value."""
        me: Any = self
        for name in self.POSITIVE:
            check_int(name, getattr(me, name), 1)
        check_int("in_channels", me.in_channels, 1)
        check_int("num_classes", me.num_classes, 1)
        if not isinstance(me.small_input, bool):
            raise ValueError(f"small_input must be true or false, got {me.small_input!r}")
        if me.family != self.FAMILY:
            raise ValueError(f"family must be {self.FAMILY!r}, got {me.family!r}")
        if not isinstance(me.stages, tuple) or not me.stages:
            raise ValueError(f"stages must be a non-empty tuple of {self.STAGE.__name__}")
        in_ch = me.stem_channels
        for i, s in enumerate(me.stages):
            if not isinstance(s, self.STAGE):
                raise ValueError(f"stage {i + self.FIRST_STAGE}: expected a {self.STAGE.__name__}, got {s!r}")
            in_ch = self._check_stage(f"stage {i + self.FIRST_STAGE}", i, s, in_ch)
        return self

    def _check_stage(self, name: str, index: int, stage: Any, in_ch: int) -> int:
        """Check one stage (messages start with `name`); return its output channels."""
        raise NotImplementedError


def parse_records(data: dict[str, Any], key: str, record: type, required: tuple[str, ...], source: str) -> tuple:
    """A non-empty list of objects under `key` as a tuple of `record` dataclasses."""
    raw = data.get(key)
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{source}: '{key}' must be a non-empty list, got {raw!r}")
    names = {f.name for f in fields(record)}
    out = []
    for i, s in enumerate(raw):
        where = f"{source}: {key}[{i}]"
        if not isinstance(s, dict):
            raise ValueError(f"{where}: expected an object, got {s!r}")
        bad = sorted(set(s) - names)
        if bad:
            raise ValueError(f"{where}: unknown key(s) {bad}; known keys are {sorted(names)}")
        for k in required:
            if k not in s:
                raise ValueError(f"{where}: missing required key '{k}'")
        out.append(record(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()}))
    return tuple(out)


# ---------------------------------------------------------------------------- MACs and latency parts


@dataclass(frozen=True)
class MacsPart:
    """MACs of one part of a network (stem, a stage, head) with its shapes, for tables."""

    name: str
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    macs: int
    out_channels: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Block:
    """One separately timeable piece of a network (a latency predictor's part): its key,
    input shape and the plain values that distinguish it."""

    key: str
    input_shape: tuple[int, int, int]
    spec: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, prefix: str, spec: dict[str, Any]) -> Block:
        """A block keyed by every value of its spec (`in_ch`, `h`, `w` give its input)."""
        key = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in spec.items())
        return cls(f"{prefix}:{key}", (spec["in_ch"], spec["h"], spec["w"]), tuple(spec.items()))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.spec)

    def __getattr__(self, name: str) -> Any:  # p.kind, p.stride, ... read from the spec
        for k, v in object.__getattribute__(self, "spec"):
            if k == name:
                return v
        raise AttributeError(name)
