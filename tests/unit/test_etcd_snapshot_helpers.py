"""raft_snapshot's restore decision (plugins/module_utils/etcd/snapshot.py): whether a snapshot is
restored again, and the record of a restore that the decision reads."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.client import EtcdError
from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.snapshot import Snapshot, restore_due

FIGURES = {"path": "/var/backups/etcd/before.db", "sha256": "ab" * 32, "revision": 120}
RECORD = {
    "sha256": "ab" * 32,
    "revision": 120,
    "restored_revision": 120,
    "restore_id": "20261204T150000Z-1a2b3c4d",
    "restored_at": "20261204T150000Z",
}


def test_a_snapshot_never_restored_or_another_one_is_restored():
    assert restore_due({}, FIGURES, None, force=False)
    assert restore_due(dict(RECORD, sha256="cd" * 32), FIGURES, {"revision": 900, "whole": True}, force=False)


def test_the_same_snapshot_restored_and_untouched_since_is_not_restored_again():
    assert not restore_due(RECORD, FIGURES, {"revision": 120, "whole": True}, force=False)


def test_a_run_that_failed_part_way_completes_without_restoring_again():
    """Restored and serving writes, a member not yet joined: the first member changes nothing (the
    others join), whatever was written since."""
    assert not restore_due(RECORD, FIGURES, {"revision": 120, "whole": False}, force=False)
    assert not restore_due(RECORD, FIGURES, {"revision": 135, "whole": False}, force=False)
    # recorded before the member started (no restored_revision yet): the snapshot's revision counts
    assert not restore_due({k: v for k, v in RECORD.items() if k != "restored_revision"}, FIGURES, {"revision": 120, "whole": True}, False)


def test_a_cluster_that_moved_on_since_is_refused_without_force_naming_revision_snapshot_and_option():
    with pytest.raises(EtcdError) as refused:
        restore_due(RECORD, FIGURES, {"revision": 121, "whole": True}, force=False)
    message = str(refused.value)
    assert "revision 121" in message and "past 120" in message and FIGURES["path"] in message
    assert "force: true" in message and "cluster_snapshot_force=true" in message and "nothing was changed" in message
    assert refused.value.details["revision"] == 121 and refused.value.details["restore_id"] == RECORD["restore_id"]
    assert restore_due(RECORD, FIGURES, {"revision": 121, "whole": True}, force=True)


def test_restored_already_and_no_member_answering_is_refused_without_force():
    with pytest.raises(EtcdError, match="no member answers now: start its members"):
        restore_due(RECORD, FIGURES, None, force=False)
    assert restore_due(RECORD, FIGURES, None, force=True)


def snapshot_for(data_dir) -> Snapshot:
    cluster = SimpleNamespace(first={"name": "etcd1", "data_dir": str(data_dir)}, expected=0x70212F72C10DDF44)
    return Snapshot(cluster, FIGURES["path"], run_command=None)


def test_the_record_belongs_to_the_data_dir_the_restore_made(tmp_path):
    data_dir = tmp_path / "etcd1"
    data_dir.mkdir()
    snapshot = snapshot_for(data_dir)
    record = snapshot._write_record(FIGURES, "20261204T150000Z")
    assert record["data_dir_inode"] == os.stat(data_dir).st_ino and record["restore_id"].startswith("20261204T150000Z-")
    assert snapshot._read_record() == record
    assert not (tmp_path / "etcd1.restored.json.partial").exists()
    # the data dir moved aside and made again (rebuilt, bootstrapped anew): the record no longer describes it
    data_dir.rename(tmp_path / "etcd1.aside")
    data_dir.mkdir()
    assert snapshot._read_record() == {}
    # no data dir, or a record of an older version (no inode): as before
    data_dir.rmdir()
    assert snapshot._read_record() == {}
    data_dir.mkdir()
    (tmp_path / "etcd1.restored.json").write_text('{"sha256": "ab"}')
    assert snapshot._read_record() == {"sha256": "ab"}
