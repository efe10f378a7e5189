"""MACs in the ShuffleNet paper's convention: conv and linear multiply-adds only.

`analytic_macs` asks the arch's family to walk it with integer arithmetic (microseconds,
no torch model), so a budget check is cheap enough to run inside the sampler. `hook_macs` counts the
built model with forward hooks; the two agree exactly (property-tested). ptflops is the
independent cross-check: its `aten` backend counts the same thing, its `pytorch` backend
also counts BN, ReLU and pooling (9-14% higher).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from search_spaces import MacsPart, family_of

if TYPE_CHECKING:
    from torch import nn

#: kept name for a per-part MACs record
StageMacs = MacsPart


def macs_breakdown(arch: Any, input_hw: tuple[int, int] = (224, 224)) -> list[MacsPart]:
    """Per-part MACs (stem, each stage, head), computed by the arch's family."""
    return family_of(arch).macs_breakdown(arch, tuple(input_hw))


def analytic_macs(arch: Any, input_hw: tuple[int, int] = (224, 224)) -> int:
    """Total MACs at `input_hw` (paper convention). Pure integer arithmetic."""
    return sum(p.macs for p in macs_breakdown(arch, input_hw))


def analytic_params(arch: Any) -> int:
    """Parameter count without building the model (the family's own count)."""
    return int(family_of(arch).analytic_params(arch))


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
