"""Latency predictor built from ONNX Runtime's per-kernel profile of WHOLE networks.

Timing parts as separate sessions (the old lookup table) charges each part a session's
overhead and misses what the graph optimiser does across part boundaries. Here whole
networks are profiled on the target (local ONNX Runtime or a device agent's opt-in
profiling mode): the profiler reports every node of the OPTIMISED graph, i.e. the fused
kernels that really run (Conv+BN+ReLU as one FusedConv, NCHWc reorders, ...).

- A kernel is keyed by its op, its input/output shapes and the groups/kernel/stride read
  from the weight shape and the spatial sizes. Kernels recur across architectures, so a
  seen key is predicted by the median of its profiled times; an unseen key by a
  least-squares model per kernel type over log shape features (FLOPs, bytes moved, ...).
- A network is the sum of its kernels, calibrated against UNPROFILED whole-network medians
  (the profiler adds per-node overhead): ``ms = a * sum + b * n_kernels + c``, least squares
  in relative error (``b``: per-node cost net of the profiler's own, ``c``: per run).
- Which kernels an architecture becomes is read from one profiled run of its graph on this
  host (no timing is used from it), so the predictor follows the optimiser exactly.
- Building samples adaptively: a few random archs first, then the candidates with the
  most compute in parts never profiled and those close to the worst-fitted archs.

A predictor is a JSON file (format ``shufflenas-predictor/1``) tied to the device
fingerprint and the runtime version it was measured with.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import ArchBase, Block, RandomTrial, family_of

from .base import LatencyResult, check_input_shape

FORMAT = "shufflenas-predictor/1"
OLD_FORMATS = ("shufflenas-lut/1",)
PROFILE_RUNS = 10  # profiled runs per build network (per-node medians over them)


class ForeignDevice(ValueError):
    """A predictor used against a device (or runtime) other than the one it was built on."""


# ---------------------------------------------------------------------------- parts (blocks)


@dataclass(frozen=True)
class Part:
    """One stem/unit/head of a network at its input resolution (a family's `Block`).

    The predictor uses parts only to choose what to profile next (compute in parts never
    profiled); `lut build --count` reports how many distinct parts a space has.
    """

    family: str
    block: Block

    @property
    def key(self) -> str:
        return self.block.key

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.block.input_shape

    def to_dict(self) -> dict[str, Any]:
        return self.block.to_dict()

    def __getattr__(self, name: str) -> Any:  # p.kind, p.stride, p.h ...: the block's spec
        return getattr(object.__getattribute__(self, "block"), name)


def arch_parts(arch: Any, input_shape: tuple[int, int, int]) -> list[Part]:
    """Every part of `arch` in order, repeated units included."""
    fam = family_of(arch)
    return [Part(arch.family, b) for b in fam.blocks(arch, check_input_shape(input_shape))]


def enumerate_parts(space: Any, input_shape: tuple[int, int, int], classes: int | None = None) -> list[Part]:
    """Every distinct part the space can produce at this deploy input, in a stable order."""
    shape = check_input_shape(input_shape)
    seen: dict[str, Part] = {}
    for arch in space.lut_archs(classes=classes, in_channels=shape[0]):
        for p in arch_parts(arch, shape):
            seen.setdefault(p.key, p)
    return list(seen.values())


def random_archs(space: Any, n: int, seed: int = 0, in_channels: int | None = None, classes: int | None = None) -> list:
    """`n` architectures drawn uniformly from the space (distinct when the space allows)."""
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        try:
            arch = space.sample(RandomTrial(rng))
        except ValueError:  # mixed per-stage groups can give channels the validator rejects
            continue
        if in_channels is not None or classes is not None:
            arch = arch.with_io(
                in_channels=in_channels if in_channels is not None else arch.in_channels,
                num_classes=classes if classes is not None else arch.num_classes,
                small_input=arch.small_input,
            )
        out.setdefault(arch.arch_id, arch)
    return list(out.values())


# ---------------------------------------------------------------------------- kernels


def _prod(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims) if dims else 0


@dataclass(frozen=True)
class Kernel:
    """One node of the optimised graph as the profiler reports it (shapes, not time)."""

    op: str
    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]
    nchwc: bool = False

    @classmethod
    def from_node(cls, node: dict[str, Any]) -> Kernel:
        return cls(
            op=str(node.get("op", "")),
            inputs=tuple(tuple(int(d) for d in s) for s in node.get("in") or []),
            outputs=tuple(tuple(int(d) for d in s) for s in node.get("out") or []),
            nchwc="nchwc" in str(node.get("name", "")).lower(),
        )

    def conv_params(self) -> tuple[int, int, int] | None:
        """(groups, kernel, stride) of a convolution, from the weight shape and spatial sizes."""
        if not self.op.endswith("Conv") or len(self.inputs) < 2 or not self.outputs:
            return None
        x, w, y = self.inputs[0], self.inputs[1], self.outputs[0]
        if len(x) != 4 or len(w) != 4 or len(y) != 4 or w[1] <= 0 or y[2] <= 0:
            return None
        groups = max(1, x[1] // w[1])
        return groups, int(w[2]), max(1, round(x[2] / y[2]))

    @property
    def kind(self) -> str:
        """The kernel type a regression is fitted per: op, conv flavour, layout, fused residual."""
        kind = self.op
        conv = self.conv_params()
        if conv is not None:
            g, k, _s = conv
            cin = self.inputs[0][1]
            flavour = "dw" if g > 1 and g == cin else (f"k{k}" if k > 1 else ("gpw" if g > 1 else "pw"))
            kind += f":{flavour}" + (":add" if len(self.inputs) >= 4 else "")
        return kind + (":nchwc" if self.nchwc else "")

    @property
    def key(self) -> str:
        shapes = ";".join("x".join(map(str, s)) for s in self.inputs)
        outs = ";".join("x".join(map(str, s)) for s in self.outputs)
        conv = self.conv_params()
        extra = f"|g={conv[0]},k={conv[1]},s={conv[2]}" if conv else ""
        return f"{self.kind}|{shapes}->{outs}{extra}"

    def features(self) -> list[float]:
        """Log shape features: FLOPs, bytes read, bytes written, weight bytes, output elements, stride, kernel."""
        x = self.inputs[0] if self.inputs else ()
        y = self.outputs[0] if self.outputs else ()
        out_el = _prod(y)
        conv = self.conv_params()
        if conv is not None:
            g, k, s = conv
            w = self.inputs[1]
            flops = 2 * out_el * w[1] * w[2] * w[3]
            weight = _prod(w)
        elif self.op in ("MatMul", "Gemm") and len(x) == 2 and len(y) == 2:
            g, k, s = 1, 1, 1
            flops, weight = 2 * x[1] * y[1], x[1] * y[1]
        else:
            g, s = 1, 1
            k = round(math.sqrt(_prod(x) / out_el)) if out_el and _prod(x) > out_el else 1
            flops, weight = max(_prod(x), out_el), 0
        read = 4 * sum(_prod(i) for i in self.inputs)
        return [
            math.log1p(flops), math.log1p(read), math.log1p(4 * sum(_prod(o) for o in self.outputs)),
            math.log1p(4 * weight), math.log1p(out_el), float(s), float(k), math.log(g),
        ]


def kernels_of(profile: dict[str, Any]) -> list[tuple[Kernel, float]]:
    """(kernel, median µs) for every node of a profile (`agent.summarize_profile`'s shape)."""
    return [(Kernel.from_node(n), float(n.get("us", 0.0))) for n in profile.get("nodes") or []]


# ---------------------------------------------------------------------------- figures


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares a, b in y = a*x + b; a ratio when there are too few distinct points."""
    import numpy as np

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if len(xa) < 2 or float(np.ptp(xa)) == 0.0:
        if len(xa) and float(xa.mean()) > 0:
            return float(ya.mean() / xa.mean()), 0.0
        return 1.0, 0.0
    a, b = np.polyfit(xa, ya, 1)
    return float(a), float(b)


def accuracy_figures(predicted: Sequence[float], measured: Sequence[float], tol: float = 0.10) -> dict[str, float]:
    """Share of predictions within ±tol of the measurement, Spearman rho, mean abs rel. error."""
    import numpy as np
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = np.abs(p - m) / m
    rho = float(spearmanr(p, m).statistic) if len(p) > 2 else float("nan")
    return {"within": float(np.mean(rel <= tol)), "spearman": rho, "mean_abs_rel_err": float(np.mean(rel))}


# ---------------------------------------------------------------------------- the model


class _KindModel:
    """Unseen kernels of one type: the nearest seen kernels in log-feature space (inverse-distance
    weighted), each moved to the query by a ridge log-linear fit of the whole type.

    Neighbours carry what a global formula misses (the kernel implementation's efficiency at
    those channel counts); the log-linear slope carries the size difference. In 5-fold
    cross-validation over the kernel keys of a 100-network build this halved the share of
    kernels off by more than 10% compared with the log-linear fit alone.
    """

    def __init__(self, feats: list[list[float]], us: list[float], k: int = 4, ridge: float = 1e-2) -> None:
        import numpy as np

        x = np.asarray(feats, float)
        self.mu = x.mean(axis=0)
        self.sd = x.std(axis=0)
        self.sd[self.sd == 0] = 1.0
        self.z = (x - self.mu) / self.sd
        self.logy = np.log(np.maximum(np.asarray(us, float), 0.05))
        a = np.hstack([np.ones((len(x), 1)), self.z])
        reg = ridge * len(x) * np.eye(a.shape[1])
        reg[0, 0] = 0.0
        self.slope = np.linalg.solve(a.T @ a + reg, a.T @ self.logy)[1:]
        self.k = k

    def __call__(self, feats: list[float]) -> float:
        import numpy as np

        z = (np.asarray(feats, float) - self.mu) / self.sd
        dist = np.sqrt(((self.z - z) ** 2).sum(axis=1))
        idx = np.argsort(dist)[: self.k]
        w = 1.0 / (dist[idx] + 1e-3)
        moved = self.logy[idx] + (z - self.z[idx]) @ self.slope
        return float(np.exp(np.sum(w * moved) / w.sum()))


class Predictor:
    """A built predictor: per-kernel-key medians, per-type regressions, the network calibration."""

    def __init__(self, data: dict[str, Any], source: str = "predictor") -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: not a shufflenas latency predictor (expected format {FORMAT!r})")
        if data.get("format") in OLD_FORMATS:
            raise ValueError(
                f"{source}: format {data.get('format')!r} is the old per-part lookup table; rebuild it with "
                f"`shufflenas lut build` (format {FORMAT!r})"
            )
        if data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a shufflenas latency predictor (expected format {FORMAT!r})")
        for key in ("kernels", "input", "device", "runtime", "calibration"):
            if key not in data:
                raise ValueError(f"{source}: missing key {key!r}")
        self.data = data
        self.source = source
        try:  # a hand-edited or truncated file: one line, never a traceback
            self.kernels: dict[str, dict[str, Any]] = dict(data["kernels"])
            self.input_shape: tuple[int, int, int] = tuple(int(v) for v in data["input"])  # type: ignore[assignment]
            self.device: str = str(data["device"])
            self.threads: int = int(data.get("threads", 1))
            cal = data["calibration"]
            self.a, self.b, self.c = float(cal["a"]), float(cal["b"]), float(cal["c"])
            self._models = self._fit_kinds()
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"{source}: malformed predictor ({type(e).__name__}: {e})") from None

    # -- io ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{str(p)}: no such file") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(p)}: not valid JSON ({e.msg} at line {e.lineno})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{str(p)}: cannot read ({e.__class__.__name__})") from None
        return cls(data, source=str(p))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.data, indent=1, sort_keys=True))

    @functools.cached_property
    def table_hash(self) -> str:  # once: every prediction's runtime() names it
        return hashlib.sha256(json.dumps(self.data["kernels"], sort_keys=True).encode()).hexdigest()[:12]

    def check_device(self, fingerprint: str, runtime: dict[str, str], where: str) -> None:
        """Refuse a device or runtime other than the one the predictor was measured on (one line)."""
        if str(fingerprint) != self.device:
            raise ForeignDevice(
                f"{self.source}: predictor was built on device {self.device}, but {where} is {fingerprint}; "
                "build one there (`shufflenas lut build`)"
            )
        want = self.data["runtime"].get("onnxruntime")
        got = runtime.get("onnxruntime")
        if want and got and want != got:
            raise ForeignDevice(
                f"{self.source}: predictor was built with onnxruntime {want}, but {where} runs {got}; rebuild it"
            )

    def space(self) -> Any:
        from search_spaces import get_space

        d = dict(self.data.get("space") or {})
        if "name" not in d:
            raise ValueError(f"{self.source}: its 'space' names no family")
        return get_space(d.pop("name"), **d)

    # -- model -------------------------------------------------------------------------
    def _fit_kinds(self) -> dict[str, _KindModel]:
        by_kind: dict[str, tuple[list[list[float]], list[float]]] = {}
        for e in self.kernels.values():
            f, u = by_kind.setdefault(e["kind"], ([], []))
            f.append(e["features"])
            u.append(float(e["us"]))
        models = {k: _KindModel(f, u) for k, (f, u) in by_kind.items() if len(u) >= 3}
        every = [e for e in self.kernels.values()]
        if every:  # fallback for a kernel type seen fewer than 3 times (or never)
            models["*"] = _KindModel([e["features"] for e in every], [float(e["us"]) for e in every])
        return models

    def kernel_us(self, kernel: Kernel) -> tuple[float, bool]:
        """(µs, seen): the key's profiled median when seen, the type's regression otherwise."""
        e = self.kernels.get(kernel.key)
        if e is not None:
            return float(e["us"]), True
        model = self._models.get(kernel.kind) or self._models.get("*")
        return (model(kernel.features()) if model else 0.0), False

    def network_ms(self, kernel_sum_us: float, n_kernels: int) -> float:
        return self.a * kernel_sum_us / 1e3 + self.b * n_kernels / 1e3 + self.c

    def predict_kernels(self, kernels: Sequence[Kernel]) -> dict[str, Any]:
        total, seen = 0.0, 0
        for k in kernels:
            us, hit = self.kernel_us(k)
            total += us
            seen += hit
        return {"ms": self.network_ms(total, len(kernels)), "kernel_sum_us": total, "n_kernels": len(kernels),
                "seen": seen}

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        if tuple(shape) != self.input_shape:
            raise ValueError(
                f"{self.source}: predictor was built at input {'x'.join(map(str, self.input_shape))}, "
                f"asked for {'x'.join(map(str, shape))}; build one for that input"
            )

    def predict(self, arch: Any, input_shape: tuple[int, int, int] | None = None) -> float:
        return self.explain(arch, input_shape)["ms"]

    def explain(self, arch: Any, input_shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """Prediction with its parts: kernel sum, kernel count, how many kernel keys were seen."""
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        self.check_shape(shape)  # type: ignore[arg-type]
        return self.predict_kernels(detect_kernels(arch, self.input_shape, self.threads))

    def predict_macs(self, arch: Any) -> float:
        """The MACs-proportional baseline fitted on the same build measurements."""
        from objectives.flops import analytic_macs

        mm = self.data.get("macs_model") or {"a": 0.0, "b": 0.0}
        return float(mm["a"]) * analytic_macs(arch, self.input_shape[1:]) / 1e6 + float(mm["b"])


def detect_kernels(arch: Any, input_shape: tuple[int, int, int], threads: int = 1) -> list[Kernel]:
    """The kernels `arch` becomes after ONNX Runtime's graph optimisation (one profiled run here;
    only shapes are read, no time)."""
    from .onnx_export import export_onnx_bytes
    from .ort_backend import profile_onnx

    profile = profile_onnx(export_onnx_bytes(arch, input_shape), input_shape, threads, runs=1, skip=0)
    return [k for k, _us in kernels_of(profile)]


# ---------------------------------------------------------------------------- building


@dataclass
class _Sample:
    arch: Any
    measured_ms: float
    kernels: list[tuple[Kernel, float]]
    macs_m: float


def _fit(samples: list[_Sample]) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Kernel table (key -> median µs, type, features) and the non-negative network calibration."""
    import numpy as np

    times: dict[str, list[float]] = {}
    protos: dict[str, Kernel] = {}
    for s in samples:
        for k, us in s.kernels:
            times.setdefault(k.key, []).append(us)
            protos.setdefault(k.key, k)
    table = {
        key: {"us": float(np.median(v)), "n": len(v), "kind": protos[key].kind, "features": protos[key].features()}
        for key, v in times.items()
    }
    x = np.array([[sum(table[k.key]["us"] for k, _ in s.kernels) / 1e3, len(s.kernels) / 1e3, 1.0] for s in samples])
    y = np.array([s.measured_ms for s in samples])
    wts = 1.0 / y  # relative error is what is judged
    if len(samples) >= 6:
        # b is free: the profiler charges every node its own overhead (b < 0 takes it back out)
        coef = np.linalg.lstsq(x * wts[:, None], y * wts, rcond=None)[0]
    else:
        coef = np.array([float(np.sum(y * wts) / np.sum(x[:, 0] * wts)), 0.0, 0.0])
    if coef[0] <= 0 or np.any(x @ coef <= 0):  # a fit that predicts a non-positive time is no fit
        coef = np.array([float(np.sum(y * wts) / np.sum(x[:, 0] * wts)), 0.0, 0.0])
    return table, {"a": float(coef[0]), "b": float(coef[1]), "c": float(coef[2])}


def build_predictor(
    space: Any,
    input_shape: tuple[int, int, int],
    backend: Any,
    *,
    archs: int = 120,
    initial: int | None = None,
    batch: int = 10,
    profile_runs: int = PROFILE_RUNS,
    classes: int | None = None,
    seed: int = 0,
    pool: int = 2000,
    progress: Callable[[int, int, str], None] | None = None,
    device_url: str | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
    after_each: Callable[[int], None] | None = None,
) -> Predictor:
    """Profile `archs` whole networks on `backend` (adaptively chosen) and fit the predictor.

    One network costs ONE request/measurement batch on the target: its unprofiled median
    under the backend's MeasureConfig and `profile_runs` profiled runs (the agent does both
    in one call), so `archs` networks are `archs` measurements. Arch ids in `exclude` are
    never profiled (held-out archs); `after_each(i)` runs after the i-th network (a bench
    measures its ground truth there, interleaved, so both see the host at the same speed).
    """
    from objectives.flops import analytic_macs

    from .onnx_export import export_onnx_bytes

    shape = check_input_shape(input_shape)
    initial = min(archs, initial if initial is not None else max(3, archs // 3))
    candidates = [a for a in random_archs(space, pool, seed=seed, in_channels=shape[0], classes=classes)
                  if a.arch_id not in exclude]
    info = backend.device_info()
    samples: list[_Sample] = []
    seen_parts: set[str] = set()
    t0 = time.perf_counter()

    def profile(arch: Any, why: str) -> None:
        r = backend.measure_onnx(export_onnx_bytes(arch, shape), shape, profile=profile_runs)
        prof = r.extra.get("profile") or {}
        if not prof.get("nodes"):
            raise RuntimeError(f"{backend.name}: the target returned no kernel profile (an agent older than profile mode?)")
        samples.append(_Sample(arch, r.median_ms, kernels_of(prof), analytic_macs(arch, shape[1:]) / 1e6))
        seen_parts.update(p.key for p in arch_parts(arch, shape))
        if progress:
            progress(len(samples), archs, why)
        if after_each:
            after_each(len(samples))

    todo = list(candidates)
    for arch in todo[:initial]:
        profile(arch, "random")
    todo = todo[initial:]
    while len(samples) < archs and todo:
        table, cal = _fit(samples)
        pred = Predictor(_data(space, shape, backend, info, classes, table, cal, samples, device_url, 0.0))
        resid = [abs(pred.predict_kernels([k for k, _ in s.kernels])["ms"] / s.measured_ms - 1) for s in samples]
        part_err: dict[str, float] = {}
        for s, e in zip(samples, resid, strict=True):
            for p in arch_parts(s.arch, shape):
                part_err[p.key] = max(part_err.get(p.key, 0.0), e)
        todo.sort(key=lambda a: _uncertainty(arch_parts(a, shape), seen_parts, part_err), reverse=True)
        for arch in todo[: min(batch, archs - len(samples))]:
            profile(arch, "adaptive")
        todo = todo[batch:]
    table, cal = _fit(samples)
    return Predictor(_data(space, shape, backend, info, classes, table, cal, samples, device_url,
                           time.perf_counter() - t0))


def _uncertainty(parts: list[Part], seen: set[str], part_err: dict[str, float]) -> float:
    """Where the model is least sure: the share of an arch's parts never profiled (their kernels
    go to the regression) plus the worst held-in error among profiled archs sharing a part."""
    unseen = sum(p.key not in seen for p in parts) / len(parts)
    return unseen + max((part_err.get(p.key, 0.0) for p in parts), default=0.0)


def _data(space: Any, shape: tuple[int, int, int], backend: Any, info: dict[str, Any], classes: int | None,
          table: dict[str, Any], cal: dict[str, float], samples: list[_Sample], device_url: str | None,
          seconds: float) -> dict[str, Any]:
    ma, mb = fit_line([s.macs_m for s in samples], [s.measured_ms for s in samples])
    return {
        "format": FORMAT,
        "space": space.to_dict(),
        "space_hash": space.space_hash(),
        "input": list(shape),
        "classes": classes if classes is not None else space.num_classes,
        "backend": backend.name,
        "device": info["fingerprint"],
        "device_info": info,
        "device_url": device_url,
        "threads": backend.threads,
        "runtime": backend.runtime(),
        "measure": backend.config.__dict__ if hasattr(backend, "config") else {},
        "measurements": len(samples),
        "kernels": table,
        "calibration": {**cal, "n": len(samples), "units": "ms = a*sum_ms + b*n_kernels/1000 + c"},
        "macs_model": {"a": ma, "b": mb, "unit": "ms per MMAC"},
        "archs": [{"arch_id": s.arch.arch_id, "measured_ms": s.measured_ms, "n_kernels": len(s.kernels)}
                  for s in samples],
        "seconds_build": seconds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def validate_predictor(
    pred: Predictor, backend: Any, n: int = 20, seed: int = 12345, archs: list | None = None,
    progress: Callable[[int, int], None] | None = None, measured: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Measure `n` random archs of the predictor's space (or take `measured`, one per arch of
    `archs`); compare the predictor and the MACs model to them."""
    if archs is None:
        space = pred.space()
        c = pred.input_shape[0]
        archs = random_archs(space, n, seed=seed, in_channels=c, classes=int(pred.data.get("classes", space.num_classes)))
    built = {a["arch_id"] for a in pred.data.get("archs", [])}
    given = list(measured) if measured is not None else None
    measured, predicted, macs, seen_share = [], [], [], []
    for i, a in enumerate(archs):
        ex = pred.explain(a)
        predicted.append(ex["ms"])
        seen_share.append(ex["seen"] / max(1, ex["n_kernels"]))
        macs.append(pred.predict_macs(a))
        measured.append(given[i] if given is not None else backend.measure(a, pred.input_shape).median_ms)
        if progress:
            progress(i + 1, len(archs))
    return {
        "n": len(archs),
        "held_out": sum(a.arch_id not in built for a in archs),
        "predictor": accuracy_figures(predicted, measured),
        "macs": accuracy_figures(macs, measured),
        "measured_ms": measured,
        "predictor_ms": predicted,
        "macs_ms": macs,
        "seen_kernel_share": float(sum(seen_share) / max(1, len(seen_share))),
    }


# ---------------------------------------------------------------------------- backend


class PredictorBackend:
    """Backend "predictor": latency predicted from a built predictor (n = 0, spread = 0)."""

    name = "predictor"

    def __init__(self, table: str | Path | Predictor, threads: int | None = None) -> None:
        self.predictor = table if isinstance(table, Predictor) else Predictor.load(table)
        if threads is not None and threads != self.predictor.threads:
            raise ValueError(
                f"{self.predictor.source}: predictor was measured with {self.predictor.threads} thread(s), not {threads}"
            )
        self.threads = self.predictor.threads
        self._check_host()

    def _check_host(self) -> None:
        """Kernels are detected by this host's ONNX Runtime: a predictor built here needs this very
        host; one built through an agent needs the same runtime version here (same optimiser)."""
        import onnxruntime

        from .base import host_info

        p = self.predictor
        if not p.data.get("device_url"):
            p.check_device(str(host_info()["fingerprint"]), {"onnxruntime": onnxruntime.__version__}, "this host")
        else:
            want = p.data["runtime"].get("onnxruntime")
            if want and want != onnxruntime.__version__:
                raise ForeignDevice(
                    f"{p.source}: predictor's device runs onnxruntime {want}, this host {onnxruntime.__version__}; "
                    "kernel detection needs the same version here"
                )

    def device_info(self) -> dict[str, Any]:
        return dict(self.predictor.data.get("device_info") or {"fingerprint": self.predictor.device})

    def runtime(self) -> dict[str, str]:
        rt = {k: str(v) for k, v in self.predictor.data.get("runtime", {}).items()}
        return {**rt, "predictor": self.predictor.table_hash}

    def measure(self, arch_or_model: Any, input_shape: tuple[int, int, int]) -> LatencyResult:
        from .base import device_label

        if not isinstance(arch_or_model, ArchBase):
            raise ValueError("the predictor backend predicts Arch objects only, not arbitrary models")
        shape = check_input_shape(input_shape)
        arch = arch_or_model
        if arch.in_channels != shape[0]:
            arch = arch.with_io(in_channels=shape[0], num_classes=arch.num_classes, small_input=arch.small_input)
        t0 = time.perf_counter()
        ex = self.predictor.explain(arch, shape)
        ms = ex["ms"]
        info = self.device_info()
        return LatencyResult(
            median_ms=ms, p90_ms=ms, spread=0.0, n=0, backend=self.name, device=self.predictor.device,
            threads=self.threads, runtime=self.runtime(), input_shape=shape, p10_ms=ms, min_ms=ms,
            machine=str(info.get("machine", "")), device_label=device_label(info), arch_id=arch.arch_id,
            seconds=time.perf_counter() - t0,
            extra={"predicted": True, "table": self.predictor.source, "kernels": ex["n_kernels"],
                   "kernels_seen": ex["seen"]},
        )


__all__ = [
    "FORMAT",
    "ForeignDevice",
    "Kernel",
    "Part",
    "Predictor",
    "PredictorBackend",
    "accuracy_figures",
    "arch_parts",
    "build_predictor",
    "detect_kernels",
    "enumerate_parts",
    "kernels_of",
    "random_archs",
    "validate_predictor",
]
