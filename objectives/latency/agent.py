#!/usr/bin/env python3
"""shufflenas device agent: benchmark ONNX models on the board it runs on.

This file is self-contained so that it can be copied alone onto an ARM board that has
only Python 3.9+, numpy and onnxruntime (no torch, no project imports):

    python agent.py --host 0.0.0.0 --port 8765 --token-file ~/.shufflenas-token
    python -m objectives.latency.agent --host 127.0.0.1 --port 8765

HTTP API (JSON replies; every route but /v1/health needs ``Authorization: Bearer TOKEN``
unless the agent was started without a token on a loopback address):

    GET  /v1/health     {"status": "ok"}
    GET  /v1/info       device fingerprint (machine, CPU, cores, governor, runtime versions)
    POST /v1/benchmark  body: raw ONNX bytes (application/octet-stream); settings as query
                        parameters or X- headers (``threads`` or ``X-Threads``):
                        threads 1..256, warmup 0..1000, repeats (alias min_repeats)
                        1..10000, min_time_s 0..60, max_time_s 0.01..3600, input_shape
                        "1,3,224,224" (default: the model's first input, dynamic dims -> 1),
                        seed, return_output 0/1 (adds a summary of the first output for the
                        deterministic seeded input, to check numerics against a reference),
                        profile 0..100 (opt-in: after the timed runs, that many more runs in a
                        second session with ONNX Runtime's profiler; adds "profile": per-node
                        median kernel times of the optimised graph, see ``profile_model``).
    POST /v1/run        same as benchmark with warmup=0, repeats=1, min_time_s=0,
                        return_output=1.

One benchmark runs at a time (a lock), inside an empty temporary working directory.
Models that reference external data are refused: the agent only ever runs the bytes it
was sent, and never unpickles anything.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse

__all__ = [
    "DEFAULT_MAX_BYTES",
    "AgentServer",
    "BadRequest",
    "BenchmarkSettings",
    "device_info",
    "find_external_data",
    "is_loopback",
    "main",
    "make_server",
    "parse_settings",
    "profile_model",
    "random_feeds",
    "run_benchmark",
    "serve",
    "session_options",
    "summarize_profile",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
API_VERSION = 1
_BENCH_LOCK_TIMEOUT_S = 600.0
_SOCKET_TIMEOUT_S = 60.0
_MAX_INPUT_ELEMENTS = 1 << 26
_MAX_OUTPUT_VALUES = 4096
_MAX_PROFILE_RUNS = 100
_MAX_PROFILE_NODES = 20000  # per run; a reply stays bounded whatever graph was sent
_MAX_PROFILE_BYTES = 256 * 1024 * 1024  # a trace file read back whole; refused above
_MAX_NAME_CHARS = 200  # node and op names come from the sent model
_MAX_NODE_TENSORS = 64  # shapes reported per node input/output list
_PROFILE_SKIP_RUNS = 2  # the first runs of a session allocate; their kernel times are not kept

# ARM CPU part numbers (implementer 0x41) for a readable CPU model when /proc/cpuinfo has
# no "model name" line, as on most ARM boards.
_ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2",
    "0xd4b": "Cortex-A78C",
    "0xd4f": "Neoverse-V2",
}


class BadRequest(ValueError):
    """A client error: answered with HTTP ``status`` and a JSON ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- device info


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _cpu_model() -> str | None:
    text = _read_text("/proc/cpuinfo")
    if not text:
        return platform.processor() or None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    part = fields.get("cpu part")
    if part:
        implementer = fields.get("cpu implementer", "")
        name = _ARM_PARTS.get(part.lower()) if implementer.lower() == "0x41" else None
        if name:
            return f"{name} (CPU part {part})"
        return f"CPU implementer {implementer or '?'} part {part}"
    return platform.processor() or None


def _runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"onnxruntime": None, "numpy": None}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except Exception:  # noqa: BLE001 - reported as null, the benchmark says why
        pass
    try:
        import numpy

        versions["numpy"] = numpy.__version__
    except Exception:  # noqa: BLE001
        pass
    return versions


def _arch_family(arch: str) -> str:
    arch = arch.lower()
    if arch in ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"):
        return "x86"
    if arch.startswith(("aarch64", "arm")):
        return "arm"
    return arch


def _emulated(machine: str, kernel_arch: str | None) -> bool:
    """True when the kernel's architecture is not the one this process sees.

    Under QEMU user mode ``uname`` (hence ``platform.machine()``) reports the guest's
    architecture while ``/proc/sys/kernel/arch`` still shows the host kernel's.
    """
    if not kernel_arch or not machine:
        return False
    return _arch_family(kernel_arch) != _arch_family(machine)


def device_info() -> dict:
    """Fingerprint of this device and runtime.

    ``fingerprint`` is the first 16 hex digits of the SHA-256 of the stable fields (the
    current frequency is left out), so it keys latency caches across restarts. ``emulated``
    is true under QEMU user mode (e.g. an aarch64 agent on an x86 host): such timings are
    never ARM latency.
    """
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    max_freq = _read_int(f"{cpufreq}/cpuinfo_max_freq")
    if max_freq is None:
        max_freq = _read_int(f"{cpufreq}/scaling_max_freq")
    machine = platform.machine()
    kernel_arch = _read_text("/proc/sys/kernel/arch")
    info = {
        "machine": machine,
        "kernel_arch": kernel_arch,
        "emulated": _emulated(machine, kernel_arch),
        "system": platform.system(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "governor": _read_text(f"{cpufreq}/scaling_governor"),
        "max_freq_khz": max_freq,
        "python": platform.python_version(),
        **_runtime_versions(),
    }
    stable = json.dumps(info, sort_keys=True, separators=(",", ":"))
    info["fingerprint"] = hashlib.sha256(stable.encode("utf-8")).hexdigest()[:16]
    info["cur_freq_khz"] = _read_int(f"{cpufreq}/scaling_cur_freq")
    info["hostname"] = platform.node()
    info["agent_api"] = API_VERSION
    return info


# ------------------------------------------------------------------ external data scan
#
# A minimal protobuf wire-format walker over the ONNX message types that can hold a
# TensorProto. It needs no `onnx` package (a board rarely has it) and refuses any tensor
# that has `external_data` entries (field 13) or `data_location = EXTERNAL` (field 14).

_TENSOR = "TensorProto"
# message type -> {field number: message type of that (length-delimited) field}
_SCHEMA: dict[str, dict[int, str]] = {
    "ModelProto": {7: "GraphProto", 20: "TrainingInfoProto", 25: "FunctionProto"},
    "GraphProto": {1: "NodeProto", 5: _TENSOR, 15: "SparseTensorProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {
        5: _TENSOR,
        6: "GraphProto",
        10: _TENSOR,
        11: "GraphProto",
        22: "SparseTensorProto",
        23: "SparseTensorProto",
    },
    "SparseTensorProto": {1: _TENSOR, 2: _TENSOR},
    "TrainingInfoProto": {1: "GraphProto", 2: "GraphProto"},
    "FunctionProto": {7: "NodeProto", 11: "AttributeProto"},
}
_MAX_NESTING = 64


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise BadRequest("malformed model: not a valid ONNX protobuf (bad varint)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _scan(buf: memoryview, start: int, end: int, kind: str, depth: int, found: list[str]) -> None:
    if depth > _MAX_NESTING:
        raise BadRequest("malformed model: protobuf nesting too deep")
    children = _SCHEMA.get(kind, {})
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise BadRequest("malformed model: not a valid ONNX protobuf (field 0)")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            if kind == _TENSOR and field == 14 and value == 1:
                found.append("data_location=EXTERNAL")
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise BadRequest("malformed model: not a valid ONNX protobuf (truncated field)")
            if kind == _TENSOR and field == 13:
                found.append("external_data")
            elif field in children:
                _scan(buf, pos, pos + length, children[field], depth + 1, found)
            pos += length
        else:  # groups (3, 4) and 6, 7 never appear in ONNX
            raise BadRequest(f"malformed model: not a valid ONNX protobuf (wire type {wire})")
        if pos > end:
            raise BadRequest("malformed model: not a valid ONNX protobuf (truncated)")


def find_external_data(model_bytes: bytes) -> bool:
    """True when any tensor in the ONNX model refers to external data.

    Raises :class:`BadRequest` when the bytes are not a well-formed protobuf.
    """
    found: list[str] = []
    _scan(memoryview(model_bytes), 0, len(model_bytes), "ModelProto", 0, found)
    return bool(found)


# --------------------------------------------------------------------------- settings


class BenchmarkSettings:
    """Validated benchmark settings (see the module docstring for ranges)."""

    __slots__ = (
        "threads",
        "warmup",
        "repeats",
        "min_time_s",
        "max_time_s",
        "input_shape",
        "seed",
        "return_output",
        "profile",
    )

    def __init__(
        self,
        threads: int = 1,
        warmup: int = 10,
        repeats: int = 30,
        min_time_s: float = 1.0,
        max_time_s: float = 600.0,
        input_shape: tuple[int, ...] | None = None,
        seed: int = 0,
        return_output: bool = False,
        profile: int = 0,
    ):
        self.threads = threads
        self.warmup = warmup
        self.repeats = repeats
        self.min_time_s = min_time_s
        self.max_time_s = max_time_s
        self.input_shape = input_shape
        self.seed = seed
        self.return_output = return_output
        self.profile = profile

    def as_dict(self) -> dict:
        d = {name: getattr(self, name) for name in self.__slots__}
        d["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        return d


def _int_param(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadRequest(f"{name}: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name}: {value} is out of range [{lo}, {hi}]")
    return value


def _float_param(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise BadRequest(f"{name}: {raw!r} is not a number") from None
    if not lo <= value <= hi:  # also rejects nan
        raise BadRequest(f"{name}: {value} is out of range [{lo}, {hi}]")
    return value


def _shape_param(raw: str) -> tuple[int, ...]:
    text = raw.strip().strip("[]()")
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    if not parts or len(parts) > 8:
        raise BadRequest(f"input_shape: {raw!r} must be 1 to 8 comma-separated positive integers")
    dims = []
    for p in parts:
        try:
            d = int(p.strip())
        except ValueError:
            raise BadRequest(f"input_shape: {p.strip()!r} is not an integer") from None
        if d < 1:
            raise BadRequest(f"input_shape: dimension {d} must be positive")
        dims.append(d)
    total = 1
    for d in dims:
        total *= d
    if total > _MAX_INPUT_ELEMENTS:
        raise BadRequest(f"input_shape: {total} elements exceeds the limit of {_MAX_INPUT_ELEMENTS}")
    return tuple(dims)


def _bool_param(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise BadRequest(f"{name}: {raw!r} is not a boolean (use 0 or 1)")


_PARAMS = {
    # name: (aliases, parser)
    "threads": (("threads",), lambda n, v: _int_param(n, v, 1, 256)),
    "warmup": (("warmup",), lambda n, v: _int_param(n, v, 0, 1000)),
    "repeats": (("repeats", "min_repeats"), lambda n, v: _int_param(n, v, 1, 10000)),
    "min_time_s": (("min_time_s",), lambda n, v: _float_param(n, v, 0.0, 60.0)),
    "max_time_s": (("max_time_s",), lambda n, v: _float_param(n, v, 0.01, 3600.0)),
    "input_shape": (("input_shape",), lambda n, v: _shape_param(v)),
    "seed": (("seed",), lambda n, v: _int_param(n, v, 0, 2**32 - 1)),
    "return_output": (("return_output",), _bool_param),
    "profile": (("profile",), lambda n, v: _int_param(n, v, 0, _MAX_PROFILE_RUNS)),
}
_KNOWN_QUERY = {alias for aliases, _ in _PARAMS.values() for alias in aliases}


def parse_settings(query: dict[str, list[str]], headers=None, **defaults) -> BenchmarkSettings:
    """Settings from query parameters (first) or ``X-Name`` headers (``X-Min-Time-S``).

    Unknown query parameters are refused so that a typo is not silently ignored.
    """
    unknown = sorted(set(query) - _KNOWN_QUERY)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN_QUERY))}")
    values = dict(defaults)
    for name, (aliases, parser) in _PARAMS.items():
        raw = None
        for alias in aliases:
            if alias in query:
                if len(query[alias]) != 1:
                    raise BadRequest(f"{alias}: given {len(query[alias])} times")
                raw = query[alias][0]
                break
            if headers is not None:
                header = "X-" + alias.replace("_", "-").title()
                if headers.get(header) is not None:
                    raw = headers.get(header)
                    break
        if raw is not None:
            values[name] = parser(name, raw)
    return BenchmarkSettings(**values)


# -------------------------------------------------------------------------- benchmark

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def random_feeds(inputs, input_shape: tuple[int, ...] | None = None, seed: int = 0) -> dict:
    """Deterministic inputs for an ``onnxruntime`` session's ``get_inputs()``.

    ``input_shape`` overrides the first input's shape; dynamic dimensions become 1.
    Floats are standard normal from ``numpy.random.default_rng(seed)``, so a reference
    run elsewhere (same numpy generator) sees the same tensors.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for i, spec in enumerate(inputs):
        dtype = _ORT_DTYPES.get(spec.type)
        if dtype is None:
            raise BadRequest(f"input {spec.name!r}: unsupported type {spec.type}")
        if i == 0 and input_shape is not None:
            shape = tuple(input_shape)
        else:
            shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape)
        total = 1
        for d in shape:
            total *= d
        if total > _MAX_INPUT_ELEMENTS:
            raise BadRequest(f"input {spec.name!r}: shape {list(shape)} is too large")
        if dtype.startswith("float"):
            arr = rng.standard_normal(size=shape, dtype=np.float32).astype(dtype)
        elif dtype == "bool":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        else:
            arr = rng.integers(0, 10, size=shape).astype(dtype)
        feeds[spec.name] = arr
    return feeds


def _output_summary(name: str, value) -> dict:
    import numpy as np

    arr = np.asarray(value)
    summary = {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.dtype.kind in "fiub":
        flat = np.ascontiguousarray(arr, dtype=np.float64).ravel()
        summary["sha256"] = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
        summary["sum"] = float(flat.sum())
        summary["abs_sum"] = float(np.abs(flat).sum())
        summary["values"] = [float(x) for x in flat[:_MAX_OUTPUT_VALUES]]
        summary["truncated"] = bool(flat.size > _MAX_OUTPUT_VALUES)
    return summary


def run_benchmark(model_bytes: bytes, settings: BenchmarkSettings, info: dict | None = None) -> dict:
    """Load ``model_bytes`` with ONNX Runtime (CPU) and time it per ``settings``.

    Raises :class:`BadRequest` for a model or input the runtime refuses. The caller must
    serialise calls (the agent holds a lock) because this changes the working directory.
    """
    import numpy as np
    import onnxruntime as ort

    if not model_bytes:
        raise BadRequest("empty body: send the ONNX model bytes as the request body")
    if find_external_data(model_bytes):
        raise BadRequest(
            "model refers to external data (a tensor with data_location=EXTERNAL); "
            "send a self-contained model (onnx.save_model(..., save_as_external_data=False))"
        )
    info = info if info is not None else device_info()
    opts = session_options(settings.threads)

    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="shufflenas-agent-") as workdir:
        os.chdir(workdir)
        try:
            t0 = time.perf_counter()
            try:
                session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
                raise BadRequest(f"onnxruntime could not load the model: {_short(exc)}") from None
            load_ms = (time.perf_counter() - t0) * 1e3
            inputs = session.get_inputs()
            if not inputs:
                raise BadRequest("model has no inputs")
            feeds = random_feeds(inputs, settings.input_shape, settings.seed)
            try:
                first = session.run(None, feeds)
            except Exception as exc:  # noqa: BLE001
                raise BadRequest(f"onnxruntime could not run the model: {_short(exc)}") from None
            output = None
            if settings.return_output:
                output = _output_summary(session.get_outputs()[0].name, first[0])
            del first
            for _ in range(settings.warmup):
                session.run(None, feeds)
            times = []
            truncated = False
            start = time.perf_counter()
            while True:
                t = time.perf_counter()
                session.run(None, feeds)
                now = time.perf_counter()
                times.append((now - t) * 1e3)
                elapsed = now - start
                if len(times) >= settings.repeats and elapsed >= settings.min_time_s:
                    break
                if elapsed >= settings.max_time_s:
                    truncated = True
                    break
            total_s = time.perf_counter() - start
            profile = None
            if settings.profile:
                left = max(0.0, settings.max_time_s - (time.perf_counter() - start))
                profile = profile_model(model_bytes, settings.threads, feeds, settings.profile, workdir,
                                        max_time_s=left)
        finally:
            os.chdir(old_cwd)

    arr = np.asarray(times, dtype=np.float64)
    p10, p25, p50, p75, p90 = (float(v) for v in np.percentile(arr, [10, 25, 50, 75, 90]))
    first_input = inputs[0]
    result = {
        "median_ms": p50,
        "p10_ms": p10,
        "p90_ms": p90,
        "min_ms": float(arr.min()),
        "max_ms": float(arr.max()),
        "mean_ms": float(arr.mean()),
        "iqr_ms": p75 - p25,
        "spread": (p90 - p10) / p50 if p50 > 0 else 0.0,
        "n": int(arr.size),
        "threads": settings.threads,
        "warmup": settings.warmup,
        "total_time_s": total_s,
        "truncated": truncated,
        "load_ms": load_ms,
        "input_name": first_input.name,
        "input_shape": list(feeds[first_input.name].shape),
        "seed": settings.seed,
        "machine": info.get("machine"),
        "emulated": info.get("emulated"),
        "fingerprint": info.get("fingerprint"),
        "onnxruntime": ort.__version__,
        "provider": "CPUExecutionProvider",
    }
    if output is not None:
        result["output"] = output
    if profile is not None:
        result["profile"] = profile
    return result


def session_options(threads: int, profile_prefix: str | None = None):
    """The one CPU session set-up (agent and host alike): explicit intra-op threads, one
    inter-op thread, sequential, all graph optimisations; profiling when a prefix is given."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def profile_model(model_bytes: bytes, threads: int, feeds: dict, runs: int, workdir: str, skip: int | None = None,
                  max_time_s: float | None = None) -> dict:
    """Run the model ``skip + runs`` times under ONNX Runtime's profiler; per-node kernel times.

    The profiler reports the nodes of the OPTIMISED graph (fused kernels, layout
    conversions), i.e. what really runs. Returns ``{"runs": n, "run_us": [...] (model_run
    per kept run), "nodes": [{"name", "op", "in", "out", "us", "median_us"}] in execution order,
    "truncated": bool}``; shapes are lists of dims (float tensors and int64 shape inputs).
    The trace file is written in ``workdir`` and removed. Bounded like a benchmark: the runs stop
    at ``max_time_s`` (after at least one kept run; "truncated" says so) and a trace over
    _MAX_PROFILE_BYTES is refused before it is read.
    """
    import onnxruntime as ort

    skip = _PROFILE_SKIP_RUNS if skip is None else skip
    opts = session_options(threads, os.path.join(workdir, "shufflenas-profile"))
    try:
        session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        start, cut = time.perf_counter(), False
        for i in range(skip + runs):
            session.run(None, feeds)
            if max_time_s is not None and i >= skip and time.perf_counter() - start >= max_time_s:
                cut = i + 1 < skip + runs
                break
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise BadRequest(f"onnxruntime could not profile the model: {_short(exc)}") from None
    path = session.end_profiling()
    try:
        if os.path.getsize(path) > _MAX_PROFILE_BYTES:
            raise BadRequest(f"profile trace over {_MAX_PROFILE_BYTES} bytes: ask for fewer profile runs")
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
    finally:
        os.unlink(path)
    out = summarize_profile(events, skip)
    out["truncated"] = bool(out.get("truncated")) or cut
    return out


def summarize_profile(events: list, skip: int = 0) -> dict:
    """Per-node duration (µs: lower quartile and median) over the runs of a chrome trace, the
    first ``skip`` runs dropped."""
    import statistics

    durs: dict[str, list[float]] = {}
    meta: dict[str, dict] = {}
    run_us: list[float] = []
    truncated = False
    for e in events:
        if not isinstance(e, dict):
            continue
        name = str(e.get("name", ""))
        if e.get("cat") == "Session" and name == "model_run":
            run_us.append(float(e.get("dur", 0)))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        name = name[: -len("_kernel_time")]
        if name not in meta:
            if len(meta) >= _MAX_PROFILE_NODES:
                truncated = True
                continue
            args = e.get("args") or {}
            meta[name] = {
                "name": name[:_MAX_NAME_CHARS],
                "op": str(args.get("op_name", ""))[:_MAX_NAME_CHARS],
                "in": [_shape_of(t) for t in (args.get("input_type_shape") or [])[:_MAX_NODE_TENSORS]],
                "out": [_shape_of(t) for t in (args.get("output_type_shape") or [])[:_MAX_NODE_TENSORS]],
            }
        durs.setdefault(name, []).append(float(e.get("dur", 0)))
    nodes = []
    for name, m in meta.items():
        kept = sorted(durs[name][skip:] or durs[name])
        # lower quartile, not median: a run preempted inside this kernel (a shared host, a
        # governor step) only ever adds time, so the low end is the kernel's own cost
        nodes.append({**m, "us": kept[len(kept) // 4], "median_us": statistics.median(kept)})
    kept_runs = run_us[skip:] or run_us
    return {"runs": len(kept_runs), "run_us": kept_runs, "nodes": nodes, "truncated": truncated}


def _shape_of(typed) -> list:
    """``{"float": [1, 3, 224, 224]}`` -> ``[1, 3, 224, 224]`` (empty when unreadable)."""
    if isinstance(typed, dict) and len(typed) == 1:
        dims = next(iter(typed.values()))
        if isinstance(dims, list) and all(isinstance(d, int) for d in dims):
            return dims[:8]
    return []


def _short(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- server


class _Handler(http.server.BaseHTTPRequestHandler):
    server: AgentServer
    server_version = "shufflenas-agent/1"
    protocol_version = "HTTP/1.1"
    timeout = _SOCKET_TIMEOUT_S

    # routes: path -> {method: handler name}; health needs no token
    _ROUTES = {
        "/v1/health": {"GET": "_health"},
        "/v1/info": {"GET": "_info"},
        "/v1/benchmark": {"POST": "_benchmark"},
        "/v1/run": {"POST": "_run"},
    }

    # --- plumbing

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass  # one line per request is written by _log_request instead

    def log_request(self, code="-", size="-"):
        pass

    def _log_request(self, status: int, n_in: int, n_out: int, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1e3
        path = getattr(self, "path", "?")
        try:
            sys.stderr.write(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.client_address[0]} "
                f"{getattr(self, 'command', None) or '-'} {path[:200]!r} {status} in={n_in}B out={n_out}B {ms:.1f}ms\n"
            )
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break serving
            pass

    def _send_json(self, status: int, payload: dict) -> int:
        body = json.dumps(payload, sort_keys=True).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="shufflenas-agent"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return len(body)

    def send_error(self, code, message=None, explain=None):
        # Errors raised inside http.server (bad request line, header too long, ...): JSON too.
        self.close_connection = True
        t0 = time.perf_counter()
        n = 0
        try:
            n = self._send_json(
                code, {"error": message or http.server.BaseHTTPRequestHandler.responses.get(code, ("error",))[0]}
            )
        except Exception:  # noqa: BLE001
            pass
        self._log_request(code, 0, n, t0)

    def _dispatch(self) -> None:
        t0 = time.perf_counter()
        self._n_in = 0
        status, payload = 500, {"error": "internal error"}
        try:
            status, payload = self._route()
        except BadRequest as exc:
            status, payload = exc.status, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - keep serving whatever happened
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {_short(exc)}"}
        n_out = 0
        try:
            n_out = self._send_json(status, payload)
        except OSError:
            self.close_connection = True
        self._log_request(status, self._n_in, n_out, t0)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _route(self) -> tuple[int, dict]:
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        methods = self._ROUTES.get(path)
        if methods is None:
            self._discard_body()
            raise BadRequest(f"unknown path {path!r}; known: {', '.join(sorted(self._ROUTES))}", 404)
        if self.command not in methods:
            self._discard_body()
            raise BadRequest(f"method {self.command} not allowed on {path}; use {', '.join(methods)}", 405)
        if path != "/v1/health" and not self._authorized():
            self._discard_body()
            raise BadRequest("missing or wrong bearer token (send 'Authorization: Bearer TOKEN')", 401)
        try:
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True, strict_parsing=False, max_num_fields=64)
        except ValueError as exc:
            self._discard_body()
            raise BadRequest(f"bad query string: {exc}") from None
        return getattr(self, methods[self.command])(query)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode("utf-8", "replace"), token.encode("utf-8"))

    def _discard_body(self) -> None:
        # A body we will not read would be parsed as the next request: close instead.
        if self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise BadRequest("chunked transfer encoding is not supported: send Content-Length", 411)
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise BadRequest("Content-Length header required", 411)
        try:
            length = int(raw.strip())
        except ValueError:
            self.close_connection = True
            raise BadRequest(f"bad Content-Length {raw[:40]!r}") from None
        if length < 0:
            self.close_connection = True
            raise BadRequest(f"bad Content-Length {length}")
        if length > self.server.max_bytes:
            self.close_connection = True
            raise BadRequest(
                f"model of {length} bytes exceeds the agent's limit of {self.server.max_bytes} bytes (--max-bytes)", 413
            )
        chunks = []
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                self.close_connection = True
                raise BadRequest(f"body ended after {length - remaining} of {length} bytes")
            chunks.append(chunk)
            remaining -= len(chunk)
        self._n_in = length
        return b"".join(chunks)

    # --- routes

    def _health(self, query) -> tuple[int, dict]:
        return 200, {"status": "ok", "agent_api": API_VERSION}

    def _info(self, query) -> tuple[int, dict]:
        return 200, device_info()

    def _run(self, query) -> tuple[int, dict]:
        return self._benchmark(query, warmup=0, repeats=1, min_time_s=0.0, return_output=True)

    def _benchmark(self, query, **defaults) -> tuple[int, dict]:
        # The body is the raw model whatever the label (curl --data-binary says
        # x-www-form-urlencoded); only multipart (curl -F) would wrap the bytes.
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type.startswith("multipart/"):
            self._discard_body()
            raise BadRequest(
                "send the raw ONNX bytes as the body with Content-Type application/octet-stream, not multipart "
                "(curl --data-binary @model.onnx, not -F)",
                415,
            )
        try:
            settings = parse_settings(query, self.headers, **defaults)
        except BadRequest:
            self._discard_body()
            raise
        body = self._read_body()
        info = self.server.info
        if not self.server.bench_lock.acquire(timeout=_BENCH_LOCK_TIMEOUT_S):
            raise BadRequest("agent busy with another benchmark; retry later", 503)
        try:
            result = run_benchmark(body, settings, info)
        finally:
            self.server.bench_lock.release()
        result["settings"] = settings.as_dict()
        return 200, result


class AgentServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the agent's token, upload limit and benchmark lock."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, token: str | None, max_bytes: int = DEFAULT_MAX_BYTES):
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.token = token
        self.max_bytes = int(max_bytes)
        self.bench_lock = threading.Lock()
        self.info = device_info()
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):
        # socketserver prints a traceback to stderr by default; one line is enough.
        exc = sys.exc_info()[1]
        try:
            sys.stderr.write(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {client_address[0]} connection error: {type(exc).__name__}: {_short(exc) if exc else ''}\n"
            )
        except Exception:  # noqa: BLE001
            pass


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    try:
        return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)
    except ValueError:
        return False


def make_server(host: str, port: int, token: str | None, max_bytes: int = DEFAULT_MAX_BYTES) -> AgentServer:
    """Bind an :class:`AgentServer` (not yet serving). Refuses no token off loopback."""
    if token is not None and not token.strip():
        raise ValueError("the token is empty")
    if token is None and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on non-loopback host {host!r} without a token; pass --token-file FILE "
            "(or bind to 127.0.0.1)"
        )
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    return AgentServer((host.strip("[]"), port), token.strip() if token else None, max_bytes)


def serve(host: str, port: int, token: str | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM). Raises ValueError for bad settings."""
    server = make_server(host, port, token, max_bytes)
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    sys.stderr.write(
        f"shufflenas agent listening on http://{shown}:{bound_port} "
        f"(machine={server.info['machine']}, fingerprint={server.info['fingerprint']}, "
        f"onnxruntime={server.info['onnxruntime']}, auth={'token' if server.token else 'none (loopback)'}, "
        f"max_bytes={server.max_bytes})\n"
    )
    sys.stderr.flush()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        sys.stderr.write("shufflenas agent: shutting down\n")
    finally:
        server.server_close()
        if threading.current_thread() is threading.main_thread():
            # a late SIGTERM during interpreter exit must not raise into atexit callbacks
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_keyboard_interrupt(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one shutdown is enough
    raise KeyboardInterrupt


def _read_token_file(path: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"token file {path} is not UTF-8 text") from None
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shufflenas-agent",
        description="shufflenas device agent: benchmarks ONNX models with onnxruntime on this machine.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument(
        "--token-file",
        help="file holding the bearer token clients must send; required unless --host is loopback",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"largest model upload accepted, in bytes (default {DEFAULT_MAX_BYTES})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code (2 for bad settings)."""
    args = build_parser().parse_args(argv)
    try:
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port {args.port} is out of range [0, 65535]")
        token = _read_token_file(args.token_file) if args.token_file else None
        for module in ("numpy", "onnxruntime"):
            try:
                __import__(module)
            except ImportError as exc:
                raise ValueError(f"{module} is not importable here ({exc}); install it: pip install {module}") from None
        serve(args.host, args.port, token, args.max_bytes)
    except ValueError as exc:
        sys.stderr.write(f"shufflenas agent: error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"shufflenas agent: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
