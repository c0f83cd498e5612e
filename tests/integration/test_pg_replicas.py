"""roles/postgresql read replicas and zerodowntime.migration.pg_replication_lag, on instances of
this test's own beside the lab: primary zdmrep :5441, replicas zdmrep_r1 :5442 and zdmrep_r2
:5443 (host zdm-replicas in an inventory of its own). The lab's blue and green are not touched;
the three clusters are dropped at the end."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.lab import LAB_PASSWORD, connect, converge_of_own, inventory_of_own, run_module, run_playbook

HOST = "zdm-replicas"
PRIMARY = {"name": "zdmrep", "port": 5441}
REPLICAS = [
    {"name": "zdmrep_r1", "port": 5442, "replica_of": {"name": "zdmrep"}},
    {"name": "zdmrep_r2", "port": 5443, "replica_of": {"name": "zdmrep", "host": "127.0.0.1", "port": 5441}},
]
CLUSTERS = ["zdmrep_bad", "zdmrep_r2", "zdmrep_r1", "zdmrep"]  # replicas first, so the primary's slots are free
DB = "zdmrep_db"
HOST_VARS = {
    "ansible_connection": "local",
    "ansible_become": False,
    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    "postgresql_listen_addresses": "127.0.0.1",
    "postgresql_host_memory_mb": 768,  # 256MB for each of the three
    "postgresql_max_connections": 50,
    "postgresql_hba": [
        {"type": "local", "database": "all", "user": "postgres", "method": "peer", "options": "map=zerodowntime_admin"},
        {"type": "local", "database": "all", "user": "all", "method": "peer"},
        {"type": "host", "database": "all", "user": "all", "address": "127.0.0.1/32", "method": "scram-sha-256"},
        {"type": "host", "database": "replication", "user": "replicator", "address": "127.0.0.1/32", "method": "scram-sha-256"},
    ],
    "postgresql_instances": [PRIMARY],
    "postgresql_replicas": REPLICAS,
    "postgresql_replication_user": {"name": "replicator", "password": LAB_PASSWORD},
    "postgresql_users": [{"name": "migrator", "password": LAB_PASSWORD, "role_attr_flags": "LOGIN,SUPERUSER"}],
    "postgresql_databases": [{"name": DB, "owner": "migrator"}],
}
CONVERGE = [
    {"name": "Converge zdmrep and its replicas", "hosts": HOST, "gather_facts": True, "roles": ["zerodowntime.migration.postgresql"]}
]
MODULE = "zerodowntime.migration.pg_replication_lag"


def endpoint(port: int) -> dict:
    return {"login_host": "127.0.0.1", "login_port": port, "login_user": "migrator", "login_password": LAB_PASSWORD, "login_db": DB}


PRIMARY_EP, R1, R2 = endpoint(5441), endpoint(5442), endpoint(5443)


def drop_clusters() -> None:
    for name in CLUSTERS:
        if Path(f"/etc/postgresql/15/{name}").exists():
            subprocess.run(["pg_dropcluster", "--stop", "15", name], check=True, capture_output=True)


def pg_ctlcluster(action: str, name: str) -> None:
    subprocess.run(["pg_ctlcluster", "15", name, action], check=True, capture_output=True)


def started_at(ep: dict):
    with connect(ep) as conn:
        return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def inventory():
    """The inventory, and the clusters dropped before (a clean first converge) and after."""
    drop_clusters()
    try:
        with inventory_of_own(HOST, HOST_VARS, "zdm-replicas-") as path:
            yield path
    finally:
        drop_clusters()


@pytest.fixture(scope="module")
def converged(inventory):
    return converge_of_own(CONVERGE, inventory, HOST, first=True)


def lag(args: dict, check: bool = False) -> dict:
    _run, result = run_module(MODULE, dict(PRIMARY_EP, login_db="postgres", **args), check=check)
    return result


def test_second_converge_changes_nothing(inventory, converged):
    converge_of_own(CONVERGE, inventory, HOST, first=False)


def test_clone_went_through_a_slot_per_replica_named_after_it(converged):
    with connect(PRIMARY_EP) as conn:
        slots = conn.execute("SELECT slot_name, slot_type FROM pg_replication_slots ORDER BY 1").fetchall()
    assert slots == [("zdmrep_r1", "physical"), ("zdmrep_r2", "physical")]
    for name in ("zdmrep_r1", "zdmrep_r2"):
        auto_conf = Path(f"/var/lib/postgresql/15/{name}/postgresql.auto.conf").read_text()
        assert f"primary_slot_name = '{name}'" in auto_conf
        assert f"application_name={name}" in auto_conf
        assert Path(f"/var/lib/postgresql/15/{name}/standby.signal").exists()


def test_both_replicas_are_hot_standbys(converged):
    for ep in (R1, R2):
        with connect(ep) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
            assert conn.execute("SHOW hot_standby").fetchone()[0] == "on"
    for name in ("zdmrep_r1", "zdmrep_r2"):
        assert "hot_standby = 'on'" in Path(f"/etc/postgresql/15/{name}/postgresql.conf").read_text()
    with connect(PRIMARY_EP) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False


def test_a_row_written_on_the_primary_appears_on_both_replicas(converged):
    with connect(PRIMARY_EP) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS zdm_canary (id serial PRIMARY KEY, note text)")
        row_id = conn.execute("INSERT INTO zdm_canary (note) VALUES ('hello replicas') RETURNING id").fetchone()[0]
    for ep in (R1, R2):
        with connect(ep) as conn:
            wait_for(lambda conn=conn: conn.execute("SELECT note FROM zdm_canary WHERE id = %s", (row_id,)).fetchone())
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO zdm_canary (note) VALUES ('not here')")


def test_lag_module_reports_both_replicas_and_passes_a_100ms_gate(converged):
    result = lag({"expected_replicas": ["zdmrep_r1", "zdmrep_r2"], "max_lag_ms": 100, "max_lag_bytes": 16 * 1024 * 1024, "timeout": 30})
    assert not result["failed"], result
    assert result["changed"] is False
    assert result["problems"] == []
    replicas = {replica["application_name"]: replica for replica in result["replicas"]}
    assert sorted(replicas) == ["zdmrep_r1", "zdmrep_r2"]
    for name, replica in replicas.items():
        assert replica["slot_name"] == name
        assert replica["state"] == "streaming"
        assert replica["sync_state"] == "async"
        assert replica["client_addr"] == "127.0.0.1"
        assert replica["replay_lag_ms"] is not None and replica["replay_lag_ms"] < 100
        assert replica["replay_lag_bytes"] is not None
        for key in ("sent_lsn", "write_lsn", "flush_lsn", "replay_lsn"):
            assert "/" in replica[key]


def test_lag_module_in_check_mode_reads_the_same(converged):
    result = lag({"expected_replicas": 2, "max_lag_ms": 100, "timeout": 30}, check=True)
    assert not result["failed"], result
    assert result["changed"] is False
    assert sorted(replica["application_name"] for replica in result["replicas"]) == ["zdmrep_r1", "zdmrep_r2"]


def test_a_count_that_cannot_be_met_fails_naming_the_replicas_found(converged):
    result = lag({"expected_replicas": 3, "max_lag_ms": 100, "timeout": 1})
    assert result["failed"]
    assert result["changed"] is False
    assert "3 streaming replicas expected, 2 found (zdmrep_r1 (slot zdmrep_r1, from 127.0.0.1), zdmrep_r2" in result["msg"]
    assert len(result["replicas"]) == 2


def test_a_stopped_replica_fails_the_gate_by_name_and_converge_starts_it_again(inventory, converged):
    pg_ctlcluster("stop", "zdmrep_r2")
    try:
        result = lag({"expected_replicas": ["zdmrep_r1", "zdmrep_r2"], "max_lag_ms": 100, "timeout": 1})
        assert result["failed"]
        assert "replica zdmrep_r2 is not connected" in result["msg"]
        assert "zdmrep_r1 is not connected" not in result["msg"]
        assert [replica["application_name"] for replica in result["replicas"]] == ["zdmrep_r1"]
    finally:
        run = run_playbook(CONVERGE, inventory=inventory)
    assert run.status == "successful", run.stdout
    assert run.changed_tasks() in (["Start the replicas that are down (no systemd)"], ["Start the replicas (systemd)"])
    assert not lag({"expected_replicas": ["zdmrep_r1", "zdmrep_r2"], "max_lag_ms": 100, "timeout": 30})["failed"]


def test_a_replica_whose_primary_does_not_answer_fails_naming_it_and_the_fix(inventory, converged):
    # memory_mb set everywhere: a fourth member would re-divide the host's memory and restart zdmrep.
    unreachable = {"name": "zdmrep_bad", "port": 5444, "memory_mb": 256, "replica_of": {"host": "127.0.0.1", "port": 5449}}
    try:
        run = run_playbook(
            CONVERGE,
            inventory=inventory,
            extravars={"postgresql_host_memory_mb": 1024, "postgresql_replicas": [*REPLICAS, unreachable]},
        )
        assert run.status == "failed"
        failed = [result for result in run.task_results("Create each new replica's physical slot on its primary") if result["failed"]]
        assert len(failed) == 1
        messages = [item.get("msg", "") for item in failed[0]["results"] if item.get("failed")]
        assert len(messages) == 1
        assert "connection refused by 127.0.0.1:5449" in messages[0], messages
        assert not Path("/var/lib/postgresql/15/zdmrep_bad/PG_VERSION").exists()
    finally:
        if Path("/etc/postgresql/15/zdmrep_bad").exists():  # only if the test failed half-way
            subprocess.run(["pg_dropcluster", "--stop", "15", "zdmrep_bad"], check=True, capture_output=True)
        shutil.rmtree("/var/lib/postgresql/15/zdmrep_bad", ignore_errors=True)


def test_wrong_password_names_the_fix(converged):
    result = lag({"login_password": "not-the-password"})
    assert result["failed"]
    assert "authentication failed for user 'migrator' on 127.0.0.1:5441" in result["msg"]
    assert "login_password" in result["msg"]


def test_a_role_without_pg_monitor_is_told_the_grant(converged):
    with connect(endpoint(PRIMARY["port"])) as conn:
        conn.execute("DROP ROLE IF EXISTS zdm_watcher")
        conn.execute(f"CREATE ROLE zdm_watcher LOGIN PASSWORD '{LAB_PASSWORD}'")
    try:
        result = lag({"login_user": "zdm_watcher", "expected_replicas": 2})
    finally:
        with connect(endpoint(PRIMARY["port"])) as conn:
            conn.execute("DROP ROLE zdm_watcher")
    assert result["failed"]
    assert "GRANT pg_monitor TO zdm_watcher" in result["msg"], result["msg"]


def test_a_negative_bound_is_refused(converged):
    result = lag({"max_lag_ms": -1})
    assert result["failed"] and "max_lag_ms must be 0 or more" in result["msg"]


def test_a_standby_without_replicas_is_told_to_connect_to_the_primary(converged):
    _run, result = run_module(MODULE, dict(R1, login_db="postgres", expected_replicas=1))
    assert result["failed"]
    assert "pg_stat_replication is empty" in result["msg"]
    assert "is itself a standby: connect to the primary" in result["msg"]


def test_replica_settings_reload_or_restart_only_where_needed(inventory, converged):
    r1_started, r2_started, primary_started = started_at(R1), started_at(R2), started_at(PRIMARY_EP)
    changed = [
        dict(REPLICAS[0], settings={"log_min_duration_statement": "250ms"}),  # reload
        dict(REPLICAS[1], settings={"max_wal_senders": 12}),  # restart
    ]
    try:
        run = run_playbook(CONVERGE, inventory=inventory, extravars={"postgresql_replicas": changed})
        assert run.status == "successful", run.stdout
        with connect(R1) as conn:
            assert conn.execute("SHOW log_min_duration_statement").fetchone()[0] == "250ms"
        wait_for(lambda: connect(R2).execute("SHOW max_wal_senders").fetchone()[0] == "12")
        assert started_at(R1) == r1_started
        assert started_at(R2) > r2_started
        assert started_at(PRIMARY_EP) == primary_started
        with connect(R2) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
    finally:
        restored = run_playbook(CONVERGE, inventory=inventory)
        assert restored.status == "successful", restored.stdout
    with connect(R1) as conn:
        assert conn.execute("SHOW log_min_duration_statement").fetchone()[0] == "-1"
