"""Drift-aware latency (objectives/latency/drift.py, nas/timing/measure.py): a real busy process pinned to the
measuring core must flag the trial and leave the normalised value where it was; the end-of-search
re-measure stores both values and `pareto --json` shows them; a bad drift section is one line, exit 2.

Timing tests pin this process to one core and start a pure-Python busy loop on the SAME core (it takes
about half the CPU). The machine is shared, so a quiet measurement is retried (up to 3 times) before
the test says the probe moved without cause; the slowed one must be flagged every time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nas.cli import main

SHAPE = (3, 32, 32)
#: a busy loop halves the CPU (probe ~2); 0.3 is far from both 1 and 2, so noise on a shared
#: 2-core host does not decide the outcome while a probe that cannot see the slow-down still fails
THRESHOLD = 0.3
#: normalised slowed/quiet within this (bench/latency_drift.py: within 0.95-1.05 at 3x224x224 with
#: 48 pairs of 20 ms blocks; here, 8 pairs of 20 ms at 3x32x32: 1.00-1.07 in 6 runs while the raw time
#: moved x2.2-2.5)
TOLERANCE = 0.15


@contextmanager
def pinned() -> Iterator[int]:
    """This process on one core; restored afterwards."""
    before = os.sched_getaffinity(0)
    core = max(before)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def busy_loop(core: int) -> Iterator[None]:
    code = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"
    p = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)  # let it start spinning
        yield
    finally:
        p.kill()
        p.wait()


def _experiment(tmp_path: Path, drift: str = "") -> object:
    from nas.experiment import validate_experiment

    raw = {
        "name": "drift", "deploy": {"input": "3x32x32", "classes": 10}, "budget": {"max_mmacs": 50},
        "space": {"groups": [2, 4], "widths": [0.25, 0.5]}, "objectives": ["mmacs", "latency_ms"],
        "latency": {"backend": "onnxruntime", "min_time_s": 0.02, "repeats": 3, "warmup": 1,
                    "drift": {"block_s": 0.02, "pairs": 8, "flag_threshold": THRESHOLD,
                              "reference": "shufflenet_v1_g3_x0_5"}},
        "search": {"run_dir": str(tmp_path / "run")},
    }
    return validate_experiment(raw, "test")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[object, object, object]:
    """(experiment, backend, candidate arch); the baseline is measured quietly by the first call."""
    import torch

    from nas.timing.measure import make_latency_backend
    from search_spaces import preset

    torch.set_num_threads(1)
    exp = _experiment(tmp_path)
    backend = make_latency_backend(exp.latency)  # type: ignore[attr-defined]
    arch = preset("shufflenet_v1_g8_x0_5").with_io(in_channels=3, num_classes=10, small_input=False)
    return exp, backend, arch


def _quiet(exp: object, backend: object, arch: object) -> tuple[float, dict]:
    from nas.timing.measure import measure_trial

    value, _res, attrs = measure_trial(exp, arch, backend, None)  # type: ignore[arg-type]
    return value, attrs


def test_busy_loop_on_the_core_flags_the_trial_and_normalising_holds(setup: tuple) -> None:
    from nas.timing.measure import baseline, measure_trial

    exp, backend, arch = setup
    with pinned() as core:
        for _attempt in range(3):  # quiet: the baseline and a measurement right after it
            from nas.timing import measure as drift

            drift._LOCAL.clear()
            baseline(exp, backend, "shufflenet_v1_g3_x0_5")
            quiet_value, quiet = _quiet(exp, backend, arch)
            if not quiet["latency_flagged"]:
                break
        assert not quiet["latency_flagged"], f"quiet measurement flagged 3 times: probe {quiet['latency_probe']:.2f}"
        with busy_loop(core):
            slow_value, _res, slow = measure_trial(exp, arch, backend, None)  # type: ignore[arg-type]
    assert slow["latency_flagged"] is True, f"busy loop on the core not flagged: probe {slow['latency_probe']:.2f}"
    assert slow["latency_probe"] > 1 + THRESHOLD
    assert slow["latency_raw_ms"] > 1.3 * quiet["latency_raw_ms"]  # the raw time did move...
    assert abs(slow_value / quiet_value - 1) < TOLERANCE  # ...the objective did not
    assert slow["latency_source"] == quiet["latency_source"] == "measured"


def test_cache_keeps_the_raw_time_and_its_reference_and_normalises_per_study(setup: tuple, tmp_path: Path) -> None:
    from nas.timing.measure import baseline, measure_trial
    from objectives.latency.api import LatencyCache

    exp, backend, arch = setup
    cache = LatencyCache(tmp_path / "cache.db")
    first, _r1, a1 = measure_trial(exp, arch, backend, cache)  # type: ignore[arg-type]
    second, r2, a2 = measure_trial(exp, arch, backend, cache)  # type: ignore[arg-type]
    assert a1["latency_source"] == "measured" and a2["latency_source"] == "cached" and r2.cached
    assert a2["latency_raw_ms"] == a1["latency_raw_ms"] and a2["latency_ratio"] == a1["latency_ratio"]
    base = baseline(exp, backend, "shufflenet_v1_g3_x0_5")
    assert second == pytest.approx(a1["latency_ratio"] * base)
    assert len(cache) == 1


def test_end_of_search_remeasure_stores_both_values_and_pareto_json_shows_them(
        tiny_yaml, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tiny_yaml(latency="onnxruntime, drift: {block_s: 0.002, pairs: 6}", objectives="[mmacs, latency_ms]", n=4)
    assert main(["search", str(f), "--no-progress"]) == 0
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    capsys.readouterr()
    assert main(["pareto", "tiny", "--storage", url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    front = out["front"]
    assert front
    import optuna

    study = optuna.load_study(study_name="tiny", storage=url)
    again = study.user_attrs["latency_remeasured"]
    for row in front:
        r = again[str(row["number"])]
        first = study.trials[row["number"]].user_attrs["latency_ms"]  # the value the search measured first
        # Optuna's own value is the re-measured one, so optuna-dashboard tells the story pareto tells
        assert study.trials[row["number"]].values[1] == pytest.approx(r["latency_ms"])
        assert row["latency_remeasured"] is True
        assert row["latency_ms"] == pytest.approx(r["latency_ms"])
        assert row["latency_first_ms"] == pytest.approx(first)
        assert row["latency_change"] == pytest.approx(r["latency_ms"] / first - 1)  # + = the re-measure is slower
        assert row["latency_source"] in ("measured", "cached")
    assert out["latency_drift"]["remeasured"] == len(again) >= len(front)
    assert any(k.startswith("latency_baseline:") for k in study.user_attrs)
    # a second run of the finished study does not measure again
    stamps = {k: v["at"] for k, v in again.items()}
    assert main(["search", str(f), "--no-progress"]) == 0
    assert {k: v["at"] for k, v in
            optuna.load_study(study_name="tiny", storage=url).user_attrs["latency_remeasured"].items()} == stamps
    assert main(["status", "tiny", "--run-dir", str(tmp_path / "run")]) == 0
    assert "latency drift:" in capsys.readouterr().out
    # status's best latency is the re-measured one, as in pareto
    from nas.analysis.summary import summarize

    study = optuna.load_study(study_name="tiny", storage=url)
    latest = {t.number: again[str(t.number)]["latency_ms"] if str(t.number) in again else t.values[1]
              for t in study.trials if t.values}
    best = summarize(study)
    assert best.best["latency_ms"] == pytest.approx(min(latest.values()))
    assert best.best_trial["latency_ms"] == min(latest, key=lambda k: (latest[k], k))


@pytest.mark.parametrize("drift, expected", [
    ("{reference: nope}", "latency.drift.reference: unknown preset 'nope'"),
    ("{reference: [shufflenet_v1_g3_x0_5, nope]}", "latency.drift.reference: [1] unknown preset 'nope'"),
    ("{flag_threshold: 2}", "latency.drift.flag_threshold: must be < 1.0, got 2"),
    ("{pairs: 1}", "latency.drift.pairs: must be >= 2, got 1"),
    ("{normalise: maybe}", "latency.drift.normalise: must be true or false, got 'maybe'"),
    ("{colour: red}", "latency.drift.colour: is not a known key"),
])
def test_bad_drift_section_is_one_line_exit_2(tiny_yaml, capsys: pytest.CaptureFixture[str], drift: str,
                                              expected: str) -> None:
    f = tiny_yaml(latency=f"onnxruntime, drift: {drift}")
    assert main(["search", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_drift_with_the_torch_backend_is_refused(tiny_yaml, capsys: pytest.CaptureFixture[str]) -> None:
    f = tiny_yaml(latency="torch, drift: {pairs: 4}")
    assert main(["search", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "latency: drift: the interleaved protocol times ONNX" in err and len(err.splitlines()) == 1


@pytest.fixture
def agent(tmp_path: Path, free_port) -> Iterator[tuple[str, Path, int]]:
    """A device agent on 127.0.0.1 pinned to one core: (url, token file, its pid)."""
    from objectives.latency.remote import RemoteDevice

    token = tmp_path / "token"
    token.write_text("drift-test-token\n")
    port = free_port()
    core = max(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-m", "objectives.latency.agent", "--host", "127.0.0.1", "--port",
                             str(port), "--token-file", str(token)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
    os.sched_setaffinity(proc.pid, {core})
    url = f"http://127.0.0.1:{port}"
    device = RemoteDevice(url, token="drift-test-token", timeout=5, retries=1, backoff=0.05)
    deadline = time.monotonic() + 30
    while True:
        try:
            device.info()
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.1)
    try:
        yield url, token, core
    finally:
        proc.kill()
        proc.wait()


def test_through_the_device_agent_a_slowed_board_is_flagged_and_normalised(agent: tuple, tmp_path: Path) -> None:
    """The same protocol through the agent, one short benchmark request per block."""
    from nas.experiment import validate_experiment
    from nas.timing import measure as drift
    from nas.timing.measure import baseline, make_latency_backend, measure_trial
    from search_spaces import preset

    url, token, core = agent
    raw = {
        "name": "drift", "deploy": {"input": "3x32x32", "classes": 10}, "budget": {"max_mmacs": 50},
        "space": {"groups": [2, 4], "widths": [0.25, 0.5]}, "objectives": ["mmacs", "latency_ms"],
        "latency": {"backend": "remote", "device": url, "token_file": str(token), "min_time_s": 0.02,
                    "drift": {"block_s": 0.03, "pairs": 6, "flag_threshold": THRESHOLD,
                              "reference": "shufflenet_v1_g3_x0_5"}},
        "search": {"run_dir": str(tmp_path / "run")},
    }
    exp = validate_experiment(raw, "test")
    backend = make_latency_backend(exp.latency)
    arch = preset("shufflenet_v1_g8_x0_5").with_io(in_channels=3, num_classes=10, small_input=False)
    for _attempt in range(3):
        drift._LOCAL.clear()
        baseline(exp, backend, "shufflenet_v1_g3_x0_5")
        quiet_value, _r, quiet = measure_trial(exp, arch, backend, None)
        if not quiet["latency_flagged"]:
            break
    assert not quiet["latency_flagged"], f"quiet measurement flagged 3 times: probe {quiet['latency_probe']:.2f}"
    with busy_loop(core):  # the agent's core: the "board" slows down
        slow_value, res, slow = measure_trial(exp, arch, backend, None)
    assert res.backend == "remote"
    assert slow["latency_flagged"] is True, f"slowed agent not flagged: probe {slow['latency_probe']:.2f}"
    assert slow["latency_raw_ms"] > 1.3 * quiet["latency_raw_ms"]
    assert abs(slow_value / quiet_value - 1) < TOLERANCE


@pytest.mark.slow  # starts Ray (about 20 s)
def test_ray_search_remeasures_the_front_with_the_same_function(tiny_yaml, tmp_path: Path, need,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    need("ray.tune")
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import optuna

    from nas.analysis.frame import trials_frame
    from nas.analysis.front import pareto_info
    from nas.backends.ray_search import run_ray_search
    from nas.experiment import load_experiment

    f = tiny_yaml(latency="onnxruntime, drift: {block_s: 0.002, pairs: 6}", objectives="[mmacs, latency_ms]", n=3,
                  search="backend: ray, workers: 1")
    url = run_ray_search(load_experiment(f))
    study = optuna.load_study(study_name="tiny", storage=url)
    again = study.user_attrs["latency_remeasured"]
    front = pareto_info(trials_frame(study)).front
    assert len(front) and all(str(n) in again for n in front["number"])
    assert all(front["latency_remeasured"]) and front["latency_first_ms"].notna().all()


def test_a_predicted_latency_is_recorded_as_predicted_and_remeasured_with_onnx_runtime(tmp_path: Path) -> None:
    """A predictor backend's result says extra["predicted"]; its study re-measures with local ONNX
    Runtime, or with the configured device agent."""
    from nas.experiment import validate_experiment
    from nas.timing.measure import source
    from nas.timing.remeasure import _measuring_backend
    from objectives.latency.base import LatencyResult

    def result(**kw: object) -> LatencyResult:
        return LatencyResult(median_ms=1.0, p90_ms=1.0, spread=0.0, n=1, backend="x", device="d", threads=1,
                             runtime={}, input_shape=(3, 32, 32), **kw)  # type: ignore[arg-type]

    assert source(result(extra={"predicted": True})) == "predicted"
    assert source(result(cached=True)) == "cached"
    assert source(result()) == "measured"
    base = {"name": "p", "deploy": {"input": "3x32x32", "classes": 10}, "budget": {"max_mmacs": 50},
            "objectives": ["mmacs", "latency_ms"], "search": {"run_dir": str(tmp_path)}}
    lut = validate_experiment({**base, "latency": {"backend": "lut", "table": "t.json"}}, "test")
    assert _measuring_backend(lut).name == "onnxruntime"
    token = tmp_path / "token"
    token.write_text("x\n")
    remote = validate_experiment({**base, "latency": {"backend": "lut", "table": "t.json",
                                                      "device": "http://127.0.0.1:9", "token_file": str(token)}},
                                 "test")
    assert _measuring_backend(remote).name == "remote"
    torch_exp = validate_experiment({**base, "latency": {"backend": "torch"}}, "test")
    assert _measuring_backend(torch_exp) is None  # torch times are not ONNX Runtime's: not re-measured


def test_a_study_made_before_drift_never_continues_with_interleaved_values() -> None:
    """Its stored experiment has no `latency.drift`: `resume` keeps measuring plainly, and a rerun of a
    YAML with the (enabled) default is refused as another experiment instead of mixing protocols."""
    from nas.backends.optuna_study import identity
    from nas.experiment import Experiment, validate_experiment

    raw = {"name": "old", "budget": {"max_mmacs": 40}, "objectives": ["mmacs", "latency_ms"],
           "latency": {"backend": "onnxruntime"}}
    new = validate_experiment(raw, "test")
    assert new.latency.drift.enabled  # the default interleaves
    stored = new.to_dict()
    del stored["latency"]["drift"]  # as a study created before the option stored it
    assert identity(stored) != identity(new.to_dict())
    resumed = Experiment.from_stored(stored)
    assert resumed.latency.drift.enabled is False
    assert identity(resumed.to_dict()) == identity(stored)
    # the same section without interleaving (predictor, none) is the same experiment either way
    plain = validate_experiment({**raw, "objectives": ["mmacs"], "latency": {"backend": "none"}}, "test").to_dict()
    assert identity({**plain, "latency": {k: v for k, v in plain["latency"].items() if k != "drift"}}) == identity(plain)
