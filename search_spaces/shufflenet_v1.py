"""ShuffleNet v1: blocks, model, channel rule, presets (timm's one-family-per-file order)."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from .arch import Arch, StageSpec, round_to_multiple
from .shuffle import channel_shuffle

# ---------------------------------------------------------------------------- blocks


class ShuffleUnit(nn.Module):
    """The paper's unit (Fig. 2b/2c) with a configurable shuffle position.

    stride 1: GConv1x1-BN-ReLU-[shuffle]-DWConv-BN-GConv1x1-BN, add input, ReLU.
    stride 2: the same branch producing (out - in) channels, concatenated with a 3x3
    average-pooled shortcut, ReLU on the branch (the shortcut is already non-negative).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        groups: int,
        stride: int,
        shuffle: str,
        kernel: int,
        mid_ch: int,
        first_grouped: bool,
    ) -> None:
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
        stem_stride = 1 if arch.small_input else 2
        self.stem = nn.Sequential(
            nn.Conv2d(arch.in_channels, arch.stem_channels, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(arch.stem_channels),
            nn.ReLU(inplace=True),
        )
        # small inputs (32x32 and below) keep their resolution: no max-pool
        self.maxpool = nn.Identity() if arch.small_input else nn.MaxPool2d(3, 2, 1)
        units: list[nn.Module] = []
        in_ch = arch.stem_channels
        for si, s in enumerate(arch.stages):
            mid = int(s.mid_channels())
            for r in range(s.repeats):
                first = r == 0
                units.append(
                    ShuffleUnit(
                        in_ch,
                        s.out_channels,
                        groups=s.groups,
                        stride=2 if first else 1,
                        shuffle=s.shuffle,
                        kernel=s.kernel,
                        mid_ch=mid,
                        first_grouped=not (si == 0 and first),
                    )
                )
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
_PRESET_RE = re.compile(r"^shufflenet_v1_g(\d+)_x(\d+)_(\d+)$")


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


PRESETS: dict[str, tuple[int, float]] = {
    preset_name(g, w): (g, w) for g in GROUPS for w in PRESET_WIDTHS
}


def preset(name: str) -> Arch:
    """Preset by name, e.g. `shufflenet_v1_g8_x1_0`."""
    if name not in PRESETS:
        m = _PRESET_RE.match(name)
        hint = "" if m else " (form: shufflenet_v1_g<groups>_x<width, e.g. 0_5>)"
        raise ValueError(f"unknown preset {name!r}{hint}; known presets: {', '.join(PRESETS)}")
    g, w = PRESETS[name]
    return shufflenet_v1(groups=g, width=w)
