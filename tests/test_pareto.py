"""Pareto set, hypervolume, knee (hand-computed cases) and `shufflenas pareto` on a real SQLite study."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import pytest

from nas.analysis.frame import trials_frame
from nas.analysis.front import (
    dominates,
    hypervolume,
    hypervolume_history,
    knee_point,
    pareto_front,
    pareto_info,
    reference_point,
)
from nas.cli import main
from nas.storage import open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

# ------------------------------------------------------------------------------ hand cases


def _df(rows: list[tuple], names: list[str], directions: list[str]) -> pd.DataFrame:
    df = pd.DataFrame([dict(zip(names, r, strict=False)) for r in rows])
    df.insert(0, "number", range(len(df)))
    df.insert(1, "state", "COMPLETE")
    df["reference_preset"] = None
    df.attrs.update(objectives=names, directions=directions, units={}, budget={}, study="hand")
    return df


def test_front_and_hypervolume_2d_mixed_directions() -> None:
    names, dirs = ["accuracy", "mmacs"], ["maximize", "minimize"]
    df = _df([(0.9, 100), (0.8, 50), (0.7, 60), (0.95, 150), (0.8, 50)], names, dirs)
    df.loc[4, "state"] = "PRUNED"  # not COMPLETE: never on the front
    front = pareto_front(df, names, dirs)
    assert sorted(front["number"]) == [0, 1, 3]
    # rectangles [mmacs, 200] x [0, acc]: 150*0.8 + 100*0.1 + 50*0.05
    assert hypervolume(front[names], dirs, [0.0, 200.0]) == pytest.approx(132.5)
    assert hypervolume(df[names], dirs, [0.0, 200.0]) == pytest.approx(132.5)  # dominated points add nothing
    assert hypervolume([[0.5, 300]], dirs, [0.0, 200.0]) == 0.0  # beyond the reference point


def test_front_and_hypervolume_3d_mixed_directions() -> None:
    names, dirs = ["a", "b", "c"], ["minimize", "minimize", "maximize"]
    df = _df([(1, 1, 1), (2, 2, 2), (2.5, 2.5, 0.5)], names, dirs)
    assert sorted(pareto_front(df, names, dirs)["number"]) == [0, 1]
    # boxes 2*2*1 + 1*1*2 - overlap 1*1*1
    assert hypervolume(df[names], dirs, [3, 3, 0]) == pytest.approx(5.0)


def test_reference_presets_are_not_on_the_front() -> None:
    names, dirs = ["accuracy", "mmacs"], ["maximize", "minimize"]
    df = _df([(0.9, 100), (0.99, 10)], names, dirs)
    df.loc[1, "reference_preset"] = "shufflenet_v1_g3_x0_5"
    assert pareto_front(df, names, dirs)["number"].to_list() == [0]
    info = pareto_info(df)
    assert info.references["number"].to_list() == [1]


def test_knee_is_closest_to_ideal_after_scaling() -> None:
    names, dirs = ["x", "y"], ["minimize", "minimize"]
    df = _df([(0, 10), (1, 2), (10, 0)], names, dirs)
    front = pareto_front(df, names, dirs)
    # scaled "goodness": (1, 0), (0.9, 0.8), (0, 1) -> (1, 2) is nearest to (1, 1)
    assert knee_point(front, names, dirs) == 1
    assert knee_point(front.iloc[:1], names, dirs) == int(front["number"].iloc[0])
    assert knee_point(front.iloc[0:0], names, dirs) is None


def test_reference_point_rule_and_history() -> None:
    names, dirs = ["accuracy", "mmacs", "latency_ms"], ["maximize", "minimize", "minimize"]
    df = _df([(0.5, 100, 10), (0.6, 120, 8), (0.7, 90, 20), (0.4, 140, 30)], names, dirs)
    ref = reference_point(df, names, dirs, {"max_mmacs": 150.0})
    assert ref == pytest.approx([0.0, 150.0, 30 + 0.1 * 22])
    hist = hypervolume_history(df, names, dirs, ref)
    assert hist["number"].to_list() == [0, 1, 2, 3]
    assert hist["hypervolume"].is_monotonic_increasing
    assert hist["hypervolume"].iloc[-1] == pytest.approx(hypervolume(df[names], dirs, ref))
    assert hist["hypervolume"].iloc[3] == hist["hypervolume"].iloc[2]  # trial 3 is dominated


def test_dominates() -> None:
    dirs = ["maximize", "minimize"]
    assert dominates([0.9, 10], [0.8, 10], dirs)
    assert not dominates([0.9, 10], [0.9, 10], dirs)
    assert not dominates([0.9, 20], [0.8, 10], dirs)


# ------------------------------------------------------------------------------ real storage


def test_trials_frame_reads_contract_without_writing(tmp_path: Path, make_study: Callable[..., tuple[str, list]]) -> None:
    url, _ = make_study(tmp_path)
    db = tmp_path / "study.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    df = trials_frame(open_study("unit", url))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert {"accuracy", "mmacs", "latency_ms", "arch", "arch_id", "groups", "channels", "repeats", "shuffle",
            "kernel", "stem", "latency_backend", "device", "fail_reason", "reference_preset", "state",
            "time_train_s", "duration_s"} <= set(df.columns)
    assert df.attrs["units"]["mmacs"] == "MMACs" and df.attrs["units"]["latency_ms"] == "ms"
    assert set(df["state"]) == {"COMPLETE", "PRUNED", "FAIL"}
    pruned = df[df["state"] == "PRUNED"]
    assert (pruned["mmacs"] > 150).all() and pruned["fail_reason"].str.startswith("over budget").all()
    assert df["reference_preset"].notna().sum() == 2
    info = pareto_info(df)
    assert info.knee in set(info.front["number"])
    assert info.ref_point[:2] == [0.0, 150.0] and info.hypervolume > 0
    assert info.history["hypervolume"].iloc[-1] == pytest.approx(info.hypervolume)


def test_open_study_errors(tmp_path: Path, make_study: Callable[..., tuple[str, list]]) -> None:
    from nas.cli.args import UserError

    url, _ = make_study(tmp_path)
    with pytest.raises(UserError, match="existing studies: unit"):
        open_study("nope", url)
    with pytest.raises(UserError, match="no such file"):
        open_study("unit", f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()  # reading never creates a database
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 10)
    with pytest.raises(UserError, match="bad.db"):
        open_study("unit", f"sqlite:///{bad}")


def test_cli_pareto_outputs(tmp_path: Path, make_study: Callable[..., tuple[str, list]], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = make_study(tmp_path)
    csv, png, html, hv = (tmp_path / f for f in ("front.csv", "front.png", "front.html", "hv.png"))
    rc = main(["pareto", "unit", "--storage", url, "--objectives", "accuracy,mmacs", "--csv", str(csv),
               "--plot", str(png), "--hv-plot", str(hv)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "MMACs" in out and "knee" in out and "hypervolume" in out
    assert "shufflenet_v1_g3_x0_5" in out  # presets listed for comparison
    front = pd.read_csv(csv)
    assert front["knee"].sum() == 1 and {"accuracy", "mmacs", "arch"} <= set(front.columns)
    assert png.stat().st_size > 10_000 and hv.stat().st_size > 5_000
    assert main(["pareto", "unit", "--storage", url, "--plot", str(html), "--json"]) == 0  # 3-D HTML
    data = json.loads(capsys.readouterr().out)
    assert data["objectives"] == ["accuracy", "mmacs", "latency_ms"] and data["knee"] is not None
    assert html.stat().st_size > 1_000_000  # plotly.js embedded: opens without internet
    capsys.readouterr()
    # --plot repeats; three objectives in a PNG: one 2-D panel per pair (3 panels side by side)
    f3, f3html = tmp_path / "f3.png", tmp_path / "f3.html"
    assert main(["pareto", "unit", "--storage", url, "--plot", str(f3), "--plot", str(f3html)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {f3}" in out and f"wrote {f3html}" in out
    from PIL import Image

    with Image.open(f3) as im:
        assert im.width > 2.5 * im.height, im.size
    text = f3html.read_text()
    first_trace = re.search(r'"type":"(\w+)"', text[text.rfind("Plotly.newPlot("):])
    assert first_trace is not None and first_trace.group(1) == "scatter3d"  # the 3-D view lives in the HTML


def test_pairwise_png_draws_each_pair_with_front_knee_and_presets(tmp_path: Path,
                                                                  make_study: Callable[..., tuple[str, list]],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    from nas.visualization.plots import plot_pareto

    url, _ = make_study(tmp_path)
    info = pareto_info(trials_frame(open_study("unit", url)))
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **kw: saved.append(fig))
    plot_pareto(info, tmp_path / "p.png")
    (fig,) = saved
    axes = fig.get_axes()
    assert [(a.get_xlabel().split()[0], a.get_ylabel().split()[0]) for a in axes] == [
        ("top-1", "MMACs"), ("top-1", "latency"), ("MMACs", "latency")]
    for ax in axes:
        labels = [c.get_label() for c in ax.collections]
        assert "Pareto front (3 objectives)" in labels and "paper presets" in labels
        assert any(lab.startswith(f"knee (trial {info.knee})") for lab in labels)
        front = next(c for c in ax.collections if c.get_label() == "Pareto front (3 objectives)")
        assert len(front.get_offsets()) == len(info.front)


def test_help_has_no_doubled_percent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pareto", "--help"])
    out = capsys.readouterr().out
    assert "10% of the range" in out and "%%" not in out


def test_status_shows_the_knee_and_labelled_bests(tmp_path: Path, make_study: Callable[..., tuple[str, list]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = make_study(tmp_path)
    assert main(["status", "unit", "--storage", url]) == 0
    out = capsys.readouterr().out
    info = pareto_info(trials_frame(open_study("unit", url)))
    knee = info.front[info.front["number"] == info.knee].iloc[0]
    assert f"knee: trial {info.knee}: acc {knee['accuracy']:.3f}, {knee['mmacs']:.1f} MMACs" in out
    best = [line for line in out.splitlines() if line.startswith("best of each objective (separate trials): ")]
    assert len(best) == 1 and best[0].count("(trial ") == 3, out
    assert main(["status", "unit", "--storage", url, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["knee"]["number"] == info.knee and set(d["best_trial"]) == {"accuracy", "mmacs", "latency_ms"}
    study = open_study("unit", url)
    for name, number in d["best_trial"].items():
        i = study.metric_names.index(name)
        assert study.trials[number].values[i] == d["best"][name]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pareto", "nope"], "existing studies: unit"),
        (["pareto", "unit", "--objectives", "accuracy,bogus"], "unknown objective(s) ['bogus']"),
        (["pareto", "unit", "--plot", "x.svg"], "must end in .png or .html"),
    ],
)
def test_cli_pareto_bad_input(tmp_path: Path, make_study: Callable[..., tuple[str, list]], capsys: pytest.CaptureFixture[str], argv: list[str],
                              message: str) -> None:
    url, _ = make_study(tmp_path, n=4)
    assert main([*argv, "--storage", url]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_unknown_study_subprocess(tmp_path: Path) -> None:
    """The installed entry point: one line on stderr, exit 2, no traceback, no file created."""
    r = subprocess.run([sys.executable, "-m", "nas", "pareto", "nope", "--storage", f"sqlite:///{tmp_path}/x.db"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()
