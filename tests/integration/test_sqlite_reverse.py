"""The way back of the SQLite cutover: a real SQLite file in a tmp dir copied (table_copy's run) into
a scratch database on the lab's green PostgreSQL, the reverse capture installed there, the file
frozen (sqlite_readonly), writes made on PostgreSQL (inserts, updates - one changing nothing, one
moving a key, one across hash partitions - deletes, timestamps, typed values, a hostile table name)
and replayed back into the frozen file: the comparison engine finds no difference, the freeze is
still there, identical, a second run replays nothing, check mode changes nothing, and a target
without the reverse capture is refused naming the fix."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.run import COMPARE_OPTIONS, run_compare
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import COPY_OPTIONS, run_copy
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.change_capture import ensure_target_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import ensure_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client as SqliteClient
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.readonly import PREFIX, ensure_readonly
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.reverse import replay_back
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import SqliteSource
from tests.lab import GREEN, connect, scratch_database, vminer_sample

VMINER = ["vcenters", "hosts", "datastores", "virtual_machines"]
HOSTILE = 'vm "tags"; DROP TABLE t; --'
TABLES = [*VMINER, "events", HOSTILE]
DATES = {
    "vcenters": {"created_at": "timestamptz", "last_sync_at": "timestamptz"},
    "virtual_machines": {"created_at": "timestamptz", "updated_at": "timestamptz"},
}
sample = vminer_sample()


def sqlite_client(path, check: bool = False) -> SqliteClient:
    return SqliteClient({"path": str(path), "busy_timeout": 5.0}, check)


@pytest.fixture()
def app(tmp_path):
    """The vMiner-like file with a table of every type the way back converts and a hostile name, captured."""
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=2000, vcenters=20)
    conn = sqlite3.connect(path)
    script = """
        CREATE TABLE events (id INTEGER PRIMARY KEY, day DATE, stamp DATETIME, flag BOOLEAN, amount NUMERIC, payload JSON, raw BLOB);
        CREATE TABLE HOSTILE ("k""ey" TEXT PRIMARY KEY, "va;lue" INTEGER);
        INSERT INTO events VALUES (1, '2026-01-02', '2026-01-02 03:04:05', 1, 12.5, '{"a": 1}', x'00ff');
        INSERT INTO events VALUES (2, '2026-02-03', '2026-02-03 04:05:06', 0, 3, '[]', NULL);
        INSERT INTO HOSTILE VALUES ('a''b"c', 1), ('x;y', 2);
        """
    conn.executescript(script.replace("HOSTILE", '"' + HOSTILE.replace('"', '""') + '"'))
    conn.commit()
    conn.close()
    with sqlite_client(path) as client:
        ensure_capture(client, {"change_table": "zdm_changes", "tables": None, "key_columns": None, "state": "present", "force": False})
    return path


@pytest.fixture()
def green_db(lab):
    with scratch_database(GREEN, "zdm_sqlite_reverse_test") as target:
        yield target


def partition_virtual_machines(target: dict) -> None:
    """virtual_machines hash-partitioned by vcenter_id (pg_partition's shape), made before the copy fills it."""
    with connect(target) as conn:
        conn.execute(
            "CREATE TABLE virtual_machines (id bigint NOT NULL, vcenter_id bigint NOT NULL, host_id bigint, datastore_id bigint, "
            "name text NOT NULL, uuid text NOT NULL, power_state text NOT NULL, num_cpu integer NOT NULL, memory_mb integer NOT NULL, "
            "disk_gb double precision NOT NULL, guest_os text, ip_address text, created_at timestamptz NOT NULL, "
            "updated_at timestamptz NOT NULL, PRIMARY KEY (id, vcenter_id)) PARTITION BY HASH (vcenter_id)"
        )
        for index in range(8):
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF virtual_machines FOR VALUES WITH (MODULUS 8, REMAINDER {})").format(
                    sql.Identifier(f"virtual_machines_p{index}"), sql.Literal(index)
                )
            )


def cut_over(path, target: dict) -> dict:
    """The cutover as far as the way back cares: the copy, the reverse capture on what it wrote, the file frozen.
    Returns the freeze's triggers (name -> SQL)."""
    params = dict({name: spec.get("default") for name, spec in COPY_OPTIONS.items()}, column_types=DATES)
    with sqlite_client(path) as source, Client(target) as client:
        done = run_copy(source, client, params, False)
        assert done["complete"] is True and done["errors"] == 0, done
        keys = {table: SqliteSource(source, "zdm_changes").key(table) for table in TABLES}
        installed = ensure_target_capture(client, "public", keys)
        assert installed["changed"] is True
        assert sorted(installed["diff"]["after"]["triggers"]) == sorted(f"public.{table}" for table in TABLES)
        frozen = ensure_readonly(
            source,
            {"migration": "reverse-test", "target_description": None, "tables": None, "change_table": "zdm_changes", "state": "present"},
        )
        assert frozen["changed"] is True
        return frozen["triggers"]


def freeze_triggers(path) -> dict:
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name").fetchall()
    return {name: text for name, text in found if name.startswith(PREFIX)}


def back(path, target: dict, check: bool = False, **params) -> dict:
    with sqlite_client(path, check) as file, Client(target, check_mode=check) as client:
        return replay_back(file, client, params, deadline_seconds=30, check_mode=check)


def compared(path, target: dict) -> dict:
    params = dict({name: spec.get("default") for name, spec in COMPARE_OPTIONS.items()}, tables=TABLES, column_types=DATES)
    with sqlite_client(path) as file, Client(target) as client:
        return run_compare(file, client, params)


def file_digest(path) -> str:
    """Every row of every table of the file (and its schema), as one digest."""
    digest = hashlib.sha256()
    with sqlite3.connect(path) as conn:
        for name, text in conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall():
            digest.update(f"{name}:{text}".encode())
            if text and text.startswith("CREATE TABLE"):
                quoted = '"' + name.replace('"', '""') + '"'
                for row in conn.execute(f"SELECT * FROM {quoted} ORDER BY 1"):  # noqa: S608 (the file's own names)
                    digest.update(repr(row).encode())
    return digest.hexdigest()


def write_on_target(target: dict) -> int:
    """What the application does on PostgreSQL after the cutover; returns the change rows it made."""
    with connect(target) as conn:
        conn.execute(
            "INSERT INTO virtual_machines SELECT 90001, vcenter_id, host_id, datastore_id, 'vm-new', "
            "'ffffffff-4000-8000-000000090001', 'poweredOn', 2, 4096, 40.5, NULL, NULL, '2026-12-05 07:00:00+00', "
            "'2026-12-05 07:00:00.25+00' FROM virtual_machines WHERE id = 1"
        )
        conn.execute("UPDATE virtual_machines SET power_state = 'suspended', num_cpu = num_cpu + 1 WHERE id = 2")
        conn.execute("UPDATE virtual_machines SET updated_at = '2026-12-05 09:30:01.125+02' WHERE id = 3")
        conn.execute("UPDATE virtual_machines SET name = name WHERE id = 4")  # changes nothing: still a change row
        conn.execute("DELETE FROM virtual_machines WHERE id = 5")
        conn.execute("UPDATE virtual_machines SET id = 90002 WHERE id = 6")  # the key moves: the old one must go
        conn.execute("UPDATE virtual_machines SET vcenter_id = (vcenter_id % 20) + 1 WHERE id = 7")  # another partition, if partitioned
        conn.execute("UPDATE vcenters SET last_sync_at = '2026-12-05 07:10:00+00' WHERE id = 1")
        conn.execute(
            "INSERT INTO events VALUES (3, '2026-12-05', '2026-12-05 07:08:09.5', true, 0.1, %s, %s)",
            (json.dumps({"b": [1, 2]}), b"\x01\x02"),
        )
        conn.execute("UPDATE events SET flag = true, amount = 99.75, day = '2027-01-01' WHERE id = 2")
        conn.execute("DELETE FROM events WHERE id = 1")
        hostile = sql.Identifier(HOSTILE)
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, 3)").format(hostile), ("q\"u'o;te",))
        conn.execute(sql.SQL('UPDATE {} SET "va;lue" = 20 WHERE "k""ey" = %s').format(hostile), ("x;y",))
        conn.execute(sql.SQL('DELETE FROM {} WHERE "k""ey" = %s').format(hostile), ("a'b\"c",))
        return conn.execute("SELECT count(*) FROM zdm_reverse_changes").fetchone()[0]


def assert_way_back(path, target: dict, partitioned: bool = False) -> None:
    frozen = cut_over(path, target)
    assert freeze_triggers(path) == frozen
    written = write_on_target(target)
    # 14 statements, one row each; an UPDATE moving a row to another partition is recorded as the
    # DELETE and INSERT PostgreSQL turns it into
    assert written == 14 or (partitioned and written == 15)

    before = file_digest(path)
    planned = back(path, target, check=True)
    assert planned["changed"] is True and planned["pending_changes"] == written
    assert file_digest(path) == before  # check mode wrote nothing
    assert compared(path, target)["equal"] is False  # the comparison can tell the writes apart

    done = back(path, target)
    assert done["changed"] is True and done["replayed_changes"] == written and done["backlog"] == 0, done
    assert done["freeze_triggers_kept"] == sorted(frozen)
    result = compared(path, target)
    assert result["equal"] is True, result.get("msg")
    assert freeze_triggers(path) == frozen  # still frozen, with the very same triggers
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="read-only"):
        conn.execute("DELETE FROM virtual_machines WHERE id = 8")
    with sqlite3.connect(path) as conn:
        stamps = dict(conn.execute("SELECT id, updated_at FROM virtual_machines WHERE id IN (3, 90001)").fetchall())
        events = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        assert conn.execute("SELECT count(*) FROM virtual_machines WHERE id IN (5, 6)").fetchone()[0] == 0
        assert conn.execute("SELECT last_sync_at FROM vcenters WHERE id = 1").fetchone()[0] == "2026-12-05 07:10:00"
        # the file's own capture recorded the replayed writes (a later cutover replays them idempotently)
        assert conn.execute("SELECT count(*) FROM zdm_changes").fetchone()[0] > 0
    assert stamps == {3: "2026-12-05 07:30:01.125", 90001: "2026-12-05 07:00:00.25"}  # UTC, a fraction only when there is one
    assert events == [
        (2, "2027-01-01", "2026-02-03 04:05:06", 1, 99.75, "[]", None),
        (3, "2026-12-05", "2026-12-05 07:08:09.5", 1, 0.1, '{"b": [1, 2]}', b"\x01\x02"),
    ]

    again = back(path, target)
    assert again["changed"] is False and again["replayed_changes"] == 0
    assert freeze_triggers(path) == frozen


def test_writes_on_the_target_come_back_into_the_frozen_file(app, green_db):
    assert_way_back(app, green_db)


def test_the_way_back_from_hash_partitioned_tables(app, green_db):
    partition_virtual_machines(green_db)
    assert_way_back(app, green_db, partitioned=True)
    with connect(green_db) as conn:
        assert conn.execute("SELECT count(DISTINCT tableoid) FROM virtual_machines").fetchone()[0] > 1


def test_the_reverse_capture_is_idempotent_check_mode_changes_nothing_and_absent_removes_it(app, green_db):
    params = dict({name: spec.get("default") for name, spec in COPY_OPTIONS.items()}, column_types=DATES)
    with sqlite_client(app) as source, Client(green_db) as client:
        run_copy(source, client, params, False)
    keys = {"virtual_machines": ["id"], HOSTILE: ['k"ey']}
    with Client(green_db, check_mode=True) as client:
        planned = ensure_target_capture(client, "public", keys)
    assert planned["changed"] is True and sorted(planned["diff"]["after"]["triggers"]) == sorted(f"public.{t}" for t in keys)
    with connect(green_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'zdm_reverse_changes'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('zdm_reverse_changes')").fetchone()[0] is None
    with Client(green_db) as client:
        assert ensure_target_capture(client, "public", keys)["changed"] is True
    with Client(green_db) as client:  # a client of its own: its audit list holds this run's statements only
        again = ensure_target_capture(client, "public", keys)
        assert again["changed"] is False and again["queries"] == []
        wider = ensure_target_capture(client, "public", dict(keys, events=["id"]))
        assert wider["changed"] is True and "public.events" in wider["diff"]["after"]["triggers"]
        gone = ensure_target_capture(client, "public", {}, state="absent")
        assert gone["changed"] is True and gone["state"] == "absent"
        assert ensure_target_capture(client, "public", {}, state="absent")["changed"] is False
    with connect(green_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'zdm_reverse_changes'").fetchone()[0] == 0
        conn.execute("UPDATE virtual_machines SET num_cpu = 1 WHERE id = 1")  # the application writes on, uncaptured


def test_a_target_without_the_reverse_capture_is_refused_naming_the_fix(app, green_db):
    params = dict({name: spec.get("default") for name, spec in COPY_OPTIONS.items()}, column_types=DATES)
    with sqlite_client(app) as source, Client(green_db) as client:
        run_copy(source, client, params, False)
    with connect(green_db) as conn:
        conn.execute("UPDATE virtual_machines SET num_cpu = 64 WHERE id = 1")
    before = file_digest(app)
    with pytest.raises(ModuleError, match=r"no reverse change table public\.zdm_reverse_changes.*ensure_target_capture"):
        back(app, green_db)
    assert file_digest(app) == before


def test_a_value_the_file_cannot_take_refuses_the_whole_replay(app, green_db):
    cut_over(app, green_db)
    with connect(green_db) as conn:
        conn.execute("UPDATE virtual_machines SET num_cpu = 3 WHERE id = 10")
        conn.execute("ALTER TABLE events ALTER COLUMN day TYPE text")
        conn.execute("UPDATE events SET day = 'not a date' WHERE id = 1")
    before = file_digest(app)
    with pytest.raises(ModuleError, match=r"table 'events', key \[1\], column 'day'.*not a date"):
        back(app, green_db)
    assert file_digest(app) == before  # nothing of it kept, the freeze untouched
    with connect(green_db) as conn:
        conn.execute("UPDATE events SET day = '2026-03-04' WHERE id = 1")
    done = back(app, green_db)
    assert done["replayed_changes"] == 3 and done["tables"]["virtual_machines"]["inserted"] == 1
    with sqlite3.connect(app) as conn:
        assert conn.execute("SELECT day FROM events WHERE id = 1").fetchone()[0] == "2026-03-04"
