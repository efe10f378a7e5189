"""Public entry points: `get_backend(name, **opts)` and `measure_latency(...)` with the cache.

Kept out of the package `__init__` so that importing `objectives.latency` (as the device
agent does on a board) never pulls in torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import LatencyResult, MeasureConfig
from .cache import CacheKey, LatencyCache, runtime_text


def _torch(**opts: Any) -> Any:
    from .torch_backend import TorchBackend

    return TorchBackend(**opts)


def _ort(**opts: Any) -> Any:
    from .ort_backend import OrtBackend

    return OrtBackend(**opts)


def _remote(**opts: Any) -> Any:
    from .remote_backend import RemoteBackend

    url, device = opts.pop("url", None), opts.pop("device", None)  # `device` as in the experiment YAML
    url = url or device
    return RemoteBackend(url, **opts)


def _predictor(**opts: Any) -> Any:
    from .predictor import PredictorBackend

    table = opts.pop("table", None)
    if table is None:
        raise ValueError("the predictor backend needs table=PATH (a file from `shufflenas lut build`)")
    opts.pop("config", None)  # a prediction is not timed
    return PredictorBackend(table, **opts)


#: name -> factory; one registry, one factory function ("lut" is the predictor's old name).
BACKENDS: dict[str, Callable[..., Any]] = {
    "torch": _torch, "onnxruntime": _ort, "remote": _remote, "predictor": _predictor, "lut": _predictor,
}


def get_backend(name: str, **opts: Any) -> Any:
    """A backend by name. Options: threads, config (MeasureConfig); remote: url, token/token_file,
    timeout, retries, backoff; predictor: table."""
    if name not in BACKENDS:
        raise ValueError(f"unknown latency backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return BACKENDS[name](**opts)


def cache_key(arch: Any, input_shape: tuple[int, int, int], backend: Any) -> CacheKey:
    """Key by the arch actually measured (input channels matched) and the device's fingerprint."""
    if arch.in_channels != input_shape[0]:
        arch = arch.with_io(in_channels=input_shape[0], num_classes=arch.num_classes, small_input=arch.small_input)
    return CacheKey(
        arch_id=arch.arch_id, input_shape=tuple(input_shape), backend=backend.name,
        device=str(backend.device_info()["fingerprint"]), threads=int(backend.threads),
        runtime=runtime_text(backend.runtime()),
    )


def measure_latency(
    arch: Any,
    input_shape: tuple[int, int, int],
    backend: Any,
    cache: LatencyCache | str | Path | None = None,
) -> LatencyResult:
    """Cache first, then measure. `backend` is a backend object or a name (default options)."""
    from search_spaces import ArchBase

    if isinstance(backend, str):
        backend = get_backend(backend)
    if cache is None or not isinstance(arch, ArchBase):
        return backend.measure(arch, input_shape)
    if not isinstance(cache, LatencyCache):
        cache = LatencyCache(cache)
    key = cache_key(arch, input_shape, backend)
    hit = cache.get(key)
    if hit is not None:
        return hit
    result = backend.measure(arch, input_shape)
    cache.put(key, result)
    return result


__all__ = [
    "BACKENDS",
    "CacheKey",
    "LatencyCache",
    "LatencyResult",
    "MeasureConfig",
    "cache_key",
    "get_backend",
    "measure_latency",
]
