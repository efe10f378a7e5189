"""`shufflenas describe`: per-stage table and MACs/params totals of one architecture."""

from __future__ import annotations

import argparse
import json

from nas.cli.args import load_arch, parse_input, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe",
        help="show an architecture: stages, output sizes, MMACs, params",
        description="Describe a preset of any family (e.g. resnext50_32x4d) or an arch JSON file.",
    )
    p.add_argument("arch", metavar="PRESET|ARCH.json")
    p.add_argument("--input", default="3x224x224", help="deploy input CxHxW (default 3x224x224)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the arch's)")
    p.add_argument("--small-input", action="store_true", help="use the stride-1 stem for small images")
    p.add_argument("--no-ptflops", action="store_true", help="skip the ptflops cross-check (faster)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from objectives.flops import analytic_params, macs_breakdown

    arch = load_arch(args.arch)
    c, h, w = parse_input(args.input)
    classes = positive_int("--classes", args.classes) if args.classes is not None else arch.num_classes
    arch = arch.with_io(in_channels=c, num_classes=classes, small_input=args.small_input or arch.small_input)
    parts = macs_breakdown(arch, (h, w))
    total = sum(p.macs for p in parts)
    n_params = analytic_params(arch)
    result = {
        "arch_id": arch.arch_id,
        "family": arch.family,
        "input": [c, h, w],
        "classes": classes,
        "parts": [
            {"name": p.name, "detail": p.detail, "output": [p.out_channels, *p.out_hw], "mmacs": p.macs / 1e6}
            for p in parts
        ],
        "mmacs": total / 1e6,
        "n_params": n_params,
        "mparams": n_params / 1e6,
        "arch": arch.to_dict(),
    }
    if not args.no_ptflops:
        from objectives.flops import count_params, hook_macs, ptflops_macs
        from search_spaces import build_model

        model = build_model(arch)
        result["hook_mmacs"] = hook_macs(model, (c, h, w)) / 1e6
        result["model_n_params"] = count_params(model)
        result["ptflops_aten_mmacs"] = ptflops_macs(model, (c, h, w), "aten") / 1e6
        result["ptflops_pytorch_mmacs"] = ptflops_macs(model, (c, h, w), "pytorch") / 1e6
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_table(args.arch, result)
    return 0


def _print_table(name: str, r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{name}  ({r['family']}, arch_id {r['arch_id']}, input {'x'.join(map(str, r['input']))})")
    for col in ("part", "configuration", "output", "MMACs"):
        t.add_column(col, justify="right" if col in ("output", "MMACs") else "left")
    for p in r["parts"]:
        t.add_row(p["name"], p["detail"], "x".join(map(str, p["output"])), f"{p['mmacs']:.2f}")
    con = Console(width=None if Console().is_terminal else 110)
    con.print(t)
    con.print(f"total: [bold]{r['mmacs']:.2f} MMACs[/] (MFLOPs as in the paper: conv + FC multiply-adds)")
    if "ptflops_aten_mmacs" in r:
        con.print(
            f"forward hooks: {r['hook_mmacs']:.2f} MMACs; ptflops: aten {r['ptflops_aten_mmacs']:.2f} MMACs, "
            f"pytorch {r['ptflops_pytorch_mmacs']:.2f} MMACs (also counts BN/ReLU/pool)"
        )
    con.print(f"params: {r['n_params']:,} ({r['mparams']:.2f} M)"
              + (f"; built model: {r['model_n_params']:,}" if "model_n_params" in r else ""))
