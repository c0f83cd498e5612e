"""sqlite_capture run on real SQLite files in a tmp dir (SQLite is a library: no
lab, no lock): triggers installed and removed while the vMiner workload writes (no writer error),
exactly one change row per acknowledged write in commit order, idempotence, check and diff mode,
and the bad input - a missing, foreign, corrupt or locked file, a table without a key, a missing
table, a hostile name."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from tests.lab import run_module, vminer_sample
from tests.sqlite_files import corrupt_copy, write_lock

MODULE = "zerodowntime.migration.sqlite_capture"
VMINER = ["vcenters", "hosts", "datastores", "virtual_machines"]
HOSTILE = 'vm "tags"; DROP TABLE t; --'
sample = vminer_sample()


def capture(path, **args):
    check = args.pop("_check", False)
    diff = args.pop("_diff", False)
    return run_module(MODULE, {"path": str(path), **args}, check=check, diff=diff)[1]


def compact(key: list) -> str:
    """A key as SQLite's json_array writes it."""
    return json.dumps(key, separators=(",", ":"))


def schema(path) -> list:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()


def changes(path, table="zdm_changes") -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f'SELECT seq, table_name, pk, old_pk, op FROM "{table}" ORDER BY seq').fetchall()  # noqa: S608 (test's own name)


def journal_mode(path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


@pytest.fixture()
def vminer(tmp_path):
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=5000, vcenters=50)
    return path


@pytest.fixture()
def plain(tmp_path):
    """A file in the default rollback-journal mode, with a composite key and a hostile table name."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute(f'CREATE TABLE "{HOSTILE.replace(chr(34), chr(34) * 2)}" (vm_id INTEGER, tag TEXT, PRIMARY KEY (tag, vm_id))')
    conn.close()
    return path


def test_check_mode_then_present_then_idempotent_with_the_diff(plain):
    before = schema(plain)
    checked = capture(plain, _check=True, _diff=True)
    assert not checked["failed"], checked
    assert checked["changed"] is True
    assert schema(plain) == before
    assert journal_mode(plain) == "delete"
    assert checked["diff"]["before"]["journal_mode"] == "delete" and checked["diff"]["after"]["journal_mode"] == "wal"
    assert len(checked["diff"]["after"]["triggers"]) == 6
    assert checked["diff"]["before"] == {"journal_mode": "delete"}

    done = capture(plain, _diff=True)
    assert not done["failed"], done
    assert done["changed"] is True
    assert sorted(done["diff"]["after"]["triggers"]) == sorted(checked["diff"]["after"]["triggers"])
    assert done["diff"]["after"]["triggers"] == checked["diff"]["after"]["triggers"]  # the SQL check mode showed is what ran
    assert journal_mode(plain) == "wal"
    installed = schema(plain)
    assert len([row for row in installed if row[0] == "trigger"]) == 6

    again = capture(plain, _diff=True)
    assert again["changed"] is False, again
    assert again["queries"] == []
    assert schema(plain) == installed
    assert again["pending_changes"] == 0


def test_hostile_table_name_is_one_quoted_identifier(plain):
    assert not capture(plain)["failed"]
    with sqlite3.connect(plain) as conn:
        quoted = '"' + HOSTILE.replace('"', '""') + '"'
        conn.execute(f"INSERT INTO {quoted} VALUES (7, 'it''s')")  # noqa: S608 (the test's own name)
        conn.execute(f"UPDATE {quoted} SET vm_id = 8 WHERE vm_id = 7")  # noqa: S608
        conn.execute("INSERT INTO t VALUES (1, 'x')")
    conn.close()
    rows = changes(plain)
    assert [row[1:] for row in rows] == [
        (HOSTILE, compact(["it's", 7]), None, "I"),
        (HOSTILE, compact(["it's", 8]), compact(["it's", 7]), "U"),
        ("t", "[1]", None, "I"),
    ]
    assert {name for kind, name, _sql in schema(plain) if kind == "table"} == {"t", HOSTILE, "zdm_changes", "sqlite_sequence"}


def test_narrowing_tables_removes_the_other_triggers_and_diff_names_them(plain):
    capture(plain)
    narrowed = capture(plain, tables=["t"], _diff=True)
    assert narrowed["changed"] is True
    removed = set(narrowed["diff"]["before"]["triggers"]) - set(narrowed["diff"]["after"]["triggers"])
    assert removed == {f"zdm_changes__{HOSTILE}__{op}" for op in ("insert", "update", "delete")}
    assert capture(plain, tables=["t"])["changed"] is False


def test_every_write_gives_one_change_row_in_order_while_the_capture_comes_and_goes(vminer):
    """The workload writes as fast as it can (each write its own transaction, 5 s busy timeout)
    while the capture is installed, while it runs, and while it is removed: no write fails, and
    the change rows are exactly the acknowledged writes after the triggers committed, in order."""
    workload = sample.Workload(str(vminer), rate=0, log=True).start()
    try:
        time.sleep(0.5)
        installed = capture(vminer, tables=VMINER)
        assert not installed["failed"], installed
        assert installed["changed"] is True
        time.sleep(1.0)
        assert capture(vminer, tables=VMINER)["changed"] is False  # idempotent under writes
        time.sleep(0.5)
        refused = capture(vminer, state="absent")
        assert refused["failed"] is True
        assert "force" in refused["msg"] and "zdm_changes" in refused["msg"]
        assert refused["changed"] is False
        assert len([row for row in schema(vminer) if row[0] == "trigger"]) == 12  # nothing removed
        time.sleep(0.5)
        # stop, then compare before removing: every logged write after the first change row
        workload.stopping.set()
        workload.thread.join(timeout=30)
        log_at_stop = list(workload.log)
        rows = changes(vminer)
    finally:
        summary = workload.stop()
    assert summary["errors"] == 0, summary["error_messages"]
    assert summary["acknowledged"] > 500, summary
    assert summary["max_latency_ms"] < 5000, summary  # no write waited out its busy timeout
    recorded = [(table, json.loads(pk)[0], op) for _seq, table, pk, _old, op in rows]
    assert len(recorded) > 100
    # the change rows are a suffix of the acknowledged writes: none lost, none twice, same order
    assert recorded == log_at_stop[len(log_at_stop) - len(recorded) :]
    sequence = [row[0] for row in rows]
    assert sequence == sorted(set(sequence))
    assert recorded[0] != log_at_stop[0]  # writes before the install were not recorded (the workload ran 0.5 s first)

    # removal with force while writes go on again: no writer error, the file is as before the capture
    again = sample.Workload(str(vminer), rate=0).start()
    try:
        time.sleep(0.3)
        removed = capture(vminer, state="absent", force=True, _diff=True)
        time.sleep(0.3)
    finally:
        after = again.stop()
    assert not removed["failed"], removed
    assert removed["changed"] is True
    assert len(removed["diff"]["before"]["triggers"]) == 12 and removed["diff"]["after"] == {"journal_mode": "wal"}
    assert after["errors"] == 0, after["error_messages"]
    assert [row for row in schema(vminer) if row[0] == "trigger" or row[1] == "zdm_changes"] == []
    assert capture(vminer, state="absent")["changed"] is False


def test_sequence_is_monotonic_and_never_reused_after_rows_are_replayed(plain):
    capture(plain)
    with sqlite3.connect(plain) as conn:
        for i in range(5):
            conn.execute("INSERT INTO t VALUES (?, 'x')", (i,))
        last = conn.execute("SELECT max(seq) FROM zdm_changes").fetchone()[0]
        conn.execute("DELETE FROM zdm_changes")  # a replay consumed them
        conn.execute("DELETE FROM t WHERE id = 0")
        assert conn.execute("SELECT seq, op FROM zdm_changes").fetchall() == [(last + 1, "D")]
    conn.close()


def test_absent_removes_an_empty_capture_without_force_and_check_mode_keeps_it(plain):
    capture(plain)
    installed = schema(plain)
    checked = capture(plain, state="absent", _check=True)
    assert checked["changed"] is True and schema(plain) == installed
    removed = capture(plain, state="absent")
    assert removed["changed"] is True
    assert {name for _kind, name, _sql in schema(plain)} == {"t", HOSTILE, f"sqlite_autoindex_{HOSTILE}_1", "sqlite_sequence"}


def test_absent_with_change_rows_refuses_without_force_and_drops_nothing(plain):
    capture(plain)
    with sqlite3.connect(plain) as conn:
        conn.execute("INSERT INTO t VALUES (1, 'x')")
    conn.close()
    installed = schema(plain)
    refused = capture(plain, state="absent")
    assert refused["failed"] is True and refused["changed"] is False
    assert "1 change rows" in refused["msg"] and "force: true" in refused["msg"]
    assert schema(plain) == installed and len(changes(plain)) == 1
    assert capture(plain, state="absent", force=True)["changed"] is True


def test_missing_file_is_named_and_not_created(tmp_path):
    path = tmp_path / "nowhere.db"
    failed = capture(path)
    assert failed["failed"] is True
    assert str(path) in failed["msg"] and "does not exist" in failed["msg"]
    assert not path.exists()


def test_a_file_that_is_not_sqlite_is_named(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some text, long enough to have a header\n" * 10)
    failed = capture(path)
    assert failed["failed"] is True
    assert str(path) in failed["msg"] and "not an SQLite database" in failed["msg"]
    assert path.read_text().startswith("just some text")


def test_a_corrupt_file_is_named(tmp_path, plain):
    path = tmp_path / "corrupt.db"
    corrupt_copy(plain, path)
    failed = capture(path)
    assert failed["failed"] is True
    assert str(path) in failed["msg"] and "corrupt" in failed["msg"]


def test_a_file_locked_past_busy_timeout_names_the_lock_and_the_fix(vminer):
    before = schema(vminer)
    with write_lock(vminer):
        started = time.monotonic()
        failed = capture(vminer, busy_timeout=1.5)
        waited = time.monotonic() - started
    assert failed["failed"] is True
    assert "locked" in failed["msg"] and "busy_timeout=1.5" in failed["msg"] and str(vminer) in failed["msg"]
    assert "End that connection's long transaction" in failed["msg"]
    assert waited >= 1.5
    assert schema(vminer) == before


def test_a_lock_released_within_busy_timeout_is_waited_for(vminer):
    with write_lock(vminer, release_after=1.0):
        done = capture(vminer, busy_timeout=10)
    assert not done["failed"], done
    assert done["changed"] is True


def test_a_table_without_a_key_is_refused_by_name_then_captured_by_key_columns(plain):
    with sqlite3.connect(plain) as conn:
        conn.execute("CREATE TABLE audit (at TEXT, what TEXT)")
    conn.close()
    before = schema(plain)
    refused = capture(plain)
    assert refused["failed"] is True
    assert "'audit' has no primary key" in refused["msg"] and "key_columns" in refused["msg"]
    assert schema(plain) == before and journal_mode(plain) == "delete"  # nothing changed, not even the journal mode
    unknown = capture(plain, key_columns={"audit": ["when"]})
    assert unknown["failed"] is True and "'when'" in unknown["msg"] and "'at', 'what'" in unknown["msg"]
    done = capture(plain, key_columns={"audit": ["at", "what"]})
    assert not done["failed"], done
    with sqlite3.connect(plain) as conn:
        conn.execute("INSERT INTO audit VALUES ('2026-01-01', 'x')")
    conn.close()
    assert [row[1:] for row in changes(plain)] == [("audit", compact(["2026-01-01", "x"]), None, "I")]


def test_a_missing_table_is_named(plain):
    before = schema(plain)
    failed = capture(plain, tables=["t", "no_such_table"])
    assert failed["failed"] is True
    assert "'no_such_table' does not exist" in failed["msg"]
    assert schema(plain) == before


def test_a_change_table_name_taken_by_an_application_table_is_refused(plain):
    before = schema(plain)
    failed = capture(plain, change_table="t", tables=[HOSTILE])
    assert failed["failed"] is True
    assert "'t'" in failed["msg"] and "not a change table" in failed["msg"]
    assert schema(plain) == before and journal_mode(plain) == "delete"  # refused before the journal mode too


def test_a_blob_key_is_recorded_and_the_application_write_succeeds(plain):
    """SQLite lets any column hold a BLOB (a UUID as 16 bytes); json_array refuses one, which would
    fail the application's own write inside the trigger. The key is recorded as {"blob": HEX}."""
    with sqlite3.connect(plain) as conn:
        conn.execute("CREATE TABLE devices (id BLOB PRIMARY KEY, name TEXT)")
    conn.close()
    assert not capture(plain, tables=["devices"])["failed"]
    key = bytes.fromhex("00112233445566778899aabbccddeeff")
    with sqlite3.connect(plain) as conn:
        conn.execute("INSERT INTO devices VALUES (?, 'sensor')", (key,))
        conn.execute("UPDATE devices SET id = ? WHERE id = ?", (b"\x01", key))
        conn.execute("INSERT INTO devices VALUES ('text-key', 'other')")
    conn.close()
    blob = compact([{"blob": key.hex().upper()}])
    assert changes(plain) == [
        (1, "devices", blob, None, "I"),
        (2, "devices", compact([{"blob": "01"}]), blob, "U"),
        (3, "devices", compact(["text-key"]), None, "I"),
    ]


def test_views_and_virtual_tables_are_refused_by_name_and_left_out_of_all_tables(plain):
    with sqlite3.connect(plain) as conn:
        conn.execute("CREATE VIEW t_view AS SELECT * FROM t")
        conn.execute("CREATE VIRTUAL TABLE notes USING fts5(body)")
    conn.close()
    view = capture(plain, tables=["t", "t_view"])
    assert view["failed"] is True and "'t_view' is a view" in view["msg"]
    virtual = capture(plain, tables=["notes"])
    assert virtual["failed"] is True and "'notes' is a virtual table" in virtual["msg"]
    shadow = capture(plain, tables=["notes_data"])
    assert shadow["failed"] is True and "'notes_data' is a virtual table's shadow table" in shadow["msg"]
    everything = capture(plain, _diff=True)
    assert not everything["failed"], everything
    captured = {name.split("__")[1] for name in everything["diff"]["after"]["triggers"]}
    assert captured == {"t", HOSTILE}
