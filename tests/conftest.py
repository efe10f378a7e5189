"""Shared fixtures: tiny experiments, a contract-shaped study, free ports, optional dependencies,
a PostgreSQL server on loopback, and a hook that holds a search inside a trial so a test can
SIGKILL it at a known point.

Tests use these through fixtures (never by importing another test module).
"""

from __future__ import annotations

import glob
import importlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """A promised dependency is absent: fail under CI (env CI=true), skip elsewhere."""
    if under_ci():
        pytest.fail(f"{reason} (CI promises it: run `bash .ci/setup.sh --services`)")
    pytest.skip(reason)


@pytest.fixture
def need() -> Callable[[str], ModuleType]:
    """need("psycopg2") imports a module CI promises, or fails under CI / skips elsewhere."""

    def _need(module: str) -> ModuleType:
        try:
            return importlib.import_module(module)
        except ImportError as e:
            missing(f"{module} is not installed ({e})")
            raise  # unreachable: missing() always raises

    return _need


@pytest.fixture
def fashion_mnist_root() -> Path:
    """The folder of the real Fashion-MNIST IDX files (Debian's dataset-fashion-mnist), which
    `.ci/setup.sh --test` installs: fails under CI when absent, skips elsewhere."""
    from objectives.data import FASHION_MNIST_PACKAGE, FASHION_MNIST_SYSTEM

    if not (FASHION_MNIST_SYSTEM / "train-images-idx3-ubyte.gz").is_file():
        missing(f"{FASHION_MNIST_SYSTEM} not found (apt-get install {FASHION_MNIST_PACKAGE})")
    return FASHION_MNIST_SYSTEM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A TCP port on 127.0.0.1 nobody listens on (at the time of the call)."""
    return _free_port


# ------------------------------------------------------------------------------ experiments

def _tiny_yaml(tmp_path: Path, name: str = "tiny", *, extra: str = "", latency: str = "none", n: int = 3,
               epochs: int = 1, train_size: int = 200, widths: str = "[0.25, 0.5]", budget: str = "max_mmacs: 3",
               search: str = "", objectives: str = "") -> Path:
    # the tiny space holds a handful of architectures: duplicates would renumber every test's trials
    dup = "" if "skip_duplicates" in search else ", skip_duplicates: false"
    objs = objectives or f"[accuracy, mmacs{', latency_ms' if latency != 'none' else ''}]"
    text = f"""\
name: {name}
deploy: {{input: 3x64x64, classes: 10}}
space: {{groups: [2, 4], widths: {widths}, repeats: [[1, 1], [1, 2], [1, 1]]}}
budget: {{{budget}}}
objectives: {objs}
data: {{name: default, train_size: {train_size}, val_size: 100}}
train: {{epochs: {epochs}, batch_size: 50}}
latency: {{backend: {latency}, min_time_s: 0.02, repeats: 3, warmup: 1}}
search: {{n_trials: {n}, sampler: tpe, seed: 0, run_dir: {tmp_path / 'run'}{dup}{', ' + search if search else ''}}}
{extra}"""
    f = tmp_path / f"{name}.yaml"
    f.write_text(text)
    return f


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Callable[..., Path]:
    """tiny_yaml(name=..., n=..., ...) writes a small experiment (3x64x64 deploy input) under tmp_path."""
    return lambda *a, **kw: _tiny_yaml(tmp_path, *a, **kw)


#: the experiment user attr of `make_study`'s synthetic study
UNIT_EXPERIMENT: dict[str, Any] = {
    "name": "unit",
    "budget": {"max_mmacs": 150.0, "min_mmacs": None, "max_latency_ms": None},
    "deploy": {"input": [3, 224, 224], "classes": 1000},
    "data": {"name": "default", "resolution": None},
    "search": {"sampler": "tpe", "run_dir": None},
    "reference_presets": ["shufflenet_v1_g3_x0_5", "shufflenet_v1_g8_x0_5"],
}


def _make_study(tmp: Path, name: str = "unit", n: int = 14, seed: int = 0) -> tuple[str, list]:
    """A real SQLite study written the way the search writes it (study contract).

    Architectures are sampled from the real space; MACs and params are the analytic
    counts; accuracy and latency are deterministic functions of the architecture (no
    training in unit tests). Two paper presets are added as reference trials, plus one
    over-budget PRUNED and one FAIL trial.
    """
    import optuna

    from objectives.flops import analytic_macs, analytic_params
    from search_spaces import ShuffleNetV1Space, preset

    exp = UNIT_EXPERIMENT
    url = f"sqlite:///{tmp / 'study.db'}"
    study = optuna.create_study(storage=url, study_name=name, directions=["maximize", "minimize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "mmacs", "latency_ms"])
    space = ShuffleNetV1Space(widths=(0.25, 0.5, 0.75, 1.0), repeats=((2, 4), (2, 6), (2, 4)),
                              placements=("before_dw", "after_dw"), kernels=(3, 5))
    study.set_user_attr("experiment", exp)
    study.set_user_attr("space", space.to_dict())
    study.set_user_attr("space_hash", space.space_hash())
    study.set_user_attr("backend", "optuna")
    study.set_user_attr("objectives", ["accuracy", "mmacs", "latency_ms"])
    sampler_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs = []
    for i in range(n):
        t = sampler_study.ask()
        arch = space.sample(t)
        archs.append(arch)
        mm = analytic_macs(arch) / 1e6
        attrs = {"arch": arch.to_json(), "arch_id": arch.arch_id, "mmacs": mm, "n_params": analytic_params(arch),
                 "latency_backend": "onnxruntime", "device": "test-cpu", "latency_n": 20, "time_train_s": 1.0}
        if mm > exp["budget"]["max_mmacs"]:
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED, params=t.params, distributions=t.distributions,
                user_attrs={**attrs, "fail_reason": f"over budget: {mm:.1f} MMACs > 150"}))
            continue
        acc = round(1 - 0.5 * math.exp(-mm / 40) - 0.01 * (i % 3), 4)
        lat = round(0.05 * mm + 0.3 * sum(s.repeats for s in arch.stages) + 0.1 * (i % 4), 3)
        study.add_trial(optuna.trial.create_trial(
            values=[acc, mm, lat], params=t.params, distributions=t.distributions,
            user_attrs={**attrs, "accuracy": acc, "latency_ms": lat, "latency_p90_ms": lat * 1.1}))
    for k, pname in enumerate(exp["reference_presets"]):
        arch = preset(pname)
        mm = analytic_macs(arch) / 1e6
        study.add_trial(optuna.trial.create_trial(
            values=[0.9 - 0.01 * k, mm, 0.05 * mm + 5],
            user_attrs={"arch": arch.to_json(), "arch_id": arch.arch_id, "mmacs": mm, "reference_preset": pname}))
    big = preset("shufflenet_v1_g3_x1_5")  # 292 MMACs: over budget, as the gate records it
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED,
        user_attrs={"arch": big.to_json(), "arch_id": big.arch_id, "mmacs": analytic_macs(big) / 1e6,
                    "fail_reason": "over budget: 292.1 MMACs > 150"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"fail_reason": "TrainingDiverged: loss is nan"}))
    return url, archs


@pytest.fixture
def make_study() -> Callable[..., tuple[str, list]]:
    """make_study(folder, name="unit", n=14) -> (sqlite URL, archs): a synthetic contract-shaped study."""
    return _make_study


# ------------------------------------------------------------------------------ subprocesses

def child_env(**extra: str) -> dict[str, str]:
    """Environment for a `python -m nas` child: one thread, this checkout importable."""
    e = {k: v for k, v in os.environ.items() if k != "CI"}
    e.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + e.get("PYTHONPATH", ""), **extra)
    return e


@pytest.fixture
def start_cli(tmp_path: Path) -> Callable[..., subprocess.Popen[str]]:
    """start_cli(argv, log=None, **env) starts `python -m nas ARGV` (cwd tmp_path); output to text pipes,
    or to the file `log` for a long run whose output nobody reads while it runs."""

    def start(argv: list[str], *, cwd: Path | None = None, log: Path | None = None, **env: str) -> subprocess.Popen[str]:
        out: Any = open(log, "w") if log is not None else subprocess.PIPE  # noqa: SIM115 - the child owns it
        return subprocess.Popen([sys.executable, "-m", "nas", *argv], cwd=cwd or tmp_path, env=child_env(**env),
                                stdout=out, stderr=subprocess.STDOUT if log is not None else subprocess.PIPE, text=True)

    return start


#: Runs `nas.cli.main(argv)` with train_proxy wrapped: in the trial that is the HOLD_AFTER-th
#: one this process trains (0-based count of trials already finished here), after epoch
#: HOLD_EPOCH's report, it writes HOLD_FILE and sleeps until killed. So a test kills "after N
#: trials completed, inside the next one" at the same point every run, however busy the box is.
_HOLD = r"""
import os, sys, time
import objectives.accuracy as acc
after, epoch_at, marker = int(os.environ["HOLD_AFTER"]), int(os.environ.get("HOLD_EPOCH", "1")), os.environ["HOLD_FILE"]
seed_only = os.environ.get("HOLD_SEED")  # count only trainings with this seed (a multi-fidelity rung)
inner, seen = acc.train_proxy, [0]
def train_proxy(model, data, cfg, report=None, *a, **kw):
    if seed_only is not None and cfg.seed != int(seed_only):
        return inner(model, data, cfg, report, *a, **kw)
    mine = seen[0]
    seen[0] += 1
    def hook(epoch, value):
        stop = report(epoch, value) if report is not None else False
        if mine == after and epoch == epoch_at:
            open(marker, "w").write(str(os.getpid()))
            while True:
                time.sleep(60)
        return stop
    return inner(model, data, cfg, hook, *a, **kw)
acc.train_proxy = train_proxy
from nas.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def held_search(tmp_path: Path) -> Callable[..., tuple[subprocess.Popen[bytes], Path]]:
    """held_search(argv, after=N) starts `shufflenas ARGV` in a new session; it holds inside the
    (N+1)-th trial it trains (with seed=S: the (N+1)-th training with train seed S, e.g. the
    first rung-2 training of a multi-fidelity search, whose rung r trains with seed+r-1). Returns (process, marker file that appears once it holds)."""
    counter = [0]

    def start(argv: list[str], *, after: int, epoch: int = 1, cwd: Path | None = None,
              seed: int | None = None) -> tuple[Any, Path]:
        counter[0] += 1
        marker = tmp_path / f"held-{counter[0]}"
        env = child_env(HOLD_AFTER=str(after), HOLD_EPOCH=str(epoch), HOLD_FILE=str(marker),
                        **({"HOLD_SEED": str(seed)} if seed is not None else {}))
        p = subprocess.Popen([sys.executable, "-c", _HOLD, *argv], cwd=cwd or tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        return p, marker

    return start


def wait_for(path: Path, proc: subprocess.Popen[Any], timeout: float = 300) -> None:
    """Wait until `path` exists (the child reached its hold point); fail if the child exits first."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-3000:] if proc.stderr else ""
            pytest.fail(f"the search exited ({proc.returncode}) before its hold point: {err}")
        if time.monotonic() > deadline:
            pytest.fail(f"the search never reached its hold point in {timeout:g} s")
        time.sleep(0.05)


@pytest.fixture
def wait_held() -> Callable[..., None]:
    return wait_for


# ------------------------------------------------------------------------------ PostgreSQL

def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict[str, Any]]:
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb + pg_ctl), stopped at the end.
    Yields {"port", "new_db"}; new_db(name) creates a database and returns its SQLAlchemy URL."""
    bindir = _pg_bin()
    if bindir is None:
        missing("PostgreSQL server binaries not found (apt-get install postgresql)")
    try:
        import psycopg2
    except ImportError:
        missing("psycopg2 is not installed")
    base = Path(tempfile.mkdtemp(prefix="shufflenas-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the postgres (or nobody) account
        import pwd

        user = "postgres" if "postgres" in {p.pw_name for p in pwd.getpwall()} else "nobody"
        shutil.chown(base, user)
        shutil.chown(sock, user)
        os.chmod(base, 0o755)
        prefix = ["runuser", "-u", user, "--"]
    port = _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "nas", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
       f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def new_db(name: str) -> str:
        con = psycopg2.connect(host="127.0.0.1", port=port, user="nas", dbname="postgres")
        con.autocommit = True
        con.cursor().execute(f'CREATE DATABASE "{name}"')
        con.close()
        return f"postgresql+psycopg2://nas@127.0.0.1:{port}/{name}"

    try:
        yield {"port": port, "new_db": new_db}
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: dict[str, Any], request: pytest.FixtureRequest) -> str:
    """A fresh database on the shared test server, named after the test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return str(postgres_server["new_db"](name))
