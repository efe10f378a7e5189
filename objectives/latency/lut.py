"""Lookup-table latency predictor: time every distinct unit once, predict an arch by summing.

A network is a stem, a chain of units and a head, and a unit's cost depends only on its
own configuration and input resolution (the family's `blocks` lists them with a key). A
space therefore produces far fewer distinct units than architectures: repeats only add
copies of each stage's stride-1 unit (the space's `lut_archs` covers every part). Each distinct part is exported as
its own tiny ONNX model and timed on the target (local ONNX Runtime or a device agent);
a whole arch is the sum of its parts' medians, corrected by `a * sum + b` fitted by least
squares on a few whole-model measurements (inter-layer effects, per-call overhead).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import ArchBase, Block, RandomTrial, family_of, get_family

from .base import LatencyResult, check_input_shape

FORMAT = "shufflenas-lut/1"


# ---------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Part:
    """One measurable piece of a network at a given input resolution (a family's `Block`)."""

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

    def module(self) -> Any:
        """The part as its own `nn.Module` (same layers the full model uses)."""
        return get_family(self.family).block_module(self.block.to_dict())

    def __getattr__(self, name: str) -> Any:  # p.kind, p.stride, p.h ...: the block's spec
        return getattr(object.__getattribute__(self, "block"), name)


def arch_parts(arch: Any, input_shape: tuple[int, int, int]) -> list[Part]:
    """Every part of `arch` in order, repeated units included (what a prediction sums)."""
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


# ---------------------------------------------------------------------------- fitting and scoring


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares a, b in y = a*x + b; identity when there are too few distinct points."""
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


# ---------------------------------------------------------------------------- table


class LutTable:
    """A built table: per-part medians, calibration, and what it was measured on."""

    def __init__(self, data: dict[str, Any], source: str = "table") -> None:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a shufflenas latency table (expected format {FORMAT!r})")
        for key in ("entries", "input", "device", "backend"):
            if key not in data:
                raise ValueError(f"{source}: missing key {key!r}")
        self.data = data
        self.source = source
        self.entries: dict[str, dict[str, Any]] = data["entries"]
        self.input_shape: tuple[int, int, int] = tuple(data["input"])  # type: ignore[assignment]
        self.device: str = str(data["device"])
        self.threads: int = int(data.get("threads", 1))
        cal = data.get("calibration") or {}
        self.a: float = float(cal.get("a", 1.0))
        self.b: float = float(cal.get("b", 0.0))

    @classmethod
    def load(cls, path: str | Path) -> LutTable:
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

    @property
    def table_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.data["entries"], sort_keys=True).encode()).hexdigest()[:12]

    def space(self) -> Any:
        from search_spaces import get_space

        d = dict(self.data.get("space") or {})
        if "name" not in d:
            raise ValueError(f"{self.source}: its 'space' names no family")
        return get_space(d.pop("name"), **d)

    def parts_sum(self, arch: Any, input_shape: tuple[int, int, int] | None = None) -> float:
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        if shape != self.input_shape:
            raise ValueError(
                f"{self.source}: table was built at input {'x'.join(map(str, self.input_shape))}, "
                f"asked for {'x'.join(map(str, shape))}; build a table for that input"
            )
        total = 0.0
        for p in arch_parts(arch, self.input_shape):  # type: ignore[arg-type]
            e = self.entries.get(p.key)
            if e is None:
                raise ValueError(f"{self.source}: no entry for {p.key} (arch outside the table's space?)")
            total += float(e["median_ms"])
        return total

    def predict(self, arch: Any, input_shape: tuple[int, int, int] | None = None) -> float:
        return self.a * self.parts_sum(arch, input_shape) + self.b

    def predict_macs(self, arch: Any) -> float:
        """The MACs-proportional baseline fitted on the same calibration archs."""
        from objectives.flops import analytic_macs

        mm = self.data.get("macs_model") or {"a": 0.0, "b": 0.0}
        return float(mm["a"]) * analytic_macs(arch, self.input_shape[1:]) / 1e6 + float(mm["b"])


def build_table(
    space: Any,
    input_shape: tuple[int, int, int],
    backend: Any,
    *,
    classes: int | None = None,
    calibrate: int = 5,
    limit: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    device_url: str | None = None,
) -> LutTable:
    """Time every distinct part on `backend`, then fit the calibration on `calibrate` whole archs."""
    from objectives.flops import analytic_macs

    shape = check_input_shape(input_shape)
    parts = enumerate_parts(space, shape, classes)
    total_parts = len(parts)
    if limit is not None:
        parts = parts[:limit]
    info = backend.device_info()
    entries: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for i, p in enumerate(parts):
        r = backend.measure(p.module(), p.input_shape)
        entries[p.key] = {
            "median_ms": r.median_ms, "p90_ms": r.p90_ms, "spread": r.spread, "n": r.n, "spec": p.to_dict(),
        }
        if progress:
            progress(i + 1, len(parts), p.key)
    parts_seconds = time.perf_counter() - t0
    data: dict[str, Any] = {
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
        "n_parts": len(parts),
        "n_parts_space": total_parts,
        "complete": len(parts) == total_parts,
        "entries": entries,
        "seconds_parts": parts_seconds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    table = LutTable(data)
    if calibrate and data["complete"]:
        archs = random_archs(space, calibrate, seed=seed + 1, in_channels=shape[0], classes=classes)
        sums, macs, measured = [], [], []
        for a in archs:
            sums.append(table.parts_sum(a))
            macs.append(analytic_macs(a, shape[1:]) / 1e6)
            measured.append(backend.measure(a, shape).median_ms)
        ca, cb = fit_line(sums, measured)
        ma, mb = fit_line(macs, measured)
        data["calibration"] = {"a": ca, "b": cb, "n": len(archs), "parts_sum_ms": sums, "measured_ms": measured}
        data["macs_model"] = {"a": ma, "b": mb, "unit": "ms per MMAC"}
        table = LutTable(data)
    return table


def validate_table(
    table: LutTable, backend: Any, n: int = 20, seed: int = 12345, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Measure `n` random archs of the table's space; compare the LUT and the MACs model to them."""
    space = table.space()
    c = table.input_shape[0]
    archs = random_archs(space, n, seed=seed, in_channels=c, classes=int(table.data.get("classes", space.num_classes)))
    measured, lut, macs = [], [], []
    for i, a in enumerate(archs):
        lut.append(table.predict(a))
        macs.append(table.predict_macs(a))
        measured.append(backend.measure(a, table.input_shape).median_ms)
        if progress:
            progress(i + 1, len(archs))
    return {
        "n": len(archs),
        "lut": accuracy_figures(lut, measured),
        "macs": accuracy_figures(macs, measured),
        "measured_ms": measured,
        "lut_ms": lut,
        "macs_ms": macs,
    }


class LutBackend:
    """Backend "lut": predicted latency from a table (no measurement; n = 0, spread = 0)."""

    name = "lut"

    def __init__(self, table: str | Path | LutTable, threads: int | None = None) -> None:
        self.table = table if isinstance(table, LutTable) else LutTable.load(table)
        if threads is not None and threads != self.table.threads:
            raise ValueError(f"{self.table.source}: table was measured with {self.table.threads} thread(s), not {threads}")
        self.threads = self.table.threads

    def device_info(self) -> dict[str, Any]:
        return dict(self.table.data.get("device_info") or {"fingerprint": self.table.device})

    def runtime(self) -> dict[str, str]:
        return {**{k: str(v) for k, v in self.table.data.get("runtime", {}).items()}, "lut": self.table.table_hash}

    def measure(self, arch_or_model: Any, input_shape: tuple[int, int, int]) -> LatencyResult:
        from .base import device_label

        if not isinstance(arch_or_model, ArchBase):
            raise ValueError("the lut backend predicts Arch objects only, not arbitrary models")
        shape = check_input_shape(input_shape)
        arch = arch_or_model
        if arch.in_channels != shape[0]:
            arch = arch.with_io(in_channels=shape[0], num_classes=arch.num_classes, small_input=arch.small_input)
        ms = self.table.predict(arch, shape)
        info = self.device_info()
        return LatencyResult(
            median_ms=ms, p90_ms=ms, spread=0.0, n=0, backend=self.name, device=self.table.device,
            threads=self.threads, runtime=self.runtime(), input_shape=shape, p10_ms=ms, min_ms=ms,
            machine=str(info.get("machine", "")), device_label=device_label(info), arch_id=arch.arch_id,
            extra={"predicted": True, "table": self.table.source},
        )


__all__ = [
    "LutBackend",
    "LutTable",
    "Part",
    "arch_parts",
    "build_table",
    "enumerate_parts",
    "random_archs",
    "validate_table",
]
