"""Pure logic of plugins/module_utils/postgres/migration_state.py: the order of phases, what each state
plans for a phase's row, names, and how rows are returned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.migration_state import (
    DEFAULT_PHASES,
    phases_view,
    plan,
    predecessor,
    row_view,
    validate_name,
    validate_phases,
    validate_request,
)

NOW = datetime(2025, 11, 21, 10, 0, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)
PHASES = list(DEFAULT_PHASES)


def row(phase, status, attempts=1, details=None, completed=None):
    return {
        "phase": phase,
        "status": status,
        "started_at": EARLIER,
        "completed_at": completed,
        "attempts": attempts,
        "details": details if details is not None else {},
    }


def plan_for(state, phase, rows, **options):
    return plan(state, phase, PHASES, rows, NOW, where="public.migration_progress", **options)


def test_predecessor_follows_the_list_and_unknown_phases_name_it():
    assert predecessor(PHASES, "phase1_infra") is None
    assert predecessor(PHASES, "phase3_optimize") == "phase2_schema"
    with pytest.raises(PgError, match=r"unknown phase 'phase9': phases are phase1_infra, phase2_schema, .*phase6_verify"):
        predecessor(PHASES, "phase9")


def test_starting_a_new_phase_creates_its_row():
    desired, flags = plan_for("started", "phase1_infra", {})
    assert desired == {
        "phase": "phase1_infra",
        "status": "running",
        "started_at": NOW,
        "completed_at": None,
        "attempts": 1,
        "details": {},
    }
    assert flags == {"resumed": False, "already_succeeded": False}


@pytest.mark.parametrize(
    ("rows", "shown"),
    [
        ({}, r"'phase1_infra', is pending \(no record in public.migration_progress\), not succeeded"),
        ({"phase1_infra": row("phase1_infra", "running")}, r"'phase1_infra', is running, not succeeded"),
        ({"phase1_infra": row("phase1_infra", "failed")}, r"'phase1_infra', is failed, not succeeded"),
    ],
)
def test_a_phase_waits_for_the_one_before_it(rows, shown):
    with pytest.raises(PgError, match=shown) as refused:
        plan_for("started", "phase2_schema", rows)
    assert "Run phase1_infra until it succeeds, or set force: true" in str(refused.value)
    assert refused.value.details["predecessor"] == "phase1_infra"


def test_force_starts_a_phase_out_of_order():
    desired = plan_for("started", "phase2_schema", {}, force=True)[0]
    assert (desired["status"], desired["attempts"]) == ("running", 1)


def test_starting_a_running_phase_resumes_it_without_change():
    current = row("phase1_infra", "running", details={"checkpoints": ["a"]})
    assert plan_for("started", "phase1_infra", {"phase1_infra": current}) == ({}, {"resumed": True, "already_succeeded": False})


def test_starting_a_failed_phase_keeps_its_checkpoints_and_counts_the_attempt():
    current = row("phase1_infra", "failed", attempts=2, details={"checkpoints": ["a", "b"], "error": "boom"}, completed=NOW)
    desired, flags = plan_for("started", "phase1_infra", {"phase1_infra": current}, details={"run": 3})
    assert desired == {
        "status": "running",
        "started_at": NOW,
        "completed_at": None,
        "attempts": 3,
        "details": {"checkpoints": ["a", "b"], "previous_error": "boom", "run": 3},
    }
    assert flags["resumed"] is True


def test_a_succeeded_phase_is_left_alone_unless_forced():
    current = row("phase1_infra", "succeeded", details={"checkpoints": ["a"], "verdict": "ok"}, completed=NOW)
    assert plan_for("started", "phase1_infra", {"phase1_infra": current}) == ({}, {"resumed": False, "already_succeeded": True})
    desired, flags = plan_for("started", "phase1_infra", {"phase1_infra": current}, force=True)
    assert desired == {"status": "running", "started_at": NOW, "completed_at": None, "attempts": 2, "details": {"verdict": "ok"}}
    assert flags == {"resumed": False, "already_succeeded": False}


def test_checkpoints_are_added_once_to_a_running_phase():
    current = row("phase1_infra", "running", details={"checkpoints": ["a"]})
    desired = plan_for("checkpoint", "phase1_infra", {"phase1_infra": current}, step="b")[0]
    assert desired == {"details": {"checkpoints": ["a", "b"]}}
    assert plan_for("checkpoint", "phase1_infra", {"phase1_infra": current}, step="a")[0] == {}


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_checkpoints_need_a_running_phase(status):
    with pytest.raises(PgError, match=rf"phase 'phase1_infra' is {status}, not running: .*state: started"):
        plan_for("checkpoint", "phase1_infra", {"phase1_infra": row("phase1_infra", status)}, step="a")


@pytest.mark.parametrize("state", ["checkpoint", "succeeded", "failed"])
def test_a_phase_must_be_started_before_anything_is_recorded(state):
    with pytest.raises(PgError, match=r"phase 'phase1_infra' has not been started \(no record in public.migration_progress\)"):
        plan_for(state, "phase1_infra", {}, step="a")


@pytest.mark.parametrize("state", ["succeeded", "failed"])
def test_closing_a_phase_sets_status_end_and_details_once(state):
    current = row("phase1_infra", "running", details={"checkpoints": ["a"]})
    desired = plan_for(state, "phase1_infra", {"phase1_infra": current}, details={"verdict": "x"})[0]
    assert desired == {"status": state, "completed_at": NOW, "details": {"checkpoints": ["a"], "verdict": "x"}}
    closed = dict(current, **desired)
    assert plan_for(state, "phase1_infra", {"phase1_infra": closed}, details={"verdict": "x"})[0] == {}
    # New details on a closed phase change the details only, not when it ended.
    assert plan_for(state, "phase1_infra", {"phase1_infra": closed}, details={"verdict": "y"})[0] == {
        "details": {"checkpoints": ["a"], "verdict": "y"}
    }


@pytest.mark.parametrize("name", ["migration_progress", 'a"; DROP TABLE x; --', "x" * 63, "é" * 31])
def test_names_postgresql_keeps_as_given_pass(name):
    assert validate_name(name, "table") == name


@pytest.mark.parametrize("name", ["", None, "x" * 64, "é" * 32])
def test_names_postgresql_would_truncate_are_refused(name):
    with pytest.raises(PgError, match=r"invalid table name .* 1 to 63 bytes"):
        validate_name(name, "table")


@pytest.mark.parametrize(
    ("phases", "message"),
    [([], "phases is empty"), (["a", "b", "a"], "phase 'a' appears twice"), (["a", ""], "every phase must be a non-empty name")],
)
def test_phase_lists_are_checked(phases, message):
    with pytest.raises(PgError, match=message):
        validate_phases(phases)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "started", "step": "a"}, "step applies to state: checkpoint only"),
        ({"state": "checkpoint", "step": ""}, "needs a non-empty step"),
        ({"state": "query", "details": {"a": 1}}, "details are not recorded with state: query"),
        ({"state": "succeeded", "details": {"checkpoints": []}}, "details.checkpoints is kept by the module"),
        ({"state": "succeeded", "details": {"note": "a\x00b"}}, r"details.note holds a NUL character"),
        ({"state": "failed", "details": {"why": ["ok", {"x": "\x00"}]}}, r"details.why\[1\].x holds a NUL character"),
    ],
)
def test_requests_that_make_no_sense_are_refused(params, message):
    with pytest.raises(PgError, match=message):
        validate_request(params)


def test_rows_are_returned_with_iso_times_and_duration_and_pending_phases_fill_the_list():
    done = row("phase1_infra", "succeeded", completed=NOW, details={"verdict": "ok"})
    view = row_view(done)
    assert view == {
        "phase": "phase1_infra",
        "status": "succeeded",
        "started_at": "2025-11-21T09:55:00+00:00",
        "completed_at": "2025-11-21T10:00:00+00:00",
        "attempts": 1,
        "details": {"verdict": "ok"},
        "duration_seconds": 300.0,
        "progress": {},
    }
    assert row_view(row("phase2_schema", "running"))["duration_seconds"] is None
    listed = phases_view(["phase1_infra", "phase2_schema"], {"phase1_infra": done, "zz_extra": row("zz_extra", "running")})
    assert [(entry["phase"], entry["status"], entry["attempts"]) for entry in listed] == [
        ("phase1_infra", "succeeded", 1),
        ("phase2_schema", "pending", 0),
        ("zz_extra", "running", 1),
    ]
