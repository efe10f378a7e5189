"""Ray Tune backend: the same trials as the Optuna backend, scheduled by Ray, stored in the same study.

Why it is built this way:
- `OptunaSearch` drives an Optuna study through ask/tell; we hand it *our* study (the RDB
  storage of the study contract) and the same define-by-run sampling as the Optuna backend
  (`space.sample(trial, fits=experiment.fits)`, the same seeded sampler with the same
  budget constraints), so both backends draw identical candidates and write one format
  that `pareto` and `export` read.
- Stock `OptunaSearch.on_trial_complete` tells COMPLETE whenever the last result carries the
  metrics, so a trial stopped early would enter the sampler as a finished point with its
  partial accuracy. `StudySearch` instead reads the explicit "trial_state" of the final
  result (COMPLETE / PRUNED / FAIL), writes the study-contract user attrs first (so the
  sampler's constraints function sees "constraint"), and only then tells the study.
- Early stopping is multi-objective (`nas.schedulers.early_stop.DominanceStopper`), decided in the
  worker, so the stopped trial still returns its measured attrs; the earlier trials' per-epoch
  vectors are read from the study, where the driver writes each epoch's accuracy.
- Workers need `nas` importable; with `ray_address` (a cluster) the storage must be a
  database the workers reach (PostgreSQL), or early stopping is skipped with a warning.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from nas.errors import UserError

if TYPE_CHECKING:
    import optuna

    from nas.experiment import Experiment

log = logging.getLogger("nas.search")

_MODE = {"maximize": "max", "minimize": "min"}


def _resume_hint(exp: Experiment) -> str:
    return (f"resume with `shufflenas resume {exp.study_name}` or run `shufflenas search EXPERIMENT.yaml "
            f"--backend ray` again (finished trials are kept in {exp.storage_url})")


def absolute(exp: Experiment) -> Experiment:
    """The experiment with run_dir, storage and latency cache as absolute paths.

    Ray workers may run in another directory (the trial dir) or on another node; these keys
    say how the search runs, not what it searches, so the study stays compatible.
    """
    run_dir = exp.run_dir.expanduser().resolve()
    storage = exp.storage_url
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        rest = storage[len("sqlite:///"):]
        if rest and not rest.startswith((":memory:", "file:")):
            storage = f"sqlite:///{Path(rest).expanduser().resolve()}"
    search = exp.search.model_copy(update={"run_dir": str(run_dir), "storage": storage, "backend": "ray"})
    update: dict[str, Any] = {"search": search}
    if exp.latency.cache:
        update["latency"] = exp.latency.model_copy(
            update={"cache": str(Path(exp.latency.cache).expanduser().resolve())})
    return exp.model_copy(update=update)


# ---------------------------------------------------------------------------------------- driver side

class _SpaceFn:
    """Define-by-run space for OptunaSearch: the Optuna backend's budget-aware sampling.

    A module-level class (not a closure) because Tune pickles the searcher with plain pickle.
    """

    def __init__(self, exp_json: str) -> None:
        self.exp_json = exp_json
        self._exp: Any = None
        self._space: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"exp_json": self.exp_json}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["exp_json"])  # type: ignore[misc]

    def __call__(self, trial: Any) -> dict[str, Any]:
        if self._exp is None:
            from nas.experiment import Experiment

            self._exp = Experiment.model_validate_json(self.exp_json)
            self._space = self._exp.build_space()
        arch = self._space.sample(trial, fits=self._exp.fits)
        out = {"arch": arch.to_json(), "trial_number": int(trial.number)}
        if self._exp.fidelity is not None:  # an ASHA continuation of a paused trial (enqueued by suggest)
            from nas.schedulers.rungs import paused_rung

            out["continues"] = trial.user_attrs.get("continues")
            out["continues_rung"] = paused_rung(trial.study, out["continues"])
        return out


_MISSING = object()


def _attrs(result: dict[str, Any]) -> dict[str, Any]:
    """User attrs travel as JSON text: Tune flattens nested dicts in results (attrs/arch, ...)."""
    text = result.get("attrs_json")
    return dict(json.loads(text)) if isinstance(text, str) else {}


class StudySearch(OptunaSearch):
    """OptunaSearch that records the study contract: explicit states, user attrs, per-epoch accuracy."""

    def __init__(self, *args: Any, experiment: Experiment | None = None, target: int | None = None,
                 driver: str = "", adopted: set[str] | frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._written: dict[str, dict[str, Any]] = {}
        self._exp = experiment
        self._target = target  # candidates the study should hold: no new one past it
        self._driver = driver  # this driver's id, recorded on each trial it asks (see _fail_orphans)
        self._adopted = set(adopted)  # earlier drivers of this run, whose unrecorded trials are orphans

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """ASHA as in the Optuna backend's loop: before a new candidate, queue the continuation of a
        paused trial that is now in its rung's promoted fraction (the next ask takes it). No new
        candidate once the study's finished and running candidates reach the target: a restored run's
        in-flight trials (or another driver's) finish it."""
        from optuna.trial import TrialState

        from nas.storage import counts_toward_target, is_reference

        new = trial_id not in self._ot_trials
        target = getattr(self, "_target", None)  # absent in a searcher restored from an older checkpoint
        if new and target is not None:
            trials = self._ot_study.get_trials(deepcopy=False)
            # running: what this Tune run runs, an Optuna worker's, another driver's; not an orphan of this
            # run's earlier driver that Tune never checkpointed (failed when the run ends)
            known = {ot._trial_id for ot in self._ot_trials.values()}
            ours = {getattr(self, "_driver", ""), *getattr(self, "_adopted", ())}
            busy = sum(1 for t in trials if counts_toward_target(t) or (
                t.state == TrialState.RUNNING and not is_reference(t)
                and (t._trial_id in known or t.user_attrs.get(DRIVER_ATTR) not in ours)))
            if busy >= target and not any(is_reference(t) and t.state == TrialState.WAITING for t in trials):
                return Searcher.FINISHED
        if new and self._exp is not None and self._exp.fidelity is not None:
            from nas.schedulers.rungs import enqueue_promotion

            if not self._ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                enqueue_promotion(self._ot_study, self._exp)
        config = super().suggest(trial_id)
        driver = getattr(self, "_driver", "")
        if new and driver and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(DRIVER_ATTR, driver)
        return config

    def _write_attrs(self, trial_id: str, attrs: dict[str, Any]) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        done = self._written.setdefault(trial_id, {})
        for key, value in attrs.items():
            if done.get(key, _MISSING) != value:
                ot_trial.set_user_attr(key, value)
                done[key] = value

    def _already_recorded(self, trial_id: str) -> bool:
        """True when the study already finished this trial (a restored Tune checkpoint older than the study)."""
        if trial_id in self._completed_trials:
            return True
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return True
        try:
            finished = self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()
        except Exception:
            return False
        if finished:
            log.info("trial %d was already recorded before the restore; its re-run is ignored", ot_trial.number)
            self._completed_trials.add(trial_id)
        return finished

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "epoch" not in result or self._already_recorded(trial_id):
            return
        attrs = _attrs(result)
        epoch = int(result["epoch"])
        attrs["acc_history"] = [float(attrs[f"acc_epoch_{k}"]) for k in range(1, epoch + 1)
                                if f"acc_epoch_{k}" in attrs]
        try:
            self._write_attrs(trial_id, attrs)
        except Exception as e:  # a storage hiccup must not kill the driver; the final write retries
            log.warning("could not record epoch %d of trial %s: %s", epoch, trial_id, e)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        from optuna.trial import TrialState

        if self._already_recorded(trial_id):
            return
        result = result or {}
        state_name = result.get("trial_state")
        attrs = _attrs(result)
        hist = [float(attrs[k]) for k in sorted((k for k in attrs if k.startswith("acc_epoch_")),
                                               key=lambda k: int(k.rsplit("_", 1)[1]))]
        if hist:
            attrs["acc_history"] = hist
        values = result.get("values")
        if error or state_name not in ("COMPLETE", "PRUNED", "FAIL"):
            state = TrialState.FAIL
            attrs.setdefault("fail_reason", result.get("fail_reason") or (
                "Ray trial error: the worker crashed or was killed (see the Ray trial log)" if error
                else "not finished: stopped by Ray Tune before the end (search.timeout reached or run stopped)"))
        else:
            state = TrialState[state_name]
            if result.get("fail_reason"):
                attrs["fail_reason"] = result["fail_reason"]
        if state == TrialState.COMPLETE and (
                not isinstance(values, list) or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                                        for v in values)):
            state = TrialState.FAIL
            attrs["fail_reason"] = f"objective values not finite: {values}"
        ot_trial = self._ot_trials[trial_id]
        try:
            self._write_attrs(trial_id, attrs)
            self._ot_study.tell(ot_trial, values if state == TrialState.COMPLETE else None, state=state)
        except Exception as e:
            log.warning("could not record trial %s (optuna #%s): %s", trial_id, ot_trial.number, e)
        self._completed_trials.add(trial_id)
        self._written.pop(trial_id, None)
        why = attrs.get("fail_reason") or (f"stopped at epoch {attrs.get('stopped_epoch')}"
                                           if state == TrialState.PRUNED else "")
        log.info("trial %d %s%s%s", ot_trial.number, state.name.lower(),
                 f": {values}" if state == TrialState.COMPLETE else "", f": {why}" if why else "")


# ---------------------------------------------------------------------------------------- worker side

@functools.lru_cache(maxsize=2)
def _worker_study(url: str, name: str) -> optuna.Study:
    import optuna

    kwargs: dict[str, Any] = {"skip_compatibility_check": True, "skip_table_creation": True}
    if url.startswith("sqlite:"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None
    if path is not None and not Path(path).is_file():  # another node: don't create an empty database there
        raise FileNotFoundError(f"{path} is not on this node (use a PostgreSQL storage on a cluster)")
    storage = optuna.storages.RDBStorage(url, **kwargs)
    return optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())


class _RayReporter:
    """Per-epoch `tune.report`, then the dominance test against the study's earlier trials."""

    def __init__(self, exp: Experiment, number: int, attrs: dict[str, Any], continues: int | None = None,
                 continues_rung: int | None = None) -> None:
        self.exp, self.number, self.attrs = exp, number, attrs
        self.continues = continues  # the paused trial this one continues (ASHA), None for a new candidate
        self.continues_rung = continues_rung  # the rung it paused at
        self.stopper: Any = None
        self.warned = False
        if exp.early_stopping.enabled:
            from nas.schedulers.early_stop import DominanceStopper
            from objectives.scores import directions

            es = exp.early_stopping
            self.stopper = DominanceStopper(directions(exp.objectives), min_trials=es.min_trials,
                                            min_dominating=es.min_dominating, grace_epochs=es.min_epoch)

    def report(self, epoch: int, accuracy: float, partial_values: dict[str, float]) -> bool:
        from ray import tune

        metrics = {o: partial_values.get(o) for o in self.exp.objectives}
        tune.report({**metrics, "epoch": epoch, "epoch_accuracy": float(accuracy),
                     "attrs_json": json.dumps(self.attrs)})
        if self.stopper is None or epoch >= self.exp.train.epochs:
            return False  # the last epoch completes the trial anyway
        values = [partial_values.get(o) for o in self.exp.objectives]
        if any(v is None for v in values):
            return False
        try:
            from nas.schedulers.early_stop import history_from_study

            study = _worker_study(self.exp.storage_url, self.exp.study_name)
            history = history_from_study(study, epoch, list(self.exp.objectives), exclude_number=self.number)
        except Exception as e:  # e.g. a SQLite file on another node: train on, don't guess
            if not self.warned:
                logging.getLogger("nas.search").warning("early stopping skipped: cannot read the study (%s)", e)
                self.warned = True
            return False
        return bool(self.stopper.should_stop(epoch, [float(v) for v in values], history))

    def promote(self, rung: int, values: dict[str, float]) -> bool:
        """Record the rung (the driver writes it to the study), then the shared promotion rule."""
        from ray import tune

        from nas.schedulers.rungs import decide

        fid, epochs = self.exp.fidelity, self.exp.train.epochs
        epoch = (fid.rungs[rung - 1] if fid else rung) * epochs
        tune.report({**{o: values.get(o) for o in self.exp.objectives}, "epoch": epoch,
                     "epoch_accuracy": float(values["accuracy"]), "attrs_json": json.dumps(self.attrs)})
        try:
            return decide(_worker_study(self.exp.storage_url, self.exp.study_name), self.exp, self.number, rung,
                          values, arch_id=self.attrs.get("arch_id"))
        except Exception as e:  # e.g. a SQLite file on another node: train on, don't guess
            logging.getLogger("nas.search").warning("rung %d: promoted, cannot read the study (%s)", rung, e)
            return True


def _where() -> dict[str, Any]:
    """The Ray node (id and IP) this trial runs on, recorded on the trial."""
    import ray

    try:
        return {"ray_node_id": ray.get_runtime_context().get_node_id(), "ray_node_ip": ray.util.get_node_ip_address()}
    except Exception:  # not inside Ray (a direct call)
        return {}


def _trainable(config: dict[str, Any], exp_json: str = "") -> None:
    """One Ray trial: evaluate the sampled arch; the final report carries the explicit trial state."""
    from ray import tune

    from nas.experiment import Experiment
    from nas.pipeline.evaluate import OverBudget, evaluate
    from search_spaces import Arch

    exp = Experiment.model_validate_json(exp_json)
    attrs: dict[str, Any] = _where()
    state, values, reason = "FAIL", None, None
    try:
        arch = Arch.from_json(config["arch"])
        limit = exp.search.trial_timeout_s
        deadline = time.monotonic() + limit if limit else None
        reporter = _RayReporter(exp, int(config["trial_number"]), attrs, config.get("continues"),
                                config.get("continues_rung"))
        res = evaluate(arch, exp, reporter, run_dir=exp.run_dir,
                       on_attr=attrs.__setitem__, deadline=deadline)
    except OverBudget as e:
        state, reason = "PRUNED", e.reason
        attrs.update(e.attrs)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        reason = f"{type(e).__name__}: {msg}"[:500]
    else:
        attrs.update(res.attrs)
        values = res.ordered(list(exp.objectives))
        state = "PRUNED" if res.stopped_epoch is not None else "COMPLETE"
    final = dict(zip(exp.objectives, values, strict=True)) if values else {o: None for o in exp.objectives}
    tune.report({**final, "trial_state": state, "values": values, "fail_reason": reason,
                 "attrs_json": json.dumps(attrs)})


# ---------------------------------------------------------------------------------------- entry point

def _trial_name(trial: Any) -> str:
    """Short trial names (the default puts the whole arch JSON into the directory name)."""
    return f"trial_{trial.config.get('trial_number', 'x')}_{trial.trial_id}"


def trial_resources(exp: Experiment) -> dict[str, float]:
    """What one trial asks Ray for: a CPU, and `search.gpus_per_trial` of a GPU, or 1/N of one with
    `search.trials_per_gpu` N when it trains on a GPU (Ray then sets CUDA_VISIBLE_DEVICES for the
    trial, so train.device auto lands on its share)."""
    res: dict[str, float] = {"cpu": 1}
    n = exp.search.trials_per_gpu
    share = exp.search.gpus_per_trial if n is None else (1.0 / n if exp.train.device != "cpu" else 0.0)
    if share > 0:
        res["gpu"] = share
    return res


def _init_ray(ray_address: str | None, workers: int) -> bool:
    """Start (or connect to) Ray; True when we started a local instance (and must shut it down)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables; we log one line per trial
    env = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}}
    if ray.is_initialized():
        return False
    if ray_address:
        try:
            ray.init(address=ray_address, runtime_env=env, log_to_driver=False)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"--ray-address {ray_address}: cannot connect to the Ray cluster ({msg})") from None
        return False
    ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False, runtime_env=env,
             _node_ip_address="127.0.0.1", configure_logging=False)
    return True


def _driver_storage(url: str) -> optuna.storages.RDBStorage:
    """The searcher's storage: no heartbeat (Ray, not Optuna, watches the workers)."""
    import optuna

    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 120}} if url.startswith("sqlite:")
                              else {"pool_pre_ping": True}}
    return optuna.storages.RDBStorage(url, **kwargs)


DRIVER_ATTR = "ray_driver"
#: a driver writes study attr "ray_driver:<id>" ({"at": time.time(), "run": host:Tune run dir}) this often
HEARTBEAT_S = 10.0


def _heartbeat(study: optuna.Study, driver: str, run: str, stop: threading.Event) -> None:
    while True:
        try:
            study.set_user_attr(f"{DRIVER_ATTR}:{driver}", {"at": time.time(), "run": run})
        except Exception as e:  # a storage hiccup: the next beat retries
            log.debug("driver heartbeat not written: %s", e)
        if stop.wait(HEARTBEAT_S):
            return


def _beat(attrs: dict[str, Any], owner: str) -> tuple[float | None, str | None]:
    """(last heartbeat time, host:run dir) of a driver, from the study's user attrs."""
    v = attrs.get(f"{DRIVER_ATTR}:{owner}")
    if isinstance(v, dict) and isinstance(v.get("at"), (int, float)):
        return float(v["at"]), v.get("run") if isinstance(v.get("run"), str) else None
    return None, None


def _drivers_of_run(study: optuna.Study, run: str) -> set[str]:
    """Earlier drivers of this very Tune run (same host and run dir): a restore or a rerun takes their
    trials over, however recently they beat (one run dir has one driver at a time)."""
    attrs = study._storage.get_study_user_attrs(study._study_id)
    return {k.split(":", 1)[1] for k in attrs if k.startswith(f"{DRIVER_ATTR}:")
            and _beat(attrs, k.split(":", 1)[1])[1] == run}


def _fail_orphans(study: optuna.Study, reason: str, *, mine: set[str],
                  others_stale_s: float = 3 * HEARTBEAT_S) -> int:
    """Fail RUNNING trials that no one will finish: this run's own (its drivers, `mine`) that Tune no longer
    runs, and those of a Ray driver whose heartbeat stopped. Trials of Optuna workers (no driver id: their
    heartbeat is Optuna's) and of another live driver on a shared study are theirs and are left alone."""
    from optuna.trial import TrialState

    attrs = study._storage.get_study_user_attrs(study._study_id)
    now = time.time()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(DRIVER_ATTR)
        if not owner:
            continue
        beat, _run = _beat(attrs, owner)
        if owner not in mine and beat is not None and now - beat < others_stale_s:
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
        except Exception:  # finished meanwhile
            pass
    return n


def run_ray_search(experiment: Experiment, *, ray_address: str | None = None, resume: bool = False,
                   target: int | None = None) -> str:
    """Run (or continue) the search on Ray Tune; returns the Optuna storage URL holding the study.

    A crashed driver's Tune run is restored (`Tuner.restore`, errored trials re-run) when
    `resume` is set or the study still has RUNNING trials; otherwise a fresh Tune run draws
    the trials still missing to reach `target` (default search.n_trials).
    """
    import optuna
    from optuna.trial import TrialState
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from nas.backends.optuna_search import directions, make_sampler, open_study
    from nas.storage import candidates_done, is_reference

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    exp = absolute(experiment)
    workers = exp.search.workers
    ray_address = ray_address or exp.search.ray_address
    study = open_study(exp)  # creates the study (or checks it is the same experiment) before Ray starts
    study.set_user_attr("backend", "ray")
    target = target or exp.search.n_trials
    study.set_user_attr("n_trials", target)

    storage_path = exp.run_dir / "ray"
    exp_dir = storage_path / exp.study_name
    exp_json = exp.model_dump_json()
    trainable = tune.with_resources(tune.with_parameters(_trainable, exp_json=exp_json), trial_resources(exp))
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    driver = uuid.uuid4().hex[:12]
    run_key = f"{socket.gethostname()}:{exp_dir.resolve()}"
    mine = {driver, *_drivers_of_run(study, run_key)}  # a killed driver of this run: its trials are ours now
    stop_beat = threading.Event()
    threading.Thread(target=_heartbeat, args=(study, driver, run_key, stop_beat), daemon=True,
                     name="driver-heartbeat").start()
    started = _init_ray(ray_address, workers)
    try:
        if (resume or running) and tune.Tuner.can_restore(str(exp_dir)):
            log.info("restoring the Ray Tune run in %s (%d trial(s) were running)", exp_dir, len(running))
            tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_errored=True)
        else:
            if running:
                n = _fail_orphans(study, "driver lost: the Ray run that owned this trial cannot be restored",
                                  mine=mine)
                log.warning("%d trial(s) of a lost driver marked FAIL", n)
            done = candidates_done(study)  # reference presets run beside the target
            refs = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if is_reference(t))
            todo = target - done
            if todo <= 0:
                log.info("study %s already has %d of %d trials done", exp.study_name, done, target)
                _remeasure(study, exp)
                return exp.storage_url
            if exp_dir.exists():  # a finished earlier run: keep its logs, start a new Tune experiment
                shutil.move(str(exp_dir), str(storage_path / f"{exp.study_name}.{time.strftime('%Y%m%d-%H%M%S')}"))
            searcher = StudySearch(
                space=_SpaceFn(exp_json), metric=list(exp.objectives),
                mode=[_MODE[d] for d in directions(list(exp.objectives))], sampler=make_sampler(exp),
                study_name=exp.study_name, storage=_driver_storage(exp.storage_url), experiment=exp,
                target=target, driver=driver, adopted=mine - {driver},
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=workers),
                                            num_samples=todo + refs, time_budget_s=exp.search.timeout,
                                            reuse_actors=True,  # one torch import per worker, not per trial
                                            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(
                    name=exp.study_name, storage_path=str(storage_path), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=exp.search.max_retry),
                ),
            )
        log.info("study %s in %s: %d trials, %d concurrent on Ray", exp.study_name, exp.storage_url, target, workers)
        tuner.fit()
    except KeyboardInterrupt:
        log.error("interrupted; %s", _resume_hint(exp))
        raise
    except UserError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"Ray search of study {exp.study_name!r} failed ({type(e).__name__}: {msg}); "
                        f"{_resume_hint(exp)}") from None
    finally:
        stop_beat.set()
        if started:
            import ray

            ray.shutdown()
    # Tune has finished every trial it knows; a RUNNING trial left now was asked by a driver that
    # died before its Tune checkpoint recorded it, so nobody will ever finish it.
    n = _fail_orphans(study, "driver lost: the trial was started by a Ray driver that died before checkpointing it",
                      mine=mine)
    if n:
        log.warning("%d trial(s) of a lost driver marked FAIL", n)
    _remeasure(study, exp)
    return exp.storage_url


def _remeasure(study: optuna.Study, exp: Experiment) -> None:
    from nas.timing.remeasure import remeasure_front

    remeasure_front(study, exp)  # the same end-of-search step as the Optuna backend
