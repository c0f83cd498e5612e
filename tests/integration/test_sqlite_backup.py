"""sqlite_backup run on real SQLite files in a tmp dir (SQLite is a library: no lab, no
lock): a verified online backup while the vMiner workload writes (no writer error, the backup one
snapshot of the source), a kept backup is a second run's changed false, check and diff mode, and the
bad input - a missing or corrupt source, a dest that is not a backup, a missing directory, the source
itself as dest, and what a killed run left."""

from __future__ import annotations

import os
import sqlite3
import time

from tests.lab import run_module, vminer_sample

MODULE = "zerodowntime.migration.sqlite_backup"
sample = vminer_sample()


def backup(path, dest, **args):
    check = args.pop("_check", False)
    diff = args.pop("_diff", False)
    return run_module(MODULE, {"path": str(path), "dest": str(dest), **args}, check=check, diff=diff)[1]


def counts(path) -> dict:
    with sqlite3.connect(path) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        found = {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}  # noqa: S608 (sample names)
    conn.close()
    return found


def test_a_verified_snapshot_while_the_application_writes_then_kept(tmp_path):
    source, dest = tmp_path / "vminer.db", tmp_path / "backups" / "vminer-before.db"
    sample.build(str(source), vms=20000, vcenters=100)
    dest.parent.mkdir()
    workload = sample.Workload(str(source), rate=0, log=True).start()
    try:
        time.sleep(0.3)
        taken = backup(source, dest, _diff=True)
        time.sleep(0.3)
    finally:
        writes = workload.stop()
    assert not taken["failed"], taken
    assert writes["errors"] == 0 and writes["acknowledged"] > 0, writes
    assert taken["changed"] is True and taken["integrity"] == "ok"
    assert taken["diff"]["before"] == {"dest": str(dest), "state": "absent"}
    assert taken["diff"]["after"]["state"] == "present" and taken["diff"]["after"]["rows"] == taken["rows"]
    assert counts(dest) == taken["tables"] and taken["tables"]["vcenters"] == 100
    # one snapshot: every VM in the backup has its host and datastore (the workload deletes and inserts VMs meanwhile)
    with sqlite3.connect(dest) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    assert not os.path.exists(str(dest) + "-wal") and not os.path.exists(str(dest) + ".zdm-partial")

    stamp = os.stat(dest).st_mtime_ns
    again = backup(source, dest)
    assert not again["failed"] and again["changed"] is False, again
    assert os.stat(dest).st_mtime_ns == stamp  # a rollback point is never overwritten unasked
    replaced = backup(source, dest, force=True)
    assert not replaced["failed"] and replaced["changed"] is True and counts(dest) == replaced["tables"]


def test_check_mode_writes_nothing(tmp_path):
    source, dest = tmp_path / "app.db", tmp_path / "app-backup.db"
    sample.build(str(source), vms=100, vcenters=2)
    checked = backup(source, dest, _check=True, _diff=True)
    assert not checked["failed"] and checked["changed"] is True, checked
    assert checked["diff"]["after"] == {"dest": str(dest), "state": "present"}
    assert sorted(os.listdir(tmp_path)) == sorted(name for name in os.listdir(tmp_path) if not name.startswith("app-backup"))


def test_bad_input_is_named_and_nothing_is_written(tmp_path):
    source = tmp_path / "app.db"
    sample.build(str(source), vms=100, vcenters=2)
    missing = backup(tmp_path / "nope.db", tmp_path / "b.db")
    assert missing["failed"] and "does not exist" in missing["msg"] and not (tmp_path / "b.db").exists()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    broken = backup(corrupt, tmp_path / "c.db")
    assert broken["failed"] and "corrupt" in broken["msg"] and not (tmp_path / "c.db").exists()
    nodir = backup(source, tmp_path / "no" / "such" / "dir" / "b.db")
    assert nodir["failed"] and "does not exist" in nodir["msg"] and str(tmp_path / "no" / "such" / "dir") in nodir["msg"]
    itself = backup(source, source)
    assert itself["failed"] and "the source file itself" in itself["msg"]
    foreign = tmp_path / "notes.txt"
    foreign.write_text("a DBA's notes, not a backup")
    refused = backup(source, foreign)
    assert refused["failed"] and "force" in refused["msg"] and foreign.read_text() == "a DBA's notes, not a backup"


def test_what_a_killed_run_left_is_removed_and_never_taken_for_a_backup(tmp_path):
    source, dest = tmp_path / "app.db", tmp_path / "app-backup.db"
    sample.build(str(source), vms=100, vcenters=2)
    partial = tmp_path / "app-backup.db.zdm-partial"
    partial.write_bytes(b"SQLite format 3\x00half a copy")
    taken = backup(source, dest)
    assert not taken["failed"] and taken["changed"] is True and taken["integrity"] == "ok", taken
    assert not partial.exists()
