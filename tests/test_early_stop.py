"""DominanceStopper on hand-computed cases, and its Optuna storage adapter on a real SQLite study."""

from __future__ import annotations

import math

import optuna
import pytest

from nas.schedulers.early_stop import DominanceStopper, accuracy_at, history_from_study, vector_at

ACC_MMACS = ["maximize", "minimize"]  # (accuracy at epoch k, MMACs)


def stopper(**kw: int) -> DominanceStopper:
    return DominanceStopper(ACC_MMACS, **{"min_trials": 3, "min_dominating": 2, **kw})


def test_dominated_by_enough_trials_stops() -> None:
    # candidate (0.50, 40): (0.60, 30) and (0.55, 40) dominate it, (0.70, 80) costs more
    hist = [[0.60, 30.0], [0.55, 40.0], [0.70, 80.0]]
    s = stopper()
    assert s.count_dominating([0.50, 40.0], hist) == 2
    assert s.should_stop(1, [0.50, 40.0], hist)


def test_cheap_model_with_low_accuracy_is_not_stopped() -> None:
    # every earlier trial is more accurate but more expensive: nobody dominates (0.30, 10)
    hist = [[0.60, 30.0], [0.55, 40.0], [0.70, 80.0], [0.65, 20.0]]
    s = stopper()
    assert s.count_dominating([0.30, 10.0], hist) == 0
    assert not s.should_stop(2, [0.30, 10.0], hist)


def test_one_dominator_is_not_enough() -> None:
    hist = [[0.60, 30.0], [0.40, 50.0], [0.45, 45.0]]
    assert stopper().count_dominating([0.50, 40.0], hist) == 1
    assert not stopper().should_stop(1, [0.50, 40.0], hist)


def test_too_few_trials_never_stops() -> None:
    hist = [[0.90, 1.0], [0.95, 2.0]]  # both dominate, but only 2 < min_trials=3 reached the epoch
    assert stopper().count_dominating([0.10, 50.0], hist) == 2
    assert not stopper().should_stop(1, [0.10, 50.0], hist)
    assert stopper(min_trials=2).should_stop(1, [0.10, 50.0], hist)


def test_ties_do_not_dominate() -> None:
    # identical vectors are not better anywhere; equal in one objective and better in the other is
    s = stopper(min_trials=2, min_dominating=2)
    assert not s.should_stop(1, [0.5, 40.0], [[0.5, 40.0], [0.5, 40.0], [0.5, 40.0]])
    assert s.should_stop(1, [0.5, 40.0], [[0.5, 39.0], [0.51, 40.0]])


def test_grace_epochs() -> None:
    hist = [[0.9, 1.0]] * 5
    s = stopper(grace_epochs=3)
    assert not s.should_stop(1, [0.1, 9.0], hist)
    assert not s.should_stop(2, [0.1, 9.0], hist)
    assert s.should_stop(3, [0.1, 9.0], hist)


def test_three_objectives_and_non_finite() -> None:
    s = DominanceStopper(["maximize", "minimize", "minimize"], min_trials=2, min_dominating=1)
    # (acc, mmacs, latency): better acc and mmacs but slower -> no domination
    assert not s.should_stop(1, [0.5, 40.0, 2.0], [[0.6, 30.0, 3.0], [0.7, 20.0, 2.5]])
    assert s.should_stop(1, [0.5, 40.0, 2.0], [[0.6, 30.0, 3.0], [0.7, 20.0, 2.0]])
    # a NaN history vector does not count toward min_trials; a NaN candidate is never stopped
    assert not s.should_stop(1, [0.5, 40.0, 2.0], [[math.nan, 30.0, 1.0], [0.7, 20.0, 2.0]])
    assert not s.should_stop(1, [math.nan, 40.0, 2.0], [[0.6, 30.0, 1.0], [0.7, 20.0, 2.0]])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="directions"):
        DominanceStopper(["max"])
    with pytest.raises(ValueError, match="min_trials must be an integer >= 1, got 0"):
        DominanceStopper(ACC_MMACS, min_trials=0)
    with pytest.raises(ValueError, match="values must have 2 entries"):
        stopper().should_stop(1, [0.5], [[0.1, 1.0]] * 3)
    with pytest.raises(ValueError, match=r"history\[1\] must have 2 entries"):
        stopper().should_stop(1, [0.5, 1.0], [[0.1, 1.0], [0.2], [0.3, 1.0]])


def test_vector_at_reads_both_attr_forms() -> None:
    attrs = {"acc_history": [0.2, 0.4], "mmacs": 30.0, "latency_ms": 2.0, "params": 1000}
    assert accuracy_at(attrs, 2) == 0.4 and accuracy_at(attrs, 3) is None
    assert accuracy_at({"acc_epoch_3": 0.7}, 3) == 0.7
    assert vector_at(attrs, 1, ["accuracy", "mmacs", "latency_ms"]) == [0.2, 30.0, 2.0]
    assert vector_at({"acc_history": [0.2]}, 1, ["accuracy", "mmacs"]) is None  # static value missing
    # MnasNet score at latency == target is the accuracy itself
    assert vector_at(attrs, 2, ["score"], {"target_ms": 2.0, "w": -0.07}) == [pytest.approx(0.4)]


def test_history_from_real_study(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", directions=ACC_MMACS)
    dist = optuna.distributions.FloatDistribution(0, 1)

    def add(state: optuna.trial.TrialState, attrs: dict) -> None:
        values = [attrs["acc_history"][-1], attrs["mmacs"]] if state == optuna.trial.TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(state=state, values=values, params={"x": 0.5},
                                                  distributions={"x": dist}, user_attrs=attrs))

    add(optuna.trial.TrialState.COMPLETE, {"acc_history": [0.3, 0.5, 0.6], "mmacs": 30.0})  # number 0
    add(optuna.trial.TrialState.PRUNED, {"acc_history": [0.2], "mmacs": 20.0, "stopped_epoch": 1})  # 1
    add(optuna.trial.TrialState.FAIL, {"acc_history": [0.9, 0.9], "mmacs": 5.0})  # 2: failures say nothing
    add(optuna.trial.TrialState.PRUNED, {"mmacs": 500.0, "fail_reason": "over budget"})  # 3: never trained
    running = study.ask()  # 4: running trial, attrs written per epoch
    running.set_user_attr("mmacs", 25.0)
    running.set_user_attr("acc_history", [0.25, 0.45])

    study = optuna.load_study(storage=storage, study_name="s")
    assert history_from_study(study, 1, ["accuracy", "mmacs"]) == [[0.3, 30.0], [0.2, 20.0], [0.25, 25.0]]
    assert history_from_study(study, 2, ["accuracy", "mmacs"]) == [[0.5, 30.0], [0.45, 25.0]]
    assert history_from_study(study, 2, ["accuracy", "mmacs"], exclude_number=4) == [[0.5, 30.0]]
    assert history_from_study(study, 4, ["accuracy", "mmacs"]) == []
    # the three trials at epoch 1 all dominate a (0.1, 40) candidate
    s = DominanceStopper(ACC_MMACS, min_trials=3, min_dominating=3)
    assert s.should_stop(1, [0.1, 40.0], history_from_study(study, 1, ["accuracy", "mmacs"]))
