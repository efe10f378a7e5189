"""Repeatability of local latency: the same model measured in 5 separate processes.

    python bench/latency_repeatability.py [--processes 5] [--preset shufflenet_v1_g3_x0_5]
        [--input 3x224x224] [--threads 1] [--min-time 2.0] [--json]

Each process exports the preset to ONNX, builds a fresh ONNX Runtime session (1 intra-op
thread by default) and measures it with the project's discipline (warm-up, minimum count
and time, re-measure once on a wide spread). Goal: max/min of the medians <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from nas.cli.args import load_arch, parse_input
    from objectives.latency.api import get_backend
    from objectives.latency.base import MeasureConfig

    shape = parse_input(args.input)
    arch = load_arch(args.preset)
    backend = get_backend(
        "onnxruntime", threads=args.threads,
        config=MeasureConfig(warmup=10, min_repeats=30, min_time_s=args.min_time, max_spread=0.10,
                             clock=args.clock),
    )
    t0 = time.perf_counter()
    r = backend.measure(arch, shape)
    print(json.dumps({**r.to_dict(), "wall_s": time.perf_counter() - t0}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--preset", default="shufflenet_v1_g3_x0_5")
    ap.add_argument("--input", default="3x224x224")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=2.0, help="minimum timed seconds per process (default 2)")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="wall (default) or cpu: process CPU time, repeatable on a shared host")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    cmd = [sys.executable, __file__, "--worker", "--preset", args.preset, "--input", args.input,
           "--threads", str(args.threads), "--min-time", str(args.min_time), "--clock", args.clock]
    runs = []
    for i in range(args.processes):
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "worker failed", file=sys.stderr)
            return 1
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not args.json:
            r = runs[-1]
            print(f"process {i + 1}: median {r['median_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  "
                  f"spread {r['spread']:.1%}  n={r['n']}  {r['seconds']:.1f} s measuring"
                  + ("  (re-measured)" if r["remeasured"] else ""))
    medians = [r["median_ms"] for r in runs]
    ratio = max(medians) / min(medians)
    figures = {
        "preset": args.preset, "input": args.input, "backend": "onnxruntime", "threads": args.threads,
        "clock": args.clock, "processes": len(runs), "medians_ms": medians, "max_min_ratio": ratio, "goal": 1.05,
        "meets_goal": ratio <= 1.05, "seconds_per_measurement": [r["seconds"] for r in runs],
        "spreads": [r["spread"] for r in runs], "n": [r["n"] for r in runs],
        "device": runs[0]["device_label"], "fingerprint": runs[0]["device"], "runtime": runs[0]["runtime"],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{args.preset} @ {args.input}, onnxruntime {runs[0]['runtime'].get('onnxruntime')}, "
              f"{args.threads} thread(s), {args.clock} clock, {runs[0]['device_label']}")
        print(f"max/min of medians: {ratio:.3f} (goal <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}); "
              f"mean {sum(figures['seconds_per_measurement']) / len(runs):.1f} s per measurement")
    return 0


if __name__ == "__main__":
    sys.exit(main())
