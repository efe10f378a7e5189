"""Errors the CLI prints as one line (exit code 2). Standard library only, so that
building the parser (`shufflenas --help`) imports neither torch nor the search code."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: printed as one line, exit code 2, no traceback."""
