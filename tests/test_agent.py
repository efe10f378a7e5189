"""Device agent (objectives/latency/agent.py) and its client (objectives/latency/remote.py).

A real agent runs on loopback in a subprocess with a token file; models are tiny ONNX
graphs made with onnx.helper (no torch).
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from objectives.latency import agent as agent_mod
from objectives.latency.remote import DeviceRejected, DeviceUnreachable, RemoteDevice

REPO = Path(__file__).resolve().parents[1]
AGENT_FILE = REPO / "objectives" / "latency" / "agent.py"
TOKEN = "s3cret-token-for-tests"
FAST = {"warmup": 1, "repeats": 5, "min_time_s": 0.0}


# ----------------------------------------------------------------------------- helpers


def conv_relu_model(channels: int = 8, size: int = 16, seed: int = 1) -> onnx.ModelProto:
    """x[N,3,size,size] -> Conv(3x3, pad 1) -> Relu -> y[N,channels,size,size]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal((channels,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, size, size])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(port, method, path, body=None, headers=None, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


class Agent:
    """The agent in a subprocess on 127.0.0.1; stderr goes to a log file."""

    def __init__(self, tmp: Path, token: str | None = TOKEN, max_bytes: int | None = None, cmd=None):
        self.tmp = tmp
        self.port = free_port()
        self.token = token
        self.args = ["--host", "127.0.0.1", "--port", str(self.port)]
        if token is not None:
            token_file = tmp / "token"
            token_file.write_text(token + "\n")
            self.args += ["--token-file", str(token_file)]
        if max_bytes is not None:
            self.args += ["--max-bytes", str(max_bytes)]
        self.cmd = cmd or [sys.executable, "-m", "objectives.latency.agent"]
        self.log = tmp / f"agent-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 30.0) -> Agent:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd + self.args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if http_request(self.port, "GET", "/v1/health", timeout=1.0)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"agent did not come up in {timeout}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return conv_relu_model().SerializeToString()


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("agent")).start()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def device(agent) -> RemoteDevice:
    return RemoteDevice(agent.url, token=TOKEN, timeout=30, retries=1, backoff=0.05)


# ------------------------------------------------------------------------------- tests


def test_agent_and_client_import_no_torch():
    code = (
        "import sys; import objectives.latency.agent, objectives.latency.remote; "
        "bad = sorted(m for m in ('torch', 'pydantic', 'optuna', 'nas', 'search_spaces') if m in sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_info_reports_machine_and_fingerprint(device):
    info = device.info()
    assert info["machine"] == platform.machine()
    assert info["emulated"] is False
    assert info["cores"] == os.cpu_count()
    assert info["onnxruntime"] == ort.__version__
    assert info["numpy"] == np.__version__
    assert info["python"] == platform.python_version()
    assert re.fullmatch(r"[0-9a-f]{16}", info["fingerprint"])
    for key in ("cpu_model", "governor", "cur_freq_khz", "max_freq_khz"):
        assert key in info
    assert device.info()["fingerprint"] == info["fingerprint"]  # stable
    assert device.health()["status"] == "ok"


def test_benchmark_returns_sane_stats(device, model_bytes):
    res = device.benchmark(model_bytes, threads=2, warmup=2, repeats=20, min_time_s=0.05)
    assert res["n"] >= 20
    assert res["threads"] == 2
    assert 0 < res["min_ms"] <= res["median_ms"] <= res["p90_ms"] <= res["max_ms"]
    assert res["iqr_ms"] >= 0 and res["spread"] >= 0
    assert res["machine"] == platform.machine()
    assert res["fingerprint"] == device.info()["fingerprint"]
    assert res["onnxruntime"] == ort.__version__
    assert res["input_shape"] == [1, 3, 16, 16]  # dynamic batch -> 1
    assert res["total_time_s"] >= 0.05
    assert "output" not in res


def test_benchmark_settings_via_headers_and_input_shape(agent, model_bytes):
    headers = {**agent.auth, "Content-Type": "application/octet-stream", "X-Threads": "1", "X-Repeats": "3"}
    status, res = http_request(
        agent.port, "POST", "/v1/benchmark?input_shape=2,3,16,16&warmup=0&min_time_s=0", model_bytes, headers
    )
    assert status == 200, res
    assert res["n"] >= 3 and res["input_shape"] == [2, 3, 16, 16]
    assert res["settings"]["repeats"] == 3


def test_output_matches_host_onnxruntime(device, model_bytes):
    res = device.run(model_bytes, seed=7)
    out = res["output"]
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    feeds = agent_mod.random_feeds(session.get_inputs(), None, seed=7)
    expected = session.run(None, feeds)[0]
    assert out["shape"] == list(expected.shape)
    np.testing.assert_allclose(np.array(out["values"]), expected.ravel()[: len(out["values"])], rtol=1e-4, atol=1e-4)
    assert out["sum"] == pytest.approx(float(expected.astype(np.float64).sum()), rel=1e-4)


@pytest.mark.parametrize(
    "query, message",
    [
        ("threads=0", "threads"),
        ("threads=abc", "threads"),
        ("warmup=1001", "warmup"),
        ("repeats=0", "repeats"),
        ("min_time_s=nan", "min_time_s"),
        ("min_time_s=61", "min_time_s"),
        ("input_shape=1,-3", "input_shape"),
        ("bogus=1", "unknown query parameter"),
    ],
)
def test_bad_settings_are_400(agent, model_bytes, query, message):
    headers = {**agent.auth, "Content-Type": "application/octet-stream"}
    status, res = http_request(agent.port, "POST", f"/v1/benchmark?{query}", model_bytes, headers)
    assert status == 400
    assert message in res["error"]


def test_wrong_or_missing_token_is_401(agent, model_bytes):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}, {"Authorization": "Basic eDp5"}):
        status, res = http_request(agent.port, "GET", "/v1/info", headers=headers)
        assert status == 401, headers
        assert "token" in res["error"]
        status, _ = http_request(
            agent.port, "POST", "/v1/benchmark", model_bytes, {**headers, "Content-Type": "application/octet-stream"}
        )
        assert status == 401
    with pytest.raises(DeviceRejected) as err:
        RemoteDevice(agent.url, token="wrong", retries=3, backoff=5.0).info()  # 4xx: no retry, no sleep
    assert err.value.status == 401
    with pytest.raises(DeviceRejected):
        RemoteDevice(agent.url).benchmark(b"x")
    assert http_request(agent.port, "GET", "/v1/health")[0] == 200  # health needs no token


def test_unknown_path_and_method(agent):
    assert http_request(agent.port, "GET", "/v2/nothing", headers=agent.auth)[0] == 404
    assert http_request(agent.port, "DELETE", "/v1/info", headers=agent.auth)[0] == 405
    assert http_request(agent.port, "GET", "/v1/benchmark", headers=agent.auth)[0] == 405


def test_malformed_model_is_400_then_valid_request_succeeds(agent, device, model_bytes):
    for bad in (b"this is not onnx", b"\x08\x07\x12\x00", b"\x00" * 64, model_bytes[: len(model_bytes) // 2]):
        with pytest.raises(DeviceRejected) as err:
            device.benchmark(bad, **FAST)
        assert err.value.status == 400
        assert err.value.error
    status, res = http_request(
        agent.port, "POST", "/v1/benchmark", b"", {**agent.auth, "Content-Type": "application/octet-stream"}
    )
    assert status == 400 and "empty" in res["error"]
    assert device.benchmark(model_bytes, **FAST)["n"] >= 5


def test_missing_content_length_is_411_and_wrong_type_415(agent):
    with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as s:
        s.sendall(
            f"POST /v1/benchmark HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        assert s.recv(4096).split(b"\r\n")[0].endswith(b"411 Length Required")
    status, _ = http_request(
        agent.port, "POST", "/v1/benchmark", b"{}", {**agent.auth, "Content-Type": "multipart/form-data; boundary=x"}
    )
    assert status == 415


def test_external_data_model_is_refused(tmp_path, device, model_bytes):
    model = conv_relu_model(channels=16)
    path = tmp_path / "ext.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    assert (tmp_path / "ext.onnx.data").stat().st_size > 0
    data = path.read_bytes()
    assert agent_mod.find_external_data(data)
    assert not agent_mod.find_external_data(model_bytes)
    with pytest.raises(DeviceRejected) as err:
        device.benchmark(data, **FAST)
    assert err.value.status == 400
    assert "external data" in err.value.error
    # an absolute location must not be followed either
    loaded = onnx.load_model(str(path), load_external_data=False)
    for init in loaded.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "/etc/passwd"
    with pytest.raises(DeviceRejected):
        device.benchmark(loaded.SerializeToString(), **FAST)


def test_external_data_in_subgraph_is_found():
    then_t = numpy_helper.from_array(np.ones(4, np.float32), "t")
    then_t.data_location = TensorProto.EXTERNAL
    then_t.ClearField("raw_data")
    entry = then_t.external_data.add()
    entry.key, entry.value = "location", "x.bin"
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["o"], value=then_t)],
        "b",
        [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph)
    assert agent_mod.find_external_data(model.SerializeToString())


def test_oversized_upload_is_413(tmp_path, model_bytes):
    small = Agent(tmp_path, max_bytes=len(model_bytes) - 1).start()
    try:
        headers = {**small.auth, "Content-Type": "application/octet-stream"}
        status, res = http_request(small.port, "POST", "/v1/benchmark", model_bytes, headers)
        assert status == 413 and "--max-bytes" in res["error"]
        # the Content-Length header alone is enough: the body is never read
        with socket.create_connection(("127.0.0.1", small.port), timeout=5) as s:
            s.sendall(
                f"POST /v1/benchmark HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {10**15}\r\n\r\n".encode()
            )
            assert b" 413 " in s.recv(4096).split(b"\r\n")[0]
        small_ok = conv_relu_model(channels=2).SerializeToString()
        assert len(small_ok) < len(model_bytes) - 1
        status, res = http_request(
            small.port, "POST", "/v1/benchmark?warmup=0&repeats=2&min_time_s=0", small_ok, headers
        )
        assert status == 200, res
    finally:
        small.stop()


def test_agent_killed_and_restarted(tmp_path, model_bytes):
    a = Agent(tmp_path).start()
    try:
        dev = RemoteDevice(a.url, token=TOKEN, timeout=2, retries=2, backoff=0.05)
        assert dev.info()["machine"] == platform.machine()
        a.kill()
        t0 = time.monotonic()
        with pytest.raises(DeviceUnreachable) as err:
            dev.info()
        assert a.url in str(err.value) and "3 attempt" in str(err.value)
        assert time.monotonic() - t0 >= 0.05 + 0.1  # backed off between attempts
        with pytest.raises(DeviceUnreachable):
            dev.benchmark(model_bytes, **FAST)
        a.start()
        assert dev.info()["machine"] == platform.machine()
        assert dev.benchmark(model_bytes, **FAST)["n"] >= 5
    finally:
        a.stop()


def test_client_retries_5xx_but_not_4xx():
    calls = []
    replies = [503, 500, 200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            calls.append(self.path)
            status = replies[min(len(calls) - 1, len(replies) - 1)] if self.path == "/v1/info" else 404
            body = json.dumps({"machine": "fake"} if status == 200 else {"error": f"boom {status}"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert RemoteDevice(url, retries=3, backoff=0.01).info() == {"machine": "fake"}
        assert len(calls) == 3
        calls.clear()
        replies[:] = [503]
        with pytest.raises(DeviceUnreachable) as err:
            RemoteDevice(url, retries=1, backoff=0.01).info()
        assert len(calls) == 2 and "boom 503" in str(err.value)
        calls.clear()
        with pytest.raises(DeviceRejected) as rej:
            RemoteDevice(url, retries=3, backoff=0.01).health()
        assert len(calls) == 1 and rej.value.status == 404 and rej.value.error == "boom 404"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError):
        RemoteDevice("file:///etc/passwd")


def test_startup_errors_exit_2(tmp_path):
    plain = tmp_path / "agent.py"
    shutil.copy(AGENT_FILE, plain)  # runs as a plain file copied onto a board
    empty = tmp_path / "empty-token"
    empty.write_text("  \n")
    cases = [
        (["--host", "0.0.0.0", "--port", "0"], "without a token"),
        (["--host", "127.0.0.1", "--port", "0", "--token-file", str(empty)], "is empty"),
        (["--host", "127.0.0.1", "--port", "0", "--token-file", str(tmp_path / "missing")], "cannot read token file"),
    ]
    for args, message in cases:
        proc = subprocess.run(
            [sys.executable, str(plain), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr


def test_plain_file_agent_serves(tmp_path, model_bytes):
    plain = tmp_path / "agent.py"
    shutil.copy(AGENT_FILE, plain)
    a = Agent(tmp_path, token=None, cmd=[sys.executable, "-I", str(plain)]).start()  # loopback: no token needed
    try:
        dev = RemoteDevice(a.url, timeout=30, retries=0)
        assert dev.info()["machine"] == platform.machine()
        assert dev.benchmark(model_bytes, **FAST)["n"] >= 5
    finally:
        a.stop()
    assert "listening on http://127.0.0.1:" in a.log.read_text()


# -------------------------------------------------------------------------------- fuzz


def _fuzz_request(rng: random.Random, model: bytes) -> bytes:
    kind = rng.randrange(9)
    auth = f"Authorization: Bearer {TOKEN}\r\n" if rng.random() < 0.8 else ""
    path = rng.choice(["/v1/benchmark", "/v1/run", "/v1/info", "/v1/health", "/", "/v1/benchmark/", "/%00", "/v1/../x"])
    query = rng.choice(
        [
            "",
            "?warmup=0&repeats=1&min_time_s=0&input_shape=1,3,16,16",
            "?threads=" + str(rng.randint(-5, 300)),
            "?input_shape=" + ",".join(str(rng.randint(-2, 9999)) for _ in range(rng.randint(0, 10))),
            "?" + "&".join(f"a{i}=b" for i in range(rng.randint(1, 100))),
            "?min_time_s=1e308&repeats=1",
            "?%ff%fe=%00",
        ]
    )
    if kind == 0:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if kind == 1:  # random method and headers
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW", "get", ""])
        headers = "".join(
            f"{''.join(rng.choice('abcXYZ-_:') for _ in range(rng.randint(1, 20)))}: "
            f"{''.join(chr(rng.randrange(32, 127)) for _ in range(rng.randint(0, 50)))}\r\n"
            for _ in range(rng.randint(0, 120))
        )
        return f"{method} {path}{query} HTTP/1.1\r\nHost: x\r\n{auth}{headers}\r\n".encode()
    if kind == 2:  # absurd Content-Length
        cl = rng.choice([str(10**15), str(2**63), "-5", "abc", "9" * 200, "1e9", " 12", "0x10", str(2**31)])
        return f"POST {path}{query} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {cl}\r\n\r\n".encode()
    if kind == 3:  # truncated body
        body = model[: rng.randint(0, len(model) - 1)]
        return (
            f"POST /v1/benchmark HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/octet-stream\r\n"
            f"Content-Length: {len(model)}\r\n\r\n"
        ).encode() + body
    if kind == 4:  # chunked
        return f"POST /v1/benchmark HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode()
    if kind == 5:  # weird request lines and versions
        return rng.choice(
            [
                b"GET\r\n\r\n",
                b"GET /v1/health\r\n\r\n",
                b"GET /v1/health HTTP/9.9\r\n\r\n",
                b"GET /v1/health HTTP/1.1 extra\r\n\r\n",
                b"GET " + b"/a" * 40000 + b" HTTP/1.1\r\n\r\n",
                b"\r\n\r\n",
                b"GET /v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"\xff" * 50 + b"\r\n\r\n",
                b"GET /v1/info HTTP/1.1\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
            ]
        )
    # kinds 6-8: bit-flipped / spliced / random ONNX bodies with a valid request
    body = bytearray(model)
    if kind == 6:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(body))
            body[i] ^= 1 << rng.randrange(8)
    elif kind == 7:
        i, j = sorted(rng.randrange(len(body)) for _ in range(2))
        body[i:j] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    else:
        body = bytearray(rng.randbytes(rng.randint(1, 2000)))
    q = "?warmup=0&repeats=1&min_time_s=0" + rng.choice(["", "&input_shape=1,3,16,16", "&return_output=1"])
    return (
        f"POST {rng.choice(['/v1/benchmark', '/v1/run'])}{q} HTTP/1.1\r\nHost: x\r\n{auth}"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + bytes(body)


def _send_raw(port: int, payload: bytes, timeout: float = 5.0) -> int | None:
    """Send ``payload``, half-close, and return the status code of the reply (if any)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        try:
            while len(data) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:  # reset by the agent or timed out
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    return int(m.group(1)) if m else None


def test_fuzz_agent_survives(tmp_path, model_bytes):
    a = Agent(tmp_path, max_bytes=100_000).start()
    rng = random.Random(20261123)
    statuses: dict[int | None, int] = {}
    n = 600
    try:
        for _ in range(n):
            status = _send_raw(a.port, _fuzz_request(rng, model_bytes))
            statuses[status] = statuses.get(status, 0) + 1
            assert a.proc.poll() is None, f"agent died; log:\n{a.log.read_text()[-3000:]}"
        print("fuzz statuses:", statuses)
        assert sum(statuses.values()) == n
        assert 500 not in statuses, (statuses, a.log.read_text()[-3000:])
        assert statuses.get(400, 0) > 50 and statuses.get(413, 0) > 0, statuses
        assert http_request(a.port, "GET", "/v1/health")[0] == 200
        dev = RemoteDevice(a.url, token=TOKEN, timeout=30, retries=0)
        assert dev.benchmark(model_bytes, **FAST)["n"] >= 5
        log_lines = a.log.read_text().splitlines()
        assert len(log_lines) >= n // 2  # one line per request
    finally:
        a.stop()
