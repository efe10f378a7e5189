"""One-shot signal: the ShuffleNet v1 supernet, its training (budget paths, kill + resume) and scoring."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from objectives import oneshot
from objectives.data import load_dataset
from objectives.flops import analytic_macs
from search_spaces import RandomTrial, ShuffleNetV1Space
from search_spaces.shufflenet_v1_supernet import build_supernet

ROOT = Path(__file__).resolve().parents[1]

#: every knob of the family at once: per-stage groups, all placements, kernels and bottleneck ratios
RICH = ShuffleNetV1Space(groups=(1, 2, 3, 4, 8), per_stage_groups=True, widths=(0.25, 0.5),
                         repeats=((1, 3), (1, 3), (1, 2)),
                         placements=("before_dw", "after_dw", "after_pw2", "both", "none"), kernels=(3, 5, 7),
                         bottleneck_ratios=(0.125, 0.25, 0.5))
#: a tiny space whose budget below (0.6 MMACs at 64x64: width 0.5 is over) cuts part of it away
TINY = ShuffleNetV1Space(groups=(2, 4), widths=(0.25, 0.5), repeats=((1, 1), (1, 2), (1, 1)), num_classes=10)
TINY_HW = (64, 64)
TINY_MAX_MMACS = 0.6


def tiny_fits(arch: object) -> bool:
    return analytic_macs(arch, TINY_HW) / 1e6 <= TINY_MAX_MMACS


def tiny_size(arch: object) -> float:
    return float(analytic_macs(arch, TINY_HW))


@pytest.fixture(scope="module")
def data() -> object:
    return load_dataset("default", train_size=64, val_size=32, resolution=8, seed=0)


def _randomise_bn(net: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if hasattr(m, "running_mean"):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_extract_equals_the_supernet_path_for_random_archs(sharing: str) -> None:
    torch.manual_seed(0)
    net = build_supernet(RICH, in_channels=1, num_classes=10, small_input=True, group_sharing=sharing)
    _randomise_bn(net)  # copied BN statistics must matter: not the identity of a fresh BN
    net.eval()
    x = torch.randn(2, 1, 8, 8)
    rng = random.Random(0)
    seen: set[tuple[object, ...]] = set()
    for _ in range(12):
        arch = RICH.sample(RandomTrial(rng)).for_proxy(in_channels=1, num_classes=10, resolution=8)
        seen.update((s.groups, s.kernel, s.shuffle) for s in arch.stages)
        model = net.extract(arch).eval()
        with torch.no_grad():
            path, alone = net(x, arch), model(x)
        assert alone.abs().max() > 0
        assert ((path - alone).abs().max() / alone.abs().max()) <= 1e-5, arch.to_json()
    # the draws covered grouped and dense 1x1s, every kernel and several placements
    assert {g for g, _, _ in seen} >= {1, 8} and {k for _, k, _ in seen} == {3, 5, 7}
    assert len({p for _, _, p in seen}) >= 3


def test_a_grouped_path_trains_only_its_block_diagonal() -> None:
    """Groups share one dense 1x1 weight: a g-group path's gradient lies on the g blocks of the diagonal."""
    from search_spaces.shufflenet_v1 import make_arch

    net = build_supernet(TINY, in_channels=1, num_classes=10, small_input=True)
    arch = make_arch(groups=4, width=0.25, repeats=(1, 1, 1), in_channels=1, num_classes=10, small_input=True)
    net(torch.randn(2, 1, 8, 8), arch).sum().backward()
    unit = net.stages[1][0]  # stage 3's first unit: a grouped pw1
    s3 = [q for si, r, q in net.paths(arch) if si == 1 and r == 0][0]
    assert s3.groups == 4 and s3.first_grouped
    grad = unit.pw1["all"].grad[:s3.mid, :s3.in_ch, 0, 0]
    blocks = grad.reshape(4, s3.mid // 4, 4, s3.in_ch // 4)
    off = [blocks[i, :, j] for i in range(4) for j in range(4) if i != j]
    assert all(float(b.abs().max()) == 0.0 for b in off)
    assert float(blocks[0, :, 0].abs().max()) > 0
    assert float(unit.pw1["all"].grad[s3.mid:].abs().max()) == 0.0  # channels past the path's width: untouched


def test_separate_group_sharing_gives_each_group_count_its_own_1x1s() -> None:
    from search_spaces.shufflenet_v1 import make_arch

    net = build_supernet(TINY, in_channels=1, num_classes=10, small_input=True, group_sharing="separate")
    arch = make_arch(groups=4, width=0.25, repeats=(1, 1, 1), in_channels=1, num_classes=10, small_input=True)
    net(torch.randn(2, 1, 8, 8), arch).sum().backward()
    unit = net.stages[1][0]
    assert sorted(unit.pw1) == ["2", "4"]
    assert unit.pw1["4"].grad is not None and float(unit.pw1["4"].grad.abs().max()) > 0
    assert unit.pw1["2"].grad is None  # the other group count's weight took no part


def test_extract_refuses_an_arch_outside_the_space() -> None:
    net = build_supernet(TINY, in_channels=1, num_classes=10, small_input=True)
    from search_spaces.shufflenet_v1 import make_arch

    outside = make_arch(groups=3, width=0.25, repeats=(1, 1, 1), in_channels=1, num_classes=10, small_input=True)
    with pytest.raises(ValueError, match="not in the supernet's space"):
        net.extract(outside)


@pytest.mark.parametrize("sampler", ["uniform", "sandwich"])
def test_training_never_samples_a_path_outside_the_budget(tmp_path: Path, data: object, sampler: str) -> None:
    rng = random.Random(0)
    unbounded = [TINY.sample(RandomTrial(rng)) for _ in range(200)]
    assert any(not tiny_fits(a) for a in unbounded) and any(tiny_fits(a) for a in unbounded)  # the budget cuts
    seen: list[object] = []
    cfg = oneshot.OneShotConfig(steps=8, sampler=sampler, batch_size=8, checkpoint_every=4, bn_batches=1)
    run = oneshot.train_supernet(TINY, tiny_fits, data, cfg, tmp_path / "s.safetensors", "k", size=tiny_size,
                                 on_step=lambda step, archs: seen.extend(archs))
    assert len(seen) == (8 if sampler == "uniform" else 24)
    assert all(tiny_fits(a) for a in seen)
    assert len({a.arch_id for a in seen}) >= 2
    assert run.resumed_from == 0 and oneshot.read_meta(run.path)["step"] == "8"


def test_bn_reestimation_changes_running_stats_and_is_seeded(data: object) -> None:
    torch.manual_seed(0)
    net = build_supernet(TINY, in_channels=1, num_classes=10, small_input=True).eval()
    arch = oneshot.sample_path(TINY, tiny_fits, random.Random(0))
    cfg = oneshot.OneShotConfig(bn_batches=3, bn_batch_size=16, seed=5)

    def stats(seed: int) -> list[torch.Tensor]:
        model = net.extract(oneshot.to_proxy(arch, data))
        before = [b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")]
        oneshot.reestimate_bn(model, data, oneshot.OneShotConfig(bn_batches=3, bn_batch_size=16, seed=seed))
        after = [b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")]
        assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # every BN re-estimated
        return after

    a, b, c = stats(5), stats(5), stats(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(a, c, strict=True))
    s1, s2 = oneshot.score_path(net, arch, data, cfg), oneshot.score_path(net, arch, data, cfg)
    assert s1 == s2 and 0.0 <= s1 <= 1.0


_KILLED_RUN = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from objectives import oneshot
from objectives.data import load_dataset
from objectives.flops import analytic_macs
from search_spaces import ShuffleNetV1Space

space = ShuffleNetV1Space(groups=(2, 4), widths=(0.25, 0.5), repeats=((1, 1), (1, 2), (1, 1)), num_classes=10)
data = load_dataset("default", train_size=64, val_size=32, resolution=8, seed=0)
cfg = oneshot.OneShotConfig(steps=10, sampler={sampler!r}, batch_size=8, checkpoint_every=3)

def on_step(step, archs):
    if step == 6:  # step 7 trained, checkpoint of step 6 on disk: die without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)

oneshot.train_supernet(space, lambda a: analytic_macs(a, (64, 64)) / 1e6 <= 0.6, data, cfg, Path({path!r}), "k",
                       size=lambda a: float(analytic_macs(a, (64, 64))), on_step=on_step)
"""


@pytest.mark.parametrize("sampler", ["uniform", "sandwich"])
def test_sigkill_then_resume_gives_the_uninterrupted_checkpoint(tmp_path: Path, data: object, sampler: str) -> None:
    from safetensors.torch import load_file

    killed = tmp_path / "killed.safetensors"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN.format(root=str(ROOT), sampler=sampler, path=str(killed))))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert oneshot.read_meta(killed)["step"] == "6"  # lost one step of an interval of 3, no more

    cfg = oneshot.OneShotConfig(steps=10, sampler=sampler, batch_size=8, checkpoint_every=3)
    resumed = oneshot.train_supernet(TINY, tiny_fits, data, cfg, killed, "k", size=tiny_size)
    assert resumed.resumed_from == 6
    whole = oneshot.train_supernet(TINY, tiny_fits, data, cfg, tmp_path / "whole.safetensors", "k", size=tiny_size)
    assert whole.resumed_from == 0
    a, b = load_file(str(killed)), load_file(str(whole.path))
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert oneshot.read_meta(killed)["step"] == "10"


def test_a_checkpoint_of_another_key_is_refused(tmp_path: Path, data: object) -> None:
    cfg = oneshot.OneShotConfig(steps=2, batch_size=8, checkpoint_every=1)
    run = oneshot.train_supernet(TINY, tiny_fits, data, cfg, tmp_path / "s.safetensors", "one", size=tiny_size)
    with pytest.raises(oneshot.SupernetUnavailable, match="expected 'two'"):
        oneshot.load_supernet(run.path, TINY, data, "two")


def _experiment(tmp_path: Path, sampler: str = "uniform") -> Path:
    path = tmp_path / "oneshot.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: tiny_oneshot
        deploy: {{input: 3x64x64, classes: 10}}
        space: {{groups: [2, 4], widths: [0.25, 0.5], repeats: [[1, 1], [1, 2], [1, 1]]}}
        budget: {{max_mmacs: 0.6}}
        objectives: [oneshot_accuracy, mmacs]
        data: {{name: default, train_size: 64, val_size: 32, resolution: 8}}
        oneshot: {{steps: 3, sampler: {sampler}, batch_size: 8, checkpoint_every: 2, bn_batches: 1, bn_batch_size: 8}}
        latency: {{backend: none}}
        keep_weights: false
        search: {{n_trials: 3, run_dir: {tmp_path / 'run'}, skip_duplicates: false}}
        """))
    return path


def test_a_study_without_its_supernet_refuses_to_start_then_runs_once_trained(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli import main

    exp = _experiment(tmp_path)
    assert main(["search", str(exp), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"shufflenas supernet train {exp}" in err and "oneshot_accuracy" in err
    assert not (tmp_path / "run" / "study.db").exists()  # refused before any study was created

    assert main(["supernet", "train", str(exp), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["resumed_from"] == 0 and first["steps"] == 3 and math.isfinite(first["mean_loss"])
    assert main(["supernet", "train", str(exp), "--json"]) == 0  # complete: nothing to train again
    again = json.loads(capsys.readouterr().out)
    assert again["resumed_from"] == 3 and again["mean_loss"] is None and again["supernet"] == first["supernet"]
    assert main(["search", str(exp), "--no-progress", "--json"]) == 0
    import optuna

    study = optuna.load_study(study_name="tiny_oneshot", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3
    for t in done:
        assert 0.0 <= t.values[0] <= 1.0 and t.user_attrs["oneshot_accuracy"] == t.values[0]
        assert t.user_attrs["supernet"].endswith(".safetensors") and Path(t.user_attrs["supernet"]).exists()
        assert len(t.user_attrs["supernet_key"]) == 16


def test_bad_oneshot_settings_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli import main

    exp = _experiment(tmp_path, sampler="greedy")
    assert main(["supernet", "train", str(exp)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "oneshot.sampler" in err and "greedy" in err
    assert main(["supernet", "train", str(_experiment(tmp_path)), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_studies_made_before_the_oneshot_section_stay_the_same_experiment() -> None:
    from nas.backends.optuna_study import identity
    from nas.experiment import load_experiment

    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    assert exp.oneshot is None and "oneshot" not in exp.to_dict()
    assert exp.oneshot_recipe.sampler == "uniform"  # the defaults when the file has no section
    one = load_experiment(ROOT / "experiments" / "quickstart_oneshot.yaml")
    assert one.to_dict()["oneshot"]["steps"] == 600
    assert type(one).from_stored(one.to_dict()) == one and type(exp).from_stored(exp.to_dict()) == exp
    assert identity(exp.to_dict()) != identity(one.to_dict())


def test_a_family_without_a_supernet_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli import main

    exp = ROOT / "experiments" / "resnext_cifar.yaml"
    assert "resnext" in exp.read_text() and not (ROOT / "search_spaces" / "resnext_supernet.py").exists()
    assert main(["supernet", "train", str(exp), "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "space.family" in err and "has no supernet" in err
    assert not list(tmp_path.iterdir())


def test_fidelity_ranks_the_oneshot_signal_and_keys_its_cache_by_the_supernet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fidelity` on a one-shot experiment: refused (one line, the command) until the supernet is trained,
    then every entry is scored by inherited weights; another recipe is another cache key."""
    from nas.analysis.fidelity_run import proxy_hash
    from nas.cli import main
    from nas.experiment import load_experiment
    from search_spaces import make_arch

    exp = _experiment(tmp_path)
    entries = []
    for i, (g, w, r) in enumerate([(2, 0.25, 1), (4, 0.25, 2), (2, 0.5, 1), (4, 0.25, 1)]):
        a = make_arch(groups=g, width=w, repeats=(1, r, 1), num_classes=10)
        entries.append({"id": f"n{i}", "arch": a.to_dict(), "reference": float(i), "tags": {"groups": g}})
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"name": "tiny", "source": "test", "metric": "made up", "entries": entries}))
    cache = tmp_path / "cache"
    args = ["fidelity", str(exp), "--reference", str(ref), "--cache", str(cache), "--json"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"shufflenas supernet train {exp}" in err
    assert not cache.exists()  # refused before any entry ran

    assert main(["supernet", "train", str(exp), "--json"]) == 0
    capsys.readouterr()
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["signal"] == "oneshot_accuracy" and doc["n"] == 4
    assert all(0.0 <= r["oneshot_accuracy"] <= 1.0 and r["signal"] == r["oneshot_accuracy"] for r in doc["rows"])
    assert len({r["supernet"] for r in doc["rows"]}) == 1 and all(len(r["supernet"]) == 16 for r in doc["rows"])
    assert doc["figures"][0]["name"] == "proxy (oneshot_accuracy)" and "naswot" in {f["name"] for f in doc["figures"]}
    one = load_experiment(exp)
    h = proxy_hash(one)
    assert one.oneshot_recipe.steps == 3
    for field, value in (("steps", 4), ("sampler", "sandwich"), ("group_sharing", "separate"), ("bn_batches", 2)):
        section = one.oneshot_recipe.model_dump() | {field: value}
        assert proxy_hash(type(one).model_validate(one.model_dump() | {"oneshot": section})) != h, \
            f"oneshot.{field} does not change the cache key"
    same = one.oneshot_recipe.model_dump() | {"checkpoint_every": 1, "threads": 2}  # change no weight or score
    assert proxy_hash(type(one).model_validate(one.model_dump() | {"oneshot": same})) == h


def test_a_ray_search_scores_one_shot_and_records_the_supernet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        need: Callable[[str], object]) -> None:
    """Both backends: the Ray backend refuses a one-shot study without its supernet, then scores by it."""
    need("ray.tune")  # a dev dependency: missing under CI is a failure, not a skip
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    from nas.cli import main

    exp = _experiment(tmp_path)
    ray_args = ["search", str(exp), "--backend", "ray", "--workers", "1", "--no-progress", "--json"]
    assert main(ray_args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"shufflenas supernet train {exp}" in err
    assert main(["supernet", "train", str(exp), "--json"]) == 0
    capsys.readouterr()
    assert main(ray_args) == 0
    import optuna

    study = optuna.load_study(study_name="tiny_oneshot", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3
    for t in done:
        assert 0.0 <= t.values[0] <= 1.0 and t.user_attrs["oneshot_accuracy"] == t.values[0]
        assert Path(t.user_attrs["supernet"]).exists() and len(t.user_attrs["supernet_key"]) == 16
