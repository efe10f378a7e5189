"""A real PostgreSQL server on loopback (tests/conftest.py: postgres_server) as the shared storage."""

from __future__ import annotations

import json
import socket
import subprocess
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



@pytest.mark.slow
def test_two_search_processes_on_one_postgresql_study(tmp_path: Path, postgres_url: str,
                                                      tiny_yaml: Callable[..., Path],
                                                      start_cli: Callable[..., subprocess.Popen[str]]) -> None:
    """Two `shufflenas search` processes, as two machines would run them, share one study: exactly
    n trials, both ran some, none left RUNNING, and no candidate drawn twice by a shared seed."""
    import optuna
    from optuna.trial import TrialState

    n = 8
    f = tiny_yaml(name="pg2", n=n, train_size=400)
    argv = ["search", str(f), "--storage", postgres_url, "--no-progress"]
    a = start_cli(argv)
    b = start_cli(argv)  # started at once: one creates the study, the other joins it
    outs = [p.communicate(timeout=600) for p in (a, b)]
    assert [a.returncode, b.returncode] == [0, 0], [o[1][-2000:] for o in outs]
    trials = optuna.load_study(study_name="pg2", storage=postgres_url).get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == n, states
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    workers = {t.user_attrs["worker"] for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert workers == {f"{socket.gethostname()}:{a.pid}", f"{socket.gethostname()}:{b.pid}"}, workers
    # width_q is continuous: two trials with identical parameters are one draw made twice (two samplers on
    # one seed, or one trial run twice), never the sampler asking again
    drawn = [json.dumps(t.params, sort_keys=True) for t in trials if t.state != TrialState.FAIL]
    assert len(set(drawn)) == len(drawn), drawn
    # and each evaluated architecture was evaluated by one trial, once
    evaluated = [t for t in trials if "time_eval_s" in t.user_attrs]
    assert len({t.number for t in evaluated}) == len(evaluated)
