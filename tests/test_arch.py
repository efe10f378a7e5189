"""Architecture types, presets against the paper, builder, shuffle, space, MACs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch

from objectives.flops import analytic_macs, analytic_params, count_params, hook_macs, ptflops_macs
from search_spaces import (
    PLACEMENTS,
    PRESETS,
    Arch,
    RandomTrial,
    ShuffleNetV1Space,
    StageSpec,
    build_model,
    channel_shuffle,
    get_family,
    get_space,
    list_spaces,
    make_arch,
    preset,
    register_family,
)

V1_PRESETS = list(get_family("shufflenet_v1").PRESETS)

# Paper Table 1 (MFLOPs = MMACs, 1x, 224x224) and the official width figures.
TABLE1 = {1: 143, 2: 140, 3: 137, 4: 133, 8: 137}
OFFICIAL = {  # (groups, width): (MMACs, params in M, both rounded in the source)
    (3, 0.5): (38, 0.7), (3, 1.0): (138, 1.9), (3, 1.5): (292, 3.4), (3, 2.0): (524, 5.4),
    (8, 0.5): (40, 1.0), (8, 1.0): (138, 2.4), (8, 1.5): (290, 4.3), (8, 2.0): (522, 6.5),
}
OFFICIAL_CHANNELS = {
    (3, 0.5): [12, 120, 240, 480], (3, 1.0): [24, 240, 480, 960], (3, 1.5): [24, 360, 720, 1440],
    (3, 2.0): [48, 480, 960, 1920], (8, 0.5): [16, 192, 384, 768], (8, 1.0): [24, 384, 768, 1536],
    (8, 1.5): [24, 576, 1152, 2304], (8, 2.0): [48, 768, 1536, 3072],
}


def name(g: int, w: float) -> str:
    return f"shufflenet_v1_g{g}_x{str(w).replace('.', '_')}"


@pytest.mark.parametrize("g", sorted(TABLE1))
def test_table1_complexity(g: int) -> None:
    mmacs = analytic_macs(preset(name(g, 1.0))) / 1e6
    assert abs(mmacs - TABLE1[g]) / TABLE1[g] <= 0.015, mmacs


@pytest.mark.parametrize("gw", sorted(OFFICIAL))
def test_official_width_presets(gw: tuple[int, float]) -> None:
    arch = preset(name(*gw))
    assert [arch.stem_channels, *(s.out_channels for s in arch.stages)] == OFFICIAL_CHANNELS[gw]
    mmacs, mparams = OFFICIAL[gw]
    assert abs(analytic_macs(arch) / 1e6 - mmacs) / mmacs <= 0.015
    params = count_params(build_model(arch))
    assert params == analytic_params(arch)
    assert abs(params / 1e6 - mparams) <= 0.05 + 0.015 * mparams  # source rounds to 0.1 M


def test_every_preset_is_valid_and_named_like_torchvision() -> None:
    assert "shufflenet_v1_g3_x0_5" in PRESETS and "shufflenet_v1_g8_x1_0" in PRESETS
    assert "shufflenet_v1_g4_x0_25" in PRESETS
    for n in PRESETS:
        preset(n).validate()


@pytest.mark.parametrize("n", V1_PRESETS)
def test_preset_macs_equal_hooks_and_ptflops(n: str) -> None:
    arch = preset(n)
    model = build_model(arch)
    macs = analytic_macs(arch)
    assert macs == hook_macs(model, (3, 224, 224))
    # ptflops' aten backend counts conv+linear like the paper; its default adds BN/ReLU/pool
    assert abs(ptflops_macs(model, (3, 224, 224), "aten") - macs) / macs < 1e-3
    assert ptflops_macs(model, (3, 224, 224), "pytorch") > macs


WIDE_SPACE = ShuffleNetV1Space(
    per_stage_groups=True,
    widths=(0.25, 0.5, 0.75, 1.0, 1.25),
    repeats=((1, 3), (1, 4), (1, 3)),
    placements=PLACEMENTS,
    kernels=(3, 5, 7),
    bottleneck_ratios=(0.125, 0.25, 0.5),
)


def test_analytic_macs_equal_hook_count_on_200_random_archs() -> None:
    rng = random.Random(0)
    for _i in range(200):
        arch = WIDE_SPACE.sample(RandomTrial(rng))
        hw = rng.choice([(32, 32), (64, 48), (96, 96), (224, 224)])
        small = hw[0] <= 32 and rng.random() < 0.5
        arch = arch.with_io(in_channels=rng.choice([1, 3]), num_classes=rng.choice([10, 1000]), small_input=small)
        model = build_model(arch)
        assert analytic_macs(arch, hw) == hook_macs(model, (arch.in_channels, *hw)), arch
        assert analytic_params(arch) == count_params(model)
        assert WIDE_SPACE.contains(arch.with_io(in_channels=3, num_classes=1000, small_input=False))


@pytest.mark.parametrize("n", V1_PRESETS)
def test_forward_backward_every_preset(n: str) -> None:
    torch.manual_seed(0)
    arch = preset(n)
    for hw, small, batch in (((224, 224), False, 1), ((32, 32), True, 2)):
        model = build_model(arch.with_io(in_channels=3, num_classes=10, small_input=small)).train()
        if batch == 1:  # BN needs >1 value per channel in training mode; eval stats suffice here
            model.eval()
        out = model(torch.randn(batch, 3, *hw))
        assert out.shape == (batch, 10)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_channel_shuffle_equals_torch(groups: int) -> None:
    x = torch.randn(2, 48, 5, 7)
    assert torch.equal(channel_shuffle(x, groups), torch.nn.ChannelShuffle(groups)(x))


def test_shuffle_placements_change_the_function() -> None:
    torch.manual_seed(0)
    outs = []
    for p in PLACEMENTS:
        arch = make_arch(groups=3, width=0.5, repeats=(1, 1, 1), shuffle=p, num_classes=10)
        torch.manual_seed(0)
        m = build_model(arch).eval()
        torch.manual_seed(1)
        outs.append(m(torch.randn(1, 3, 64, 64)))
    assert len({tuple(o.flatten().tolist()) for o in outs}) == len(PLACEMENTS)


def test_json_round_trip_and_stable_id_across_processes() -> None:
    arch = preset("shufflenet_v1_g3_x0_5")
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_dict(json.loads(arch.to_json(indent=2))).arch_id == arch.arch_id
    code = "from search_spaces import preset; print(preset('shufflenet_v1_g3_x0_5').arch_id)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={
        "PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    assert other.stdout.strip() == arch.arch_id


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: StageSpec(250, 8, 3), "stage 3: out_channels 250 is not divisible by groups=3"),
        (lambda s: StageSpec(486, 8, 3), "stage 3: out_channels 486 is not divisible by 4*groups=12"),
        (lambda s: StageSpec(480, 0, 3), "stage 3: repeats must be >= 1, got 0"),
        (lambda s: StageSpec(480, 8, 3, shuffle="middle"), "stage 3: shuffle must be one of"),
        (lambda s: StageSpec(480, 8, 3, kernel=4), "stage 3: kernel must be one of [3, 5, 7], got 4"),
        (lambda s: StageSpec(480, 8, 3, bottleneck_ratio=1.5), "stage 3: bottleneck_ratio must be in (0, 1]"),
        (lambda s: StageSpec(120, 8, 3), "stage 3: out_channels 120 must exceed its input channels 240"),
        (lambda s: StageSpec(480, 8, 7), "stage 3: out_channels 480 is not divisible by groups=7"),
    ],
)
def test_invalid_arch_messages(mutate, message: str) -> None:
    arch = preset("shufflenet_v1_g3_x1_0")
    stages = list(arch.stages)
    stages[1] = mutate(stages[1])
    with pytest.raises(ValueError) as e:
        Arch(arch.stem_channels, tuple(stages)).validate()
    assert message in str(e.value)


def test_from_dict_errors_name_the_key() -> None:
    d = preset("shufflenet_v1_g3_x1_0").to_dict()
    with pytest.raises(ValueError, match="unknown key"):
        Arch.from_dict({**d, "colour": 1})
    with pytest.raises(ValueError, match="stem_channels must be an integer, got '24'"):
        Arch.from_dict({**d, "stem_channels": "24"})
    with pytest.raises(ValueError, match=r"stages\[0\]: missing required key 'groups'"):
        Arch.from_dict({**d, "stages": [{"out_channels": 240, "repeats": 4}]})


def test_space_sampling_contains_hash_and_registry() -> None:
    space = get_space("shufflenet_v1", groups=[3, 8], widths=[0.5, 1.0])
    assert "shufflenet_v1" in list_spaces()
    rng = random.Random(1)
    archs = [space.sample(RandomTrial(rng)) for _ in range(20)]
    assert all(space.contains(a) for a in archs)
    assert not space.contains(preset("shufflenet_v1_g1_x1_0"))
    assert space.space_hash() == get_space("shufflenet_v1", groups=(3, 8), widths=(0.5, 1.0)).space_hash()
    assert space.space_hash() != ShuffleNetV1Space().space_hash()
    with pytest.raises(ValueError, match="already registered"):
        register_family(get_family("shufflenet_v1").model, ShuffleNetV1Space)
    with pytest.raises(ValueError, match="space.groups: 5 is not one of"):
        ShuffleNetV1Space(groups=(5,))
    # labelled choices replay to the same arch (Ray configs, Optuna params)
    params = {"groups": 8, "width": 0.5, "repeats_stage2": 3, "repeats_stage3": 5, "repeats_stage4": 2}
    arch = space.from_params(params)
    assert arch.stages[0].groups == 8 and [s.repeats for s in arch.stages] == [3, 5, 2]


def test_budget_aware_sampling_only_draws_fitting_widths() -> None:
    space = ShuffleNetV1Space()
    rng = random.Random(2)
    fits = lambda a: analytic_macs(a) <= 40e6  # noqa: E731
    archs = [space.sample(RandomTrial(rng), fits=fits) for _ in range(50)]
    share = sum(fits(a) for a in archs) / len(archs)
    assert share >= 0.9  # only repeats the narrowest width cannot fit fall through


def test_ray_space_matches_parameter_names(need: Callable[[str], object]) -> None:
    need("ray")  # ray[tune] is a dev dependency: missing under CI is a failure
    space = ShuffleNetV1Space()
    assert {"groups", "width", "repeats_stage2", "shuffle"} <= set(space.ray_space()) | {"shuffle"}


def test_a_preset_typo_suggests_the_close_names() -> None:
    """Fails before the fix: a typo printed all 39 preset names in one 1,400-character line."""
    with pytest.raises(ValueError) as e:
        preset("shufflenet_v1_g3_x0_55")
    msg = str(e.value)
    assert "did you mean" in msg and "shufflenet_v1_g3_x0_5" in msg and len(msg) < 160, msg
    with pytest.raises(ValueError) as e:
        preset("alexnet")
    assert len(str(e.value)) < 160 and "e.g." in str(e.value) and "resnet50" in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="did you mean resnet50"):
        get_family("resnext").preset("resnet5O")
    cli = subprocess.run([sys.executable, "-m", "nas", "describe", "shufflenet_v1_g3_x0_55"], capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and len(cli.stderr) < 220
    assert "did you mean shufflenet_v1_g3_x0_5" in cli.stderr
