"""playbooks/sqlite_migration.yml, the SQLite -> PostgreSQL path's stages up to validation, driven
through ansible-runner on a small vMiner file in a tmp dir into a scratch database on a PostgreSQL of
the file's own (the lab's blue and green are left to the tests that switch them over), with vMiner's
workload writing: the backup taken before the capture, virtual_machines
hash-partitioned, the copy, validation equal; a re-run skips every stage that succeeded and changes
nothing; each rollback trigger (sqlite_max_time, sqlite_max_errors, a validation difference) stops
the run naming it and records its stage failed with the error; after the switch the watch
(pg_cutover_watch) passes a healthy target and catches a fault or a reverse backlog past its gate,
the rescue switching the application back to the file with nothing acknowledged lost."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid

import pytest

from tests.lab import LAB_PASSWORD, SqliteApplication, connect, run_playbook, scratch_database, throwaway_postgres, vminer_sample

PLAYBOOK = "sqlite_migration.yml"
HOST = "localhost"  # sqlite_app_servers in inventories/lab
UP_TO_VALIDATION = ["sqlite_preparation", "sqlite_schema_sync", "sqlite_initial_data_sync", "sqlite_validation"]
COPY = "Copy the tables in batches, then replay the changes captured meanwhile"
FAIL = "Fail naming the stage, the error and what was rolled back"
# for the tests past the switch that assert nothing about the watch (the test_*_watch_* ones do): no baseline, no watch (~7 s a run)
NO_WATCH = {"sqlite_watch_seconds": 0}
sample = vminer_sample()


@pytest.fixture(scope="module")
def server():
    """The target's PostgreSQL with pg_stat_statements (preloaded, and in database postgres, where
    the watch after the switch reads it)."""
    with throwaway_postgres("zdm-sqlite-phases-", shared_preload_libraries="pg_stat_statements") as admin:
        with connect(admin) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        yield admin


@pytest.fixture()
def lab(tmp_path, server):
    """A vMiner file (3000 VMs over 50 vCenters), a scratch database on the target's server, and the
    playbook's variables pointing at both."""
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=3000, vcenters=50)
    name = f"zdm_sqlite_phases_{uuid.uuid4().hex[:8]}"
    with scratch_database(server, name) as target:
        yield {
            "path": path,
            "target": target,
            "vars": {
                "sqlite_path": str(path),
                "sqlite_backup_dest": str(tmp_path / "vminer.db.zdm-backup"),
                "sqlite_target_db": name,
                # the server has no TLS listener: the inventory's verify-full would be refused
                "sqlite_target": {key: target[key] for key in ("login_host", "login_port", "login_user", "login_db")},
                "sqlite_target_password": LAB_PASSWORD,
                "sqlite_app_db_user": target["login_user"],
                "sqlite_app_db_sslmode": "disable",
                "sqlite_app_config": str(tmp_path / "vminer.json"),
                "sqlite_partition_count": 4,
                "sqlite_batch_size": 500,
                "sqlite_stop_after": "validation",
            },
        }


def stages(target: dict) -> dict[str, dict]:
    with connect(target) as conn:
        rows = conn.execute("SELECT phase, status, attempts, details FROM migration_progress ORDER BY started_at").fetchall()
    return {phase: {"status": status, "attempts": attempts, "details": details} for phase, status, attempts, details in rows}


def failure(run) -> str:
    [result] = run.task_results(FAIL)
    return result["msg"]


def test_stages_up_to_validation_with_the_workload_writing_and_a_rerun_changes_nothing(lab):
    workload = sample.Workload(str(lab["path"]), rate=30).start()
    try:
        run = run_playbook(PLAYBOOK, extravars=lab["vars"])
    finally:
        summary = workload.stop()
    assert run.status == "successful", run.stdout
    assert summary["errors"] == 0 and summary["acknowledged"] > 0, summary

    recorded = stages(lab["target"])
    assert [phase for phase in recorded if phase.startswith("sqlite_")] == UP_TO_VALIDATION
    assert all(recorded[phase]["status"] == "succeeded" for phase in UP_TO_VALIDATION), recorded
    assert recorded["table_copy"]["status"] == "succeeded"  # the copy's own checkpoint row
    copied = recorded["sqlite_initial_data_sync"]["details"]
    assert int(copied["rows_copied"]) >= 3000 + 50 + 500 + 250 and int(copied["errors"]) == 0
    assert int(recorded["sqlite_validation"]["details"]["rows_compared"]) > 3000

    # the rollback point was taken before the capture changed the file
    backup = sqlite3.connect(lab["vars"]["sqlite_backup_dest"])
    try:
        tables = {name for (name,) in backup.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (vms,) = backup.execute("SELECT count(*) FROM virtual_machines").fetchone()
        assert backup.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        backup.close()
    assert "zdm_changes" not in tables and 2900 < vms < 3100  # the workload writes from before the backup
    print("validation:", recorded["sqlite_validation"]["details"])
    with connect(lab["target"]) as conn:
        partitions = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'virtual_machines'::regclass").fetchone()
        spread = conn.execute("SELECT count(DISTINCT tableoid) FROM virtual_machines").fetchone()
    assert partitions == (4,) and spread[0] > 1

    again = run_playbook(PLAYBOOK, extravars=lab["vars"])
    assert again.status == "successful", again.stdout
    assert again.changed(HOST) == 0, again.changes()
    assert not again.task_results(COPY)  # skipped: the stage succeeded
    assert all(stages(lab["target"])[phase]["attempts"] == 1 for phase in UP_TO_VALIDATION)


def test_max_time_exceeded_stops_the_run_naming_it(lab):
    run = run_playbook(PLAYBOOK, extravars=dict(lab["vars"], sqlite_max_time=1))
    assert run.status == "failed"
    assert "rollback trigger sqlite_max_time" in failure(run)
    assert "Nothing was switched" in failure(run)
    recorded = stages(lab["target"])
    [failed] = [phase for phase in UP_TO_VALIDATION if recorded.get(phase, {}).get("status") == "failed"]
    assert failed != "sqlite_preparation"  # the first stage starts the clock
    assert "sqlite_max_time" in recorded[failed]["details"]["error"]
    later = UP_TO_VALIDATION[UP_TO_VALIDATION.index(failed) + 1 :]
    assert not any(phase in recorded for phase in later)


def test_max_errors_exceeded_stops_the_copy_naming_it(lab):
    with sqlite3.connect(lab["path"]) as conn:
        conn.execute("UPDATE virtual_machines SET memory_mb = 100000 WHERE id IN (7, 8)")
    conn.close()
    narrow = {
        "vcenters": {"created_at": "timestamptz", "last_sync_at": "timestamptz"},
        "virtual_machines": {"created_at": "timestamptz", "updated_at": "timestamptz", "memory_mb": "smallint"},
    }
    variables = dict(lab["vars"], sqlite_partition_virtual_machines=False, sqlite_column_types=narrow, sqlite_max_errors=1)
    run = run_playbook(PLAYBOOK, extravars=variables)
    assert run.status == "failed"
    message = failure(run)
    assert "rollback trigger sqlite_max_errors" in message and "100000" in message, message
    recorded = stages(lab["target"])
    assert recorded["sqlite_schema_sync"]["status"] == "succeeded"
    assert recorded["sqlite_initial_data_sync"]["status"] == "failed"
    assert "sqlite_max_errors" in recorded["sqlite_initial_data_sync"]["details"]["error"]
    assert "sqlite_validation" not in recorded


def test_a_target_row_changed_before_validation_fails_it(lab):
    first = run_playbook(PLAYBOOK, extravars=dict(lab["vars"], sqlite_stop_after="initial_data_sync"))
    assert first.status == "successful", first.stdout
    with connect(lab["target"]) as conn:
        conn.execute("UPDATE virtual_machines SET name = 'tampered' WHERE id = 42")
    run = run_playbook(PLAYBOOK, extravars=dict(lab["vars"], sqlite_validation_rounds=2))
    assert run.status == "failed"
    message = failure(run)
    assert "rollback trigger validation" in message and "virtual_machines" in message, message
    recorded = stages(lab["target"])
    assert recorded["sqlite_initial_data_sync"]["status"] == "succeeded"
    assert recorded["sqlite_validation"]["status"] == "failed"
    assert "virtual_machines" in recorded["sqlite_validation"]["details"]["error"]


def test_every_stage_then_the_rollback_playbook_with_the_application_writing_loses_nothing(lab, tmp_path):
    """The application follows its configuration file (vminer_sample.py workload --config): every stage
    moves it to the target, sqlite_rollback.yml brings it back with what it wrote there; its own check after."""
    config = tmp_path / "vminer.json"
    config.write_text(json.dumps({"engine": "sqlite", "path": str(lab["path"])}))
    app = SqliteApplication(config, tmp_path, rate=50)
    try:
        time.sleep(1.0)
        run = run_playbook(PLAYBOOK, extravars=dict(lab["vars"], **NO_WATCH, sqlite_stop_after="cleanup"))
        assert run.status == "successful", run.stdout[-3000:]
        recorded = stages(lab["target"])
        assert [phase for phase, row in recorded.items() if row["status"] == "succeeded"][-4:] == [
            "sqlite_cutover_preparation",
            "sqlite_cutover",
            "sqlite_post_cutover_validation",
            "sqlite_cleanup",
        ], recorded
        assert json.loads(config.read_text())["engine"] == "postgresql"
        time.sleep(1.5)  # the application writes on green
        back = run_playbook("sqlite_rollback.yml", extravars=lab["vars"])
        assert back.status == "successful", back.stdout[-3000:]
        time.sleep(1.0)  # and on the file again
    finally:
        summary = app.stop()
    assert summary["errors"] == 0, summary
    assert [switch["engine"] for switch in summary["switches"]][-2:] == ["postgresql", "sqlite"], summary["switches"]
    assert json.loads(config.read_text())["engine"] == "sqlite"
    after = stages(lab["target"])
    assert after["sqlite_cutover"]["status"] == "failed" and after["sqlite_cutover"]["details"]["rolled_back"] is True
    verified = app.verify()
    assert verified["lost"] == 0 and verified["checked"] > 50, verified


def test_a_failed_post_cutover_validation_rolls_back_and_the_next_run_cuts_over_again(lab, tmp_path):
    config = tmp_path / "vminer.json"
    config.write_text(json.dumps({"engine": "sqlite", "path": str(lab["path"])}))
    # the application's check fails
    failing = dict(lab["vars"], **NO_WATCH, sqlite_stop_after="cleanup", sqlite_app_verify_command=["false"])
    run = run_playbook(PLAYBOOK, extravars=failing)
    assert run.status == "failed"
    assert "sqlite_post_cutover_validation failed" in failure(run) and "switched back to the SQLite file" in failure(run)
    recorded = stages(lab["target"])
    assert recorded["sqlite_cutover"]["status"] == "failed" and recorded["sqlite_cutover"]["details"]["rolled_back"] is True
    assert recorded["sqlite_post_cutover_validation"]["details"]["rolled_back"] is True
    assert json.loads(config.read_text())["engine"] == "sqlite"
    with sqlite3.connect(lab["path"]) as conn:
        conn.execute("UPDATE vcenters SET version = version WHERE id = 1")  # the file takes writes again
    conn.close()
    again = run_playbook(PLAYBOOK, extravars=dict(lab["vars"], **NO_WATCH, sqlite_stop_after="cleanup"))
    assert again.status == "successful", again.stdout[-3000:]
    assert json.loads(config.read_text())["engine"] == "postgresql"
    assert stages(lab["target"])["sqlite_cleanup"]["status"] == "succeeded"


WATCH = "Watch the target after the cutover (rollback triggers sqlite_max_errors, sqlite_max_reverse_backlog)"


def test_the_watch_after_a_healthy_cutover_passes_with_the_application_writing(lab, tmp_path):
    """post_cutover_validation watches the target (pg_cutover_watch against a baseline taken on it just
    before the switch): the application writing there raises no gate."""
    config = tmp_path / "vminer.json"
    config.write_text(json.dumps({"engine": "sqlite", "path": str(lab["path"])}))
    app = SqliteApplication(config, tmp_path, rate=50)
    try:
        time.sleep(1.0)
        run = run_playbook(PLAYBOOK, extravars=dict(lab["vars"], sqlite_stop_after="post_cutover_validation", sqlite_watch_seconds=6))
        assert run.status == "successful", run.stdout[-3000:]
    finally:
        summary = app.stop()
    assert summary["errors"] == 0, summary
    [watched] = run.task_results(WATCH)
    assert watched["healthy"] and watched["watched_seconds"] >= 5.9 and watched["errors"] == 0, watched
    # the application wrote on the target during the watch, and none of it was replayed back yet
    assert all(sample["transactions"]["total"] > 0 for sample in watched["samples"]), watched["samples"]
    assert watched["samples"][-1]["reverse_backlog"] > watched["samples"][0]["reverse_backlog"] > 0, watched["samples"]
    assert json.loads(config.read_text())["engine"] == "postgresql"
    details = stages(lab["target"])["sqlite_post_cutover_validation"]
    assert details["status"] == "succeeded" and float(details["details"]["watched_seconds"]) >= 5.9, details
    verified = app.verify()
    assert verified["lost"] == 0 and verified["checked"] > 50, verified


class FaultAfterSwitch:
    """Once the application's config names the target, a trigger on virtual_machines makes about 30% of
    its writes there fail (the fault the watch is to catch)."""

    FUNCTION = (
        "CREATE FUNCTION zdm_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF random() < 0.3 THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NULL; END $$"
    )
    TRIGGER = (
        "CREATE TRIGGER zdm_test_fault BEFORE INSERT OR UPDATE OR DELETE ON virtual_machines "
        "FOR EACH STATEMENT EXECUTE FUNCTION zdm_test_fault()"
    )

    def __init__(self, config, target):
        self.config, self.target = config, target
        self.installed_at = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(0.05):
            if json.loads(self.config.read_text())["engine"] == "postgresql":
                with connect(self.target) as conn:
                    conn.execute(self.FUNCTION)
                    conn.execute(self.TRIGGER)
                self.installed_at = time.monotonic()
                return

    def stop(self):
        self.done.set()
        self.thread.join(5)


def test_a_fault_on_the_target_after_the_switch_breaches_the_watch_and_rolls_back_losing_nothing(lab, tmp_path):
    """A trigger fails ~30% of the application's writes on the target once it is switched: the watch's
    errors gate (sqlite_max_errors) breaches within a couple of intervals, the stage fails naming it, and
    the rescue switches the application back to the file with every acknowledged write."""
    config = tmp_path / "vminer.json"
    config.write_text(json.dumps({"engine": "sqlite", "path": str(lab["path"])}))
    app = SqliteApplication(config, tmp_path, rate=50)
    fault = FaultAfterSwitch(config, lab["target"])
    try:
        time.sleep(1.0)
        run = run_playbook(PLAYBOOK, extravars=dict(lab["vars"], sqlite_stop_after="post_cutover_validation", sqlite_watch_seconds=8))
        time.sleep(1.0)  # the application writes on the file again
    finally:
        fault.stop()
        summary = app.stop()
    assert fault.installed_at is not None
    assert run.status == "failed"
    message = failure(run)
    assert "sqlite_post_cutover_validation failed" in message and "switched back to the SQLite file" in message, message
    assert "breached errors" in message and "over the gate 0" in message, message
    [watched] = run.task_results(WATCH)
    breach = watched["breach"]
    assert breach["signal"] == "errors" and breach["value"] > 0 and breach["gate"] == 0 and breach["at_s"] <= 3.0, breach
    recorded = stages(lab["target"])
    assert recorded["sqlite_cutover"]["status"] == "failed" and recorded["sqlite_cutover"]["details"]["rolled_back"] is True
    assert "breached errors" in recorded["sqlite_post_cutover_validation"]["details"]["error"]
    assert json.loads(config.read_text())["engine"] == "sqlite"
    assert [switch["engine"] for switch in summary["switches"]][-2:] == ["postgresql", "sqlite"], summary["switches"]
    assert summary["errors"] > 0, summary  # the injected failures, never acknowledged
    verified = app.verify()
    assert verified["lost"] == 0 and verified["checked"] > 50, verified


def test_a_reverse_backlog_past_its_gate_breaches_the_watch_and_rolls_back(lab, tmp_path):
    """The lag trigger: the target's changes a rollback has yet to replay into the file, past
    sqlite_max_reverse_backlog, breach the watch naming reverse_backlog."""
    config = tmp_path / "vminer.json"
    config.write_text(json.dumps({"engine": "sqlite", "path": str(lab["path"])}))
    app = SqliteApplication(config, tmp_path, rate=50)
    try:
        time.sleep(1.0)
        variables = dict(lab["vars"], sqlite_stop_after="post_cutover_validation", sqlite_watch_seconds=8, sqlite_max_reverse_backlog=20)
        run = run_playbook(PLAYBOOK, extravars=variables)
        time.sleep(1.0)
    finally:
        summary = app.stop()
    assert run.status == "failed"
    [watched] = run.task_results(WATCH)
    breach = watched["breach"]
    assert breach["signal"] == "reverse_backlog" and breach["value"] > 20 and breach["gate"] == 20, breach
    assert "breached reverse_backlog" in failure(run) and "switched back to the SQLite file" in failure(run)
    assert json.loads(config.read_text())["engine"] == "sqlite"
    assert summary["errors"] == 0, summary
    verified = app.verify()
    assert verified["lost"] == 0 and verified["checked"] > 50, verified
