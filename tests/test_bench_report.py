"""The benchmark report is honest: every figure with a goal is judged pass or FAIL, none is "informational"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run_all import BENCHES, HAND_WRITTEN, REPORT, RESULTS, Figure, write_report


def test_a_goal_cannot_be_left_unjudged() -> None:
    with pytest.raises(ValueError, match="must be judged pass or fail"):
        Figure("x", 1.0, "ratio", "> 1.0", "info")
    with pytest.raises(ValueError, match="without a goal"):
        Figure("x", 1.0, "ratio", "", "pass")


def test_every_figure_with_a_goal_is_pass_or_fail(tmp_path: Path) -> None:
    """Re-extract every benchmark's recorded raw JSON (bench/results.json) and render the report."""
    results = json.loads(RESULTS.read_text())
    extract = {b.name: b.extract for b in BENCHES}
    judged = 0
    for name, entry in results["benchmarks"].items():
        if "raw" not in entry:
            continue
        figures = extract[name](entry["raw"])
        entry["figures"] = [f.__dict__ for f in figures]
        for f in figures:
            assert (f.status in ("pass", "fail")) == bool(f.goal), f
            judged += bool(f.goal)
    assert judged >= 10
    out = tmp_path / "BENCHMARKS.md"
    write_report(results, out)
    text = out.read_text().lower()
    assert "informational" not in text
    figures_table = text.split("## profiles")[0]
    rows = [r for r in figures_table.splitlines() if r.startswith("| ") and not r.startswith("| benchmark")]
    assert len(rows) >= judged
    for row in rows:
        cells = [c.strip() for c in row.split(" | ")]
        if len(cells) == 6 and cells[3]:  # a goal
            assert cells[4] in ("pass", "**fail**"), row


def test_known_misses_show_as_fail() -> None:
    """The misses the issue names: search quality 0.90 < 1.0 and LUT 15% vs 99% are FAIL."""
    extract = {b.name: b.extract for b in BENCHES}
    q = extract["search_quality"]({"seeds": [0, 1, 2], "trials": 12, "samplers": {"tpe": {"ratio_to_random": 0.9}}})
    assert [f.status for f in q if f.name.startswith("hypervolume")] == ["fail"]
    lut = extract["lut_accuracy"]({"n": 20, "predictor": {"within": 0.95, "spearman": 0.96}, "macs": {"within": 0.3}})
    assert [f.status for f in lut if f.goal] == ["pass", "fail"]


def test_a_rewrite_keeps_the_hand_written_sections(tmp_path: Path) -> None:
    """The hours-long benches (Fashion-MNIST reference, one-shot, search vs paper) are written up by hand
    below the marker; regenerating the tables must not drop them."""
    assert HAND_WRITTEN in REPORT.read_text()  # the published report has them
    results = json.loads(RESULTS.read_text())
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# old tables\n| x | stale |\n" + HAND_WRITTEN + "\n\n## Mine\n\nkept | as is\n")
    write_report(results, out)
    text = out.read_text()
    assert "stale" not in text and "## Profiles" in text
    assert text.endswith(HAND_WRITTEN + "\n\n## Mine\n\nkept | as is\n") and text.count(HAND_WRITTEN) == 1
    write_report(results, out)
    assert out.read_text() == text
