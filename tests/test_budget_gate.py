"""The budget gate binds in a real search: candidates outside max_mmacs, min_mmacs or
max_latency_ms are offered by the sampler, recorded PRUNED with the reason, and never trained.

The spaces are chosen so that the budget-aware sampler cannot avoid the gate: with one width
there is nothing to narrow, so every groups/repeats combination outside the budget is built at
that width and reaches the gate (3x64x64 deploy input, width 0.5: repeats (1,1,1) ~0.93 MMACs,
everything deeper 1.09-1.25 MMACs). Each test asserts that such candidates were offered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from nas.cli import main

SPACE = "widths: [0.5]"
REPEATS = ("repeats: [[1, 1], [1, 1], [1, 1]]", "repeats: [[1, 1], [1, 2], [1, 2]]")


def run(tmp_path: Path, f: Path, name: str) -> list[FrozenTrial]:
    f.write_text(f.read_text().replace(*REPEATS).replace("sampler: tpe", "sampler: random"))
    assert main(["search", str(f), "--no-progress"]) == 0
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    return study.get_trials()


def assert_gated(tmp_path: Path, trials: list[FrozenTrial], reason: str) -> list[FrozenTrial]:
    """Every trial outside the budget is PRUNED with `reason`, untrained, without weights; returns them."""
    gated = [t for t in trials if str(t.user_attrs.get("fail_reason", "")).startswith("over budget")]
    assert gated, f"no candidate outside the budget was offered: {[t.user_attrs.get('mmacs') for t in trials]}"
    for t in gated:
        ua = t.user_attrs
        assert t.state == TrialState.PRUNED and t.values is None
        assert reason in ua["fail_reason"], ua["fail_reason"]
        assert "accuracy" not in ua and not ua.get("time_train_s") and "acc_epoch_1" not in ua
        assert not (tmp_path / "run" / "weights" / f"{ua['arch_id']}.safetensors").exists()
        assert max(ua["constraint"]) > 0  # the sampler sees it as infeasible
    return gated


def test_search_prunes_over_max_mmacs_untrained(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    f = tiny_yaml(name="over", n=5, widths="[0.5]", budget="max_mmacs: 1.0")
    trials = run(tmp_path, f, "over")
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 5
    gated = assert_gated(tmp_path, trials, "MMACs outside [0, 1]")
    assert all(t.user_attrs["mmacs"] > 1.0 for t in gated)
    trained = [t for t in trials if t not in gated]
    assert trained, "the space also holds candidates that fit: one must have been trained"
    for t in trained:
        assert t.state == TrialState.COMPLETE and t.user_attrs["mmacs"] <= 1.0 and t.user_attrs["time_train_s"] > 0


def test_search_prunes_under_min_mmacs_untrained(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    f = tiny_yaml(name="under", n=5, widths="[0.5]", budget="max_mmacs: 2, min_mmacs: 1.0")
    trials = run(tmp_path, f, "under")
    gated = assert_gated(tmp_path, trials, "MMACs outside [1, 2]")
    assert all(t.user_attrs["mmacs"] < 1.0 for t in gated)
    assert all(t.state == TrialState.COMPLETE for t in trials if t not in gated)


def test_search_prunes_over_max_latency_untrained(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    # no network runs in 1 microsecond: every candidate is measured, then gated before training
    f = tiny_yaml(name="slow", n=2, widths="[0.25]", latency="torch", budget="max_mmacs: 3, max_latency_ms: 0.001")
    trials = run(tmp_path, f, "slow")
    gated = assert_gated(tmp_path, trials, "> max_latency_ms 0.001")
    assert len(gated) == len(trials) == 2
    for t in gated:
        assert t.user_attrs["latency_ms"] > 0.001 and t.user_attrs["latency_n"] >= 3


@pytest.mark.parametrize("budget,message", [("max_mmacs: 0.5", "no architecture in the space fits")])
def test_budget_nothing_fits_is_refused(tmp_path: Path, tiny_yaml: Callable[..., Path], budget: str, message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The other side of the gate: a budget no candidate meets is a one-line error before any trial."""
    f = tiny_yaml(name="none", widths="[0.5]", budget=budget)
    assert main(["search", str(f), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "study.db").exists()
