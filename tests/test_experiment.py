"""Experiment files: valid ones load, malformed ones give ONE line naming file, key, rule, value; exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.cli import main
from nas.experiment import Experiment, ExperimentError, load_experiment, mmacs_range, reference_params

ROOT = Path(__file__).resolve().parents[1]
GOOD = """\
name: t
deploy: {input: 3x64x64, classes: 10}
space: {groups: [2, 4], widths: [0.25, 0.5], repeats: [[1, 1], [1, 2], [1, 1]]}
budget: {max_mmacs: 5}
objectives: [accuracy, mmacs]
latency: {backend: none}
"""


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiments_validate(path: Path) -> None:
    exp = load_experiment(path)
    assert exp.study_name == path.stem
    lo, hi = mmacs_range(exp)
    assert lo <= exp.budget.max_mmacs
    for name in exp.reference_presets:
        assert reference_params(exp, name) is not None


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD + "search: {sampler: cma}\n", "search.sampler: must be one of tpe, nsga2, nsga3, random, got 'cma'"),
        (GOOD + "train: {epochz: 3}\n", "train.epochz: is not a known key"),
        (GOOD + "search: {n_trials: 0}\n", "search.n_trials: must be >= 1, got 0"),
        (GOOD.replace("[accuracy, mmacs]", "[accuracy, flops]"), "objectives[1]: must be one of accuracy, mmacs"),
        (GOOD.replace("3x64x64", "3x64"), "deploy.input: expected CxHxW such as 3x224x224, got '3x64'"),
        (GOOD.replace("max_mmacs: 5", "max_mmacs: 0.01"), "budget.max_mmacs: no architecture in the space fits"),
        (GOOD.replace("groups: [2, 4]", "groups: [5]"), "space.groups: 5 is not one of"),
        (GOOD + "objectives: [score]\n", "needs a score"),
        (GOOD.replace("name: t\n", ""), "name: is required"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("", "top level must be a mapping of keys (name, budget, ...), got empty"),
        (GOOD + "reference_presets: [shufflenet_v1_g3_x1_0]\n", "reference_presets[0]: preset 'shufflenet_v1_g3_x1_0'"),
    ],
)
def test_bad_file_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(text)
    rc = main(["search", str(f)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"shufflenas search: error: {f}: ")
    assert expected in err, err


def test_missing_file_and_bad_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err
    f = tmp_path / "x.yaml"
    f.write_text(GOOD)
    assert main(["search", str(f), "--trials", "0"]) == 2
    assert "argument --trials: must be >= 1, got 0" in capsys.readouterr().err  # the flag, not the file (#18)
    assert main(["search", str(f), "--sampler", "cma"]) == 2
    assert "search.sampler: must be one of tpe, nsga2, nsga3, random, got 'cma'" in capsys.readouterr().err


def test_overrides_and_roundtrip(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(GOOD)
    exp = load_experiment(f, {"search.n_trials": 7, "search.study_name": "other", "search.workers": None})
    assert exp.search.n_trials == 7 and exp.study_name == "other" and exp.search.workers == 1
    assert exp.storage_url == "sqlite:///runs/other/study.db"
    back = Experiment.from_stored(exp.to_dict())
    assert back == exp
    assert exp.to_dict()["deploy"]["input"] == [3, 64, 64]
    with pytest.raises(ExperimentError, match="study_name"):
        load_experiment(f, {"search.study_name": "bad name!"})


def test_reference_params_reproduce_the_preset() -> None:
    from search_spaces import FixedTrial as _Replay
    from search_spaces import preset

    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    for name in exp.reference_presets:
        arch = exp.build_space().sample(_Replay(reference_params(exp, name)), exp.fits)
        assert arch == preset(name)
