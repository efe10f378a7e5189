"""The latency protocol, its result type, the measuring discipline and the host fingerprint.

Nothing here imports torch or onnxruntime: the result type and the discipline are shared by
every backend, including the remote one whose numbers come from a board without torch.
Times are milliseconds and always a median with its spread, never a single run.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CLOCKS: tuple[str, ...] = ("wall", "cpu")


@dataclass(frozen=True)
class MeasureConfig:
    """How long and how often to time one model.

    Repeat until both `min_repeats` runs and `min_time_s` seconds are done (short models get
    many samples, long ones at least `min_repeats`); re-measure once when the spread
    (p90-p10)/median exceeds `max_spread`, because a busy host shows up as a wide spread.

    `clock="wall"` (default) is latency as a dedicated device sees it. `clock="cpu"` times
    each run with the process CPU clock: on a shared host, time slices lost to other
    processes are not counted, so a single-threaded measurement stays repeatable (with one
    intra-op thread, CPU time equals wall time on an idle machine). Only valid with 1 thread.
    """

    warmup: int = 5
    min_repeats: int = 20
    min_time_s: float = 1.0
    max_repeats: int = 10_000
    max_spread: float = 0.15
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"latency clock must be one of {list(CLOCKS)}, got {self.clock!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"latency warmup must be an integer >= 0, got {self.warmup!r}")
        if isinstance(self.min_repeats, bool) or not isinstance(self.min_repeats, int) or self.min_repeats < 3:
            raise ValueError(f"latency min_repeats must be an integer >= 3, got {self.min_repeats!r}")
        if not isinstance(self.max_repeats, int) or self.max_repeats < self.min_repeats:
            raise ValueError(
                f"latency max_repeats must be >= min_repeats, got ({self.max_repeats!r}, {self.min_repeats!r})"
            )
        if not isinstance(self.min_time_s, (int, float)) or not 0 <= self.min_time_s <= 600:
            raise ValueError(f"latency min_time_s must be a number in [0, 600], got {self.min_time_s!r}")
        if not isinstance(self.max_spread, (int, float)) or self.max_spread <= 0:
            raise ValueError(f"latency max_spread must be a number > 0, got {self.max_spread!r}")


@dataclass(frozen=True)
class LatencyResult:
    """One latency figure with everything needed to reproduce or key it."""

    median_ms: float
    p90_ms: float
    spread: float  # (p90 - p10) / median
    n: int
    backend: str
    device: str  # device fingerprint (16 hex), the cache key part
    threads: int
    runtime: dict[str, str]  # e.g. {"onnxruntime": "1.18.0"} or {"torch": "2.4.0"}
    input_shape: tuple[int, ...]
    cached: bool = False
    p10_ms: float = 0.0
    min_ms: float = 0.0
    machine: str = ""  # as the device reports it (an emulated aarch64 says so in `device_label`)
    device_label: str = ""  # human-readable: "x86_64 Intel Xeon ... (2 cores)"
    arch_id: str | None = None
    remeasured: bool = False
    seconds: float = 0.0  # wall time spent measuring (0 when cached)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        d["input_shape"] = tuple(d.get("input_shape", ()))
        return cls(**d)

    def summary(self) -> str:
        return (
            f"median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, spread {self.spread:.1%}, n={self.n}, "
            f"{self.backend} {self.threads} thread(s) on {self.device_label or self.machine} [{self.device}]"
            + (" (cached)" if self.cached else "")
        )


@dataclass(frozen=True)
class Stats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    spread: float
    n: int


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), without numpy."""
    if not sorted_values:
        raise ValueError("no samples")
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(times_ms: list[float]) -> Stats:
    """Median, p10, p90 and spread = (p90 - p10) / median of a list of run times."""
    if not times_ms:
        raise ValueError("summarize needs at least one sample")
    s = sorted(times_ms)
    med = statistics.median(s)
    p10, p90 = _quantile(s, 0.10), _quantile(s, 0.90)
    spread = (p90 - p10) / med if med > 0 else 0.0
    return Stats(median_ms=med, p10_ms=p10, p90_ms=p90, min_ms=s[0], spread=spread, n=len(s))


def time_runs(run: Callable[[], Any], config: MeasureConfig) -> list[float]:
    """Warm up, then time `run()` until both the minimum count and the minimum time are reached."""
    clock = time.process_time if config.clock == "cpu" else time.perf_counter
    for _ in range(config.warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < config.max_repeats:
        t0 = clock()
        run()
        times.append((clock() - t0) * 1e3)
        if len(times) >= config.min_repeats and time.perf_counter() - start >= config.min_time_s:
            break
    return times


def measure_callable(run: Callable[[], Any], config: MeasureConfig) -> tuple[Stats, bool]:
    """Stats of `run` under the discipline; re-measure once when the spread is too wide.

    Of the two attempts the one with the narrower spread is kept (the other most likely
    overlapped with something else on the host). Returns (stats, remeasured).
    """
    first = summarize(time_runs(run, config))
    if first.spread <= config.max_spread:
        return first, False
    second = summarize(time_runs(run, config))
    return (second if second.spread < first.spread else first), True


# ---------------------------------------------------------------------------- device fingerprint


def host_info() -> dict[str, Any]:
    """This host described exactly as the device agent's /v1/info describes its board, so a
    local measurement and the agent on the same host key the cache identically."""
    from objectives.latency.agent import device_info  # numpy + onnxruntime only; no torch

    return dict(device_info())


def device_label(info: dict[str, Any]) -> str:
    """Human label; an emulated device is called what it is, never ARM latency."""
    cpu = info.get("cpu_model") or info.get("cpu") or ""
    label = f"{info.get('machine', '?')} {cpu}".strip()
    if info.get("cores"):
        label += f" ({info['cores']} cores)"
    if info.get("emulated"):
        label += " [EMULATED: timings are not the real device's]"
    return label


def check_clock(config: MeasureConfig, threads: int) -> None:
    if config.clock == "cpu" and threads != 1:
        raise ValueError(f"latency clock 'cpu' counts CPU time of all threads, so it needs threads=1, got {threads}")


def clock_runtime(config: MeasureConfig) -> dict[str, str]:
    """Non-default clocks are part of the cache key (a CPU-time figure is not a wall-time one)."""
    return {} if config.clock == "wall" else {"clock": config.clock}


def check_threads(threads: Any, where: str = "threads") -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
        raise ValueError(f"{where} must be an integer in [1, 256], got {threads!r}")
    return threads


def check_input_shape(shape: Any, where: str = "input_shape") -> tuple[int, int, int]:
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise ValueError(f"{where} must be (C, H, W) positive integers, got {shape!r}")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


class HostBackend:
    """Shared set-up of the backends that measure on this host (torch, onnxruntime)."""

    name = "host"

    def __init__(self, threads: int = 1, config: MeasureConfig | None = None) -> None:
        self.threads = check_threads(threads)
        self.config = config or MeasureConfig()
        check_clock(self.config, self.threads)
        self._info: dict[str, Any] | None = None

    def device_info(self) -> dict[str, Any]:
        if self._info is None:  # read /proc and /sys once per backend
            self._info = host_info()
        return self._info
