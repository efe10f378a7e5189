"""optuna-dashboard, the dashboard Optuna users already run, reads a study `shufflenas search` wrote:
objective names, trial values, parameters and our user attrs, over its HTTP API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - loopback, a server this test started
        return json.loads(r.read())


@pytest.mark.slow
def test_optuna_dashboard_serves_a_shufflenas_study(tmp_path: Path, tiny_yaml: Callable[..., Path],
                                                   free_port: Callable[[], int], need: Callable[[str], object]) -> None:
    need("optuna_dashboard")  # a dev dependency: missing under CI is a failure
    f = tiny_yaml(name="dash", n=2)
    assert main(["search", str(f), "--no-progress"]) == 0
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    study = optuna.load_study(study_name="dash", storage=url)
    port = free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    proc = subprocess.Popen([str(exe), url, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    pytest.fail(f"optuna-dashboard did not answer: {err[-2000:]}")
                time.sleep(0.5)
        (summary,) = [s for s in studies if s["study_name"] == "dash"]
        detail = _get(f"{base}/api/studies/{summary['study_id']}?after=0")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert detail["name"] == "dash" and detail["directions"] == ["maximize", "minimize"]
    assert detail["objective_names"] == ["accuracy", "mmacs"]
    study_attrs = {a["key"] for a in detail["user_attrs"]}
    assert {"experiment", "space_hash", "objectives", "backend"} <= study_attrs
    served = {t["number"]: t for t in detail["trials"]}
    trials = study.get_trials()
    assert sorted(served) == [t.number for t in trials] and len(trials) == 2
    for t in trials:
        s = served[t.number]
        assert s["state"] == t.state.name.capitalize()
        assert {p["name"]: p["param_external_value"] for p in s["params"]} == {k: str(v) for k, v in t.params.items()}
        attrs = {a["key"] for a in s["user_attrs"]}
        assert {"arch", "arch_id", "mmacs", "n_params", "worker", "constraint"} <= attrs
        if t.state == TrialState.COMPLETE:
            assert s["values"] == pytest.approx(t.values)
            assert {"accuracy", "time_train_s"} <= attrs
