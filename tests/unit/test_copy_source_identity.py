"""table_copy's checkpoints belong to one source: the pure check (source_mismatch), what a run
does with it (reconcile_source: record, resume, refuse naming tables and sources, restart), and
the identity an SQLite file's capture records at install time (local files, no service)."""

from __future__ import annotations

import sqlite3

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.engine import (
    CopyError,
    describe_source,
    reconcile_source,
    source_mismatch,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import COPY_OPTIONS
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.state import StateStore
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import capture_id, ensure_capture, identity_view
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client as SqliteClient
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import SqliteSource

A = {"path": "/data/a.db", "change_table": "zdm_changes", "capture_id": "aaaa"}
B = {"path": "/data/b.db", "change_table": "zdm_changes", "capture_id": "bbbb"}


def test_the_same_source_is_resumed_also_when_the_capture_went_on_writing():
    assert source_mismatch(A, dict(A), replayed_seq=40, high_seq=40) is None
    assert source_mismatch(A, dict(A), replayed_seq=40, high_seq=90_000) is None  # the application kept writing
    assert source_mismatch(A, dict(A), replayed_seq=None, high_seq=0) is None


@pytest.mark.parametrize(
    ("current", "high_seq", "reason"),
    [
        (B, 100, "another file"),
        (dict(A, capture_id="cccc"), 100, "capture is another one"),
        (dict(A, capture_id=None), 100, "capture is another one"),  # the id view is gone: not the capture recorded
        (dict(A, change_table="other"), 100, "change table is another one"),
        (dict(A), 3, "up to 3 only"),  # same names, but the sequence went back: restored or reinstalled
    ],
)
def test_another_source_is_named(current, high_seq, reason):
    assert reason in source_mismatch(A, current, replayed_seq=40, high_seq=high_seq)


def test_a_checkpoint_without_a_recorded_source_is_judged_by_the_sequence_alone():
    assert source_mismatch(None, B, replayed_seq=40, high_seq=40) is None
    assert "up to 0 only" in source_mismatch(None, B, replayed_seq=40, high_seq=0)
    # a capture recorded without an id (installed by an earlier version) that got one since
    assert source_mismatch(dict(A, capture_id=None), A, replayed_seq=40, high_seq=41) is None


def test_describe_source():
    assert describe_source(A) == "/data/a.db (change table 'zdm_changes', capture id aaaa)"
    assert "no capture id" in describe_source(dict(A, capture_id=None))
    assert "not recorded" in describe_source(None)


def store_with(copy_state: dict | None, status: str | None = None) -> StateStore:
    store = StateStore(None, "table_copy", "public", "migration_progress")
    store.status = status
    store.copy = {"tables": {}, "errors": 0, "error_samples": [], **(copy_state or {})}
    return store


CHECKPOINT = {
    "source": A,
    "snapshot_seq": 10,
    "replayed_seq": 40,
    "tables": {"hosts": {"last_key": [900], "rows": 900, "done": False}, "vcenters": {"last_key": [100], "rows": 100, "done": True}},
    "errors": 2,
}


def test_no_checkpoint_records_the_source():
    store = store_with(None)
    outcome = reconcile_source(store, B, high_seq=0, restart=False)
    assert store.copy["source"] == B and outcome["restarted"] == [] and outcome["warnings"] == []


def test_the_same_source_resumes_the_checkpoint():
    store = store_with(dict(CHECKPOINT), status="running")
    outcome = reconcile_source(store, dict(A), high_seq=55, restart=True)  # restart leaves a matching checkpoint alone
    assert outcome["restarted"] == [] and store.copy["tables"]["hosts"]["last_key"] == [900] and store.copy["errors"] == 2
    assert not store.restarting and store.discarded == []


def test_another_source_is_refused_naming_tables_sources_and_the_fix_and_changes_nothing():
    store = store_with(dict(CHECKPOINT), status="running")
    before = dict(store.copy)
    with pytest.raises(CopyError) as refused:
        reconcile_source(store, B, high_seq=500, restart=False)
    message = str(refused.value)
    for part in ("hosts, vcenters", "/data/a.db", "aaaa", "/data/b.db", "bbbb", "restart: true", "nothing was written"):
        assert part in message, message
    assert store.copy == before and store.discarded == []


def test_restart_discards_the_checkpoint_and_names_its_tables():
    store = store_with(dict(CHECKPOINT), status="succeeded")
    outcome = reconcile_source(store, B, high_seq=500, restart=True)
    assert outcome["restarted"] == ["hosts", "vcenters"] == store.discarded
    assert store.copy == {"tables": {}, "errors": 0, "error_samples": [], "source": B}
    # a succeeded phase starts over: its first write is a forced start
    assert store.restarting and store.params("started")["force"] is True
    assert "force" not in store.params("succeeded")


def test_a_checkpoint_of_an_earlier_version_is_adopted_with_a_warning():
    legacy = {key: value for key, value in CHECKPOINT.items() if key != "source"}
    store = store_with(legacy, status="running")
    outcome = reconcile_source(store, A, high_seq=40, restart=False)
    assert store.copy["source"] == A and store.copy["tables"]["hosts"]["rows"] == 900
    assert len(outcome["warnings"]) == 1 and "earlier version" in outcome["warnings"][0]


def test_restart_is_an_option_of_the_module():
    assert COPY_OPTIONS["restart"] == {"type": "bool", "default": False}


# The identity an SQLite file's capture records ------------------------------------------------
def make_file(path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.close()


def install(path, state: str = "present", force: bool = False) -> dict:
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as client:
        return ensure_capture(client, {"change_table": "zdm_changes", "tables": None, "key_columns": None, "state": state, "force": force})


def identity_of(path) -> tuple[dict, int]:
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as client:
        source = SqliteSource(client, "zdm_changes")
        return source.identity(), source.high_seq()


def test_the_capture_id_stays_while_the_application_writes_and_is_new_after_a_reinstall(tmp_path):
    path = tmp_path / "app.db"
    make_file(path)
    first = install(path)
    assert first["changed"] and first["capture"]["capture_id"]
    identity, high = identity_of(path)
    assert identity == {"path": str(path), "change_table": "zdm_changes", "capture_id": first["capture"]["capture_id"]}
    assert high == 0
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(5)])
        conn.execute("DELETE FROM zdm_changes")  # the high-water mark stays
    conn.close()
    again = install(path)
    assert again["changed"] is False and again["queries"] == []
    assert identity_of(path) == (identity, 5)

    install(path, state="absent", force=True)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (identity_view("zdm_changes"),)).fetchone() == (0,)
    conn.close()
    install(path)
    renewed, high = identity_of(path)
    assert renewed["capture_id"] not in (None, identity["capture_id"]) and high == 0
    assert source_mismatch(identity, renewed, replayed_seq=5, high_seq=high) is not None


def test_a_capture_installed_before_ids_gets_one_on_the_next_run(tmp_path):
    path = tmp_path / "app.db"
    make_file(path)
    install(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f'DROP VIEW "{identity_view("zdm_changes")}"')
    conn.close()
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as client:
        assert capture_id(client, "zdm_changes") is None
    stamped = install(path)
    assert stamped["changed"] is True and stamped["capture"]["capture_id"]
    assert install(path)["changed"] is False
