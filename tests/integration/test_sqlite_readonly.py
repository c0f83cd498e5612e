"""sqlite_readonly on real SQLite files in a tmp dir (SQLite is a library: no lab, no lock): a
writer thread writes all the time while the toggle goes on and off - no write fails before it,
every write after it fails with the message naming the migration, every acknowledged write exists
and is captured once, writes succeed again after `absent`; the write window measured; idempotence,
check and diff mode, a hostile table name, and the bad input - a missing, corrupt or locked file."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.readonly import ensure_readonly
from tests.lab import run_module
from tests.sqlite_files import corrupt_copy, write_lock

MODULE = "zerodowntime.migration.sqlite_readonly"
MIGRATION = "vminer-to-pg"
HOSTILE = 'vm "tags"; DROP TABLE t; --'
QUOTED = '"' + HOSTILE.replace('"', '""') + '"'
log = logging.getLogger(__name__)


def readonly(path, **args):
    check = args.pop("_check", False)
    diff = args.pop("_diff", False)
    if args.get("state", "present") == "present":
        args.setdefault("migration", MIGRATION)
    return run_module(MODULE, {"path": str(path), **args}, check=check, diff=diff)[1]


def capture(path, **args):
    return run_module("zerodowntime.migration.sqlite_capture", {"path": str(path), **args})[1]


def schema(path) -> list:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    conn.close()
    return rows


def triggers(path) -> list[str]:
    return [name for kind, name, _sql in schema(path) if kind == "trigger" and name.startswith("zdm_readonly__")]


@pytest.fixture()
def app(tmp_path):
    """The application's file: two tables (one with a hostile name), in WAL mode like a live file."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute(f"CREATE TABLE {QUOTED} (id INTEGER PRIMARY KEY, tag TEXT)")
    conn.commit()
    conn.close()
    return path


class Writer:
    """The application: one connection (5 s busy timeout), one autocommit write after another - an
    insert, then an update and every third write a delete of an earlier row, alternating the two
    tables. Every attempt is logged: (start, end, table, id, op, error or None, rows changed)."""

    def __init__(self, path):
        self.path = str(path)
        self.attempts: list[tuple] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
        n = 0
        while not self.stopping.is_set():
            n += 1
            table = "t" if n % 2 else QUOTED
            name = "t" if n % 2 else HOSTILE
            # deletes and updates name a key this table's insert branch wrote (n - 8, n - 4: same table, n % 3 == 1)
            if n % 3 == 0 and n > 9:
                op, key, statement, args = "D", n - 8, f"DELETE FROM {table} WHERE id = ?", (n - 8,)  # noqa: S608 (the test's own names)
            elif n % 3 == 2 and n > 6:
                op, key, statement, args = "U", n - 4, f"UPDATE {table} SET id = id WHERE id = ?", (n - 4,)  # noqa: S608
            else:
                op, key, statement, args = "I", n, f"INSERT INTO {table} VALUES (?, ?)", (n, n)  # noqa: S608
            start = time.monotonic()
            try:
                changed = conn.execute(statement, args).rowcount
                error = None
            except sqlite3.Error as exc:
                changed, error = 0, str(exc)
            self.attempts.append((start, time.monotonic(), name, key, op, error, changed))
            time.sleep(0.002)
        conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=30)


def accepted(attempt) -> bool:
    """Committed and changed a row (an update of a row whose insert was refused changes none, and fires no trigger)."""
    return attempt[5] is None and attempt[6] > 0


def window(attempts, before: float) -> tuple[float, float]:
    """(first refused write's end, first accepted write's end after `before`) - the refusal window."""
    first_refused = next(a[1] for a in attempts if a[5])
    reopened = next(a[1] for a in attempts if accepted(a) and a[1] > first_refused and a[1] > before)
    return first_refused, reopened


def test_writes_refused_from_the_toggle_to_absent_and_none_lost(app):
    """Capture first; the writer runs; toggle on, leave a gap, toggle off. No write fails before the
    toggle; from it every write fails with the migration's message until absent; every acknowledged
    write is in the table and in the change table exactly once, in order; the window is what the two
    runs cost plus the gap."""
    assert not capture(app)["failed"]
    gap = 1.0
    with Writer(app) as writer:
        time.sleep(0.5)
        on_start = time.monotonic()
        on = readonly(app, target_description="PostgreSQL vminer on green")
        on_end = time.monotonic()
        time.sleep(gap)
        refused_seen = len(writer.attempts)
        off_start = time.monotonic()
        off = readonly(app, state="absent")
        off_end = time.monotonic()
        time.sleep(0.5)
    assert not on["failed"], on
    assert not off["failed"], off
    assert on["changed"] is True and off["changed"] is True
    assert on["tables"] == sorted(["t", HOSTILE]) and len(on["triggers"]) == 6 and on["readonly_since"]
    assert off["tables"] == [] and off["readonly_since"] is None and triggers(app) == []

    attempts = writer.attempts
    errors = [a for a in attempts if a[5]]
    assert errors, "no write was refused"
    expected = (
        f"zerodowntime.migration {MIGRATION}: this database is read-only during the cutover; "
        "the application moves to PostgreSQL vminer on green"
    )
    assert {a[5] for a in errors} == {expected}
    assert all(end >= on_start for _s, end, *_r in errors)  # no write failed before the toggle began
    # from the first refused write until absent began, nothing was accepted
    first_refused, reopened = window(attempts, off_start)
    assert not [a for a in attempts if accepted(a) and first_refused < a[0] and a[1] < off_start]
    assert len([a for a in attempts[:refused_seen] if a[0] > on_end and a[5]]) > 50  # the gap: writes kept coming, all refused
    assert [a for a in attempts if a[0] > off_end and a[5]] == []  # writable again
    assert len([a for a in attempts if a[0] > off_end]) > 20

    window_ms = (reopened - first_refused) * 1000
    log.warning(
        "sqlite_readonly write window: %.0f ms (gap %.0f ms, present run %.0f ms, absent run %.0f ms, lock held %.1f / %.1f ms)",
        window_ms,
        gap * 1000,
        (on_end - on_start) * 1000,
        (off_end - off_start) * 1000,
        on["lock_held_ms"],
        off["lock_held_ms"],
    )
    # refusal began inside the present run and ended inside the absent run (plus one write's time)
    assert gap * 1000 <= window_ms <= ((on_end - on_start) + gap + (off_end - off_start)) * 1000 + 100

    # every acknowledged write is in the file; a refused insert is not; the capture recorded each once
    conn = sqlite3.connect(app)
    rows = {"t": {r[0] for r in conn.execute("SELECT id FROM t")}, HOSTILE: {r[0] for r in conn.execute(f"SELECT id FROM {QUOTED}")}}  # noqa: S608
    changes = conn.execute("SELECT table_name, pk, op FROM zdm_changes ORDER BY seq").fetchall()
    conn.close()
    expected_rows = {"t": set(), HOSTILE: set()}
    for _s, _e, name, key, op, error, _changed in attempts:
        if error is None and op == "I":
            expected_rows[name].add(key)
        if error is None and op == "D":
            expected_rows[name].discard(key)
    assert rows == expected_rows
    acknowledged = [(name, key, op) for _s, _e, name, key, op, error, changed in attempts if error is None and changed]
    assert [(name, json.loads(pk)[0], op) for name, pk, op in changes] == acknowledged


def test_window_in_process_is_the_gap_plus_the_toggle_cost(app):
    """The same through ensure_readonly in this process (no ansible-playbook start-up): the
    window is the gap plus the two write transactions, within one write's latency."""
    gap = 0.2
    params = {
        "path": str(app),
        "busy_timeout": 5.0,
        "migration": MIGRATION,
        "target_description": None,
        "tables": None,
        "change_table": "zdm_changes",
    }
    with Writer(app) as writer:
        time.sleep(0.3)
        client = Client(params)
        try:
            on_start = time.monotonic()
            on = ensure_readonly(client, dict(params, state="present"))
            on_end = time.monotonic()
            time.sleep(gap)
            off_start = time.monotonic()
            off = ensure_readonly(client, dict(params, state="absent"))
            off_end = time.monotonic()
        finally:
            client.close()
        time.sleep(0.3)
    first_refused, reopened = window(writer.attempts, off_start)
    window_ms = (reopened - first_refused) * 1000
    cost_ms = ((on_end - on_start) + (off_end - off_start)) * 1000
    log.warning("sqlite_readonly in-process window: %.1f ms (gap %.0f ms, toggle+untoggle %.1f ms)", window_ms, gap * 1000, cost_ms)
    assert on["changed"] and off["changed"]
    assert gap * 1000 - 10 <= window_ms <= gap * 1000 + cost_ms + 50  # 50 ms: the writer's pause and one write


def test_check_mode_then_present_then_idempotent_with_the_diff(app):
    before = schema(app)
    checked = readonly(app, _check=True, _diff=True)
    assert not checked["failed"], checked
    assert checked["changed"] is True and schema(app) == before
    assert checked["diff"]["before"] == {}
    assert sorted(checked["diff"]["after"]["triggers"]) == sorted(
        f"zdm_readonly__{t}__{op}" for t in ("t", HOSTILE) for op in ("insert", "update", "delete")
    )

    done = readonly(app, _diff=True)
    assert done["changed"] is True
    assert done["diff"]["after"]["triggers"] == checked["diff"]["after"]["triggers"]  # the SQL check mode showed is what ran
    installed = schema(app)
    again = readonly(app, _diff=True)
    assert again["changed"] is False and again["queries"] == [], again
    assert again["readonly_since"] == done["readonly_since"]
    assert schema(app) == installed

    off_checked = readonly(app, state="absent", _check=True)
    assert off_checked["changed"] is True and schema(app) == installed
    off = readonly(app, state="absent", _diff=True)
    assert off["changed"] is True and off["diff"]["after"] == {} and len(off["diff"]["before"]["triggers"]) == 6
    assert schema(app) == before
    assert readonly(app, state="absent")["changed"] is False


def test_hostile_names_refuse_writes_and_a_changed_message_or_table_list_replaces_the_triggers(app):
    quoted_migration = 'it\'s "m"; DROP TABLE t; --'
    conn = sqlite3.connect(app, isolation_level=None)
    conn.execute("INSERT INTO t VALUES (1, 1)")  # an UPDATE or DELETE matching no row fires no trigger: give them one
    conn.close()
    assert not readonly(app, migration=quoted_migration)["failed"]
    conn = sqlite3.connect(app, isolation_level=None)
    for statement in (
        f"INSERT INTO {QUOTED} VALUES (1, 'x')",  # noqa: S608 (the test's own name)
        "INSERT INTO t VALUES (5, 1)",
        "UPDATE t SET v = 2",
        "DELETE FROM t",
        "INSERT OR REPLACE INTO t VALUES (1, 1)",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="read-only during the cutover") as refused:
            conn.execute(statement)
        assert quoted_migration in str(refused.value)
    conn.close()
    narrowed = readonly(app, tables=["t"], _diff=True)
    assert narrowed["changed"] is True and narrowed["tables"] == ["t"]
    conn = sqlite3.connect(app, isolation_level=None)
    conn.execute(f"INSERT INTO {QUOTED} VALUES (2, 'y')")  # noqa: S608 - writable again: no longer in tables
    with pytest.raises(sqlite3.IntegrityError, match=MIGRATION):
        conn.execute("INSERT INTO t VALUES (2, 2)")
    conn.close()


def test_the_change_table_and_views_are_never_made_read_only(app):
    assert not capture(app)["failed"]
    conn = sqlite3.connect(app, isolation_level=None)
    conn.execute("CREATE VIEW t_view AS SELECT * FROM t")
    conn.execute("CREATE VIRTUAL TABLE notes USING fts5(body)")
    conn.close()
    change = readonly(app, tables=["t", "zdm_changes"])
    assert change["failed"] is True and "change table" in change["msg"]
    view = readonly(app, tables=["t_view"])
    assert view["failed"] is True and "'t_view' is a view" in view["msg"]
    internal = readonly(app, tables=["sqlite_sequence"])
    assert internal["failed"] is True and "internal" in internal["msg"]
    everything = readonly(app)
    assert not everything["failed"], everything
    assert everything["tables"] == sorted(["t", HOSTILE])
    assert any("'notes' stays writable" in warning for warning in everything.get("warnings", []))
    conn = sqlite3.connect(app, isolation_level=None)
    conn.execute("DELETE FROM zdm_changes")  # the replay may still consume change rows
    conn.close()


def test_missing_migration_and_missing_table_are_named(app):
    before = schema(app)
    no_name = run_module(MODULE, {"path": str(app)})[1]
    assert no_name["failed"] is True and "migration" in no_name["msg"]
    missing = readonly(app, tables=["t", "no_such_table"])
    assert missing["failed"] is True and "'no_such_table' does not exist" in missing["msg"]
    assert schema(app) == before


def test_missing_file_is_named_and_not_created(tmp_path):
    path = tmp_path / "nowhere.db"
    failed = readonly(path)
    assert failed["failed"] is True and str(path) in failed["msg"] and "does not exist" in failed["msg"]
    assert not path.exists()


def test_a_corrupt_file_is_named(tmp_path, app):
    path = tmp_path / "corrupt.db"
    data = corrupt_copy(app, path)
    failed = readonly(path)
    assert failed["failed"] is True and str(path) in failed["msg"] and "corrupt" in failed["msg"]
    assert path.read_bytes() == data


def test_a_file_locked_past_busy_timeout_names_the_lock_and_changes_nothing(app):
    before = schema(app)
    with write_lock(app, "INSERT INTO t VALUES (100, 1)"):
        started = time.monotonic()
        failed = readonly(app, busy_timeout=1.5)
        waited = time.monotonic() - started
    assert failed["failed"] is True and failed["changed"] is False
    assert "locked" in failed["msg"] and "busy_timeout=1.5" in failed["msg"] and str(app) in failed["msg"]
    assert "End that connection's long transaction" in failed["msg"]
    assert waited >= 1.5
    assert schema(app) == before


def test_a_write_transaction_ending_within_busy_timeout_commits_before_the_toggle(app):
    """The application's long write commits (and is captured) before the toggle, which waited for it."""
    assert not capture(app)["failed"]
    # committed after ansible-playbook's start-up (a few seconds), so the module finds it held
    with write_lock(app, "INSERT INTO t VALUES (200, 1)", release_after=6.0, end="COMMIT"):
        done = readonly(app, busy_timeout=30)
    assert not done["failed"], done
    assert done["lock_wait_ms"] >= 200, done  # it waited for the application's transaction
    conn = sqlite3.connect(app)
    assert conn.execute("SELECT v FROM t WHERE id = 200").fetchone() == (1,)
    assert conn.execute("SELECT table_name, pk, op FROM zdm_changes").fetchall() == [("t", "[200]", "I")]
    conn.close()


def test_a_transaction_that_read_before_the_toggle_cannot_commit_a_write_after_it(app):
    """WAL: a deferred transaction whose snapshot predates the toggle cannot upgrade to a writer."""
    reader = sqlite3.connect(app, isolation_level=None, timeout=1)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    assert not readonly(app)["failed"]
    with pytest.raises(sqlite3.OperationalError, match=r"locked|busy"):
        reader.execute("INSERT INTO t VALUES (300, 1)")
    reader.execute("ROLLBACK")
    with pytest.raises(sqlite3.IntegrityError, match=MIGRATION):
        reader.execute("INSERT INTO t VALUES (300, 1)")
    reader.close()
