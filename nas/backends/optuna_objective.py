"""One trial: sample under the budget, evaluate with a hard time limit, buffer the user attrs,
map outcomes (over budget, stopped early, crashed, surplus) to Optuna trial states."""

from __future__ import annotations

import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from nas.backends.optuna_study import _TRIAL_CONSTRAINTS, CONSTRAINT_NAMES, directions
from nas.pipeline.evaluate import OverBudget, TrialTimeout, evaluate
from nas.schedulers.early_stop import DominanceStopper, history_from_study
from nas.storage import DONE_STATES, counts_toward_target, is_reference

if TYPE_CHECKING:
    from nas.experiment import Experiment


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
        # the paused trial this one continues (ASHA's later promotion), None for a new candidate
        self.continues = trial.user_attrs.get("continues") if exp.fidelity is not None else None
        from nas.schedulers.rungs import paused_rung

        self.continues_rung = paused_rung(study, self.continues)

    def report(self, epoch: int, accuracy: float, partial_values: dict[str, float]) -> bool:
        es = self.exp.early_stopping
        if self.stopper is None or epoch < es.min_epoch or epoch >= self.exp.train.epochs:
            return False
        names = list(self.exp.objectives)
        values = [partial_values[o] for o in names]
        history = history_from_study(self.study, epoch, names, exclude_number=self.trial.number)
        return bool(self.stopper.should_stop(epoch, values, history))

    def promote(self, rung: int, values: dict[str, float]) -> bool:
        from nas.schedulers.rungs import decide

        return decide(self.study, self.exp, self.trial.number, rung, values)


class _Surplus(Exception):
    """The trial is not run (target reached, a promotion taken by a twin, a duplicate): FAIL "not run"."""


#: duplicates a worker skips in a row before it runs one (a small space can be exhausted)
MAX_DUPLICATES = 20


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
        self.duplicates = 0  # duplicates drawn in a row by this worker

    def _skip_duplicate(self, study: optuna.Study, trial: optuna.Trial, arch: Any) -> None:
        """A sampler may draw an architecture the study already has (TPE does, on small spaces): it is
        not trained again and costs no trial of the target (FAIL "not run", which the sampler ignores).
        After `MAX_DUPLICATES` in a row the space is taken as exhausted near the sampler's focus and the
        draw runs as a trial. Retries and ASHA continuations train their architecture by design."""
        if not self.exp.search.skip_duplicates or {"retry_of", "continues", "reference_preset"} & set(trial.user_attrs):
            return
        twin = next((t for t in study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.RUNNING))
                     if t.number != trial.number and t.user_attrs.get("arch_id") == arch.arch_id), None)
        if twin is None or self.duplicates >= MAX_DUPLICATES:
            self.duplicates = 0
            return
        self.duplicates += 1
        trial.set_user_attr("arch_id", arch.arch_id)
        trial.set_user_attr("duplicate_of", twin.number)
        trial.set_user_attr("fail_reason", f"not run: duplicate of trial {twin.number} ({twin.state.name.lower()})")
        raise _Surplus()

    def __call__(self, trial: optuna.Trial) -> list[float]:
        study = trial.study
        # another worker may have started the last trial between our count and this ask: only
        # possible when fewer slots were left than workers, so only then pay for the check
        ahead = 0 if self.slack > self.exp.search.workers or is_reference(trial) else sum(
            1 for t in study.get_trials(deepcopy=False)
            if counts_toward_target(t) or (t.state == TrialState.RUNNING and t.number < trial.number
                                           and not is_reference(t))
        )
        if ahead >= self.target:
            trial.set_user_attr("fail_reason", "not run: the trial target was reached by other workers")
            raise _Surplus()
        paused = trial.user_attrs.get("continues") if self.exp.fidelity is not None else None
        if paused is not None and any(  # two workers queued the same promotion at once: one trains it
                t.user_attrs.get("continues") == paused and t.number < trial.number and t.state != TrialState.FAIL
                for t in study.get_trials(deepcopy=False)):
            trial.set_user_attr("fail_reason", f"not run: trial {paused} is continued by an earlier trial")
            raise _Surplus()
        exp = self.exp
        try:
            arch = self.space.sample(trial, fits=exp.fits)
            self._skip_duplicate(study, trial, arch)
            limit = exp.search.trial_timeout_s
            deadline = time.monotonic() + limit if limit else None
            buffer = _AttrBuffer(trial)
            buffer.put("worker", f"{socket.gethostname()}:{os.getpid()}")
            width_of = getattr(self.space, "width_of", None)  # budget-aware sampling records width_q, not width
            width = width_of(arch) if width_of is not None else None
            if width is not None:
                buffer.put("width", float(width))
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
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C): `shufflenas resume` runs it again")
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
