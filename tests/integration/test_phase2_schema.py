"""playbooks/phase2_schema.yml on the lab: green gets the partitioned target schema and a
subscription that has copied blue's tables; a second run changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.lab import BLUE, GREEN, LAB_PASSWORD, ROOT, connect, run_playbook, where


def test_initial_copy_completes_with_every_table_ready(phase2):
    result = phase2.task_results("Subscribe to blue and wait for the initial copy")[0]
    assert result["tables_total"] == 6
    assert result["tables_ready"] == 6
    assert {table["state"] for table in result["tables"]} == {"r"}
    assert result["lag_bytes"] is not None and result["lag_bytes"] <= 16777216


def test_green_has_the_partitioned_target_shape(phase2, green):
    partitions = dict(
        green.execute(
            "SELECT parent.relname, count(*) FROM pg_inherits JOIN pg_class parent ON parent.oid = inhparent "
            "WHERE parent.relname IN ('vms', 'vm_metrics') GROUP BY 1"
        ).fetchall()
    )
    assert partitions["vms"] == 100
    assert partitions["vm_metrics"] >= 10  # six months back, this month, three ahead, and a default
    strategies = dict(
        green.execute("SELECT c.relname, p.partstrat FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid").fetchall()
    )
    assert strategies == {"vms": "h", "vm_metrics": "r"}
    indexes = {row[0] for row in green.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"vms_vcenter_id_state_idx", "vm_metrics_vm_id_collected_at_idx", "audit_log_tenant_id_created_at_idx"} <= indexes


def test_blue_sends_the_columns_greens_keys_need(phase2, blue):
    identities = dict(
        blue.execute(
            "SELECT c.relname, i.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indisreplident"
        ).fetchall()
    )
    assert identities == {"vms": "vms_tenant_id_id_key", "vm_metrics": "vm_metrics_collected_at_id_key"}


def test_updates_and_deletes_on_blue_reach_the_partitions(phase2):
    with connect(BLUE) as blue:
        vm_id, tenant_id = blue.execute("SELECT id, tenant_id FROM vms ORDER BY id DESC LIMIT 1").fetchone()
        blue.execute("UPDATE vms SET state = 'phase2-test' WHERE id = %s", (vm_id,))
        metric_id = blue.execute("SELECT id FROM vm_metrics ORDER BY id LIMIT 1").fetchone()[0]
        blue.execute("DELETE FROM vm_metrics WHERE id = %s", (metric_id,))
    with connect(GREEN) as green:
        for _attempt in range(100):
            state = green.execute("SELECT state FROM vms WHERE id = %s AND tenant_id = %s", (vm_id, tenant_id)).fetchone()[0]
            gone = green.execute("SELECT count(*) FROM vm_metrics WHERE id = %s", (metric_id,)).fetchone()[0] == 0
            if state == "phase2-test" and gone:
                break
            green.execute("SELECT pg_sleep(0.1)")
        assert (state, gone) == ("phase2-test", True)


def test_second_run_changes_nothing(phase2):
    again = run_playbook("phase2_schema.yml")
    assert again.status == "successful", again.stdout
    assert again.changed("localhost") == 0, again.changed_tasks()


def workload(*argv) -> subprocess.CompletedProcess:
    script = ROOT / "playbooks" / "files" / "workload.py"
    env = dict(os.environ, PGPASSWORD=LAB_PASSWORD)
    return subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, env=env, timeout=180, check=False)


def test_demo_workload_writes_and_green_catches_up(phase2, tmp_path):
    ran = workload("run", "--stop-file", str(tmp_path / "stop"), "--max-seconds", "2")
    assert ran.returncode == 0, ran.stderr
    writes = json.loads(ran.stdout)
    assert writes["inserts"] > 0 and writes["updates"] > 0 and writes["errors"] == 0
    verified = workload("verify", "--blue", where(BLUE), "--green", where(GREEN), "--tables", "vms,vm_metrics,audit_log", "--timeout", "60")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["equal"] is True and report["differing"] == []
    assert report["tables"]["audit_log"]["blue"] == report["tables"]["audit_log"]["green"]


def test_workload_run_without_a_stop_file_is_refused():
    refused = workload("run")
    assert refused.returncode == 2 and "run needs --stop-file" in refused.stderr
