"""A real two-node Ray cluster on loopback: `ray start --head`, a second node joined to it,
`shufflenas search --backend ray --ray-address`, the driver SIGKILLed after trials completed,
then `shufflenas resume` finishes the requested trials without losing a completed one.

Each node offers 1 CPU, so two concurrent trials land on both. The nodes are started with
`ray start --block` in a process group of their own, and stopped by signalling that group:
only the processes this test started are stopped (never `ray stop`, which stops every Ray on
the machine, other users' included).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.slow

N_TRIALS = 6


def _ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


def _stop(p: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if p.poll() is not None:
            break
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # whatever is left of the group (raylet, gcs_server, workers started by this node)
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def ray_cluster(tmp_path: Path, need: Callable[[str], object], free_port: Callable[[], int]) -> Iterator[str]:
    """Head + one worker node on 127.0.0.1, 1 CPU each; yields the address."""
    need("ray.tune")
    port = free_port()
    address = f"127.0.0.1:{port}"
    # a loopback-only test cluster: Ray turns token auth on by itself once any local ray.init() has left
    # ~/.ray/auth_token behind, and then the head and its clients disagreed here; one explicit mode for all
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    common = ["--num-cpus", "1", "--object-store-memory", str(200 * 2**20),
              "--block", "--disable-usage-stats"]
    logs = tmp_path / "ray-logs"
    logs.mkdir()
    nodes: list[subprocess.Popen[bytes]] = []
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Unix socket paths must stay short
    try:
        nodes.append(subprocess.Popen(
            [_ray_bin(), "start", "--head", "--port", str(port), "--include-dashboard", "false",
             "--temp-dir", temp, *common],
            env=env, stdout=open(logs / "head.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_started(logs / "head.log", nodes[-1])
        _wait_nodes(address, 1, env)
        nodes.append(subprocess.Popen([_ray_bin(), "start", "--address", address, *common], env=env,
                                      stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        _wait_started(logs / "worker.log", nodes[-1])
        _wait_nodes(address, 2, env)
        yield address
    finally:
        for p in reversed(nodes):
            _stop(p)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_started(log: Path, p: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if p.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"ray start did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)


def _wait_nodes(address: str, n: int, env: dict[str, str], timeout: float = 180) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.monotonic() + timeout
    last, err = "", ""
    while time.monotonic() < deadline:
        r = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True, timeout=120)
        last = (r.stdout.strip().splitlines() or [""])[-1]
        err = r.stderr.strip()[-1500:]
        if r.returncode == 0 and last.isdigit() and int(last) >= n:
            return
        time.sleep(2)
    pytest.fail(f"the Ray cluster at {address} never had {n} live nodes (last: {last!r}; driver stderr: {err})")


def _study(url: str):  # noqa: ANN202
    import optuna

    return optuna.load_study(study_name="cluster", storage=url)


@pytest.mark.timeout(1500)
def test_search_on_a_two_node_cluster_survives_a_killed_driver(tmp_path: Path, ray_cluster: str,
                                                                 tiny_yaml: Callable[..., Path],
                                                                 start_cli: Callable[..., subprocess.Popen[str]]) -> None:
    f = tiny_yaml(name="cluster", n=N_TRIALS, search="workers: 2")
    f.write_text(f.read_text().replace("sampler: tpe", "sampler: random"))
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"  # one host: both nodes see the file (a cluster: PostgreSQL)
    log = tmp_path / "driver.log"
    driver = start_cli(["search", str(f), "--backend", "ray", "--ray-address", ray_cluster, "--no-progress"],
                       log=log, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
                       RAY_AUTH_MODE="disabled")
    completed_before: dict[int, list[float]] = {}
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and driver.poll() is None:
            time.sleep(1)
            try:
                trials = _study(url).get_trials()
            except Exception:  # not created yet
                continue
            done = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
            if len(done) >= 2:  # the kill point: two trials completed, the others still to run
                os.kill(driver.pid, signal.SIGKILL)
                completed_before = done
                break
    finally:
        if driver.poll() is None and not completed_before:
            driver.kill()
        driver.wait(timeout=60)
    assert completed_before, f"the driver ended before two trials completed: {log.read_text()[-3000:]}"
    assert driver.returncode == -signal.SIGKILL
    assert len(completed_before) < N_TRIALS, "the search finished before the kill; make trials longer"

    log = tmp_path / "resume.log"
    resume = start_cli(["resume", "cluster", "--storage", url, "--run-dir", str(tmp_path / "run"),
                        "--ray-address", ray_cluster, "--no-progress"], log=log, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
                       RAY_AUTH_MODE="disabled")
    assert resume.wait(timeout=900) == 0, log.read_text()[-3000:]

    trials = _study(url).get_trials()
    states = [t.state for t in trials]
    finished = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    # The driver's in-flight trials (at most `workers`, 2) run on the cluster's nodes, not in the
    # driver: one may still finish and be recorded after the kill. Its work is kept, so the study
    # can hold up to that many trials beyond the target, never fewer than the target.
    assert N_TRIALS <= finished <= N_TRIALS + 2, states
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    by_number = {t.number: t for t in trials}
    for number, values in completed_before.items():  # no completed trial lost or changed
        assert by_number[number].state == TrialState.COMPLETE and by_number[number].values == values
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert all(t.user_attrs.get("ray_node_id") and t.user_attrs.get("ray_node_ip") for t in done)
    nodes = {t.user_attrs["ray_node_id"] for t in done}
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s): {nodes}"
