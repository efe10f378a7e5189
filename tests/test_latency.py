"""Latency protocol, backends, ONNX export, cache, CLI errors, and the remote backend against a real agent."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from nas.cli import main
from objectives.latency.api import get_backend, measure_latency
from objectives.latency.base import LatencyResult, MeasureConfig, host_info, measure_callable, summarize
from objectives.latency.cache import LatencyCache
from objectives.latency.onnx_export import export_onnx_bytes
from objectives.latency.ort_backend import make_session
from search_spaces import build_model, preset

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FAST = MeasureConfig(warmup=1, min_repeats=5, min_time_s=0.02, max_spread=10.0)
SHAPE = (3, 64, 64)
TINY = "shufflenet_v1_g3_x0_25"


@pytest.fixture(scope="module")
def tiny():
    return preset(TINY)


# ---------------------------------------------------------------------------- protocol


def test_summarize_median_quantiles_and_spread() -> None:
    s = summarize([float(v) for v in range(1, 12)])  # 1..11
    assert s.median_ms == 6.0 and s.n == 11 and s.min_ms == 1.0
    assert s.p10_ms == pytest.approx(2.0) and s.p90_ms == pytest.approx(10.0)
    assert s.spread == pytest.approx((10.0 - 2.0) / 6.0)
    with pytest.raises(ValueError):
        summarize([])


def test_discipline_repeats_until_count_and_time_and_remeasures_wide_spread() -> None:
    calls = []

    def run() -> None:
        calls.append(1)
        time.sleep(0.004 if len(calls) % 2 else 0.0)  # alternating: a very wide spread

    cfg = MeasureConfig(warmup=2, min_repeats=6, min_time_s=0.03, max_spread=0.05)
    stats, again = measure_callable(run, cfg)
    assert again is True  # spread above the threshold -> measured a second time
    assert stats.n >= 6 and stats.spread > 0.05
    assert len(calls) >= 2 * (2 + 6)
    steady, again2 = measure_callable(lambda: None, MeasureConfig(warmup=0, min_repeats=3, min_time_s=0.0,
                                                                  max_spread=1e9))
    assert again2 is False and steady.n == 3


@pytest.mark.parametrize(
    "kwargs", [{"warmup": -1}, {"min_repeats": 2}, {"min_time_s": -1.0}, {"max_spread": 0}, {"max_repeats": 3}]
)
def test_measure_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="latency"):
        MeasureConfig(**kwargs)


def test_result_round_trips_through_dict() -> None:
    r = LatencyResult(1.0, 1.2, 0.1, 30, "onnxruntime", "abc", 1, {"onnxruntime": "1"}, (3, 8, 8))
    assert LatencyResult.from_dict(r.to_dict()) == r
    assert "median 1.000 ms" in r.summary()


def test_host_fingerprint_is_the_agents() -> None:
    from objectives.latency import agent

    assert host_info()["fingerprint"] == agent.device_info()["fingerprint"]


# ---------------------------------------------------------------------------- backends and export


@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_local_backends_measure(tiny, name: str) -> None:
    before = torch.get_num_threads()
    r = get_backend(name, threads=1, config=FAST).measure(tiny, SHAPE)
    assert torch.get_num_threads() == before  # thread count restored
    assert r.backend == name and r.threads == 1 and r.input_shape == SHAPE and not r.cached
    assert 0 < r.median_ms <= r.p90_ms and r.n >= FAST.min_repeats and r.spread >= 0
    assert r.device == host_info()["fingerprint"] and r.arch_id == tiny.arch_id
    assert set(r.runtime) == ({"torch"} if name == "torch" else {"onnxruntime"})


def test_onnx_export_is_one_file_and_matches_torch(tiny) -> None:
    data = export_onnx_bytes(tiny, SHAPE)
    model = onnx.load_from_string(data)
    assert model.opset_import[0].version == 17
    for t in model.graph.initializer:
        assert t.data_location != onnx.TensorProto.EXTERNAL and not t.external_data
    torch_model = build_model(tiny).eval()
    x = np.random.default_rng(1).standard_normal((1, *SHAPE), dtype=np.float32)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    # export_onnx_bytes builds its own model: same seeds are not guaranteed, so export this one
    data = export_onnx_bytes(torch_model, SHAPE)
    sess = make_session(data, threads=1)
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert out.shape == ref.shape
    assert np.max(np.abs(out - ref)) < 1e-4


@pytest.mark.slow
def test_dynamo_export_matches_torch(tiny) -> None:
    model = build_model(tiny).eval()
    data = export_onnx_bytes(model, SHAPE, dynamo=True)
    x = np.random.default_rng(2).standard_normal((1, *SHAPE), dtype=np.float32)
    sess = make_session(data)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(sess.run(None, {sess.get_inputs()[0].name: x})[0] - ref)) < 1e-4


def test_cpu_clock_is_keyed_and_needs_one_thread(tiny) -> None:
    cpu = replace(FAST, clock="cpu")
    r = get_backend("onnxruntime", config=cpu).measure(tiny, SHAPE)
    assert r.runtime.get("clock") == "cpu" and r.median_ms > 0  # part of the cache key
    with pytest.raises(ValueError, match="needs threads=1"):
        get_backend("onnxruntime", threads=2, config=cpu)
    with pytest.raises(ValueError, match="remote"):
        get_backend("remote", url="http://127.0.0.1:9", config=cpu)
    with pytest.raises(ValueError, match="clock"):
        MeasureConfig(clock="tsc")


def test_unknown_backend_is_one_line_value_error() -> None:
    with pytest.raises(ValueError, match="unknown latency backend 'tflite'"):
        get_backend("tflite")
    with pytest.raises(ValueError, match="threads"):
        get_backend("onnxruntime", threads=0)


# ---------------------------------------------------------------------------- cache


class Counting:
    """A real backend that counts how often it is asked to measure."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner
        self.name, self.threads = inner.name, inner.threads
        self.calls = 0

    def device_info(self) -> dict:
        return self.inner.device_info()

    def runtime(self) -> dict:
        return self.inner.runtime()

    def measure(self, arch, shape):  # noqa: ANN001, ANN201
        self.calls += 1
        return self.inner.measure(arch, shape)


def test_cache_hit_returns_stored_result_without_measuring(tiny, tmp_path: Path) -> None:
    db = tmp_path / "lat.db"
    b = Counting(get_backend("onnxruntime", config=FAST))
    first = measure_latency(tiny, SHAPE, b, cache=LatencyCache(db))
    second = measure_latency(tiny, SHAPE, b, cache=db)  # a path works too (a new connection)
    assert b.calls == 1 and not first.cached and second.cached
    assert replace(second, cached=False, seconds=first.seconds) == first
    # any key part changing is a miss, e.g. another thread count
    b2 = Counting(get_backend("onnxruntime", threads=2, config=FAST))
    measure_latency(tiny, SHAPE, b2, cache=db)
    assert b.calls == 1 and b2.calls == 1 and len(LatencyCache(db)) == 2


def test_cache_is_safe_with_several_processes(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    code = (
        "import sys\n"
        "from objectives.latency.base import LatencyResult\n"
        "from objectives.latency.cache import CacheKey, LatencyCache\n"
        "c = LatencyCache(sys.argv[1])\n"
        "for i in range(40):\n"
        "    k = CacheKey(f'{sys.argv[2]}{i}', (3, 8, 8), 'onnxruntime', 'dev', 1, 'onnxruntime=1')\n"
        "    c.put(k, LatencyResult(1.0, 1.0, 0.0, 3, 'onnxruntime', 'dev', 1, {}, (3, 8, 8)))\n"
        "    assert c.get(k) is not None\n"
    )
    procs = [subprocess.Popen([PY, "-c", code, str(db), tag], cwd=ROOT) for tag in "abc"]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert len(LatencyCache(db)) == 120


def test_latency_package_does_not_import_torch() -> None:
    code = "import sys, objectives.latency, objectives.latency.base, objectives.latency.cache; print('torch' in sys.modules)"
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- CLI


def test_cli_latency_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    argv = ["latency", TINY, "--input", "3x64x64", "--min-time", "0.02", "--repeats", "5", "--json",
            "--cache", str(tmp_path / "c.db")]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["backend"] == "onnxruntime" and r["input_shape"] == [3, 64, 64] and r["cached"] is False
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is True


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--backend", "tflite"], "unknown backend 'tflite'"),
        (["--threads", "0"], "--threads"),
        (["--threads", "999"], "--threads"),
        (["--backend", "remote"], "--device"),
        (["--backend", "remote", "--device", "http://127.0.0.1:9", "--token-file", "/nonexistent/tok"], "--token-file"),
        (["--backend", "remote", "--device", "ftp://x"], "http://"),
        (["--backend", "lut"], "--table"),
        (["--backend", "lut", "--table", "/nonexistent/t.json"], "no such file"),
        (["--input", "3x64"], "--input"),
        (["--min-time", "-1"], "--min-time"),
        (["--clock", "tsc"], "--clock"),
        (["--clock", "cpu", "--threads", "2"], "threads=1"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["latency", TINY, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_cli_unknown_arch_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["latency", "no_such_preset"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- remote (real agent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("agent")
    token = tmp / "token"
    token.write_text("s3cret-token\n")
    port = _free_port()
    proc = subprocess.Popen(
        [PY, "-m", "objectives.latency.agent", "--host", "127.0.0.1", "--port", str(port), "--token-file", str(token)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"agent exited: {proc.stderr.read().decode()}")
            time.sleep(0.1)
    yield url, token
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_remote_backend_against_real_agent(agent, tiny, tmp_path: Path) -> None:
    url, token = agent
    from objectives.latency.remote import RemoteDevice

    info = RemoteDevice(url, token=token.read_text().strip()).info()
    b = get_backend("remote", url=url, token_file=token, config=FAST)
    r = measure_latency(tiny, SHAPE, b, cache=tmp_path / "c.db")
    assert r.backend == "remote" and r.device == info["fingerprint"] and r.machine == info["machine"]
    assert r.runtime == {"onnxruntime": info["onnxruntime"]} and r.n >= FAST.min_repeats and r.median_ms > 0
    again = measure_latency(tiny, SHAPE, get_backend("remote", url=url, token_file=token, config=FAST),
                            cache=tmp_path / "c.db")
    assert again.cached and again.median_ms == r.median_ms


def test_remote_wrong_token_is_rejected(agent, tiny, tmp_path: Path) -> None:
    from objectives.latency.remote import DeviceRejected

    url, _ = agent
    bad = tmp_path / "bad"
    bad.write_text("nope")
    with pytest.raises(DeviceRejected, match="401"):
        get_backend("remote", url=url, token_file=bad, config=FAST).measure(tiny, SHAPE)


def test_cli_remote_and_device_info(agent, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    url, token = agent
    assert main(["device", "info", url, "--token-file", str(token)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert main(["latency", TINY, "--input", "3x64x64", "--backend", "remote", "--device", url,
                 "--token-file", str(token), "--min-time", "0.02", "--repeats", "5"]) == 0
    out = capsys.readouterr().out
    assert info["fingerprint"] in out and "median" in out


@pytest.mark.timeout(120)  # a hang (no timeout on connect) fails; no wall-clock assert on a busy box
def test_unreachable_device_is_a_clear_error_after_retries(tiny) -> None:
    from objectives.latency.remote import DeviceUnreachable

    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    b = get_backend("remote", url=url, retries=2, backoff=0.05, timeout=2, config=FAST)
    with pytest.raises(DeviceUnreachable, match=r"unreachable after 3 attempt"):
        b.measure(tiny, SHAPE)


def test_emulated_device_is_labelled_not_called_arm() -> None:
    from objectives.latency.base import device_label

    label = device_label({"machine": "aarch64", "cpu_model": "Cortex-A72", "cores": 4, "emulated": True})
    assert label.startswith("aarch64") and "EMULATED" in label
