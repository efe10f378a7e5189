"""What every family's search space shares: the define-by-run sampling protocol (random,
fixed and recording trials) and the space mechanics over two hooks (`_choose`, `_build`).

Never exported: a deployed `model.py` holds the network alone (`network.py` and the
family's model module). Nothing here imports Ray: `ray_space()` imports it when called.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, fields
from typing import Any, ClassVar, Protocol

from .network import plain


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
    a `widths` tuple, a `repeats` tuple of [low, high] pairs, the I/O fields and a `name`
    field (the family); they check their own bounds in `validate`.
    """

    widths: tuple[float, ...]
    repeats: tuple[tuple[int, int], ...]
    in_channels: int
    num_classes: int
    small_input: bool
    #: labels whose choices are enumerated (not just their extremes) when bounding MACs
    ENUMERATE: ClassVar[tuple[str, ...]] = ()
    #: the number the first stage's labels carry (`repeats_stage2`)
    FIRST_STAGE: ClassVar[int] = 2

    def __post_init__(self) -> None:
        self._freeze()
        self._check_shapes()
        self.validate()

    def validate(self) -> None:
        raise NotImplementedError

    def _choose(self, trial: TrialLike) -> dict[str, Any]:
        raise NotImplementedError

    def _build(self, choices: dict[str, Any], width: float) -> Any:
        raise NotImplementedError

    def decode(self, arch: Any) -> dict[str, Any] | None:
        raise NotImplementedError

    def _stages(self) -> list[str]:
        return [f"stage{i + self.FIRST_STAGE}" for i in range(len(self.repeats))]

    def _io(self, classes: int | None, in_channels: int | None) -> dict[str, Any]:
        """The I/O keywords of `make_arch` for a latency table (defaults: the space's)."""
        return {"in_channels": in_channels or self.in_channels,
                "num_classes": classes if classes is not None else self.num_classes, "small_input": self.small_input}

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
        return plain(asdict(self))  # type: ignore[call-overload]

    def space_hash(self) -> str:
        """Stored with a study; resuming with a different hash is refused."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    # -- configuration ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, bounds: dict[str, Any], **io: Any) -> Any:
        """The space from an experiment's `space:` mapping; errors name the key."""
        known = {f.name for f in fields(cls)} - {"name", "in_channels", "num_classes", "small_input"}  # type: ignore[arg-type]
        for key in bounds:
            if key not in known:
                raise ValueError(f"space.{key}: is not a known key of this family; known keys: {sorted(known)}")
        return cls(**bounds, **io)

    def _freeze(self) -> None:
        """Lists from YAML/JSON become tuples, so the space stays hashable."""
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, (list, tuple)):
                object.__setattr__(self, f.name, tuple(tuple(x) if isinstance(x, (list, tuple)) else x for x in v))

    def _check_shapes(self) -> None:
        """Each bound has its default's shape (a list, a list of [low, high] pairs, a
        true/false), so a scalar where a list belongs is one line naming the key."""
        for f in fields(self):  # type: ignore[arg-type]
            default, v = f.default, getattr(self, f.name)
            if default is MISSING or f.name == "name":
                continue
            example = json.dumps(plain(default))
            if isinstance(default, tuple) and not isinstance(v, tuple):
                raise ValueError(f"space.{f.name}: must be a list such as {example}, got {v!r}")
            if isinstance(default, bool) and not isinstance(v, bool):
                raise ValueError(f"space.{f.name}: must be true or false, got {v!r}")
            if isinstance(default, tuple) and default and isinstance(default[0], tuple):
                for i, x in enumerate(v):
                    if not isinstance(x, tuple):
                        raise ValueError(f"space.{f.name}[{i}]: must be a [low, high] list such as "
                                         f"{json.dumps(plain(default[0]))}, got {x!r}")

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

    def _check_repeats(self, high: int = 32) -> None:
        for i, rr in enumerate(self.repeats):
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
