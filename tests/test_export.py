"""`shufflenas export`: the generated torch-only model.py rebuilds build_model exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch

from nas.cli import main
from nas.deploy.standalone import load_module, render_model_source
from search_spaces import ShuffleNetV1Space, build_model, preset

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _random_archs(n: int, seed: int = 7) -> list:
    """Archs from the real space covering every placement, kernel, ratio and per-stage groups."""
    space = ShuffleNetV1Space(per_stage_groups=True, widths=(0.25, 0.5, 0.75), repeats=((1, 3), (1, 4), (1, 3)),
                              placements=("before_dw", "after_dw", "after_pw2", "both", "none"),
                              kernels=(3, 5, 7), bottleneck_ratios=(0.125, 0.25, 0.5), num_classes=10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs = []
    while len(archs) < n:
        try:
            archs.append(space.sample(study.ask()))
        except ValueError:  # mixed groups can give channel counts the validator rejects
            continue
    return archs


def _check_same(arch, tmp: Path, hw: int = 64) -> None:  # noqa: ANN001
    path = tmp / f"{arch.arch_id}.py"
    path.write_text(render_model_source(arch))
    torch.manual_seed(0)
    ref = build_model(arch)
    _randomise_bn(ref)
    ref.eval()
    net = load_module(path).build().eval()
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    ref_sd = ref.state_dict()
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref_sd.items()}
    net.load_state_dict(ref_sd, strict=True)
    x = torch.randn(2, arch.in_channels, hw, hw)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))


@pytest.mark.parametrize("name", ["shufflenet_v1_g1_x0_5", "shufflenet_v1_g3_x0_25", "shufflenet_v1_g8_x0_5"])
def test_model_py_reproduces_presets(tmp_path: Path, name: str) -> None:
    _check_same(preset(name), tmp_path, hw=32)


def test_model_py_reproduces_random_archs(tmp_path: Path) -> None:
    archs = _random_archs(6)
    assert len({a.arch_id for a in archs}) == 6
    for arch in archs:
        _check_same(arch, tmp_path, hw=32)
    small = archs[0].with_io(in_channels=1, num_classes=10, small_input=True)
    _check_same(small, tmp_path, hw=28)


def test_model_py_imports_only_torch() -> None:
    src = render_model_source(preset("shufflenet_v1_g3_x0_5"))
    imports = {line.split()[1].split(".")[0] for line in src.splitlines() if line.startswith(("import ", "from "))}
    assert "torch" in imports and imports - {"torch"} <= set(sys.stdlib_module_names), imports
    # one implementation: the family's own classes, not a second copy of the network
    assert "def channel_shuffle" in src and "class ShuffleUnit" in src and "class ShuffleNetV1" in src
    assert "def build(" in src and "'out_channels': 120" in src


def test_model_py_holds_the_network_alone() -> None:
    """No search space, sampling protocol, presets, MACs counters or latency parts (the issue's
    goal: at most 400 lines for a ShuffleNet v1; it was 1,117)."""
    src = render_model_source(preset("shufflenet_v1_g3_x0_5"))
    assert 50 < len(src.splitlines()) <= 400, len(src.splitlines())
    for name in ("Space", "RandomTrial", "FixedTrial", "_Recorder", "TrialLike", "def preset", "macs_breakdown",
                 "def blocks", "LATENCY_REFERENCES", "MacsPart"):
        assert name not in src, name


def test_build_without_weights_is_seeded(tmp_path: Path) -> None:
    """Fails before the fix: two `build()` calls drew different random weights."""
    path = tmp_path / "model.py"
    path.write_text(render_model_source(preset("shufflenet_v1_g3_x0_25")))
    mod = load_module(path)
    a, b = mod.build().state_dict(), mod.build().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = mod.build(seed=1).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    mod.build()
    assert torch.equal(torch.rand(3), before)  # the caller's RNG is left as it was


def _readme_export_args() -> list[str]:
    """The README's `shufflenas export quickstart ...` line, as arguments after the study name."""
    import re
    import shlex

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    lines = re.findall(r"^shufflenas export quickstart (.*?)(?:\s+#.*)?$", readme, re.M)
    assert lines, "README has no `shufflenas export quickstart` line"
    return shlex.split(lines[0])


def test_readme_export_line_works_for_a_study_that_trained_nothing(
        tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    """Fails before the fix: the README's line had --weights, and the quickstart (NASWOT) trains
    nothing, so export stopped with "no proxy weights"; the docstring claimed equal outputs and
    an accuracy on the proxy task."""
    exp = tiny_yaml("nw", n=2, objectives="[naswot, mmacs]")
    assert main(["search", str(exp)]) == 0
    args = _readme_export_args()
    out = tmp_path / args[args.index("--out") + 1]
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert main(["export", "nw", "--storage", url, *args]) == 0
    src = (out / "model.py").read_text()
    doc = " ".join(src.split('"""')[1].split())
    assert "naswot" in doc and "trained nothing" in doc and "seeded" in doc
    assert "outputs are equal" not in doc and "output for output" not in doc and "accuracy" not in doc
    assert 50 < len(src.splitlines()) <= 400


def test_export_refuses_a_non_empty_out_unless_force(tmp_path: Path, make_study: Callable[..., tuple[str, list]],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Fails before the fix: a second export overwrote the first one's files silently."""
    url, _ = make_study(tmp_path, n=4)
    out = tmp_path / "o"
    argv = ["export", "unit", "--storage", url, "--pick", "min-mmacs", "--out", str(out)]
    assert main(argv) == 0
    (out / "notes.txt").write_text("mine")
    first = (out / "model.py").read_text()
    (out / "model.py").write_text("edited")
    capsys.readouterr()
    assert main([*argv[:5], "max-accuracy", *argv[6:]]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not empty" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "model.py").read_text() == "edited"  # nothing written
    (out / "model.onnx").write_bytes(b"an earlier export's")
    assert main([*argv, "--force"]) == 0
    assert (out / "model.py").read_text() == first and (out / "notes.txt").read_text() == "mine"
    assert not (out / "model.onnx").exists()  # no stale file beside the new model.py


def _write_weights(tmp: Path, study_url: str, trial: int) -> torch.nn.Module:
    """Proxy weights as the evaluator stores them: <run_dir>/weights/<arch_id>.safetensors."""
    from safetensors.torch import save_file

    from nas.storage import open_study
    from search_spaces import Arch

    t = open_study("unit", study_url).trials[trial]
    arch = Arch.from_json(t.user_attrs["arch"]).with_io(in_channels=1, num_classes=10, small_input=True)
    torch.manual_seed(1)
    model = build_model(arch)
    (tmp / "weights").mkdir(exist_ok=True)
    save_file(model.state_dict(), str(tmp / "weights" / f"{t.user_attrs['arch_id']}.safetensors"),
              metadata={"arch": arch.to_json(), "deploy_arch_id": t.user_attrs["arch_id"]})
    return model.eval()


def test_cli_export_knee_with_weights_and_onnx(tmp_path: Path, make_study: Callable[..., tuple[str, list]], capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    import onnxruntime as ort

    url, _ = make_study(tmp_path, n=6)
    assert main(["pareto", "unit", "--storage", url, "--json"]) == 0
    knee = json.loads(capsys.readouterr().out)["knee"]
    ref = _write_weights(tmp_path, url, knee)
    out = tmp_path / "exp"
    assert main(["export", "unit", "--storage", url, "--pick", "knee", "--out", str(out), "--weights", "--onnx"]) == 0
    meta = json.loads((out / "arch.json").read_text())
    assert meta["trial"] == knee and meta["exported"] == "proxy" and meta["input"] == [1, 28, 28]
    assert meta["deploy"]["arch"]["num_classes"] == 1000 and meta["proxy"]["arch"]["small_input"] is True
    sd = torch.load(out / "state_dict.pt", weights_only=True)
    net = load_module(out / "model.py").build().eval()
    net.load_state_dict(sd, strict=True)
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        expect = ref(x)
        assert torch.equal(net(x), expect)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expect.numpy(), atol=1e-4, rtol=1e-4)


def test_cli_export_picks_and_all_pareto(tmp_path: Path, make_study: Callable[..., tuple[str, list]], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = make_study(tmp_path, n=8)
    assert main(["pareto", "unit", "--storage", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    front = info["front"]
    assert main(["export", "unit", "--storage", url, "--pick", "latency_ms<=6", "--out", str(tmp_path / "c"),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["exports"][0]
    ok = [r for r in front if r["latency_ms"] <= 6]
    assert res["trial"] == max(ok, key=lambda r: r["accuracy"])["number"]
    meta = json.loads((tmp_path / "c" / "arch.json").read_text())
    assert meta["exported"] == "deploy" and meta["arch"]["num_classes"] == 1000
    assert main(["export", "unit", "--storage", url, "--pick", "min-mmacs", "--out", str(tmp_path / "m"),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["exports"][0]
    assert res["trial"] == min(front, key=lambda r: r["mmacs"])["number"]
    assert main(["export", "unit", "--storage", url, "--all-pareto", "--out", str(tmp_path / "all")]) == 0
    dirs = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert dirs == sorted(f"trial_{r['number']}" for r in front)
    src = (tmp_path / "all" / f"trial_{info['knee']}" / "model.py").read_text()
    assert "study 'unit'" in src and "sampler tpe" in src and "accuracy:" in src


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trial", "999"], "has no trial 999"),
        (["--pick", "best"], "expected one of knee"),
        (["--pick", "speed<=3"], "unknown column 'speed'"),
        (["--pick", "latency_ms<=0.001"], "no COMPLETE trial satisfies"),
        (["--trial", "0", "--weights"], "no proxy weights for trial 0"),
    ],
)
def test_cli_export_bad_input(tmp_path: Path, make_study: Callable[..., tuple[str, list]], capsys: pytest.CaptureFixture[str], args: list[str],
                              message: str) -> None:
    url, _ = make_study(tmp_path, n=4)
    assert main(["export", "unit", "--storage", url, *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_model_py_runs_with_only_torch(tmp_path: Path) -> None:
    """A fresh venv without system site packages, torch from the local wheel cache, nothing else
    of ours: the exported ShuffleNet v1 loads by `import model` and by importlib's documented
    spec_from_file_location recipe, is at most 400 lines, builds the same network twice, and gives
    the search's outputs for the search's weights."""
    arch = preset("shufflenet_v1_g3_x0_5")
    src = render_model_source(arch)
    assert 50 < len(src.splitlines()) <= 400, len(src.splitlines())
    (tmp_path / "model.py").write_text(src)
    torch.manual_seed(0)
    ref = build_model(arch)
    _randomise_bn(ref)
    ref.eval()
    torch.save(ref.state_dict(), tmp_path / "sd.pt")
    x = torch.randn(2, 3, 224, 224)
    torch.save(x, tmp_path / "x.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-equal needs the same kernels: one thread here and in the fresh venv
    try:
        with torch.no_grad():
            torch.save(ref(x), tmp_path / "ref.pt")
    finally:
        torch.set_num_threads(threads)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}"],
                       capture_output=True, text=True, timeout=540, env=env)
    if r.returncode != 0:
        pytest.fail(f"pip install torch failed: {r.stderr[-2000:]}")
    loads = {
        "import": "import model as m\n",
        # https://docs.python.org/3/library/importlib.html#importing-a-source-file-directly
        "spec": ("import importlib.util\n"
                 "spec = importlib.util.spec_from_file_location('exported_net', 'model.py')\n"
                 "m = importlib.util.module_from_spec(spec)\n"
                 "sys.modules['exported_net'] = m\n"
                 "spec.loader.exec_module(m)\n"),
    }
    check = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "a, b = m.build().state_dict(), m.build().state_dict()\n"
        "assert all(torch.equal(a[k], b[k]) for k in a), 'build() is not seeded'\n"
        "net = m.build().eval()\n"
        "net.load_state_dict(torch.load('sd.pt', weights_only=True), strict=True)\n"
        "with torch.no_grad():\n"
        "    out = net(torch.load('x.pt', weights_only=True))\n"
        "assert torch.equal(out, torch.load('ref.pt', weights_only=True)), 'outputs differ'\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('nas', 'search_spaces', 'objectives', 'numpy_only')]\n"
        "assert not bad, bad\n"
        "print('ok', sum(p.numel() for p in net.parameters()))\n"
    )
    n = sum(p.numel() for p in ref.parameters())
    for how, load in loads.items():
        r = subprocess.run([str(py), "-c", "import sys\n" + load + check], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 0, (how, r.stderr[-2000:])
        assert r.stdout.split() == ["ok", str(n)], (how, r.stdout)


def _randomise_bn(model: torch.nn.Module) -> None:
    """Random BN statistics so eval-mode outputs exercise every buffer."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
