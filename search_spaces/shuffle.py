"""The one channel shuffle used by every model, export and test."""

from __future__ import annotations

import torch


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave `groups` channel groups (paper, Fig. 1c).

    Written as reshape-transpose rather than `torch.nn.functional.channel_shuffle`
    because the legacy ONNX exporter rejects `aten::channel_shuffle`; the two agree
    exactly (tested).
    """
    if groups == 1:
        return x
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)
