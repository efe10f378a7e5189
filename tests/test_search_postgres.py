"""A real PostgreSQL server on loopback (tests/conftest.py: postgres_server) as the shared storage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_workers_on_postgresql(tmp_path: Path, postgres_url: str, tiny_yaml: Callable[..., Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import optuna
    from optuna.trial import TrialState

    from nas.cli import main

    f = tiny_yaml(name="pg", n=4)
    assert main(["search", str(f), "--storage", postgres_url, "--workers", "2", "--no-progress"]) == 0
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert study.metric_names == ["accuracy", "mmacs"]
    assert {t.user_attrs.get("arch_id") for t in trials if t.state == TrialState.COMPLETE} != {None}
    capsys.readouterr()
    assert main(["status", "pg", "--storage", postgres_url, "--json"]) == 0
    assert '"done": 4' in capsys.readouterr().out
