"""Latency under drift: 5 architectures in a normal and in a slowed window, naive vs interleaved.

    python bench/latency_drift.py [--quick] [--json] [--input 3x224x224] [--pairs 48] [--block-s 0.02]

The measuring process is pinned to one core (os.sched_setaffinity); the slowed window starts a
busy process pinned to the SAME core, which takes about half of its CPU. Per architecture, in
each window: the naive protocol (the onnxruntime backend's plain per-run median, min time 1 s)
and the interleaved one (objectives/latency/drift.py: ABBA blocks against the reference
network, ratio x the baseline reference time measured at the start, in the normal window).
Printed: the ratio slowed/normal per architecture for both. Goal: every interleaved ratio
within 0.95-1.05 (the naive ones are shown beside them, no goal). ONNX Runtime, 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: spanning the default space's latency range at 3x224x224 (about 0.8 to 22 ms on the 2-core host)
#: none of them a reference network
ARCHS = ("shufflenet_v1_g1_x0_25", "shufflenet_v1_g2_x0_5", "shufflenet_v1_g8_x0_75", "shufflenet_v1_g4_x1_5",
         "shufflenet_v1_g3_x2_0")
QUICK_ARCHS = ("shufflenet_v1_g1_x0_25", "shufflenet_v1_g8_x0_75", "shufflenet_v1_g3_x2_0")
GOAL = (0.95, 1.05)


def busy(core: int) -> subprocess.Popen:
    """A pure-Python busy loop pinned to `core` (a real competitor for the CPU, not a mock)."""
    code = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def window(archs: list, refs: dict, shape: tuple[int, int, int], naive_backend: object, backend: object,
           cfg: object, baselines: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each architecture by both protocols (the interleaved one against its nearest reference)."""
    from objectives.latency.drift import measure_interleaved, nearest_reference, probe

    out = {}
    for a in archs:
        naive = naive_backend.measure(a, shape)  # type: ignore[attr-defined]
        name = nearest_reference(a, list(refs), shape)
        ours = measure_interleaved(a, refs[name], shape, backend, cfg)  # type: ignore[arg-type]
        out[a.arch_id] = {"naive_ms": naive.median_ms, "raw_ms": ours.median_ms, "reference": name,
                          "normalised_ms": ours.extra["ratio"] * baselines[name],
                          "probe": probe(ours.extra["reference_ms"], baselines[name])}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 architectures, shorter blocks (a minute)")
    ap.add_argument("--input", default="3x224x224")
    ap.add_argument("--reference", action="append", default=None, metavar="PRESET",
                    help="reference network (repeatable; default: the shufflenet_v1 family's references)")
    ap.add_argument("--pairs", type=int, default=None, help="A/B pairs per measurement (default: DriftConfig's)")
    ap.add_argument("--block-s", type=float, default=None, help="seconds per block (default: DriftConfig's)")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="block clock of the interleaved protocol")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from nas.cli.args import parse_input
    from objectives.latency.base import MeasureConfig
    from objectives.latency.drift import (
        DriftConfig,
        LocalBlocks,
        export,
        flagged,
        reference_arch,
        reference_time,
    )
    from objectives.latency.ort_backend import OrtBackend
    from search_spaces import get_family, preset

    shape = parse_input(args.input)
    names = QUICK_ARCHS if args.quick else ARCHS
    d = DriftConfig()
    cfg = DriftConfig(block_s=args.block_s or d.block_s, pairs=args.pairs or (d.pairs * 2 // 3 if args.quick else d.pairs))
    ref_names = args.reference or list(get_family("shufflenet_v1").LATENCY_REFERENCES)
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    archs = [preset(n).with_io(in_channels=shape[0], num_classes=1000, small_input=False) for n in names]
    refs = {n: reference_arch(n, shape, 1000) for n in ref_names}
    backend = OrtBackend(threads=1, config=MeasureConfig(clock=args.clock))
    naive_backend = OrtBackend(threads=1, config=MeasureConfig(min_time_s=0.5 if args.quick else 1.0))
    t0 = time.perf_counter()
    blocks = LocalBlocks(1, args.clock)
    baselines = {n: reference_time(blocks, blocks.load(export(r, shape, backend), shape), cfg) for n, r in refs.items()}
    normal = window(archs, refs, shape, naive_backend, backend, cfg, baselines)
    hog = busy(core)
    try:
        time.sleep(0.3)
        slowed = window(archs, refs, shape, naive_backend, backend, cfg, baselines)
    finally:
        hog.kill()
        hog.wait()
    rows = []
    for n, a in zip(names, archs, strict=True):
        x, y = normal[a.arch_id], slowed[a.arch_id]
        ours = y["normalised_ms"] / x["normalised_ms"]
        rows.append({
            "arch": n, "arch_id": a.arch_id, "reference": x["reference"], "normal": x, "slowed": y,
            "naive_ratio": y["naive_ms"] / x["naive_ms"], "raw_ratio": y["raw_ms"] / x["raw_ms"],
            "ratio": ours, "pass": GOAL[0] <= ours <= GOAL[1],
            "flagged_slowed": flagged(y["probe"], cfg.flag_threshold),
            "flagged_normal": flagged(x["probe"], cfg.flag_threshold),
        })
    ok = all(r["pass"] for r in rows)
    import onnxruntime

    figures = {
        "input": args.input, "backend": "onnxruntime", "onnxruntime": onnxruntime.__version__, "threads": 1,
        "core": core, "references": ref_names, "baselines_ms": baselines, "clock": args.clock, "pairs": cfg.pairs,
        "block_s": cfg.block_s, "min_runs": cfg.min_runs, "goal": list(GOAL), "rows": rows, "all_within_goal": ok,
        "worst_ratio": max(rows, key=lambda r: abs(r["ratio"] - 1))["ratio"],
        "naive_median_ratio": statistics.median(r["naive_ratio"] for r in rows),
        "flagged_slowed": sum(r["flagged_slowed"] for r in rows), "flagged_normal": sum(r["flagged_normal"] for r in rows),
        "seconds": time.perf_counter() - t0, "quick": args.quick,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"latency under drift: {args.input}, onnxruntime {onnxruntime.__version__}, 1 thread, pinned to core "
          f"{core}; slowed = a busy process pinned to the same core")
    print(f"interleaved: {cfg.pairs} ABBA pairs of {cfg.block_s:g} s / {cfg.min_runs} runs blocks ({args.clock} clock) against the nearest "
          "in MACs of " + ", ".join(f"{n} (baseline {b:.3f} ms)" for n, b in baselines.items()))
    print(f"{'architecture':26s} {'naive normal':>12s} {'slowed':>8s} {'ratio':>6s}   {'ours normal':>11s} {'slowed':>8s} "
          f"{'ratio':>6s}  probe  goal {GOAL[0]}-{GOAL[1]}  reference")
    for r in rows:
        x, y = r["normal"], r["slowed"]
        print(f"{r['arch']:26s} {x['naive_ms']:9.3f} ms {y['naive_ms']:8.3f} {r['naive_ratio']:6.3f}   "
              f"{x['normalised_ms']:8.3f} ms {y['normalised_ms']:8.3f} {r['ratio']:6.3f}  {y['probe']:5.2f}  "
              f"{'PASS' if r['pass'] else 'FAIL'}           {r['reference']}")
    print(f"slowed window flagged {figures['flagged_slowed']}/{len(rows)}, normal window flagged "
          f"{figures['flagged_normal']}/{len(rows)} (probe beyond +-{cfg.flag_threshold:.0%})")
    print(f"goal every interleaved ratio within {GOAL[0]}-{GOAL[1]}: {'PASS' if ok else 'FAIL'} "
          f"(worst {figures['worst_ratio']:.3f}; naive median ratio {figures['naive_median_ratio']:.3f}); "
          f"{figures['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
