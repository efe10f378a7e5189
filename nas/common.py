"""Helpers shared by CLI commands: argument parsing and one-line user errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nas.errors import UserError

__all__ = ["UserError", "load_arch", "parse_input", "positive_int"]


def load_arch(spec: str) -> Any:
    """A preset name (of any family) or a path to an arch JSON file."""
    from search_spaces import PRESETS, ArchBase, preset

    if spec in PRESETS:
        return preset(spec)
    path = Path(spec)
    if spec.endswith(".json") or path.exists():
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise UserError(f"{spec}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{spec}: cannot read ({e.__class__.__name__}: {e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{spec}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        if isinstance(data, dict) and "arch" in data and isinstance(data["arch"], dict):
            data = data["arch"]  # accept export's arch.json wrapper too
        try:
            return ArchBase.from_dict(data, source=spec)
        except (ValueError, TypeError) as e:
            msg = str(e)
            raise UserError(msg if msg.startswith(spec) else f"{spec}: {msg}") from None
    try:
        return preset(spec)
    except ValueError as e:
        raise UserError(f"argument ARCH: {e}") from None


_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


def parse_input(text: str, arg: str = "--input") -> tuple[int, int, int]:
    m = _SHAPE.match(text.strip())
    if not m:
        raise UserError(f"argument {arg}: expected CxHxW such as 3x224x224, got {text!r}")
    c, h, w = (int(v) for v in m.groups())
    if not (1 <= c <= 64 and 8 <= h <= 4096 and 8 <= w <= 4096):
        raise UserError(f"argument {arg}: need 1<=C<=64 and 8<=H,W<=4096, got {text!r}")
    return c, h, w


def positive_int(arg: str, value: int, low: int = 1, high: int | None = None) -> int:
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise UserError(f"argument {arg}: must be {rng}, got {value}")
    return value
