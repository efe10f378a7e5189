"""Local ONNX Runtime latency: the same single-file ONNX a device agent would receive."""

from __future__ import annotations

import time
from typing import Any

from .base import (
    HostBackend,
    LatencyResult,
    MeasureConfig,
    check_input_shape,
    clock_runtime,
    device_label,
)
from .base import measure_callable as _measure_callable


def make_session(onnx_bytes: bytes, threads: int = 1) -> Any:
    """CPU session from bytes, set up exactly as the device agent sets up its own."""
    import onnxruntime as ort

    from .agent import session_options

    return ort.InferenceSession(onnx_bytes, sess_options=session_options(threads), providers=["CPUExecutionProvider"])


def profile_onnx(onnx_bytes: bytes, input_shape: tuple[int, int, int], threads: int = 1, runs: int = 1,
                 skip: int | None = None) -> dict[str, Any]:
    """Per-node kernel times of the optimised graph on this host (the agent's `profile_model`)."""
    import tempfile

    import numpy as np

    from .agent import profile_model

    x = np.random.default_rng(0).standard_normal((1, *input_shape), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="shufflenas-profile-") as workdir:
        return profile_model(onnx_bytes, threads, {"input": x}, runs, workdir, skip=skip)


class OrtBackend(HostBackend):
    """Exports the model to ONNX in memory and times `session.run` on the CPU provider."""

    name = "onnxruntime"

    def __init__(self, threads: int = 1, config: MeasureConfig | None = None, *, dynamo: bool = False) -> None:
        super().__init__(threads, config)
        self.dynamo = dynamo

    def runtime(self) -> dict[str, str]:
        import onnxruntime

        return {**clock_runtime(self.config), "onnxruntime": onnxruntime.__version__}

    def measure(self, arch_or_model: Any, input_shape: tuple[int, int, int]) -> LatencyResult:
        from .onnx_export import export_onnx_bytes

        shape = check_input_shape(input_shape)
        data = export_onnx_bytes(arch_or_model, shape, dynamo=self.dynamo)
        result = self.measure_onnx(data, shape)
        return _with_arch(result, getattr(arch_or_model, "arch_id", None))

    def measure_onnx(self, onnx_bytes: bytes, input_shape: tuple[int, int, int], profile: int = 0) -> LatencyResult:
        """Time the model; with `profile` > 0 also that many profiled runs, in `extra["profile"]`."""
        import numpy as np

        shape = check_input_shape(input_shape)
        t0 = time.perf_counter()
        sess = make_session(onnx_bytes, self.threads)
        name = sess.get_inputs()[0].name
        x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
        feed = {name: x}
        stats, again = _measure_callable(lambda: sess.run(None, feed), self.config)
        info = self.device_info()
        return LatencyResult(
            median_ms=stats.median_ms, p90_ms=stats.p90_ms, spread=stats.spread, n=stats.n,
            backend=self.name, device=info["fingerprint"], threads=self.threads, runtime=self.runtime(),
            input_shape=shape, p10_ms=stats.p10_ms, min_ms=stats.min_ms, machine=str(info.get("machine", "")),
            device_label=device_label(info), remeasured=again, seconds=time.perf_counter() - t0,
            extra={"profile": profile_onnx(onnx_bytes, shape, self.threads, profile)} if profile else {},
        )


def _with_arch(result: LatencyResult, arch_id: str | None) -> LatencyResult:
    from dataclasses import replace

    return replace(result, arch_id=arch_id)
