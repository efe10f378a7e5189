"""Optuna backend end to end on real SQLite storage: study contract, budget gate, failures, resume."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")


def test_tiny_search_follows_the_study_contract(tmp_path: Path, tiny_yaml: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    f = tiny_yaml(latency="torch", n=3)
    assert main(["search", str(f), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "shufflenas pareto tiny --storage sqlite:///" in out and "--pick knee" in out
    study = load(tmp_path)
    assert study.metric_names == ["accuracy", "mmacs", "latency_ms"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    ua = study.user_attrs
    assert ua["experiment"]["budget"]["max_mmacs"] == 3
    assert ua["experiment"]["deploy"] == {"input": [3, 64, 64], "classes": 10, "input_text": "3x64x64"}
    assert ua["backend"] == "optuna" and ua["objectives"] == ["accuracy", "mmacs", "latency_ms"]
    assert len(ua["space_hash"]) == 16 and ua["space"]["groups"] == [2, 4]
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3
    for t in (t for t in trials if t.state == TrialState.COMPLETE):
        a = t.user_attrs
        for key in ("arch", "arch_id", "mmacs", "n_params", "latency_ms", "latency_p90_ms", "latency_spread",
                    "latency_n", "latency_backend", "device", "accuracy", "epochs_run", "time_macs_s",
                    "time_latency_s", "time_train_s"):
            assert key in a, key
        assert a["mmacs"] <= 3 and t.values[1] == pytest.approx(a["mmacs"])
        assert all(c <= 0 for c in a["constraint"])
        assert (tmp_path / "run" / "weights" / f"{a['arch_id']}.safetensors").is_file()
    # status reads it back without changing anything
    assert main(["status", "tiny", "--run-dir", str(tmp_path / "run"), "--json"]) == 0
    assert '"COMPLETE": 3' in capsys.readouterr().out


def test_over_budget_is_pruned_and_never_trained(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    from nas.pipeline.evaluate import OverBudget, evaluate
    from search_spaces import make_arch

    exp = load_experiment(tiny_yaml())
    big = make_arch(groups=4, width=2.0, repeats=(1, 2, 1), num_classes=10)
    seen: dict[str, object] = {}
    with pytest.raises(OverBudget, match="over budget"):
        evaluate(big, exp, on_attr=seen.__setitem__)
    assert "accuracy" not in seen and "time_train_s" not in seen and seen["mmacs"] > 3
    # in a real search: tests/test_budget_gate.py


def test_crashed_trial_recorded_and_study_goes_on(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    from nas.backends.optuna_search import TrialObjective, run_optuna_search
    from nas.pipeline.evaluate import evaluate

    exp = load_experiment(tiny_yaml(n=2))
    calls = []

    def flaky(arch, experiment, reporter=None, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(arch)
        if len(calls) == 1:
            raise RuntimeError("device unreachable (injected)")
        return evaluate(arch, experiment, reporter, **kw)

    summary = run_optuna_search(exp, show_progress=False, objective=TrialObjective(exp, 2, evaluate_fn=flaky))
    assert summary.counts["FAIL"] == 1 and summary.counts["COMPLETE"] == 2
    failed = [t for t in load(tmp_path).get_trials() if t.state == TrialState.FAIL]
    assert failed[0].user_attrs["fail_reason"] == "RuntimeError: device unreachable (injected)"


def test_early_stopped_trial_is_pruned_not_complete(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    from nas.backends.optuna_search import TrialObjective, open_study, run_loop

    exp = load_experiment(tiny_yaml(n=2, epochs=2, extra="early_stopping: {enabled: true}\n"))
    objective = TrialObjective(exp, 2)

    class StopAtFirstEpoch:
        def should_stop(self, epoch: int, values: list[float], history: list[list[float]]) -> bool:
            return epoch == 1

    objective.stopper = StopAtFirstEpoch()
    study = open_study(exp)
    run_loop(study, exp, 2, objective=objective)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for t in trials:
        assert t.user_attrs["stopped_epoch"] == 1 and t.user_attrs["acc_epoch_1"] >= 0
        assert "acc_epoch_2" not in t.user_attrs and "weights" not in t.user_attrs


def _content(db: Path) -> list[str]:
    """Every row of the study database as SQL. The file's bytes are not compared: SQLite bumps its
    change counter on a transaction that writes nothing, which says nothing about the study."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_changed_space_or_experiment_refused_and_storage_untouched(tmp_path: Path, tiny_yaml: Callable[..., Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    f = tiny_yaml(n=1)
    assert main(["search", str(f), "--no-progress"]) == 0
    db = tmp_path / "run" / "study.db"
    before = _content(db)
    capsys.readouterr()
    f.write_text(f.read_text().replace("widths: [0.25, 0.5]", "widths: [0.25, 0.75]"))
    assert main(["search", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different search space" in err and "widths" in err
    assert "use a new --study name or restore the original space" in err
    f.write_text(f.read_text().replace("widths: [0.25, 0.75]", "widths: [0.25, 0.5]").replace("epochs: 1", "epochs: 2"))
    assert main(["search", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "different experiment" in err and "train.epochs 1 -> 2" in err
    assert _content(db) == before
    # unknown study: one line listing what exists
    assert main(["status", "nope", "--run-dir", str(tmp_path / "run")]) == 2
    assert "existing studies: tiny" in capsys.readouterr().err
    # the same experiment with more trials continues the study
    f.write_text(f.read_text().replace("epochs: 2", "epochs: 1"))
    assert main(["search", str(f), "--trials", "2", "--no-progress"]) == 0
    assert [t.state for t in load(tmp_path).get_trials()] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_two_workers_share_the_trial_count(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    f = tiny_yaml(n=4, extra="")
    assert main(["search", str(f), "--workers", "2", "--no-progress"]) == 0
    trials = load(tmp_path).get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_sigkill_worker_then_resume_completes(tmp_path: Path, tiny_yaml: Callable[..., Path],
                                              held_search: Callable[..., Any], wait_held: Callable[..., None]) -> None:
    n = 3
    f = tiny_yaml(n=n, epochs=3, train_size=1500)
    f.write_text(f.read_text().replace("seed: 0,", "seed: 0, heartbeat_interval: 1, grace_period: 2,"))
    proc, held = held_search(["search", str(f), "--no-progress"], after=1)  # 1 trial done, inside the 2nd
    try:
        wait_held(held, proc)
        trials = load(tmp_path).get_trials()
        completed_before = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
        running = [t for t in trials if t.state == TrialState.RUNNING]
        assert len(completed_before) == 1 and len(running) == 1 and "acc_epoch_1" in running[0].user_attrs
        killed = running[0].number
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(3)  # past the heartbeat grace period
    assert main(["resume", "tiny", "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    trials = {t.number: t for t in load(tmp_path).get_trials()}
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials.values()) == n
    assert trials[killed].state == TrialState.FAIL
    assert trials[killed].user_attrs["fail_reason"].startswith("worker lost")
    retry = [t for t in trials.values() if t.user_attrs.get("retry_of") == killed]
    assert retry and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == trials[killed].params
    for number, values in completed_before.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
