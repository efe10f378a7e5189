"""MACs in the ShuffleNet paper's convention: conv and linear multiply-adds only.

`analytic_macs` walks the `Arch` with integer arithmetic (microseconds, no torch model),
so a budget check is cheap enough to run inside the sampler. `hook_macs` counts the
built model with forward hooks; the two agree exactly (property-tested). ptflops is the
independent cross-check: its `aten` backend counts the same thing, its `pytorch` backend
also counts BN, ReLU and pooling (9-14% higher).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from search_spaces import Arch

if TYPE_CHECKING:
    from torch import nn


def _out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


@dataclass(frozen=True)
class StageMacs:
    name: str
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    macs: int


def macs_breakdown(arch: Arch, input_hw: tuple[int, int] = (224, 224)) -> list[StageMacs]:
    """Per-part MACs: stem, each stage, head."""
    h, w = input_hw
    s = 1 if arch.small_input else 2
    parts: list[StageMacs] = []
    h1, w1 = _out(h, 3, s, 1), _out(w, 3, s, 1)
    stem = h1 * w1 * arch.stem_channels * arch.in_channels * 9
    if not arch.small_input:
        h1, w1 = _out(h1, 3, 2, 1), _out(w1, 3, 2, 1)
    parts.append(StageMacs("stem", (h, w), (h1, w1), stem))
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
            h1, w1 = _out(h1, k, stride, k // 2), _out(w1, k, stride, k // 2)
            total += h1 * w1 * mid * k * k  # depthwise
            total += h1 * w1 * branch_out * (mid // g)  # pw2
            in_ch = st.out_channels
        parts.append(StageMacs(f"stage{si + 2}", start, (h1, w1), total))
    parts.append(StageMacs("head", (h1, w1), (1, 1), in_ch * arch.num_classes))
    return parts


def analytic_macs(arch: Arch, input_hw: tuple[int, int] = (224, 224)) -> int:
    """Total MACs at `input_hw` (paper convention). Pure integer arithmetic."""
    return sum(p.macs for p in macs_breakdown(arch, input_hw))


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


def hook_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs counted by forward hooks on Conv2d and Linear of a real forward pass."""
    import torch
    from torch import nn

    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ptflops_macs(model: nn.Module, input_shape: tuple[int, ...], backend: str = "aten") -> int:
    """ptflops' count ('aten': conv+linear like the paper; 'pytorch': also BN/ReLU/pool)."""
    import contextlib
    import io

    from ptflops import get_model_complexity_info

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        macs, _ = get_model_complexity_info(
            model, tuple(input_shape), as_strings=False, print_per_layer_stat=False,
            backend=backend, verbose=False,
        )
    return int(macs)
