"""Latency lookup table: part enumeration, build, predict, validate, CLI (real ONNX Runtime)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.cli import main
from objectives.flops import macs_breakdown
from objectives.latency.api import get_backend, measure_latency
from objectives.latency.base import MeasureConfig
from objectives.latency.lut import LutTable, arch_parts, build_table, enumerate_parts, random_archs, validate_table
from search_spaces import ShuffleNetV1Space, build_model, preset

SHAPE = (3, 64, 64)
FAST = MeasureConfig(warmup=1, min_repeats=5, min_time_s=0.02, max_spread=10.0)
TINY_SPACE = dict(groups=(3,), widths=(0.25, 0.5), repeats=((1, 2), (1, 2), (1, 2)))


def test_parts_follow_the_model_shapes() -> None:
    arch = preset("shufflenet_v1_g3_x0_5")
    parts = arch_parts(arch, (3, 224, 224))
    assert len(parts) == 1 + sum(s.repeats for s in arch.stages) + 1
    # each stage's first unit sees the resolution the MACs walk says the stage starts at
    firsts = [p for p in parts if p.kind == "unit" and p.stride == 2]
    assert [(p.h, p.w) for p in firsts] == [b.in_hw for b in macs_breakdown(arch, (224, 224))[1:-1]]
    # chaining the parts' modules reproduces the full model's output shape
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for p in arch_parts(arch, SHAPE):
            assert tuple(x.shape[1:]) == p.input_shape
            x = p.module()(x)
        assert x.shape == build_model(arch).eval()(torch.zeros(1, *SHAPE)).shape


def test_enumeration_counts_distinct_parts_and_repeats_add_none() -> None:
    short = ShuffleNetV1Space(**{**TINY_SPACE, "repeats": ((1, 2), (1, 2), (1, 2))})
    long = ShuffleNetV1Space(**{**TINY_SPACE, "repeats": ((2, 6), (4, 10), (2, 6))})
    a, b = enumerate_parts(short, SHAPE), enumerate_parts(long, SHAPE)
    assert [p.key for p in a] == [p.key for p in b]
    assert len(a) == 2 * (1 + 3 * 2 + 1)  # 2 widths x (stem + stride-2/stride-1 per stage + head)
    assert len({p.key for p in a}) == len(a)
    only_stride2 = ShuffleNetV1Space(**{**TINY_SPACE, "repeats": ((1, 1), (1, 1), (1, 1))})
    assert len(enumerate_parts(only_stride2, SHAPE)) == 2 * (1 + 3 + 1)
    # every part of every sampled arch is in the enumeration
    keys = {p.key for p in b}
    for arch in random_archs(long, 10, seed=3):
        assert {p.key for p in arch_parts(arch, SHAPE)} <= keys


def test_build_predict_validate_end_to_end(tmp_path: Path) -> None:
    space = ShuffleNetV1Space(**TINY_SPACE)
    backend = get_backend("onnxruntime", config=FAST)
    table = build_table(space, SHAPE, backend, calibrate=3)
    assert table.data["complete"] and len(table.entries) == 16 and table.data["calibration"]["n"] == 3
    path = tmp_path / "t.json"
    table.save(path)
    loaded = LutTable.load(path)
    arch = random_archs(space, 1, seed=5)[0]
    assert loaded.predict(arch) == pytest.approx(table.predict(arch))
    assert loaded.predict(arch) > 0 and loaded.device == backend.device_info()["fingerprint"]
    r = measure_latency(arch, SHAPE, get_backend("lut", table=path))
    assert r.backend == "lut" and r.n == 0 and r.median_ms == pytest.approx(loaded.predict(arch))
    with pytest.raises(ValueError, match="built at input 3x64x64"):
        get_backend("lut", table=path).measure(arch, (3, 96, 96))
    with pytest.raises(ValueError, match="no entry"):
        loaded.predict(preset("shufflenet_v1_g8_x1_0"))
    res = validate_table(loaded, backend, n=5)
    assert res["n"] == 5 and 0 <= res["lut"]["within"] <= 1 and -1 <= res["lut"]["spearman"] <= 1
    assert set(res["macs"]) == {"within", "spearman", "mean_abs_rel_err"}


def test_cli_lut_build_count_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["lut", "build", "--groups", "3", "--widths", "0.25", "--repeats", "1-2,1-2,1-2", "--input", "3x64x64"]
    assert main([*base, "--count", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"parts": 8, "stem": 1, "unit": 6, "head": 1}
    out = tmp_path / "t.json"
    assert main([*base, "--min-time", "0.02", "--repeats-min", "5", "--calibrate", "3", "--out", str(out),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parts"] == 8 and summary["complete"] and summary["calibration"]["n"] == 3
    assert main(["lut", "validate", str(out), "--n", "3", "--min-time", "0.02", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 3 and "spearman" in res["lut"]
    assert main(["latency", "shufflenet_v1_g3_x0_25", "--backend", "lut", "--table", str(out), "--input",
                 "3x64x64"]) == 0
    assert "predicted" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["build", "--groups", "5", "--count"], "groups"),
        (["build", "--widths", "a,b", "--count"], "--widths"),
        (["build", "--repeats", "x", "--count"], "--repeats"),
        (["build", "--space-file", "/nonexistent.json", "--count"], "--space-file"),
        (["build", "--groups", "3"], "--out"),
        (["validate", "/nonexistent/t.json"], "no such file"),
        (["validate", "/nonexistent/t.json", "--n", "1"], "no such file"),
    ],
)
def test_cli_lut_bad_input(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lut", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
