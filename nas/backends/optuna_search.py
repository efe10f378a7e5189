"""Optuna backend: multi-objective study in an RDB storage, N local worker processes, resumable.

Every worker process opens the same storage URL and runs the same loop: fail stale trials
(a killed worker's trial, found by heartbeat) and queue a retry, then run one trial unless
COMPLETE + PRUNED + RUNNING already reaches the target. So the study ends with exactly
`n_trials` COMPLETE + PRUNED trials however many workers share it, and a resumed study
finishes what the original run asked for.

This module is the public entry point (`run_optuna_search`) and re-exports the pieces, which live
by role: `nas.backends.optuna_study` (storage, sampler, opening and compatibility checks), `nas.backends.optuna_objective` (the
objective), `nas.backends.optuna_worker` (the loop and worker processes), and `nas.storage` (URLs, redaction); `nas.analysis.summary` (counts, best, ETA) reads a study.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from nas.analysis.summary import Summary, summarize
from nas.backends.optuna_objective import TrialObjective
from nas.backends.optuna_study import (
    CONSTRAINT_NAMES,
    RetryStale,
    check_compatible,
    directions,
    identity,
    make_sampler,
    make_storage,
    open_study,
    study_exists,
)
from nas.backends.optuna_worker import (
    SearchAborted,
    _worker_main,
    count_states,
    log_trial,
    run_loop,
    visible_gpus,
    worker_gpu,
)
from nas.storage import redact

if TYPE_CHECKING:
    from nas.experiment import Experiment

__all__ = [
    "CONSTRAINT_NAMES", "RetryStale", "SearchAborted", "TrialObjective",
    "check_compatible", "count_states", "directions", "identity", "log_trial", "make_sampler",
    "make_storage", "open_study", "run_loop", "run_optuna_search", "study_exists",
    "visible_gpus", "worker_gpu",
]

log = logging.getLogger("nas.search")


def run_optuna_search(exp: Experiment, *, target: int | None = None, show_progress: bool = True,
                      objective: Callable[[optuna.Trial], Any] | None = None) -> Summary:
    """Run (or continue) the study until `target` (default search.n_trials) trials are done."""
    from nas.cli.progress import SearchProgress

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
                from nas.schedulers.rungs import trials_per_rung

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
    from nas.timing.remeasure import remeasure_front

    remeasure_front(study, exp)  # the Pareto set and flagged trials again, in one window
    s = summarize(study, target, workers)
    s.run_dir = str(exp.run_dir)
    return s
