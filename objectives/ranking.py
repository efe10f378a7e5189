"""How well a cheap signal ranks architectures: reference sets and rank statistics.

A reference set is a JSON file (`objectives/references/<name>.json`, or a user's own file)
listing architectures with a trusted figure for each (higher is better): the ShuffleNet v1
paper's ImageNet top-1, or a user's longer training runs. Each entry names a registered
preset ("preset") or carries a full `Arch` dict ("arch"), plus free "tags" that the pair
statistics read (groups, width, shuffle).

The statistics compare any score (a proxy's accuracy, MACs, params, a zero-cost score)
with the reference: Kendall tau with a seeded bootstrap 95% interval, Spearman rho, the
share of "shuffle helps" pairs the score orders as the reference does, and the share of
equal-MACs group pairs (same width row, different groups) it orders as the reference does.
A tie in the score never counts as right: a signal that cannot tell two networks apart has
not ranked them.

A set built from the project's own stand-alone training (bench/fashion_reference.py) also
records, per entry, each seed's figure ("seeds", the mean being "reference") and their
"spread", and at the top level its "recipe", "build" and its own "figures": what any proxy
is measured against then includes the seed-vs-seed ceiling (`ReferenceSet.seed_ceiling`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ReferenceEntry",
    "ReferenceSet",
    "RankFigures",
    "bundled_references",
    "group_pairs",
    "kendall_ci",
    "load_reference",
    "pair_share",
    "rank_figures",
    "shuffle_pairs",
]


@dataclass(frozen=True)
class ReferenceEntry:
    """One architecture with its trusted figure (higher is better)."""

    id: str
    arch: Any  # search_spaces.Arch (deploy-shaped as written in the file)
    reference: float
    tags: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    #: each training seed's figure (the reference is their mean); empty for a published table
    seeds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceSet:
    name: str
    source: str
    metric: str
    entries: tuple[ReferenceEntry, ...]
    path: str = ""
    #: how the set was made (recipe, build, figures) when it was trained here; free-form
    meta: dict[str, Any] = field(default_factory=dict)

    def subset(self, ids: Sequence[str]) -> ReferenceSet:
        keep = set(ids)
        return ReferenceSet(self.name, self.source, self.metric,
                            tuple(e for e in self.entries if e.id in keep), self.path, self.meta)

    def seed_ceiling(self, *, seed: int = 0) -> RankFigures | None:
        """How one training seed ranks these entries against another (the first two seeds every
        entry has): no proxy can be expected to rank them better. None without per-seed figures."""
        common = set.intersection(*(set(e.seeds) for e in self.entries)) if self.entries else set()
        if len(common) < 2 or len(self.entries) < 2:
            return None
        a, b = sorted(common, key=lambda k: (len(k), k))[:2]
        other = [ReferenceEntry(e.id, e.arch, e.seeds[a], e.tags, e.preset) for e in self.entries]
        return rank_figures(f"seed {b} vs seed {a} (ceiling)", [e.seeds[b] for e in self.entries], other, seed=seed)


def bundled_references() -> list[str]:
    """Names of the reference sets shipped with the package."""
    root = resources.files("objectives") / "references"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def _fail(where: str, msg: str) -> ValueError:
    return ValueError(f"{where}: {msg}")


def load_reference(name_or_path: str | Path) -> ReferenceSet:
    """A bundled reference set by name, or a JSON file by path; ValueError (one line) if invalid."""
    from search_spaces import Arch, preset

    text_name = str(name_or_path)
    path = Path(text_name).expanduser()
    if text_name in bundled_references():
        src = resources.files("objectives") / "references" / f"{text_name}.json"
        where, text = f"reference {text_name}", src.read_text()
    elif path.suffix == ".json" or path.exists():
        where = str(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise _fail(where, "no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise _fail(where, f"cannot read ({type(e).__name__}: {e})") from None
    else:
        raise ValueError(f"unknown reference set {text_name!r}: not a bundled name "
                         f"({', '.join(bundled_references())}) nor an existing .json file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(where, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(doc, dict):
        raise _fail(where, f"top level must be an object with name, source, metric, entries; got {type(doc).__name__}")
    for key in ("name", "source", "metric"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise _fail(where, f"field '{key}' must be a non-empty string, got {doc.get(key)!r}")
    raw = doc.get("entries")
    if not isinstance(raw, list) or len(raw) < 2:
        raise _fail(where, f"field 'entries' must be a list of at least 2 entries, got {raw!r:.60}")
    unknown = sorted(set(doc) - {"name", "source", "metric", "entries", *_META})
    if unknown:
        raise _fail(where, f"unknown field(s) {unknown}; known: name, source, metric, entries, {', '.join(_META)}")
    for key in _META:
        if key in doc and not isinstance(doc[key], dict):
            raise _fail(where, f"field '{key}' must be an object, got {type(doc[key]).__name__}")
    entries: list[ReferenceEntry] = []
    seen: set[str] = set()
    for i, e in enumerate(raw):
        at = f"{where}: entries[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{at}: must be an object, got {type(e).__name__}")
        bad = sorted(set(e) - {"id", "preset", "arch", "reference", "tags", "seeds", "spread"})
        if bad:
            raise ValueError(f"{at}: unknown field(s) {bad}; known: id, preset, arch, reference, tags, seeds, spread")
        eid = e.get("id")
        if not isinstance(eid, str) or not eid:
            raise ValueError(f"{at}.id: must be a non-empty string, got {eid!r}")
        if eid in seen:
            raise ValueError(f"{at}.id: duplicate id {eid!r}")
        seen.add(eid)
        ref = e.get("reference")
        if isinstance(ref, bool) or not isinstance(ref, (int, float)) or not math.isfinite(ref):
            raise ValueError(f"{at}.reference: must be a finite number, got {ref!r}")
        tags = e.get("tags", {})
        if not isinstance(tags, dict):
            raise ValueError(f"{at}.tags: must be an object, got {type(tags).__name__}")
        seeds = _seed_figures(e, at)
        if ("preset" in e) == ("arch" in e):
            raise ValueError(f"{at}: give exactly one of 'preset' (a preset name) or 'arch' (an Arch object)")
        if "preset" in e:
            try:
                arch = preset(str(e["preset"]))
            except ValueError as err:
                raise ValueError(f"{at}.preset: {err}") from None
        else:
            try:
                arch = Arch.from_dict(e["arch"], source=f"{at}.arch")
            except (ValueError, TypeError) as err:
                raise ValueError(str(err) if str(err).startswith(at) else f"{at}.arch: {err}") from None
        entries.append(ReferenceEntry(eid, arch, float(ref), dict(tags), e.get("preset"), seeds))
    return ReferenceSet(doc["name"], doc["source"], doc["metric"], tuple(entries), where,
                        {k: doc[k] for k in _META if k in doc})


#: optional top-level objects of a set trained here (bench/fashion_reference.py)
_META = ("recipe", "build", "figures")


def _finite(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _seed_figures(e: dict[str, Any], at: str) -> dict[str, float]:
    """An entry's optional per-seed figures: at least 2, finite, their mean the reference, and
    "spread" (when given) their max minus min, so a hand-edited file cannot disagree with itself."""
    seeds = e.get("seeds")
    if seeds is None:
        if "spread" in e:
            raise ValueError(f"{at}.spread: given without 'seeds' (the spread is over the seeds' figures)")
        return {}
    if not isinstance(seeds, dict) or len(seeds) < 2 or not all(_finite(v) for v in seeds.values()):
        raise ValueError(f"{at}.seeds: must be an object of at least 2 seed -> finite number, got {seeds!r:.80}")
    vals = [float(v) for v in seeds.values()]
    mean = sum(vals) / len(vals)
    if abs(mean - float(e["reference"])) > 0.01:
        raise ValueError(f"{at}.reference: must be the mean of its seeds ({mean:.3f}), got {e['reference']!r}")
    spread = e.get("spread")
    if spread is not None and (not _finite(spread) or abs(float(spread) - (max(vals) - min(vals))) > 0.01):
        raise ValueError(f"{at}.spread: must be the seeds' max minus min ({max(vals) - min(vals):.3f}), "
                         f"got {spread!r}")
    return {str(k): float(v) for k, v in seeds.items()}


# ----------------------------------------------------------------------------- statistics


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(kendalltau(x, y).statistic)


def _tau_b_rows(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Kendall tau-b of x[idx[k]] vs y[idx[k]] for every row k at once (the bootstrap; scipy's
    kendalltau per resample costs ~1 ms, this ~1 us). NaN where a resample is constant."""
    xs, ys = x[idx], y[idx]
    sx = np.sign(xs[:, :, None] - xs[:, None, :])
    sy = np.sign(ys[:, :, None] - ys[:, None, :])
    num = (sx * sy).sum(axis=(1, 2))
    den = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def kendall_ci(score: Sequence[float], reference: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
               level: float = 0.95) -> tuple[float, float, float]:
    """(tau, low, high): Kendall tau-b and a percentile bootstrap interval over the entries (seeded)."""
    x, y = np.asarray(score, dtype=float), np.asarray(reference, dtype=float)
    tau = _tau(x, y)
    if math.isnan(tau):
        return tau, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    b = _tau_b_rows(x, y, rng.integers(0, len(x), (n_boot, len(x))))
    b = b[~np.isnan(b)]
    if len(b) == 0:
        return tau, float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = float(np.quantile(b, alpha)), float(np.quantile(b, 1.0 - alpha))
    return tau, min(low, tau), max(high, tau)


def shuffle_pairs(entries: Sequence[ReferenceEntry]) -> list[tuple[int, int]]:
    """(with shuffle, without shuffle) index pairs: same groups and width, tags.shuffle differs."""
    by_key: dict[tuple[Any, Any], dict[bool, int]] = {}
    for i, e in enumerate(entries):
        if "shuffle" in e.tags and "groups" in e.tags and "width" in e.tags:
            by_key.setdefault((e.tags["groups"], e.tags["width"]), {})[bool(e.tags["shuffle"])] = i
    return [(d[True], d[False]) for d in by_key.values() if True in d and False in d]


def group_pairs(entries: Sequence[ReferenceEntry]) -> list[tuple[int, int]]:
    """(better, worse) index pairs within one width row (equal MACs), among shuffled networks,
    where the reference orders them (equal references are left out)."""
    rows: dict[Any, list[int]] = {}
    for i, e in enumerate(entries):
        if "width" in e.tags and "groups" in e.tags and e.tags.get("shuffle", True):
            rows.setdefault(e.tags["width"], []).append(i)
    out = []
    for idx in rows.values():
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                ri, rj = entries[i].reference, entries[j].reference
                if ri != rj:
                    out.append((i, j) if ri > rj else (j, i))
    return out


def pair_share(score: Sequence[float], pairs: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(right, total): pairs (better, worse) where the score is strictly higher for the better one."""
    right = sum(1 for i, j in pairs if score[i] > score[j])
    return right, len(pairs)


@dataclass(frozen=True)
class RankFigures:
    """How one score ranks a reference set."""

    name: str
    n: int
    tau: float
    tau_low: float
    tau_high: float
    rho: float
    shuffle_right: int
    shuffle_pairs: int
    group_right: int
    group_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def rank_figures(name: str, score: Sequence[float], entries: Sequence[ReferenceEntry], *,
                 seed: int = 0, n_boot: int = 2000) -> RankFigures:
    """All figures for `score` (one value per entry, higher = predicted better)."""
    from scipy.stats import spearmanr

    if len(score) != len(entries):
        raise ValueError(f"{name}: {len(score)} scores for {len(entries)} reference entries")
    ref = [e.reference for e in entries]
    tau, lo, hi = kendall_ci(score, ref, seed=seed, n_boot=n_boot)
    x, y = np.asarray(score, dtype=float), np.asarray(ref, dtype=float)
    rho = float("nan") if math.isnan(tau) else float(spearmanr(x, y).statistic)
    sr, sn = pair_share(score, shuffle_pairs(entries))
    gr, gn = pair_share(score, group_pairs(entries))
    return RankFigures(name, len(entries), tau, lo, hi, rho, sr, sn, gr, gn)


def baseline_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The free signals per entry (higher = predicted better): MACs, params, and the zero-cost
    scores when every row has them."""
    out: dict[str, list[float]] = {"mmacs": [float(r["mmacs"]) for r in rows],
                                   "params": [float(r["params"]) for r in rows]}
    zc = [r.get("zero_cost") or {} for r in rows]
    for key in sorted(set.intersection(*(set(z) for z in zc)) if zc else set()):
        vals = [float(z[key]) for z in zc]
        if all(math.isfinite(v) for v in vals):
            out[key] = vals
    return out
