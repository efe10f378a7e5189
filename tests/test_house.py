"""Races and wrong values of issue #18, and what a new user tripped on: each test failed on the code
before its fix (see the commit that added it)."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.experiment import load_experiment

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(tmp_path: Path, name: str = "s", objectives: tuple[str, ...] = ("accuracy", "mmacs", "latency_ms"),
           experiment: dict | None = None) -> optuna.Study:
    dirs = {"accuracy": "maximize", "naswot": "maximize"}
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name=name,
                                directions=[dirs.get(o, "minimize") for o in objectives])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))
    study.set_user_attr("objectives", list(objectives))
    study.set_user_attr("experiment", experiment or {"name": name})
    return study


# ------------------------------------------------------------------------------ races and wrong values

def test_a_rung_front_shows_the_remeasured_latency(tmp_path: Path) -> None:
    """at_rung copied the rung record's latency over the end-of-search re-measured one."""
    from nas.analysis.frame import trials_frame
    from nas.schedulers.rungs import at_rung

    study = _study(tmp_path, experiment={"fidelity": {"rungs": [1, 3]}})
    rec = {"accuracy": 0.7, "mmacs": 10.0, "latency_ms": 5.0}
    for acc in (0.8, 0.75):
        study.add_trial(optuna.trial.create_trial(
            values=[acc, 10.0, 5.0], user_attrs={"rung_1": rec, "rung_2": {**rec, "accuracy": acc}, "rung": 2}))
    study.set_user_attr("latency_remeasured", {"0": {"latency_ms": 3.0}})
    for rung in (1, 2):
        df = at_rung(trials_frame(study), study, rung).set_index("number")
        assert df.loc[0, "latency_ms"] == pytest.approx(3.0), rung  # re-measured
        assert df.loc[1, "latency_ms"] == pytest.approx(5.0), rung  # not re-measured: the rung's value
    assert at_rung(trials_frame(study), study, 2).set_index("number").loc[0, "accuracy"] == pytest.approx(0.8)


def test_the_fidelity_cache_key_holds_the_rung_schedule(tiny_yaml: Callable[..., Path]) -> None:
    """proxy_hash left the rungs out: a proxy trained to 9x and a plain one shared cache rows."""
    from nas.analysis.fidelity_run import proxy_hash

    plain = load_experiment(tiny_yaml(name="a"))
    rungs = load_experiment(tiny_yaml(name="b", extra="fidelity: {rungs: [1, 3, 9]}"))
    rungs2 = load_experiment(tiny_yaml(name="c", extra="fidelity: {rungs: [1, 3]}"))
    assert plain.fidelity is None and rungs.fidelity is not None
    assert len({proxy_hash(plain), proxy_hash(rungs), proxy_hash(rungs2)}) == 3


def test_two_workers_normalise_against_one_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both workers measure the reference at once and both pass the check before either writes: only
    an atomic first write gives them the same baseline."""
    import objectives.latency.drift as proto
    from nas.timing import measure

    study = _study(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    exp = SimpleNamespace(storage_url=url, study_name="s", deploy=SimpleNamespace(shape=(3, 8, 8)))
    monkeypatch.setattr(measure, "drift_config", lambda e: None)
    monkeypatch.setattr(measure, "_ref_arch", lambda e, n: None)
    monkeypatch.setattr(proto, "export", lambda *a: b"")
    monkeypatch.setattr(proto, "blocks_for", lambda b: SimpleNamespace(load=lambda *a: None))
    gate = threading.Barrier(2, timeout=20)
    real_stored = measure._stored

    def stored(*a: Any) -> float | None:  # every check of both workers happens before either writes
        v = real_stored(*a)
        gate.wait()
        return v

    monkeypatch.setattr(measure, "_stored", stored)
    ms = {"w1": 1.0, "w2": 2.0}
    monkeypatch.setattr(proto, "reference_time", lambda *a: ms[threading.current_thread().name])
    backend = SimpleNamespace(device_info=lambda: {"fingerprint": "fp"})
    got: dict[str, float] = {}

    def worker() -> None:
        own = optuna.load_study(study_name="s", storage=url)
        got[threading.current_thread().name] = measure.baseline(exp, backend, "ref", own)

    measure._LOCAL.clear()
    threads = [threading.Thread(target=worker, name=n) for n in ms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    measure._LOCAL.clear()
    assert set(got) == {"w1", "w2"}
    assert got["w1"] == got["w2"] and got["w1"] in (1.0, 2.0)
    stored_value = study._storage.get_study_user_attrs(study._study_id)["latency_baseline:ref@fp"]["ms"]
    assert stored_value == got["w1"]


def test_a_ray_driver_fails_only_orphans(tmp_path: Path) -> None:
    """_fail_orphans failed every RUNNING trial: Optuna workers' and another live driver's too."""
    from nas.backends.ray_search import DRIVER_ATTR, _drivers_of_run, _fail_orphans

    study = _study(tmp_path)
    owners = {"optuna worker": None, "live driver": "live", "dead driver": "dead", "me": "me",
              "killed driver of my run": "killed"}
    numbers = {}
    for who, driver in owners.items():
        t = study.ask()
        if driver:
            t.set_user_attr(DRIVER_ATTR, driver)
        numbers[who] = t.number
    now = time.time()
    study.set_user_attr(f"{DRIVER_ATTR}:live", {"at": now, "run": "other-host:/runs/s/ray/s"})
    study.set_user_attr(f"{DRIVER_ATTR}:dead", {"at": now - 3600, "run": "other-host:/runs/s/ray/s"})
    study.set_user_attr(f"{DRIVER_ATTR}:killed", {"at": now - 5, "run": "me:/runs/s/ray/s"})  # beat just now
    mine = {"me", *_drivers_of_run(study, "me:/runs/s/ray/s")}
    assert mine == {"me", "killed"}
    assert _fail_orphans(study, "lost", mine=mine) == 3
    state = {who: study.trials[n].state for who, n in numbers.items()}
    assert state == {"optuna worker": TrialState.RUNNING, "live driver": TrialState.RUNNING,
                     "dead driver": TrialState.FAIL, "me": TrialState.FAIL,
                     "killed driver of my run": TrialState.FAIL}


def test_a_resumed_ray_search_asks_no_candidate_past_the_target(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    """A killed driver's in-flight trials finish on the cluster: the resumed run must not add more."""
    from ray.tune.search import Searcher

    from nas.backends.optuna_study import make_sampler, open_study
    from nas.backends.ray_search import StudySearch, _driver_storage, _SpaceFn

    exp = load_experiment(tiny_yaml(n=2))
    study = open_study(exp)
    done = study.ask()
    study.tell(done, [0.5, 1.0])
    study.ask()  # in flight, from the killed driver
    search = StudySearch(space=_SpaceFn(exp.model_dump_json()), metric=["accuracy", "mmacs"], mode=["max", "min"],
                         sampler=make_sampler(exp), study_name=exp.study_name, storage=_driver_storage(exp.storage_url),
                         experiment=exp, target=2, driver="me")
    assert search.suggest("new") == Searcher.FINISHED
    assert len(study.get_trials()) == 2
    search3 = StudySearch(space=_SpaceFn(exp.model_dump_json()), metric=["accuracy", "mmacs"], mode=["max", "min"],
                          sampler=make_sampler(exp), study_name=exp.study_name, storage=_driver_storage(exp.storage_url),
                          experiment=exp, target=3, driver="me")
    config = search3.suggest("third")
    assert isinstance(config, dict) and "arch" in config  # below the target it still asks
    assert study.get_trials()[-1].user_attrs["ray_driver"] == "me"


def test_rungs_of_one_architecture_are_trained_by_one_trial_at_a_time(tmp_path: Path) -> None:
    """RungCheckpoint had no lock: a twin could train the same rung, or clear weights a paused twin needs."""
    from nas.schedulers.rungs import RungCheckpoint

    a, b = RungCheckpoint(tmp_path, "arch", "fp"), RungCheckpoint(tmp_path, "arch", "fp")
    entered = threading.Event()
    with a.locked():
        t = threading.Thread(target=lambda: (b.locked().__enter__(), entered.set()), daemon=True)
        t.start()
        time.sleep(0.5)
        assert not entered.is_set()  # the twin waits while the first trains
    assert entered.wait(10)  # ... and goes on once it is done


def test_a_continuation_is_promoted_past_the_rung_it_paused_at(tmp_path: Path, tiny_yaml: Callable[..., Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """train_rungs marked the last kept rung promoted, not the paused one: a continuation of a trial
    paused at rung 1 trained past a rung 2 that a twin had kept, not promoted."""
    import torch
    from torch import nn

    import objectives.accuracy as acc
    from nas.schedulers.rungs import RungCheckpoint, train_rungs

    exp = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 2, 3], promote: 0.5}"))
    calls: list[int] = []
    monkeypatch.setattr(acc, "train_proxy", lambda *a, **k: calls.append(1))
    model = nn.Linear(2, 2, bias=False)
    ckpt = RungCheckpoint(tmp_path, "arch", "fp")
    rec = {"values": {"accuracy": 0.5, "mmacs": 1.0}, "history": [[1, 0.5]], "best": 0.5, "loss": 1.0, "ips": 1.0,
           "seconds": 0.1}
    ckpt.save(model, [{**rec, "promoted": False}, {**rec, "promoted": False}])  # rung 2 kept by a twin, paused
    attrs: dict = {}
    with torch.no_grad():
        tr, stopped = train_rungs(model, None, exp, ckpt, lambda e, a: False, lambda r, v: True, attrs.__setitem__,
                                  lambda a: {"accuracy": a, "mmacs": 1.0}, continues_rung=1)
    assert calls == [] and stopped == 2 and attrs["rung"] == 2  # rung 2's own decision stands


def test_a_failed_continuation_leaves_the_promotion_open(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    """A FAILed continuation ("not run", or crashed) counted as taken: the paused trial was never offered again."""
    from nas.schedulers.rungs import next_promotion

    exp = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 3], promote: 0.5, min_population: 2}"))
    study = _study(tmp_path, objectives=("accuracy", "mmacs"))
    for i, a in enumerate((0.9, 0.1)):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.PRUNED, user_attrs={"rung_1": {"accuracy": a, "mmacs": 1.0}, "rung": 1,
                                                 "arch_id": f"a{i}"}))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, user_attrs={"continues": 0, "fail_reason": "not run: trial 0 is continued by an earlier trial"}))
    paused = next_promotion(study, exp)
    assert paused is not None and paused.number == 0
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"continues": 0}))
    assert next_promotion(study, exp) is None  # a live continuation holds it


# ------------------------------------------------------------------------------ what a user trips on

def _naswot_yaml(tmp_path: Path, n: int, extra: str = "") -> Path:
    f = tmp_path / "q.yaml"
    f.write_text(f"""\
name: q
space: {{groups: [2, 3, 4, 8], widths: [0.25, 0.5], repeats: [[1, 4], [2, 8], [1, 4]]}}
deploy: {{input: 3x224x224, classes: 1000}}
budget: {{max_mmacs: 40}}
objectives: [naswot, mmacs]
data: {{name: default, train_size: 200, val_size: 100, resolution: 16}}
train: {{epochs: 1, batch_size: 32, threads: 1}}
latency: {{backend: none}}
search: {{n_trials: {n}, sampler: random, seed: 0, run_dir: {tmp_path / 'run'}}}
reference_presets: [shufflenet_v1_g3_x0_5]
{extra}""")
    return f


def test_reference_presets_run_beside_the_target_and_are_never_the_best(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--trials 3 ran the preset as one of the 3 and `status` named it the best."""
    assert main(["search", str(_naswot_yaml(tmp_path, 3)), "--no-progress", "--json"]) == 0
    study = optuna.load_study(study_name="q", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    done = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    candidates = [t for t in done if not t.user_attrs.get("reference_preset")]
    assert len(candidates) == 3 and len(done) == 4
    assert all(t.user_attrs["width"] in (0.25, 0.5) for t in candidates)  # optuna-dashboard shows the width
    from nas.analysis.summary import summarize

    s = summarize(study)
    assert s.done == 3 and s.target == 3
    preset_trial = next(t.number for t in done if t.user_attrs.get("reference_preset"))
    assert preset_trial not in s.best_trial.values() and s.best_trial  # a candidate is the best of each


def test_a_duplicate_architecture_is_not_trained_and_costs_no_trial(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    from nas.backends.optuna_search import TrialObjective, open_study, run_loop
    from nas.pipeline.evaluate import evaluate

    exp = load_experiment(tiny_yaml(n=2, search="skip_duplicates: true"))
    calls: list[str] = []

    def counting(arch: Any, *a: Any, **k: Any) -> Any:
        calls.append(arch.arch_id)
        return evaluate(arch, *a, **k)

    study = open_study(exp)
    objective = TrialObjective(exp, 2, evaluate_fn=counting)
    drawn: dict[str, dict] = {}  # two architectures of the space, by their sampler params
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    while len(drawn) < 2:
        t = scratch.ask()
        drawn.setdefault(objective.space.sample(t, fits=exp.fits).arch_id, t.params)
    (first, a), (other, b) = drawn.items()
    for params in (a, a, b):
        study.enqueue_trial(params)
    run_loop(study, exp, 2, objective=objective)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["duplicate_of"] == 0 and trials[1].user_attrs["fail_reason"].startswith("not run")
    assert calls == [first, other]


def test_pareto_and_export_of_a_study_with_no_complete_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both blamed an --objectives that was never given."""
    study = _study(tmp_path)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "x"}))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["pareto", "s", "--storage", url]) == 0
    out = capsys.readouterr()
    assert "no COMPLETE trials yet" in out.out and "--objectives" not in out.err
    assert main(["export", "s", "--storage", url, "--pick", "knee", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--objectives" not in err and "COMPLETE" in err and len(err.strip().splitlines()) == 1


def test_the_pareto_table_fits_80_columns_and_names_presets_in_full(tmp_path: Path, make_study: Callable[..., Any],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = make_study(tmp_path)
    assert main(["pareto", "unit", "--storage", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [ln for ln in lines if "│" in ln or "┃" in ln]
    assert len(table) > 4  # precondition: a table with rows
    assert max(len(ln) for ln in lines) <= 80, max(lines, key=len)
    text = "\n".join(lines)
    assert "shufflenet_v1_g3_x0_5" in text and "shufflenet_v1_g8_x0_5" in text
    assert main(["pareto", "unit", "--storage", url, "--wide"]) == 0
    assert "channels" in capsys.readouterr().out


def test_latency_change_is_signed_as_the_remeasure_moved_it(tmp_path: Path) -> None:
    from nas.analysis.frame import trials_frame

    study = _study(tmp_path)
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0, 10.0], user_attrs={"latency_ms": 10.0}))
    study.set_user_attr("latency_remeasured", {"0": {"latency_ms": 8.0}})
    row = trials_frame(study).iloc[0]
    assert row["latency_ms"] == 8.0 and row["latency_first_ms"] == 10.0
    assert row["latency_change"] == pytest.approx(-0.2)  # the re-measure is 20% faster


@pytest.mark.parametrize(("argv", "want"), [
    (["--trials", "0"], "argument --trials: must be >= 1, got 0"),
    (["--workers", "0"], "argument --workers: must be >= 1, got 0"),
    (["--timeout", "-1"], "argument --timeout: must be > 0"),
])
def test_a_bad_flag_names_the_flag_not_the_file(tmp_path: Path, argv: list[str], want: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(_naswot_yaml(tmp_path, 2)), *argv]) == 2
    err = capsys.readouterr().err
    assert want in err and "q.yaml" not in err


def test_a_misspelt_key_is_named_with_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _naswot_yaml(tmp_path, 2)
    f.write_text(f.read_text().replace("max_mmacs: 40", "max_macs: 40"))
    assert main(["search", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "budget.max_macs: is not a known key" in err and "did you mean max_mmacs?" in err
    assert "is required" not in err and len(err.splitlines()) == 1


def test_an_unreachable_database_never_prints_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["status", "x"], ["pareto", "x"]):
        assert main([*cmd, "--storage", "postgresql://user:s3cret-pw@127.0.0.1:1/db"]) == 2
        err = capsys.readouterr().err
        assert "s3cret-pw" not in err and "user:***@" in err


def test_ctrl_c_leaves_a_reason_on_the_trial(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    from nas.backends.optuna_search import TrialObjective, open_study

    exp = load_experiment(tiny_yaml(n=1))

    def interrupted(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    study = open_study(exp)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(TrialObjective(exp, 1, evaluate_fn=interrupted), n_trials=1)
    (t,) = study.get_trials()
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("interrupted (Ctrl-C)")


def test_a_busy_host_gets_a_hint_on_wall_clock_latency() -> None:
    from nas.cli.commands.latency import contention_hint

    res = SimpleNamespace(threads=1, cached=False, backend="onnxruntime")
    assert contention_hint(2.0, 1.0, res, "wall").startswith("note: the measurement got 50%")
    assert "--clock cpu" in contention_hint(2.0, 1.0, res, "wall")
    assert contention_hint(2.0, 1.95, res, "wall") == ""  # a quiet host
    assert contention_hint(2.0, 1.0, res, "cpu") == ""  # already on the CPU clock
    assert contention_hint(2.0, 1.0, SimpleNamespace(threads=1, cached=True, backend="onnxruntime"), "wall") == ""


def test_optuna_tools_see_the_remeasured_latency_too(tmp_path: Path) -> None:
    """optuna-dashboard and study.best_trials showed the first latency while pareto showed the re-measured one."""
    from nas.analysis.frame import trials_frame
    from nas.storage import write_remeasured_values

    study = _study(tmp_path)
    for lat in (10.0, 12.0):
        study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0, lat], user_attrs={"latency_ms": lat}))
    again = {"0": {"latency_ms": 13.0}}
    study.set_user_attr("latency_remeasured", again)
    assert write_remeasured_values(study, again) == 1
    fresh = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.values[2] for t in fresh.get_trials()] == [13.0, 12.0]
    assert [t.number for t in fresh.best_trials] == [1]  # 13 ms is now dominated by trial 1
    row = trials_frame(fresh).iloc[0]
    assert row["latency_ms"] == 13.0 and row["latency_first_ms"] == 10.0  # the first value kept beside it


def test_a_kernel_list_is_readable() -> None:
    """The v2 summary printed a stage's kernels run together ("37/3533553/33")."""
    from dataclasses import replace

    from search_spaces import family_of, preset

    arch = preset("shufflenet_v2_x1_0")
    stages = list(arch.stages)
    stages[1] = replace(stages[1], kernels=(3, 5, 3, 3, 5, 5, 3, 7)[: stages[1].repeats])
    mixed = replace(arch, stages=tuple(stages))
    assert family_of(mixed).summary(mixed)["kernel"] == "3/" + ",".join(map(str, stages[1].kernels)) + "/3"
    assert family_of(arch).summary(arch)["kernel"] == "3/3/3"
