"""How well a latency lookup table predicts whole networks on this host (ONNX Runtime).

    python bench/lut_accuracy.py [--n 100] [--input 3x224x224] [--groups 3,8] [--widths 0.5,1.0]
        [--kernels 3,5] [--threads 1] [--min-time 0.3] [--json]

Builds a LUT for the space (every distinct stem/unit/head timed as its own ONNX model,
calibrated on a few whole models), measures --n random archs of the space, and prints the
share of predictions within ±10% and the Spearman rank correlation, beside a
MACs-proportional model (latency = a * MMACs + b) fitted on the same calibration archs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="random archs to measure (default 100)")
    ap.add_argument("--input", default="3x224x224")
    ap.add_argument("--groups", default="3,8")
    ap.add_argument("--widths", default="0.5,1.0")
    ap.add_argument("--kernels", default="3,5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.3, help="minimum timed seconds per model (default 0.3)")
    ap.add_argument("--calibrate", type=int, default=8, help="whole archs for the a*x+b fits (default 8)")
    ap.add_argument("--table-out", default=None, help="also save the table here")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="wall (default) or cpu: process CPU time, repeatable on a shared host")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from nas.common import parse_input
    from objectives.latency.api import get_backend
    from objectives.latency.base import MeasureConfig
    from objectives.latency.lut import build_table, enumerate_parts, validate_table
    from search_spaces import ShuffleNetV1Space

    shape = parse_input(args.input)
    space = ShuffleNetV1Space(
        groups=tuple(int(v) for v in args.groups.split(",")),
        widths=tuple(float(v) for v in args.widths.split(",")),
        kernels=tuple(int(v) for v in args.kernels.split(",")),
    )
    backend = get_backend(
        "onnxruntime", threads=args.threads,
        config=MeasureConfig(warmup=5, min_repeats=20, min_time_s=args.min_time, max_spread=0.15, clock=args.clock),
    )
    n_parts = len(enumerate_parts(space, shape))
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"space {space.to_dict()}: {n_parts} distinct parts at {args.input}")
    t0 = time.perf_counter()
    table = build_table(space, shape, backend, calibrate=args.calibrate,
                        progress=lambda i, n, k: log(f"  part {i}/{n}") if i % 10 == 0 or i == n else None)
    build_s = time.perf_counter() - t0
    if args.table_out:
        table.save(args.table_out)
    t1 = time.perf_counter()
    res = validate_table(table, backend, n=args.n,
                         progress=lambda i, n: log(f"  arch {i}/{n}") if i % 10 == 0 or i == n else None)
    validate_s = time.perf_counter() - t1
    figures = {
        "input": list(shape), "threads": args.threads, "clock": args.clock, "space": space.to_dict(), "parts": n_parts,
        "n": res["n"], "lut": res["lut"], "macs": res["macs"], "build_s": build_s, "validate_s": validate_s,
        "calibration": {k: table.data["calibration"][k] for k in ("a", "b", "n")},
        "device": backend.device_info()["fingerprint"], "runtime": backend.runtime(),
        "measured_ms_range": [min(res["measured_ms"]), max(res["measured_ms"])],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{res['n']} random archs at {args.input}, onnxruntime {args.threads} thread(s), {args.clock} clock, "
          f"{n_parts} parts "
          f"(build {build_s:.0f} s, validate {validate_s:.0f} s), measured "
          f"{figures['measured_ms_range'][0]:.2f}-{figures['measured_ms_range'][1]:.2f} ms")
    for name, label in (("lut", "LUT (sum of parts, calibrated)"), ("macs", "MACs-proportional")):
        r = res[name]
        print(f"  {label:32s} within ±10%: {r['within']:.0%}   Spearman {r['spearman']:.3f}   "
              f"mean |err| {r['mean_abs_rel_err']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
