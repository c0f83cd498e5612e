"""Integration tests run against the real lab (inventories/lab): the session starts by
converging it with playbooks/site.yml, so a fresh machine gets every service of the lab."""

from __future__ import annotations

import os

import pytest

from tests.lab import (
    ALERTMANAGER_URL,
    BLUE,
    GREEN,
    LAB_SSH_PLAY,
    MONITORING_PLAY,
    PHASE1_FROM_CLUSTER,
    PROMETHEUS_URL,
    answers,
    bring_lab_to_start,
    connect,
    run_playbook,
    run_playbook_ok,
    scratch_postgres_server,
    throwaway_postgres,
    wait_for,
)


@pytest.fixture(scope="session")
def lab():
    """Converge the lab (PostgreSQL, HAProxy, PgBouncer, Redis, RabbitMQ, monitoring) once per session,
    then bring it to the suite's starting state from whatever a demo, a manual switchover or a failed
    run left (tests/lab.bring_lab_to_start). ZERODOWNTIME_LAB_CONVERGED=1 skips the converge, when
    iterating on tests against a lab converged already; the starting state is checked either way."""
    run = None if os.environ.get("ZERODOWNTIME_LAB_CONVERGED") == "1" else run_playbook_ok("site.yml")
    try:
        bring_lab_to_start()
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=3)
    return run


@pytest.fixture(scope="session")
def scratch_postgres():
    """SCRATCH_PG (tests.lab): a PostgreSQL of the session's own, shaped like green, for the module
    tests that need no server of the lab; stopped and removed at the session's end."""
    with scratch_postgres_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def monitoring(lab):
    """roles/monitoring converged on the lab's monitor-1 (127.0.0.41): Prometheus :9090, Alertmanager :9093, the exporters.

    With ZERODOWNTIME_LAB_CONVERGED=1 (the lab converged before the session, site.yml's monitoring
    play with it) nothing is converged again: Prometheus and Alertmanager must answer, and the
    fixture is None (tests.lab.converged_again then converges itself)."""
    if os.environ.get("ZERODOWNTIME_LAB_CONVERGED") == "1":
        for url in (PROMETHEUS_URL, ALERTMANAGER_URL):
            wait_for(
                f"{url}/-/ready (ZERODOWNTIME_LAB_CONVERGED=1; converge it: ansible-playbook playbooks/site.yml --tags monitoring)",
                lambda url=url: answers(f"{url}/-/ready"),
                timeout=30,
            )
        return None
    run = run_playbook(MONITORING_PLAY)
    assert run.status == "successful", run.stdout
    return run


@pytest.fixture(scope="session")
def lab_ssh():
    """roles/lab_ssh converged on this machine: sshd on the SSH lab hosts' addresses
    (inventories/lab-ssh), the lab's key authorized for root, its known_hosts written. Runs
    whatever ZERODOWNTIME_LAB_CONVERGED says (it converges nothing else, and quickly)."""
    run = run_playbook(LAB_SSH_PLAY)
    assert run.status == "successful", run.stdout
    return run


@pytest.fixture(scope="session")
def sample_data(lab):
    return run_playbook_ok("sample_data.yml")


@pytest.fixture(scope="session")
def phase1(sample_data):
    """playbooks/phase1_infra.yml run on the lab from cluster.yml on (PHASE1_FROM_CLUSTER): the
    Raft members bootstrapped, every service healthy, blue's tables published with a slot. Its
    first plays are site.yml's, which the lab fixture converged (or, with
    ZERODOWNTIME_LAB_CONVERGED=1, an earlier session): run here they would be a second converge of
    every service, which each role's own test asserts changes nothing (test_role_postgresql,
    test_haproxy, test_pgbouncer, test_redis, ...). `make demo` runs the whole playbook.

    With ZERODOWNTIME_PHASE1_DONE=1 (tests/run_integration.sh's lanes: its first part ran phase 1,
    which converges every service, and the other lane is using some of them now) it is not run
    again: phase 1 must be recorded as succeeded, and the fixture is None."""
    if os.environ.get("ZERODOWNTIME_PHASE1_DONE") != "1":
        return run_playbook_ok("phase1_infra.yml", cmdline=PHASE1_FROM_CLUSTER)
    with connect(dict(BLUE, login_db="zerodowntime_state")) as state:
        recorded = state.execute("SELECT status FROM migration_progress WHERE phase = 'phase1_infra'").fetchone()
    assert recorded == ("succeeded",), f"ZERODOWNTIME_PHASE1_DONE=1 but phase 1 is recorded as {recorded}: run phase1_infra.yml"
    return None


@pytest.fixture(scope="session")
def phase2(phase1):
    """playbooks/phase2_schema.yml run on the lab: green subscribed to blue's novacron."""
    return run_playbook_ok("phase2_schema.yml")


@pytest.fixture()
def blue(lab):
    with connect(BLUE) as conn:
        yield conn


@pytest.fixture()
def green(lab):
    with connect(GREEN) as conn:
        yield conn


@pytest.fixture(scope="session")
def replica_wal_server(lab):
    """A throwaway PostgreSQL with wal_level=replica: a server that cannot publish."""
    with throwaway_postgres("zdm-replica-wal-", wal_level="replica") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def validated(phase2):
    """Phases 3 and 4 run on the lab after phase 2: green optimized and validated, so phase 5 may start."""
    for playbook in ("phase3_optimize.yml", "phase4_validate.yml"):
        run_playbook_ok(playbook)
