"""sqlite_cutover on a real vMiner-like SQLite file (tmp dir) and a scratch database on a PostgreSQL of
the file's own (the lab's blue and green are left to the tests that switch them over), with the
file's workload writing: the switch (freeze, last changes, tail validated, configuration renamed,
the freeze made permanent) with nothing acknowledged lost and the write window measured; a second
run changes nothing; check mode changes nothing; the bad input refused before anything changes; a
tail that differs undoes the cutover; SIGTERM or SIGHUP after any step before the switch undoes the
freeze at once, after the switch completes the cutover; SIGKILL leaves a freeze that lapses by
itself at its deadline and the next run repairs; the rollback brings the target's writes back into
the file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.run import run_compare
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import COPY_OPTIONS, run_copy
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import ensure_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client as SqliteClient
from tests.lab import (
    SqliteApplication,
    connect,
    kill_tree,
    module_pid,
    run_module,
    scratch_database,
    start_held_module,
    throwaway_postgres,
    vminer_sample,
    wait_for,
)

MODULE = "zerodowntime.migration.sqlite_cutover"
MIGRATION = "vminer-to-pg"
DATABASE = "zdm_sqlite_cutover"
sample = vminer_sample()


def defaults(options: dict) -> dict:
    return {name: spec.get("default") for name, spec in options.items()}


@pytest.fixture(scope="module")
def server():
    with throwaway_postgres("zdm-sqlite-cutover-") as admin:
        yield admin


@pytest.fixture()
def lab(tmp_path, server):
    """A copied file (capture installed, copy complete) and the application's two configurations."""
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=2000, vcenters=20, hosts_per_vcenter=2, datastores_per_vcenter=2)
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as client:
        ensure_capture(client, {"change_table": "zdm_changes", "tables": None, "key_columns": None, "state": "present", "force": False})
    with scratch_database(server, DATABASE) as target:
        copy(path, target)
        config = tmp_path / "database.json"
        config.write_text(json.dumps({"engine": "sqlite", "path": str(path)}))
        (tmp_path / "database.json.next").write_text(
            json.dumps(
                {
                    "engine": "postgresql",
                    "host": server["login_host"],
                    "port": server["login_port"],
                    "user": server["login_user"],
                    "dbname": DATABASE,
                }
            )
        )
        yield {"path": path, "target": target, "config": config, "tmp": tmp_path}


def copy(path, target: dict) -> dict:
    params = dict(defaults(COPY_OPTIONS), progress_interval=0.0)
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as source, Client(target) as client:
        return run_copy(source, client, params, False)


def arguments(lab: dict, **extra) -> dict:
    return {"path": str(lab["path"]), "migration": MIGRATION, "app_config": str(lab["config"]), **lab["target"], **extra}


def cutover(lab: dict, check: bool = False, diff: bool = False, **extra) -> dict:
    return run_module(MODULE, arguments(lab, **extra), check=check, diff=diff)[1]


def write_refused(path) -> str | None:
    """None when a write to the file commits, else the error's message."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        with conn:
            conn.execute("UPDATE vcenters SET last_sync_at = '2026-01-01 00:00:00' WHERE id = 1")
        return None
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()


def differences(lab: dict) -> int:
    params = {
        **defaults(COPY_OPTIONS),
        "chunk_rows": 500,
        "leaf_rows": 50,
        "sample_percent": 100.0,
        "seed": None,
        "max_keys": 20,
        "fail_on_difference": False,
        "rechecks": 0,
        "recheck_delay": 0.0,
    }
    with SqliteClient({"path": str(lab["path"]), "busy_timeout": 5.0}) as source, Client(lab["target"]) as client:
        result = run_compare(source, client, params)
    return sum(table["missing"] + table["extra"] + table["changed"] for table in result["tables"])


def readonly_triggers(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'zdm_readonly%'").fetchall()
    conn.close()
    return [text for (text,) in rows]


def application(lab: dict) -> SqliteApplication:
    return SqliteApplication(lab["config"], lab["tmp"], password=lab["target"]["login_password"])


def test_the_switch_moves_the_application_with_every_acknowledged_write(lab):
    app = application(lab)
    try:
        time.sleep(1.5)
        result = cutover(lab, diff=True, window_timeout=20)
        time.sleep(1.5)  # the application writes on the target now
    finally:
        summary = app.stop()
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    assert [step["step"] for step in result["steps"]] == ["freeze", "replay", "validate", "reverse_capture", "switch", "commit"]
    assert 0 < result["write_window_ms"] < 20000
    assert result["validated_keys"] > 0
    assert json.loads(lab["config"].read_text())["engine"] == "postgresql"
    assert json.loads((lab["tmp"] / "database.json.previous").read_text())["engine"] == "sqlite"
    assert not (lab["tmp"] / "database.json.next").exists()
    assert result["diff"]["after"]["status"] == "switched"
    # the application held its writes through the window, then wrote on the target; none was lost
    assert summary["errors"] == 0, summary["error_messages"]
    assert [switch["engine"] for switch in summary["switches"]][-1] == "postgresql", summary["switches"]
    assert summary["acknowledged_per_engine"].get("postgresql", 0) > 10, summary
    assert summary["max_hold_ms"] <= result["write_window_ms"] + 1000, summary
    checked = app.verify()
    assert checked["lost"] == 0 and checked["checked"] > 100, checked
    # writes to the file are refused for good now (no deadline), naming the migration
    refused = write_refused(lab["path"])
    assert refused and MIGRATION in refused and "read-only" in refused
    assert all("WHEN" not in text for text in readonly_triggers(lab["path"]))
    again = cutover(lab)
    assert again["changed"] is False and again["marker"]["status"] == "switched"


def test_check_mode_lists_the_steps_and_changes_nothing(lab):
    before = lab["config"].read_text()
    result = cutover(lab, check=True)
    assert result["changed"] is True
    assert result["planned_steps"] == ["freeze", "replay", "validate", "reverse_capture", "switch", "commit"]
    assert lab["config"].read_text() == before and (lab["tmp"] / "database.json.next").exists()
    assert readonly_triggers(lab["path"]) == [] and write_refused(lab["path"]) is None


def test_bad_input_is_refused_before_anything_changes(lab):
    (lab["tmp"] / "other.next").write_text(lab["config"].read_text())
    same = cutover(lab, app_config_next=str(lab["tmp"] / "other.next"))
    assert same.get("failed") and "would not move" in same["msg"]
    missing = cutover(lab, app_config_next=str(lab["tmp"] / "absent.next"))
    assert missing.get("failed") and "does not exist" in missing["msg"] and "template" in missing["msg"]
    with connect(lab["target"]) as conn:
        conn.execute("DELETE FROM migration_progress")
    incomplete = cutover(lab)
    assert incomplete.get("failed") and "table_copy" in incomplete["msg"] and "not complete" in incomplete["msg"]
    wrong_password = cutover(lab, login_password="not-the-password")
    assert wrong_password.get("failed") and "password" in wrong_password["msg"].lower()
    for result in (same, missing, incomplete, wrong_password):
        assert result["changed"] is False
    assert readonly_triggers(lab["path"]) == [] and write_refused(lab["path"]) is None
    assert json.loads(lab["config"].read_text())["engine"] == "sqlite"


def test_a_tail_that_differs_undoes_the_cutover(lab):
    # a target trigger that rewrites what the replay writes: the replayed row differs from the file's
    with connect(lab["target"]) as conn:
        conn.execute("CREATE FUNCTION rewrite() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := 'rewritten'; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER rewrite BEFORE INSERT ON virtual_machines FOR EACH ROW EXECUTE FUNCTION rewrite()")
    conn = sqlite3.connect(lab["path"])
    with conn:
        conn.execute("UPDATE virtual_machines SET power_state = 'suspended' WHERE id = 7")  # captured: id 7 is in the tail
    conn.close()
    result = cutover(lab)
    assert result.get("failed") and "differ between" in result["msg"] and "undone" in result["msg"], result["msg"]
    assert result["differing"] == [{"table": "virtual_machines", "key": [7]}]
    assert readonly_triggers(lab["path"]) == [] and write_refused(lab["path"]) is None
    assert json.loads(lab["config"].read_text())["engine"] == "sqlite"


def held(lab: dict, step: str, seconds: float, json_output: bool = False, **extra) -> subprocess.Popen:
    process = start_held_module(MODULE, arguments(lab, **extra), f"sqlite_cutover.{step}:{seconds}", lab["tmp"], json_output=json_output)
    wait_for("the freeze", lambda: readonly_triggers(lab["path"]) and write_refused(lab["path"]), 60, interval=0.05)
    time.sleep(0.3)
    return process


# SIGTERM and SIGHUP reach one handler in the module (common/signals.py): SIGTERM lands after every
# step before the switch, SIGHUP after one.
@pytest.mark.parametrize(
    ("step", "signum"),
    [*((step, signal.SIGTERM) for step in ("freeze", "replay", "validate", "reverse_capture")), ("validate", signal.SIGHUP)],
    ids=["freeze-SIGTERM", "replay-SIGTERM", "validate-SIGTERM", "reverse_capture-SIGTERM", "validate-SIGHUP"],
)
def test_a_signal_before_the_switch_undoes_the_freeze_at_once(lab, step, signum):
    process = held(lab, step, 30, window_timeout=60)
    try:
        signalled = time.monotonic()
        os.kill(module_pid(process.pid), signum)
        wait_for("writes to the file again", lambda: write_refused(lab["path"]) is None, 10, interval=0.05)
        assert time.monotonic() - signalled < 5
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
    assert readonly_triggers(lab["path"]) == []
    assert json.loads(lab["config"].read_text())["engine"] == "sqlite"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_after_the_switch_completes_the_cutover(lab, signum):
    process = held(lab, "switch", 30, json_output=True, window_timeout=60)
    try:
        wait_for("the switch", lambda: json.loads(lab["config"].read_text())["engine"] == "postgresql", 30, interval=0.05)
        os.kill(module_pid(process.pid), signum)
        out = process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
    result = next(iter(json.loads(out)["plays"][0]["tasks"][0]["hosts"].values()))
    assert not result.get("failed") and result["marker"]["status"] == "switched", result.get("msg")
    assert any(f"received {signum.name} after the switch" in warning for warning in result["warnings"]), result["warnings"]
    assert write_refused(lab["path"]) and "zdm_readonly" in " ".join(readonly_triggers(lab["path"]))
    assert differences(lab) == 0


def test_sigkill_leaves_a_freeze_that_lapses_at_its_deadline_and_the_next_run_repairs(lab):
    process = held(lab, "validate", 60, window_timeout=4)
    killed = time.monotonic()
    kill_tree(process.pid)
    assert write_refused(lab["path"]), "the freeze is on right after the kill"
    wait_for("the freeze to lapse", lambda: write_refused(lab["path"]) is None, 15, interval=0.1)
    assert time.monotonic() - killed < 8  # the deadline was at most 4 s after the freeze began
    assert json.loads(lab["config"].read_text())["engine"] == "sqlite"
    result = cutover(lab, window_timeout=20)
    assert not result.get("failed"), result.get("msg")
    assert any("did not switch" in warning for warning in result.get("warnings", [])), result.get("warnings")
    assert json.loads(lab["config"].read_text())["engine"] == "postgresql"
    assert differences(lab) == 0


def test_the_rollback_brings_the_targets_writes_back_into_the_file(lab):
    switched = cutover(lab, window_timeout=20)
    assert not switched.get("failed"), switched.get("msg")
    with connect(lab["target"]) as conn:
        conn.execute("UPDATE virtual_machines SET name = 'renamed on green' WHERE id = 11")
        conn.execute("DELETE FROM virtual_machines WHERE id = 12")
        conn.execute(
            "INSERT INTO virtual_machines SELECT id + 100000, vcenter_id, host_id, datastore_id, name || '-new', uuid || '-new', "
            "power_state, num_cpu, memory_mb, disk_gb, guest_os, ip_address, created_at, updated_at FROM virtual_machines WHERE id = 13"
        )
    check = cutover(lab, state="rolled_back", check=True)
    assert check["changed"] is True and check["pending_changes"] == 3
    assert json.loads(lab["config"].read_text())["engine"] == "postgresql"
    result = cutover(lab, state="rolled_back", window_timeout=20)
    assert not result.get("failed"), result.get("msg")
    assert result["replayed_back"] == 3 and result["write_window_ms"] > 0
    assert json.loads(lab["config"].read_text())["engine"] == "sqlite"
    assert write_refused(lab["path"]) is None and readonly_triggers(lab["path"]) == []
    conn = sqlite3.connect(lab["path"])
    assert conn.execute("SELECT name FROM virtual_machines WHERE id = 11").fetchone() == ("renamed on green",)
    assert conn.execute("SELECT count(*) FROM virtual_machines WHERE id IN (12, 100013)").fetchone() == (1,)
    conn.close()
    # the target takes writes again (its hold is gone) and the next rollback has nothing to do
    with connect(lab["target"]) as conn:
        conn.execute("UPDATE vcenters SET version = version WHERE id = 1")
    assert cutover(lab, state="rolled_back")["changed"] is False


def test_the_application_moves_there_and_back_and_loses_nothing(lab):
    app = application(lab)
    try:
        time.sleep(1.0)
        switched = cutover(lab, window_timeout=20)
        assert not switched.get("failed"), switched.get("msg")
        time.sleep(1.5)  # writes on the target, captured for the way back
        rolled_back = cutover(lab, state="rolled_back", window_timeout=20)
        assert not rolled_back.get("failed"), rolled_back.get("msg")
        time.sleep(1.5)  # writes on the file again
    finally:
        summary = app.stop()
    assert summary["errors"] == 0, summary["error_messages"]
    assert [switch["engine"] for switch in summary["switches"]][-2:] == ["postgresql", "sqlite"], summary["switches"]
    assert rolled_back["replayed_back"] > 0 and rolled_back["write_window_ms"] < 20000
    assert json.loads(lab["config"].read_text())["engine"] == "sqlite"
    checked = app.verify()  # every acknowledged write - on the file, on the target, on the file again - is in the file
    assert checked["lost"] == 0 and checked["checked"] > 100, checked


def test_a_second_run_leaves_a_live_runs_freeze_alone(lab):
    process = held(lab, "replay", 30, window_timeout=60)
    try:
        second = cutover(lab)
        assert second.get("failed") and "frozen by another cutover run until" in second["msg"], second.get("msg")
        assert second["changed"] is False and write_refused(lab["path"]), "the first run's freeze stays"
        os.kill(module_pid(process.pid), signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
    assert write_refused(lab["path"]) is None


def test_writes_after_a_lapsed_freeze_stop_the_commit_and_are_named(lab):
    # held after the switch past the freeze's deadline: the file takes a write the target never gets
    process = held(lab, "switch", 6, json_output=True, window_timeout=3)
    wait_for("the switch", lambda: json.loads(lab["config"].read_text())["engine"] == "postgresql", 30, interval=0.05)
    wait_for("the freeze to lapse and a write to commit", lambda: write_refused(lab["path"]) is None, 15, interval=0.1)
    out = process.communicate(timeout=60)[0]
    result = next(iter(json.loads(out)["plays"][0]["tasks"][0]["hosts"].values()))
    assert result.get("failed") and "lapsed" in result["msg"] and result["lapsed_writes"] >= 1, result.get("msg")
    assert result["switched"] is True
