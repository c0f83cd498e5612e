"""playbooks/phase5_cutover.yml and playbooks/rollback.yml on the lab's novacron database after
phase 2, with the demo workload writing through PgBouncer (pool-1 127.0.0.61:6432). Every test ends
with the lab back on blue (rollback), the state phase 2 leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.integration.test_pg_switchover_guardian import wait_for
from tests.lab import (
    BLUE,
    GREEN,
    GREEN_ADDRESS,
    HAPROXY_ADDRESS,
    HAPROXY_WRITES,
    LAB_PASSWORD,
    POOL_1,
    POOL_2,
    POOLER_PORT,
    ROOT,
    connect,
    kill_tree,
    pooler_findings,
    run_playbook,
    server_reached,
    where,
)
from tests.lab import wait_for as lab_wait_for

APPROVED = {"cutover_approved": True}
LAB_WATCH_GATES = yaml.safe_load((ROOT / "inventories/lab/group_vars/all.yml").read_text())["migration_watch_gates"]
# for the tests that assert nothing about the watch: phase 5 skips its pre-check, blue's baseline and the watch (~12 s)
NO_WATCH = {"migration_watch_seconds": 0}
PROMPT = r"Type yes to proceed"
REPORT_DIR = Path("/var/tmp/zerodowntime/reports")


@pytest.fixture()
def on_blue(validated):
    """The lab serving from blue before and after the test."""
    yield
    run = run_playbook("rollback.yml")
    assert run.status == "successful", run.stdout
    assert serving() == "blue"


def serving(address: str = POOL_1, port: int = POOLER_PORT) -> str:
    """The server ("blue", "green") a lab PgBouncer (or HAProxy's write frontend: haproxy_writes_serving)
    sends the application to."""
    with psycopg.connect(
        host=address, port=port, user="migrator", password=LAB_PASSWORD, dbname="novacron", autocommit=True, prepare_threshold=None
    ) as conn:
        return server_reached(conn)


def haproxy_writes_serving() -> str:
    """The server HAProxy's write frontend (lb-1 127.0.0.31:5000) sends the application to."""
    return serving(HAPROXY_ADDRESS, HAPROXY_WRITES)


def readonly(side: dict) -> str:
    with connect(side) as conn:
        return conn.execute("SHOW default_transaction_read_only").fetchone()[0]


class Workload:
    """playbooks/files/workload.py through PgBouncer, in the background."""

    def __init__(self, tmp_path):
        self.stop_file = tmp_path / "stop"
        env = dict(os.environ, PGPASSWORD=LAB_PASSWORD)
        argv = [sys.executable, str(ROOT / "playbooks/files/workload.py"), "run", "--through", f"{POOL_1}:{POOLER_PORT}"]
        argv += ["--stop-file", str(self.stop_file)]
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self) -> dict:
        self.stop_file.touch()
        stdout, stderr = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, stderr
        return json.loads(stdout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        # also when the test failed half-way: a workload left running would write into later tests
        self.stop_file.touch()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def test_without_approval_nothing_changes(on_blue):
    run = run_playbook("phase5_cutover.yml", answers={PROMPT: "no"}, extravars=NO_WATCH)
    assert run.status == "failed"
    [gate] = run.task_results("Stop unless approved")
    assert gate["failed"] and "cutover_approved=true" in gate["msg"]
    assert not run.task_results("Switch writes with pg_switchover blue to green")
    assert serving() == "blue" and readonly(BLUE) == "off"


def test_awx_approval_node_replaces_the_prompt(on_blue):
    run = run_playbook("phase5_cutover.yml", extravars=dict(NO_WATCH, awx_job_id=42))
    assert run.status == "successful", run.stdout
    assert not run.task_results("Ask for approval")
    assert serving() == "green"


def test_cutover_and_rollback_under_writes_lose_nothing(on_blue, tmp_path):
    with Workload(tmp_path) as workload:
        cutover = run_playbook("phase5_cutover.yml", answers={PROMPT: "yes"})  # approved at the prompt
        assert cutover.status == "successful", cutover.stdout
        [switch] = cutover.task_results("Switch writes with pg_switchover blue to green")
        assert switch["write_pause_ms"] < 1000
        assert serving() == "green" and readonly(BLUE) == "on" and readonly(GREEN) == "off"
        [probe] = cutover.task_results("Post-check - a write through PgBouncer lands on green")
        assert probe["server"]["address"] == GREEN_ADDRESS and probe["row"]["id"] > 0
        assert [(entry["server"], entry["found"]) for entry in probe["visible_on"]] == [(where(BLUE), True)]  # reverse replication

        assert serving(POOL_2) == "green" and haproxy_writes_serving() == "green"  # the second pooler and HAProxy's writes follow
        # the watch (inventories/lab: 8 s, a sample a second) found green as good as blue's baseline: no false alarm
        [watch] = cutover.task_results("Watch green against the baseline of blue")
        assert watch["healthy"] and len(watch["samples"]) >= 7, watch
        assert any(sample["latency"] for sample in watch["samples"]) and all(sample["reverse"]["active"] for sample in watch["samples"])
        with connect(dict(BLUE, login_db="zerodowntime_state")) as conn:  # where status.yml shows it while it runs
            query = "SELECT progress -> 'cutover watch' FROM migration_progress WHERE phase = 'phase5_cutover'"
            [progress] = conn.execute(query).fetchone()
        assert progress["state"] == "done" and progress["unit"] == "seconds" and progress["total"] == 8

        rollback = run_playbook("rollback.yml")
        assert rollback.status == "successful", rollback.stdout
        assert serving() == "blue" and readonly(BLUE) == "off" and readonly(GREEN) == "off"
        assert serving(POOL_2) == "blue" and haproxy_writes_serving() == "blue"
        writes = workload.finish()
    assert writes["errors"] == 0, writes.get("last_error")
    assert writes["committed"] > 0
    assert writes["lost_on_blue"] == 0 and writes["lost_on_green"] == 0


def test_a_slow_green_is_rolled_back_by_the_watch_and_nothing_is_lost(on_blue, tmp_path):
    """Every insert into audit_log on green sleeps 30 ms (a trigger: the apply worker does not fire it,
    the application's inserts after the cutover do): the watch catches the latency against blue's
    baseline within its first two intervals, rollback.yml brings the application back to blue losslessly,
    and phase 5 fails naming the signal."""
    with connect(GREEN) as conn:
        conn.execute(
            "CREATE FUNCTION zdm_slow() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(0.03); RETURN NEW; END$$;"
            "CREATE TRIGGER zdm_slow BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION zdm_slow()"
        )
    try:
        with Workload(tmp_path) as workload:
            cutover = run_playbook("phase5_cutover.yml", extravars=dict(APPROVED, migration_watch_seconds=30))
            writes = workload.finish()
    finally:
        with connect(GREEN) as conn:
            conn.execute("DROP TRIGGER IF EXISTS zdm_slow ON audit_log; DROP FUNCTION IF EXISTS zdm_slow()")
    [watch] = cutover.task_results("Watch green against the baseline of blue")
    # the lab's gates breach when crossed in 2 samples a second apart in a row
    breach = watch.get("breach") or {}
    assert watch.get("failed") and breach.get("signal") == "latency_ratio" and breach["samples_in_a_row"] == 2, watch
    assert breach["at_s"] <= 3.5, watch
    assert cutover.status == "failed"
    [failure] = cutover.task_results("Fail, naming the breach")
    assert "rolled it back" in failure["msg"] and "latency_ratio" in failure["msg"]
    assert cutover.task_results("Switch writes with pg_switchover green to blue")  # the lossless way back
    assert not cutover.task_results("Record the success of phase 5")
    assert serving() == "blue" and serving(POOL_2) == "blue" and haproxy_writes_serving() == "blue"
    assert readonly(BLUE) == "off"
    assert writes["errors"] == 0, writes.get("last_error")
    assert writes["lost_on_blue"] == 0 and writes["lost_on_green"] == 0
    with connect(dict(BLUE, login_db="zerodowntime_state")) as conn:
        status, details = conn.execute("SELECT status, details FROM migration_progress WHERE phase = 'phase5_cutover'").fetchone()
    assert status == "failed" and details["rolled_back"] and "latency_ratio" in details["reason"]


def test_a_stopped_reverse_replication_is_rolled_back_by_the_watch_and_nothing_is_lost(on_blue, tmp_path):
    """Once HAProxy writes to green (the watch begins), green's walsender for blue's reverse
    subscription is terminated: blue's worker comes back after wal_retrieve_retry_interval (5 s), past
    the lab's gate of 3 s without a walsender. The watch catches it, and the rollback - which waits
    for the reverse replication to stream again - loses no write. The reverse lag gate is off here:
    under load the slot stopped for 3 s can hold more than its 1 MiB first, and this test is about
    the inactivity gate (test_pg_cutover_watch covers the lag gate)."""
    killed = []

    def haproxy_on_green():
        try:
            return haproxy_writes_serving() == "green" or None
        except psycopg.OperationalError:  # HAProxy moving its write frontend
            return None

    def watching(since) -> bool | None:
        with connect(GREEN) as conn:  # the watch's session on green, opened after HAProxy moved, reads pg_stat_statements
            return conn.execute(
                "SELECT true FROM pg_stat_activity WHERE application_name = 'zerodowntime.migration' AND query LIKE %s "
                "AND backend_start > %s",
                ("%.pg_stat_statements s%", since),
            ).fetchone()

    def kill_reverse_walsender():
        lab_wait_for("HAProxy to send writes to green", haproxy_on_green, timeout=180, interval=0.2)
        with connect(GREEN) as conn:
            since = conn.execute("SELECT now()").fetchone()[0]
        lab_wait_for("the watch on green to begin", lambda: watching(since), timeout=60, interval=0.1)
        stop_at = time.monotonic() + 4  # kept without a walsender for 4 s at least
        while time.monotonic() < stop_at:
            with connect(GREEN) as conn:
                killed.extend(
                    row[0]
                    for row in conn.execute(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s AND active",
                        ("novacron_green_to_blue",),
                    )
                )
            time.sleep(0.5)

    killer = threading.Thread(target=kill_reverse_walsender)
    with Workload(tmp_path) as workload:
        killer.start()
        gates = dict(LAB_WATCH_GATES, max_reverse_lag_bytes=0)
        cutover = run_playbook("phase5_cutover.yml", extravars=dict(APPROVED, migration_watch_seconds=30, migration_watch_gates=gates))
        killer.join(timeout=60)
        writes = workload.finish()
    assert killed and all(killed)
    [watch] = cutover.task_results("Watch green against the baseline of blue")
    assert watch.get("failed") and watch["breach"]["signal"] == "reverse_inactive_seconds", watch
    assert cutover.status == "failed"
    [failure] = cutover.task_results("Fail, naming the breach")
    assert "reverse_inactive_seconds" in failure["msg"]
    assert serving() == "blue" and serving(POOL_2) == "blue" and haproxy_writes_serving() == "blue"
    assert writes["errors"] == 0, writes.get("last_error")
    assert writes["lost_on_blue"] == 0 and writes["lost_on_green"] == 0


def test_rollback_refuses_when_blue_cannot_get_greens_writes(on_blue):
    cutover = run_playbook("phase5_cutover.yml", extravars=dict(APPROVED, **NO_WATCH))
    assert cutover.status == "successful", cutover.stdout
    with connect(BLUE) as conn:
        conn.execute("SET default_transaction_read_only = off")  # blue is frozen since the cutover
        conn.execute("ALTER SUBSCRIPTION novacron_green_to_blue DISABLE")
    refused = run_playbook("rollback.yml")
    assert refused.status == "failed"
    [reason] = refused.task_results("Refuse unless forced")
    assert "Rollback refused" in reason["msg"] and "rollback_force=true" in reason["msg"] and "disabled" in reason["msg"]
    assert serving() == "green"  # the application still writes to green
    with connect(BLUE) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("ALTER SUBSCRIPTION novacron_green_to_blue ENABLE")


def test_phase6_verifies_green_after_the_cutover(on_blue):
    cutover = run_playbook("phase5_cutover.yml", extravars=dict(APPROVED, **NO_WATCH))
    assert cutover.status == "successful", cutover.stdout
    verify = run_playbook("phase6_verify.yml")
    assert verify.status == "successful", verify.stdout
    [write] = verify.task_results("Write through PgBouncer (the application's path)")
    read_back = [(entry["server"], entry["found"]) for entry in write["visible_on"]]  # green, then blue (reverse replication)
    assert read_back == [(where(GREEN), True), (where(BLUE), True)] and write["row"]["id"] > 0
    [compared] = verify.task_results("Compare green with blue again")
    assert compared["equal"] and compared["rows_compared"] > 0
    report = json.loads((REPORT_DIR / "migration_report.json").read_text())
    statuses = {phase["phase"]: phase["status"] for phase in report["phases"]}
    assert statuses == dict.fromkeys(
        ["phase1_infra", "phase2_schema", "phase3_optimize", "phase4_validate", "phase5_cutover", "phase6_verify"], "succeeded"
    )
    assert all(phase["duration_seconds"] > 0 for phase in report["phases"])
    assert "green compared with blue: 6 tables equal" in (REPORT_DIR / "migration_report.md").read_text()


def test_phase6_refuses_to_run_without_a_cutover(on_blue):
    run = run_playbook("phase6_verify.yml")
    assert run.status == "failed"
    [refused] = run.task_results("Record phase6_verify started")
    assert refused["failed"] and "phase5_cutover" in refused["msg"]
    assert not run.task_results("Write through PgBouncer (the application's path)")


def test_rollback_repairs_what_a_dead_cutover_left(on_blue, tmp_path):
    """The host 'rebooted' inside phase 5's write pause: pg_switchover's module and guardian both
    killed, both pools left paused and blue frozen. rollback.yml finds it in the journal first."""
    journal_file = Path("/var/lib/zerodowntime/switchover/novacron.json")
    before = json.loads(journal_file.read_text()).get("run_id") if journal_file.exists() else None
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ZERODOWNTIME_SWITCHOVER_HOLD="freeze_source:30")
    command = [str(ROOT / ".venv/bin/ansible-playbook"), str(ROOT / "playbooks/phase5_cutover.yml"), "-e", "cutover_approved=true"]
    command += ["-e", "migration_watch_seconds=0"]  # killed before the watch: its baseline only costs time
    # the guardian acts at the pause's deadline (its start, switchover_timeout, a 1 s margin): with the
    # default 2 s it races this test's kills on a busy machine
    command += ["-e", "switchover_timeout=20"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
    record = None
    try:
        record = wait_for(
            reached_file(journal_file, lambda r: r.get("run_id") != before and r.get("guardian_pid") and "freeze_source" in r["done"]),
            300,
            "phase 5 to freeze blue",
        )
        # pool-1 "rebooted": the guardian first, then the module (it runs there under sshd, not under
        # ansible-playbook), then the controller's run. The controller's run is stopped first: seeing
        # the module die, its rescue would start rollback.yml's switchover, which repairs the pause
        # before the test looks.
        kill_tree(process.pid, spare=record["guardian_pid"], sig=signal.SIGSTOP)
        os.kill(record["guardian_pid"], signal.SIGKILL)
        os.kill(record["pid"], signal.SIGKILL)
        kill_tree(process.pid, spare=record["guardian_pid"])
        process.wait(timeout=30)
    finally:
        if process.poll() is None:  # stopped and not killed (the test failed half-way): no process left stopped
            kill_tree(process.pid, spare=record["guardian_pid"] if record else None)
    assert readonly(BLUE) == "on"
    assert json.loads(journal_file.read_text())["state"] == "pausing"

    rollback = run_playbook("rollback.yml")
    assert rollback.status == "successful", rollback.stdout
    [repair] = rollback.task_results("Switch writes with pg_switchover green to blue")[:1]
    assert repair["repaired"]["action"] == "undone" and repair["repaired"]["by"] == "next run", repair
    final = json.loads(journal_file.read_text())
    assert final["state"] == "undone" and final["undo_by"] == "next run"
    assert readonly(BLUE) == "off"
    assert pooler_findings() == []  # both pools resumed, at home (read from their consoles: a paused pool would hang a client)
    assert serving() == "blue" and serving(POOL_2) == "blue"


def reached_file(path: Path, predicate):
    def condition():
        record = json.loads(path.read_text()) if path.exists() else {}
        return record if record and predicate(record) else None

    return condition
