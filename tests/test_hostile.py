"""Hostile input: malformed experiments and CLI misuse must fail as ONE stderr line, exit 2, no traceback.

Every case runs the real CLI in its own process with its own stdout/stderr and exit code. A fresh
`python -m nas` costs ~2-3 s of imports (torch), too much for 60 cases on a shared 2-core box, so a
fork server (one `python` that imports the package once, then forks a child per case that runs
`nas.cli.main` exactly as `python -m nas` would) runs them; `test_fork_server_matches_python_m_nas`
checks that the two give the same result. Cases that need a study get their own copy of one tiny
real study, so "the study file is unchanged" is checked per case.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

#: a tiny experiment, structured like experiments/quickstart.yaml
BASE: dict[str, Any] = {
    "name": "tiny",
    "description": "hostile-input fixture",
    "space": {"name": "shufflenet_v1", "groups": [2, 4], "widths": [0.25], "repeats": [[1, 1], [1, 1], [1, 1]],
              "placements": ["before_dw"], "kernels": [3]},
    "deploy": {"input": "3x64x64", "classes": 10},
    "budget": {"max_mmacs": 5},
    "objectives": ["accuracy", "mmacs"],
    "data": {"name": "default", "train_size": 200, "val_size": 100, "seed": 0},
    "train": {"epochs": 1, "batch_size": 50, "optimizer": "sgd", "lr": 0.05, "schedule": "cosine", "seed": 0,
              "threads": 1},
    "latency": {"backend": "none"},
    "zero_cost": False,
    "search": {"backend": "optuna", "sampler": "random", "n_trials": 2, "seed": 0, "workers": 1},
}


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "CI"}
    e.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + e.get("PYTHONPATH", ""))
    return e


def cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nas", *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def variant(*edits: tuple[str, Any], drop: tuple[str, ...] = ()) -> str:
    """BASE with dotted-key edits and deletions, as YAML text."""
    d = copy.deepcopy(BASE)
    for key, value in edits:
        *parents, last = key.split(".")
        cur = d
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[last] = value
    for key in drop:
        *parents, last = key.split(".")
        cur = d
        for p in parents:
            cur = cur[p]
        del cur[last]
    return yaml.safe_dump(d, sort_keys=False)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


@dataclass
class Case:
    id: str
    #: argv after `python -m nas`; "{db}" = this case's storage URL, "{dir}" = its folder, "{exp}" = the base yaml
    argv: list[str]
    names: tuple[str, ...]  # the one line must contain at least one of these (file, key or argument)
    files: dict[str, str | bytes] = field(default_factory=dict)
    db: str | None = None  # "study" (a copy of the tiny study) or "corrupt" (random bytes)
    skip: str | None = None
    #: run as an unprivileged user (uid/gid 65534, "nobody") when the tests run as root, who reads any file
    unprivileged: bool = False
    prepare: Callable[[Path], None] | None = None


def _chmod000(d: Path) -> None:
    (d / "locked.yaml").chmod(0)
    d.chmod(0o755)  # the folder stays searchable: only the file itself is unreadable


CASES: list[Case] = [
    # -- experiment files: types, ranges, unknown/missing keys ------------------------------
    Case("n_trials_string", ["search", "x.yaml"], ("search.n_trials",),
         {"x.yaml": variant(("search.n_trials", "many"))}),
    Case("max_mmacs_negative", ["search", "x.yaml"], ("budget.max_mmacs",),
         {"x.yaml": variant(("budget.max_mmacs", -5))}),
    Case("workers_zero", ["search", "x.yaml"], ("search.workers",), {"x.yaml": variant(("search.workers", 0))}),
    Case("epochs_float", ["search", "x.yaml"], ("train.epochs",), {"x.yaml": variant(("train.epochs", 1.5))}),
    Case("unknown_top_key", ["search", "x.yaml"], ("n_trial",), {"x.yaml": variant(("n_trial", 3))}),
    Case("unknown_nested_key", ["search", "x.yaml"], ("train.learning_rate",),
         {"x.yaml": variant(("train.learning_rate", 0.1))}),
    Case("missing_budget", ["search", "x.yaml"], ("budget",), {"x.yaml": variant(drop=("budget",))}),
    Case("missing_name", ["search", "x.yaml"], ("name",), {"x.yaml": variant(drop=("name",))}),
    Case("section_is_list", ["search", "x.yaml"], ("train",), {"x.yaml": variant(("train", [1, 2]))}),
    Case("yaml_syntax_error", ["search", "x.yaml"], ("x.yaml",),
         {"x.yaml": "name: tiny\nbudget: {max_mmacs: 5\nobjectives: [accuracy\n"}),
    Case("top_level_list", ["search", "x.yaml"], ("x.yaml",), {"x.yaml": "- name: tiny\n- budget: 5\n"}),
    Case("top_level_scalar", ["search", "x.yaml"], ("x.yaml",), {"x.yaml": "42\n"}),
    Case("empty_file", ["search", "x.yaml"], ("x.yaml",), {"x.yaml": ""}),
    Case("binary_file", ["search", "x.yaml"], ("x.yaml",), {"x.yaml": b"\xff\xfe\x00\x01garbage\x00"}),
    Case("impossible_budget", ["search", "x.yaml"], ("budget.max_mmacs",),
         {"x.yaml": variant(("deploy.input", "3x224x224"), ("budget.max_mmacs", 0.5))}),
    Case("min_over_max", ["search", "x.yaml"], ("min_mmacs",),
         {"x.yaml": variant(("budget.min_mmacs", 10), ("budget.max_mmacs", 5))}),
    Case("unknown_sampler", ["search", "x.yaml"], ("search.sampler",),
         {"x.yaml": variant(("search.sampler", "cmaes"))}),
    Case("unknown_backend", ["search", "x.yaml"], ("search.backend",),
         {"x.yaml": variant(("search.backend", "hyperopt"))}),
    Case("unknown_dataset", ["search", "x.yaml"], ("data.name",), {"x.yaml": variant(("data.name", "imagenet21k"))}),
    Case("unknown_objective", ["search", "x.yaml"], ("objectives",),
         {"x.yaml": variant(("objectives", ["accuracy", "flops"]))}),
    Case("unknown_latency_backend", ["search", "x.yaml"], ("latency.backend",),
         {"x.yaml": variant(("latency.backend", "tensorrt"))}),
    Case("unknown_reference_preset", ["search", "x.yaml"], ("reference_presets",),
         {"x.yaml": variant(("reference_presets", ["shufflenet_v1_g7_x0_5"]))}),
    Case("unknown_placement", ["search", "x.yaml"], ("space.placements", "placements", "shuffle"),
         {"x.yaml": variant(("space.placements", ["middle"]))}),
    Case("bad_groups_value", ["search", "x.yaml"], ("space.groups", "groups"),
         {"x.yaml": variant(("space.groups", [5]))}),
    Case("bad_deploy_input", ["search", "x.yaml"], ("deploy.input",), {"x.yaml": variant(("deploy.input", "224x224"))}),
    Case("latency_objective_without_backend", ["search", "x.yaml"], ("latency", "objectives"),
         {"x.yaml": variant(("objectives", ["accuracy", "latency_ms"]))}),
    # -- unreadable paths ---------------------------------------------------------------------
    Case("directory_not_file", ["search", "adir"], ("adir",), prepare=lambda d: (d / "adir").mkdir()),
    Case("missing_file", ["search", "nope.yaml"], ("nope.yaml",)),
    Case("chmod_000", ["search", "locked.yaml"], ("locked.yaml",), {"locked.yaml": variant()}, prepare=_chmod000,
         unprivileged=True),
    # -- CLI overrides ------------------------------------------------------------------------
    Case("flag_bad_sampler", ["search", "x.yaml", "--sampler", "cmaes"], ("sampler",), {"x.yaml": variant()}),
    Case("flag_trials_zero", ["search", "x.yaml", "--trials", "0"], ("n_trials", "--trials"), {"x.yaml": variant()}),
    Case("flag_bad_study_name", ["search", "x.yaml", "--study", "a b/c"], ("study",), {"x.yaml": variant()}),
    Case("flag_bad_storage_url", ["search", "x.yaml", "--storage", "notadb://nowhere"], ("--storage",),
         {"x.yaml": variant()}),
    # -- corrupt SQLite storage -----------------------------------------------------------------
    Case("corrupt_db_search", ["search", "{exp}", "--storage", "{db}"], ("--storage", "study.db"), db="corrupt"),
    Case("corrupt_db_status", ["status", "tiny", "--storage", "{db}"], ("--storage", "study.db"), db="corrupt"),
    Case("corrupt_db_resume", ["resume", "tiny", "--storage", "{db}"], ("--storage", "study.db"), db="corrupt"),
    Case("corrupt_db_pareto", ["pareto", "tiny", "--storage", "{db}"], ("--storage", "study.db"), db="corrupt"),
    Case("corrupt_db_export", ["export", "tiny", "--storage", "{db}", "--pick", "knee", "--out", "{dir}/out"],
         ("--storage", "study.db"), db="corrupt"),
    # -- an existing study ----------------------------------------------------------------------
    Case("study_name_collision", ["search", "other.yaml", "--study", "tiny", "--storage", "{db}"], ("tiny",),
         {"other.yaml": variant(("name", "other"), ("train.lr", 0.2))}, db="study"),
    Case("changed_space_same_study", ["search", "wider.yaml", "--storage", "{db}"], ("space",),
         {"wider.yaml": variant(("space.widths", [0.25, 0.5]))}, db="study"),
    Case("changed_budget_same_study", ["search", "budget.yaml", "--storage", "{db}"], ("budget",),
         {"budget.yaml": variant(("budget.max_mmacs", 4))}, db="study"),
    Case("resume_trials_zero", ["resume", "tiny", "--storage", "{db}", "--trials", "0"], ("--trials",), db="study"),
    Case("resume_workers_zero", ["resume", "tiny", "--storage", "{db}", "--workers", "0"], ("workers",), db="study"),
    Case("unknown_study_status", ["status", "nosuch", "--storage", "{db}"], ("nosuch",), db="study"),
    Case("unknown_study_resume", ["resume", "nosuch", "--storage", "{db}"], ("nosuch",), db="study"),
    Case("unknown_study_pareto", ["pareto", "nosuch", "--storage", "{db}"], ("nosuch",), db="study"),
    Case("unknown_study_export", ["export", "nosuch", "--storage", "{db}", "--pick", "knee", "--out", "{dir}/out"],
         ("nosuch",), db="study"),
    Case("missing_storage_status", ["status", "tiny", "--storage", "sqlite:///{dir}/absent/study.db"],
         ("absent",)),
    Case("export_unknown_trial", ["export", "tiny", "--storage", "{db}", "--trial", "999", "--out", "{dir}/out"],
         ("999", "--trial"), db="study"),
    Case("export_unknown_pick", ["export", "tiny", "--storage", "{db}", "--pick", "fastest", "--out", "{dir}/out"],
         ("fastest", "--pick"), db="study"),
    Case("export_pick_bad_constraint", ["export", "tiny", "--storage", "{db}", "--pick", "bogus<=3",
                                        "--out", "{dir}/out"], ("bogus", "--pick"), db="study"),
    Case("pareto_bad_objectives", ["pareto", "tiny", "--storage", "{db}", "--objectives", "accuracy,speed"],
         ("--objectives",), db="study"),
    Case("pareto_objective_not_in_study", ["pareto", "tiny", "--storage", "{db}", "--objectives", "latency_ms"],
         ("--objectives", "latency_ms"), db="study"),
    # -- single-architecture commands ----------------------------------------------------------
    Case("describe_unknown_preset", ["describe", "shufflenet_v1_g9_x3_0"], ("ARCH", "shufflenet_v1_g9_x3_0")),
    Case("latency_unknown_preset", ["latency", "shufflenet_v1_g9_x3_0", "--backend", "torch"],
         ("ARCH", "shufflenet_v1_g9_x3_0")),
    Case("train_unknown_preset", ["train", "shufflenet_v1_g9_x3_0", "--epochs", "1"],
         ("ARCH", "shufflenet_v1_g9_x3_0")),
    Case("arch_json_bad_divisibility", ["describe", "bad.json", "--no-ptflops"], ("bad.json",),
         {"bad.json": '{"stem_channels": 24, "stages": [{"out_channels": 100, "repeats": 1, "groups": 3, '
                      '"shuffle": "before_dw", "kernel": 3}]}'}),
    Case("arch_json_syntax", ["describe", "broken.json"], ("broken.json",), {"broken.json": '{"stem_channels": 24,'}),
    Case("describe_bad_input", ["describe", "shufflenet_v1_g3_x0_5", "--input", "3x224"], ("--input",)),
    Case("describe_tiny_input", ["describe", "shufflenet_v1_g3_x0_5", "--input", "3x2x2"], ("--input",)),
    Case("latency_bad_threads", ["latency", "shufflenet_v1_g3_x0_25", "--backend", "torch", "--threads", "0"],
         ("--threads",)),
    Case("latency_unknown_backend", ["latency", "shufflenet_v1_g3_x0_25", "--backend", "tensorrt"], ("--backend",)),
    Case("train_bad_threads", ["train", "shufflenet_v1_g3_x0_25", "--threads", "0"], ("--threads",)),
    Case("train_unknown_dataset", ["train", "shufflenet_v1_g3_x0_25", "--data", "imagenet21k"], ("--data",)),
    Case("train_bad_epochs", ["train", "shufflenet_v1_g3_x0_25", "--epochs", "-1"], ("--epochs",)),
]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real 2-trial search; cases copy its study.db."""
    d = tmp_path_factory.mktemp("tiny_study")
    (d / "tiny.yaml").write_text(variant())
    r = cli(["search", "tiny.yaml", "--storage", f"sqlite:///{d / 'study.db'}", "--run-dir", str(d / "run"),
             "--no-progress"], d, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return d


def _setup(case: Case, base: Path, study_dir: Path) -> tuple[list[str], Path | None]:
    d = base / case.id
    d.mkdir()
    for name, content in case.files.items():
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    db: Path | None = None
    if case.db == "study":
        db = d / "study.db"
        shutil.copy(study_dir / "study.db", db)
    elif case.db == "corrupt":
        db = d / "study.db"
        db.write_bytes(os.urandom(8192))
    (d / "tiny.yaml").write_text(variant())
    if case.prepare is not None:
        case.prepare(d)
    argv = [a.replace("{db}", f"sqlite:///{db}" if db else "").replace("{dir}", str(d))
            .replace("{exp}", str(d / "tiny.yaml")) for a in case.argv]
    return argv, db


#: imports the package once, then forks one child per case: `nas.cli.main(argv)` with the case's folder
#: as cwd and its own stdout/stderr files, an uncaught exception printed as the interpreter would (exit 1)
SERVER = r"""
import json, os, sys, time, traceback
import nas.cli, nas.experiment, nas.backends.optuna_search, nas.pipeline.evaluate, torch, optuna, yaml
for mod in ("nas.analysis.front", "nas.deploy.standalone", "nas.analysis.frame", "nas.cli.commands.train", "nas.cli.commands.latency"):
    __import__(mod)
jobs, limit, parallel = json.load(sys.stdin), float(sys.argv[1]), int(sys.argv[2])
running, results = {}, {}
while jobs or running:
    while jobs and len(running) < parallel:
        job = jobs.pop(0)
        pid = os.fork()
        if pid == 0:
            os.chdir(job["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(os.path.join(job["cwd"], "." + name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            if job.get("unprivileged") and os.geteuid() == 0:  # drop root for good: as "nobody" would run it
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            sys.argv = ["shufflenas", *job["argv"]]
            try:
                rc = nas.cli.main(job["argv"])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if not isinstance(e.code, int) and e.code is not None:
                    print(e.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
                rc = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc or 0)
        running[pid] = (job["id"], time.monotonic())
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid:
        results[running.pop(pid)[0]] = os.waitstatus_to_exitcode(status)
        continue
    for pid, (cid, t0) in list(running.items()):
        if time.monotonic() - t0 > limit:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            results[running.pop(pid)[0]] = "timeout"
    time.sleep(0.02)
print(json.dumps(results))
"""


def run_cases(jobs: list[dict[str, Any]], limit: float = 120, parallel: int = 2) -> dict[str, Any]:
    """{"id", "argv", "cwd"} jobs -> {id: (returncode or "timeout", stdout, stderr)}."""
    import json

    r = subprocess.run([sys.executable, "-c", SERVER, str(limit), str(parallel)], input=json.dumps(jobs),
                       env=env(), capture_output=True, text=True, timeout=limit * len(jobs) + 120)
    assert r.returncode == 0, r.stderr[-3000:]
    codes = json.loads(r.stdout.strip().splitlines()[-1])
    out = {}
    for job in jobs:
        d = Path(job["cwd"])
        out[job["id"]] = (codes[job["id"]], (d / ".stdout").read_text(errors="replace"),
                          (d / ".stderr").read_text(errors="replace"))
    return out


@pytest.fixture(scope="module")
def results(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every case (each in its own folder), recording the study's sha256 before and after."""
    base = tmp_path_factory.mktemp("hostile")
    jobs, meta = [], {}
    for case in CASES:
        if case.skip:
            continue
        argv, db = _setup(case, base, tiny_study)
        jobs.append({"id": case.id, "argv": argv, "cwd": str(base / case.id), "unprivileged": case.unprivileged})
        meta[case.id] = (argv, db, sha(db) if db else None)
    ran = run_cases(jobs)
    return {cid: (*ran[cid], argv, before, sha(db) if db else None) for cid, (argv, db, before) in meta.items()}


def test_fork_server_matches_python_m_nas(tmp_path: Path) -> None:
    """The fork server gives what a fresh `python -m nas` gives (exit code, stdout, stderr)."""
    (tmp_path / "x.yaml").write_text(variant(("search.workers", 0)))
    argvs = (["search", "x.yaml"], ["describe", "shufflenet_v1_g9_x3_0"], ["search", "nope.yaml"])
    fresh = [cli(argv, tmp_path) for argv in argvs]
    dirs = []
    for i in range(len(argvs)):
        (tmp_path / str(i)).mkdir()
        shutil.copy(tmp_path / "x.yaml", tmp_path / str(i) / "x.yaml")
        dirs.append(str(tmp_path / str(i)))
    forked = run_cases([{"id": str(i), "argv": a, "cwd": d} for i, (a, d) in enumerate(zip(argvs, dirs, strict=True))])
    for i, r in enumerate(fresh):
        assert (r.returncode, r.stdout, r.stderr) == forked[str(i)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_fails_cleanly(case: Case, results: dict[str, Any]) -> None:
    if case.skip:
        pytest.skip(case.skip)
    rc, stdout, stderr, argv, before, after = results[case.id]
    assert rc != "timeout", f"{argv} hung"
    assert "Traceback" not in stdout + stderr, f"{argv}: traceback\n{(stdout + stderr)[-3000:]}"
    lines = stderr.rstrip("\n").split("\n")
    assert rc == 2, f"{argv}: exit {rc}, stderr {stderr[-2000:]!r}"
    assert len(lines) == 1 and lines[0].strip(), f"{argv}: stderr must be one line, got {stderr[-2000:]!r}"
    assert any(n in lines[0] for n in case.names), f"{argv}: {lines[0]!r} names none of {case.names}"
    assert before == after, f"{argv}: the study file changed"


def test_every_command_is_covered() -> None:
    """The hostile list touches every command that reads user files or studies."""
    used = {c.argv[0] for c in CASES}
    assert {"search", "resume", "status", "pareto", "export", "describe", "latency", "train"} <= used
    assert len(CASES) >= 30
