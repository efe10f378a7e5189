"""Single-file ONNX export of an `Arch` or `nn.Module` (what the ONNX Runtime and remote backends run).

The bytes are self-contained (no external-data files) so they can be sent to a device agent
in one HTTP request. The legacy TorchScript exporter is the default: it is fast and needs
no onnxscript at export time; `dynamo=True` uses the torch.export-based exporter.
The model's channel shuffle is the portable reshape-transpose form, which both accept.
"""

from __future__ import annotations

import functools
import io
import warnings
from typing import Any

#: The legacy exporter's opset; the dynamo exporter implements 18 and up, so it gets 18.
OPSET = 17
DYNAMO_OPSET = 18


def as_model(model_or_arch: Any, input_shape_chw: tuple[int, int, int]) -> Any:
    """An eval-mode `nn.Module`; an `Arch` is built with its input channels matched to the shape."""
    from search_spaces import ArchBase, build_model

    if isinstance(model_or_arch, ArchBase):
        arch = model_or_arch
        if arch.in_channels != input_shape_chw[0]:
            arch = arch.with_io(in_channels=input_shape_chw[0], num_classes=arch.num_classes, small_input=arch.small_input)
        model = build_model(arch)
    else:
        model = model_or_arch
    return model.eval()


@functools.lru_cache(maxsize=4)
def _export_arch(arch: Any, input_shape_chw: tuple[int, int, int], dynamo: bool, opset: int | None) -> bytes:
    return _export(arch, input_shape_chw, dynamo=dynamo, opset=opset)


def export_onnx_bytes(
    model_or_arch: Any, input_shape_chw: tuple[int, int, int], *, dynamo: bool = False, opset: int | None = None
) -> bytes:
    """Export to ONNX (batch 1, float32) in memory and return the model bytes.

    An `Arch` (frozen, hashable) is exported once per process and shape: a re-measure, a
    second backend or a cache miss on another thread count reuse the bytes.
    """
    from search_spaces import ArchBase

    if isinstance(model_or_arch, ArchBase):
        return _export_arch(model_or_arch, tuple(input_shape_chw), dynamo, opset)
    return _export(model_or_arch, input_shape_chw, dynamo=dynamo, opset=opset)


def _export(
    model_or_arch: Any, input_shape_chw: tuple[int, int, int], *, dynamo: bool = False, opset: int | None = None
) -> bytes:
    import logging

    import torch

    opset = opset or (DYNAMO_OPSET if dynamo else OPSET)

    model = as_model(model_or_arch, input_shape_chw)
    x = torch.randn(1, *input_shape_chw)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation chatter is not the user's concern
        if dynamo:
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            prog = torch.onnx.export(
                model, (x,), None, dynamo=True, opset_version=opset, input_names=["input"],
                output_names=["output"], verbose=False,
            )
            # the in-memory proto holds every initializer: serialising it gives one file
            buf.write(prog.model_proto.SerializeToString())
        else:
            torch.onnx.export(
                model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                output_names=["output"], do_constant_folding=True,
            )
    data = buf.getvalue()
    if not data:
        raise RuntimeError("ONNX export produced no bytes")
    return data

