"""`shufflenas --help` stays light: building the parser imports no torch (nor numpy, optuna)."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_parser_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from nas.cli import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'numpy', 'optuna', 'search_spaces'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout
