"""ResNeXt (and ResNet as cardinality 1): architecture data, blocks, model, presets, MACs, parts.

torchvision's layout ("ResNet V1.5": the stride sits on the grouped 3x3 conv) with the
bottleneck width `int(planes * base_width / 64) * cardinality`, so the presets equal
torchvision's models in parameters and MACs. ShuffleNet's grouped pointwise convolutions
come from this cardinality; here it is searched with the base width, the stage repeats
and a width multiplier (`resnext_space.py`). Imports only torch, the standard library and
`network` (export ships the code `build_model` needs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .network import ArchBase, Block, MacsPart, check_int, conv_out, round_to_multiple, unknown_preset

EXPANSION = 4  # a bottleneck's output is 4x its planes

# ---------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class ResNeXtStage:
    """One stage: `repeats` bottlenecks, the first with stride 2 (stride 1 in the first stage)."""

    planes: int
    repeats: int
    cardinality: int = 32
    base_width: int = 4

    def width(self) -> int:
        """Channels of the grouped 3x3 conv (torchvision's rule)."""
        return int(self.planes * self.base_width / 64) * self.cardinality


@dataclass(frozen=True)
class Arch(ArchBase):
    """A ResNeXt: stem, four bottleneck stages, average pool, FC with bias.

    `small_input` swaps the 7x7 stride-2 stem and its max-pool for a 3x3 stride-1 conv
    (CIFAR-style), so 32 px proxy images keep their resolution; the stages are unchanged.
    """

    FAMILY: ClassVar[str] = "resnext"

    stem_channels: int
    stages: tuple[ResNeXtStage, ...]
    in_channels: int = 3
    num_classes: int = 1000
    small_input: bool = False
    family: str = field(default="resnext")

    STAGE: ClassVar[type] = ResNeXtStage
    STAGE_KEYS: ClassVar[tuple[str, ...]] = ("planes", "repeats")
    FIRST_STAGE: ClassVar[int] = 1

    def _check_stage(self, name: str, index: int, s: ResNeXtStage, in_ch: int) -> int:
        for key in ("planes", "repeats", "cardinality", "base_width"):
            check_int(f"{name}: {key}", getattr(s, key), 1)
        if s.planes * s.base_width < 64:
            raise ValueError(f"{name}: planes*base_width/64 must be >= 1 (the width per group), "
                             f"got {s.planes}*{s.base_width}/64")
        return s.planes * EXPANSION

    @property
    def out_channels(self) -> int:
        return self.stages[-1].planes * EXPANSION


# ---------------------------------------------------------------------------- blocks


class Bottleneck(nn.Module):
    """1x1 reduce, grouped 3x3 (carrying the stride), 1x1 expand; projection shortcut when
    the shape changes."""

    def __init__(self, in_ch: int, planes: int, *, width: int, cardinality: int, stride: int) -> None:
        super().__init__()
        out_ch = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
            if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


def _stem(in_ch: int, out_ch: int, small: bool) -> nn.Sequential:
    conv = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False) if small else nn.Conv2d(in_ch, out_ch, 7, 2, 3, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


# ---------------------------------------------------------------------------- model


def _units(arch: Arch) -> list[tuple[int, ResNeXtStage, int, int]]:
    """(stage index, stage, input channels, stride) of every bottleneck in order."""
    out, in_ch = [], arch.stem_channels
    for si, s in enumerate(arch.stages):
        for r in range(s.repeats):
            out.append((si, s, in_ch, 2 if r == 0 and si > 0 else 1))
            in_ch = s.planes * EXPANSION
    return out


class ResNeXt(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        arch.validate()
        self.stem = _stem(arch.in_channels, arch.stem_channels, arch.small_input)
        self.maxpool = nn.Identity() if arch.small_input else nn.MaxPool2d(3, 2, 1)
        stages: list[list[nn.Module]] = [[] for _ in arch.stages]
        for si, s, in_ch, stride in _units(arch):
            stages[si].append(Bottleneck(in_ch, s.planes, width=s.width(), cardinality=s.cardinality, stride=stride))
        self.features = nn.Sequential(*[nn.Sequential(*blocks) for blocks in stages])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(arch.out_channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.maxpool(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_model(arch: Arch) -> nn.Module:
    return ResNeXt(arch)


def make_arch(
    *,
    cardinality: int = 32,
    base_width: int = 4,
    repeats: tuple[int, ...] = (3, 4, 6, 3),
    width: float = 1.0,
    in_channels: int = 3,
    num_classes: int = 1000,
    small_input: bool = False,
) -> Arch:
    """Arch from the paper's knobs; `width` scales the stem and every stage's planes
    (rounded to a multiple of 8; 1.0 is torchvision's 64/128/256/512)."""
    stages = tuple(
        ResNeXtStage(round_to_multiple(64 * 2**i * width, 8), r, cardinality, base_width)
        for i, r in enumerate(repeats)
    )
    return Arch(round_to_multiple(64 * width, 8), stages, in_channels, num_classes, small_input).validate()


# ---------------------------------------------------------------------------- presets

#: torchvision's names -> (cardinality, base width, stage repeats, width multiplier)
_PRESETS: dict[str, tuple[int, int, tuple[int, ...], float]] = {
    "resnet50": (1, 64, (3, 4, 6, 3), 1.0),
    "resnet101": (1, 64, (3, 4, 23, 3), 1.0),
    "resnext50_32x4d": (32, 4, (3, 4, 6, 3), 1.0),
    "resnext101_32x8d": (32, 8, (3, 4, 23, 3), 1.0),
    "resnext101_64x4d": (64, 4, (3, 4, 23, 3), 1.0),
}
#: small members, not torchvision's: resnext{depth}_{cardinality}x{base width}d_x{width multiplier}
#: (depth 14: one block a stage, 26: two), so drift-aware latency has a reference near the space's
#: candidates at 224x224 (61 to 2402 MMACs, about 2x apart) instead of only resnext50_32x4d's 4230
_PRESETS.update({
    "resnext14_4x4d_x0_25": (4, 4, (1, 1, 1, 1), 0.25),
    "resnext14_32x4d_x0_25": (32, 4, (1, 1, 1, 1), 0.25),
    "resnext26_8x4d_x0_5": (8, 4, (2, 2, 2, 2), 0.5),
    "resnext26_32x4d_x0_5": (32, 4, (2, 2, 2, 2), 0.5),
    "resnext50_32x4d_x0_5": (32, 4, (3, 4, 6, 3), 0.5),
    "resnext50_32x4d_x0_75": (32, 4, (3, 4, 6, 3), 0.75),
})
#: drift-aware latency's reference networks (objectives/latency/drift.py picks the nearest in MACs)
LATENCY_REFERENCES = ("resnext14_4x4d_x0_25", "resnext14_32x4d_x0_25", "resnext26_8x4d_x0_5", "resnext26_32x4d_x0_5",
                      "resnext50_32x4d_x0_5", "resnext50_32x4d_x0_75", "resnext50_32x4d")

PRESETS: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> Arch:
    """A preset by name (224x224, 1000 classes): torchvision's networks and the small references."""
    if name not in _PRESETS:
        raise ValueError(unknown_preset(name, PRESETS))
    c, b, r, w = _PRESETS[name]
    return make_arch(cardinality=c, base_width=b, repeats=r, width=w)


# ---------------------------------------------------------------------------- MACs, params, parts


def _stem_macs(arch: Arch, h: int, w: int) -> tuple[int, tuple[int, int]]:
    k, s, p = (3, 1, 1) if arch.small_input else (7, 2, 3)
    h, w = conv_out(h, k, s, p), conv_out(w, k, s, p)
    macs = h * w * arch.stem_channels * arch.in_channels * k * k
    if not arch.small_input:
        h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
    return macs, (h, w)


def _block_macs(in_ch: int, planes: int, width: int, card: int, stride: int, h: int, w: int) -> tuple[int, int, int]:
    out_ch = planes * EXPANSION
    ho, wo = conv_out(h, 3, stride, 1), conv_out(w, 3, stride, 1)
    macs = h * w * width * in_ch + ho * wo * width * (width // card) * 9 + ho * wo * out_ch * width
    if stride != 1 or in_ch != out_ch:
        macs += ho * wo * out_ch * in_ch
    return macs, ho, wo


def macs_breakdown(arch: Arch, input_hw: tuple[int, int] = (224, 224)) -> list[MacsPart]:
    """Per-part MACs (conv + linear multiply-adds): stem, each stage, head."""
    stem, (h, w) = _stem_macs(arch, *input_hw)
    parts = [MacsPart("stem", (input_hw[0], input_hw[1]), (h, w), stem, arch.stem_channels,
                      "conv3x3 s1" if arch.small_input else "conv7x7 s2 + max-pool")]
    units = _units(arch)
    for si, s in enumerate(arch.stages):
        start, total = (h, w), 0
        for _si, _s, in_ch, stride in (u for u in units if u[0] == si):
            m, h, w = _block_macs(in_ch, s.planes, s.width(), s.cardinality, stride, h, w)
            total += m
        detail = f"{s.repeats} blocks, {s.cardinality}x{s.base_width}d, width {s.width()}"
        parts.append(MacsPart(f"stage{si + 1}", start, (h, w), total, s.planes * EXPANSION, detail))
    parts.append(MacsPart("head", (h, w), (1, 1), arch.out_channels * arch.num_classes, arch.num_classes, "FC"))
    return parts


def analytic_params(arch: Arch) -> int:
    """Parameter count (convs, BN affine, FC with bias) without building."""
    k = 3 if arch.small_input else 7
    n = arch.in_channels * arch.stem_channels * k * k + 2 * arch.stem_channels
    for _si, s, in_ch, stride in _units(arch):
        width, out_ch = s.width(), s.planes * EXPANSION
        n += in_ch * width + width * (width // s.cardinality) * 9 + width * out_ch + 2 * (2 * width + out_ch)
        if stride != 1 or in_ch != out_ch:
            n += in_ch * out_ch + 2 * out_ch
    return n + arch.out_channels * arch.num_classes + arch.num_classes


def summary(arch: Arch) -> dict[str, Any]:
    st = arch.stages
    return {
        "cardinality": "/".join(sorted({str(s.cardinality) for s in st})),
        "base_width": "/".join(sorted({str(s.base_width) for s in st})),
        "repeats": "/".join(str(s.repeats) for s in st),
        "stem": arch.stem_channels,
        "channels": "/".join(str(s.planes * EXPANSION) for s in st),
    }


def blocks(arch: Arch, input_shape: tuple[int, int, int]) -> list[Block]:
    """Every timeable part of `arch` in order (stem, each bottleneck, head)."""
    c, h, w = input_shape
    out = [Block.of("resnext", {"kind": "stem", "in_ch": c, "out_ch": arch.stem_channels, "small_input": arch.small_input,
                   "h": h, "w": w})]
    _, (h, w) = _stem_macs(arch, h, w)
    for _si, s, in_ch, stride in _units(arch):
        out.append(Block.of("resnext", {"kind": "unit", "in_ch": in_ch, "planes": s.planes, "width": s.width(),
                           "cardinality": s.cardinality, "stride": stride, "h": h, "w": w}))
        h, w = conv_out(h, 3, stride, 1), conv_out(w, 3, stride, 1)
    out.append(Block.of("resnext", {"kind": "head", "in_ch": arch.out_channels, "out_ch": arch.num_classes, "h": h, "w": w}))
    return out
