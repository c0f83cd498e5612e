"""table_copy: real SQLite files in a tmp dir into a throwaway database on the suite's own
PostgreSQL (SCRATCH_PG) - plain and hash-partitioned targets equal to the source, resume after a kill and
after max_rows without a duplicate, writes during the copy replayed, type mapping (text dates, an
override), values that do not fit counted against max_errors, check mode, a second run that
changes nothing, the bad input, and checkpoints tied to their source: another file, or the same
path with a new file and capture, is refused without a write, and restart copies it from the start."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import COPY_OPTIONS, run_copy
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import ensure_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client as SqliteClient
from tests.lab import (
    ROOT,
    SCRATCH_PG,
    connect,
    hash_partitioned_virtual_machines,
    run_module,
    run_playbook,
    scratch_database,
    vminer_sample,
)

MODULE = "zerodowntime.migration.table_copy"
VMINER = ["vcenters", "hosts", "datastores", "virtual_machines"]
HOSTILE = 'vm "tags"; DROP TABLE t; --'
DATES = {
    "vcenters": {"created_at": "timestamptz", "last_sync_at": "timestamptz"},
    "virtual_machines": {"created_at": "timestamptz", "updated_at": "timestamptz"},
}
sample = vminer_sample()


def defaults() -> dict:
    return {name: spec.get("default") for name, spec in COPY_OPTIONS.items()}


def capture(path, **args) -> None:
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as client:
        ensure_capture(
            client, {"change_table": "zdm_changes", "tables": None, "key_columns": None, "state": "present", "force": False, **args}
        )


def copy(path, target: dict, check: bool = False, **options) -> dict:
    """table_copy's work through its Python API (the module is this and an argument spec)."""
    params = dict(defaults(), **options)
    params.setdefault("progress_interval", 5.0)
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}, check) as source, Client(target, check_mode=check) as client:
        return run_copy(source, client, params, check)


def copy_fails(path, target: dict, **options) -> ModuleError:
    with pytest.raises(ModuleError) as failed:
        copy(path, target, **options)
    return failed.value


def module(path, target: dict, check: bool = False, **options) -> dict:
    return run_module(MODULE, {"path": str(path), **target, **options}, check=check)[1]


def source_rows(path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()  # noqa: S608 (test's own names)


def target_rows(target: dict, table: str, schema: str = "public") -> list[tuple]:
    with connect(target) as conn:
        return conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(schema, table))).fetchall()


def comparable(row) -> tuple:
    """A target row as SQLite holds it: timestamps as the generator's ISO text, numbers as numbers."""
    out = []
    for value in row:
        if isinstance(value, datetime.datetime):
            value = value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")  # noqa: UP017
        out.append(value)
    return tuple(out)


def assert_equal(path, target: dict, tables: tuple = tuple(VMINER)) -> None:
    for table in tables:
        expected = source_rows(path, table)
        found = [comparable(row) for row in target_rows(target, table)]
        assert len(found) == len(expected), table
        assert found == expected, table


def phase_details(target: dict, phase: str = "table_copy") -> dict:
    with connect(target) as conn:
        row = conn.execute("SELECT status, details FROM migration_progress WHERE phase = %s", (phase,)).fetchone()
    return {"status": row[0], **row[1]} if row else {}


@pytest.fixture()
def vminer(tmp_path):
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=20000, vcenters=100)
    capture(path, tables=VMINER)
    return path


@pytest.fixture()
def big_vminer(tmp_path):
    """Big enough that a copy is still running when the test kills it (about 2 s at 100k rows/s)."""
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=200000, vcenters=100)
    capture(path, tables=VMINER)
    return path


@pytest.fixture()
def target_db(scratch_postgres):
    with scratch_database(SCRATCH_PG, "zdm_table_copy_test") as target:
        yield target


def stamp_of(path, table="vcenters", column="created_at"):
    with sqlite3.connect(path) as conn:
        return conn.execute(f'SELECT "{column}" FROM "{table}" LIMIT 1').fetchone()[0]  # noqa: S608


def test_copy_into_plain_tables_is_equal_and_a_second_run_changes_nothing(vminer, target_db):
    planned = copy(vminer, target_db, check=True, column_types=DATES)
    assert planned["changed"] is True
    assert [item["table"] for item in planned["plan"]] == ["vcenters", "datastores", "hosts", "virtual_machines"]  # parents first
    assert planned["plan"][3]["rows"] == 20000 and planned["plan"][3]["create"] is True
    assert planned["plan"][3]["columns"]["created_at"] == "TEXT -> timestamp with time zone"
    assert planned["plan"][3]["columns"]["num_cpu"] == "INTEGER -> bigint"
    with connect(target_db) as conn:  # check mode wrote nothing: no table, no progress row
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", ([*VMINER, "migration_progress"],)).fetchone()[0] == 0

    done = copy(vminer, target_db, column_types=DATES, batch_size=3000)
    assert done["changed"] is True and done["complete"] is True
    assert done["rows_copied"] == 100 + 1000 + 500 + 20000
    assert done["errors"] == 0 and done["backlog"] == 0
    assert done["rows_per_second"] > 0
    assert_equal(vminer, target_db)
    with connect(target_db) as conn:
        types = dict(
            conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'virtual_machines'").fetchall()
        )
    assert types["created_at"] == "timestamp with time zone" and types["disk_gb"] == "double precision" and types["id"] == "bigint"
    details = phase_details(target_db)
    assert details["status"] == "succeeded"
    assert details["copy"]["tables"]["virtual_machines"]["done"] is True
    assert details["progress"]["rows_total"] == 20000

    again = module(vminer, target_db, column_types=DATES)
    assert again.get("failed") is not True, again
    assert again["changed"] is False and again["rows_copied"] == 0 and again["replayed_changes"] == 0
    assert_equal(vminer, target_db)


def test_copy_into_hash_partitioned_tables_with_writes_during_the_copy(vminer, target_db):
    hash_partitioned_virtual_machines(target_db, 100)
    workload = sample.Workload(str(vminer), rate=400).start()
    try:
        time.sleep(0.5)
        first = copy(vminer, target_db, column_types={"vcenters": DATES["vcenters"]}, batch_size=2000, replay_until=1000000)
    finally:
        summary = workload.stop()
    assert summary["errors"] == 0, summary["error_messages"]
    assert summary["acknowledged"] > 0
    assert first["complete"] is True
    # what the workload wrote after the snapshot is replayed: the run after it stopped catches up
    last = copy(vminer, target_db, column_types={"vcenters": DATES["vcenters"]}, batch_size=2000)
    assert last["rows_copied"] == 0 and last["backlog"] == 0
    assert first["replayed_changes"] + last["replayed_changes"] > 0
    assert_equal(vminer, target_db)
    with connect(target_db) as conn:
        spread = conn.execute("SELECT count(DISTINCT tableoid) FROM virtual_machines").fetchone()[0]
    assert spread > 50  # 100 vCenters hashed into 100 partitions: about 63 of them hold rows


def test_writes_during_the_copy_are_replayed_by_the_same_run(vminer, target_db):
    stop = threading.Event()
    written = []

    def writer():
        conn = sqlite3.connect(vminer, timeout=5, isolation_level=None)
        vm_id = 10**6
        while not stop.is_set():
            vm_id += 1
            conn.execute("UPDATE virtual_machines SET power_state = 'suspended', num_cpu = num_cpu + 1 WHERE id = ?", (vm_id % 20000 + 1,))
            conn.execute("DELETE FROM virtual_machines WHERE id = ?", (vm_id % 20000 + 7,))
            written.append(vm_id)
            time.sleep(0.002)
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        first = copy(vminer, target_db, batch_size=500, column_types=DATES, progress_interval=0)
    finally:
        stop.set()
        thread.join()
    assert written and first["complete"] is True and first["replayed_changes"] > 0
    copy(vminer, target_db, batch_size=500, column_types=DATES)
    assert_equal(vminer, target_db)


def test_resume_after_max_rows_and_after_a_kill_continues_without_duplicates(big_vminer, target_db, tmp_path):
    vminer = big_vminer
    part = copy(vminer, target_db, batch_size=1000, max_rows=1500, column_types=DATES)
    assert part["complete"] is False and part["rows_copied"] == 1500 and part["backlog"] is None
    details = phase_details(target_db)
    assert details["status"] == "running"
    assert details["copy"]["tables"]["hosts"]["last_key"] == [900]  # 100 vcenters, 500 datastores, then 900 hosts

    # a run killed mid-copy (SIGKILL, between checkpoints): the next one goes on from the last commit
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, json\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / '.ansible/collections')!r}]\n"
        "from tests.integration.test_table_copy import copy\n"
        "copy(sys.argv[1], json.loads(sys.argv[2]), batch_size=200, progress_interval=0.2, column_types=json.loads(sys.argv[3]))\n"
    )
    running = subprocess.Popen([sys.executable, str(script), str(vminer), json.dumps(target_db), json.dumps(DATES)], cwd=ROOT)

    def copied_vms():
        details = phase_details(target_db)
        return details.get("copy", {}).get("tables", {}).get("virtual_machines", {}).get("rows", 0) > 2000

    deadline = time.monotonic() + 60
    while not copied_vms():
        assert running.poll() is None, "the copy ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(running.pid, signal.SIGKILL)
    running.wait()
    killed = phase_details(target_db)["copy"]["tables"]["virtual_machines"]
    assert killed["done"] is False
    # what status.yml shows of the killed copy: its last figures, pointed at the target's progress table
    progress = phase_details(target_db)["progress"]
    state_db = {key: target_db[key] for key in ("login_host", "login_port", "login_user", "login_db")}
    status = run_playbook("status.yml", extravars={"migration_state_db": state_db, "migration_phases": ["table_copy"]})
    assert status.status == "successful", status.stdout
    lines = status.task_results("Show where the migration stands")[0]["msg"].splitlines()
    shown = next(line for line in lines if line.startswith("    step copy: "))
    assert shown.startswith(f"    step copy: running {progress['table']} {progress['rows_done']}/{progress['rows_total']} rows ("), shown
    assert ", updated " in shown and "progress:" not in "\n".join(lines), lines
    with connect(target_db) as conn:  # the target holds exactly what the checkpoint says
        assert conn.execute("SELECT count(*), max(id) FROM virtual_machines").fetchone() == (killed["rows"], killed["last_key"][0])

    rest = copy(vminer, target_db, batch_size=1000, column_types=DATES)
    assert rest["complete"] is True
    assert rest["tables"]["virtual_machines"]["rows_copied"] == 200000 - killed["rows"]
    assert_equal(vminer, target_db)


def target_counts(target: dict) -> dict:
    with connect(target) as conn:
        return {
            table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
            for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(%s)", (VMINER,))
        }


def test_another_file_against_the_same_checkpoints_is_refused_and_restart_copies_it_all(vminer, target_db, tmp_path):
    part = copy(vminer, target_db, batch_size=1000, max_rows=1500, column_types=DATES)
    assert part["complete"] is False and part["source"]["path"] == str(vminer) and part["source"]["capture_id"]
    recorded = phase_details(target_db)
    assert recorded["copy"]["source"] == part["source"]
    counts = target_counts(target_db)

    other = tmp_path / "other.db"
    sample.build(str(other), vms=3000, vcenters=30)
    capture(other, tables=VMINER)
    for check in (True, False):
        refused = copy_fails(other, target_db, check=check, batch_size=1000, column_types=DATES)
        message = str(refused)
        for part_of_message in ("vcenters", "hosts", str(vminer), str(other), "another file", "restart: true", "nothing was written"):
            assert part_of_message in message, message
    assert phase_details(target_db) == recorded, "the refused run changed the checkpoints"
    assert target_counts(target_db) == counts, "the refused run wrote rows"

    restarted = copy(other, target_db, batch_size=1000, column_types=DATES, restart=True)
    assert restarted["complete"] is True and restarted["changed"] is True
    assert set(restarted["restarted"]) == set(recorded["copy"]["tables"])
    assert restarted["source"]["path"] == str(other)
    assert_equal(other, target_db)
    assert phase_details(target_db)["copy"]["source"] == restarted["source"]
    again = copy(other, target_db, batch_size=1000, column_types=DATES, restart=True)  # matching checkpoints: resumed, not restarted
    assert again["changed"] is False and again["restarted"] == [] and again["rows_copied"] == 0


def test_a_new_file_and_capture_at_the_same_path_is_refused_and_restart_copies_it_all(vminer, target_db):
    done = copy(vminer, target_db, column_types=DATES)
    assert done["complete"] is True
    recorded = phase_details(target_db)
    counts = target_counts(target_db)

    sample.build(str(vminer), vms=4000, vcenters=40, force=True)  # replaced: a new file under the same name
    capture(vminer, tables=VMINER)
    refused = str(copy_fails(vminer, target_db, column_types=DATES))
    assert "capture is another one" in refused and done["source"]["capture_id"] in refused and "restart: true" in refused, refused
    assert phase_details(target_db) == recorded and target_counts(target_db) == counts

    result = module(vminer, target_db, restart=True, column_types=DATES)
    assert not result.get("failed"), result.get("msg")
    assert result["complete"] is True and sorted(result["restarted"]) == sorted(VMINER)
    assert_equal(vminer, target_db)


@pytest.fixture()
def typed(tmp_path):
    path = tmp_path / "typed.db"
    conn = sqlite3.connect(path)
    script = """
        CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT, day DATE, stamp DATETIME, flag BOOLEAN, amount NUMERIC,
                             payload JSON, raw BLOB, small TEXT, note VARCHAR(10));
        CREATE TABLE HOSTILE ("k""ey" TEXT PRIMARY KEY, "va;lue" INTEGER);
        INSERT INTO events VALUES (1, '2026-01-02T03:04:05Z', '2026-01-02', '2026-01-02 03:04:05.250', 1, '12.50',
                                   '{"a": 1}', x'00ff', '7', 'short');
        INSERT INTO events VALUES (2, '2026-01-02 03:04:05+02:00', '2026-02-03', 1767225600, 0, 3, '[]', NULL, '8', NULL);
        INSERT INTO HOSTILE VALUES ('a''b"c', 1), ('x;y', 2);
        """
    conn.executescript(script.replace("HOSTILE", '"' + HOSTILE.replace('"', '""') + '"'))
    conn.commit()
    conn.close()
    capture(path)
    return path


def test_type_mapping_text_dates_and_a_per_column_override(typed, target_db):
    done = copy(typed, target_db, column_types={"events": {"at": "timestamptz", "small": "int2"}})
    assert done["errors"] == 0
    with connect(target_db) as conn:
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events'").fetchall())
        rows = conn.execute("SELECT at, day, stamp, flag, amount, payload, raw, small, note FROM events ORDER BY id").fetchall()
        hostile = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(HOSTILE))).fetchall()
    assert types == {
        "id": "bigint",
        "at": "timestamp with time zone",
        "day": "date",
        "stamp": "timestamp without time zone",
        "flag": "boolean",
        "amount": "numeric",
        "payload": "jsonb",
        "raw": "bytea",
        "small": "smallint",
        "note": "text",
    }
    utc = datetime.timezone.utc  # noqa: UP017
    assert rows[0][0] == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=utc)
    assert rows[1][0] == datetime.datetime(2026, 1, 2, 1, 4, 5, tzinfo=utc)
    assert rows[0][1] == datetime.date(2026, 1, 2)
    assert rows[0][2] == datetime.datetime(2026, 1, 2, 3, 4, 5, 250000)
    assert rows[1][2] == datetime.datetime(2026, 1, 1, 0, 0, 0)
    assert [row[3] for row in rows] == [True, False]
    assert rows[0][4] == decimal.Decimal("12.5") and rows[0][5] == {"a": 1} and bytes(rows[0][6]) == b"\x00\xff" and rows[0][7] == 7
    assert hostile == [("a'b\"c", 1), ("x;y", 2)]


def test_a_value_that_does_not_fit_names_table_key_column_value_and_counts_against_max_errors(typed, target_db):
    with sqlite3.connect(typed) as conn:
        conn.execute("INSERT INTO events (id, at, day, small) VALUES (3, 'not a date', '2026-01-01', '9')")
        conn.execute("INSERT INTO events (id, at, day, small) VALUES (4, '2026-01-01', '2026-01-01', '99999')")
    failed = copy_fails(typed, target_db, tables=["events"], column_types={"events": {"at": "timestamptz", "small": "int2"}})
    message = str(failed)
    assert "'events'" in message and "key [3]" in message and "'at'" in message and "'not a date'" in message and "max_errors=0" in message
    with connect(target_db) as conn:
        assert conn.execute("SELECT to_regclass('public.events')").fetchone()[0] is None  # nothing half-done
        assert conn.execute("SELECT to_regclass('public.migration_progress')").fetchone()[0] is None

    failed = copy_fails(typed, target_db, tables=["events"], max_errors=1, column_types={"events": {"at": "timestamptz", "small": "int2"}})
    assert "key [4]" in str(failed) and "'small'" in str(failed) and "99999" in str(failed) and "2 value(s)" in str(failed)

    done = copy(typed, target_db, tables=["events"], max_errors=2, column_types={"events": {"at": "timestamptz", "small": "int2"}})
    assert done["errors"] == 2
    assert [(sample["key"], sample["column"]) for sample in done["error_samples"]] == [([3], "at"), ([4], "small")]
    with connect(target_db) as conn:
        assert [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id").fetchall()] == [1, 2]


def test_bad_input_is_refused_by_name(typed, target_db, tmp_path):
    # a table without a key
    with sqlite3.connect(typed) as conn:
        conn.execute("CREATE TABLE loose (a TEXT, b TEXT)")
        conn.execute("CREATE TABLE odd (id INTEGER PRIMARY KEY, shape GEOMETRY)")
    error = str(copy_fails(typed, target_db, tables=["loose"]))
    assert "'loose' has no primary key" in error and "key_columns" in error
    # a type with no mapping, and the fix
    error = str(copy_fails(typed, target_db, tables=["odd"]))
    assert "odd.shape" in error and "'GEOMETRY'" in error and "column_types" in error
    assert copy(typed, target_db, tables=["odd"], column_types={"odd": {"shape": "text"}})["complete"] is True
    error = str(copy_fails(typed, target_db, tables=["events"], column_types={"events": {"at": "money"}}))
    assert "'money'" in error and "events.at" in error
    # the target already holds different data: refused, then replaced when told
    with connect(target_db) as conn:
        conn.execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, at text, day date, stamp timestamp, flag boolean, amount numeric, "
            "payload jsonb, raw bytea, small text, note text)"
        )
        conn.execute("INSERT INTO events (id, at) VALUES (99, 'foreign')")
    error = str(copy_fails(typed, target_db, tables=["events"], phase="events_copy"))
    assert "already holds rows" in error and "overwrite" in error
    assert target_rows(target_db, "events")[0][:2] == (99, "foreign")
    assert copy(typed, target_db, tables=["events"], phase="events_copy", overwrite=True)["complete"] is True
    assert [row[0] for row in target_rows(target_db, "events")] == [1, 2]
    # no capture in the file
    bare = tmp_path / "bare.db"
    conn = sqlite3.connect(bare)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.close()
    error = str(copy_fails(bare, target_db))  # a rollback journal: the snapshot would hold the writers
    assert "delete journal mode" in error and "WAL" in error
    conn = sqlite3.connect(bare)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    error = str(copy_fails(bare, target_db))
    assert "no change table 'zdm_changes'" in error and "sqlite_capture" in error
    # a corrupt file
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    result = module(corrupt, target_db)
    assert result["failed"] is True and "corrupt" in result["msg"]


def test_a_locked_file_is_an_error_naming_the_lock(typed, target_db):
    holder = sqlite3.connect(typed, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = module(typed, target_db, busy_timeout=0.5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result["failed"] is True and "locked" in result["msg"] and "busy_timeout" in result["msg"], result["msg"]


def test_check_mode_through_ansible_plans_and_writes_nothing(typed, target_db):
    result = run_module(
        MODULE, {"path": str(typed), **target_db, "column_types": {"events": {"at": "timestamptz"}}}, check=True, diff=True
    )[1]
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["diff"]["before"]["tables"]["events"] == {"rows": 0, "done": False}
    assert result["diff"]["after"]["tables"]["events"] == {"rows": 2, "done": True}
    assert {item["table"] for item in result["plan"]} == {"events", HOSTILE}
    assert result["queries"] == []
    with connect(target_db) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'public'"
            ).fetchone()[0]
            == 0
        )


def test_a_row_that_breaks_a_target_constraint_is_named_recorded_and_resumed_after_the_fix(vminer, target_db):
    # the target's own rule, which SQLite never had: no VM with more than 64 vCPUs
    with sqlite3.connect(vminer) as conn:
        conn.execute("UPDATE virtual_machines SET num_cpu = 96 WHERE id = 1234")
    with connect(target_db) as conn:
        conn.execute(
            "CREATE TABLE virtual_machines (id bigint PRIMARY KEY, vcenter_id bigint, host_id bigint, datastore_id bigint, "
            "name text, uuid text, power_state text, num_cpu integer CONSTRAINT vm_cpu_limit CHECK (num_cpu <= 64), memory_mb integer, "
            "disk_gb double precision, guest_os text, ip_address text, created_at text, updated_at text)"
        )
    failed = copy_fails(vminer, target_db, batch_size=500)
    assert "virtual_machines" in str(failed) and "vm_cpu_limit" in str(failed), failed
    with connect(target_db) as conn:
        status, details = conn.execute("SELECT status, details FROM migration_progress WHERE phase = 'table_copy'").fetchone()
        done = details["copy"]["tables"].get("virtual_machines", {})
        copied = conn.execute("SELECT count(*) FROM virtual_machines").fetchone()[0]
    # recorded: the failure and its error, and a checkpoint for exactly the rows that committed
    assert status == "failed" and "vm_cpu_limit" in details["error"], details
    assert copied == done.get("rows", 0) and copied < 1234, (copied, done)
    with sqlite3.connect(vminer) as conn:
        conn.execute("UPDATE virtual_machines SET num_cpu = 64 WHERE id = 1234")
    resumed = copy(vminer, target_db, batch_size=500)
    assert resumed["complete"] is True
    assert_equal(vminer, target_db)
