"""What every family shares: architecture data, the sampling protocol, space mechanics, parts.

Standard library only: `shufflenas export` copies this file, `shuffle.py` and a family's
module into a torch-only `model.py`, so an exported network is built by the very code
the search used. A family module imports nothing from the package but this and
`shuffle.py`, each with one `from .x import a, b` line (export strips exactly those).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Protocol

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


def round_to_multiple(value: float, multiple: int) -> int:
    """Nearest multiple (half rounds up), never below one multiple."""
    return max(multiple, int(math.floor(value / multiple + 0.5)) * multiple)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so JSON and dict forms agree."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------- architectures


class ArchBase:
    """Mixin of every family's frozen dataclass `Arch`: serialisation, identity, I/O swaps.

    Subclasses set `FAMILY`, have the fields `family`, `in_channels`, `num_classes` and
    `small_input`, and implement `_parse` (dict -> instance) and `validate`.
    """

    FAMILY: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.FAMILY:
            if cls.FAMILY in ARCH_TYPES:  # a registry refuses duplicates instead of overwriting
                raise ValueError(f"architecture family {cls.FAMILY!r} is already defined")
            ARCH_TYPES[cls.FAMILY] = cls

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))  # type: ignore[call-overload]

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
        try:
            arch = target._parse(data, source)
        except TypeError as e:  # a wrong argument count or name in a nested record
            raise ValueError(f"{source}: {e}") from None
        return arch.validate()

    @classmethod
    def _parse(cls, data: dict[str, Any], source: str) -> Any:
        raise NotImplementedError

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

    def validate(self) -> Any:
        raise NotImplementedError

    def _check_io(self) -> None:
        check_int("in_channels", self.in_channels, 1)  # type: ignore[attr-defined]
        check_int("num_classes", self.num_classes, 1)  # type: ignore[attr-defined]
        if not isinstance(self.small_input, bool):  # type: ignore[attr-defined]
            raise ValueError(f"small_input must be true or false, got {self.small_input!r}")  # type: ignore[attr-defined]
        if self.family != self.FAMILY:  # type: ignore[attr-defined]
            raise ValueError(f"family must be {self.FAMILY!r}, got {self.family!r}")  # type: ignore[attr-defined]


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


def require(data: dict[str, Any], keys: tuple[str, ...], source: str) -> None:
    for key in keys:
        if key not in data:
            raise ValueError(f"{source}: missing required key '{key}'")


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
    """One separately timeable piece (a latency table's entry): its key, input and kwargs.

    `spec` holds plain values only; the family's `block_module(spec)` builds the module
    with the same layers the full model uses.
    """

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


# ---------------------------------------------------------------------------- sampling protocol


class TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_float(self, name: str, low: float, high: float) -> float: ...


class RandomTrial:
    """Uniform random choices through the define-by-run protocol (random search, LUTs,
    benchmarks and tests, no Optuna needed)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.rng.choice(list(choices))

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def suggest_float(self, name: str, low: float, high: float) -> float:
        return self.rng.uniform(low, high)


class FixedTrial:
    """Replays a flat dict of choices, refusing values outside the bounds."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def _get(self, name: str) -> Any:
        if name not in self.params:
            raise ValueError(f"missing parameter {name!r} (have {sorted(self.params)})")
        return self.params[name]

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        v = self._get(name)
        if v not in choices:
            raise ValueError(f"parameter {name}={v!r} is not one of {list(choices)}")
        return v

    def suggest_int(self, name: str, low: int, high: int) -> int:
        v = int(self._get(name))
        if not low <= v <= high:
            raise ValueError(f"parameter {name}={v} is outside [{low}, {high}]")
        return v

    def suggest_float(self, name: str, low: float, high: float) -> float:
        return float(self._get(name))


class _Recorder:
    """Records the labelled dimensions a space asks for, answering with a chosen value."""

    def __init__(self, pick: Callable[[str, str, list[Any]], Any] | None = None) -> None:
        self.dims: list[tuple[str, str, list[Any]]] = []
        self.pick = pick or (lambda label, kind, values: values[0])

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.dims.append((name, "cat", list(choices)))
        return self.pick(name, "cat", list(choices))

    def suggest_int(self, name: str, low: int, high: int) -> int:
        self.dims.append((name, "int", [low, high]))
        return self.pick(name, "int", [low, high])

    def suggest_float(self, name: str, low: float, high: float) -> float:
        self.dims.append((name, "float", [low, high]))
        return low


def cat(trial: TrialLike, name: str, choices: Sequence[Any]) -> Any:
    """A categorical; a single choice is a constant, not a sampler parameter."""
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def integer(trial: TrialLike, name: str, low: int, high: int) -> int:
    return low if low == high else trial.suggest_int(name, low, high)


# ---------------------------------------------------------------------------- spaces


class SpaceBase:
    """Mechanics every family's space shares, over two hooks:

    `_choose(trial) -> dict` draws every labelled choice but the width (the same labels in
    the same order on every call, so a resumed study sees the same space), and
    `_build(choices, width) -> Arch`. `decode(arch)` inverts `_choose` (None when the
    arch cannot come from this space's structure). Subclasses are frozen dataclasses with
    a `widths` tuple and a `name` field (the family).
    """

    widths: tuple[float, ...]
    #: labels whose choices are enumerated (not just their extremes) when bounding MACs
    ENUMERATE: ClassVar[tuple[str, ...]] = ()

    def _choose(self, trial: TrialLike) -> dict[str, Any]:
        raise NotImplementedError

    def _build(self, choices: dict[str, Any], width: float) -> Any:
        raise NotImplementedError

    def decode(self, arch: Any) -> dict[str, Any] | None:
        raise NotImplementedError

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, trial: TrialLike, fits: Callable[[Any], bool] | None = None) -> Any:
        """Define-by-run sampling.

        Without `fits`, the width is an ordinary categorical. With `fits` (a budget
        check), every other choice is drawn first and the width then comes only from the
        widths that fit, via a quantile `width_q` over that feasible list: the parameter's
        distribution stays fixed for the sampler while its feasible set moves.
        """
        choices = self._choose(trial)
        if fits is None:
            return self._build(choices, cat(trial, "width", self.widths))
        feasible = [w for w in sorted(self.widths) if self._fits(choices, w, fits)]
        q = trial.suggest_float("width_q", 0.0, 1.0)
        if not feasible:  # nothing fits: return the narrowest; the gate will reject it
            return self._build(choices, min(self.widths))
        return self._build(choices, feasible[min(int(q * len(feasible)), len(feasible) - 1)])

    def _fits(self, choices: dict[str, Any], w: float, fits: Callable[[Any], bool]) -> bool:
        try:
            return fits(self._build(choices, w))
        except ValueError:
            return False

    def from_params(self, params: dict[str, Any]) -> Any:
        """Arch from a flat dict of labelled choices (a Ray config, Optuna params)."""
        return self.sample(FixedTrial(params))

    def dims(self) -> list[tuple[str, str, list[Any]]]:
        """(label, kind, values) of every sampler parameter, "width" included."""
        rec = _Recorder()
        self._choose(rec)
        cat(rec, "width", self.widths)
        return rec.dims

    def ray_space(self) -> dict[str, Any]:
        """Static Ray Tune param space (for searchers without define-by-run)."""
        from ray import tune  # lazy: only the Ray backend needs it

        return {label: tune.choice(v) if kind == "cat" else tune.randint(v[0], v[1] + 1)
                for label, kind, v in self.dims()}

    # -- membership and identity -----------------------------------------------------------
    def contains(self, arch: Any) -> bool:
        """True when sampling could produce exactly `arch`."""
        try:
            arch.validate()
            choices = self.decode(arch)
            if choices is None:
                return False
            choices = self._choose(FixedTrial(choices))  # refuses values outside the bounds
            return any(self._build(choices, w) == arch for w in self.widths)
        except (ValueError, AttributeError, TypeError):
            return False

    def width_of(self, arch: Any) -> float | None:
        """The width that gives `arch` (budget-aware studies record width_q, not width)."""
        try:
            c = self.decode(arch)
            for w in self.widths if c is not None else ():
                if self._build(c, w) == arch:
                    return float(w)
        except (ValueError, KeyError, AttributeError):
            pass
        return None

    def replay_params(self, arch: Any, fits: Callable[[Any], bool]) -> dict[str, Any] | None:
        """Sampler params (budget-aware form) that reproduce `arch`, or None."""
        if not self.contains(arch):
            return None
        params = {k: v for k, v in (self.decode(arch) or {}).items() if k in {d[0] for d in self.dims()}}
        for q in [(i + 0.5) / 64 for i in range(64)]:
            params["width_q"] = q
            if self.sample(FixedTrial(params), fits) == arch:
                return params
        return None

    def extremes(self) -> list[Any]:
        """Candidates that bound the space's MACs: every combination of the `ENUMERATE`
        labels, with all other choices at their lowest, then at their highest."""
        dims = [d for d in self.dims() if d[0] != "width"]
        enum = [d for d in dims if d[0].startswith(self.ENUMERATE) and self.ENUMERATE]
        out = []
        for combo in itertools.product(*[d[2] for d in enum]):
            fixed = {d[0]: v for d, v in zip(enum, combo, strict=True)}
            for pick_hi in (False, True):
                def pick(label: str, kind: str, values: list[Any], hi: bool = pick_hi,
                         fixed: dict[str, Any] = fixed) -> Any:
                    if label in fixed:
                        return fixed[label]
                    if kind == "int":
                        return values[1] if hi else values[0]
                    try:
                        return max(values) if hi else min(values)
                    except TypeError:  # strings: any value bounds the same
                        return values[0]
                try:
                    out.append(self._build(self._choose(_Recorder(pick)), max(self.widths) if pick_hi
                                           else min(self.widths)))
                except ValueError:
                    continue
        return out

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))  # type: ignore[call-overload]

    def space_hash(self) -> str:
        """Stored with a study; resuming with a different hash is refused."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_config(cls, bounds: dict[str, Any], **io: Any) -> Any:
        """The space from an experiment's `space:` mapping; errors name the key."""
        known = {f.name for f in fields(cls)} - {"name", "in_channels", "num_classes", "small_input"}  # type: ignore[arg-type]
        for key in bounds:
            if key not in known:
                raise ValueError(f"space.{key}: is not a known key of this family; known keys: {sorted(known)}")
        conv = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                for k, v in bounds.items()}
        return cls(**conv, **io)

    def _freeze(self) -> None:
        """Lists from YAML/JSON become tuples, so the space stays hashable."""
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, (list, tuple)):
                object.__setattr__(self, f.name, tuple(tuple(x) if isinstance(x, (list, tuple)) else x for x in v))

    def _nonempty(self, *names: str) -> None:
        for name in names:
            values = getattr(self, name)
            if not values:
                raise ValueError(f"space.{name} must not be empty")
            if not name.startswith("repeats") and len(set(values)) != len(values):
                raise ValueError(f"space.{name} has duplicates: {list(values)}")

    def _check_widths(self) -> None:
        for w in self.widths:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.1 <= w <= 4:
                raise ValueError(f"space.widths: {w!r} must be a number in [0.1, 4]")

    def _check_repeats(self, repeats: tuple[tuple[int, ...], ...], high: int = 32) -> None:
        for i, rr in enumerate(repeats):
            if len(rr) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in rr):
                raise ValueError(f"space.repeats[{i}] must be [low, high] integers, got {list(rr)}")
            if not 1 <= rr[0] <= rr[1] <= high:
                raise ValueError(f"space.repeats[{i}]: 1 <= low <= high <= {high} must hold, got {list(rr)}")

    def _check_ints(self, name: str, low: int, high: int) -> None:
        for v in getattr(self, name):
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ValueError(f"space.{name}: {v!r} must be an integer in [{low}, {high}]")

    def _check_choices(self, name: str, allowed: Sequence[Any]) -> None:
        for v in getattr(self, name):
            if v not in allowed or isinstance(v, bool):
                raise ValueError(f"space.{name}: {v!r} is not one of {list(allowed)}")
