"""Optuna backend: multi-objective study in an RDB storage, N local worker processes, resumable.

Every worker process opens the same storage URL and runs the same loop: fail stale trials
(a killed worker's trial, found by heartbeat) and queue a retry, then run one trial unless
COMPLETE + PRUNED + RUNNING already reaches the target. So the study ends with exactly
`n_trials` COMPLETE + PRUNED trials however many workers share it, and a resumed study
finishes what the original run asked for.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import multiprocessing
import os
import signal
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from nas.common import UserError
from nas.early_stop import DominanceStopper, history_from_study
from nas.evaluate import OverBudget, TrialTimeout, evaluate
from nas.results import sqlite_path

if TYPE_CHECKING:
    from nas.experiment import Experiment

log = logging.getLogger("nas.search")

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
#: keys of the experiment that may change between runs of one study (how to run, not what)
_RUN_KEYS = ("search", "description", "name")


class SearchAborted(UserError):
    """Too many consecutive trial failures: something systematic is wrong."""


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
            raise UserError(f"--storage {redact(url)}: cannot open ({type(e).__name__}: {msg})") from None
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


def redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


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
        keep = {k: v for k, v in trial.user_attrs.items() if k in ("reference_preset",)}
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
    d["latency"] = lat
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


# ---------------------------------------------------------------------------- one trial

def _default_stopper(exp: Experiment) -> DominanceStopper:
    es = exp.early_stopping
    return DominanceStopper(
        directions(exp.objectives), min_trials=es.min_trials, min_dominating=es.min_dominating,
        grace_epochs=es.min_epoch,
    )


class _TrialReporter:
    def __init__(self, study: optuna.Study, trial: optuna.Trial, exp: Experiment, stopper: Any) -> None:
        self.study, self.trial, self.exp, self.stopper = study, trial, exp, stopper

    def report(self, epoch: int, accuracy: float, partial_values: dict[str, float]) -> bool:
        es = self.exp.early_stopping
        if self.stopper is None or epoch < es.min_epoch or epoch >= self.exp.train.epochs:
            return False
        names = list(self.exp.objectives)
        values = [partial_values[o] for o in names]
        history = history_from_study(self.study, epoch, names, exclude_number=self.trial.number)
        return bool(self.stopper.should_stop(epoch, values, history))

    def promote(self, rung: int, values: dict[str, float]) -> bool:
        from nas.multifidelity import decide

        return decide(self.study, self.exp, self.trial.number, rung, values)


class _Surplus(Exception):
    pass


@functools.cache
def _warm_lazy_imports() -> None:
    """Import what torch imports lazily on first use (the first optimizer pulls in dynamo and
    sympy) before any alarm is armed: an alarm landing inside an import leaves a half-imported
    module behind and breaks every later trial in this process."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).step()


@contextmanager
def _alarm(seconds: float | None) -> Iterator[None]:
    """Hard per-trial time limit via SIGALRM (main thread on POSIX); otherwise cooperative only."""
    usable = seconds is not None and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise TrialTimeout(f"trial time limit {seconds:g} s exceeded")

    _warm_lazy_imports()
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _shielded(fn: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
    """Storage writes never get interrupted by the trial alarm (it is delivered right after)."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        return fn

    def put(key: str, value: Any) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            fn(key, value)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})

    return put


_FLUSH_KEYS = frozenset({"time_macs_s", "time_latency_s", "time_zero_cost_s", "time_train_s", "time_eval_s"})


class _AttrBuffer:
    """Collects a trial's user attrs and writes them in one transaction per phase.

    One commit per attribute made storage the dominant per-trial cost; a phase boundary (or an
    epoch, whose accuracy other trials read for early stopping) is when others need them.
    """

    def __init__(self, trial: optuna.Trial, min_interval_s: float = 0.2) -> None:
        self.trial = trial
        self.user: dict[str, Any] = {}
        self.constraints: list[float] | None = None
        self.min_interval_s = min_interval_s
        self.last = time.monotonic()

    def put(self, key: str, value: Any) -> None:
        if key == "constraint":
            self.constraints = list(value)
        self.user[key] = value
        # epochs always (others read them to stop early); phases only once the trial is slow
        # enough that a crash would otherwise lose real work. The caller flushes at the end.
        if key.startswith(("acc_epoch_", "rung_")) or (
            key in _FLUSH_KEYS and time.monotonic() - self.last >= self.min_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        if not self.user and self.constraints is None:
            return
        user, cons = self.user, self.constraints
        self.user, self.constraints = {}, None
        self.last = time.monotonic()
        system: dict[str, float] = {}
        if cons is not None and _TRIAL_CONSTRAINTS:
            system = {f"{_constraints_key()}:{n}": float(v) for n, v in zip(CONSTRAINT_NAMES, cons, strict=True)}
        if not _write_batch(self.trial, user, system):
            for k, v in user.items():
                self.trial.set_user_attr(k, v)
            if cons is not None and _TRIAL_CONSTRAINTS:
                for n, v in zip(CONSTRAINT_NAMES, cons, strict=True):
                    self.trial.set_constraint(n, float(v))


def _constraints_key() -> str:
    try:
        from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

        return str(_CONSTRAINTS_KEY)
    except ImportError:  # pragma: no cover - layout of a future Optuna
        return "constraints"


def _write_batch(trial: optuna.Trial, user: dict[str, Any], system: dict[str, Any]) -> bool:
    """Write many attrs in one RDB transaction (Optuna internals; False -> caller writes one by one)."""
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        storage = trial.storage
        backend = getattr(storage, "_backend", storage)
        if not isinstance(backend, optuna.storages.RDBStorage):
            return False
        tid = trial._trial_id
        with _create_scoped_session(backend.scoped_session, True) as session:
            for k, v in user.items():
                backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, tid, k, v)
            for k, v in system.items():
                backend._set_trial_attr_without_commit(session, models.TrialSystemAttributeModel, tid, k, v)
    except (ImportError, AttributeError):
        return False
    cached = getattr(trial, "_cached_frozen_trial", None)
    if cached is not None:
        cached.user_attrs.update(user)
        cached.system_attrs.update(system)
    return True


class TrialObjective:
    """The Optuna objective: sample under the budget, evaluate, map outcomes to trial states."""

    def __init__(self, exp: Experiment, target: int, evaluate_fn: Callable[..., Any] = evaluate) -> None:
        self.exp = exp
        self.target = target
        self.space = exp.build_space()
        self.stopper = _default_stopper(exp) if exp.early_stopping.enabled else None
        self.evaluate = evaluate_fn
        self.slack = 0  # free trial slots seen by the loop before this trial (0 = unknown: check)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        study = trial.study
        # another worker may have started the last trial between our count and this ask: only
        # possible when fewer slots were left than workers, so only then pay for the check
        ahead = 0 if self.slack > self.exp.search.workers else sum(
            1 for t in study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.RUNNING))
            if t.state in DONE_STATES or t.number < trial.number
        )
        if ahead >= self.target:
            trial.set_user_attr("fail_reason", "not run: the trial target was reached by other workers")
            raise _Surplus()
        exp = self.exp
        try:
            arch = self.space.sample(trial, fits=exp.fits)
            limit = exp.search.trial_timeout_s
            deadline = time.monotonic() + limit if limit else None
            buffer = _AttrBuffer(trial)
            buffer.put("worker", f"{socket.gethostname()}:{os.getpid()}")
            with _alarm(limit):
                try:
                    res = self.evaluate(arch, exp, _TrialReporter(study, trial, exp, self.stopper),
                                        run_dir=exp.run_dir, on_attr=_shielded(buffer.put), deadline=deadline)
                finally:
                    _shielded(lambda k, v: buffer.flush())("", None)
        except OverBudget as e:
            trial.set_user_attr("fail_reason", e.reason)
            raise optuna.TrialPruned(e.reason) from None
        except (optuna.TrialPruned, _Surplus):
            raise
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else ""
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {msg}"[:500])
            raise
        if res.stopped_epoch is not None:
            if exp.fidelity is not None:
                raise optuna.TrialPruned(f"not promoted past rung {res.attrs.get('rung')}")
            raise optuna.TrialPruned(f"stopped at epoch {res.stopped_epoch}: dominated by earlier trials")
        return res.ordered(list(exp.objectives))


# ---------------------------------------------------------------------------- the loop

def _fail_stale(study: optuna.Study) -> None:
    """Fail trials whose worker stopped heart-beating, with a reason, then queue their retry."""
    storage = study._storage
    get_stale = getattr(storage, "_get_stale_trial_ids", None)
    if get_stale is None:
        return
    grace = getattr(storage, "grace_period", None)
    for tid in get_stale(study._study_id):
        try:
            storage.set_trial_user_attr(tid, "fail_reason",
                                        f"worker lost: no heartbeat for {grace or '?'} s (killed or hung); retried")
        except Exception:  # another worker got there first
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def count_states(study: optuna.Study) -> dict[str, int]:
    counts = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    return counts


def run_loop(study: optuna.Study, exp: Experiment, target: int, *, stop_at: float | None = None,
             objective: Callable[[optuna.Trial], Any] | None = None,
             callbacks: list[Callable[..., None]] | None = None) -> None:
    """Run trials until COMPLETE + PRUNED reaches `target` (shared with other workers)."""
    objective = objective or TrialObjective(exp, target)
    max_fail = exp.search.max_failures or 5
    consecutive = 0
    last_reason = ""
    grace = getattr(study._storage, "grace_period", None) or getattr(
        getattr(study._storage, "_backend", None), "grace_period", None) or 10
    stale_every = max(0.5, float(grace) / 2)
    next_stale_check = 0.0
    while True:
        if stop_at is not None and time.time() >= stop_at:
            log.info("search timeout reached; stopping after the running trials")
            return
        if time.monotonic() >= next_stale_check:  # a heartbeat check per grace/2 is enough
            _fail_stale(study)
            next_stale_check = time.monotonic() + stale_every
        c = count_states(study)
        done = c["COMPLETE"] + c["PRUNED"]
        if done >= target:
            return
        if done + c["RUNNING"] >= target:
            time.sleep(0.5)  # the last trials run elsewhere; stay in case one of them dies
            continue
        if isinstance(objective, TrialObjective):
            objective.slack = target - done - c["RUNNING"]
        finished: list[optuna.trial.FrozenTrial] = []
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False,
                       callbacks=[lambda _s, t, acc=finished: acc.append(t), *(callbacks or [])])
        failed = [t for t in finished if t.state == TrialState.FAIL
                  and not str(t.user_attrs.get("fail_reason", "")).startswith("not run")]
        if failed:
            consecutive += 1
            last_reason = str(failed[-1].user_attrs.get("fail_reason", "unknown"))
            if consecutive >= max_fail:
                raise SearchAborted(
                    f"{consecutive} trials failed in a row (last: {last_reason}); fix the cause and run "
                    f"`shufflenas resume {exp.study_name} --storage {redact(exp.storage_url)}`"
                )
        elif any(t.state in DONE_STATES for t in finished):
            consecutive = 0


def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    ua = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        vals = ", ".join(f"{n}={v:.4g}" for n, v in zip(study.metric_names or [], trial.values or [], strict=False))
        log.info("trial %d complete: %s (arch %s)", trial.number, vals, ua.get("arch_id", "?"))
    elif trial.state == TrialState.PRUNED:
        why = ua.get("fail_reason") or (f"not promoted past rung {ua['rung']} (epoch {ua.get('stopped_epoch')})"
                                        if "rung" in ua else f"stopped at epoch {ua.get('stopped_epoch')}")
        log.info("trial %d pruned: %s", trial.number, why)
    else:
        log.info("trial %d %s: %s", trial.number, trial.state.name.lower(), ua.get("fail_reason", ""))


def visible_gpus() -> list[str]:
    """IDs of the CUDA devices this process may use (in CUDA_VISIBLE_DEVICES terms); [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in env.split(",") if x.strip()] if env else [str(i) for i in range(n)]
    return ids[:n]


def worker_gpu(exp: Experiment, worker: int, gpus: list[str]) -> str | None:
    """The one GPU local worker `worker` trains on (round robin over `gpus`), or None: CPU training,
    no GPU, or a device the user pinned (cuda:N)."""
    if not gpus or exp.train.device not in ("auto", "cuda"):
        return None
    return gpus[worker % len(gpus)]


def _worker_main(exp_json: str, worker: int, target: int, stop_at: float | None, log_level: int,
                 fresh_seed: bool = False, gpu: str | None = None) -> None:
    """Entry point of a spawned worker process."""
    from nas.experiment import Experiment

    if gpu is not None:  # before CUDA is initialised: this worker sees its own GPU only (as cuda:0)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    exp = Experiment.model_validate_json(exp_json)
    # N workers share the cores: each uses train.threads threads (OpenMP pools are sized when
    # torch is first imported, so this must happen before that import)
    threads = str(exp.train.threads or 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    logging.basicConfig(level=log_level, format=f"%(asctime)s worker{worker} %(levelname)s %(message)s")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures: our one log line each
    study = open_study(exp, worker=worker, fresh_seed=fresh_seed)
    try:
        run_loop(study, exp, target, stop_at=stop_at, callbacks=[log_trial])
    except SearchAborted as e:
        log.error("%s", e)
        raise SystemExit(3) from None


# ---------------------------------------------------------------------------- summary

@dataclass
class Summary:
    study_name: str
    storage: str
    run_dir: str
    target: int
    counts: dict[str, int]
    done: int
    feasible_share: float | None
    best: dict[str, float]
    eta_s: float | None
    median_trial_s: float | None
    best_trial: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(study: optuna.Study, target: int | None = None, workers: int = 1) -> Summary:
    trials = study.get_trials(deepcopy=False)
    attrs = study.user_attrs
    exp = attrs.get("experiment", {})
    target = int(target or attrs.get("n_trials") or exp.get("search", {}).get("n_trials") or len(trials))
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    done = counts["COMPLETE"] + counts["PRUNED"]
    judged = [t for t in trials if t.state in DONE_STATES and "constraint" in t.user_attrs]
    feasible = [t for t in judged if all(c <= 0 for c in t.user_attrs["constraint"])]
    share = len(feasible) / len(judged) if judged else None
    names = study.metric_names or attrs.get("objectives") or []
    best: dict[str, float] = {}
    best_trial: dict[str, int] = {}  # each objective's best comes from its own trial
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    for i, (name, d) in enumerate(zip(names, study.directions, strict=False)):
        if complete:
            sign = -1 if d == optuna.study.StudyDirection.MAXIMIZE else 1
            top = min(complete, key=lambda t, i=i, sign=sign: (sign * t.values[i], t.number))
            best[name], best_trial[name] = top.values[i], top.number
    durs = [t.duration.total_seconds() for t in trials if t.state in DONE_STATES and t.duration is not None]
    med = statistics.median(durs) if durs else None
    eta = med * max(0, target - done) / max(1, workers) if med is not None else None
    return Summary(study.study_name, redact(str(study._storage.url)) if hasattr(study._storage, "url") else "",
                   exp.get("search", {}).get("run_dir") or "", target, counts, done, share, best, eta, med,
                   best_trial)


# ---------------------------------------------------------------------------- entry point

def run_optuna_search(exp: Experiment, *, target: int | None = None, show_progress: bool = True,
                      objective: Callable[[optuna.Trial], Any] | None = None) -> Summary:
    """Run (or continue) the study until `target` (default search.n_trials) trials are done."""
    from nas.progress import SearchProgress

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures: our one log line each
    target = target or exp.search.n_trials
    joined = study_exists(make_storage(exp.storage_url, exp), exp.study_name)
    study = open_study(exp)  # creates it (and checks compatibility) before any worker starts
    study.set_user_attr("n_trials", target)
    stop_at = time.time() + exp.search.timeout if exp.search.timeout else None
    workers = exp.search.workers
    log.info("study %s in %s: %d trials, %d worker(s), sampler %s", exp.study_name, redact(exp.storage_url),
             target, workers, exp.search.sampler)
    with SearchProgress(target, enabled=show_progress) as bar:
        def refresh(*_: Any) -> None:
            if bar.enabled:
                from nas.multifidelity import trials_per_rung

                bar.update(summarize(study, target, workers), trials_per_rung(study) if exp.fidelity else None)

        refresh()
        if workers == 1:
            run_loop(study, exp, target, stop_at=stop_at, objective=objective,
                     callbacks=[lambda s, t: (log_trial(s, t), refresh())])
        else:
            ctx = multiprocessing.get_context("spawn")
            gpus = visible_gpus() if exp.train.device in ("auto", "cuda") else []
            if gpus:
                log.info("%d worker(s) over %d GPU(s): %s", workers, len(gpus),
                         ", ".join(f"worker{i}->GPU {worker_gpu(exp, i, gpus)}" for i in range(workers)))
            procs = [
                ctx.Process(target=_worker_main,
                            args=(exp.model_dump_json(), i, target, stop_at, logging.getLogger().getEffectiveLevel(),
                                  joined, worker_gpu(exp, i, gpus)),
                            name=f"shufflenas-worker{i}")
                for i in range(workers)
            ]
            for p in procs:
                p.start()
            try:
                while any(p.is_alive() for p in procs):
                    refresh()
                    time.sleep(1.0)
            except KeyboardInterrupt:
                for p in procs:
                    p.terminate()
                raise
            for p in procs:
                p.join()
            if all(p.exitcode == 3 for p in procs):
                raise SearchAborted("every worker aborted after repeated trial failures (see the log above)")
        refresh()
    s = summarize(study, target, workers)
    s.run_dir = str(exp.run_dir)
    return s


def eta_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


