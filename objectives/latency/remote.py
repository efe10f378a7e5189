"""Client for the shufflenas device agent (``objectives/latency/agent.py``).

Standard library only (urllib), so it imports anywhere. Connection errors, timeouts and
5xx answers are retried with exponential back-off; 4xx answers are never retried.

    dev = RemoteDevice("http://board:8765", token="...")
    dev.info()["fingerprint"]
    dev.benchmark(onnx_bytes, threads=4)["median_ms"]
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["DeviceRejected", "DeviceUnreachable", "RemoteDevice"]


class DeviceUnreachable(RuntimeError):
    """The agent did not answer (or answered 5xx) after all retries."""

    def __init__(self, message: str, url: str = "", last_error: BaseException | str | None = None):
        super().__init__(message)
        self.url = url
        self.last_error = last_error


class DeviceRejected(ValueError):
    """The agent refused the request (4xx); ``error`` is the agent's own message."""

    def __init__(self, message: str, status: int = 400, error: str = "", url: str = ""):
        super().__init__(message)
        self.status = status
        self.error = error
        self.url = url


class _ServerError(Exception):
    def __init__(self, status: int, error: str):
        super().__init__(f"HTTP {status}: {error}")
        self.status = status
        self.error = error


def _error_text(body: bytes) -> str:
    try:
        payload = json.loads(body.decode("utf-8"))
        if isinstance(payload, dict) and "error" in payload:
            return str(payload["error"])
    except (UnicodeDecodeError, ValueError):
        pass
    text = body.decode("utf-8", "replace").strip()
    return text[:500] or "(no body)"


class RemoteDevice:
    """A device agent reached over HTTP.

    ``retries`` is the number of further attempts after the first; the delay before
    retry ``k`` (1-based) is ``backoff * 2 ** (k - 1)`` seconds. ``timeout`` bounds each
    attempt (a benchmark also gets its own ``min_time_s`` on top).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 60,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"device URL must look like http://HOST:PORT, got {url!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = url.strip().rstrip("/")
        self.token = token.strip() if token else None
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)

    def __repr__(self) -> str:
        return f"RemoteDevice({self.url!r}, retries={self.retries}, timeout={self.timeout})"

    # ------------------------------------------------------------------ public API

    def health(self) -> dict:
        """``GET /v1/health`` (no token needed)."""
        return self._request("GET", "/v1/health")

    def info(self) -> dict:
        """``GET /v1/info``: the device fingerprint (machine, CPU, runtime versions...)."""
        return self._request("GET", "/v1/info")

    def benchmark(
        self,
        onnx_bytes: bytes,
        threads: int = 1,
        warmup: int = 10,
        repeats: int = 30,
        min_time_s: float = 1.0,
        input_shape: tuple[int, ...] | list[int] | None = None,
        seed: int = 0,
        return_output: bool = False,
        profile: int = 0,
    ) -> dict:
        """``POST /v1/benchmark``: time the model on the device; returns the agent's stats
        (``median_ms``, ``p90_ms``, ``min_ms``, ``max_ms``, ``iqr_ms``, ``spread``, ``n``, ...);
        ``profile`` > 0 adds ``profile`` (per-node kernel times of that many profiled runs)."""
        if not isinstance(onnx_bytes, (bytes, bytearray, memoryview)):
            raise TypeError(f"onnx_bytes must be bytes, got {type(onnx_bytes).__name__}")
        params: dict[str, str] = {
            "threads": str(int(threads)),
            "warmup": str(int(warmup)),
            "repeats": str(int(repeats)),
            "min_time_s": repr(float(min_time_s)),
            "seed": str(int(seed)),
        }
        if input_shape is not None:
            params["input_shape"] = ",".join(str(int(d)) for d in input_shape)
        if return_output:
            params["return_output"] = "1"
        if profile:
            params["profile"] = str(int(profile))
        # warm-up and measurement happen before the agent answers: allow for them
        timeout = self.timeout + float(min_time_s) * 2
        return self._request("POST", "/v1/benchmark", params, bytes(onnx_bytes), timeout=timeout)

    def run(self, onnx_bytes: bytes, input_shape=None, seed: int = 0) -> dict:
        """``POST /v1/run``: one run on the seeded input; the result has ``output``."""
        params = {"seed": str(int(seed))}
        if input_shape is not None:
            params["input_shape"] = ",".join(str(int(d)) for d in input_shape)
        return self._request("POST", "/v1/run", params, bytes(onnx_bytes))

    # ------------------------------------------------------------------ plumbing

    def _request(self, method: str, path: str, params=None, body: bytes | None = None, timeout=None) -> dict:
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": "shufflenas-remote/1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        timeout = self.timeout if timeout is None else timeout

        last_error: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=body, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    raw = resp.read()
                try:
                    payload = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    last_error = exc
                    continue
                if not isinstance(payload, dict):
                    last_error = ValueError(f"unexpected reply {raw[:200]!r}")
                    continue
                return payload
            except urllib.error.HTTPError as exc:
                try:
                    err_body = exc.read()
                except Exception:  # noqa: BLE001 - the status is what matters
                    err_body = b""
                text = _error_text(err_body) if err_body else (exc.reason or "")
                if 400 <= exc.code < 500:
                    raise DeviceRejected(
                        f"device agent at {self.url} refused {method} {path} (HTTP {exc.code}): {text}",
                        status=exc.code,
                        error=str(text),
                        url=self.url,
                    ) from None
                last_error = _ServerError(exc.code, str(text))
            except OSError as exc:  # URLError, timeouts, resets, refused
                last_error = getattr(exc, "reason", None) if isinstance(exc, urllib.error.URLError) else exc
                if not isinstance(last_error, BaseException):
                    last_error = exc
            except Exception as exc:  # noqa: BLE001 - http.client oddities (BadStatusLine, ...)
                last_error = exc
        attempts = self.retries + 1
        detail = f"{type(last_error).__name__}: {last_error}" if last_error is not None else "no answer"
        raise DeviceUnreachable(
            f"device agent at {self.url} unreachable after {attempts} attempt(s) ({method} {path}): {detail}",
            url=self.url,
            last_error=last_error,
        )
