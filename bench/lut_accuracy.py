"""How well the latency predictor predicts whole networks on this host (ONNX Runtime), beside MACs.

    python bench/lut_accuracy.py [--quick] [--n 100] [--build 150] [--input 3x224x224]
        [--threads 1] [--min-time 1.0] [--clock cpu|wall] [--json]

Builds a predictor for the WHOLE ShuffleNet v1 space (groups 1/2/3/4/8, kernels 3/5/7 per
stage, all five shuffle placements, widths 0.25-2.0, repeats from 1) from --build profiled
networks (one measurement each: the unprofiled median and the profiled runs) and measures
--n held-out random architectures of the same space (never profiled) with a careful median,
interleaved with the build so that a host whose speed drifts during the run (a shared,
throttling machine) gives the build and the ground truth the same speed; then prints the share of predictions within ±10% and the Spearman
rank correlation beside a MACs-proportional model (ms = a * MMACs + b) fitted on the same
build measurements and evaluated on the same architectures in the same run.
Goal: >= 90% within ±10% and Spearman >= 0.97 (printed PASS / FAIL).

Whole-network times use the CPU clock by default (one intra-op thread: CPU time is the
latency on an idle core), so that other processes on a shared host do not enter the ground
truth; the profiled kernel times are the lower quartile of their runs for the same reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_WITHIN, GOAL_SPEARMAN = 0.90, 0.97


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small profile for tests: 3x96x96, 30 build, 20 held out")
    ap.add_argument("--n", type=int, default=None, help="held-out random archs to measure (default 100; quick 20)")
    ap.add_argument("--build", type=int, default=None, help="networks profiled to build (default 150; quick 30)")
    ap.add_argument("--input", default=None, help="CxHxW (default 3x224x224; quick 3x96x96)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=None,
                    help="minimum timed seconds per held-out arch, the ground truth (default 1.0; quick 0.2)")
    ap.add_argument("--build-min-time", type=float, default=0.3, help="minimum timed seconds per build network")
    ap.add_argument("--profile-runs", type=int, default=None, help="profiled runs per build network (default: the "
                    "predictor's PROFILE_RUNS)")
    ap.add_argument("--clock", default="cpu", choices=("wall", "cpu"),
                    help="cpu (default): process CPU time of the 1-thread run, what an idle core takes, "
                         "repeatable on a shared host; wall: wall time, slices lost to other processes included")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table-out", default=None, help="also save the predictor here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n = args.n or (20 if args.quick else 100)
    n_build = args.build or (30 if args.quick else 150)
    input_text = args.input or ("3x96x96" if args.quick else "3x224x224")
    min_time = args.min_time if args.min_time is not None else (0.2 if args.quick else 1.0)

    import torch

    torch.set_num_threads(1)

    from nas.cli.args import parse_input
    from objectives.latency.api import get_backend
    from objectives.latency.base import MeasureConfig
    from objectives.latency.predictor import PROFILE_RUNS, build_predictor, random_archs, validate_predictor
    from search_spaces import ShuffleNetV1Space
    from search_spaces.shufflenet_v1 import GROUPS, KERNELS, PLACEMENTS

    shape = parse_input(input_text)
    space = ShuffleNetV1Space(groups=GROUPS, kernels=KERNELS, placements=PLACEMENTS,
                              repeats=((1, 6), (1, 10), (1, 6)))
    build_backend = get_backend("onnxruntime", threads=args.threads, config=MeasureConfig(
        warmup=5, min_repeats=10, min_time_s=args.build_min_time, max_spread=0.15, clock=args.clock))
    truth_backend = get_backend("onnxruntime", threads=args.threads, config=MeasureConfig(
        warmup=5, min_repeats=20, min_time_s=min_time, max_spread=0.15, clock=args.clock))
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"whole space {space.to_dict()} at {input_text}: building from {n_build} profiled networks, "
        f"{n} held-out archs measured in between")
    held = random_archs(space, n, seed=args.seed + 12345, in_channels=shape[0])
    truth: list[float] = []
    truth_s = 0.0

    def measure_truth(i: int) -> None:
        """Ground truth interleaved with the build, spread evenly over it (same host speed)."""
        nonlocal truth_s
        t = time.perf_counter()
        while len(truth) < min(len(held), round(i * len(held) / n_build)):
            truth.append(truth_backend.measure(held[len(truth)], shape).median_ms)
        truth_s += time.perf_counter() - t

    t0 = time.perf_counter()
    pred = build_predictor(space, shape, build_backend, archs=n_build, seed=args.seed,
                           profile_runs=args.profile_runs or PROFILE_RUNS,
                           exclude={a.arch_id for a in held}, after_each=measure_truth,
                           progress=lambda i, k, why: log(f"  build {i}/{k} ({why})") if i % 10 == 0 or i == k else None)
    measure_truth(n_build)
    build_s = time.perf_counter() - t0 - truth_s
    if args.table_out:
        pred.save(args.table_out)
    t1 = time.perf_counter()
    res = validate_predictor(pred, truth_backend, archs=held, measured=truth)
    validate_s = time.perf_counter() - t1 + truth_s
    p, m = res["predictor"], res["macs"]
    passed = p["within"] >= GOAL_WITHIN and p["spearman"] >= GOAL_SPEARMAN
    figures = {
        "input": list(shape), "threads": args.threads, "clock": args.clock, "space": space.to_dict(),
        "n": res["n"], "held_out": res["held_out"], "measurements": pred.data["measurements"],
        "kernels": len(pred.kernels), "seen_kernel_share": res["seen_kernel_share"],
        "predictor": p, "macs": m, "goal": {"within": GOAL_WITHIN, "spearman": GOAL_SPEARMAN, "pass": passed},
        "build_s": build_s, "validate_s": validate_s, "calibration": pred.data["calibration"],
        "device": build_backend.device_info()["fingerprint"], "runtime": build_backend.runtime(),
        "measured_ms_range": [min(res["measured_ms"]), max(res["measured_ms"])],
        "measured_ms": res["measured_ms"], "predictor_ms": res["predictor_ms"], "macs_ms": res["macs_ms"],
    }
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    return 0


def report(f: dict) -> str:
    """The printed figures (also from a saved --json output: `report(json.load(...))`)."""
    p, m, (lo, hi) = f["predictor"], f["macs"], f["measured_ms_range"]
    shape = "x".join(map(str, f["input"]))
    lines = [
        f"{f['n']} held-out random archs of the whole space at {shape}, onnxruntime {f['threads']} thread(s), "
        f"{f['clock']} clock; measured {lo:.2f}-{hi:.2f} ms",
        f"  built from {f['measurements']} measurements (profiled networks) in {f['build_s']:.0f} s; ground truth "
        f"and predictions {f['validate_s']:.0f} s; {f['kernels']} distinct kernels, "
        f"{f['seen_kernel_share']:.0%} of held-out kernels seen while building",
    ]
    for label, r in (("predictor (profiled kernels)", p), ("MACs-proportional (same data)", m)):
        lines.append(f"  {label:30s} within ±10%: {r['within']:.0%}   Spearman {r['spearman']:.3f}   "
                     f"mean |err| {r['mean_abs_rel_err']:.1%}")
    g = f["goal"]
    lines.append(f"  goal >= {g['within']:.0%} within ±10% and Spearman >= {g['spearman']}: "
                 f"{'PASS' if g['pass'] else 'FAIL'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
