"""Build the stand-alone reference set of the quickstart space on Fashion-MNIST.

Why: a proxy (NASWOT, a 2-epoch training, a zero-cost score) can only be judged against
networks trained properly on the same data; the paper's ImageNet table measures another
task. This trains every network of the set -- 32 architectures sampled from the quickstart
space under its 40 MMACs budget (per groups x width cell, spread over the repeats) plus every
paper preset under the budget (g1-g8 at 0.25x and 0.5x; g8 0.5x is 40.5 MMACs, out) -- with
ONE reference recipe (`RECIPE`, clearly longer than any proxy: more images, more epochs, a
10,000-image validation split) and several seeds, through the project's own `evaluate` path
(the trainer and stem rule a search uses), and writes a reference JSON
(`objectives/references/shufflenet_v1_fashion_mnist.json`): the seed mean as `reference`, each
seed's value and the spread per entry, and the set's own figures (seed-vs-seed Kendall tau,
best-minus-worst against the median seed-to-seed difference, build time).

Resumable: each (network, seed) result is written to --work as soon as it finishes, so a
kill loses at most the run in progress; a rerun skips what is there (keyed by the recipe).

    nice -n 5 python bench/fashion_reference.py                    # the full build (hours on 1 core)
    python bench/fashion_reference.py --limit 4 --epochs 2         # a pilot: 4 networks, other recipe
    python bench/fashion_reference.py --assemble-only --partial    # write what is done, marked partial
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NAME = "shufflenet_v1_fashion_mnist"
OUT = ROOT / "objectives" / "references" / f"{NAME}.json"
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
TAU_GOAL = 0.8

#: the one reference recipe (documented in README "Proxy fidelity" and written into the JSON)
RECIPE: dict[str, Any] = {
    "data": {"name": "fashion_mnist", "train_size": 8000, "val_size": 10000, "resolution": 16, "seed": 0},
    "train": {"epochs": 3, "batch_size": 128, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01,
              "schedule": "cosine", "warmup_steps": 50, "label_smoothing": 0.1, "bn_recalibrate": 8,
              "threads": 1, "device": "cpu"},
    "seeds": [0, 1],
}
#: sampled networks per (groups, width) cell of the quickstart space under the budget
PER_CELL = {0.25: 3, 0.5: 4, 0.75: 1}
SAMPLE_SEED = 20


def space_archs(exp: Any) -> list[tuple[str, Any, dict[str, Any]]]:
    """(id, deploy arch, tags): the sampled networks, then the paper presets under the budget."""
    from objectives.flops import analytic_macs
    from search_spaces import get_space, preset

    sp = exp.space
    space = get_space(sp["family"], **{k: v for k, v in sp.items() if k not in ("family", "name")})
    hw = exp.deploy.shape[1:]
    budget = exp.budget.max_mmacs
    rng = random.Random(SAMPLE_SEED)

    def mmacs(a: Any) -> float:
        return analytic_macs(a, hw) / 1e6

    presets = []
    for g, w in itertools.product((1, 2, 3, 4, 8), (0.25, 0.5)):
        name = f"{sp['family']}_g{g}_x{str(w).replace('.', '_')}"
        a = preset(name)
        if mmacs(a) <= budget:
            presets.append((f"preset/g{g}_x{str(w).replace('.', '_')}", a,
                            {"source": "preset", "groups": g, "width": w, "repeats": [s.repeats for s in a.stages],
                             "shuffle": True, "mmacs": round(mmacs(a), 2)}, name))
    preset_ids = {a.arch_id for _, a, _, _ in presets}
    cells: dict[tuple[int, float], list[Any]] = {}
    for g, w in itertools.product(space.groups, space.widths):
        for reps in itertools.product(*(range(lo, hi + 1) for lo, hi in space.repeats)):
            for place in space.placements:
                for k in space.kernels:
                    try:
                        a = space._build({"groups": g, "shuffle": place, "bottleneck_ratio": 0.25,
                                          **{f"repeats_stage{i + 2}": r for i, r in enumerate(reps)},
                                          **{f"kernel_stage{i + 2}": k for i in range(len(reps))}}, w)
                    except ValueError:
                        continue
                    if mmacs(a) <= budget and a.arch_id not in preset_ids:
                        cells.setdefault((g, w), []).append(a)
    picked: list[list[Any]] = []
    for (g, w), archs in sorted(cells.items()):
        picked.append([])
        archs.sort(key=lambda a: (sum(s.repeats for s in a.stages), [s.repeats for s in a.stages]))
        n = min(PER_CELL.get(w, 1), len(archs))
        # one pick from each of n equal slices of the depth order: shallow to deep networks in every cell
        for j in range(n):
            lo, hi = j * len(archs) // n, (j + 1) * len(archs) // n
            a = archs[rng.randrange(lo, max(hi, lo + 1))]
            reps = [s.repeats for s in a.stages]
            picked[-1].append((f"sampled/g{g}_x{str(w).replace('.', '_')}_r{'-'.join(map(str, reps))}", a,
                               {"source": "sampled", "groups": g, "width": w, "repeats": reps,
                                "shuffle": a.stages[0].shuffle != "none", "mmacs": round(mmacs(a), 2)}, None))
    # presets first, then the cells round-robin: a build cut short still covers the space evenly
    sampled = [c[j] for j in range(max(map(len, picked))) for c in picked if j < len(c)]
    return [(i, a, t | ({"preset": p} if p else {})) for i, a, t, p in presets + sampled]


def recipe_key(recipe: dict[str, Any]) -> str:
    import torch

    key = {"data": recipe["data"], "train": recipe["train"], "torch": torch.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def experiment_for(recipe: dict[str, Any], seed: int) -> Any:
    """The quickstart experiment with the reference recipe's data and train sections (no latency)."""
    from nas.experiment import load_experiment

    d = load_experiment(str(QUICKSTART)).model_dump()
    d["name"] = "fashion_reference"
    d["data"] = dict(recipe["data"])
    d["train"] = dict(recipe["train"], seed=seed)
    d["objectives"] = ["accuracy", "mmacs"]
    d["latency"] = {"backend": "none"}
    d["zero_cost"] = False
    d["reference_presets"] = []
    return type(load_experiment(str(QUICKSTART))).model_validate(d)


def run_one(arch: Any, recipe: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one network with one seed through `evaluate` (the search's own path)."""
    from nas.pipeline.evaluate import evaluate

    exp = experiment_for(recipe, seed)
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="fashion-ref-") as tmp:
        a = evaluate(arch, exp, run_dir=tmp).attrs
    return {"arch_id": arch.arch_id, "seed": seed, "accuracy": 100.0 * float(a["accuracy"]),
            "acc_history": [100.0 * v for v in a["acc_history"]], "mmacs": a["mmacs"],
            "params_m": a["n_params"] / 1e6, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def _safe(eid: str) -> str:
    return eid.replace("/", "__")


def run_dir(work: str | Path, recipe: dict[str, Any]) -> Path:
    """Where the per-run results of `recipe` live (one folder per recipe key)."""
    return Path(work) / recipe_key(recipe)


def trained(eid: str, arch: Any, recipe: dict[str, Any], seed: int, work: Path) -> tuple[dict[str, Any], bool]:
    """One run's result from `work` or, when absent, trained now and written there at once
    (atomically): (row, whether it was trained now). bench/search_vs_paper.py shares it."""
    f = work / f"{_safe(eid)}__seed{seed}.json"
    if f.is_file():
        return json.loads(f.read_text()), False
    row = run_one(arch, recipe, seed) | {"id": eid}
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    tmp.replace(f)
    return row, True


def set_figures(per_seed: dict[str, dict[int, float]], seeds: list[int]) -> dict[str, Any]:
    """Seed-vs-seed Kendall tau (the ceiling of any proxy), best-minus-worst vs seed noise."""
    from objectives.ranking import kendall_ci

    full = [eid for eid, v in per_seed.items() if all(s in v for s in seeds)]
    means = [statistics.fmean(per_seed[e][s] for s in seeds) for e in full]
    diffs = [max(per_seed[e][s] for s in seeds) - min(per_seed[e][s] for s in seeds) for e in full]
    out: dict[str, Any] = {"networks": len(full), "seeds": seeds}
    if len(full) >= 2 and len(seeds) >= 2:
        a, b = [per_seed[e][seeds[0]] for e in full], [per_seed[e][seeds[1]] for e in full]
        tau, lo, hi = kendall_ci(a, b)
        out |= {"seed_tau": round(tau, 3), "seed_tau_low": round(lo, 3), "seed_tau_high": round(hi, 3)}
    if full:
        out |= {"best_minus_worst": round(max(means) - min(means), 2),
                "median_seed_diff": round(statistics.median(diffs), 2) if diffs else None,
                "max_seed_diff": round(max(diffs), 2) if diffs else None}
    return out


def assemble(entries: list[tuple[str, Any, dict[str, Any]]], work: Path, recipe: dict[str, Any],
             build: dict[str, Any], partial: bool) -> dict[str, Any]:
    """The reference JSON from the per-run files: complete entries only (every seed done)."""
    seeds = list(recipe["seeds"])
    per_seed: dict[str, dict[int, float]] = {}
    rows = []
    for eid, arch, tags in entries:
        vals = {}
        for s in seeds:
            f = work / f"{_safe(eid)}__seed{s}.json"
            if f.is_file():
                vals[s] = json.loads(f.read_text())["accuracy"]
        if len(vals) < len(seeds):
            continue
        per_seed[eid] = vals
        v = [vals[s] for s in seeds]
        e: dict[str, Any] = {"id": eid}
        if "preset" in tags:
            e["preset"] = tags["preset"]
        else:
            e["arch"] = json.loads(arch.to_json())
        e |= {"reference": round(statistics.fmean(v), 3), "seeds": {str(s): round(x, 3) for s, x in vals.items()},
              "spread": round(max(v) - min(v), 3), "tags": {k: t for k, t in tags.items() if k != "preset"}}
        rows.append(e)
    figs = set_figures(per_seed, seeds)
    expected = len(entries)
    doc = {"name": NAME + ("_partial" if partial else ""),
           "source": ("shufflenas bench/fashion_reference.py: stand-alone training of the quickstart space "
                      "(shufflenet_v1, groups 2/3/4/8, widths 0.25-1.0, repeats [1-4, 2-8, 1-4]) under 40 MMACs at "
                      "3x224x224 plus the paper presets under that budget, on Fashion-MNIST"
                      + (f"; PARTIAL: {len(rows)} of {expected} networks" if partial else "")),
           "metric": "Fashion-MNIST validation top-1 (%), mean over seeds",
           "recipe": {"data": recipe["data"], "train": recipe["train"], "seeds": seeds,
                      "validation": "seeded stratified split of the 60,000 training images; test images unused",
                      "path": "nas.pipeline.evaluate.evaluate -> objectives.accuracy.train_proxy"},
           "figures": figs | {"complete": not partial and len(rows) == expected, "expected_networks": expected},
           "build": build, "entries": rows}
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "fashion_reference"),
                    help="folder of per-run results (resume from here); default runs/fashion_reference")
    ap.add_argument("--out", default=None, help=f"reference JSON to write (default {OUT.relative_to(ROOT)}, "
                                                "or ..._partial.json with --partial)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N networks (a pilot)")
    ap.add_argument("--only", default=None, help="comma-separated entry ids (a pilot)")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe (a pilot; changes the key)")
    ap.add_argument("--train-size", type=int, default=None, help="override the recipe (a pilot)")
    ap.add_argument("--resolution", type=int, default=None, help="override the recipe (a pilot)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the recipe (a pilot)")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe (a pilot)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1)")
    ap.add_argument("--assemble-only", action="store_true", help="train nothing; write the JSON from --work")
    ap.add_argument("--partial", action="store_true", help="name the output ..._partial and mark it so")
    ap.add_argument("--list", action="store_true", help="print the networks and exit")
    args = ap.parse_args(argv)

    from nas.experiment import load_experiment

    recipe = json.loads(json.dumps(RECIPE))
    for key, sect, field in (("epochs", "train", "epochs"), ("train_size", "data", "train_size"),
                             ("resolution", "data", "resolution"), ("batch_size", "train", "batch_size"),
                             ("lr", "train", "lr")):
        if getattr(args, key) is not None:
            recipe[sect][field] = getattr(args, key)
    if args.seeds:
        recipe["seeds"] = [int(s) for s in args.seeds.split(",")]
    entries = space_archs(load_experiment(str(QUICKSTART)))
    if args.only:
        keep = set(args.only.split(","))
        entries = [e for e in entries if e[0] in keep]
    if args.limit:
        entries = entries[:args.limit]
    if args.list:
        for eid, _a, tags in entries:
            print(eid, tags["mmacs"])
        print(f"{len(entries)} networks")
        return 0
    key = recipe_key(recipe)
    work = run_dir(args.work, recipe)
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.json").write_text(json.dumps(recipe, indent=1))
    log = work / "build.json"
    build = json.loads(log.read_text()) if log.is_file() else {"wall_s": 0.0, "cpu_s": 0.0, "runs": 0}
    t_start = time.perf_counter()
    if not args.assemble_only:
        import torch

        torch.set_num_threads(int(recipe["train"].get("threads") or 1))
        todo = [(e, s) for e in entries for s in recipe["seeds"]
                if not (work / f"{_safe(e[0])}__seed{s}.json").is_file()]
        # both seeds of a network before the next network: a partial set still has seed pairs
        print(f"recipe {key}: {len(entries)} networks x {len(recipe['seeds'])} seeds, {len(todo)} runs to do",
              file=sys.stderr, flush=True)
        for n, ((eid, arch, _tags), seed) in enumerate(todo, 1):
            row, _ = trained(eid, arch, recipe, seed, work)
            build = {"wall_s": build["wall_s"] + row["wall_s"], "cpu_s": build["cpu_s"] + row["cpu_s"],
                     "runs": build["runs"] + 1}
            log.write_text(json.dumps(build))
            print(f"[{n}/{len(todo)}] {eid} seed {seed}: {row['accuracy']:.2f}% "
                  f"({' '.join(f'{v:.1f}' for v in row['acc_history'])}) {row['wall_s']:.0f} s "
                  f"[{time.perf_counter() - t_start:.0f} s]", file=sys.stderr, flush=True)
    doc = assemble(entries, work, recipe, build | {"recipe_key": key, "cpu": "1 thread, nice 5, shared 2-core host"},
                   args.partial)
    pilot = bool(args.only or args.limit) or recipe != RECIPE
    out = Path(args.out) if args.out else (OUT.with_name(f"{NAME}_partial.json") if args.partial else OUT)
    if pilot and not args.out:  # a pilot never overwrites the shipped set
        out = Path(args.work) / f"{key}.json"
    elif not args.partial and not doc["figures"]["complete"]:
        print(f"not every network has every seed ({len(doc['entries'])} of {len(entries)}): rerun to finish, or "
              f"pass --partial to write what is done under a _partial name", file=sys.stderr)
        out = Path(args.work) / f"{key}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    figs = doc["figures"]
    print(json.dumps(figs), file=sys.stderr)
    tau = figs.get("seed_tau", float("nan"))
    print(f"wrote {out}: {figs['networks']} networks; seed-vs-seed tau {tau} (goal >= {TAU_GOAL}: "
          f"{'pass' if not math.isnan(tau) and tau >= TAU_GOAL else 'MISS'}); best-worst "
          f"{figs.get('best_minus_worst')} vs median seed diff {figs.get('median_seed_diff')} points",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
