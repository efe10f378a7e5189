"""Helpers shared by CLI commands: argument parsing and one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.inputs import parse_input

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


def positive_int(arg: str, value: int, low: int = 1, high: int | None = None) -> int:
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise UserError(f"argument {arg}: must be {rng}, got {value}")
    return value
