"""playbooks/files/vminer_sample.py: the vMiner-like SQLite file (counts, foreign keys, a
repeatable build) and its workload (acknowledged writes, at the rate asked). SQLite is a
library: real files in a tmp dir, no lab."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from tests.lab import ROOT, vminer_sample

sample = vminer_sample()
SCRIPT = ROOT / "playbooks" / "files" / "vminer_sample.py"


def counts(path) -> dict:
    with sqlite3.connect(path) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in sample.TABLES}  # noqa: S608 (fixed names)


def test_build_writes_the_rows_asked_with_every_foreign_key_held(tmp_path):
    path = tmp_path / "vminer.db"
    summary = sample.build(str(path), vms=12345, vcenters=1000)
    assert summary["rows"] == {"vcenters": 1000, "hosts": 10000, "datastores": 5000, "virtual_machines": 12345}
    assert counts(path) == summary["rows"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # every VM sits on a host and a datastore of its own vCenter; every vCenter has VMs
    misplaced = conn.execute(
        "SELECT count(*) FROM virtual_machines v JOIN hosts h ON h.id = v.host_id JOIN datastores d ON d.id = v.datastore_id "
        "WHERE h.vcenter_id <> v.vcenter_id OR d.vcenter_id <> v.vcenter_id"
    ).fetchone()[0]
    assert misplaced == 0
    assert conn.execute("SELECT count(DISTINCT vcenter_id) FROM virtual_machines").fetchone()[0] == 1000
    assert conn.execute("SELECT count(*) FROM virtual_machines WHERE ip_address IS NULL").fetchone()[0] > 0
    conn.close()
    assert not (tmp_path / "vminer.db.building").exists()


def test_two_builds_are_identical_and_an_existing_file_is_kept_without_force(tmp_path):
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    sample.build(str(first), vms=500, vcenters=10)
    sample.build(str(second), vms=500, vcenters=10)
    dump = [list(sqlite3.connect(path).iterdump()) for path in (first, second)]
    assert dump[0] == dump[1]
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "build", "--path", str(first), "--vms", "5"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2
    assert str(first) in refused.stderr and "force" in refused.stderr
    assert counts(first)["virtual_machines"] == 500


def test_workload_counts_acknowledged_writes_at_the_rate_asked(tmp_path):
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=2000, vcenters=20)
    before = counts(path)["virtual_machines"]
    workload = sample.Workload(str(path), rate=100, log=True).start()
    time.sleep(2)
    summary = workload.stop()
    assert summary["errors"] == 0, summary["error_messages"]
    assert 150 <= summary["acknowledged"] <= 210, summary
    assert min(summary[op] for op in ("inserts", "updates", "deletes", "syncs")) > 0, summary
    assert counts(path)["virtual_machines"] == before + summary["inserts"] - summary["deletes"]
    assert len(workload.log) == summary["acknowledged"]


def test_workload_command_stops_on_its_stop_file(tmp_path):
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=100, vcenters=5)
    stop = tmp_path / "stop"
    running = subprocess.Popen(
        [sys.executable, str(SCRIPT), "workload", "--path", str(path), "--stop-file", str(stop), "--rate", "50"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    stop.touch()
    out, _err = running.communicate(timeout=30)
    assert running.returncode == 0, out
    assert '"errors": 0' in out


@pytest.mark.parametrize("vms", [0, 1])
def test_tiny_files_build(tmp_path, vms):
    assert sample.build(str(tmp_path / "t.db"), vms=vms, vcenters=1)["rows"]["virtual_machines"] == vms
