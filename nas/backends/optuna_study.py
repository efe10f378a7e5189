"""Opening a study: RDB storage, sampler, and the check that a continued study is the same experiment.

A study is created once (with the experiment, the space and its hash as study attrs) and every later
run, machine or worker joins it by name after `check_compatible` refuses a changed space or experiment.
"""

from __future__ import annotations

import inspect
import json
import time
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from nas.errors import UserError
from nas.storage import redact, sqlite_path

if TYPE_CHECKING:
    from nas.experiment import Experiment

#: keys of the experiment that may change between runs of one study (how to run, not what)
_RUN_KEYS = ("search", "description", "name")


# ---------------------------------------------------------------------------- storage / sampler

def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


#: Optuna 5 renamed RDBStorage's failed_trial_callback to heartbeat_stale_trial_callback.
_STALE_KWARG = ("heartbeat_stale_trial_callback"
                if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                else "failed_trial_callback")


def make_storage(url: str, exp: Experiment | None = None) -> optuna.storages.RDBStorage:
    """RDB storage with heartbeats, so a killed worker's RUNNING trial is failed and retried."""
    interval = exp.search.heartbeat_interval if exp is not None else 10
    grace = (exp.search.grace_period if exp is not None else None) or max(2 * interval, 2)
    max_retry = exp.search.max_retry if exp is not None else 2
    kwargs: dict[str, Any] = {}
    if _is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=interval, grace_period=grace, **{_STALE_KWARG: RetryStale(max_retry)},
                    **kwargs,
                )
            break
        except Exception as e:  # bad URL, unreachable server, missing driver
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if attempt < 2 and ("duplicate key" in msg or "already exists" in msg):
                time.sleep(0.5 + attempt)  # two machines created the tables of a new database at once
                continue
            raise UserError(redact(f"--storage {url}: cannot open ({type(e).__name__}: {msg})")) from None
    if _is_sqlite(url):
        _fast_sqlite(storage)
    return storage


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """WAL + synchronous=NORMAL: a commit stops costing an fsync (~5 ms -> ~0.1 ms) and readers
    never block the writer; still crash-safe for a killed process (only power loss can drop the
    last commits). Both settings apply to connections opened from now on."""
    from sqlalchemy import event

    def pragmas(dbapi_con: Any, _record: Any) -> None:
        cur = dbapi_con.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()


class RetryStale:
    """Heartbeat-stale trial callback: queue the same params again (up to max_retry times).

    Unlike optuna's RetryFailedTrialCallback it does not copy the dead trial's user attrs
    (partial measurements, fail_reason) onto the retry; it records `retry_of` instead.
    """

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        depth = int(trial.system_attrs.get("retry_depth", 0)) + 1
        if depth > self.max_retry:
            return
        keep = {k: v for k, v in trial.user_attrs.items() if k in ("reference_preset", "continues")}
        study.add_trial(optuna.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={**keep, "retry_of": trial.number},
            system_attrs={"retry_depth": depth, "failed_trial": trial.number},
        ))


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return list(trial.user_attrs.get("constraint", [0.0, 0.0, 0.0]))


#: Optuna >= 5 stores constraints on the trial (Trial.set_constraint); older versions need constraints_func.
_TRIAL_CONSTRAINTS = hasattr(optuna.Trial, "set_constraint")
CONSTRAINT_NAMES = ("mmacs_over_max", "mmacs_under_min", "latency_over_max")


def make_sampler(exp: Experiment, worker: int = 0) -> optuna.samplers.BaseSampler:
    """Sampler by name, seeded per worker (workers must not draw the same trials)."""
    s = exp.search
    seed = s.seed + worker
    pop = s.population_size or max(4, min(50, s.n_trials // 3))
    cons: dict[str, Any] = {} if _TRIAL_CONSTRAINTS else {"constraints_func": _constraints}
    if s.sampler == "tpe":
        # multivariate: one density split per trial for all parameters (every parameter is always
        # drawn), several times cheaper per trial than one split per parameter and often better
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, s.n_trials // 3)),
                                              multivariate=True, **cons)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop, **cons)
    if s.sampler == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=pop, **cons)
    return optuna.samplers.RandomSampler(seed=seed)


def directions(objectives: list[str]) -> list[str]:
    from objectives.scores import OBJECTIVES

    return [OBJECTIVES[o].direction for o in objectives]


# ---------------------------------------------------------------------------- study identity

def identity(exp_dict: dict[str, Any]) -> dict[str, Any]:
    """What must not change across runs of one study: everything but how it is run."""
    d = {k: v for k, v in exp_dict.items() if k not in _RUN_KEYS}
    lat = dict(d.get("latency", {}))
    lat.pop("cache", None)
    from nas.timing.measure import drop_defaults

    d["latency"] = drop_defaults(lat)  # studies made before the drift options stay the same experiment
    train = dict(d.get("train", {}))
    train.pop("device", None)  # where it trains, not what: a study may continue on a GPU machine
    if not train.get("amp"):
        train.pop("amp", None)  # off = absent (studies made before the option)
    d["train"] = train
    return json.loads(json.dumps(d, sort_keys=True))


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if a == b else [f"{path} {a!r} -> {b!r}"]


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False


def check_compatible(study: optuna.Study, exp: Experiment, url: str) -> None:
    """Refuse to continue a study whose space or experiment differs (one line, what to do)."""
    attrs = study.user_attrs
    name = study.study_name
    if "space_hash" not in attrs or "experiment" not in attrs:
        raise UserError(f"study {name!r} in {redact(url)} was not created by shufflenas; "
                        f"use a new --study name")
    new_space = exp.build_space()
    if attrs["space_hash"] != new_space.space_hash():
        changed = _diff(attrs.get("space", {}), new_space.to_dict())
        raise UserError(
            f"study {name!r} in {redact(url)} was created with a different search space "
            f"({'; '.join(changed[:3]) or 'space hash differs'}); changing the space of an existing study is not "
            f"allowed: use a new --study name or restore the original space"
        )
    old, new = identity(attrs["experiment"]), identity(exp.to_dict())
    if old != new:
        changed = _diff(old, new)
        raise UserError(
            f"study {name!r} in {redact(url)} belongs to a different experiment "
            f"({'; '.join(changed[:3])}); reusing a study name for another experiment is not allowed: "
            f"use a new --study name or restore the original settings"
        )


def open_study(exp: Experiment, *, worker: int = 0, create: bool = True,
               fresh_seed: bool | None = None) -> optuna.Study:
    """Create the study, or load it by name after checking it is the same experiment.

    Sampling is seeded (search.seed + worker) in a study this process creates. A process that
    joins an existing study (another machine, a continued run) samples from a fresh seed, since
    the seeded stream would draw again the candidates already drawn; `fresh_seed` overrides that
    (local workers of a run that created the study keep their distinct seeds).
    """
    url = exp.storage_url
    storage = make_storage(url, exp)
    name = exp.study_name
    sampler = make_sampler(exp, worker)
    if study_exists(storage, name):
        return _join(storage, name, sampler, exp, url, fresh_seed is not False)
    if not create:
        raise UserError(f"study {name!r} not found in {redact(url)}")
    space = exp.build_space()
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    directions=directions(exp.objectives))
    except optuna.exceptions.DuplicatedStudyError:  # another machine created it a moment ago
        return _join(storage, name, sampler, exp, url, fresh_seed is not False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(exp.objectives))
    for key, value in {
        "experiment": exp.to_dict(), "space_hash": space.space_hash(), "space": space.to_dict(),
        "backend": exp.search.backend, "objectives": list(exp.objectives), "n_trials": exp.search.n_trials,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }.items():
        study.set_user_attr(key, value)
    from nas.experiment import reference_params

    for preset_name in exp.reference_presets:
        study.enqueue_trial(reference_params(exp, preset_name), user_attrs={"reference_preset": preset_name})
    return study


def _join(storage: optuna.storages.BaseStorage, name: str, sampler: optuna.samplers.BaseSampler,
          exp: Experiment, url: str, fresh_seed: bool) -> optuna.Study:
    """Load an existing study (another run, machine or worker made it) after checking it is ours."""
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    deadline = time.monotonic() + 10
    while not study.user_attrs and not study.get_trials(deepcopy=False) and time.monotonic() < deadline:
        time.sleep(0.2)  # created a moment ago: its creator is still writing the study's attributes
    check_compatible(study, exp, url)
    if fresh_seed:  # two machines on one seed would evaluate the same candidates twice
        sampler.reseed_rng()
    return study
