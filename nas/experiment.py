"""Experiment files: one YAML, validated by pydantic, errors as one line naming file, key and rule.

An experiment says what to search (space bounds), for what (deploy input, budget,
objectives), how to score a candidate (proxy data, training, latency backend) and how to
run the search (backend, sampler, trials, storage). CLI flags are applied to the raw YAML
mapping *before* validation, so a bad flag gets the same one-line error as a bad file.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas.errors import UserError

OBJECTIVE_NAMES = ("accuracy", "mmacs", "latency_ms", "params", "score", "naswot", "zico", "meco",
                   "oneshot_accuracy")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ExperimentError(UserError):
    """A bad experiment file or override: one line, exit code 2."""


def _device(v: str) -> str:
    if not re.match(r"^(auto|cpu|cuda(:\d+)?)$", v):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


#: auto, cpu, cuda or cuda:N (a training device)
Device = Annotated[str, AfterValidator(_device)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeployConfig(_Strict):
    """The input and classes that MACs, params, latency and the budget refer to."""

    input: str = "3x224x224"
    classes: int = Field(1000, ge=2, le=100_000)

    @field_validator("input")
    @classmethod
    def _shape(cls, v: str) -> str:
        from nas.inputs import parse_input

        try:
            parse_input(v)
        except UserError:
            raise ValueError(f"expected CxHxW such as 3x224x224, got {v!r}") from None
        return v

    @property
    def shape(self) -> tuple[int, int, int]:
        from nas.inputs import parse_input

        return parse_input(self.input)


class BudgetConfig(_Strict):
    max_mmacs: float = Field(gt=0)
    min_mmacs: float | None = Field(None, ge=0)
    max_latency_ms: float | None = Field(None, gt=0)


class ScoreConfig(_Strict):
    """MnasNet's scalarised score acc * (lat/T)^w."""

    target_ms: float = Field(gt=0)
    w: float = Field(-0.07, le=0, ge=-2)


class DataConfig(_Strict):
    name: str = "default"
    root: str | None = None
    train_size: int | None = Field(None, ge=1)
    val_size: int | None = Field(None, ge=1)
    resolution: int | None = Field(None, ge=8, le=1024)
    seed: int = Field(0, ge=0)
    download: bool = False

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from objectives.data import ALIASES, DATASETS

        if v not in DATASETS and v not in ALIASES:
            raise ValueError(f"unknown dataset {v!r}; known datasets: {', '.join([*DATASETS, *ALIASES])}")
        return v


class TrainSection(_Strict):
    """Mirror of objectives.accuracy.TrainConfig (checked again by it)."""

    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0)
    threads: int | None = Field(1, ge=1)
    max_batches_per_epoch: int | None = Field(None, ge=1)
    nesterov: bool = False
    #: auto = the first CUDA device when there is one (each local worker gets its own), else the CPU
    device: Device = "auto"
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else float16); no effect on the CPU
    #: CUDA results equal run to run, at some speed (default: fastest); the CPU is deterministic either way
    deterministic: bool = False
    warmup_steps: int = Field(0, ge=0)
    bn_recalibrate: int = Field(0, ge=0)

    def to_train_config(self) -> Any:
        from objectives.accuracy import TrainConfig

        return TrainConfig(**self.model_dump())


class DriftSection(_Strict):
    """Drift-aware latency (nas.timing): each candidate timed interleaved with a reference network.

    The objective is ratio x the study's baseline reference time (`normalise`), the probe
    (reference now / baseline) is recorded per trial and the trial flagged beyond
    `flag_threshold`. Blocks default to latency.min_time_s / pairs seconds.
    """

    enabled: bool = True
    reference: str | list[str] | None = None  # preset(s); default: the family's references
    normalise: bool = True
    flag_threshold: float = Field(0.05, gt=0, lt=1)
    pairs: int = Field(48, ge=2, le=10_000)
    block_s: float | None = Field(None, gt=0, le=60)
    min_runs: int = Field(3, ge=1, le=1000)  # timed runs per block at least

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str | list[str] | None) -> str | list[str] | None:
        from search_spaces import PRESETS, unknown_preset

        names = [v] if isinstance(v, str) else (v or [])
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one preset, or be left out (the family's references)")
        for i, n in enumerate(names):
            if n not in PRESETS:
                where = f"[{i}] " if isinstance(v, list) else ""
                raise ValueError(f"{where}{unknown_preset(n, PRESETS)}")
        return v


class LatencyConfig(_Strict):
    backend: Literal["torch", "onnxruntime", "remote", "predictor", "lut", "none"] = "onnxruntime"
    threads: int = Field(1, ge=1, le=256)
    device: str | None = None  # remote agent URL
    token_file: str | None = None
    table: str | None = None  # predictor file (`shufflenas lut build`)
    min_time_s: float = Field(1.0, ge=0, le=600)
    repeats: int = Field(20, ge=3)
    warmup: int = Field(5, ge=0)
    cache: str | None = None  # SQLite path; default <run_dir>/latency_cache.db
    drift: DriftSection = DriftSection()
    #: at the end of a search, measure the Pareto set and flagged trials again in one window
    remeasure_front: bool = True

    @model_validator(mode="after")
    def _needs(self) -> LatencyConfig:
        if self.backend == "torch" and self.drift.enabled and self.drift != DriftSection():  # set, not defaulted
            raise ValueError("drift: the interleaved protocol times ONNX, so it needs backend onnxruntime or remote "
                             "(lut or a predictor re-measure with ONNX Runtime), got torch; set drift.enabled: false")
        if self.backend == "remote" and not self.device:
            raise ValueError("backend 'remote' needs device: http://HOST:PORT of a `shufflenas device serve` agent")
        if self.backend in ("predictor", "lut") and not self.table:
            raise ValueError(f"backend {self.backend!r} needs table: a predictor file written by `shufflenas lut build`")
        return self


class SearchConfig(_Strict):
    backend: Literal["optuna", "ray"] = "optuna"
    sampler: Literal["tpe", "nsga2", "nsga3", "random"] = "tpe"
    n_trials: int = Field(20, ge=1, le=1_000_000)
    timeout: float | None = Field(None, gt=0)
    seed: int = Field(0, ge=0)
    workers: int = Field(1, ge=1, le=256)
    storage: str | None = None
    study_name: str | None = None
    run_dir: str | None = None
    trial_timeout_s: float | None = Field(None, gt=0)
    population_size: int | None = Field(None, ge=2)
    heartbeat_interval: int = Field(10, ge=1)
    grace_period: int | None = Field(None, ge=2)
    max_retry: int = Field(2, ge=0)
    max_failures: int | None = Field(None, ge=1)
    ray_address: str | None = None
    #: GPUs each Ray trial asks for (a share such as 0.5 packs two trials on one GPU); 0 = CPU only
    gpus_per_trial: float = Field(0.0, ge=0, le=64)
    #: a sampled architecture the study already has is not trained again and costs no trial (Optuna backend)
    skip_duplicates: bool = True
    #: trials that train at once on each GPU: N local workers share one GPU (worker i on GPU (i // N) mod G);
    #: Ray asks 1/N of a GPU per trial. None: one worker per GPU round robin, Ray as gpus_per_trial says
    trials_per_gpu: int | None = Field(None, ge=1, le=64)

    @field_validator("study_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"must be letters, digits, '_', '.', '-' (max 100), got {v!r}")
        return v

    @model_validator(mode="after")
    def _gpu_share(self) -> SearchConfig:
        if self.trials_per_gpu is not None and self.gpus_per_trial > 0:
            raise ValueError(f"give trials_per_gpu or gpus_per_trial, not both (trials_per_gpu {self.trials_per_gpu} "
                             f"means gpus_per_trial 1/{self.trials_per_gpu}), got gpus_per_trial {self.gpus_per_trial:g}")
        return self


class EarlyStoppingConfig(_Strict):
    enabled: bool = False
    min_trials: int = Field(5, ge=1)
    min_dominating: int = Field(3, ge=1)
    min_epoch: int = Field(1, ge=1)


class RungSchedule(_Strict):
    """Multi-fidelity successive halving (nas.schedulers.rungs): off when the section is absent.

    `rungs` are multiples of the base budget (train.epochs): [1, 3, 9] trains every candidate
    for 1x, the promoted `promote` fraction of each rung on to 3x, then 9x. `promote` takes a
    number or a fraction written as "1/3"; floor(finished * promote) of a rung are promoted once
    it holds `min_population` finished trials (default: the smallest set that promotes one).
    """

    rungs: list[int]
    promote: float = Field(1 / 3, gt=0, lt=1)
    min_population: int | None = Field(None, ge=1)

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or v[0] < 1 or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"must be >= 2 strictly increasing multiples of train.epochs, the first >= 1, got {v}")
        return v

    @field_validator("promote", mode="before")
    @classmethod
    def _promote(cls, v: Any) -> Any:
        if isinstance(v, str) and "/" in v:
            from fractions import Fraction

            try:
                return float(Fraction(v.replace(" ", "")))
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"must be a number or a fraction such as 1/3, got {v!r}") from None
        return v

    @property
    def population(self) -> int:
        import math

        return self.min_population or math.ceil(1 / self.promote - 1e-9)


class OneShotSection(_Strict):
    """The weight-sharing supernet behind objective oneshot_accuracy (`shufflenas supernet train`).

    Mirror of objectives.oneshot.OneShotConfig (checked again by it). `sampler`: uniform (one
    budget path per step) or sandwich (largest + smallest + random, in-place distillation).
    """

    steps: int = Field(1000, ge=1, le=10_000_000)
    sampler: Literal["uniform", "sandwich"] = "uniform"
    #: group counts share one dense 1x1 weight per layer (block diagonals) or hold one each
    group_sharing: Literal["shared", "separate"] = "shared"
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(0.002, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(10, ge=0)
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(100, ge=1)
    bn_batches: int = Field(8, ge=1)  # training batches that re-estimate BN before a path is scored
    bn_batch_size: int = Field(64, ge=1)
    threads: int | None = Field(1, ge=1)
    device: Device = "auto"

    def to_config(self) -> Any:
        from objectives.oneshot import OneShotConfig

        return OneShotConfig(**self.model_dump())


class Experiment(_Strict):
    name: str
    description: str | None = None
    space: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    deploy: DeployConfig = DeployConfig()
    budget: BudgetConfig
    objectives: list[Literal["accuracy", "mmacs", "latency_ms", "params", "score", "naswot", "zico",
                             "meco", "oneshot_accuracy"]] = ["accuracy", "mmacs"]
    score: ScoreConfig | None = None
    data: DataConfig = DataConfig()
    train: TrainSection = TrainSection()
    latency: LatencyConfig = LatencyConfig()
    zero_cost: bool = False
    keep_weights: bool = True
    search: SearchConfig = SearchConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    #: objective oneshot_accuracy's supernet (absent: the defaults; None keeps older studies' identity)
    oneshot: OneShotSection | None = None
    fidelity: RungSchedule | None = None  # the YAML key keeps the field's name (multi-fidelity); the schedule is rungs
    reference_presets: list[str] = []

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"must be letters, digits, '_', '.', '-' (max 100), got {v!r}")
        return v

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v: Any) -> dict[str, Any]:
        """`family` picks the module whose space validates the other keys (`name` is its old alias)."""
        from search_spaces import get_family, list_families
        from search_spaces.registry import DEFAULT_FAMILY

        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise ValueError(f"must be a mapping such as {{family: resnext, widths: [0.5, 1.0]}}, got {v!r}")
        v = dict(v)
        if "name" in v and "family" in v:
            raise ValueError("give family (or its old alias name), not both")
        family = v.pop("family", v.pop("name", DEFAULT_FAMILY))

        try:
            get_family(family)
        except ValueError:
            raise ValueError(f"family {family!r} is not one of {list_families()}") from None
        return {"family": family, **v}

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"needs at least one of {', '.join(OBJECTIVE_NAMES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"has duplicates: {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if "score" in self.objectives and self.score is None:
            raise ValueError("objective 'score' needs a score: {target_ms: T, w: -0.07} section")
        needs_latency = {"latency_ms", "score"} & set(self.objectives) or self.budget.max_latency_ms is not None
        if needs_latency and self.latency.backend == "none":
            raise ValueError("objectives latency_ms/score and budget.max_latency_ms need latency.backend other than none")
        if self.budget.min_mmacs is not None and self.budget.min_mmacs >= self.budget.max_mmacs:
            raise ValueError(
                f"budget: min_mmacs < max_mmacs must hold, got ({self.budget.min_mmacs}, {self.budget.max_mmacs})"
            )
        if self.fidelity is not None and not self.needs_training:
            raise ValueError(f"fidelity: rungs need a trained objective (accuracy or score) among the objectives, "
                             f"got {self.objectives}")
        if self.fidelity is not None and self.early_stopping.enabled:
            raise ValueError("fidelity: multi-fidelity replaces early_stopping; set early_stopping.enabled: false "
                             "or remove the fidelity section")
        try:
            self.build_space()
        except (ValueError, TypeError) as e:
            raise ValueError(str(e)) from None
        return self

    # -- derived -----------------------------------------------------------------------------
    @property
    def study_name(self) -> str:
        return self.search.study_name or self.name

    @property
    def run_dir(self) -> Path:
        return Path(self.search.run_dir) if self.search.run_dir else Path("runs") / self.study_name

    @property
    def storage_url(self) -> str:
        return self.search.storage or f"sqlite:///{self.run_dir / 'study.db'}"

    @property
    def needs_training(self) -> bool:
        return bool({"accuracy", "score"} & set(self.objectives))

    @property
    def oneshot_recipe(self) -> OneShotSection:
        """The oneshot section, or its defaults when the file has none."""
        return self.oneshot or OneShotSection()

    @property
    def quality(self) -> str | None:
        """The objective that stands for "how good": trained accuracy, the one-shot score, else the first
        zero-cost score."""
        if self.needs_training:
            return "accuracy"
        if "oneshot_accuracy" in self.objectives:
            return "oneshot_accuracy"
        from objectives.scores import ZERO_COST_OBJECTIVES

        return next((o for o in self.objectives if o in ZERO_COST_OBJECTIVES), None)

    def build_space(self) -> Any:
        """The family's space, validated by the space itself (errors name the key)."""
        from search_spaces import get_family

        c, _, _ = self.deploy.shape
        bounds = dict(self.space)
        family = get_family(bounds.pop("family"))
        return family.Space.from_config(bounds, in_channels=c, num_classes=self.deploy.classes, small_input=False)

    def fits(self, arch: Any) -> bool:
        """MACs budget at the deploy input (analytic, microseconds)."""
        from objectives.flops import analytic_macs

        mm = analytic_macs(arch, self.deploy.shape[1:]) / 1e6
        lo = self.budget.min_mmacs or 0.0
        return lo <= mm <= self.budget.max_mmacs

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        if d.get("oneshot") is None:
            d.pop("oneshot", None)  # absent, as in studies made before the section: the same experiment
        d["deploy"] = {"input": list(self.deploy.shape), "classes": self.deploy.classes, "input_text": self.deploy.input}
        return d

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> Experiment:
        """Inverse of `to_dict` (the study's "experiment" user attr)."""
        d = dict(d)
        dep = dict(d.get("deploy", {}))
        if isinstance(dep.get("input"), list):
            dep["input"] = dep.pop("input_text", None) or "x".join(str(v) for v in dep["input"])
        dep.pop("input_text", None)
        d["deploy"] = dep
        lat = d.get("latency")
        if isinstance(lat, dict) and "drift" not in lat:  # made before drift-aware latency: it measured plainly
            d["latency"] = {**lat, "drift": {"enabled": False}}
        return cls.model_validate(d)


# ------------------------------------------------------------------------------------ loading

def _rule(err: dict[str, Any]) -> str:
    """A pydantic error as 'the rule, got the value'."""
    t, ctx, val = err["type"], err.get("ctx") or {}, err.get("input")
    got = f", got {val!r}" if t not in ("missing", "extra_forbidden") else ""
    if t == "literal_error":
        expected = ctx.get("expected", "")
        choices = [c.strip().strip("'") for c in re.split(r",| or ", expected) if c.strip()]
        return f"must be one of {', '.join(choices)}{got}"
    if t == "missing":
        return "is required"
    if t == "extra_forbidden":
        return "is not a known key (check the spelling; see experiments/quickstart.yaml)"
    if t in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[t]
        bound = ctx.get({"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt",
                         "less_than_equal": "le"}[t])
        return f"must be {op} {bound}{got}"
    if t.startswith("int_"):
        return f"must be an integer{got}"
    if t.startswith("float_"):
        return f"must be a number{got}"
    if t.startswith("bool_"):
        return f"must be true or false{got}"
    if t.startswith("string_"):
        return f"must be a string{got}"
    if t in ("list_type", "model_type", "dict_type", "model_attributes_type"):
        kind = "a list" if t == "list_type" else "a mapping"
        return f"must be {kind}{got}"
    if t == "value_error":
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        return msg
    return f"{err.get('msg', t)}{got}"


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("literal[") or str(part) in ("function-after[_shape(), str]",):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _format_validation(source: str, e: ValidationError) -> str:
    # an unknown key first: a misspelt key (max_macs) also makes the real one (max_mmacs) "required"
    errors = sorted(e.errors(include_url=False), key=lambda err: err.get("type") != "extra_forbidden")
    err = errors[0]
    loc = _loc(tuple(err.get("loc", ())))
    where = f"{source}: {loc}: " if loc else f"{source}: "
    rule = _rule(err)
    if err.get("type") == "extra_forbidden":
        rule += _did_you_mean(tuple(err.get("loc", ())))
    return (where + rule).replace("\n", " ")


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """" (did you mean max_mmacs?)" for a misspelt key of the experiment or one of its sections, else ""."""
    import difflib

    model: Any = Experiment
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        ann = getattr(field, "annotation", None)
        model = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type)
                      and issubclass(a, BaseModel)), None)
    names = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1) if loc else []
    return f" (did you mean {close[0]}?)" if close else ""


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def validate_experiment(raw: Any, source: str, overrides: dict[str, Any] | None = None) -> Experiment:
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else type(raw).__name__
        raise ExperimentError(f"{source}: top level must be a mapping of keys (name, budget, ...), got {kind}")
    raw = copy.deepcopy(raw)  # dotted overrides write into nested sections: never into the caller's
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, key, value)
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as e:
        raise ExperimentError(_format_validation(source, e)) from None
    check_feasible(exp, source)
    return exp


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> Experiment:
    """Read, override (dotted keys such as "search.n_trials") and validate an experiment file."""
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ExperimentError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ExperimentError(f"{source}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ExperimentError(f"{source}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ExperimentError(f"{source}: not valid YAML ({problem}{where})") from None
    return validate_experiment(raw, source, overrides)


def mmacs_range(exp: Experiment) -> tuple[float, float]:
    """Smallest and largest MACs any architecture in the space can have (analytic)."""
    from objectives.flops import analytic_macs

    _, h, w = exp.deploy.shape
    mm = [analytic_macs(a, (h, w)) / 1e6 for a in exp.build_space().extremes()]
    return (min(mm), max(mm)) if mm else (float("inf"), 0.0)


def check_feasible(exp: Experiment, source: str) -> None:
    """Refuse a budget that no architecture of the space can meet, and misplaced presets."""
    lo, hi = mmacs_range(exp)
    b = exp.budget
    if lo > b.max_mmacs:
        raise ExperimentError(
            f"{source}: budget.max_mmacs: no architecture in the space fits: the smallest is {lo:.1f} MMACs at "
            f"{exp.deploy.input}, got max_mmacs {b.max_mmacs:g} (raise it, or allow narrower widths/fewer repeats)"
        )
    if b.min_mmacs is not None and b.min_mmacs > hi:
        raise ExperimentError(
            f"{source}: budget.min_mmacs: no architecture in the space fits: the largest is {hi:.1f} MMACs, "
            f"got min_mmacs {b.min_mmacs:g}"
        )
    if exp.reference_presets:
        from search_spaces import PRESETS, unknown_preset

        for i, name in enumerate(exp.reference_presets):
            if name not in PRESETS:
                raise ExperimentError(f"{source}: reference_presets[{i}]: {unknown_preset(name, PRESETS)}")
            try:
                reference_params(exp, name)
            except ValueError as e:
                raise ExperimentError(f"{source}: reference_presets[{i}]: {e}") from None


def reference_params(exp: Experiment, name: str) -> dict[str, Any]:
    """Trial params that make the budget-aware sampler produce preset `name` (ValueError if impossible)."""
    from objectives.flops import analytic_macs
    from search_spaces import preset

    space = exp.build_space()
    c, h, w = exp.deploy.shape
    arch = preset(name).with_io(in_channels=c, num_classes=exp.deploy.classes, small_input=False)
    if not space.contains(arch):
        raise ValueError(f"preset {name!r} is not in the search space (check the space's family and bounds)")
    mm = analytic_macs(arch, (h, w)) / 1e6
    if not exp.fits(arch):
        raise ValueError(f"preset {name!r} is {mm:.1f} MMACs at {exp.deploy.input}, outside the budget "
                         f"[{exp.budget.min_mmacs or 0:g}, {exp.budget.max_mmacs:g}] MMACs")
    params = space.replay_params(arch, exp.fits)
    if params is None:
        raise ValueError(f"preset {name!r} cannot be reproduced by the sampler")
    return params
