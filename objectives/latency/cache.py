"""Persistent latency cache in SQLite, shared safely by several worker processes.

Key: (arch_id, input shape, backend, device fingerprint, threads, runtime version). A hit
returns the stored result with `cached=True` and measures nothing. WAL journaling and a
busy timeout let parallel search workers read and write one file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .base import LatencyResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    key TEXT PRIMARY KEY,
    arch_id TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    backend TEXT NOT NULL,
    device TEXT NOT NULL,
    threads INTEGER NOT NULL,
    runtime TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class CacheKey:
    arch_id: str
    input_shape: tuple[int, ...]
    backend: str
    device: str
    threads: int
    runtime: str  # e.g. "onnxruntime=1.18.0"

    def text(self) -> str:
        shape = "x".join(str(v) for v in self.input_shape)
        return f"{self.arch_id}|{shape}|{self.backend}|{self.device}|{self.threads}|{self.runtime}"


def runtime_text(runtime: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(runtime.items()))


class LatencyCache:
    """`get(key)` -> stored result (cached=True) or None; `put(key, result)` replaces."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise ValueError(f"latency cache {str(self.path)!r}: is a directory, expected a SQLite file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        with self._connect() as con:
            try:
                con.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                pass  # e.g. a network file system; the busy timeout still serialises writers
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=self.timeout)
        except sqlite3.Error as e:
            raise ValueError(f"latency cache {str(self.path)!r}: cannot open ({e})") from None

    def get(self, key: CacheKey) -> LatencyResult | None:
        con = self._connect()
        try:
            row = con.execute("SELECT result FROM latency WHERE key = ?", (key.text(),)).fetchone()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"latency cache {str(self.path)!r}: not a usable SQLite database ({e})") from None
        finally:
            con.close()
        if row is None:
            return None
        return replace(LatencyResult.from_dict(json.loads(row[0])), cached=True, seconds=0.0)

    def put(self, key: CacheKey, result: LatencyResult) -> None:
        stored = replace(result, cached=False)
        con = self._connect()
        try:
            with con:
                con.execute(
                    "INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key.text(), key.arch_id, "x".join(map(str, key.input_shape)), key.backend, key.device,
                        key.threads, key.runtime, stored.to_json(), time.time(),
                    ),
                )
        finally:
            con.close()

    def __len__(self) -> int:
        con = self._connect()
        try:
            return int(con.execute("SELECT COUNT(*) FROM latency").fetchone()[0])
        finally:
            con.close()
