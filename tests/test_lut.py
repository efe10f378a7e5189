"""Latency predictor: kernel parsing on a real ORT profile, build/save/load, the device tie,
the CLI, an experiment using it, and the device agent's profiling mode over loopback."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from nas.cli import main
from objectives.latency.api import get_backend, measure_latency
from objectives.latency.base import MeasureConfig
from objectives.latency.onnx_export import export_onnx_bytes
from objectives.latency.ort_backend import profile_onnx
from objectives.latency.predictor import (
    FORMAT,
    Kernel,
    Predictor,
    build_predictor,
    detect_kernels,
    kernels_of,
    random_archs,
)
from search_spaces import ShuffleNetV1Space
from search_spaces.shufflenet_v1 import make_arch

SHAPE = (3, 32, 32)
FAST = MeasureConfig(warmup=1, min_repeats=3, min_time_s=0.0, max_spread=10.0)
TINY_SPACE = dict(groups=(2, 3), widths=(0.25, 0.5), kernels=(3, 5), placements=("before_dw", "after_pw2"),
                  repeats=((1, 2), (1, 2), (1, 1)), small_input=True, num_classes=10)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Predictor, Path]:
    """A predictor of the tiny space built on this host from 6 profiled networks (3 random, 3 adaptive)."""
    space = ShuffleNetV1Space(**TINY_SPACE)
    pred = build_predictor(space, SHAPE, get_backend("onnxruntime", config=FAST), archs=6, initial=3, batch=2,
                           profile_runs=2, pool=40)
    path = tmp_path_factory.mktemp("pred") / "p.json"
    pred.save(path)
    return pred, path


def test_kernel_keys_parse_groups_kernel_stride_from_a_real_profile() -> None:
    arch = make_arch(groups=3, width=0.5, repeats=(2, 1, 1), kernel=(5, 3, 7), shuffle="after_dw",
                     num_classes=10, small_input=True)
    kernels = [k for k, _us in kernels_of(profile_onnx(export_onnx_bytes(arch, SHAPE), SHAPE, runs=1, skip=0))]
    convs = [(k, k.conv_params()) for k in kernels if k.conv_params()]
    st = arch.stages
    mid0, mid1 = int(st[0].mid_channels()), int(st[1].mid_channels())
    # the stride-2 depthwise 5x5 of stage 2 (32x32 stem -> 16x16), and the 3x3 one of stage 3, whose
    # channels the NCHWc layout pads to a multiple of its block (so its groups read as padded too)
    assert any(p == (mid0, 5, 2) and k.kind.startswith("Conv:dw") for k, p in convs)
    assert any(p[1:] == (3, 2) and p[0] >= mid1 and k.kind.startswith("Conv:dw") and k.inputs[0][1] == p[0]
               for k, p in convs)
    # the grouped 1x1 convolutions carry the arch's groups; stage 2's first pw1 is dense (paper)
    assert {p for _k, p in convs if p[1] == 1 and p[0] > 1} == {(3, 1, 1)}
    assert any(k.kind.startswith(("Conv:pw", "FusedConv:pw")) for k, _p in convs)
    # BN is folded and ReLU fused: no BatchNormalization kernel runs; the classifier is 10 wide
    assert not any(k.op == "BatchNormalization" for k in kernels)
    assert any(k.op in ("MatMul", "Gemm") and k.outputs[0][-1] == 10 for k in kernels)
    # after_dw shuffle: a Transpose of (1, g, mid/g, h, w) per unit, 4 units
    assert sum(k.op == "Transpose" and k.inputs[0][1] == 3 for k in kernels) == 4
    key = next(k for k, p in convs if p == (mid0, 5, 2)).key
    assert f"|g={mid0},k=5,s=2" in key and key.split("|")[0].startswith("Conv:dw")


def test_build_round_trip_and_prediction(built: tuple[Predictor, Path]) -> None:
    pred, path = built
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT == "shufflenas-predictor/1"
    assert data["measurements"] == 6 and len(data["archs"]) == 6
    assert data["device"] == get_backend("onnxruntime").device_info()["fingerprint"]
    loaded = Predictor.load(path)
    arch = random_archs(ShuffleNetV1Space(**TINY_SPACE), 1, seed=99)[0]
    assert loaded.predict(arch) == pytest.approx(pred.predict(arch)) and loaded.predict(arch) > 0
    # a profiled arch: every one of its kernels is a seen key, predicted by its median
    space = loaded.space()
    first = next(a for a in random_archs(space, 40, seed=0) if a.arch_id == data["archs"][0]["arch_id"])
    ex = loaded.explain(first)
    assert ex["seen"] == ex["n_kernels"] == data["archs"][0]["n_kernels"]
    # the calibration maps the kernel sum to ms exactly as documented
    assert ex["ms"] == pytest.approx(loaded.a * ex["kernel_sum_us"] / 1e3 + loaded.b * ex["n_kernels"] / 1e3 + loaded.c)
    # an unseen key of a seen kernel type goes to that type's regression: positive, not the table
    k = detect_kernels(first, SHAPE)[0]
    wider = Kernel(k.op, tuple((*s[:1], s[1] * 2, *s[2:]) if len(s) == 4 else s for s in k.inputs), k.outputs, k.nchwc)
    us, seen = loaded.kernel_us(wider)
    assert not seen and us > 0 and wider.key not in loaded.kernels
    with pytest.raises(ValueError, match="built at input 3x32x32"):
        loaded.predict(first, (3, 64, 64))


def test_latency_backend_predictor_cli_and_api(built: tuple[Predictor, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _built, path = built
    pred = Predictor.load(path)  # what the backend reads: the file (the builder's in-memory fit can differ in the last digits)
    arch = make_arch(groups=2, width=0.5, repeats=(1, 1, 1), num_classes=10, small_input=True)
    r = measure_latency(arch, SHAPE, get_backend("predictor", table=path))
    assert r.backend == "predictor" and r.n == 0 and r.extra["predicted"] is True
    assert r.median_ms == pytest.approx(pred.predict(arch))
    f = path.parent / "arch.json"
    f.write_text(arch.to_json())
    assert main(["latency", str(f), "--backend", "predictor", "--table", str(path), "--input", "3x32x32",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["median_ms"] == pytest.approx(pred.predict(arch)) and out["extra"]["predicted"] is True
    assert main(["latency", str(f), "--backend", "predictor", "--table", str(path), "--input", "3x32x32"]) == 0
    assert "predicted: median" in capsys.readouterr().out


def test_predictor_of_another_device_is_refused_in_one_line(built: tuple[Predictor, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _pred, path = built
    data = json.loads(path.read_text())
    data["device"] = "0123456789abcdef"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    for argv in (["latency", "shufflenet_v1_g3_x0_25", "--backend", "predictor", "--table", str(other),
                  "--input", "3x32x32"],
                 ["lut", "validate", str(other), "--n", "3"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "built on device 0123456789abcdef" in err and str(other) in err
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "shufflenas-lut/1", "entries": {}}))
    assert main(["latency", "shufflenet_v1_g3_x0_25", "--backend", "predictor", "--table", str(old)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "old per-part lookup table" in err and "rebuild" in err
    broken = json.loads(path.read_text())
    del broken["calibration"]["a"]  # a hand-edited file
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps(broken))
    assert main(["latency", "shufflenet_v1_g3_x0_25", "--backend", "predictor", "--table", str(bad),
                 "--input", "3x32x32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "malformed predictor" in err and str(bad) in err


def test_cli_build_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    base = ["lut", "build", "--groups", "3", "--widths", "0.25", "--repeats", "1-2,1-2,1-1", "--input", "3x32x32",
            "--classes", "10"]
    assert main([*base, "--archs", "3", "--initial", "2", "--batch", "1", "--profile-runs", "2", "--min-time", "0",
                 "--repeats-min", "3", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measurements"] == 3 and summary["format"] == FORMAT and summary["kernels"] > 10
    assert main(["lut", "validate", str(out), "--n", "3", "--min-time", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 3 and len(res["measured_ms"]) == 3 and set(res["predictor"]) == {
        "within", "spearman", "mean_abs_rel_err"}


def test_experiment_with_predictor_backend_runs_a_trial(built: tuple[Predictor, Path], tmp_path: Path,
                                                        tiny_yaml: Callable[..., Path]) -> None:
    import optuna

    _pred, path = built
    f = tiny_yaml(latency=f"predictor, table: {path}", n=1, train_size=100).read_text()
    f = f.replace("input: 3x64x64", "input: 3x32x32")
    yaml = tmp_path / "exp.yaml"
    yaml.write_text(f)
    assert main(["search", str(yaml), "--no-progress"]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.user_attrs["latency_backend"] == "predictor" and t.user_attrs["latency_n"] == 0
                        and t.user_attrs["latency_ms"] > 0 for t in done)


@pytest.fixture
def agent_url(free_port: Callable[[], int]) -> Iterator[str]:
    from objectives.latency.agent import make_server

    server = make_server("127.0.0.1", free_port(), "tok")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_agent_profiling_mode_over_loopback(agent_url: str, tmp_path: Path) -> None:
    from objectives.latency.remote import DeviceRejected, RemoteDevice

    arch = make_arch(groups=3, width=0.25, repeats=(1, 1, 1), num_classes=10, small_input=True)
    onnx = export_onnx_bytes(arch, SHAPE)
    remote = get_backend("remote", url=agent_url, token="tok", config=FAST)
    plain = remote.measure_onnx(onnx, SHAPE)
    assert "profile" not in plain.extra  # opt-in only
    r = remote.measure_onnx(onnx, SHAPE, profile=3)
    prof = r.extra["profile"]
    assert prof["runs"] == 3 and len(prof["run_us"]) == 3 and not prof["truncated"]
    local = profile_onnx(onnx, SHAPE, runs=1, skip=0)
    # ONNX Runtime numbers the layout nodes it inserts per session ("ReorderOutput_token_10"): compare without
    def names(p: dict) -> list[str]:
        return [re.sub(r"_token_\d+$", "", n["name"]) for n in p["nodes"]]

    assert names(prof) == names(local)
    assert [k.key for k, _ in kernels_of(prof)] == [k.key for k in detect_kernels(arch, SHAPE)]
    assert all(n["us"] > 0 for n in prof["nodes"] if n["op"].endswith("Conv"))
    dev = RemoteDevice(agent_url, token="tok")
    with pytest.raises(DeviceRejected, match=r"profile: 101 is out of range"):
        dev.benchmark(onnx, warmup=0, repeats=1, min_time_s=0.0, profile=101)
    with pytest.raises(DeviceRejected):
        RemoteDevice(agent_url, token="wrong", retries=0).benchmark(onnx, profile=2)
    # a predictor built through the agent carries the agent's fingerprint and URL
    pred = build_predictor(ShuffleNetV1Space(**{**TINY_SPACE, "groups": (3,), "widths": (0.25,)}), SHAPE, remote,
                           archs=2, initial=2, profile_runs=2, pool=10, device_url=agent_url)
    assert pred.data["backend"] == "remote" and pred.data["device_url"] == agent_url
    assert pred.device == remote.device_info()["fingerprint"] and pred.data["measurements"] == 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["build", "--groups", "5", "--count"], "groups"),
        (["build", "--widths", "a,b", "--count"], "--widths"),
        (["build", "--repeats", "x", "--count"], "--repeats"),
        (["build", "--space-file", "/nonexistent.json", "--count"], "--space-file"),
        (["build", "--groups", "3"], "--out"),
        (["build", "--archs", "1601", "--out", "x.json"], "--archs"),
        (["build", "--archs", "10", "--initial", "11", "--out", "x.json"], "--initial"),
        (["build", "--profile-runs", "0", "--out", "x.json"], "--profile-runs"),
        (["build", "--batch", "0", "--out", "x.json"], "--batch"),
        (["build", "--min-time", "99", "--out", "x.json"], "--min-time"),
        (["validate", "/nonexistent/t.json"], "no such file"),
    ],
)
def test_cli_lut_bad_input(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad arguments: exit 2 and one line naming the argument, before anything is measured."""
    assert main(["lut", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
