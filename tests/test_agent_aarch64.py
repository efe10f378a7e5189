"""The device agent really runs on aarch64: agent.py alone, in an emulated ARM64 root.

The root (Debian bookworm arm64 with python3.11, plus aarch64 wheels of numpy and
onnxruntime, plus a fake ARM /proc/cpuinfo) is made by ``.ci/prepare_aarch64.sh`` at
``$SHUFFLENAS_AARCH64_ROOT`` (default /opt/shufflenas-aarch64); see
../shared/reference/arm64-emulation.md. The agent runs under ``qemu-aarch64-static`` with
nothing of the project on its path but the copied agent.py, and the host talks to it over
loopback with the real client.

Timings under emulation mean nothing: this test asserts on ``machine == "aarch64"`` and on
correct outputs only. Emulated latencies are never reported as ARM latency.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from objectives.latency import agent as agent_mod
from objectives.latency.remote import DeviceRejected, RemoteDevice

REPO = Path(__file__).resolve().parents[1]
AGENT_FILE = REPO / "objectives" / "latency" / "agent.py"
ROOT = Path(os.environ.get("SHUFFLENAS_AARCH64_ROOT", "/opt/shufflenas-aarch64"))
PYTHON = "usr/bin/python3.11"
TOKEN = "aarch64-test-token"
STARTUP_TIMEOUT_S = 120.0


def _root_problem() -> str | None:
    if shutil.which("qemu-aarch64-static") is None:
        return "qemu-aarch64-static is not installed"
    for rel in (PYTHON, "opt/site/onnxruntime", "opt/site/numpy", "proc/cpuinfo"):
        if not (ROOT / rel).exists():
            return f"{ROOT / rel} is missing"
    return None


@pytest.fixture(scope="module")
def arm_agent(tmp_path_factory):
    problem = _root_problem()
    if problem is not None:
        message = f"emulated aarch64 root not ready ({problem}); run .ci/prepare_aarch64.sh (as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    tmp = tmp_path_factory.mktemp("aarch64")
    # Only agent.py goes onto the "board" (a unique name: several test runs may share ROOT).
    agent_copy = ROOT / "opt" / f"agent-{os.getpid()}.py"
    shutil.copy(AGENT_FILE, agent_copy)
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp / "agent.log"
    cmd = [
        "qemu-aarch64-static",
        "-L",
        str(ROOT),
        str(ROOT / PYTHON),
        str(agent_copy),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--token-file",
        str(token_file),
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(ROOT / "opt" / "site")}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL)
    device = RemoteDevice(f"http://127.0.0.1:{port}", token=TOKEN, timeout=120, retries=0)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"emulated agent exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"emulated agent not up after {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
        yield device
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        agent_copy.unlink(missing_ok=True)


def tiny_convnet(seed: int = 3) -> onnx.ModelProto:
    """Conv -> Relu -> depthwise Conv -> GlobalAveragePool -> Flatten -> Gemm, 3x16x16 -> 10."""
    rng = np.random.default_rng(seed)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 8, 1, 3, 3), init("fc_w", 10, 8), init("fc_b", 10)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_agent_runs_on_emulated_aarch64(arm_agent):
    info = arm_agent.info()
    assert info["machine"] == "aarch64"
    if platform.machine() != "aarch64":
        assert info["emulated"] is True  # flagged, so its timings are never taken as ARM latency
    assert "0xd08" in (info["cpu_model"] or "")  # from the root's ARM-style /proc/cpuinfo
    assert info["onnxruntime"] and info["numpy"]

    model_bytes = tiny_convnet().SerializeToString()
    # Emulated timings mean nothing: only check that the stats are there and consistent.
    res = arm_agent.benchmark(model_bytes, threads=1, warmup=1, repeats=3, min_time_s=0.0)
    assert res["machine"] == "aarch64" and res["fingerprint"] == info["fingerprint"]
    assert res["emulated"] == info["emulated"]
    assert res["n"] >= 3
    assert 0 < res["min_ms"] <= res["median_ms"] <= res["p90_ms"] <= res["max_ms"]

    # Numerics on ARM match ONNX Runtime on the host for the same seeded input.
    for shape in (None, (2, 3, 16, 16)):
        out = arm_agent.run(model_bytes, input_shape=shape, seed=11)["output"]
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        feeds = agent_mod.random_feeds(session.get_inputs(), shape, seed=11)
        expected = session.run(None, feeds)[0]
        assert out["shape"] == list(expected.shape)
        assert not out["truncated"]
        np.testing.assert_allclose(np.array(out["values"]), expected.ravel(), rtol=1e-4, atol=1e-4)

    with pytest.raises(DeviceRejected) as err:
        arm_agent.benchmark(b"not a model", warmup=0, repeats=1, min_time_s=0.0)
    assert err.value.status == 400
    assert arm_agent.health()["status"] == "ok"  # still serving after a bad model
