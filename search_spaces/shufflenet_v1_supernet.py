"""A weight-sharing supernet over a ShuffleNet v1 space (one-shot NAS).

Every architecture the space can sample is a path through one set of weights:

- width: channel slicing, the first c channels of each layer (every stage's maximum held once);
- depth: a stage of d units runs the first d of its unit slots;
- kernel: the centre k x k of the largest depthwise kernel;
- groups: each 1x1 conv holds one dense weight; a g-group path uses its block diagonal (the
  entries a grouped conv would own) and runs it as a grouped conv, so the path computes exactly
  what the stand-alone network computes while every group count trains the same storage
  (`group_sharing="shared"`); or one such dense weight per group count (`"separate"`, SPOS-style
  choices: group counts share nothing in the 1x1s);
- shuffle placement: no weights.

`extract(arch)` builds the family's own network (`build_model`) with the inherited weights; its
output equals `forward(x, arch)` (same kernels on the same tensors). The supernet is built for
proxy-shaped architectures (`Arch.for_proxy`): its stem and head follow the proxy's input.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .shuffle import channel_shuffle
from .shufflenet_v1 import Arch, build_model, make_arch

BN_EPS = 1e-5  # nn.BatchNorm2d's default, which the stand-alone network uses
BN_MOMENTUM = 0.1
GROUP_SHARING: tuple[str, ...] = ("shared", "separate")


def channel_maxima(space: Any) -> dict[str, Any]:
    """Largest stem, stage, bottleneck and stride-2 branch widths over every arch of `space`.

    Channels come from the family's channel rule for (groups, width, bottleneck ratio); repeats,
    kernels and placements leave them unchanged, so those combinations are all that is enumerated.
    """
    n = space.n_stages
    group_sets = (list(itertools.product(space.groups, repeat=n)) if space.per_stage_groups
                  else [(g,) * n for g in space.groups])
    stem = 0
    out = [0] * n
    mid = [0] * n
    branch = [0] * n
    found = False
    for gs, w, r in itertools.product(group_sets, space.widths, space.bottleneck_ratios):
        try:
            a = make_arch(groups=gs, width=w, repeats=(1,) * n, bottleneck_ratio=r)
        except ValueError:
            continue  # the channel rule cannot build it; the space cannot sample it either
        found = True
        stem = max(stem, a.stem_channels)
        in_ch = a.stem_channels
        for i, s in enumerate(a.stages):
            out[i] = max(out[i], s.out_channels)
            mid[i] = max(mid[i], int(s.mid_channels()))
            branch[i] = max(branch[i], s.out_channels - in_ch)
            in_ch = s.out_channels
    if not found:
        raise ValueError("supernet: no (groups, width, bottleneck ratio) of the space builds a network")
    return {"stem": stem, "out": out, "mid": mid, "branch": branch,
            "repeats": [hi for _lo, hi in space.repeats], "kernel": max(space.kernels)}


def block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A dense (out, in, 1, 1) weight's block diagonal as a grouped conv's (out, in/groups, 1, 1) weight."""
    if groups == 1:
        return weight
    o, i = weight.shape[0], weight.shape[1]
    blocks = weight.reshape(groups, o // groups, groups, i // groups)
    diag = torch.diagonal(blocks, dim1=0, dim2=2)  # (o/g, i/g, g)
    return diag.permute(2, 0, 1).reshape(o, i // groups, 1, 1)


class SlicedBN(nn.Module):
    """BatchNorm over the first c of `channels`: a path of any width reads and updates its slice."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.training:
            self.num_batches_tracked.add_(1)
        # slices of the buffers are views: batch_norm updates the path's running statistics in place
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, BN_MOMENTUM, BN_EPS)

    def state(self, c: int, prefix: str) -> dict[str, torch.Tensor]:
        """The first c channels as an nn.BatchNorm2d state dict under `prefix`."""
        return {f"{prefix}.weight": self.weight[:c], f"{prefix}.bias": self.bias[:c],
                f"{prefix}.running_mean": self.running_mean[:c], f"{prefix}.running_var": self.running_var[:c],
                f"{prefix}.num_batches_tracked": self.num_batches_tracked}


@dataclass(frozen=True)
class UnitPath:
    """What one unit slot runs for a path: the family's ShuffleUnit arguments."""

    in_ch: int
    out_ch: int
    mid: int
    groups: int
    stride: int
    shuffle: str
    kernel: int
    first_grouped: bool


class SuperUnit(nn.Module):
    """One unit slot: the largest 1x1, depthwise and 1x1 weights any path through it needs."""

    def __init__(self, in_max: int, mid_max: int, out_max: int, kernel_max: int, group_keys: tuple[str, ...]) -> None:
        super().__init__()
        # one dense 1x1 weight per key: "all" (every group count shares it) or one per group count
        self.pw1 = nn.ParameterDict({k: nn.Parameter(torch.empty(mid_max, in_max, 1, 1)) for k in group_keys})
        self.bn1 = SlicedBN(mid_max)
        self.dw = nn.Parameter(torch.empty(mid_max, 1, kernel_max, kernel_max))
        self.bn2 = SlicedBN(mid_max)
        self.pw2 = nn.ParameterDict({k: nn.Parameter(torch.empty(out_max, mid_max, 1, 1)) for k in group_keys})
        self.bn3 = SlicedBN(out_max)
        for w in (*self.pw1.values(), self.dw, *self.pw2.values()):
            nn.init.kaiming_uniform_(w, a=5 ** 0.5)  # nn.Conv2d's default initialisation

    def key(self, groups: int) -> str:
        return "all" if "all" in self.pw1 else str(groups)

    def weights(self, p: UnitPath) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pw1, dw, pw2) of path `p`, shaped as the stand-alone unit's conv weights."""
        branch = p.out_ch - p.in_ch if p.stride == 2 else p.out_ch
        k0 = (self.dw.shape[-1] - p.kernel) // 2
        g = self.key(p.groups)
        pw1 = block_diagonal(self.pw1[g][:p.mid, :p.in_ch], p.groups if p.first_grouped else 1)
        dw = self.dw[:p.mid, :, k0:k0 + p.kernel, k0:k0 + p.kernel]
        pw2 = block_diagonal(self.pw2[g][:branch, :p.mid], p.groups)
        return pw1, dw, pw2

    def forward(self, x: torch.Tensor, p: UnitPath) -> torch.Tensor:
        pw1, dw, pw2 = self.weights(p)
        y = torch.relu(self.bn1(F.conv2d(x, pw1, groups=p.groups if p.first_grouped else 1)))
        if p.shuffle in ("before_dw", "both"):
            y = channel_shuffle(y, p.groups)
        y = self.bn2(F.conv2d(y, dw, None, p.stride, p.kernel // 2, 1, p.mid))
        if p.shuffle == "after_dw":
            y = channel_shuffle(y, p.groups)
        y = self.bn3(F.conv2d(y, pw2, groups=p.groups))
        if p.shuffle in ("after_pw2", "both"):
            y = channel_shuffle(y, p.groups)
        if p.stride == 1:
            return torch.relu(y + x)
        return torch.cat((F.avg_pool2d(x, 3, 2, 1), torch.relu(y)), 1)

    def state(self, p: UnitPath, prefix: str) -> dict[str, torch.Tensor]:
        """Path `p` as the family's ShuffleUnit state dict under `prefix`."""
        pw1, dw, pw2 = self.weights(p)
        branch = pw2.shape[0]
        return {f"{prefix}.pw1.weight": pw1, f"{prefix}.dw.weight": dw, f"{prefix}.pw2.weight": pw2,
                **self.bn1.state(p.mid, f"{prefix}.bn1"), **self.bn2.state(p.mid, f"{prefix}.bn2"),
                **self.bn3.state(branch, f"{prefix}.bn3")}


class ShuffleNetV1Supernet(nn.Module):
    """Every architecture of `space` (proxy-shaped: `in_channels`, `num_classes`, `small_input`) as a path."""

    def __init__(self, space: Any, *, in_channels: int, num_classes: int, small_input: bool,
                 group_sharing: str = "shared") -> None:
        super().__init__()
        if group_sharing not in GROUP_SHARING:
            raise ValueError(f"group_sharing must be one of {list(GROUP_SHARING)}, got {group_sharing!r}")
        keys = ("all",) if group_sharing == "shared" else tuple(str(g) for g in space.groups)
        self.space = space
        self.io = {"in_channels": in_channels, "num_classes": num_classes, "small_input": small_input}
        m = channel_maxima(space)
        self.maxima = m
        self.stem = nn.Parameter(torch.empty(m["stem"], in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.stem, a=5 ** 0.5)
        self.stem_bn = SlicedBN(m["stem"])
        stages = []
        in_max = m["stem"]
        for i in range(space.n_stages):
            units = [SuperUnit(in_max, m["mid"][i], m["branch"][i], m["kernel"], keys)]
            units += [SuperUnit(m["out"][i], m["mid"][i], m["out"][i], m["kernel"], keys)
                      for _ in range(m["repeats"][i] - 1)]
            stages.append(nn.ModuleList(units))
            in_max = m["out"][i]
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Parameter(torch.empty(num_classes, in_max))
        nn.init.kaiming_uniform_(self.classifier, a=5 ** 0.5)

    def check(self, arch: Arch) -> None:
        """ValueError unless `arch` is a proxy-shaped path of this supernet."""
        io = {"in_channels": arch.in_channels, "num_classes": arch.num_classes, "small_input": arch.small_input}
        if io != self.io:
            raise ValueError(f"supernet: the arch's input/head {io} differ from the supernet's {self.io} "
                             "(pass arch.for_proxy(...))")
        deploy = arch.with_io(in_channels=self.space.in_channels, num_classes=self.space.num_classes,
                              small_input=self.space.small_input)
        if not self.space.contains(deploy):
            raise ValueError(f"supernet: arch {arch.arch_id} is not in the supernet's space")

    def paths(self, arch: Arch) -> Iterator[tuple[int, int, UnitPath]]:
        """(stage, unit, UnitPath) of every unit `arch` runs, in order."""
        in_ch = arch.stem_channels
        for si, s in enumerate(arch.stages):
            for r in range(s.repeats):
                yield si, r, UnitPath(in_ch, s.out_channels, int(s.mid_channels()), s.groups, 2 if r == 0 else 1,
                                      s.shuffle, s.kernel, not (si == 0 and r == 0))
                in_ch = s.out_channels

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        """The output of path `arch` (not checked against the space: `check` once, run many)."""
        stem = self.stem[:arch.stem_channels]
        x = torch.relu(self.stem_bn(F.conv2d(x, stem, None, 1 if arch.small_input else 2, 1)))
        if not arch.small_input:
            x = F.max_pool2d(x, 3, 2, 1)
        for si, r, p in self.paths(arch):
            x = self.stages[si][r](x, p)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.linear(x, self.classifier[:, :arch.out_channels])

    def path_state(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The path's weights and BN statistics, keyed as `build_model(arch).state_dict()`."""
        c = arch.stem_channels
        state = {"stem.0.weight": self.stem[:c], **self.stem_bn.state(c, "stem.1"),
                 "classifier.weight": self.classifier[:, :arch.out_channels]}
        for j, (si, r, p) in enumerate(self.paths(arch)):
            state.update(self.stages[si][r].state(p, f"features.{j}"))
        return state

    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """The stand-alone network of `arch` (the family's `build_model`) with the inherited weights."""
        self.check(arch)
        with torch.device(self.stem.device):  # made where the supernet's weights are, never on a default device
            model = build_model(arch)
        model.load_state_dict({k: v.detach().clone() for k, v in self.path_state(arch).items()}, strict=True)
        return model


def build_supernet(space: Any, *, in_channels: int, num_classes: int, small_input: bool,
                   group_sharing: str = "shared") -> ShuffleNetV1Supernet:
    """The one builder of the family's supernet (the registry's entry point)."""
    return ShuffleNetV1Supernet(space, in_channels=in_channels, num_classes=num_classes, small_input=small_input,
                                group_sharing=group_sharing)
