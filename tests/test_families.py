"""Every registered family, tested by being registered (timm style): a new family file is
covered here without new tests.

Per family: random architectures of a small space have analytic MACs equal to a forward-
hook count and ptflops' conv+linear count, analytic params equal to the built model's,
a JSON round trip through the generic `ArchBase.from_dict`, an exported `model.py` whose
state_dict and outputs equal `build_model`'s (torch.equal), ONNX Runtime parity, space
membership and replay, and budget-aware sampling that never yields an over-budget arch
under a budget that does exclude some.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from nas.deploy.standalone import load_module, render_model_source
from objectives.flops import analytic_macs, analytic_params, count_params, hook_macs, ptflops_macs
from search_spaces import (
    ArchBase,
    FixedTrial,
    RandomTrial,
    build_model,
    get_family,
    get_space,
    list_families,
    preset,
)

FAMILIES = list_families()
HW = (32, 32)


def test_the_registry_holds_every_family() -> None:
    assert {"shufflenet_v1", "shufflenet_v2", "resnext"} <= set(FAMILIES)


def small_space(family: str, **io: object) -> object:
    """The family's default space cut to its two narrowest widths, 1-2 units per stage and
    the three smallest values of every other choice (fast: seconds for every family)."""
    default = get_space(family)
    bounds = {k: tuple(sorted(v)[:3]) if isinstance(v, tuple) and v and not isinstance(v[0], (tuple, str)) else v
              for k, v in vars(default).items() if k != "name"}
    bounds.update(widths=tuple(sorted(default.widths)[:2]),
                  repeats=tuple((1, min(hi, 2)) for _lo, hi in default.repeats), **io)
    return type(default)(**bounds)


def archs(family: str, n: int = 3, seed: int = 0, **io: object) -> list:
    space = small_space(family, **io)
    rng = random.Random(seed)
    out: dict[str, object] = {}
    for _ in range(20 * n):
        try:
            a = space.sample(RandomTrial(rng))
        except ValueError:
            continue
        out.setdefault(a.arch_id, a)
        if len(out) == n:
            break
    assert len(out) == n
    return list(out.values())


def _randomise_bn(model: torch.nn.Module) -> None:
    """Random BN statistics so eval-mode outputs exercise every buffer."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_analytic_macs_and_params_equal_hooks_and_ptflops(family: str) -> None:
    for arch in archs(family, 3, in_channels=3, num_classes=10, small_input=True):
        model = build_model(arch)
        macs = analytic_macs(arch, HW)
        assert macs == hook_macs(model, (3, *HW)), arch
        assert analytic_params(arch) == count_params(model), arch
        assert abs(ptflops_macs(model, (3, *HW), "aten") - macs) / macs < 1e-3
    # the deploy stem too (stride-2 stem and max-pool), at a size that is not a power of two
    arch = archs(family, 1, seed=5)[0]
    assert analytic_macs(arch, (80, 72)) == hook_macs(build_model(arch), (3, 80, 72))


@pytest.mark.parametrize("family", FAMILIES)
def test_json_round_trip_dispatches_on_family(family: str) -> None:
    for arch in archs(family, 3, seed=1):
        back = ArchBase.from_json(arch.to_json())
        assert back == arch and type(back) is type(arch) and back.arch_id == arch.arch_id
        assert hash(back) == hash(arch)
        assert arch.to_dict()["family"] == family
        # the v1 name kept for callers dispatches too
        from search_spaces import Arch

        assert Arch.from_dict(arch.to_dict()) == arch
    with pytest.raises(ValueError, match="unknown key"):
        ArchBase.from_dict({**arch.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="family must be one of"):
        ArchBase.from_dict({**arch.to_dict(), "family": "alexnet"})


@pytest.mark.parametrize("family", FAMILIES)
def test_export_model_py_round_trip_is_exact(family: str, tmp_path: Path) -> None:
    for i, arch in enumerate(archs(family, 2, seed=2, in_channels=1, num_classes=10, small_input=True)):
        path = tmp_path / f"m{i}.py"
        path.write_text(render_model_source(arch))
        torch.manual_seed(i)
        ref = build_model(arch)
        _randomise_bn(ref)
        ref.eval()
        net = load_module(path).build().eval()
        assert type(net).__name__ == type(ref).__name__
        sd = ref.state_dict()
        assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in sd.items()}
        net.load_state_dict(sd, strict=True)
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), sd.values(), strict=True))
        x = torch.randn(2, 1, *HW)
        with torch.no_grad():
            assert torch.equal(net(x), ref(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_runtime_matches_torch(family: str) -> None:
    import numpy as np
    import onnxruntime as ort

    from objectives.latency.onnx_export import export_onnx_bytes

    arch = archs(family, 1, seed=3, num_classes=10, small_input=True)[0]
    torch.manual_seed(0)
    model = build_model(arch)
    _randomise_bn(model)
    model.eval()
    sess = ort.InferenceSession(export_onnx_bytes(model, (3, *HW)), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_space_contains_replays_and_hashes(family: str) -> None:
    space = small_space(family)
    for arch in archs(family, 3, seed=4):
        assert space.contains(arch)
        params = {k: v for k, v in (space.decode(arch) or {}).items()}
        params["width"] = space.width_of(arch)
        assert space.sample(FixedTrial(params)) == arch
    assert not space.contains(preset(list(get_family(family).PRESETS)[-1]))  # outside the small bounds
    assert space.space_hash() == type(space)(**{k: v for k, v in vars(space).items()}).space_hash()
    assert space.space_hash() != get_space(family).space_hash()
    labels = [d[0] for d in space.dims()]
    assert labels == [d[0] for d in small_space(family).dims()] and "width" in labels  # stable labels


def test_space_module_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = "import sys, search_spaces.sampling, search_spaces; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("family", FAMILIES)
def test_budget_aware_sampling_never_exceeds_the_budget(family: str) -> None:
    space = get_space(family)
    rng = random.Random(0)
    free = [analytic_macs(space.sample(RandomTrial(rng))) for _ in range(40)]
    budget = sorted(free)[len(free) // 2]  # the median: about half of the free draws exceed it
    assert sum(m > budget for m in free) >= 5, "the budget must exclude some candidates"
    within = 0
    for _ in range(40):
        arch = space.sample(RandomTrial(rng), fits=lambda a: analytic_macs(a) <= budget)
        if analytic_macs(arch) <= budget:
            within += 1
            continue
        # over budget only when no width fits the other choices (the MACs gate refuses it)
        choices = space.decode(arch)
        assert all(analytic_macs(space._build(choices, w)) > budget for w in space.widths), arch
    assert within >= 20


@pytest.mark.parametrize("family", FAMILIES)
def test_presets_build_and_validate(family: str) -> None:
    fam = get_family(family)
    for name in fam.PRESETS:
        arch = preset(name)
        assert arch.family == family and fam.preset(name) == arch
        assert analytic_params(arch) > 0 and analytic_macs(arch) > 0


def test_resnext_reference_set_is_valid_and_at_equal_complexity() -> None:
    """objectives/references/resnext_imagenet.json: the paper's Table 3 networks, each within
    5% of its depth's ResNet in MACs (the table's premise), accuracy = 100 - top-1 error."""
    import json

    path = Path(__file__).parents[1] / "objectives" / "references" / "resnext_imagenet.json"
    doc = json.loads(path.read_text())
    assert doc["metric"] == "ImageNet top-1 (%)" and len(doc["entries"]) == 10
    base: dict[int, int] = {}
    for e in doc["entries"]:
        arch = preset(e["preset"]) if "preset" in e else ArchBase.from_dict(e["arch"])
        assert arch.family == "resnext" and ("preset" in e) != ("arch" in e)
        assert e["reference"] == pytest.approx(100 - e["tags"]["top1_error"])
        macs = analytic_macs(arch)
        base.setdefault(e["tags"]["depth"], macs)
        assert abs(macs / base[e["tags"]["depth"]] - 1) < 0.05, e["id"]


def test_experiment_space_is_validated_by_the_family_space() -> None:
    from nas.experiment import ExperimentError, validate_experiment

    base = {"name": "t", "budget": {"max_mmacs": 400}}
    exp = validate_experiment({**base, "space": {"family": "resnext", "cardinalities": [4, 32]}}, "f.yaml")
    assert exp.build_space().cardinalities == (4, 32)
    old = validate_experiment({**base, "space": {"name": "shufflenet_v1", "groups": [3]}}, "f.yaml")
    assert old.space["family"] == "shufflenet_v1"  # the old key is an alias
    for space, message in (
        ({"family": "resnext", "groups": [1]}, "f.yaml: space.groups: is not a known key of this family"),
        ({"family": "resnext", "cardinalities": [0]}, "f.yaml: space.cardinalities: 0 must be an integer in [1, 128]"),
        ({"family": "alexnet"}, "f.yaml: space: family 'alexnet' is not one of"),
        ({"family": "resnext", "name": "resnext"}, "f.yaml: space: give family (or its old alias name), not both"),
    ):
        with pytest.raises(ExperimentError) as e:
            validate_experiment({**base, "space": space}, "f.yaml")
        assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_latency_table_parts_cover_the_space_and_chain_to_the_model(family: str) -> None:
    from objectives.latency.predictor import arch_parts, enumerate_parts

    space = small_space(family, small_input=True, num_classes=10)
    shape = (3, *HW)
    keys = {p.key for p in enumerate_parts(space, shape)}
    for arch in archs(family, 3, seed=6, small_input=True, num_classes=10):
        parts = arch_parts(arch, shape)
        assert {p.key for p in parts} <= keys  # every part of a sampled arch is in the table
        # the parts' input shapes are the shapes the model's stem, units and head really see
        model = build_model(arch).eval()
        seen: list[tuple[int, ...]] = []
        hooks = [m.register_forward_pre_hook(lambda _m, a, seen=seen: seen.append(tuple(a[0].shape[1:])))
                 for m in _units(model.features)]
        with torch.no_grad():
            model(torch.randn(1, *shape))
        for h in hooks:
            h.remove()
        assert [p.kind for p in parts] == ["stem", *["unit"] * len(seen), "head"]
        assert [p.input_shape for p in parts] == [shape, *seen, tuple(model.features(
            model.maxpool(model.stem(torch.randn(1, *shape)))).shape[1:])]


def _units(seq: torch.nn.Module) -> list[torch.nn.Module]:
    """The units of a model's `features`, nested Sequentials (a ResNeXt's stages) opened."""
    out = []
    for m in seq.children():
        out.extend(_units(m) if isinstance(m, torch.nn.Sequential) else [m])
    return out


def test_lut_build_takes_a_family() -> None:
    import subprocess
    import sys

    def lut(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nas", "lut", "build", "--count", *args],
                              capture_output=True, text=True, timeout=120)

    ok = lut("--family", "shufflenet_v2", "--widths", "0.5", "--kernels", "3,5", "--input", "3x64x64")
    assert ok.returncode == 0 and "distinct parts" in ok.stdout + ok.stderr
    bad = lut("--family", "resnext", "--groups", "3")
    assert bad.returncode == 2 and "family 'resnext' has no such bound" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_a_scalar_where_a_list_belongs_names_the_key(family: str) -> None:
    """Fails before the fix: `widths: 0.5` gave "'float' object is not iterable" (no key named)."""
    from nas.experiment import ExperimentError, validate_experiment

    base = {"name": "t", "budget": {"max_mmacs": 400}}
    default = get_space(family)
    lists = [f for f, v in vars(default).items() if isinstance(v, tuple)]
    assert "widths" in lists and "repeats" in lists
    for key in lists:
        with pytest.raises(ExperimentError) as e:
            validate_experiment({**base, "space": {"family": family, key: 0.5}}, "f.yaml")
        msg = str(e.value)
        assert msg.startswith(f"f.yaml: space.{key}: must be a list such as [") and msg.endswith("got 0.5"), msg
        assert "\n" not in msg
    with pytest.raises(ExperimentError) as e:
        validate_experiment({**base, "space": {"family": family, "repeats": [2, [1, 2]]}}, "f.yaml")
    assert str(e.value).startswith("f.yaml: space.repeats[0]: must be a [low, high] list such as [")
    assert str(e.value).endswith("got 2")


@pytest.mark.parametrize("family", FAMILIES)
def test_latency_references_lie_near_the_space(family: str) -> None:
    """Every candidate of the family's default space up to its largest reference (the space's
    smallest included) has a drift reference within 3x its MACs at the deploy input (ResNeXt's
    only reference was resnext50_32x4d, 4230 MMACs)."""
    import math

    from objectives.latency.drift import nearest_reference

    refs = get_family(family).LATENCY_REFERENCES
    assert refs and all(family_of_preset_is(n, family) for n in refs)
    space, rng = get_space(family), random.Random(0)
    top = max(analytic_macs(preset(n)) for n in refs)
    checked = 0
    for arch in [space.sample(RandomTrial(rng)) for _ in range(30)] + space.extremes():
        macs = analytic_macs(arch)
        if macs > top:
            continue
        checked += 1
        near = analytic_macs(preset(nearest_reference(arch, refs, (3, 224, 224))))
        assert abs(math.log(near / macs)) < math.log(3), (arch, macs, near)
    assert checked >= 5


def family_of_preset_is(name: str, family: str) -> bool:
    from search_spaces import family_of_preset

    fam = family_of_preset(name)
    return fam is not None and fam.name == family


def test_resnext_cifar_candidates_get_a_reference_of_their_size() -> None:
    """Fails before the fix: experiments/resnext_cifar.yaml's 55-400 MMACs candidates were timed
    against resnext50_32x4d (4230 MMACs, 62 ms)."""
    from nas.experiment import load_experiment
    from nas.timing.measure import references
    from objectives.latency.drift import nearest_reference

    exp = load_experiment(Path(__file__).parents[1] / "experiments" / "resnext_cifar.yaml")
    space, rng = exp.build_space(), random.Random(1)
    shape = exp.deploy.shape
    seen = 0
    for _ in range(40):
        arch = space.sample(RandomTrial(rng), fits=exp.fits)
        if not exp.fits(arch):
            continue
        seen += 1
        ref = preset(nearest_reference(arch, references(exp), shape))
        ratio = analytic_macs(ref, shape[1:]) / analytic_macs(arch, shape[1:])
        assert 0.5 <= ratio <= 2, (arch, ratio)
    assert seen >= 20
