"""Integration tests run against the real lab (inventories/lab): the session starts by
converging it with playbooks/site.yml, so a fresh machine gets PostgreSQL blue and green."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.lab import BLUE, GREEN, LAB_PASSWORD, connect, run_playbook


@pytest.fixture(scope="session")
def lab():
    """Converge the lab (PostgreSQL blue :5433 and green :5434) once per session."""
    run = run_playbook("site.yml")
    assert run.status == "successful", run.stdout
    return run


@pytest.fixture(scope="session")
def sample_data(lab):
    run = run_playbook("sample_data.yml")
    assert run.status == "successful", run.stdout
    return run


@pytest.fixture()
def blue(lab):
    with connect(BLUE) as conn:
        yield conn


@pytest.fixture()
def green(lab):
    with connect(GREEN) as conn:
        yield conn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def replica_wal_server(lab):
    """A throwaway PostgreSQL with wal_level=replica (a server that cannot publish), on a free port."""
    bindir = Path("/usr/lib/postgresql/15/bin")
    datadir = Path(tempfile.mkdtemp(prefix="zdm-replica-wal-"))
    shutil.chown(datadir, "postgres", "postgres")
    pwfile = datadir.parent / (datadir.name + ".pw")
    pwfile.write_text(LAB_PASSWORD + "\n")
    shutil.chown(pwfile, "postgres", "postgres")

    def as_postgres(*argv):
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], check=True, capture_output=True)

    as_postgres(bindir / "initdb", "-D", datadir, "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}")
    port = free_port()
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c wal_level=replica -k {datadir}"
    as_postgres(bindir / "pg_ctl", "-D", datadir, "-w", "-l", datadir / "log", "start", "-o", options)
    try:
        yield {
            "login_host": "127.0.0.1",
            "login_port": port,
            "login_user": "postgres",
            "login_password": LAB_PASSWORD,
            "login_db": "postgres",
        }
    finally:
        as_postgres(bindir / "pg_ctl", "-D", datadir, "-m", "immediate", "stop")
        shutil.rmtree(datadir, ignore_errors=True)
        pwfile.unlink(missing_ok=True)
