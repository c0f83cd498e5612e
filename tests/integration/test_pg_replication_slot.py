"""zerodowntime.migration.pg_replication_slot run against blue, in a scratch database
of its own (zdm_slot_test) with slots named zdm_slot_test_*, so concurrent runs of other tests
are not disturbed."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager

import pytest

from tests.lab import BLUE, LAB_PASSWORD, connect, drop_database, recreate_database, run_module, where

MODULE = "zerodowntime.migration.pg_replication_slot"
DB = "zdm_slot_test"
PREFIX = "zdm_slot_test_"
ARGS = dict(BLUE, login_db=DB)
HOSTILE = 'a"; DROP TABLE zdm_victim; --'
PG_RECVLOGICAL = "/usr/lib/postgresql/15/bin/pg_recvlogical"


def drop_scratch(conn):
    """Slots first (terminating any consumer), then the database."""
    conn.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active AND (database = %s OR slot_name LIKE %s)",
        (DB, PREFIX + "%"),
    )
    deadline = time.monotonic() + 10
    while True:
        rows = conn.execute(
            "SELECT slot_name, active FROM pg_replication_slots WHERE database = %s OR slot_name LIKE %s", (DB, PREFIX + "%")
        ).fetchall()
        if not any(row[1] for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for row in rows:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (row[0],))


@pytest.fixture(scope="module")
def scratch(lab):
    with connect(BLUE, login_db="postgres") as conn:
        drop_scratch(conn)
    recreate_database(BLUE, DB)
    with connect(ARGS) as conn:
        conn.execute("CREATE TABLE zdm_victim (id int)")
        conn.execute("CREATE TABLE wal_maker (id int, filler text)")
    yield
    with connect(BLUE, login_db="postgres") as conn:
        drop_scratch(conn)
    drop_database(BLUE, DB)


@pytest.fixture()
def db(scratch):
    with connect(ARGS) as conn:
        yield conn


def slot_row(conn, name):
    return conn.execute(
        "SELECT slot_type, plugin, database, active, active_pid, restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (name,)
    ).fetchone()


def slot(name, **args):
    return dict(ARGS, name=name, **args)


def test_logical_slot_check_mode_create_idempotence_and_health(db):
    name = PREFIX + "logical"
    run, checked = run_module(MODULE, slot(name), check=True, diff=True)
    assert checked["failed"] is False, run.stdout
    assert checked["changed"] is True
    assert checked["diff"] == {"before": {}, "after": {"slot_type": "logical", "plugin": "pgoutput", "database": DB}}
    assert checked["queries"] == [f"SELECT pg_catalog.pg_create_logical_replication_slot('{name}', 'pgoutput')"]
    assert slot_row(db, name) is None

    created = run_module(MODULE, slot(name), diff=True)[1]
    assert created["changed"] is True
    assert created["queries"] == checked["queries"]
    assert slot_row(db, name)[:4] == ("logical", "pgoutput", DB, False)
    health = created["slot"]
    assert (health["slot_type"], health["plugin"], health["database"]) == ("logical", "pgoutput", DB)
    assert (health["active"], health["active_pid"], health["wal_status"]) == (False, None, "reserved")
    assert health["restart_lsn"] == slot_row(db, name)[5]
    assert "/" in health["confirmed_flush_lsn"]
    assert isinstance(health["retained_wal_bytes"], int) and health["retained_wal_bytes"] >= 0

    # Nothing consumes the slot: WAL written now is retained, and the figures say so unchanged.
    db.execute("INSERT INTO wal_maker SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
    again = run_module(MODULE, slot(name))[1]
    assert (again["changed"], again["queries"]) == (False, [])
    assert again["slot"]["restart_lsn"] == health["restart_lsn"]
    assert again["slot"]["retained_wal_bytes"] >= health["retained_wal_bytes"] + 500_000


def test_physical_slot_reserves_wal_only_when_asked(db):
    reserved = run_module(MODULE, slot(PREFIX + "physical_now", slot_type="physical", immediately_reserve=True))[1]
    assert reserved["changed"] is True
    assert reserved["queries"] == [f"SELECT pg_catalog.pg_create_physical_replication_slot('{PREFIX}physical_now', true)"]
    assert (reserved["slot"]["slot_type"], reserved["slot"]["plugin"], reserved["slot"]["database"]) == ("physical", None, None)
    assert reserved["slot"]["restart_lsn"] is not None
    assert isinstance(reserved["slot"]["retained_wal_bytes"], int)

    lazy = run_module(MODULE, slot(PREFIX + "physical_later", slot_type="physical"))[1]
    assert lazy["changed"] is True
    assert (lazy["slot"]["restart_lsn"], lazy["slot"]["retained_wal_bytes"]) == (None, None)
    assert slot_row(db, PREFIX + "physical_later")[:3] == ("physical", None, None)
    # Physical slots have no database: connecting to another one finds the same slot.
    same = run_module(MODULE, dict(BLUE, login_db="postgres", name=PREFIX + "physical_later", slot_type="physical"))[1]
    assert (same["changed"], same["queries"]) == (False, [])


def test_same_name_with_another_type_plugin_or_database_is_an_error(db):
    name = PREFIX + "conflict"
    assert run_module(MODULE, slot(name, plugin="test_decoding"))[1]["changed"] is True

    other_plugin = run_module(MODULE, slot(name))[1]
    assert other_plugin["failed"] is True
    assert "plugin is 'test_decoding', not 'pgoutput'" in other_plugin["msg"]
    assert "drop it (state: absent)" in other_plugin["msg"] and "choose another name" in other_plugin["msg"]
    assert other_plugin["queries"] == []

    other_type = run_module(MODULE, slot(name, slot_type="physical"))[1]
    assert other_type["failed"] is True
    assert "slot_type is 'logical', not 'physical'" in other_type["msg"]

    other_database = run_module(MODULE, dict(BLUE, login_db="postgres", name=name, plugin="test_decoding"))[1]
    assert other_database["failed"] is True
    assert f"database is '{DB}', not 'postgres'" in other_database["msg"]
    assert slot_row(db, name)[:3] == ("logical", "test_decoding", DB)


@pytest.mark.parametrize("name", [HOSTILE, "GreenSub", "green-sub", "x" * 64, ""])
def test_invalid_names_are_refused_and_execute_nothing(db, name):
    result = run_module(MODULE, slot(name))[1]
    assert result["failed"] is True
    assert "invalid replication slot name" in result["msg"] and "[a-z0-9_]" in result["msg"]
    assert result["queries"] == []
    assert db.execute("SELECT to_regclass('zdm_victim')").fetchone()[0] is not None
    assert db.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone()[0] == 0
    absent = run_module(MODULE, slot(name, state="absent"))[1]
    assert absent["failed"] is True and absent["queries"] == []


def test_options_of_the_other_slot_type_are_errors(db):
    result = run_module(MODULE, slot(PREFIX + "bad_combo", slot_type="physical", plugin="pgoutput"))[1]
    assert result["failed"] is True
    assert "plugin applies to logical slots only" in result["msg"]
    result = run_module(MODULE, slot(PREFIX + "bad_combo", immediately_reserve=True))[1]
    assert result["failed"] is True
    assert "immediately_reserve applies to physical slots only" in result["msg"]
    assert slot_row(db, PREFIX + "bad_combo") is None


def test_drop_check_mode_diff_and_idempotence(db):
    name = PREFIX + "to_drop"
    assert run_module(MODULE, slot(name))[1]["changed"] is True

    checked = run_module(MODULE, slot(name, state="absent"), check=True, diff=True)[1]
    assert checked["changed"] is True
    assert checked["diff"] == {"before": {"slot_type": "logical", "plugin": "pgoutput", "database": DB}, "after": {}}
    assert checked["queries"] == [f"SELECT pg_catalog.pg_drop_replication_slot('{name}')"]
    assert slot_row(db, name) is not None

    dropped = run_module(MODULE, slot(name, state="absent"))[1]
    assert (dropped["changed"], dropped["state"], dropped["slot"]) == (True, "absent", {})
    assert slot_row(db, name) is None
    again = run_module(MODULE, slot(name, state="absent"))[1]
    assert (again["changed"], again["queries"]) == (False, [])


@contextmanager
def consumer(conn, name):
    """pg_recvlogical streaming from the slot, so a walsender holds it; killed at the end."""
    process = subprocess.Popen(
        [
            PG_RECVLOGICAL,
            "-d",
            DB,
            "-S",
            name,
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
            "-h",
            BLUE["login_host"],
            "-p",
            str(BLUE["login_port"]),
            "-U",
            "migrator",
        ],
        env=dict(os.environ, PGPASSWORD=LAB_PASSWORD),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not (slot_row(conn, name) or (None,) * 4)[3]:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"pg_recvlogical did not make {name} active: {process.stderr.read().decode() if process.poll() is not None else ''}"
                )
            time.sleep(0.1)
        yield process
    finally:
        process.kill()
        process.wait()


def test_active_slot_is_dropped_only_with_force(db):
    name = PREFIX + "active"
    assert run_module(MODULE, slot(name, plugin="test_decoding"))[1]["changed"] is True
    with consumer(db, name) as process:
        pid = slot_row(db, name)[4]
        present = run_module(MODULE, slot(name, plugin="test_decoding"))[1]
        assert (present["changed"], present["slot"]["active"], present["slot"]["active_pid"]) == (False, True, pid)

        refused = run_module(MODULE, slot(name, state="absent"))[1]
        assert refused["failed"] is True
        assert f"is active (used by walsender pid {pid})" in refused["msg"]
        assert "force: true" in refused["msg"]
        assert refused["queries"] == []
        assert slot_row(db, name)[3:5] == (True, pid)

        checked = run_module(MODULE, slot(name, state="absent", force=True), check=True)[1]
        assert checked["changed"] is True
        assert checked["queries"] == [
            f"SELECT pg_catalog.pg_terminate_backend({pid})",
            f"SELECT pg_catalog.pg_drop_replication_slot('{name}')",
        ]
        assert slot_row(db, name)[3:5] == (True, pid)
        assert process.poll() is None

        forced = run_module(MODULE, slot(name, state="absent", force=True))[1]
        assert forced["failed"] is False, forced.get("msg")
        assert (forced["changed"], forced["queries"]) == (True, checked["queries"])
        assert slot_row(db, name) is None
        assert process.wait(timeout=10) != 0  # its walsender was terminated


def test_logical_slot_needs_wal_level_logical(replica_wal_server):
    result = run_module(MODULE, dict(replica_wal_server, name=PREFIX + "nowal"))[1]
    assert result["failed"] is True
    assert f"wal_level is 'replica' on {where(replica_wal_server)}" in result["msg"]
    assert "wal_level=logical" in result["msg"] and "restart" in result["msg"]
    assert result["queries"] == []
    with connect(replica_wal_server) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0


def test_wrong_password_names_the_user_and_changes_nothing(db):
    run, result = run_module(MODULE, slot(PREFIX + "wrong_password", login_password="Wrong-Secret-9"))
    assert result["failed"] is True
    assert "authentication failed for user 'migrator'" in result["msg"]
    assert "Wrong-Secret-9" not in run.stdout
    assert slot_row(db, PREFIX + "wrong_password") is None
