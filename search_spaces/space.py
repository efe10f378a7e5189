"""The ShuffleNet v1 search space: bounds, define-by-run sampling, membership, hash.

The space knows nothing of Optuna beyond `TrialLike` (the three `suggest_*` calls), so
Optuna trials, Ray's define-by-run OptunaSearch and tests all drive the same code.
Parameter labels are explicit and stable so that a resumed study sees the same space.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .arch import KERNELS, PLACEMENTS, Arch
from .registry import register_space
from .shufflenet_v1 import BASE_CHANNELS, make_arch


class TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_float(self, name: str, low: float, high: float) -> float: ...


@register_space("shufflenet_v1")
@dataclass(frozen=True)
class ShuffleNetV1Space:
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

    def __post_init__(self) -> None:
        # accept lists from YAML/JSON; store tuples so the space stays hashable
        for f in ("groups", "widths", "placements", "kernels", "bottleneck_ratios"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        object.__setattr__(self, "repeats", tuple(tuple(r) for r in self.repeats))
        self.validate()

    def validate(self) -> None:
        def nonempty(name: str, values: tuple[Any, ...]) -> None:
            if not values:
                raise ValueError(f"space.{name} must not be empty")
            if name != "repeats" and len(set(values)) != len(values):
                raise ValueError(f"space.{name} has duplicates: {list(values)}")

        for name in ("groups", "widths", "placements", "kernels", "bottleneck_ratios", "repeats"):
            nonempty(name, getattr(self, name))
        for g in self.groups:
            if g not in BASE_CHANNELS:
                raise ValueError(f"space.groups: {g!r} is not one of {list(BASE_CHANNELS)}")
        for w in self.widths:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.1 <= w <= 4:
                raise ValueError(f"space.widths: {w!r} must be a number in [0.1, 4]")
        for p in self.placements:
            if p not in PLACEMENTS:
                raise ValueError(f"space.placements: {p!r} is not one of {list(PLACEMENTS)}")
        for k in self.kernels:
            if k not in KERNELS:
                raise ValueError(f"space.kernels: {k!r} is not one of {list(KERNELS)}")
        for r in self.bottleneck_ratios:
            if r not in (0.25, 0.5, 0.125):
                raise ValueError(f"space.bottleneck_ratios: {r!r} is not one of [0.125, 0.25, 0.5]")
        for i, rr in enumerate(self.repeats):
            if len(rr) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in rr):
                raise ValueError(f"space.repeats[{i}] must be [low, high] integers, got {list(rr)}")
            if not 1 <= rr[0] <= rr[1] <= 32:
                raise ValueError(f"space.repeats[{i}]: 1 <= low <= high <= 32 must hold, got {list(rr)}")

    @property
    def n_stages(self) -> int:
        return len(self.repeats)

    # -- sampling ---------------------------------------------------------------------
    def sample(self, trial: TrialLike, fits: Callable[[Arch], bool] | None = None) -> Arch:
        """Define-by-run sampling.

        Without `fits`, the width is an ordinary categorical. With `fits` (a budget
        check), every other choice is drawn first and the width then comes only from the
        widths that fit, via a quantile `width_q` over that feasible list: the parameter's
        distribution stays fixed for the sampler while its feasible set moves.
        """
        stages = [f"stage{i + 2}" for i in range(self.n_stages)]
        if self.per_stage_groups:
            groups: tuple[int, ...] = tuple(
                self._cat(trial, f"groups_{s}", self.groups) for s in stages
            )
        else:
            groups = (self._cat(trial, "groups", self.groups),) * self.n_stages
        repeats = tuple(self._int(trial, f"repeats_{s}", *rr) for s, rr in zip(stages, self.repeats, strict=False))
        shuffle = self._cat(trial, "shuffle", self.placements)
        kernels = tuple(self._cat(trial, f"kernel_{s}", self.kernels) for s in stages)
        ratio = self._cat(trial, "bottleneck_ratio", self.bottleneck_ratios)

        def build(w: float) -> Arch:
            return make_arch(
                groups=groups, width=w, repeats=repeats, shuffle=shuffle, kernel=kernels,
                bottleneck_ratio=ratio, in_channels=self.in_channels,
                num_classes=self.num_classes, small_input=self.small_input,
            )

        if fits is None:
            return build(self._cat(trial, "width", self.widths))
        feasible = [w for w in sorted(self.widths) if _safe_fits(build, w, fits)]
        q = trial.suggest_float("width_q", 0.0, 1.0)
        if not feasible:  # nothing fits: return the narrowest; the gate will reject it
            return build(min(self.widths))
        return build(feasible[min(int(q * len(feasible)), len(feasible) - 1)])

    @staticmethod
    def _cat(trial: TrialLike, name: str, choices: tuple[Any, ...]) -> Any:
        return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))

    @staticmethod
    def _int(trial: TrialLike, name: str, low: int, high: int) -> int:
        return low if low == high else trial.suggest_int(name, low, high)

    def ray_space(self) -> dict[str, Any]:
        """Static Ray Tune param space (for searchers without define-by-run)."""
        from ray import tune  # lazy: only the Ray backend needs it

        space: dict[str, Any] = {}
        stages = [f"stage{i + 2}" for i in range(self.n_stages)]
        if self.per_stage_groups:
            space.update({f"groups_{s}": tune.choice(list(self.groups)) for s in stages})
        else:
            space["groups"] = tune.choice(list(self.groups))
        space["width"] = tune.choice(list(self.widths))
        space.update({f"repeats_{s}": tune.randint(lo, hi + 1) for s, (lo, hi) in zip(stages, self.repeats, strict=False)})
        space["shuffle"] = tune.choice(list(self.placements))
        space.update({f"kernel_{s}": tune.choice(list(self.kernels)) for s in stages})
        space["bottleneck_ratio"] = tune.choice(list(self.bottleneck_ratios))
        return space

    def from_params(self, params: dict[str, Any]) -> Arch:
        """Arch from a flat dict of labelled choices (a Ray config, Optuna params)."""
        return self.sample(_FixedTrial(params))

    # -- membership and identity ----------------------------------------------------------
    def contains(self, arch: Arch) -> bool:
        """True when sampling could produce exactly `arch`."""
        try:
            arch.validate()
        except ValueError:
            return False
        if (arch.in_channels, arch.num_classes, arch.small_input) != (
            self.in_channels, self.num_classes, self.small_input,
        ) or len(arch.stages) != self.n_stages:
            return False
        st = arch.stages
        groups = tuple(s.groups for s in st)
        if any(g not in self.groups for g in groups) or (not self.per_stage_groups and len(set(groups)) > 1):
            return False
        if len({s.shuffle for s in st}) > 1 or st[0].shuffle not in self.placements:
            return False
        if len({s.bottleneck_ratio for s in st}) > 1 or st[0].bottleneck_ratio not in self.bottleneck_ratios:
            return False
        if any(s.kernel not in self.kernels for s in st):
            return False
        if any(not lo <= s.repeats <= hi for s, (lo, hi) in zip(st, self.repeats, strict=False)):
            return False
        for w in self.widths:
            cand = make_arch(
                groups=groups, width=w, repeats=tuple(s.repeats for s in st), shuffle=st[0].shuffle,
                kernel=tuple(s.kernel for s in st), bottleneck_ratio=st[0].bottleneck_ratio,
                in_channels=self.in_channels, num_classes=self.num_classes, small_input=self.small_input,
            )
            if cand == arch:
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["repeats"] = [list(r) for r in self.repeats]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def space_hash(self) -> str:
        """Stored with a study; resuming with a different hash is refused."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _safe_fits(build: Callable[[float], Arch], w: float, fits: Callable[[Arch], bool]) -> bool:
    try:
        return fits(build(w))
    except ValueError:
        return False


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


class _FixedTrial:
    """Replays a flat dict of choices through the define-by-run sampler."""

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
