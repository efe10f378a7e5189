"""bench/gpu_throughput.py: without CUDA it says so and passes nothing; with figures it judges both goals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.run_all import BENCHES, x_gpu

ROOT = Path(__file__).resolve().parents[1]


def test_without_cuda_it_is_not_measured_and_exits_0() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}  # no GPU, even on a GPU machine
    for extra, expect in (([], "not measured: no CUDA device\n"),
                          (["--json"], json.dumps({"measured": False, "reason": "not measured: no CUDA device"}) + "\n")):
        r = subprocess.run([sys.executable, "bench/gpu_throughput.py", *extra], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert (r.returncode, r.stdout) == (0, expect), r.stderr
    figs = x_gpu({"measured": False, "reason": "not measured: no CUDA device"})
    assert [(f.value, f.status, f.goal) for f in figs] == [("not measured: no CUDA device", "info", "")]
    assert "gpu_throughput" in {b.name for b in BENCHES}


def test_measured_figures_are_judged_against_both_goals() -> None:
    d = {"measured": True, "gpu": "NVIDIA H200", "model": "m", "resolution": 28, "train_size": 4000,
         "batch_size": 128, "epochs": 3, "repeats": 3, "autocast": "torch.bfloat16", "channels_last": True,
         "images_per_s": {"trainer": 4800.0, "plain_channels_last": 5100.0, "plain_nchw": 4000.0},
         "ratio_trainer_over_plain": 4800 / 5100, "goal_ratio": 0.9,
         "aggregate_images_per_s": {"1": 5000.0, "4": 12000.0}, "best_candidates_per_gpu": 4,
         "best_aggregate_over_one": 2.4, "goal_aggregate": 3.0}
    judged = {f.name: f.status for f in x_gpu(d) if f.goal}
    assert judged == {"GPU: train_proxy / plain loop throughput (medians)": "pass",
                      "GPU: aggregate throughput, best N (4) per GPU / one": "fail"}
    slow = dict(d, ratio_trainer_over_plain=0.38, best_aggregate_over_one=3.1)
    assert sorted(f.status for f in x_gpu(slow) if f.goal) == ["fail", "pass"]
