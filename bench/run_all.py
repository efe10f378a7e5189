"""Run every benchmark script, collect its JSON figures, write BENCHMARKS.md and bench/results.json.

    python -m bench [--quick] [--only flops,search_overhead] [--timeout 900] [--list]
    python bench/run_all.py ...          (the same)

Each script runs in its own subprocess with `--json` (a crash or a hang in one is recorded as
such, never takes the runner down); a small per-script extractor turns its JSON into named
figures. A figure with a goal is judged pass or FAIL, never anything else (a missed goal is
shown as a miss); a figure without a goal is a measurement or a reference beside one.
`--quick` passes smaller sizes (fewer trials, archs, processes) so the whole set runs in
minutes; the default is the full profile, which BENCHMARKS.md is published from. Every figure
carries the exact command that reproduces it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
REPORT = ROOT / "BENCHMARKS.md"
NOISE_NOTE = "2 shared vCPUs, noisy: other processes ran beside every measurement"
#: what follows this line in BENCHMARKS.md is hand-written (the hours-long benches' write-ups) and kept on a rewrite
HAND_WRITTEN = "<!-- hand-written sections below: bench/run_all.py keeps everything after this line -->"


@dataclass
class Figure:
    """One reported number: `status` is "pass" or "fail" when it has a goal, "info" only when it has none."""

    name: str
    value: float | str | None
    unit: str = ""
    goal: str = ""
    status: str = "info"
    note: str = ""

    def __post_init__(self) -> None:
        if self.goal and self.status not in ("pass", "fail"):
            raise ValueError(f"figure {self.name!r} has the goal {self.goal!r}: it must be judged pass or fail")
        if not self.goal and self.status != "info":
            raise ValueError(f"figure {self.name!r} is judged {self.status!r} without a goal")


@dataclass
class Bench:
    """A benchmark script, its argument profiles and the extractor that reads its JSON."""

    name: str
    script: str
    full: list[str]
    quick: list[str]
    extract: Callable[[dict[str, Any]], list[Figure]]
    json_to_file: bool = False  # the script takes `--json PATH` instead of printing JSON on stdout
    what: str = ""


def _goal(value: float | None, op: str, target: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "fail"
    return "pass" if (value >= target if op == ">=" else value <= target) else "fail"


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


# ---- per-script extractors (each reads the JSON shape its script prints) ----

def x_flops(d: dict[str, Any]) -> list[Figure]:
    r = d.get("median_ratio")
    goal = float(d.get("goal_ratio", 1000))
    return [
        Figure("analytic MACs speed-up over ptflops (median over presets)", r, "x", f">= {goal:g}x",
               _goal(r, ">=", goal), f"{len(d.get('rows', []))} presets"),
        Figure("analytic MACs count time (median)", d.get("median_analytic_us"), "us"),
    ]


def x_train(d: dict[str, Any]) -> list[Figure]:
    out = []
    for clock in ("cpu_clock", "wall_clock"):
        for base, r in (_get(d, clock, "ratio_framework_over") or {}).items():
            out.append(Figure(f"train_proxy / {base} throughput ({clock.replace('_', ' ')}, medians)", r, "ratio",
                              ">= 1.0", _goal(r, ">=", 1.0), f"{d.get('repeats')} repeats, {d.get('model')}"))
    med = _get(d, "cpu_clock", "median", "framework")
    if med is not None:
        out.append(Figure("train_proxy throughput (cpu clock, median)", med, "img/s"))
    return out


def x_gpu(d: dict[str, Any]) -> list[Figure]:
    """The trainer vs a plain loop on a GPU, and N candidates per GPU; without CUDA one unjudged line."""
    if not d.get("measured"):
        return [Figure("GPU throughput: train_proxy / plain loop, N candidates per GPU",
                       d.get("reason") or "not measured", "", note="the goals (trainer >= 0.9x the plain loop, "
                       ">= 3x aggregate with N per GPU) are judged only where a CUDA device is present")]
    r, best = d.get("ratio_trainer_over_plain"), d.get("best_aggregate_over_one")
    ips = d.get("images_per_s") or {}
    where = (f"{d.get('gpu')}, {d.get('model')} at {d.get('resolution')} px, {d.get('train_size')} images, "
             f"batch {d.get('batch_size')}, {d.get('epochs')} epochs, {d.get('autocast')}")
    out = [
        Figure("GPU: train_proxy / plain loop throughput (medians)", r, "ratio", f">= {d.get('goal_ratio')}",
               _goal(r, ">=", float(d.get("goal_ratio", 0.9))), f"{d.get('repeats')} repeats; {where}"),
        Figure("GPU: train_proxy throughput (median)", ips.get("trainer"), "img/s"),
        Figure("GPU: plain loop channels_last / NCHW (median img/s)",
               f"{ips.get('plain_channels_last', float('nan')):,.0f} / {ips.get('plain_nchw', float('nan')):,.0f}",
               "img/s", note=f"the trainer uses channels_last: {d.get('channels_last')}"),
        Figure(f"GPU: aggregate throughput, best N ({d.get('best_candidates_per_gpu')}) per GPU / one", best,
               "ratio", f">= {d.get('goal_aggregate')}", _goal(best, ">=", float(d.get("goal_aggregate", 3.0))),
               "N processes training at once on one GPU, as search.trials_per_gpu: N"),
    ]
    for n, v in (d.get("aggregate_images_per_s") or {}).items():
        out.append(Figure(f"GPU: aggregate throughput, {n} candidate(s) per GPU", v, "img/s"))
    return out


def x_latency(d: dict[str, Any]) -> list[Figure]:
    r = d.get("max_min_ratio")
    med = d.get("medians_ms") or []
    return [
        Figure("latency max/min of per-process medians", r, "ratio", "<= 1.05", _goal(r, "<=", 1.05),
               f"{d.get('processes')} processes, {d.get('preset')} @ {d.get('input')}, ORT {d.get('threads')} thread, "
               f"{d.get('clock')} clock, worst in-process spread {max(d.get('spreads') or [0]):.0%}"),
        Figure("latency median of per-process medians", statistics.median(med) if med else None, "ms"),
    ]


def x_drift(d: dict[str, Any]) -> list[Figure]:
    """Interleaved (drift-aware) vs naive latency: slowed/normal ratio per architecture."""
    rows = d.get("rows") or []
    lo, hi = d.get("goal") or (0.95, 1.05)
    worst = d.get("worst_ratio")
    ok = bool(rows) and all(lo <= r["ratio"] <= hi for r in rows)
    out = [Figure("latency under drift: worst interleaved slowed/normal ratio", worst, "ratio", f"all in {lo}-{hi}",
                  "pass" if ok else "fail",
                  f"{len(rows)} archs @ {d.get('input')}, ORT 1 thread, busy process on the same core; "
                  f"{d.get('pairs')} pairs of {d.get('block_s')} s blocks; flagged slowed "
                  f"{d.get('flagged_slowed')}/{len(rows)}, normal {d.get('flagged_normal')}/{len(rows)}")]
    for r in rows:
        out.append(Figure(f"latency under drift: {r['arch']} naive / interleaved ratio",
                          f"{r['naive_ratio']:.3f} / {r['ratio']:.3f}", "ratio"))
    return out


def x_zero_cost(d: dict[str, Any]) -> list[Figure]:
    sp = d.get("spearman") or {}
    n = len(d.get("rows") or [])
    base = max((v["rho"] for k, v in sp.items() if "baseline" in k and not math.isnan(v["rho"])), default=None)
    acc = [r.get("accuracy") for r in d.get("rows") or []]
    flat = len(set(acc)) <= 1
    out = []
    for name, v in sp.items():
        rho = v.get("rho")
        note = f"{n} archs, p={v.get('p'):.2g}" if isinstance(v.get("p"), float) else f"{n} archs"
        if "baseline" not in name and base is not None and rho is not None and not math.isnan(rho):
            note += "; beats MACs/params baseline" if rho > base else "; does not beat MACs/params baseline"
        if flat:
            note += f"; undefined: every arch trained to the same accuracy {acc[0] if acc else 'n/a'}"
        if "baseline" in name:  # the reference the proxies must beat: no goal of its own
            out.append(Figure(f"Spearman {name} vs trained accuracy", rho, "rho", note=note))
            continue
        ok = base is not None and rho is not None and not math.isnan(rho) and rho > base and not flat
        out.append(Figure(f"Spearman {name} vs trained accuracy", rho, "rho", "> best MACs/params baseline",
                          "pass" if ok else "fail", note))
    return out


def x_proxy_fidelity(d: dict[str, Any]) -> list[Figure]:
    n, exp = d.get("n"), d.get("experiment")
    base = {f["name"]: f.get("tau") for f in (d.get("figures") or [])[1:]}
    note = f"{exp}, {n} paper networks; baselines " + ", ".join(
        f"{k} {v:.2f}" if isinstance(v, (int, float)) else f"{k} -" for k, v in base.items())
    out = []
    labels = {"tau": ("proxy Kendall tau vs paper top-1", "tau"),
              "beats_baselines": ("proxy tau above every free baseline", "tau"),
              "shuffle_helps": ("Table 3 pairs where shuffle helps", "of 6")}
    for key, g in (d.get("goals") or {}).items():
        label, unit = labels.get(key, (key, ""))
        out.append(Figure(label, g.get("value"), unit, g.get("goal", ""), "pass" if g.get("pass") else "fail",
                          note if key != "shuffle_helps" else f"{exp}"))
    p = (d.get("figures") or [{}])[0]
    lo, hi = p.get("tau_low"), p.get("tau_high")
    interval = f"[{lo:.2f}, {hi:.2f}]" if isinstance(lo, float) and isinstance(hi, float) else "-"
    out.append(Figure("proxy tau 95% interval (bootstrap, seeded)", interval, "", "", "info",
                      f"proxy CPU {float(d.get('cpu_s') or 0) / 60:.1f} min"))
    return out


def x_lut(d: dict[str, Any]) -> list[Figure]:
    """Predictor vs MACs model on the same held-out archs; goals >= 90% within ±10%, Spearman >= 0.97."""
    p, m = d.get("predictor") or {}, d.get("macs") or {}
    note = (f"{d.get('n')} held-out archs of the whole space, built from {d.get('measurements')} measurements, "
            f"{d.get('clock')} clock")
    return [
        Figure("latency predictor: share of predictions within ±10%", p.get("within"), "share",
               ">= 90%", _goal(p.get("within"), ">=", 0.90), note),
        Figure("latency predictor: Spearman vs measured", p.get("spearman"), "rho",
               ">= 0.97", _goal(p.get("spearman"), ">=", 0.97)),
        Figure("MACs-proportional model (same data): share within ±10%", m.get("within"), "share", note=note),
        Figure("MACs-proportional model (same data): Spearman vs measured", m.get("spearman"), "rho"),
    ]


def x_overhead(d: dict[str, Any]) -> list[Figure]:
    a, b = d.get("median_in_trial_overhead_ms"), d.get("loop_overhead_per_trial_ms")
    note = f"{d.get('trials')} trials, {d.get('sampler')}, {d.get('storage')}"
    return [
        Figure("framework overhead inside a trial (median)", a, "ms/trial", "<= 50 ms", _goal(a, "<=", 50), note),
        Figure("framework overhead per trial incl. worker loop", b, "ms/trial", "<= 50 ms", _goal(b, "<=", 50), note),
    ]


#: 2 workers on 2 cores should come close to twice the trials per hour of one
SCALING_GOAL = 1.5


def x_scaling(d: dict[str, Any]) -> list[Figure]:
    out = []
    for b in ("optuna", "ray"):
        r = d.get(b)
        if not isinstance(r, dict):
            out.append(Figure(f"{b}: 2 workers / 1 worker trials/h", None, "ratio", f">= {SCALING_GOAL:g}", "fail",
                              "backend not run / unavailable"))
            continue
        note = f"{d.get('trials')} trials, {d.get('cpus')} CPUs; {r['trials_per_hour_1']:.0f} vs " \
               f"{r['trials_per_hour_2']:.0f} trials/h"
        for label, key in (("end to end", "ratio"), ("steady state", "steady_ratio")):
            out.append(Figure(f"{b}: 2 workers / 1 worker trials/h ({label})", r.get(key), "ratio",
                              f">= {SCALING_GOAL:g} (2 workers, {d.get('cpus')} CPUs)",
                              _goal(r.get(key), ">=", SCALING_GOAL), note))
    return out


def x_quality(d: dict[str, Any]) -> list[Figure]:
    out = []
    seeds = d.get("seeds") or []
    for s, r in (d.get("samplers") or {}).items():
        if s == "random":
            continue
        ratio = r.get("ratio_to_random")
        beats = isinstance(ratio, (int, float)) and not math.isnan(ratio) and ratio > 1.0
        out.append(Figure(f"hypervolume {s} / random (mean of {len(seeds)} seeds)", ratio,
                          "ratio", "> 1.0 (beats random)", "pass" if beats else "fail",
                          f"{d.get('trials')} trials/seed; {d.get('accuracy_proxy')}"))
    for p, e in (d.get("presets") or {}).items():
        doms = e.get("dominated_by") or {}
        text = ", ".join(f"{s} {sum(v)}/{len(v)}" for s, v in doms.items())
        ok = any(2 * sum(v) > len(v) for s, v in doms.items() if s != "random")
        out.append(Figure(f"preset {p} dominated by a searched arch (seeds)", text, "",
                          "dominated in most seeds (tpe or nsga2)", "pass" if ok else "fail"))
    if not d.get("presets"):
        out.append(Figure("presets dominated by a searched arch", "no preset in the studies", "",
                          "dominated in most seeds (tpe or nsga2)", "fail", "the comparison was not made"))
    return out


BENCHES: list[Bench] = [
    Bench("flops", "bench/flops.py", [],
          ["--presets", "shufflenet_v1_g1_x0_5,shufflenet_v1_g3_x1_0,shufflenet_v1_g8_x2_0", "--repeats", "1"],
          x_flops, what="analytic MACs vs ptflops speed"),
    Bench("train_throughput", "bench/train_throughput.py", [], ["--train-size", "1000", "--repeats", "3"],
          x_train, what="train_proxy vs hand-written loops"),
    Bench("gpu_throughput", "bench/gpu_throughput.py", [], ["--repeats", "1", "--candidates", "1,2,4"],
          x_gpu, what="train_proxy vs a plain loop on a GPU; N candidates per GPU (needs CUDA)"),
    Bench("latency_repeatability", "bench/latency_repeatability.py", [], ["--processes", "3", "--min-time", "1.0"],
          x_latency, what="same model in separate processes"),
    Bench("latency_drift", "bench/latency_drift.py", [], ["--quick"],
          x_drift, what="naive vs interleaved latency, normal vs slowed window"),
    Bench("zero_cost", "bench/zero_cost.py", [],
          ["--n", "8", "--epochs", "2"],
          x_zero_cost, json_to_file=True, what="zero-cost proxies vs proxy training"),
    # the quickstart's signal (NASWOT) scores all 21 networks in ~2-3 min, so both profiles use all of them
    Bench("proxy_fidelity", "bench/proxy_fidelity.py", [], [],
          x_proxy_fidelity, what="proxy ranking vs the ShuffleNet paper's 21 networks"),
    Bench("proxy_fidelity_shuffle", "bench/proxy_fidelity.py", ["--experiment", "experiments/shuffle_ablation.yaml"],
          ["--experiment", "experiments/shuffle_ablation.yaml"], x_proxy_fidelity,
          what="the shuffle ablation's signal: does shuffle help, as in the paper's Table 3?"),
    Bench("lut_accuracy", "bench/lut_accuracy.py", [], ["--quick"],
          x_lut, what="latency predictor (profiled kernels) vs MACs model, held-out archs"),
    Bench("search_overhead", "bench/search_overhead.py", [], ["--trials", "100"],
          x_overhead, what="framework ms per trial"),
    Bench("search_scaling", "bench/search_scaling.py", ["--backend", "both"], ["--backend", "both", "--trials", "4"],
          x_scaling, what="trials/h, 2 workers vs 1"),
    Bench("search_quality", "bench/search_quality.py", ["--cheap"], ["--cheap", "--trials", "12"],
          x_quality, what="hypervolume vs random search"),
]


# ---- running ----

def _parse_json(text: str) -> dict[str, Any]:
    """The last JSON object in `text` (scripts may print progress before it)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    dec = json.JSONDecoder()
    pos = len(text)
    while (pos := text.rfind("{", 0, pos)) >= 0:
        if pos == 0 or text[pos - 1] == "\n":
            try:
                obj, end = dec.raw_decode(text, pos)
                if isinstance(obj, dict) and not text[end:].strip():
                    return obj
            except json.JSONDecodeError:
                pass
    raise ValueError("no JSON object at the end of the output")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_bench(b: Bench, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one script; never raises: failures and timeouts come back as a status."""
    args = list(b.quick if quick else b.full)
    tmp = None
    if b.json_to_file:
        fd, tmp = tempfile.mkstemp(prefix=f"bench_{b.name}_", suffix=".json")
        os.close(fd)
        json_args = ["--json", tmp]
        shown_json = ["--json", f"{b.name}.json"]
    else:
        json_args = shown_json = ["--json"]
    cmd = [sys.executable, b.script, *args, *json_args]
    shown = shlex.join(["python", b.script, *args, *shown_json])
    entry: dict[str, Any] = {"name": b.name, "what": b.what, "command": shown, "status": "ok", "figures": []}
    t0 = time.perf_counter()
    # own session so a timeout can take down the script's worker processes too
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        entry.update(status="timeout", error=f"no result within {timeout:g} s", stderr_tail=_tail(err or ""))
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    try:
        if entry["status"] == "ok" and proc.returncode != 0:
            entry.update(status="failed", returncode=proc.returncode,
                         error=_tail(err or out or "", 3) or f"exit {proc.returncode}", stderr_tail=_tail(err or ""))
        elif entry["status"] == "ok":
            try:
                data = json.loads(Path(tmp).read_text()) if tmp else _parse_json(out)
            except (OSError, ValueError) as e:
                entry.update(status="bad-output", error=f"cannot read its JSON: {e}", stdout_tail=_tail(out or ""))
            else:
                entry["raw"] = data
                try:
                    entry["figures"] = [asdict(f) for f in b.extract(data)]
                except Exception as e:  # a changed JSON shape must not lose the other benchmarks
                    entry.update(status="bad-output", error=f"extractor: {type(e).__name__}: {e}")
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
    return entry


# ---- environment ----

def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    cpu, cores = "unknown", os.cpu_count() or 1
    try:
        sys.path.insert(0, str(ROOT))
        from objectives.latency.base import host_info

        h = host_info()
        cpu, cores = h.get("cpu_model", cpu), h.get("cores", cores)
    except Exception:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu, "cores": cores, "system": f"{platform.system()} {platform.machine()}",
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(), "torch": _version("torch"), "onnxruntime": _version("onnxruntime"),
        "optuna": _version("optuna"), "ray": _version("ray"), "note": NOISE_NOTE,
    }


# ---- report ----

def _fmt(v: Any, unit: str) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if unit == "share":
        return f"{v:.1%}"
    if unit == "x":
        return f"{v:,.0f}x"
    if unit == "rho":
        return f"{v:+.3f}"
    s = f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return f"{s} {unit}" if unit and unit != "ratio" else s


MARK = {"pass": "pass", "fail": "**FAIL**", "info": "(no goal)"}


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def write_report(results: dict[str, Any], path: Path) -> None:
    env = results["environment"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench" + (" --quick" if results["profile"] == "quick" else "") + "` "
        "(bench/run_all.py); all figures, with each script's raw JSON, are in bench/results.json.",
        "",
        f"- Date: {env['date']} (last run; each benchmark's own time is in the Profiles table)",
        f"- Machine: {env['cpu_model']}, {env['cores']} cores ({env['system']}); {env['note']} "
        f"(1-min load average at start {env['load_average_1min_at_start']})",
        f"- Versions: Python {env['python']}, torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
        f"optuna {env['optuna']}, ray {env['ray']}",
        f"- Profile: **{results['profile']}**"
        + (" (smaller sizes, see the last table; run `python -m bench` for the full profile)"
           if results["profile"] == "quick" else ""),
        "- Values are medians where the script repeats a measurement. Reproduce one figure with its command "
        "(from the repository root, in the project's environment).",
        "",
        "| Benchmark | Figure | Value | Goal | Result | Reproduce |",
        "|---|---|---|---|---|---|",
    ]
    problems = []
    for name, e in results["benchmarks"].items():
        cmd = f"`{e['command']}`"
        if e["status"] != "ok":
            lines.append(f"| {name} | (script {e['status']}) | n/a | | **{e['status'].upper()}** | {cmd} |")
            problems.append((name, e))
            continue
        for f in e["figures"]:
            figure = f["name"] + (f" ({f['note']})" if f.get("note") else "")
            lines.append(f"| {name} | {_cell(figure)} | {_cell(_fmt(f['value'], f['unit']))} | {_cell(f['goal'])} | "
                         f"{MARK.get(f['status'], f['status'])} | {cmd} |")
    if problems:
        lines += ["", "## Scripts that did not produce figures", ""]
        for name, e in problems:
            lines += [f"### {name}: {e['status']} after {e.get('seconds')} s", "", f"`{e['command']}`", "", "```",
                      e.get("error", ""), "```", ""]
    lines += ["", "## Profiles", "", "| Benchmark | Measures | Full profile arguments | Quick profile arguments | "
              "Seconds | Run at |", "|---|---|---|---|---|---|"]
    for b in BENCHES:
        e = results["benchmarks"].get(b.name, {})
        lines.append(f"| {b.name} | {b.what} | `{shlex.join(b.full) or '(defaults)'}` | `{shlex.join(b.quick)}` | "
                     f"{e.get('seconds', 'not run')} | {e.get('date', '')} |")
    lines += ["", "search_quality uses `--cheap` in both profiles (NASWOT zero-cost score as the accuracy "
              "objective); run `python bench/search_quality.py --json` for the slow version with proxy training.", ""]
    old = path.read_text() if path.is_file() else ""
    if HAND_WRITTEN in old:  # the long benches' sections are written by hand from their own runs: keep them
        lines += [HAND_WRITTEN + old.split(HAND_WRITTEN, 1)[1]]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0],
        epilog="BENCHMARKS.md is published from the full profile: run `python -m bench` (no --quick, about an "
               "hour or more here) on a quiet machine from the repository root in the project's venv; it writes "
               "BENCHMARKS.md and bench/results.json. `--quick` is a smoke run and says so in the report. Every "
               "figure with a goal is pass or FAIL.")
    ap.add_argument("--quick", action="store_true", help="smaller sizes for every script (minutes, not hours)")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per script before it is killed and recorded as a timeout "
                         "(default 900 with --quick, 3600 otherwise)")
    ap.add_argument("--out", default=str(REPORT), help="the Markdown report (default BENCHMARKS.md)")
    ap.add_argument("--results", default=str(RESULTS), help="the JSON results (default bench/results.json)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    names = [b.name for b in BENCHES]
    if args.list:
        for b in BENCHES:
            print(f"{b.name:24s} {b.what}")
        return 0
    selected = names
    if args.only:
        selected = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in selected if s not in names]
        if bad:
            print(f"error: --only: unknown benchmark {', '.join(bad)}; choose from {', '.join(names)}", file=sys.stderr)
            return 2
    timeout = args.timeout if args.timeout is not None else (900.0 if args.quick else 3600.0)
    if timeout <= 0:
        print(f"error: --timeout must be > 0 seconds, got {timeout:g}", file=sys.stderr)
        return 2
    profile = "quick" if args.quick else "full"
    results_path = Path(args.results)
    benchmarks: dict[str, Any] = {}
    if args.only and results_path.exists():  # a subset updates the previous run's entries for the same profile
        try:
            prev = json.loads(results_path.read_text())
            if prev.get("profile") == profile:
                benchmarks = dict(prev.get("benchmarks", {}))
        except (OSError, ValueError):
            pass
    env = environment()
    for b in BENCHES:
        if b.name not in selected:
            continue
        print(f"[{b.name}] running ({profile}) ...", file=sys.stderr, flush=True)
        e = run_bench(b, args.quick, timeout)
        e["date"] = env["date"]
        benchmarks[b.name] = e
        print(f"[{b.name}] {e['status']} in {e['seconds']} s"
              + (f": {e.get('error', '').splitlines()[-1] if e.get('error') else ''}" if e["status"] != "ok" else ""),
              file=sys.stderr, flush=True)
        for f in e["figures"]:
            print(f"    {f['name']}: {_fmt(f['value'], f['unit'])}  [{f['status']}]", file=sys.stderr)
    ordered = {n: benchmarks[n] for n in names if n in benchmarks}
    results = {"profile": profile, "environment": env, "benchmarks": ordered}
    results_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_report(results, Path(args.out))
    print(f"wrote {args.out} and {results_path}", file=sys.stderr)
    failed = [n for n, e in ordered.items() if e["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
