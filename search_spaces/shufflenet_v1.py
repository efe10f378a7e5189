"""ShuffleNet v1 (Zhang et al. 2018): architecture data, blocks, model, channel rule,
presets, analytic MACs and params, latency parts.

The network alone (timm's order: data, blocks, model, helpers, presets); its search space
is `shufflenet_v1_space.py`. Imports only torch, the standard library, `network` and
`shuffle`, so `shufflenas export` can ship the code `build_model` needs as a torch-only
model.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .network import (
    ArchBase,
    Block,
    MacsPart,
    check_choice,
    check_int,
    conv_out,
    round_to_multiple,
    stem_out_hw,
    unknown_preset,
)
from .shuffle import channel_shuffle

PLACEMENTS: tuple[str, ...] = ("before_dw", "after_dw", "after_pw2", "both", "none")
KERNELS: tuple[int, ...] = (3, 5, 7)

# ---------------------------------------------------------------------------- architecture

@dataclass(frozen=True)
class StageSpec:
    """One stage: `repeats` units, the first with stride 2 (paper, Table 1)."""

    out_channels: int
    repeats: int
    groups: int
    shuffle: str = "before_dw"
    kernel: int = 3
    bottleneck_ratio: float = 0.25

    def mid_channels(self) -> float:
        """Bottleneck width; the official code uses out_channels // 4."""
        return self.out_channels * self.bottleneck_ratio


@dataclass(frozen=True)
class Arch(ArchBase):
    """A complete ShuffleNet v1 network.

    `small_input` swaps the stride-2 stem conv and max-pool for a stride-1 conv, as for
    32x32 proxy images; the body (stages) is unchanged, so proxy and deploy models share
    every searched choice.
    """

    FAMILY: ClassVar[str] = "shufflenet_v1"

    stem_channels: int
    stages: tuple[StageSpec, ...]
    in_channels: int = 3
    num_classes: int = 1000
    small_input: bool = False
    family: str = field(default="shufflenet_v1")

    STAGE: ClassVar[type] = StageSpec
    STAGE_KEYS: ClassVar[tuple[str, ...]] = ("out_channels", "repeats", "groups")

    def _check_stage(self, name: str, index: int, s: StageSpec, in_ch: int) -> int:
        for key in ("out_channels", "repeats", "groups"):
            check_int(f"{name}: {key}", getattr(s, key), 1)
        check_choice(f"{name}: shuffle", s.shuffle, PLACEMENTS)
        check_choice(f"{name}: kernel", s.kernel, KERNELS)
        r = s.bottleneck_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise ValueError(f"{name}: bottleneck_ratio must be in (0, 1], got {r!r}")
        g, mid = s.groups, s.mid_channels()
        if s.out_channels % g:
            raise ValueError(f"{name}: out_channels {s.out_channels} is not divisible by groups={g}")
        whole = float(mid).is_integer() and mid >= 1
        if not whole or int(mid) % g:
            if r == 0.25:
                raise ValueError(f"{name}: out_channels {s.out_channels} is not divisible by 4*groups={4 * g}")
            if not whole:
                raise ValueError(f"{name}: out_channels*bottleneck_ratio must be a positive integer, "
                                 f"got {s.out_channels}*{r}={mid}")
            raise ValueError(f"{name}: bottleneck channels {int(mid)} (out_channels*bottleneck_ratio) "
                             f"are not divisible by groups={g}")
        if s.out_channels <= in_ch:
            raise ValueError(f"{name}: out_channels {s.out_channels} must exceed its input channels {in_ch} "
                             "(the stride-2 unit concatenates the input with new channels)")
        if (s.out_channels - in_ch) % g:
            raise ValueError(f"{name}: out_channels - input channels = {s.out_channels}-{in_ch} is not "
                             f"divisible by groups={g}")
        # the first pointwise conv of every stage but the first is grouped over its input
        if index > 0 and in_ch % g:
            raise ValueError(f"{name}: input channels {in_ch} are not divisible by groups={g}")
        return s.out_channels

    @property
    def out_channels(self) -> int:
        return self.stages[-1].out_channels


# ---------------------------------------------------------------------------- blocks


class ShuffleUnit(nn.Module):
    """The paper's unit (Fig. 2b/2c) with a configurable shuffle position.

    stride 1: GConv1x1-BN-ReLU-[shuffle]-DWConv-BN-GConv1x1-BN, add input, ReLU.
    stride 2: the same branch producing (out - in) channels, concatenated with a 3x3
    average-pooled shortcut, ReLU on the branch (the shortcut is already non-negative).
    """

    def __init__(self, in_ch: int, out_ch: int, *, groups: int, stride: int, shuffle: str, kernel: int,
                 mid_ch: int, first_grouped: bool) -> None:
        super().__init__()
        self.stride = stride
        self.groups = groups
        self.shuffle = shuffle
        branch_out = out_ch - in_ch if stride == 2 else out_ch
        # stage 2's first pointwise conv is not grouped: its input is too narrow (paper)
        self.pw1 = nn.Conv2d(in_ch, mid_ch, 1, groups=groups if first_grouped else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.dw = nn.Conv2d(mid_ch, mid_ch, kernel, stride, kernel // 2, groups=mid_ch, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.pw2 = nn.Conv2d(mid_ch, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.pw1(x)))
        if self.shuffle in ("before_dw", "both"):
            y = channel_shuffle(y, self.groups)
        y = self.bn2(self.dw(y))
        if self.shuffle == "after_dw":
            y = channel_shuffle(y, self.groups)
        y = self.bn3(self.pw2(y))
        if self.shuffle in ("after_pw2", "both"):
            y = channel_shuffle(y, self.groups)
        if self.pool is None:
            return torch.relu(y + x)
        return torch.cat((self.pool(x), torch.relu(y)), 1)


# ---------------------------------------------------------------------------- model


class ShuffleNetV1(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        arch.validate()
        self.stem = nn.Sequential(
            nn.Conv2d(arch.in_channels, arch.stem_channels, 3, 1 if arch.small_input else 2, 1, bias=False),
            nn.BatchNorm2d(arch.stem_channels), nn.ReLU(inplace=True))
        # small inputs (32x32 and below) keep their resolution: no max-pool
        self.maxpool = nn.Identity() if arch.small_input else nn.MaxPool2d(3, 2, 1)
        units: list[nn.Module] = []
        in_ch = arch.stem_channels
        for si, s in enumerate(arch.stages):
            for r in range(s.repeats):
                units.append(ShuffleUnit(in_ch, s.out_channels, groups=s.groups, stride=2 if r == 0 else 1,
                                         shuffle=s.shuffle, kernel=s.kernel, mid_ch=int(s.mid_channels()),
                                         first_grouped=not (si == 0 and r == 0)))
                in_ch = s.out_channels
        self.features = nn.Sequential(*units)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # the official classifier has no bias
        self.classifier = nn.Linear(in_ch, arch.num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.maxpool(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_model(arch: Arch) -> nn.Module:
    """The one builder: an `Arch` in, an `nn.Module` out."""
    return ShuffleNetV1(arch)


# ---------------------------------------------------------------------------- channel rule

#: Paper Table 1, stage 2 output channels at 1x; stages 3 and 4 double it.
BASE_CHANNELS: dict[int, int] = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
GROUPS: tuple[int, ...] = tuple(BASE_CHANNELS)
#: The official implementation's stem widths where they differ from the rule below.
OFFICIAL_STEM: dict[tuple[int, float], int] = {(3, 1.5): 24, (8, 1.5): 24}
STEM_1X = 24


def stage_channels(
    groups: tuple[int, ...], width: float, n_stages: int = 3, bottleneck_ratio: float = 0.25
) -> tuple[int, list[int]]:
    """Channels for a width multiplier: (stem, [stage out channels]).

    Rule (reproduces every channel list in the paper and the official code): stage i gets
    `BASE[g_i] * 2**i * width` rounded to the nearest multiple of `4*lcm(g_i, g_{i+1})`,
    so the bottleneck (1/4) divides by its groups and the next stage's grouped input
    divides too (other bottleneck ratios r use `lcm/r` in place of `4*lcm`). The stem is `24*width` rounded up to a multiple of stage 2's groups
    (official exception: 24 at 1.5x). Per-stage groups use the mean base width.
    """
    if len(groups) != n_stages:
        raise ValueError(f"groups needs {n_stages} entries (one per stage), got {list(groups)}")
    base = sum(BASE_CHANNELS[g] for g in groups) / n_stages if len(set(groups)) > 1 else BASE_CHANNELS[groups[0]]
    chans = []
    for i, g in enumerate(groups):
        nxt = groups[i + 1] if i + 1 < n_stages else g
        m = round(1 / bottleneck_ratio) * math.lcm(g, nxt)
        c = round_to_multiple(base * 2**i * width, m)
        if chans and c <= chans[-1]:  # a stride-2 unit must add channels: next multiple up
            c = (chans[-1] // m + 1) * m
        chans.append(c)
    g0 = groups[0]
    if len(set(groups)) == 1 and (g0, width) in OFFICIAL_STEM:
        stem = OFFICIAL_STEM[(g0, width)]
    else:
        stem = max(g0, math.ceil(STEM_1X * width / g0) * g0)
        if stem >= chans[0]:  # the stride-2 unit must add channels
            stem = max(g0, chans[0] // 2 // g0 * g0)
    return stem, chans


def make_arch(
    *,
    groups: int | tuple[int, ...],
    width: float,
    repeats: tuple[int, ...] = (4, 8, 4),
    shuffle: str | tuple[str, ...] = "before_dw",
    kernel: int | tuple[int, ...] = 3,
    bottleneck_ratio: float = 0.25,
    in_channels: int = 3,
    num_classes: int = 1000,
    small_input: bool = False,
) -> Arch:
    """Arch from the paper's knobs; scalars apply to every stage."""
    n = len(repeats)
    gs = (groups,) * n if isinstance(groups, int) else tuple(groups)
    sh = (shuffle,) * n if isinstance(shuffle, str) else tuple(shuffle)
    ks = (kernel,) * n if isinstance(kernel, int) else tuple(kernel)
    stem, chans = stage_channels(gs, width, n, bottleneck_ratio)
    stages = tuple(
        StageSpec(out_channels=c, repeats=r, groups=g, shuffle=p, kernel=k, bottleneck_ratio=bottleneck_ratio)
        for c, r, g, p, k in zip(chans, repeats, gs, sh, ks, strict=False)
    )
    return Arch(stem, stages, in_channels=in_channels, num_classes=num_classes, small_input=small_input).validate()


# ---------------------------------------------------------------------------- presets

PRESET_WIDTHS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def preset_name(groups: int, width: float) -> str:
    """torchvision-style name: shufflenet_v1_g3_x0_5."""
    whole, frac = f"{width:g}".split(".") if "." in f"{width:g}" else (f"{width:g}", "0")
    return f"shufflenet_v1_g{groups}_x{whole}_{frac}"


def shufflenet_v1(*, groups: int = 3, width: float = 1.0) -> Arch:
    """The paper's network (Table 1) at a width multiplier, 224x224 / 1000 classes."""
    if groups not in BASE_CHANNELS:
        raise ValueError(f"groups must be one of {list(BASE_CHANNELS)}, got {groups!r}")
    if not isinstance(width, (int, float)) or isinstance(width, bool) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return make_arch(groups=groups, width=float(width))


#: drift-aware latency's reference networks (objectives/latency/drift.py picks the nearest in MACs and
#: groups): g1/g3/g8 across widths, since a reference of another group count drifted 6-7% apart under
#: contention (bench/latency_drift.py)
LATENCY_REFERENCES = ("shufflenet_v1_g3_x0_25", "shufflenet_v1_g8_x0_25", "shufflenet_v1_g1_x0_5",
                      "shufflenet_v1_g3_x0_5", "shufflenet_v1_g8_x0_5", "shufflenet_v1_g1_x1_0",
                      "shufflenet_v1_g3_x1_0", "shufflenet_v1_g8_x1_0", "shufflenet_v1_g3_x1_5",
                      "shufflenet_v1_g1_x2_0", "shufflenet_v1_g8_x2_0")

PRESETS: dict[str, tuple[int, float]] = {
    preset_name(g, w): (g, w) for g in GROUPS for w in PRESET_WIDTHS
}


def preset(name: str) -> Arch:
    """Preset by name, e.g. `shufflenet_v1_g8_x1_0`."""
    if name not in PRESETS:
        raise ValueError(unknown_preset(name, PRESETS, ("shufflenet_v1_g3_x1_0", "shufflenet_v1_g8_x0_5")))
    g, w = PRESETS[name]
    return shufflenet_v1(groups=g, width=w)


# ---------------------------------------------------------------------------- MACs, params, parts


def macs_breakdown(arch: Arch, input_hw: tuple[int, int] = (224, 224)) -> list[MacsPart]:
    """Per-part MACs (conv + linear multiply-adds): stem, each stage, head."""
    h, w = input_hw
    s = 1 if arch.small_input else 2
    stem = conv_out(h, 3, s, 1) * conv_out(w, 3, s, 1) * arch.stem_channels * arch.in_channels * 9
    h1, w1 = stem_out_hw(h, w, arch.small_input)
    parts = [MacsPart("stem", (h, w), (h1, w1), stem, arch.stem_channels, "conv3x3")]
    in_ch = arch.stem_channels
    for si, st in enumerate(arch.stages):
        mid = int(st.mid_channels())
        g, k = st.groups, st.kernel
        start = (h1, w1)
        total = 0
        for r in range(st.repeats):
            stride = 2 if r == 0 else 1
            g1 = 1 if (si == 0 and r == 0) else g
            branch_out = st.out_channels - in_ch if stride == 2 else st.out_channels
            total += h1 * w1 * mid * (in_ch // g1)  # pw1 at input resolution
            h1, w1 = conv_out(h1, k, stride, k // 2), conv_out(w1, k, stride, k // 2)
            total += h1 * w1 * mid * k * k  # depthwise
            total += h1 * w1 * branch_out * (mid // g)  # pw2
            in_ch = st.out_channels
        detail = f"{st.repeats} units, g{g}, k{k}, {st.shuffle}, mid {mid}"
        parts.append(MacsPart(f"stage{si + 2}", start, (h1, w1), total, st.out_channels, detail))
    parts.append(MacsPart("head", (h1, w1), (1, 1), in_ch * arch.num_classes, arch.num_classes, "FC"))
    return parts


def analytic_params(arch: Arch) -> int:
    """Parameter count (conv, BN affine, classifier without bias) without building."""
    n = arch.in_channels * arch.stem_channels * 9 + 2 * arch.stem_channels
    in_ch = arch.stem_channels
    for si, st in enumerate(arch.stages):
        mid = int(st.mid_channels())
        for r in range(st.repeats):
            g1 = 1 if (si == 0 and r == 0) else st.groups
            branch_out = st.out_channels - in_ch if r == 0 else st.out_channels
            n += mid * (in_ch // g1) + 2 * mid
            n += mid * st.kernel**2 + 2 * mid
            n += branch_out * (mid // st.groups) + 2 * branch_out
            in_ch = st.out_channels
    return n + in_ch * arch.num_classes


def summary(arch: Arch) -> dict[str, Any]:
    """Flat columns for result tables (one value, or a/b/c when stages differ)."""
    def join(values: list[Any]) -> str:
        return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))

    st = arch.stages
    return {
        "groups": join([s.groups for s in st]),
        "repeats": "/".join(str(s.repeats) for s in st),
        "shuffle": join([s.shuffle for s in st]),
        "kernel": join([s.kernel for s in st]),
        "bottleneck_ratio": join([s.bottleneck_ratio for s in st]),
        "stem": arch.stem_channels,
        "channels": "/".join(str(s.out_channels) for s in st),
    }


def _block(kind: str, in_ch: int, out_ch: int, h: int, w: int, **kw: Any) -> Block:
    spec: dict[str, Any] = {"kind": kind, "in_ch": in_ch, "out_ch": out_ch, "h": h, "w": w, "mid": 0, "groups": 1,
                            "first_grouped": True, "stride": 1, "kernel": 3, "placement": "none",
                            "small_input": False, **kw}
    hw = f"{h}x{w}"
    if kind == "stem":
        key = f"stem:in={in_ch},out={out_ch},small={int(spec['small_input'])},hw={hw}"
    elif kind == "head":
        key = f"head:in={in_ch},classes={out_ch},hw={hw}"
    else:
        key = (f"unit:in={in_ch},out={out_ch},mid={spec['mid']},g={spec['groups']},fg={int(spec['first_grouped'])},"
               f"s={spec['stride']},k={spec['kernel']},p={spec['placement']},hw={hw}")
    return Block(key, (in_ch, h, w), tuple(spec.items()))


def blocks(arch: Arch, input_shape: tuple[int, int, int]) -> list[Block]:
    """Every timeable part of `arch` in order, repeated units included (a LUT sums them)."""
    c, h, w = input_shape
    out = [_block("stem", c, arch.stem_channels, h, w, small_input=arch.small_input)]
    h, w = stem_out_hw(h, w, arch.small_input)
    in_ch = arch.stem_channels
    for si, st in enumerate(arch.stages):
        for r in range(st.repeats):
            stride = 2 if r == 0 else 1
            out.append(_block("unit", in_ch, st.out_channels, h, w, mid=int(st.mid_channels()), groups=st.groups,
                              first_grouped=not (si == 0 and r == 0), stride=stride, kernel=st.kernel,
                              placement=st.shuffle))
            h, w = conv_out(h, st.kernel, stride, st.kernel // 2), conv_out(w, st.kernel, stride, st.kernel // 2)
            in_ch = st.out_channels
    out.append(_block("head", in_ch, arch.num_classes, h, w))
    return out
