"""playbooks/phase3_optimize.yml, phase4_validate.yml and status.yml on the lab after phase 2, and
the phase order kept in migration_progress (zerodowntime_state on blue). Every test leaves phases
2-4 succeeded, as the `validated` fixture made them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lab import BLUE, GREEN, connect, run_playbook, server_reached, through_pooler

STATE = dict(BLUE, login_db="zerodowntime_state")
REPORT_DIR = Path("/var/tmp/zerodowntime/reports")
INDEXES = ["audit_log_action_created_at_idx", "users_tenant_id_role_idx", "vms_node_id_idx"]
BUILD_INDEXES = "Build each index CONCURRENTLY (rebuild it if an earlier build left it invalid)"
REFRESH = "Refresh each materialized view CONCURRENTLY (readers are not blocked)"


def phase_row(phase: str) -> dict | None:
    with connect(STATE) as conn:
        row = conn.execute("SELECT status, attempts, details FROM migration_progress WHERE phase = %s", (phase,)).fetchone()
    return dict(zip(("status", "attempts", "details"), row, strict=True)) if row else None


def set_status(phase: str, status: str) -> None:
    with connect(STATE) as conn:
        conn.execute("UPDATE migration_progress SET status = %s WHERE phase = %s", (status, phase))


def test_phase3_builds_indexes_matviews_and_settings_on_green(validated):
    with connect(GREEN) as conn:
        valid = dict(
            conn.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY(%s)",
                (INDEXES,),
            ).fetchall()
        )
        assert valid == dict.fromkeys(INDEXES, True)
        assert conn.execute("SELECT ispopulated FROM pg_matviews WHERE matviewname = 'tenant_vm_usage'").fetchone() == (True,)
        assert conn.execute("SHOW default_statistics_target").fetchone() == ("200",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1min",)
    row = phase_row("phase3_optimize")
    assert row["status"] == "succeeded"
    assert row["details"]["checkpoints"] == ["indexes", "matviews", "tuning"]
    assert int(row["details"]["lag_bytes"]) <= 67108864


def test_a_phase_refuses_to_start_before_its_predecessor_succeeded(validated):
    set_status("phase3_optimize", "failed")
    try:
        run = run_playbook("phase4_validate.yml")
    finally:
        set_status("phase3_optimize", "succeeded")
    assert run.status == "failed"
    [refused] = run.task_results("Record phase4_validate started")
    assert refused["failed"] and "phase3_optimize" in refused["msg"]
    assert not run.task_results("Compare every replicated table, blue against green")


def test_a_resumed_phase3_does_not_redo_finished_work(validated):
    with connect(STATE) as conn:
        conn.execute("DELETE FROM migration_progress WHERE phase = 'phase3_optimize'")
    broken = run_playbook("phase3_optimize.yml", extravars={"phase3_matviews": ["zdm_no_such_view"]})
    assert broken.status == "failed"
    assert broken.task_results(BUILD_INDEXES)  # the first run built (or found) the indexes
    failed = phase_row("phase3_optimize")
    assert failed["status"] == "failed" and failed["details"]["checkpoints"] == ["indexes"]
    assert "zdm_no_such_view" in failed["details"]["error"]

    resumed = run_playbook("phase3_optimize.yml")
    assert resumed.status == "successful", resumed.stdout
    assert not resumed.task_results(BUILD_INDEXES)  # skipped: checkpointed before the failure
    assert resumed.task_results(REFRESH)
    done = phase_row("phase3_optimize")
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert done["details"]["checkpoints"] == ["indexes", "matviews", "tuning"]


def test_phase4_passes_and_writes_its_report(validated):
    run = run_playbook("phase4_validate.yml")
    assert run.status == "successful", run.stdout
    report = json.loads((REPORT_DIR / "phase4_validation.json").read_text())
    assert report["verdict"] == "pass"
    assert {table["table"] for table in report["compared"]} == {"tenants", "users", "compute_nodes", "vms", "vm_metrics", "audit_log"}
    assert all(table["equal"] for table in report["compared"])
    assert "Verdict: **PASS**" in (REPORT_DIR / "phase4_validation.md").read_text()
    row = phase_row("phase4_validate")
    assert row["status"] == "succeeded" and row["details"]["verdict"] == "pass"


def test_a_difference_fails_phase4_and_phase5_refuses_to_start(validated):
    with connect(GREEN) as conn:
        tenant_id, plan = conn.execute("SELECT id, plan FROM tenants ORDER BY id LIMIT 1").fetchone()
        conn.execute("UPDATE tenants SET plan = 'tampered' WHERE id = %s", (tenant_id,))
    try:
        run = run_playbook("phase4_validate.yml")
        assert run.status == "failed"
        report = json.loads((REPORT_DIR / "phase4_validation.json").read_text())
        assert report["verdict"] == "fail"
        [tenants] = [table for table in report["compared"] if table["table"] == "tenants"]
        assert tenants["differing_keys"] == [{"key": {"id": str(tenant_id)}, "kind": "changed"}]
        row = phase_row("phase4_validate")
        assert row["status"] == "failed" and row["details"]["verdict"] == "fail"

        cutover = run_playbook("phase5_cutover.yml", extravars={"cutover_approved": True})
        assert cutover.status == "failed"
        assert not cutover.task_results("Switch writes with pg_switchover blue to green")
        with connect(through_pooler()) as conn:  # PgBouncer (through HAProxy) still sends novacron to blue
            assert server_reached(conn) == "blue"
    finally:
        with connect(GREEN) as conn:
            conn.execute("UPDATE tenants SET plan = %s WHERE id = %s", (plan, tenant_id))
    again = run_playbook("phase4_validate.yml")
    assert again.status == "successful", again.stdout


@pytest.mark.usefixtures("validated")
def test_status_prints_where_the_migration_stands():
    run = run_playbook("status.yml")
    assert run.status == "successful", run.stdout
    for phase in ("phase2_schema", "phase3_optimize", "phase4_validate"):
        assert phase in run.stdout
    assert "succeeded" in run.stdout
