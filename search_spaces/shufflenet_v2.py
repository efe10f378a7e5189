"""ShuffleNet v2: architecture data, blocks, model, channel lists, presets, MACs, parts.

The paper's unit (Ma et al. 2018, Fig. 3c/d): a stride-1 unit splits the channels in
half, transforms one half (1x1, depthwise, 1x1) and concatenates it with the other; a
stride-2 unit transforms both copies of its input; a shuffle with 2 groups follows the
concat. Presets equal torchvision's `shufflenet_v2_x*`. The network alone: its search
space (SPOS's knobs) is `shufflenet_v2_space.py`. Imports only torch, the standard
library, `network` and `shuffle` (export ships the code `build_model` needs).
"""

from __future__ import annotations

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

KERNELS: tuple[int, ...] = (3, 5, 7)

# ---------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class V2Stage:
    """One stage: `len(kernels)` units, the first with stride 2; `kernels` per unit."""

    out_channels: int
    kernels: tuple[int, ...]

    @property
    def repeats(self) -> int:
        return len(self.kernels)


@dataclass(frozen=True)
class Arch(ArchBase):
    """A complete ShuffleNet v2 network: stem, stages, 1x1 conv to `last_channels`, FC.

    `small_input` swaps the stride-2 stem and its max-pool for a stride-1 conv (proxy images).
    """

    FAMILY: ClassVar[str] = "shufflenet_v2"

    stem_channels: int
    stages: tuple[V2Stage, ...]
    last_channels: int = 1024
    in_channels: int = 3
    num_classes: int = 1000
    small_input: bool = False
    family: str = field(default="shufflenet_v2")

    STAGE: ClassVar[type] = V2Stage
    STAGE_KEYS: ClassVar[tuple[str, ...]] = ("out_channels", "kernels")
    POSITIVE: ClassVar[tuple[str, ...]] = ("stem_channels", "last_channels")

    def _check_stage(self, name: str, index: int, s: V2Stage, in_ch: int) -> int:
        check_int(f"{name}: out_channels", s.out_channels, 2)
        if s.out_channels % 2:
            raise ValueError(f"{name}: out_channels {s.out_channels} must be even (the unit splits it in half)")
        if not isinstance(s.kernels, tuple) or not s.kernels:
            raise ValueError(f"{name}: kernels must be a non-empty list (one per unit), got {s.kernels!r}")
        for k in s.kernels:
            check_choice(f"{name}: kernels", k, KERNELS)
        return s.out_channels


# ---------------------------------------------------------------------------- blocks


def _dw(ch: int, k: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(ch, ch, k, stride, k // 2, groups=ch, bias=False), nn.BatchNorm2d(ch)]


def _pw(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class V2Unit(nn.Module):
    """Stride 1: split, transform one half, concat, shuffle. Stride 2: both branches see
    the whole input (the left one depthwise + 1x1), halving the resolution."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, kernel: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_ch // 2
        self.branch1 = nn.Sequential(*_dw(in_ch, kernel, stride), *_pw(in_ch, half)) if stride == 2 else None
        self.branch2 = nn.Sequential(*_pw(in_ch if stride == 2 else half, half), *_dw(half, kernel, stride),
                                     *_pw(half, half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


def _stem(in_ch: int, out_ch: int, small: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1 if small else 2, 1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


def _units(arch: Arch) -> list[tuple[int, int, int, int, int]]:
    """(stage index, input channels, output channels, stride, kernel) of every unit."""
    out, in_ch = [], arch.stem_channels
    for si, s in enumerate(arch.stages):
        for r, k in enumerate(s.kernels):
            out.append((si, in_ch, s.out_channels, 2 if r == 0 else 1, k))
            in_ch = s.out_channels
    return out


# ---------------------------------------------------------------------------- model


class ShuffleNetV2(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        arch.validate()
        self.stem = _stem(arch.in_channels, arch.stem_channels, arch.small_input)
        self.maxpool = nn.Identity() if arch.small_input else nn.MaxPool2d(3, 2, 1)
        self.features = nn.Sequential(*[V2Unit(i, o, stride=s, kernel=k) for _si, i, o, s, k in _units(arch)])
        self.conv_last = nn.Sequential(*_pw(arch.stages[-1].out_channels, arch.last_channels))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(arch.last_channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_last(self.features(self.maxpool(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_model(arch: Arch) -> nn.Module:
    return ShuffleNetV2(arch)


# ---------------------------------------------------------------------------- channel lists and presets

#: the paper's Table 5 (stages 2-4, last conv) per width multiplier
PAPER_CHANNELS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048),
}
STEM = 24


def stage_channels(width: float) -> tuple[int, ...]:
    """Stage and last-conv channels: the paper's lists, else 116*2^i*width rounded to a
    multiple of 4 (even halves) with the last conv of 1x."""
    if width in PAPER_CHANNELS:
        return PAPER_CHANNELS[width]
    return (*(round_to_multiple(116 * 2**i * width, 4) for i in range(3)), 2048 if width > 1.5 else 1024)


def make_arch(
    *,
    width: float = 1.0,
    kernels: tuple[tuple[int, ...], ...] = ((3,) * 4, (3,) * 8, (3,) * 4),
    in_channels: int = 3,
    num_classes: int = 1000,
    small_input: bool = False,
) -> Arch:
    *chans, last = stage_channels(width)
    stages = tuple(V2Stage(c, tuple(k)) for c, k in zip(chans, kernels, strict=True))
    return Arch(STEM, stages, last, in_channels, num_classes, small_input).validate()


#: drift-aware latency's reference networks (the nearest in MACs is used)
LATENCY_REFERENCES = ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")

PRESETS: tuple[str, ...] = ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")


def preset(name: str) -> Arch:
    """torchvision's network of that name (224x224, 1000 classes, 3x3 depthwise kernels)."""
    if name not in PRESETS:
        raise ValueError(unknown_preset(name, PRESETS))
    return make_arch(width=float(name.removeprefix("shufflenet_v2_x").replace("_", ".")))


# ---------------------------------------------------------------------------- MACs, params, parts


def _unit_macs(in_ch: int, out_ch: int, stride: int, k: int, h: int, w: int) -> tuple[int, int, int]:
    half = out_ch // 2
    ho, wo = conv_out(h, k, stride, k // 2), conv_out(w, k, stride, k // 2)
    if stride == 2:
        macs = ho * wo * in_ch * k * k + ho * wo * half * in_ch  # branch1: depthwise, 1x1
        macs += h * w * half * in_ch  # branch2's first 1x1 sees the whole input
    else:
        macs = h * w * half * half
    macs += ho * wo * half * k * k + ho * wo * half * half  # branch2: depthwise, 1x1
    return macs, ho, wo


def macs_breakdown(arch: Arch, input_hw: tuple[int, int] = (224, 224)) -> list[MacsPart]:
    """Per-part MACs (conv + linear multiply-adds): stem, each stage, last conv + head."""
    h, w = input_hw
    s = 1 if arch.small_input else 2
    stem = conv_out(h, 3, s, 1) * conv_out(w, 3, s, 1) * arch.stem_channels * arch.in_channels * 9
    h, w = stem_out_hw(h, w, arch.small_input)
    parts = [MacsPart("stem", (input_hw[0], input_hw[1]), (h, w), stem, arch.stem_channels, "conv3x3")]
    units = _units(arch)
    for si, st in enumerate(arch.stages):
        start, total = (h, w), 0
        for _si, i, o, stride, k in (u for u in units if u[0] == si):
            m, h, w = _unit_macs(i, o, stride, k, h, w)
            total += m
        ks = "/".join(map(str, sorted(set(st.kernels))))
        parts.append(MacsPart(f"stage{si + 2}", start, (h, w), total, st.out_channels, f"{st.repeats} units, k{ks}"))
    last = h * w * arch.last_channels * arch.stages[-1].out_channels
    parts.append(MacsPart("conv5", (h, w), (h, w), last, arch.last_channels, "conv1x1"))
    parts.append(MacsPart("head", (h, w), (1, 1), arch.last_channels * arch.num_classes, arch.num_classes, "FC"))
    return parts


def analytic_params(arch: Arch) -> int:
    """Parameter count (convs, BN affine, FC with bias) without building."""
    n = arch.in_channels * arch.stem_channels * 9 + 2 * arch.stem_channels
    for _si, i, o, stride, k in _units(arch):
        half = o // 2
        if stride == 2:
            n += i * k * k + 2 * i + half * i + 2 * half  # branch1
            n += i * half + 2 * half
        else:
            n += half * half + 2 * half
        n += half * k * k + 2 * half + half * half + 2 * half
    n += arch.stages[-1].out_channels * arch.last_channels + 2 * arch.last_channels
    return n + arch.last_channels * arch.num_classes + arch.num_classes


def summary(arch: Arch) -> dict[str, Any]:
    return {
        "repeats": "/".join(str(s.repeats) for s in arch.stages),
        # per stage: one kernel when its units agree, else each unit's, comma-separated ("3/3,5,7,3/5")
        "kernel": "/".join(str(s.kernels[0]) if len(set(s.kernels)) == 1 else ",".join(map(str, s.kernels))
                           for s in arch.stages),
        "stem": arch.stem_channels,
        "channels": "/".join(str(s.out_channels) for s in arch.stages) + f"/{arch.last_channels}",
    }


def blocks(arch: Arch, input_shape: tuple[int, int, int]) -> list[Block]:
    """Every timeable part of `arch` in order (stem, each unit, last conv + head)."""
    c, h, w = input_shape
    out = [Block.of("v2", {"kind": "stem", "in_ch": c, "out_ch": arch.stem_channels, "small_input": arch.small_input,
                   "h": h, "w": w})]
    h, w = stem_out_hw(h, w, arch.small_input)
    for _si, i, o, stride, k in _units(arch):
        out.append(Block.of("v2", {"kind": "unit", "in_ch": i, "out_ch": o, "stride": stride, "kernel": k, "h": h, "w": w}))
        h, w = conv_out(h, k, stride, k // 2), conv_out(w, k, stride, k // 2)
    out.append(Block.of("v2", {"kind": "head", "in_ch": arch.stages[-1].out_channels, "last": arch.last_channels,
                       "out_ch": arch.num_classes, "h": h, "w": w}))
    return out
