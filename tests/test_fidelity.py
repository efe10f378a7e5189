"""Reference sets, rank statistics and the proxy-fidelity runner's cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from objectives.ranking import (
    ReferenceEntry,
    baseline_scores,
    group_pairs,
    kendall_ci,
    load_reference,
    pair_share,
    rank_figures,
    shuffle_pairs,
)
from search_spaces import Arch, preset

SHARED = Path(__file__).resolve().parents[1] / ".." / ".." / "shared" / "reference" / "shufflenet_v1.md"


def _shared_table() -> tuple[dict[tuple[float, int], float], dict[tuple[float, int], float]]:
    """(Table 2 errors, Table 3 no-shuffle errors) parsed from the shared reference text
    (copied here as constants when the shared file is not reachable)."""
    t2 = {(1.0, g): e for g, e in zip((1, 2, 3, 4, 8), (33.6, 32.7, 32.6, 32.8, 32.4), strict=True)}
    t2 |= {(0.5, g): e for g, e in zip((1, 2, 3, 4, 8), (45.1, 44.4, 43.2, 41.6, 42.3), strict=True)}
    t2 |= {(0.25, g): e for g, e in zip((1, 2, 3, 4, 8), (57.1, 56.8, 55.0, 54.2, 52.7), strict=True)}
    t3 = {(1.0, 3): 34.5, (1.0, 8): 37.6, (0.5, 3): 45.7, (0.5, 8): 48.1, (0.25, 3): 56.3, (0.25, 8): 56.5}
    path = SHARED.resolve()
    if path.is_file():
        text = path.read_text()
        for label, w in (("1x", 1.0), ("0.5x", 0.5), ("0.25x", 0.25)):
            m = re.search(rf"^\| {re.escape(label)} \(\d+[^)]*\) \|(.*)\|$", text, re.M)
            assert m, f"row {label} not found in {path}"
            errs = [float(v) for v in m.group(1).split("|")]
            assert errs == [t2[(w, g)] for g in (1, 2, 3, 4, 8)]
        m = re.search(r"Without channel shuffle \(g=3 / g=8\): (.*)\.", text)
        assert m
        for part in m.group(1).split(","):
            label, vals = part.strip().split(" ", 1)
            w = {"1x": 1.0, "0.5x": 0.5, "0.25x": 0.25}[label]
            a, b = (float(v) for v in vals.split("/"))
            assert (a, b) == (t3[(w, 3)], t3[(w, 8)])
    return t2, t3


def test_bundled_reference_matches_shared_table() -> None:
    ref = load_reference("shufflenet_v1_imagenet")
    t2, t3 = _shared_table()
    assert len(ref.entries) == 21
    table2 = [e for e in ref.entries if e.tags["table"] == "2"]
    table3 = [e for e in ref.entries if e.tags["table"] == "3"]
    assert len(table2) == 15 and len(table3) == 6
    for e in table2:
        key = (e.tags["width"], e.tags["groups"])
        assert e.reference == pytest.approx(100 - t2[key])
        assert e.arch == preset(e.preset)
        assert e.tags["shuffle"] is True
    for e in table3:
        key = (e.tags["width"], e.tags["groups"])
        assert e.reference == pytest.approx(100 - t3[key])
        assert all(s.shuffle == "none" for s in e.arch.stages)
        partner = preset(f"shufflenet_v1_g{key[1]}_x{str(key[0]).replace('.', '_')}")
        assert [s.out_channels for s in e.arch.stages] == [s.out_channels for s in partner.stages]
    assert len(shuffle_pairs(ref.entries)) == 6


def _write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "ref.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("doc, match", [
    ({"name": "x", "source": "s", "metric": "m"}, r"field 'entries'"),
    ({"name": "", "source": "s", "metric": "m", "entries": []}, r"field 'name'"),
    ({"name": "x", "source": "s", "metric": "m", "entries": [
        {"id": "a", "preset": "shufflenet_v1_g3_x0_5", "reference": "high"},
        {"id": "b", "preset": "shufflenet_v1_g3_x1_0", "reference": 1}]}, r"entries\[0\]\.reference"),
    ({"name": "x", "source": "s", "metric": "m", "entries": [
        {"id": "a", "preset": "nope", "reference": 1},
        {"id": "b", "preset": "shufflenet_v1_g3_x1_0", "reference": 1}]}, r"entries\[0\]\.preset: unknown preset"),
    ({"name": "x", "source": "s", "metric": "m", "entries": [
        {"id": "a", "reference": 1}, {"id": "b", "preset": "shufflenet_v1_g3_x1_0", "reference": 1}]},
     r"entries\[0\]: give exactly one"),
    ({"name": "x", "source": "s", "metric": "m", "entries": [
        {"id": "a", "arch": {"stages": []}, "reference": 1},
        {"id": "b", "preset": "shufflenet_v1_g3_x1_0", "reference": 1}]}, r"entries\[0\]\.arch"),
    ({"name": "x", "source": "s", "metric": "m", "entries": [
        {"id": "a", "preset": "shufflenet_v1_g3_x0_5", "reference": 1},
        {"id": "a", "preset": "shufflenet_v1_g3_x1_0", "reference": 1}]}, r"entries\[1\]\.id: duplicate"),
])
def test_bad_reference_file_one_line(tmp_path: Path, doc: object, match: str) -> None:
    p = _write(tmp_path, doc)
    with pytest.raises(ValueError, match=match) as ei:
        load_reference(p)
    assert "\n" not in str(ei.value) and str(p) in str(ei.value)


def test_user_reference_file_with_arch(tmp_path: Path) -> None:
    a = preset("shufflenet_v1_g3_x0_5")
    p = _write(tmp_path, {"name": "mine", "source": "my runs", "metric": "top-1", "entries": [
        {"id": "a", "arch": a.to_dict(), "reference": 70.0},
        {"id": "b", "preset": "shufflenet_v1_g3_x1_0", "reference": 75.0}]})
    ref = load_reference(str(p))
    assert ref.entries[0].arch == a and Arch.from_dict(a.to_dict()) == a
    with pytest.raises(ValueError, match="unknown reference set"):
        load_reference("no_such_set")


def test_tau_perfect_reversed_tied() -> None:
    ref = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    tau, lo, hi = kendall_ci([10, 20, 30, 40, 50, 60], ref, n_boot=200)
    assert tau == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    tau, lo, hi = kendall_ci([6, 5, 4, 3, 2, 1], ref, n_boot=200)
    assert tau == pytest.approx(-1.0) and hi == pytest.approx(-1.0)
    tau, _, _ = kendall_ci([1, 1, 1, 1, 1, 1], ref, n_boot=200)
    assert tau != tau  # a constant score ranks nothing: NaN, not 0 or 1
    tau, _, _ = kendall_ci([1, 1, 2, 2, 3, 3], ref, n_boot=200)
    assert 0.8 < tau < 1.0  # tau-b with ties in the score


def test_vectorised_tau_matches_scipy() -> None:
    import numpy as np
    from scipy.stats import kendalltau

    from objectives.ranking import _tau_b_rows

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 12).astype(float), rng.normal(size=12)
    idx = rng.integers(0, 12, (50, 12))
    ours = _tau_b_rows(x, y, idx)
    for k in range(50):
        xs, ys = x[idx[k]], y[idx[k]]
        ref = float("nan") if len(set(xs)) < 2 else kendalltau(xs, ys).statistic
        assert (np.isnan(ours[k]) and np.isnan(ref)) or ours[k] == pytest.approx(ref)


def test_interval_contains_point_and_is_seeded() -> None:
    ref = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    score = [2, 1, 3, 5, 4, 6, 9, 7, 8, 10]
    a = kendall_ci(score, ref, n_boot=500, seed=3)
    b = kendall_ci(score, ref, n_boot=500, seed=3)
    assert a == b
    tau, lo, hi = a
    assert lo <= tau <= hi and lo < hi and 0.5 < tau < 1.0


def _entries() -> list[ReferenceEntry]:
    a = preset("shufflenet_v1_g3_x0_5")
    rows = [  # (groups, width, shuffle, reference)
        (3, 1.0, True, 67.4), (8, 1.0, True, 67.6), (3, 0.5, True, 56.8), (8, 0.5, True, 57.7),
        (3, 1.0, False, 65.5), (8, 0.5, False, 51.9),
    ]
    return [ReferenceEntry(f"e{i}", a, r, {"groups": g, "width": w, "shuffle": s}) for i, (g, w, s, r) in enumerate(rows)]


def test_pairs_and_baselines() -> None:
    es = _entries()
    assert sorted(shuffle_pairs(es)) == [(0, 4), (3, 5)]
    assert sorted(group_pairs(es)) == [(1, 0), (3, 2)]  # (better, worse) within a width row
    # MACs/params are equal with and without shuffle: a tie is never counted right
    assert pair_share([1, 1, 1, 1, 1, 1], shuffle_pairs(es)) == (0, 2)
    proxy = [0.5, 0.6, 0.3, 0.4, 0.45, 0.2]
    f = rank_figures("proxy", proxy, es, n_boot=100)
    assert (f.shuffle_right, f.shuffle_pairs, f.group_right, f.group_pairs) == (2, 2, 2, 2)
    assert f.tau_low <= f.tau <= f.tau_high
    rows = [{"mmacs": m, "params": p, "zero_cost": {"naswot": n, "synflow": float("nan")}}
            for m, p, n in zip([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6], strict=True)]
    b = baseline_scores(rows)
    assert set(b) == {"mmacs", "params", "naswot"}  # a non-finite zero-cost score is left out
    ref = [1, 2, 3, 4, 5, 6]
    assert kendall_ci(b["mmacs"], ref, n_boot=10)[0] == pytest.approx(1.0)
    assert kendall_ci(b["params"], ref, n_boot=10)[0] == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- runner and cache

TINY = {
    "name": "tiny", "budget": {"max_mmacs": 40},
    "space": {"groups": [1, 3], "widths": [0.25], "repeats": [[1, 1], [1, 1], [1, 1]]},
    "objectives": ["accuracy", "mmacs", "latency_ms"],
    "data": {"name": "default", "train_size": 40, "val_size": 20, "resolution": 8, "seed": 0},
    "train": {"epochs": 1, "batch_size": 20, "max_batches_per_epoch": 1, "seed": 0, "threads": 1},
    "latency": {"backend": "onnxruntime"},
}


def _shallow(name: str) -> dict:
    """A paper preset cut to one unit per stage (keeps the tests' zero-cost scoring cheap)."""
    from dataclasses import replace

    a = preset(name)
    return replace(a, stages=tuple(replace(s, repeats=1) for s in a.stages)).to_dict()


def _tiny_reference(tmp_path: Path) -> Path:
    p = tmp_path / "tiny_ref.json"
    p.write_text(json.dumps({"name": "tiny", "source": "test", "metric": "made up", "entries": [
        {"id": "a", "arch": _shallow("shufflenet_v1_g1_x0_25"), "reference": 1.0,
         "tags": {"groups": 1, "width": 0.25, "shuffle": True}},
        {"id": "b", "arch": _shallow("shufflenet_v1_g3_x0_25"), "reference": 2.0,
         "tags": {"groups": 3, "width": 0.25, "shuffle": True}},
    ]}))
    return p


def _exp(**over: dict) -> object:
    from nas.experiment import validate_experiment

    raw = json.loads(json.dumps(TINY))
    for section, vals in over.items():
        raw[section].update(vals)
    return validate_experiment(raw, "tiny.yaml")


def test_proxy_hash_covers_every_recipe_field() -> None:
    from nas.analysis.fidelity_run import proxy_hash
    from nas.experiment import DataConfig, TrainSection

    base = _exp()
    h0 = proxy_hash(base)
    assert proxy_hash(_exp()) == h0
    changes = {"data": {"train_size": 39, "val_size": 21, "resolution": 9, "seed": 1, "name": "digits"},
               "train": {"epochs": 2, "batch_size": 19, "optimizer": "adamw", "lr": 0.049, "momentum": 0.8,
                         "weight_decay": 1e-4, "schedule": "linear", "label_smoothing": 0.1, "seed": 1,
                         "threads": 2, "max_batches_per_epoch": 2, "nesterov": True, "warmup_steps": 1,
                         "bn_recalibrate": 1, "device": "cpu", "amp": False, "deterministic": True}}
    assert set(changes["train"]) == set(TrainSection.model_fields)  # a new recipe field must be listed here
    assert set(changes["data"]) | {"root", "download"} == set(DataConfig.model_fields)
    for section, fields in changes.items():
        for k, v in fields.items():
            assert proxy_hash(_exp(**{section: {k: v}})) != h0, f"{section}.{k} does not change the proxy hash"
    # what does not change the trained accuracy does not invalidate the cache
    assert proxy_hash(_exp(latency={"threads": 2}, budget={"max_mmacs": 10})) == h0


def test_cache_is_free_on_rerun_and_never_stale(tmp_path: Path) -> None:
    from nas.analysis.fidelity_run import run_fidelity

    ref = load_reference(_tiny_reference(tmp_path))
    cache = tmp_path / "cache"
    first = run_fidelity(_exp(), ref, cache_dir=cache)
    assert first.cached == 0 and len(first.rows) == 2
    again = run_fidelity(_exp(), ref, cache_dir=cache)
    assert again.cached == 2
    assert [r["accuracy"] for r in again.rows] == [r["accuracy"] for r in first.rows]
    # a poisoned cache entry is served only for its own recipe hash
    path = next(cache.glob("*/*.json"))
    row = json.loads(path.read_text())
    path.write_text(json.dumps({**row, "accuracy": 0.123456}))
    assert 0.123456 in [r["accuracy"] for r in run_fidelity(_exp(), ref, cache_dir=cache).rows]
    changed = run_fidelity(_exp(train={"lr": 0.02}), ref, cache_dir=cache)
    assert changed.cached == 0 and 0.123456 not in [r["accuracy"] for r in changed.rows]
    assert changed.proxy_hash != first.proxy_hash
    names = [f.name for f in first.figures]
    assert names[:3] == ["proxy (accuracy)", "mmacs", "params"] and {"naswot", "grad_norm"} <= set(names)


def test_naswot_signal_trains_nothing(tmp_path: Path) -> None:
    from nas.analysis.fidelity_run import proxy_hash, run_fidelity
    from nas.pipeline.evaluate import evaluate

    exp = _exp()
    nw = _exp(**{"data": {}})
    nw = type(nw).model_validate({**nw.model_dump(), "objectives": ["naswot", "mmacs"], "latency": {"backend": "none"}})
    assert nw.quality == "naswot" and not nw.needs_training and exp.quality == "accuracy"
    assert proxy_hash(nw) != proxy_hash(exp)  # a no-training row is never served to a training recipe
    res = evaluate(Arch.from_dict(_shallow("shufflenet_v1_g3_x0_25")), nw, run_dir=tmp_path)
    assert set(res.values) == {"naswot", "mmacs"} and "accuracy" not in res.attrs and res.attrs["time_train_s"] == 0.0
    run = run_fidelity(nw, load_reference(_tiny_reference(tmp_path)), cache_dir=tmp_path / "c")
    names = [f.name for f in run.figures]
    assert names[0] == "proxy (naswot)" and "naswot" not in names[1:] and run.signal == "naswot"
    assert [r["signal"] for r in run.rows] == [r["naswot"] for r in run.rows]
    # the search's naswot is the mean over draws; its first draw is the single-batch baseline score
    import torch

    from nas.pipeline.evaluate import proxy_data
    from objectives.zero_cost import naswot, naswot_mean
    from search_spaces import build_model

    proxy = Arch.from_dict(_shallow("shufflenet_v1_g3_x0_25")).for_proxy(in_channels=1, num_classes=10, resolution=8)
    x = proxy_data(nw).train.tensors[0]
    torch.manual_seed(nw.train.seed)
    first = naswot(build_model(proxy), x[:40])
    assert naswot_mean(proxy, x, seed=nw.train.seed, draws=1) == pytest.approx(first)
    assert res.values["naswot"] == pytest.approx(naswot_mean(proxy, x, seed=nw.train.seed))


def test_cli_fidelity_json_plots_and_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna
    import yaml

    from nas.cli import main

    exp_path = tmp_path / "tiny.yaml"
    exp_path.write_text(yaml.safe_dump(TINY))
    ref = _tiny_reference(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    png, html = tmp_path / "f.png", tmp_path / "f.html"
    rc = main(["fidelity", str(exp_path), "--reference", str(ref), "--cache", str(tmp_path / "c"), "--json",
               "--plot", str(png), "--plot", str(html), "--study", "s", "--storage", url])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and out["figures"][0]["name"] == "proxy (accuracy)" and "verdict" in out
    assert png.stat().st_size > 1000 and "plotly" in html.read_text()[:100000].lower()
    stored = optuna.load_study(study_name="s", storage=url).user_attrs["fidelity"]
    assert stored["n"] == 2 and "mmacs" in stored["baselines"]
    from nas.analysis.fidelity_run import describe_summary

    assert "Kendall tau" in (describe_summary(stored) or "")
    assert main(["status", "s", "--storage", url]) == 0
    assert "proxy fidelity vs tiny" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["fidelity", "nowhere.yaml"], "nowhere.yaml: no such file"),
    (["fidelity", "EXP", "--reference", "nope"], "argument --reference: unknown reference set"),
    (["fidelity", "EXP", "--only", "table9/"], "argument --only"),
    (["fidelity", "EXP", "--plot", "x.svg"], "argument --plot"),
    (["fidelity", "EXP", "--study", "missing"], "runs/missing/study.db"),
])
def test_cli_fidelity_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                match: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from nas.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(TINY))
    argv = [str(tmp_path / "e.yaml") if a == "EXP" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err


def test_against_a_longer_protocol(tmp_path: Path) -> None:
    from nas.analysis.fidelity_run import run_fidelity

    ref = load_reference(_tiny_reference(tmp_path))
    long = _exp(train={"max_batches_per_epoch": 2, "epochs": 2})
    run = run_fidelity(_exp(), ref, cache_dir=tmp_path / "c", against=long)
    assert run.reference.name == "tiny (longer protocol)" and run.extra["against"]["experiment"] == "tiny"
    long_rows = run_fidelity(long, ref, cache_dir=tmp_path / "c").rows  # from the cache
    assert [r["reference"] for r in run.rows] == [r["accuracy"] for r in long_rows]


def test_search_on_embedded_data_says_so_plainly() -> None:
    from nas.analysis.fidelity_run import search_note

    note = search_note(_exp())
    assert note is not None and "no signal ranks" in note and "tau 0.8" in note and "CIFAR-10" in note
    cifar = _exp(data={"name": "cifar10", "resolution": None, "root": "/nowhere"})
    assert search_note(cifar) is None


def test_cli_fidelity_unwritable_cache_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from nas.cli import main

    (tmp_path / "e.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "afile").write_text("x")
    rc = main(["fidelity", str(tmp_path / "e.yaml"), "--reference", str(_tiny_reference(tmp_path)),
               "--cache", str(tmp_path / "afile" / "sub")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--cache" in err and "cannot write" in err and "\n" not in err


# --------------------------------------------------------------------------- references trained here (seeds)


def _seeded_doc(**entry_over: object) -> dict:
    a = {"id": "a", "preset": "shufflenet_v1_g3_x0_25", "reference": 80.5, "seeds": {"0": 80.0, "1": 81.0},
         "spread": 1.0, "tags": {"groups": 3, "width": 0.25}}
    b = {"id": "b", "preset": "shufflenet_v1_g8_x0_25", "reference": 82.0, "seeds": {"0": 82.5, "1": 81.5},
         "spread": 1.0, "tags": {"groups": 8, "width": 0.25}}
    c = {"id": "c", "preset": "shufflenet_v1_g3_x0_5", "reference": 85.0, "seeds": {"0": 85.5, "1": 84.5},
         "spread": 1.0, "tags": {"groups": 3, "width": 0.5}}
    a.update(entry_over)
    return {"name": "mine", "source": "s", "metric": "m", "recipe": {"train": {"epochs": 3}},
            "figures": {"seed_tau": 1.0}, "build": {"wall_s": 1.0}, "entries": [a, b, c]}


def test_reference_with_seeds_and_ceiling(tmp_path: Path) -> None:
    ref = load_reference(_write(tmp_path, _seeded_doc()))
    assert ref.entries[0].seeds == {"0": 80.0, "1": 81.0} and ref.meta["recipe"]["train"]["epochs"] == 3
    ceiling = ref.seed_ceiling()
    assert ceiling is not None and ceiling.n == 3
    # seed 1 orders a < b < c exactly as seed 0 does (81 < 81.5 < 84.5 vs 80 < 82.5 < 85.5)
    assert ceiling.tau == pytest.approx(1.0) and ceiling.name == "seed 1 vs seed 0 (ceiling)"
    assert ref.subset(["a", "c"]).seed_ceiling() is not None and ref.subset(["a", "c"]).meta == ref.meta
    assert load_reference("shufflenet_v1_imagenet").seed_ceiling() is None  # a published table has no seeds


@pytest.mark.parametrize("over, match", [
    ({"reference": 90.0}, r"entries\[0\]\.reference: must be the mean of its seeds \(80\.500\)"),
    ({"spread": 3.0}, r"entries\[0\]\.spread: must be the seeds' max minus min"),
    ({"seeds": {"0": 80.5}}, r"entries\[0\]\.seeds: must be an object of at least 2"),
    ({"seeds": {"0": 80.0, "1": "x"}}, r"entries\[0\]\.seeds"),
    ({"color": 1}, r"entries\[0\]: unknown field\(s\) \['color'\]"),
])
def test_bad_seeded_reference_one_line(tmp_path: Path, over: dict, match: str) -> None:
    p = _write(tmp_path, _seeded_doc(**over))
    with pytest.raises(ValueError, match=match) as ei:
        load_reference(p)
    assert "\n" not in str(ei.value) and str(p) in str(ei.value)
    doc = _seeded_doc()
    doc["recipe"] = "long"
    with pytest.raises(ValueError, match="field 'recipe' must be an object"):
        load_reference(_write(tmp_path, doc))


def test_fashion_mnist_reference_is_the_quickstart_space() -> None:
    """The shipped stand-alone set: >= 30 sampled networks of the quickstart space under its budget,
    every paper preset under it, >= 2 seeds each with their mean and spread, and its own figures."""
    from nas.cli.commands.fidelity import default_reference
    from nas.experiment import load_experiment
    from objectives.flops import analytic_macs
    from objectives.ranking import bundled_references

    root = Path(__file__).resolve().parents[1]
    quick = load_experiment(root / "experiments" / "quickstart.yaml")
    space = quick.build_space()
    shipped = [n for n in bundled_references() if n.startswith("shufflenet_v1_fashion_mnist")]
    assert len(shipped) == 1, shipped  # the complete set, or (a build cut short) the one marked partial
    ref = load_reference(shipped[0])
    figs = ref.meta["figures"]
    budget = quick.budget.max_mmacs
    sampled = [e for e in ref.entries if e.preset is None]
    presets = {e.preset for e in ref.entries if e.preset is not None}
    if shipped[0].endswith("_partial"):  # never presented as complete
        assert figs["complete"] is False and ref.name == shipped[0] and "PARTIAL" in ref.source
        assert figs["networks"] == len(ref.entries) < figs["expected_networks"]
    else:
        assert figs["complete"] is True and figs["networks"] == len(ref.entries) == figs["expected_networks"]
        assert len(sampled) >= 30
    for e in ref.entries:
        assert space.contains(e.arch) or e.preset is not None, e.id
        assert analytic_macs(e.arch, (224, 224)) / 1e6 <= budget, e.id
        assert len(e.seeds) >= 2 and e.reference == pytest.approx(sum(e.seeds.values()) / len(e.seeds), abs=0.01)
    under = {f"shufflenet_v1_g{g}_x{w}" for g in (1, 2, 3, 4, 8) for w in ("0_25", "0_5")
             if analytic_macs(preset(f"shufflenet_v1_g{g}_x{w}"), (224, 224)) / 1e6 <= budget}
    assert len(under) == 9 and presets == under  # g8 0.5x (40.5 MMACs) is the one over the budget
    # coverage: every group count, width and every repeat value of each stage the budget allows
    assert {e.tags["groups"] for e in sampled} == set(space.groups)
    assert {e.tags["width"] for e in sampled} == {0.25, 0.5, 0.75}
    if figs["complete"]:
        for i, (lo, hi) in enumerate(space.repeats):
            assert {s.stages[i].repeats for s in (e.arch for e in sampled)} == set(range(lo, hi + 1))
    ceiling = ref.seed_ceiling()
    assert ceiling is not None and figs["seed_tau"] == pytest.approx(ceiling.tau, abs=1e-3)
    assert ref.meta["recipe"]["data"]["name"] == "fashion_mnist" and ref.meta["build"]["wall_s"] > 0
    default = default_reference(load_experiment(root / "experiments" / "fashion_mnist.yaml"))
    assert default == (ref.name if figs["complete"] else "shufflenet_v1_imagenet")


def test_cli_fidelity_reports_the_seed_ceiling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from nas.cli import main

    exp_path = tmp_path / "tiny.yaml"
    exp_path.write_text(yaml.safe_dump(TINY))
    doc = json.loads(_tiny_reference(tmp_path).read_text())
    for e, seeds in zip(doc["entries"], ({"0": 0.5, "1": 1.5}, {"0": 1.8, "1": 2.2}), strict=True):
        e["seeds"] = seeds
    ref = _write(tmp_path, doc)
    cache = str(tmp_path / "c")
    assert main(["fidelity", str(exp_path), "--reference", str(ref), "--cache", cache, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ceiling"]["name"] == "seed 1 vs seed 0 (ceiling)" and out["ceiling"]["tau"] == pytest.approx(1.0)
    assert main(["fidelity", str(exp_path), "--reference", str(ref), "--cache", cache]) == 0
    assert "seed 1 vs seed 0 (ceiling)" in capsys.readouterr().out
    plain = _tiny_reference(tmp_path)
    assert main(["fidelity", str(exp_path), "--reference", str(plain), "--cache", cache, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ceiling"] is None
