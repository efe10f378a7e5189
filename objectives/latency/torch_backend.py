"""Local PyTorch eager latency (eval, inference mode, explicit thread count)."""

from __future__ import annotations

import time
from typing import Any

from .base import (
    HostBackend,
    LatencyResult,
    check_input_shape,
    clock_runtime,
    device_label,
)
from .base import measure_callable as _measure_callable


class TorchBackend(HostBackend):
    """Times `model(x)` in eager mode; the global thread count is restored afterwards."""

    name = "torch"

    def runtime(self) -> dict[str, str]:
        import torch

        return {**clock_runtime(self.config), "torch": torch.__version__}

    def measure(self, arch_or_model: Any, input_shape: tuple[int, int, int]) -> LatencyResult:
        import torch

        from .onnx_export import as_model

        shape = check_input_shape(input_shape)
        model = as_model(arch_or_model, shape)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, *shape, generator=gen)
        previous = torch.get_num_threads()
        t0 = time.perf_counter()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                stats, again = _measure_callable(lambda: model(x), self.config)
        finally:
            torch.set_num_threads(previous)
        info = self.device_info()
        return LatencyResult(
            median_ms=stats.median_ms, p90_ms=stats.p90_ms, spread=stats.spread, n=stats.n,
            backend=self.name, device=info["fingerprint"], threads=self.threads, runtime=self.runtime(),
            input_shape=shape, p10_ms=stats.p10_ms, min_ms=stats.min_ms, machine=str(info.get("machine", "")),
            device_label=device_label(info), arch_id=getattr(arch_or_model, "arch_id", None), remeasured=again,
            seconds=time.perf_counter() - t0,
        )
