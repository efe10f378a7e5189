"""`shufflenas describe`: per-stage table and MACs/params totals of one architecture."""

from __future__ import annotations

import argparse
import json

from nas.common import load_arch, parse_input, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe",
        help="show an architecture: stages, output sizes, MMACs, params",
        description="Describe a preset (e.g. shufflenet_v1_g3_x1_0) or an arch JSON file.",
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
    result = {
        "arch_id": arch.arch_id,
        "input": [c, h, w],
        "classes": classes,
        "stem_channels": arch.stem_channels,
        "stages": [
            {
                "name": part.name,
                **s.__dict__,
                "output": [s.out_channels, *part.out_hw],
                "mmacs": part.macs / 1e6,
            }
            for s, part in zip(arch.stages, parts[1:-1], strict=False)
        ],
        "stem_mmacs": parts[0].macs / 1e6,
        "head_mmacs": parts[-1].macs / 1e6,
        "mmacs": total / 1e6,
        "params": analytic_params(arch),
        "arch": arch.to_dict(),
    }
    if not args.no_ptflops:
        from objectives.flops import ptflops_macs
        from search_spaces import build_model

        model = build_model(arch)
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

    t = Table(title=f"{name}  (arch_id {r['arch_id']}, input {'x'.join(map(str, r['input']))})")
    for col in ("stage", "channels", "repeats", "groups", "shuffle", "kernel", "output", "MMACs"):
        t.add_column(col, justify="right" if col not in ("stage", "shuffle") else "left")
    t.add_row("stem", str(r["stem_channels"]), "1", "1", "-", "3", "", f"{r['stem_mmacs']:.2f}")
    for s in r["stages"]:
        t.add_row(
            s["name"], str(s["out_channels"]), str(s["repeats"]), str(s["groups"]), s["shuffle"],
            str(s["kernel"]), "x".join(map(str, s["output"])), f"{s['mmacs']:.2f}",
        )
    t.add_row("head (FC)", str(r["classes"]), "", "", "", "", "", f"{r['head_mmacs']:.2f}")
    con = Console(width=None if Console().is_terminal else 110)
    con.print(t)
    con.print(f"total: [bold]{r['mmacs']:.2f} MMACs[/] (MFLOPs as in the paper: conv + FC multiply-adds)")
    if "ptflops_aten_mmacs" in r:
        con.print(
            f"ptflops: aten {r['ptflops_aten_mmacs']:.2f} MMACs, "
            f"pytorch {r['ptflops_pytorch_mmacs']:.2f} MMACs (also counts BN/ReLU/pool)"
        )
    con.print(f"params: {r['params']:,} ({r['params'] / 1e6:.2f} M)")
