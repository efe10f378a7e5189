"""The Ray backend end to end on a real local Ray: trials land in the Optuna study with the right states.

One earlier trial (acc 1.0 at 0.6 MMACs) is planted in the study before the search, so the
multi-objective early stopping is deterministic: every width-0.5 candidate (~0.9 MMACs) is
dominated at epoch 1 and must be recorded PRUNED (not COMPLETE with a partial accuracy),
while the cheapest width-0.25 candidates (~0.3 MMACs) cannot be dominated and complete.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from optuna.trial import TrialState


@pytest.fixture(autouse=True)
def _ray_tune(need: Callable[[str], object]) -> None:
    need("ray.tune")  # a dev dependency: missing under CI is a failure, not a skip

YAML = """
name: ray_tiny
space:
  groups: [1, 3]
  widths: [0.25, 0.5]
  repeats: [[1, 1], [1, 1], [1, 1]]
deploy: {{input: 3x64x64, classes: 10}}
budget: {{max_mmacs: 2.0}}
objectives: [accuracy, mmacs]
data: {{name: default, train_size: 200, val_size: 100}}
train: {{epochs: 2, batch_size: 64, lr: 0.05}}
latency: {{backend: none}}
keep_weights: false
early_stopping: {{enabled: true, min_trials: 1, min_dominating: 1, min_epoch: 1}}
search:
  backend: ray
  sampler: random
  seed: 3
  n_trials: 5
  workers: 2
  run_dir: {run_dir}
"""

PLANTED_MMACS = 0.6


def test_ray_search_records_study_contract(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    from nas.backends.optuna_search import open_study
    from nas.backends.ray_search import run_ray_search
    from nas.experiment import load_experiment

    path = tmp_path / "tiny.yaml"
    path.write_text(YAML.format(run_dir=tmp_path / "run"))
    exp = load_experiment(path)

    # plant the dominating earlier trial (counts toward n_trials: 4 trials left for Ray)
    study = open_study(exp)
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, values=[1.0, PLANTED_MMACS],
        user_attrs={"acc_history": [1.0, 1.0], "mmacs": PLANTED_MMACS, "accuracy": 1.0},
    ))

    url = run_ray_search(exp)
    assert url == f"sqlite:///{(tmp_path / 'run' / 'study.db').resolve()}"

    study = optuna.load_study(study_name="ray_tiny", storage=url)
    assert study.user_attrs["backend"] == "ray"
    assert study.metric_names == ["accuracy", "mmacs"]
    trials = study.get_trials()[1:]
    assert len(trials) == 4, [(t.number, t.state) for t in trials]
    states = {t.state for t in trials}
    assert states <= {TrialState.COMPLETE, TrialState.PRUNED}, [(t.number, t.state, t.user_attrs) for t in trials]
    for t in trials:
        ua = t.user_attrs
        assert {"arch", "arch_id", "mmacs", "n_params", "constraint"} <= set(ua)
        assert ua["mmacs"] < 2.0 and t.params  # budget-aware sampling; params recorded for the sampler
        if t.state == TrialState.COMPLETE:
            assert t.values == [ua["accuracy"], ua["mmacs"]]
            assert len(ua["acc_history"]) == 2 and ua["epochs_run"] == 2
            assert ua["mmacs"] < PLANTED_MMACS  # nothing dearer survives the planted trial
        else:  # stopped by dominance at epoch 1: no objective values for the sampler
            assert t.values is None
            assert ua["stopped_epoch"] == 1 and len(ua["acc_history"]) == 1
    dear = [t for t in trials if t.user_attrs["mmacs"] > PLANTED_MMACS]
    assert all(t.state == TrialState.PRUNED for t in dear)
    cheapest = min(t.user_attrs["mmacs"] for t in trials)
    if cheapest < PLANTED_MMACS:  # the cheapest candidate cannot be dominated
        assert any(t.state == TrialState.COMPLETE for t in trials)
    print(f"ray search: {len(trials)} trials: "
          f"{[(t.state.name, round(t.user_attrs['mmacs'], 3)) for t in trials]}")
