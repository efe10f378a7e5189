"""Drift-aware latency: the candidate timed interleaved with a fixed reference network.

Why: a shared, throttled or heating machine changes speed over a search, so two latencies
taken an hour apart are taken at different speeds. Timing a reference network in the same
window and reporting the candidate as a multiple of it cancels the speed of the moment.

Protocol (figures in bench/latency_drift.py):
- blocks of a fixed wall time (and at least `min_runs` runs, after one untimed run that pays the
  cache misses of switching networks), candidate and reference alternating ABBA (a linear trend
  cancels within each pair of pairs); one warm-up block of each first;
- each block's MEAN run time (wall time / runs), never per-run medians: under CPU
  time-slicing a short run is either untouched or preempted whole, so the median of short
  runs hides a halved CPU share while the mean of a block carries it;
- ratio per pair (candidate / reference), median of the ratios;
- normalised latency = ratio x the study's baseline reference time (measured once, at the
  study's first use of that reference); probe = reference time now / baseline, flagged beyond a threshold.

Works on any `Blocks` (local ONNX Runtime sessions, or a device agent, one short benchmark
request per block), so a board that heats up is measured the same way.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .base import LatencyResult, check_input_shape, device_label, summarize

#: Reference networks are the family's (`LATENCY_REFERENCES` in its module): members with the
#: family's operators on a grid of sizes and group counts. A candidate is compared with the nearest
#: in MACs and groups (`nearest_reference`), because contention slows networks of different sizes and
#: group counts differently (cache refills per time slice; grouped, shuffle-heavy networks more).
#: weight of one doubling of the group count against one e-fold of MACs in `nearest_reference`
GROUPS_WEIGHT = 0.5


@dataclass(frozen=True)
class DriftConfig:
    """`pairs` A/B pairs of `block_s`-second blocks; flagged when |probe - 1| > `flag_threshold`."""

    # bench/latency_drift.py: 48 pairs of 20 ms held 5 architectures within 0.98-1.02 under a halved
    # CPU share; 24 pairs of 40 ms left one at 0.94-1.07
    block_s: float = 0.02
    pairs: int = 48
    flag_threshold: float = 0.05
    min_runs: int = 3  # per block: one run of a large network is at the mercy of one time slice

    def __post_init__(self) -> None:
        if not isinstance(self.block_s, (int, float)) or not 0 <= self.block_s <= 60:
            raise ValueError(f"drift block_s must be a number in [0, 60] seconds, got {self.block_s!r}")
        if isinstance(self.pairs, bool) or not isinstance(self.pairs, int) or self.pairs < 2:
            raise ValueError(f"drift pairs must be an integer >= 2, got {self.pairs!r}")
        if not isinstance(self.flag_threshold, (int, float)) or not 0 < self.flag_threshold < 1:
            raise ValueError(f"drift flag_threshold must be a number in (0, 1), got {self.flag_threshold!r}")
        if isinstance(self.min_runs, bool) or not isinstance(self.min_runs, int) or self.min_runs < 1:
            raise ValueError(f"drift min_runs must be an integer >= 1, got {self.min_runs!r}")


class Blocks(Protocol):
    """Where blocks run: `load` a model once, then `block` times it for about `seconds`."""

    def load(self, onnx_bytes: bytes, input_shape: tuple[int, int, int]) -> Any: ...

    def block(self, model: Any, seconds: float, min_runs: int = 1) -> float:
        """Mean milliseconds per run over one block of at least `seconds` and `min_runs` runs."""
        ...


class LocalBlocks:
    """ONNX Runtime sessions on this host (the `onnxruntime` backend's sessions)."""

    def __init__(self, threads: int = 1, clock: str = "wall") -> None:
        if clock == "cpu" and threads != 1:
            raise ValueError(f"drift clock 'cpu' counts the CPU time of all threads, so it needs threads=1, got {threads}")
        self.threads = threads
        self.clock = time.process_time if clock == "cpu" else time.perf_counter

    def load(self, onnx_bytes: bytes, input_shape: tuple[int, int, int]) -> Any:
        import numpy as np

        from .ort_backend import make_session

        sess = make_session(onnx_bytes, self.threads)
        x = np.random.default_rng(0).standard_normal((1, *input_shape), dtype=np.float32)
        feed = {sess.get_inputs()[0].name: x}
        return lambda: sess.run(None, feed)

    def block(self, model: Any, seconds: float, min_runs: int = 1) -> float:
        model()  # untimed: the first run after the other network pays its cache misses
        runs, t0, c0 = 0, time.perf_counter(), self.clock()
        while True:
            model()
            runs += 1
            if runs >= min_runs and time.perf_counter() - t0 >= seconds:
                return (self.clock() - c0) * 1e3 / runs


class RemoteBlocks:
    """A device agent: one short benchmark request per block, its mean run time."""

    def __init__(self, device: Any, threads: int = 1) -> None:
        self.device, self.threads = device, threads

    def load(self, onnx_bytes: bytes, input_shape: tuple[int, int, int]) -> Any:
        return onnx_bytes

    def block(self, model: Any, seconds: float, min_runs: int = 1) -> float:
        r = self.device.benchmark(model, threads=self.threads, warmup=1, repeats=min_runs, min_time_s=seconds)
        return float(r.get("mean_ms", r["median_ms"]))


def blocks_for(backend: Any) -> Blocks:
    """The block runner of a measuring backend; ValueError for one that cannot interleave."""
    name = getattr(backend, "name", "")
    if name == "onnxruntime":
        return LocalBlocks(backend.threads, backend.config.clock)
    if name == "remote":
        return RemoteBlocks(backend.device, backend.threads)
    raise ValueError(f"drift-aware latency needs backend onnxruntime or remote (it times ONNX), got {name!r}")


@dataclass(frozen=True)
class Interleaved:
    """One interleaved measurement: raw times of this window and their ratio."""

    candidate_ms: float  # median of the candidate's block means (this window's speed)
    reference_ms: float  # median of the reference's block means
    ratio: float  # median of the per-pair candidate/reference ratios
    ratios: tuple[float, ...]
    seconds: float


def interleave(blocks: Blocks, candidates: list[Any], reference: Any, config: DriftConfig) -> list[Interleaved]:
    """Time each candidate against the reference in one window (ABBA per candidate, round by round).

    Several candidates share the window (the end-of-search re-measure): round r times, for
    each candidate, one candidate block and one reference block, the order flipped every round.
    """
    t0 = time.perf_counter()
    b, k = config.block_s, config.min_runs
    blocks.block(reference, b, k)  # warm-up: first runs pay allocation and cache misses
    for c in candidates:
        blocks.block(c, b, k)
    cand: list[list[float]] = [[] for _ in candidates]
    ref: list[list[float]] = [[] for _ in candidates]
    for r in range(config.pairs):
        for i, c in enumerate(candidates):
            if (r + i) % 2 == 0:
                cand[i].append(blocks.block(c, b, k))
                ref[i].append(blocks.block(reference, b, k))
            else:
                ref[i].append(blocks.block(reference, b, k))
                cand[i].append(blocks.block(c, b, k))
    secs = time.perf_counter() - t0
    out = []
    for cs, rs in zip(cand, ref, strict=True):
        ratios = tuple(c / r for c, r in zip(cs, rs, strict=True))
        out.append(Interleaved(statistics.median(cs), statistics.median(rs), statistics.median(ratios), ratios,
                               secs / max(1, len(candidates))))
    return out


def reference_time(blocks: Blocks, reference: Any, config: DriftConfig) -> float:
    """The reference alone, same blocks: median of `pairs` block means (the study baseline)."""
    b, k = config.block_s, config.min_runs
    blocks.block(reference, b, k)
    return statistics.median(blocks.block(reference, b, k) for _ in range(config.pairs))


def probe(reference_ms: float, baseline_ms: float) -> float:
    """Speed probe: reference time now / its baseline (1.0 = same speed, 2.0 = half speed)."""
    return reference_ms / baseline_ms


def flagged(probe_value: float, threshold: float) -> bool:
    return abs(probe_value - 1.0) > threshold


def reference_arch(name: str, input_shape: tuple[int, int, int], classes: int) -> Any:
    """The reference preset built for the deploy input (its own key in the cache)."""
    from search_spaces import preset

    return preset(name).with_io(in_channels=input_shape[0], num_classes=classes, small_input=False)


def log2_groups(arch: Any) -> float:
    """Mean log2 of the stages' group counts (0 for a family without grouped stages)."""
    import math

    groups = [int(getattr(st, "groups", 1) or 1) for st in getattr(arch, "stages", ())]
    return sum(math.log2(g) for g in groups) / len(groups) if groups else 0.0


def nearest_reference(arch: Any, names: list[str] | tuple[str, ...], input_shape: tuple[int, int, int]) -> str:
    """The reference nearest the candidate: |ln MACs ratio| + GROUPS_WEIGHT x |log2 groups ratio|
    at the input (first on a tie)."""
    shape = check_input_shape(input_shape)
    m, g = _point(arch, shape)

    def distance(name: str) -> float:
        rm, rg = _reference_point(name, shape, arch.num_classes)
        return abs(rm - m) + GROUPS_WEIGHT * abs(rg - g)

    return min(names, key=distance)


def _point(arch: Any, input_shape: tuple[int, int, int]) -> tuple[float, float]:
    """(ln MACs at the input, mean log2 groups): where an arch sits for `nearest_reference`."""
    import math

    from objectives.flops import analytic_macs

    return math.log(max(analytic_macs(arch, input_shape[1:]), 1.0)), log2_groups(arch)


@functools.lru_cache(maxsize=256)
def _reference_point(name: str, input_shape: tuple[int, int, int], classes: int) -> tuple[float, float]:
    """A reference's point, computed once per process (every trial asks for all of them)."""
    return _point(reference_arch(name, input_shape, classes), input_shape)


def export(arch: Any, input_shape: tuple[int, int, int], backend: Any) -> bytes:
    from .onnx_export import export_onnx_bytes

    return export_onnx_bytes(arch, input_shape, dynamo=getattr(backend, "dynamo", False))


def measure_interleaved(arch: Any, reference: Any, input_shape: tuple[int, int, int], backend: Any,
                        config: DriftConfig) -> LatencyResult:
    """One candidate against the reference: a LatencyResult whose median is the raw candidate time.

    extra holds what normalising needs later (any study, any baseline): reference_ms, ratio,
    ratios, the reference's arch id and protocol "interleaved".
    """
    shape = check_input_shape(input_shape)
    blocks = blocks_for(backend)
    t0 = time.perf_counter()
    cand = blocks.load(export(arch, shape, backend), shape)
    ref = blocks.load(export(reference, shape, backend), shape)
    m = interleave(blocks, [cand], ref, config)[0]
    info = backend.device_info()
    rs = summarize(list(m.ratios))  # spread of the ratios: how steady the comparison was
    return LatencyResult(
        median_ms=m.candidate_ms, p90_ms=m.candidate_ms * rs.p90_ms / rs.median_ms, spread=rs.spread,
        n=config.pairs, backend=backend.name, device=str(info["fingerprint"]), threads=int(backend.threads),
        runtime=backend.runtime(), input_shape=shape, p10_ms=m.candidate_ms * rs.p10_ms / rs.median_ms,
        min_ms=m.candidate_ms * rs.min_ms / rs.median_ms, machine=str(info.get("machine", "")),
        device_label=device_label(info), arch_id=getattr(arch, "arch_id", None), seconds=time.perf_counter() - t0,
        extra={"protocol": "interleaved", "reference": getattr(reference, "arch_id", None),
               "reference_ms": m.reference_ms, "ratio": m.ratio, "ratios": list(m.ratios),
               "block_s": config.block_s},
    )


def cache_key(arch: Any, reference: Any, input_shape: tuple[int, int, int], backend: Any, config: DriftConfig) -> Any:
    """The plain cache key with the protocol added: an interleaved result is not a plain one."""
    from .api import cache_key as plain_key

    key = plain_key(arch, input_shape, backend)
    tag = f"interleaved={getattr(reference, 'arch_id', '')}/{config.pairs}x{config.block_s:g}s/{config.min_runs}"
    return replace(key, runtime=f"{key.runtime},{tag}" if key.runtime else tag)


def measure_cached(arch: Any, reference: Any, input_shape: tuple[int, int, int], backend: Any, config: DriftConfig,
                   cache: Any = None) -> LatencyResult:
    """Cache first (raw time, reference time and ratio are cached; normalising is per study), then measure."""
    if cache is None:
        return measure_interleaved(arch, reference, input_shape, backend, config)
    key = cache_key(arch, reference, input_shape, backend, config)
    hit = cache.get(key)
    if hit is not None:
        return hit
    result = measure_interleaved(arch, reference, input_shape, backend, config)
    cache.put(key, result)
    return result


__all__ = [
    "Blocks", "DriftConfig", "Interleaved", "LocalBlocks", "RemoteBlocks", "blocks_for",
    "cache_key", "flagged", "interleave", "measure_cached", "measure_interleaved", "nearest_reference", "probe", "reference_arch",
    "reference_time",
]
