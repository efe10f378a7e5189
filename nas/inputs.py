"""Input shapes as users write them (CxHxW): one parser for the CLI and the experiment config.
Standard library only, like nas.errors."""

from __future__ import annotations

import re

from nas.errors import UserError

_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


def parse_input(text: str, arg: str = "--input") -> tuple[int, int, int]:
    m = _SHAPE.match(text.strip())
    if not m:
        raise UserError(f"argument {arg}: expected CxHxW such as 3x224x224, got {text!r}")
    c, h, w = (int(v) for v in m.groups())
    if not (1 <= c <= 64 and 8 <= h <= 4096 and 8 <= w <= 4096):
        raise UserError(f"argument {arg}: need 1<=C<=64 and 8<=H,W<=4096, got {text!r}")
    return c, h, w
