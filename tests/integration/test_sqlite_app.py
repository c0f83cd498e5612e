"""The lab's SQLite application (playbooks/files/vminer_sample.py workload --config) through a
cutover: a write refused by the SQLite freeze is held, not an error, and goes through once the
freeze is lifted; after the copy, the replay and a config renamed onto the live one, its writes land
in PostgreSQL (a scratch database on the lab's green server) and `verify` finds every acknowledged
write there - and reports a row deleted behind its back as lost. Real files, a real server."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import COPY_OPTIONS, run_copy
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import ensure_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client as SqliteClient
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.readonly import ensure_readonly
from tests.lab import GREEN, ROOT, connect, scratch_database, vminer_sample

sample = vminer_sample()
SCRIPT = ROOT / "playbooks" / "files" / "vminer_sample.py"
VMINER = ["vcenters", "hosts", "datastores", "virtual_machines"]
DATES = {
    "vcenters": {"created_at": "timestamptz", "last_sync_at": "timestamptz"},
    "virtual_machines": {"created_at": "timestamptz", "updated_at": "timestamptz"},
}
MIGRATION = "vminer-to-pg"
UTC = datetime.timezone.utc  # noqa: UP017 (as the rest of the suite)


def write_config(path, config: dict) -> None:
    """A config file as the cutover writes one: beside the live path, mode 0600 (it may hold a
    password), renamed onto it."""
    fresh = path.with_name(path.name + ".next")
    fresh.unlink(missing_ok=True)
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(config, handle)
    os.replace(fresh, path)


def pg_config(target: dict) -> dict:
    return {
        "engine": "postgresql",
        "host": target["login_host"],
        "port": target["login_port"],
        "user": target["login_user"],
        "password": target["login_password"],
        "dbname": target["login_db"],
        "schema": "public",
    }


def freeze(path, state: str) -> dict:
    params = {
        "path": str(path),
        "busy_timeout": 5.0,
        "migration": MIGRATION,
        "target_description": "PostgreSQL",
        "tables": None,
        "change_table": "zdm_changes",
        "state": state,
    }
    client = SqliteClient(params)
    try:
        return ensure_readonly(client, params)
    finally:
        client.close()


def acks(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_verify(ack_log, **where) -> tuple[int, dict]:
    """vminer_sample.py verify as the runbook runs it: the database from a file (a config may hold a password)."""
    flags = [item for name, value in where.items() for item in (f"--{name}", str(value))]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "verify", "--ack-log", str(ack_log), *flags], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def wait_until(what: str, probe, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)
    return found


def test_verify_compares_text_dates_with_timestamps_as_instants_and_reals_within_a_relative_bound():
    same = sample.same_value
    # SQLite's text dates are UTC: the same instant whatever zone PostgreSQL hands the timestamptz back in
    assert same("2026-12-05 07:03:00", datetime.datetime(2026, 12, 5, 8, 3, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1))))
    assert same("2026-12-05 07:03:00", datetime.datetime(2026, 12, 5, 7, 3, 0, 400000, tzinfo=UTC))  # to the second
    assert same("2026-12-05 07:03:00", datetime.datetime(2026, 12, 5, 7, 3, 0))  # timestamp without time zone: UTC too
    assert same("2026-12-05 07:03:00", "2026-12-05T07:03:00+00:00")
    assert not same("2026-12-05 07:03:00", datetime.datetime(2026, 12, 5, 7, 3, 1, tzinfo=UTC))
    assert not same("2026-12-05 07:03:00", datetime.datetime(2026, 12, 5, 7, 3, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1))))
    assert same(20.1, 20.1 * (1 + 1e-12)) and not same(20.1, 20.1 * (1 + 1e-6))
    assert same(1024, 1024.0) and not same(1024, 1025)
    assert same(None, None) and not same(None, "") and not same("10.0.0.1", None)
    assert not same("poweredOn", "poweredOff")


def test_a_frozen_sqlite_file_holds_the_writes_which_go_through_once_it_is_writable(tmp_path):
    db, config, ack_log, stop = tmp_path / "vminer.db", tmp_path / "app.json", tmp_path / "acks.jsonl", tmp_path / "stop"
    sample.build(str(db), vms=2000, vcenters=20)
    write_config(config, {"engine": "sqlite", "path": str(db)})
    command = [sys.executable, str(SCRIPT), "workload", "--config", str(config), "--stop-file", str(stop), "--rate", "100"]
    running = subprocess.Popen([*command, "--ack-log", str(ack_log), "--hold-timeout", "10"], stdout=subprocess.PIPE, text=True)
    try:
        wait_until("the first acknowledged writes", lambda: len(acks(ack_log)) >= 20)
        assert freeze(db, "present")["changed"] is True
        frozen_at = len(acks(ack_log))
        time.sleep(1.0)
        during = len(acks(ack_log))
        assert freeze(db, "absent")["changed"] is True
        wait_until("writes after the freeze", lambda: len(acks(ack_log)) >= during + 20)
    finally:
        stop.touch()
        out, _err = running.communicate(timeout=30)
    summary = json.loads(out)
    assert running.returncode == 0, summary
    assert summary["errors"] == 0, summary["error_messages"]
    assert during <= frozen_at + 1  # at most the write that was committing while the freeze waited for the lock
    assert summary["held"] >= 1
    assert 800 <= summary["max_hold_ms"] <= 5000, summary
    assert summary["max_write_gap_ms"] >= summary["max_hold_ms"] - 50, summary
    assert summary["switches"] == [] and summary["engine"] == "sqlite"
    assert summary["acknowledged_per_engine"] == {"sqlite": summary["acknowledged"], "postgresql": 0}
    written = acks(ack_log)
    assert {record["op"] for record in written} == {"I", "U", "D"} and {record["engine"] for record in written} == {"sqlite"}

    code, report = run_verify(ack_log, path=db)
    assert code == 0 and report["lost"] == 0, report
    assert report["acknowledged"] == len(written) and 0 < report["checked"] <= len(written)
    # the check can fail: an acknowledged insert removed behind the application's back is lost
    last = {(record["table"], record["id"]): record for record in written}
    key = next(k for (table, k), record in reversed(last.items()) if table == "virtual_machines" and record["op"] == "I")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM virtual_machines WHERE id = ?", (key,))
    code, report = run_verify(ack_log, path=db)
    assert code == 1 and report["lost"] == 1, report
    assert report["lost_samples"][0]["id"] == key and report["lost_samples"][0]["found"] is None


def copy(path, target: dict) -> dict:
    """table_copy's work through its Python API: the copy, then the replay of what the capture recorded."""
    params = dict({name: spec.get("default") for name, spec in COPY_OPTIONS.items()}, column_types=DATES, progress_interval=5.0)
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as source, Client(target) as client:
        return run_copy(source, client, params, False)


@pytest.fixture()
def green_db(lab):
    with scratch_database(GREEN, "zdm_sqlite_app_test") as target:
        yield target


def partitioned_virtual_machines(target: dict) -> None:
    """virtual_machines as pg_partition leaves it: hash-partitioned by vcenter_id, key (id, vcenter_id)."""
    with connect(target) as conn:
        conn.execute(
            "CREATE TABLE virtual_machines (id bigint NOT NULL, vcenter_id bigint NOT NULL, host_id bigint, datastore_id bigint, "
            "name text NOT NULL, uuid text NOT NULL, power_state text NOT NULL, num_cpu integer NOT NULL, memory_mb integer NOT NULL, "
            "disk_gb double precision NOT NULL, guest_os text, ip_address text, created_at timestamptz NOT NULL, "
            "updated_at timestamptz NOT NULL, PRIMARY KEY (id, vcenter_id)) PARTITION BY HASH (vcenter_id)"
        )
        for index in range(4):
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF virtual_machines FOR VALUES WITH (MODULUS 4, REMAINDER {})").format(
                    sql.Identifier(f"virtual_machines_p{index}"), sql.Literal(index)
                )
            )


def set_read_only(target: dict, on: bool) -> None:
    """New sessions of the scratch database read-only (or not): what a frozen PostgreSQL answers, 25006."""
    name = sql.Identifier(target["login_db"])
    with connect(target, login_db="postgres") as conn:  # a session of the database itself would be read-only too
        if on:
            conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name))
        else:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name))


@pytest.mark.parametrize("partitioned", [False, True], ids=["plain", "hash-partitioned"])
def test_the_application_follows_the_config_through_the_cutover_and_loses_no_acknowledged_write(tmp_path, green_db, partitioned):
    db, config, ack_log = tmp_path / "vminer.db", tmp_path / "app.json", tmp_path / "acks.jsonl"
    sample.build(str(db), vms=2000, vcenters=20)
    with SqliteClient({"path": str(db), "busy_timeout": 5.0}) as client:
        ensure_capture(client, {"change_table": "zdm_changes", "tables": VMINER, "key_columns": None, "state": "present", "force": False})
    if partitioned:
        partitioned_virtual_machines(green_db)
    write_config(config, {"engine": "sqlite", "path": str(db)})
    workload = sample.Workload(config=str(config), rate=200, hold_timeout=20, ack_log=str(ack_log)).start()
    try:
        time.sleep(0.3)
        first = copy(db, green_db)  # the application writes to SQLite all along: the capture records it
        assert first["complete"] is True
        assert freeze(db, "present")["changed"] is True
        last = copy(db, green_db)  # the last changes, replayed while nothing can write
        assert last["backlog"] == 0
        on_sqlite = workload.per_engine["sqlite"]
        write_config(config, pg_config(green_db))
        wait_until("writes on PostgreSQL", lambda: workload.per_engine["postgresql"] >= 40)
        held_on_sqlite = workload.held

        # a read-only PostgreSQL (25006) holds the writes too, and a held write follows the config
        set_read_only(green_db, True)
        write_config(config, dict(pg_config(green_db), sslmode="prefer"))  # another config: a new, read-only session
        wait_until("a write held by PostgreSQL", lambda: workload.held > held_on_sqlite)
        time.sleep(0.3)
        before = workload.per_engine["postgresql"]
        set_read_only(green_db, False)
        write_config(config, pg_config(green_db))
        wait_until("writes after PostgreSQL's freeze", lambda: workload.per_engine["postgresql"] >= before + 20)
    finally:
        summary = workload.stop()
        set_read_only(green_db, False)
    assert summary["errors"] == 0, summary["error_messages"]
    assert held_on_sqlite >= 1  # the SQLite freeze held writes until the config moved the application
    assert summary["held"] == held_on_sqlite + 1 and summary["max_hold_ms"] >= 300, summary
    assert summary["acknowledged_per_engine"]["sqlite"] == on_sqlite > 0
    assert [switch["engine"] for switch in summary["switches"]] == ["postgresql"] * 3 and summary["engine"] == "postgresql"
    assert GREEN["login_password"] not in json.dumps(summary)
    written = acks(ack_log)
    on_pg = [record for record in written if record["engine"] == "postgresql"]
    assert {record["op"] for record in on_pg} >= {"I", "U"}
    # the inserts took max(id) + 1 on a key without a sequence, after the rows the copy brought
    inserted = [record["id"] for record in on_pg if record["op"] == "I"]
    assert len(inserted) == len(set(inserted)) and min(inserted) > 2000
    with connect(green_db) as conn:
        assert conn.execute("SELECT count(*) FROM virtual_machines WHERE id = ANY(%s)", (inserted,)).fetchone()[0] >= 1
        kind = conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'virtual_machines' AND column_name = 'updated_at'"
        ).fetchone()[0]
        spread = conn.execute("SELECT count(DISTINCT tableoid) FROM virtual_machines").fetchone()[0]
    assert kind == "timestamp with time zone"  # text dates written into timestamptz, compared as instants
    assert spread == (4 if partitioned else 1)

    pg_file = tmp_path / "pg.json"
    write_config(pg_file, pg_config(green_db))
    code, report = run_verify(ack_log, config=pg_file)
    assert code == 0 and report["lost"] == 0, report
    assert report["acknowledged"] == len(written) and report["checked"] > 0
    assert GREEN["login_password"] not in json.dumps(report)

    # the check can fail: an acknowledged write whose row is gone is reported lost
    final = {(record["table"], record["id"]): record for record in written}
    key = next(k for (table, k), record in reversed(final.items()) if table == "virtual_machines" and record["op"] in ("I", "U"))
    with connect(green_db) as conn:
        conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier("public", "virtual_machines")), (key,))
    code, report = run_verify(ack_log, config=pg_file)
    assert code == 1 and report["lost"] == 1, report
    assert report["lost_samples"][0]["id"] == key
