"""Speed of the analytic MACs count against ptflops on the same architectures.

A budget check runs inside the sampler for every candidate width, so it must cost
microseconds. Prints the per-preset ratio and its median (goal: >= 1000x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from objectives.flops import analytic_macs, ptflops_macs
from search_spaces import PRESETS, build_model, preset


def best_of(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls (median: this machine is noisy)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--presets", default="all", help="comma-separated preset names (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="ptflops calls per preset")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    names = list(PRESETS) if a.presets == "all" else a.presets.split(",")
    rows = []
    for n in names:
        arch = preset(n)
        model = build_model(arch)
        t_an = best_of(lambda a=arch: analytic_macs(a), 200)
        t_pt = best_of(lambda m=model: ptflops_macs(m, (3, 224, 224), "aten"), a.repeats)
        rows.append({"preset": n, "analytic_us": t_an * 1e6, "ptflops_ms": t_pt * 1e3, "ratio": t_pt / t_an})
        if not a.json:
            print(f"{n:26s} analytic {t_an * 1e6:8.1f} us   ptflops(aten) {t_pt * 1e3:8.1f} ms   {t_pt / t_an:10.0f}x")
    med = statistics.median(r["ratio"] for r in rows)
    med_us = statistics.median(r["analytic_us"] for r in rows)
    if a.json:
        print(json.dumps({"median_ratio": med, "median_analytic_us": med_us, "goal_ratio": 1000, "rows": rows}))
    else:
        print(f"median speed-up of the analytic count over ptflops: {med:.0f}x (goal >= 1000x); "
              f"median analytic count {med_us:.1f} us")


if __name__ == "__main__":
    main()
