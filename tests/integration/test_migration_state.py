"""zerodowntime.migration.migration_state run against blue, in a scratch database of its
own (zdm_state_test); each test keeps its progress in a table of its own."""

from __future__ import annotations

import re

import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.progress import open_reporter
from tests.lab import BLUE, LAB_PASSWORD, connect, run_module, run_playbook, scratch_database, where

MODULE = "zerodowntime.migration.migration_state"
DB = "zdm_state_test"
ARGS = dict(BLUE, login_db=DB)
HOSTILE = 'a"; DROP TABLE zdm_victim; --'
PHASES = ["phase1_infra", "phase2_schema", "phase3_optimize", "phase4_validate", "phase5_cutover", "phase6_verify"]


@pytest.fixture(scope="module")
def scratch(lab):
    with scratch_database(BLUE, DB):
        with connect(ARGS) as conn:
            conn.execute("CREATE TABLE zdm_victim (id int)")
        yield


@pytest.fixture()
def db(scratch):
    with connect(ARGS) as conn:
        yield conn


def progress(table, **args):
    return dict(ARGS, table=table, **args)


def table_exists(conn, table, schema="public"):
    return conn.execute("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (schema, table)).fetchone() is not None


def phase_row(conn, table, phase, schema="public"):
    """(status, attempts, details, completed_at is set) of one phase, or None."""
    statement = sql.SQL("SELECT status, attempts, details, completed_at IS NOT NULL FROM {} WHERE phase = %s")
    found = conn.execute(statement.format(sql.Identifier(schema, table)), (phase,)).fetchone()
    return tuple(found) if found else None


def ok(result):
    assert result["failed"] is False, result.get("msg")
    return result


def test_check_mode_writes_nothing_and_shows_what_it_would_do(db):
    table = "progress_check"
    checked = ok(run_module(MODULE, progress(table, phase="phase1_infra", state="started"), check=True, diff=True)[1])
    assert checked["changed"] is True
    assert len(checked["queries"]) == 2
    assert checked["queries"][0].startswith(f'CREATE TABLE IF NOT EXISTS "public"."{table}" (phase text PRIMARY KEY')
    assert checked["queries"][1].startswith(f'INSERT INTO "public"."{table}" ("phase", "status", "started_at"')
    assert checked["diff"]["before"] == {}
    after = checked["diff"]["after"]
    assert (after["phase"], after["status"], after["attempts"], after["completed_at"]) == ("phase1_infra", "running", 1, None)
    assert checked["phase"] == after
    assert not table_exists(db, table)

    started = ok(run_module(MODULE, progress(table, phase="phase1_infra", state="started"))[1])
    assert started["changed"] is True
    assert [query.split(" (")[0] for query in started["queries"]] == [query.split(" (")[0] for query in checked["queries"]]
    assert phase_row(db, table, "phase1_infra") == ("running", 1, {}, False)

    closing = ok(run_module(MODULE, progress(table, phase="phase1_infra", state="succeeded"), check=True)[1])
    assert closing["changed"] is True
    assert closing["queries"][0].startswith('UPDATE "public"."progress_check" SET "status" = \'succeeded\'')
    assert closing["phase"]["status"] == "succeeded"
    assert phase_row(db, table, "phase1_infra") == ("running", 1, {}, False)


def test_phases_run_in_order_unless_forced(db):
    table = "progress_order"
    refused = run_module(MODULE, progress(table, phase="phase2_schema", state="started"))[1]
    assert refused["failed"] is True
    assert f"the phase before it, 'phase1_infra', is pending (no record in public.{table}), not succeeded" in refused["msg"]
    assert "Run phase1_infra until it succeeds, or set force: true" in refused["msg"]
    assert (refused["predecessor"], refused["predecessor_status"], refused["queries"]) == ("phase1_infra", "pending", [])
    assert not table_exists(db, table)

    ok(run_module(MODULE, progress(table, phase="phase1_infra", state="started"))[1])
    still = run_module(MODULE, progress(table, phase="phase2_schema", state="started"))[1]
    assert still["failed"] is True
    assert "'phase1_infra', is running, not succeeded" in still["msg"]
    assert phase_row(db, table, "phase2_schema") is None

    forced = ok(run_module(MODULE, progress(table, phase="phase2_schema", state="started", force=True))[1])
    assert forced["changed"] is True
    assert phase_row(db, table, "phase2_schema") == ("running", 1, {}, False)
    assert [(entry["phase"], entry["status"]) for entry in forced["phases"]] == [
        ("phase1_infra", "running"),
        ("phase2_schema", "running"),
        *((name, "pending") for name in PHASES[2:]),
    ]


def test_checkpoints_and_closing_are_idempotent_and_diff_shows_the_row(db):
    table = "progress_life"
    args = progress(table, phase="phase1_infra")
    assert ok(run_module(MODULE, dict(args, state="started"))[1])["changed"] is True
    again = ok(run_module(MODULE, dict(args, state="started"))[1])
    assert (again["changed"], again["resumed"], again["queries"]) == (False, True, [])

    step = ok(run_module(MODULE, dict(args, state="checkpoint", step="packages"))[1])
    assert (step["changed"], step["checkpoints"]) == (True, ["packages"])
    step_again = ok(run_module(MODULE, dict(args, state="checkpoint", step="packages"))[1])
    assert (step_again["changed"], step_again["checkpoints"], step_again["queries"]) == (False, ["packages"], [])

    done = ok(run_module(MODULE, dict(args, state="succeeded", details={"verdict": "every service healthy"}), diff=True)[1])
    assert done["changed"] is True
    before, after = done["diff"]["before"], done["diff"]["after"]
    assert (before["status"], before["completed_at"], before["details"]) == ("running", None, {"checkpoints": ["packages"]})
    assert (after["status"], after["details"]) == ("succeeded", {"checkpoints": ["packages"], "verdict": "every service healthy"})
    assert after["completed_at"] is not None and after["duration_seconds"] >= 0
    assert done["phase"] == after
    assert phase_row(db, table, "phase1_infra") == ("succeeded", 1, after["details"], True)

    twice = ok(run_module(MODULE, dict(args, state="succeeded", details={"verdict": "every service healthy"}))[1])
    assert (twice["changed"], twice["queries"], twice["phase"]) == (False, [], after)

    restart = ok(run_module(MODULE, dict(args, state="started"))[1])
    assert (restart["changed"], restart["already_succeeded"], restart["phase"]["status"]) == (False, True, "succeeded")

    forced = ok(run_module(MODULE, dict(args, state="started", force=True))[1])
    assert (forced["changed"], forced["resumed"], forced["checkpoints"]) == (True, False, [])
    assert phase_row(db, table, "phase1_infra") == ("running", 2, {"verdict": "every service healthy"}, False)


def test_a_failed_phase_resumes_with_the_checkpoints_recorded_before_the_failure(db):
    table = "progress_resume"
    args = progress(table, phase="phase1_infra")
    ok(run_module(MODULE, dict(args, state="started"))[1])
    ok(run_module(MODULE, dict(args, state="checkpoint", step="postgresql"))[1])
    ok(run_module(MODULE, dict(args, state="checkpoint", step="pgbouncer"))[1])
    failed = ok(run_module(MODULE, dict(args, state="failed", details={"error": "haproxy did not start"}))[1])
    assert (failed["changed"], failed["phase"]["status"]) == (True, "failed")
    assert failed["phase"]["completed_at"] is not None
    assert ok(run_module(MODULE, dict(args, state="failed", details={"error": "haproxy did not start"}))[1])["changed"] is False
    refused = run_module(MODULE, dict(args, state="checkpoint", step="haproxy"))[1]
    assert refused["failed"] is True and "is failed, not running" in refused["msg"]

    resumed = ok(run_module(MODULE, dict(args, state="started"))[1])
    assert (resumed["changed"], resumed["resumed"]) == (True, True)
    assert resumed["checkpoints"] == ["postgresql", "pgbouncer"]  # the finished steps are not redone
    assert (resumed["phase"]["status"], resumed["phase"]["attempts"], resumed["phase"]["completed_at"]) == ("running", 2, None)
    assert phase_row(db, table, "phase1_infra") == (
        "running",
        2,
        {"checkpoints": ["postgresql", "pgbouncer"], "previous_error": "haproxy did not start"},
        False,
    )


def test_query_only_reads(db):
    table = "progress_query"
    empty = ok(run_module(MODULE, progress(table))[1])
    assert (empty["changed"], empty["queries"], empty["phase"], empty["checkpoints"]) == (False, [], {}, [])
    assert [(entry["phase"], entry["status"], entry["attempts"]) for entry in empty["phases"]] == [(name, "pending", 0) for name in PHASES]
    assert not table_exists(db, table)

    ok(run_module(MODULE, progress(table, phase="phase1_infra", state="started"))[1])
    ok(run_module(MODULE, progress(table, phase="phase1_infra", state="checkpoint", step="a"))[1])
    one = ok(run_module(MODULE, progress(table, phase="phase1_infra", state="query", phases=["phase1_infra", "phase2_schema"]))[1])
    assert (one["changed"], one["phase"]["status"], one["checkpoints"]) == (False, "running", ["a"])
    assert [entry["status"] for entry in one["phases"]] == ["running", "pending"]


def test_hostile_schema_and_table_names_are_names(db):
    args = dict(ARGS, schema=HOSTILE, table=HOSTILE, phases=["first", "second"])
    started = ok(run_module(MODULE, dict(args, phase="first", state="started"))[1])
    assert started["changed"] is True
    assert started["queries"][0] == 'CREATE SCHEMA IF NOT EXISTS "a""; DROP TABLE zdm_victim; --"'
    assert table_exists(db, "zdm_victim")
    assert table_exists(db, HOSTILE, schema=HOSTILE)
    read = ok(run_module(MODULE, dict(args, state="query"))[1])
    assert [(entry["phase"], entry["status"]) for entry in read["phases"]] == [("first", "running"), ("second", "pending")]
    assert table_exists(db, "zdm_victim")


def test_unknown_phase_is_an_error_naming_the_list(db):
    table = "progress_unknown"
    result = run_module(MODULE, progress(table, phase="phase7_party", state="started"))[1]
    assert result["failed"] is True
    assert "unknown phase 'phase7_party': phases are " + ", ".join(PHASES) in result["msg"]
    assert not table_exists(db, table)


def test_an_empty_schema_is_refused_not_taken_for_public(db):
    table = "progress_empty_schema"
    result = run_module(MODULE, progress(table, phase="phase1_infra", state="started", schema=""))[1]
    assert result["failed"] is True
    assert "invalid schema name '': it is empty" in result["msg"]
    assert "leave 'schema' out for its default" in result["msg"]
    assert not table_exists(db, table)


def test_a_nul_in_details_is_refused_before_anything_is_sent(db):
    table = "progress_nul"
    ok(run_module(MODULE, progress(table, phase="phase1_infra", state="started"))[1])
    result = run_module(MODULE, progress(table, phase="phase1_infra", state="succeeded", details={"note": "a\x00b"}))[1]
    assert result["failed"] is True, result
    assert "details.note holds a NUL character" in result["msg"]
    assert "remove it from 'details'" in result["msg"]
    assert "queries" not in result or result["queries"] == []
    assert phase_row(db, table, "phase1_infra") == ("running", 1, {}, False)


def test_a_table_of_another_shape_is_refused(db):
    db.execute("CREATE TABLE progress_other (id int)")
    result = run_module(MODULE, progress("progress_other", phase="phase1_infra", state="started"))[1]
    assert result["failed"] is True
    assert f"table public.progress_other on {where(BLUE)} exists but has no column(s) phase, status" in result["msg"]
    assert db.execute("SELECT count(*) FROM progress_other").fetchone()[0] == 0


def test_records_while_the_database_is_frozen_read_only(db):
    table = "progress_frozen"
    db.execute(f"ALTER DATABASE {DB} SET default_transaction_read_only = on")
    try:
        started = ok(run_module(MODULE, progress(table, phase="phase1_infra", state="started"))[1])
        assert started["changed"] is True
    finally:
        db.execute(f"ALTER DATABASE {DB} RESET default_transaction_read_only")
    assert phase_row(db, table, "phase1_infra") == ("running", 1, {}, False)


def test_wrong_password_names_the_user_and_not_the_password(db):
    run, result = run_module(MODULE, progress("progress_password", phase="phase1_infra", state="started", login_password="Wrong-Secret-9"))
    assert result["failed"] is True
    assert "authentication failed for user 'migrator'" in result["msg"]
    assert "Wrong-Secret-9" not in run.stdout
    assert not table_exists(db, "progress_password")


def test_unknown_database_is_named(scratch):
    result = run_module(MODULE, dict(ARGS, login_db="zdm_state_missing"))[1]
    assert result["failed"] is True
    assert f"database 'zdm_state_missing' does not exist on {where(BLUE)}" in result["msg"]


def test_status_playbook_shows_every_phase(db):
    table = "migration_progress"
    args = dict(ARGS, phases=PHASES[:3])
    ok(run_module(MODULE, dict(args, phase="phase1_infra", state="started"))[1])
    ok(run_module(MODULE, dict(args, phase="phase1_infra", state="checkpoint", step="postgresql"))[1])
    ok(run_module(MODULE, dict(args, phase="phase1_infra", state="succeeded", details={"verdict": "every service healthy"}))[1])
    ok(run_module(MODULE, dict(args, phase="phase2_schema", state="started"))[1])
    ok(run_module(MODULE, dict(args, phase="phase2_schema", state="failed", details={"error": "sync timed out"}))[1])
    state_db = {key: ARGS[key] for key in ("login_host", "login_port", "login_user", "login_db")}
    run = run_playbook(
        "status.yml", extravars={"migration_state_db": state_db, "migration_password": LAB_PASSWORD, "migration_phases": PHASES[:3]}
    )
    assert run.status == "successful", run.stdout
    assert run.changed("localhost") == 0
    read = run.task_results("Read the progress of every phase")[0]
    assert [(entry["phase"], entry["status"]) for entry in read["phases"]] == [
        ("phase1_infra", "succeeded"),
        ("phase2_schema", "failed"),
        ("phase3_optimize", "pending"),
    ]
    lines = run.task_results("Show where the migration stands")[0]["msg"].splitlines()
    assert lines[0] == f"Migration progress in {DB} on {where(BLUE)}"
    assert lines[1].startswith("phase1_infra     succeeded attempt 1, started ") and ", took 0h 00m " in lines[1]
    assert lines[2:4] == ["    checkpoints: postgresql", "    verdict: every service healthy"]
    assert lines[4].startswith("phase2_schema    failed    attempt 1, started ")
    assert lines[5:] == ["    error: sync timed out", "phase3_optimize  pending", "Next: phase2_schema (failed)"]
    assert table_exists(db, table)


def test_status_playbook_shows_the_steps_progress_and_says_when_it_is_stale(db):
    """A table of the shape before the progress column existed gets it from the progress sink;
    status.yml shows each step's figures, and a running step not updated for long as STALE."""
    table = "migration_progress"
    db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    args = dict(ARGS, phases=PHASES[:2])
    ok(run_module(MODULE, dict(args, phase="phase1_infra", state="started", force=True))[1])
    db.execute(sql.SQL("ALTER TABLE {} DROP COLUMN progress").format(sql.Identifier(table)))  # the old shape
    assert ok(run_module(MODULE, dict(args, state="query"))[1])["phases"][0]["progress"] == {}
    reporter = open_reporter(dict(ARGS, phase="phase1_infra", step="copy", every=0.0), "copy", unit="rows", total=1000)
    reporter.on_progress("public.orders", 250, 1000)
    reporter.close()
    assert reporter.warnings == []
    db.execute(
        sql.SQL(
            "UPDATE {} SET progress = progress || jsonb_build_object('index', jsonb_build_object('state', 'running', 'done', 3, "
            "'total', 10, 'unit', 'blocks', 'percent', 30.0, 'rate', 0.5, 'eta_seconds', 14, 'every', 5, "
            "'updated_at', now() - interval '2 minutes', 'updated_epoch', extract(epoch FROM now() - interval '2 minutes'))) "
            "WHERE phase = 'phase1_infra'"
        ).format(sql.Identifier(table))
    )
    state_db = {key: ARGS[key] for key in ("login_host", "login_port", "login_user", "login_db")}
    run = run_playbook(
        "status.yml", extravars={"migration_state_db": state_db, "migration_password": LAB_PASSWORD, "migration_phases": PHASES[:2]}
    )
    assert run.status == "successful", run.stdout
    shown = run.task_results("Read the progress of every phase")[0]["phases"][0]["progress"]
    assert shown["copy"]["stale"] is False and shown["index"]["stale"] is True
    lines = run.task_results("Show where the migration stands")[0]["msg"].splitlines()
    copy = next(line for line in lines if line.startswith("    step copy: "))
    assert copy.startswith("    step copy: running 250/1000 rows (25.0%), updated "), copy
    assert "s ago)" in copy and "STALE" not in copy
    assert "      public.orders: 250/1000 rows (25.0%)" in lines, "\n".join(lines)
    index = next(line for line in lines if line.startswith("    step index: "))
    assert index.startswith("    step index: running 3/10 blocks (30.0%), 0.5 blocks/s, ETA 0h 00m 14s, updated "), index
    # 120 s old when written, plus however long status.yml took to reach its query
    stale = re.search(r"\((\d+) s ago\) - STALE: no update for (\d+) s, is the step still running\?$", index)
    assert stale and 120 <= int(stale[1]) == int(stale[2]) < 180, index
