"""The worker loop every local or remote worker runs on a shared study, and the spawned worker's entry point."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from nas.backends.optuna_objective import TrialObjective
from nas.backends.optuna_study import open_study
from nas.errors import UserError
from nas.storage import DONE_STATES, candidates_done, redact

if TYPE_CHECKING:
    from nas.experiment import Experiment

log = logging.getLogger("nas.search")


class SearchAborted(UserError):
    """Too many consecutive trial failures: something systematic is wrong."""

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
    """Run trials until `target` candidates are COMPLETE or PRUNED (shared with other workers)."""
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
        done = candidates_done(study)  # reference presets run beside the target, not in it
        if done >= target:
            return
        if done + c["RUNNING"] >= target:
            time.sleep(0.5)  # the last trials run elsewhere; stay in case one of them dies
            continue
        if isinstance(objective, TrialObjective):
            objective.slack = target - done - c["RUNNING"]
        if exp.fidelity is not None and not c["WAITING"]:  # ASHA: a paused trial now promotable goes first
            from nas.schedulers.rungs import enqueue_promotion

            enqueue_promotion(study, exp)
        if c["RUNNING"]:  # Optuna fails stale trials itself as a trial starts, without a reason: label them first
            _fail_stale(study)
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
    """The one GPU local worker `worker` trains on, or None: CPU training, no GPU, or a device the
    user pinned (cuda:N). With `search.trials_per_gpu` N, workers fill the GPUs N at a time
    (worker i on GPU (i // N) mod G: workers 0..N-1 share the first); without it, round robin."""
    if not gpus or exp.train.device not in ("auto", "cuda"):
        return None
    return gpus[(worker // (exp.search.trials_per_gpu or 1)) % len(gpus)]


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
