"""A real PostgreSQL server on loopback as the shared storage of a 2-worker search."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_search_optuna import tiny_yaml


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None:
        msg = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    pytest.importorskip("psycopg2")
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
    try:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="nas", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE nas_test")
        con.close()
        yield f"postgresql+psycopg2://nas@127.0.0.1:{port}/nas_test"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgresql(tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna
    from optuna.trial import TrialState

    from nas.cli import main

    f = tiny_yaml(tmp_path, name="pg", n=4)
    assert main(["search", str(f), "--storage", postgres_url, "--workers", "2", "--no-progress"]) == 0
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert study.metric_names == ["accuracy", "mmacs"]
    assert {t.user_attrs.get("arch_id") for t in trials if t.state == TrialState.COMPLETE} != {None}
    capsys.readouterr()
    assert main(["status", "pg", "--storage", postgres_url, "--json"]) == 0
    assert '"done": 4' in capsys.readouterr().out
