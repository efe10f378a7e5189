"""`shufflenas` command line. Each command lives in `nas.cli.commands.<name>`."""

from __future__ import annotations

import argparse
import importlib
import sys

from nas import __version__
from nas.errors import UserError

#: (command, module) — a command is imported only when used, so `--help` stays fast.
COMMANDS: dict[str, str] = {
    "describe": "nas.cli.commands.describe",
    "train": "nas.cli.commands.train",
    "latency": "nas.cli.commands.latency",
    "search": "nas.cli.commands.search",
    "resume": "nas.cli.commands.resume",
    "status": "nas.cli.commands.status",
    "pareto": "nas.cli.commands.pareto",
    "export": "nas.cli.commands.export",
    "device": "nas.cli.commands.device",
    "lut": "nas.cli.commands.lut",
    "fidelity": "nas.cli.commands.fidelity",
    "supernet": "nas.cli.commands.supernet",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="shufflenas",
        description="Hardware-aware neural architecture search over the ShuffleNet design space.",
    )
    parser.add_argument("--version", action="version", version=f"shufflenas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for _name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue  # command not available in this build
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"shufflenas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shufflenas: interrupted", file=sys.stderr)
        return 130
