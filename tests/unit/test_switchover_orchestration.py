"""The switchover's orchestration without a server: which steps run, what is undone and in which
order, the deadline, and the replay of a journal left by a dead run.

The steps themselves talk to PostgreSQL and PgBouncer and are tested against the lab
(tests/integration/test_pg_switchover*.py). Here every step and undo is replaced by a stand-in
that only records its call, so what is checked is the logic around them: the step list declared
once in PAUSE_STEPS, the undo list derived from it, the journal written ahead of each step.
"""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import switchover as sw
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.journal import Journal

PARAMS = {
    "subscription": "green_sub",
    "reverse_subscription": "blue_sub",
    "timeout": 5.0,
    "target": {"login_host": "green", "login_port": 5432, "login_db": "app"},
}
UNDO_OF = {step.name: step.undo for step in sw.ALL_STEPS}


class FakeClient:
    """Answers the session settings the undo makes and records them; no server."""

    check_mode = False

    def __init__(self):
        self.queries: list = []

    def query(self, statement, args=None):
        self.queries.append(statement)
        return []

    def query_one(self, statement, args=None):
        return None

    def execute(self, statement, args=None, audit=None):
        self.queries.append(statement)


class FakeConsole:
    def sibling(self):
        return self

    def close(self):
        pass


class Recorded(sw.Switchover):
    """A Switchover whose steps and undos only record their calls; `fail_at` makes one step raise,
    `slow_at` makes one step outlast the deadline."""

    def __init__(self, *args, fail_at=None, slow_at=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []
        self.facts = sw.Facts(target_readonly={"readonly": True}, forward={"synchronous_commit": "off", "slot_name": "green_sub"})
        for step in sw.ALL_STEPS:
            setattr(self, step.name, self._step(step.name, fail_at, slow_at))
            if step.undo:
                setattr(self, step.undo, self._undo(step.undo))
        self.resume_pgbouncer_on_source = self._undo("resume_pgbouncer_on_source")
        self.finish_commit = self._undo("finish_commit")

    def _step(self, name, fail_at, slow_at):
        def run(entry):
            self.calls.append(name)
            if name == fail_at:
                raise PgError(f"{name} failed")
            if name == slow_at:
                time.sleep(self.params["timeout"] + 0.05)

        return run

    def _undo(self, name):
        def run():
            self.calls.append(f"undo:{name}")

        return run


def make(tmp_path, timeout=5.0, haproxy=False, **kwargs) -> Recorded:
    """A run that repoints its pool, or (`haproxy`) switches one HAProxy's write backend."""
    journal = Journal(str(tmp_path), "app")
    journal.acquire()
    journal.write({"state": "preparing", "run_id": "test"})
    poolers = [sw.Pooler(0, {"database": "app", "config_file": "/dev/null"}, FakeConsole())]
    run = Recorded(FakeClient(), FakeClient(), poolers, dict(PARAMS, timeout=timeout), journal=journal, **kwargs)
    if haproxy:
        run.proxies = [sw.Proxy("127.0.0.31:9999", "pg_write", "blue", "green", 2.0, True)]
    return run


def steps_of(run: Recorded) -> list[str]:
    return list(sw.HAPROXY_STEPS if run.proxies else sw.POOLER_STEPS)


@pytest.fixture(params=["pgbouncer", "haproxy"])
def mode(request) -> dict:
    """Both ways a run moves writes: repointing the pools, or switching HAProxy."""
    return {"haproxy": request.param == "haproxy"}


def undo_calls(run: Recorded) -> list[str]:
    return [call.removeprefix("undo:") for call in run.calls if call.startswith("undo:")]


def test_a_clean_run_does_every_step_in_order_and_commits(tmp_path, mode):
    run = make(tmp_path, **mode)
    run.switch()
    assert run.calls == steps_of(run)
    assert ("switch_haproxy" in run.calls) is mode["haproxy"] and ("repoint_pgbouncer" in run.calls) is not mode["haproxy"]
    record = run.journal.read()
    assert record["state"] == "committed" and record["done"] == steps_of(run)[:-1]
    assert [entry["step"] for entry in run.steps] == steps_of(run) and all(entry["ok"] for entry in run.steps)


def test_unfreeze_target_is_skipped_when_the_target_was_writable(tmp_path):
    run = make(tmp_path)
    run.facts.target_readonly = {"readonly": False}
    run.switch()
    assert "unfreeze_target" not in run.calls and run.calls[-1] == "resume_pgbouncer"


@pytest.mark.parametrize("failing", [name for name in sw.STEPS if name != sw.STEPS[-1]])
def test_a_failed_step_undoes_every_begun_step_newest_first_and_resumes_the_pools_last(tmp_path, failing):
    # the step that moves writes fails in the mode that runs it
    run = make(tmp_path, fail_at=failing, haproxy=failing == "switch_haproxy")
    with pytest.raises(PgError, match=f"{failing} failed"):
        run.switch()
    steps = steps_of(run)
    begun = steps[: steps.index(failing) + 1]
    expected = ["resume_pgbouncer_on_source" if name == "pause_pgbouncer" else UNDO_OF[name] for name in reversed(begun) if UNDO_OF[name]]
    assert undo_calls(run) == expected
    assert undo_calls(run)[-1] == "resume_pgbouncer_on_source"  # clients come back only once blue takes writes
    record = run.journal.read()
    assert record["state"] == "undone" and record["undo_by"] == "module" and f"{failing} failed" in record["reason"]
    assert [entry["step"] for entry in record["undone"]] == [
        "resume_pgbouncer" if name == "resume_pgbouncer_on_source" else name for name in expected
    ]


def test_a_step_that_outlasts_the_deadline_is_undone(tmp_path):
    run = make(tmp_path, timeout=0.2, slow_at="wait_for_catch_up")
    with pytest.raises(sw.DeadlineExceeded, match="deadline"):
        run.switch()
    assert run.calls.index("wait_for_catch_up") < run.calls.index("undo:unfreeze_source")
    assert "sync_sequences" not in run.calls  # nothing after the deadline runs
    assert run.journal.read()["state"] == "undone"


def test_the_module_does_not_undo_a_run_the_guardian_took_over(tmp_path, monkeypatch):
    monkeypatch.setattr(sw.pg_guardian, "UNDO_BUDGET", 0.2)
    run = make(tmp_path, fail_at="sync_sequences")
    real_transition = run.journal.transition

    def guardian_first(allowed_from, durable=False, **changes):
        run.journal.update(state="undone", undo_by="guardian", reason="deadline")  # the guardian acted first
        return real_transition(allowed_from, durable=durable, **changes)

    run.journal.transition = guardian_first
    with pytest.raises(PgError):
        run.switch()
    assert undo_calls(run) == []
    assert any("guardian took over" in warning for warning in run.warnings)


def guardian_undid(run: Recorded, pid: int) -> dict:
    """The journal as the guardian leaves a run it undid: its own undo listed."""
    run.undone = [{"step": "unfreeze_source", "ok": True}, {"step": "resume_pgbouncer", "ok": True}]
    run.journal.update(state="undone", undo_by="guardian", pid=pid, undone=list(run.undone))
    return run.journal.read()


def test_a_module_stalled_past_the_guardian_undoes_its_late_steps_again(tmp_path):
    # the module ran freeze_source after the guardian's undo had resumed the pools: the source would stay frozen
    run = make(tmp_path)
    run.done = ["pause_pgbouncer", "freeze_source"]
    run.undo_late_steps(guardian_undid(run, os.getpid()))
    assert undo_calls(run) == ["unfreeze_source", "resume_pgbouncer_on_source"]
    record = run.journal.read()
    assert [entry["step"] for entry in record["undone_late_by_module"]] == ["unfreeze_source", "resume_pgbouncer"]
    assert record["state"] == "undone" and record["undone"] == run.undone[:2]  # the guardian's own account is kept
    assert any("undid again: unfreeze_source, resume_pgbouncer" in warning for warning in run.warnings)


def test_a_failed_late_undo_leaves_the_run_for_the_next_one(tmp_path):
    run = make(tmp_path)
    run.done = ["pause_pgbouncer", "freeze_source"]

    def broken():
        raise PgError("the source is gone")

    run.unfreeze_source = broken
    run.undo_late_steps(guardian_undid(run, os.getpid()))
    assert run.journal.read()["state"] == "undoing"  # pending: the next run repairs it
    assert any("unfreeze_source failed: the next run repairs it" in warning for warning in run.warnings)


@pytest.mark.parametrize(
    "changes", [{"pid": -1}, {"undo_by": "next run"}, {"state": "committed"}], ids=["other pid", "other undoer", "committed"]
)
def test_late_steps_are_left_alone_unless_the_guardian_undid_this_very_run(tmp_path, changes):
    run = make(tmp_path)
    run.done = ["pause_pgbouncer", "freeze_source"]
    record = dict(guardian_undid(run, os.getpid()), **changes)
    run.undo_late_steps(record)
    assert undo_calls(run) == [] and run.warnings == []
    assert "undone_late_by_module" not in run.journal.read()


def test_the_commit_point_refuses_a_run_the_guardian_took_over(tmp_path):
    run = make(tmp_path)
    run.journal.update(state="undoing", undo_by="guardian")
    with pytest.raises(sw.TakenOver):
        run.commit_point()
    assert run.journal.read()["state"] == "undoing"


def test_replaying_a_committing_run_finishes_it(tmp_path):
    run = make(tmp_path)
    done = list(sw.POOLER_STEPS[:-1])
    outcome = run.recover({"state": "committing", "run_id": "old", "done": done}, "module", "left pending", every_step=False)
    assert outcome["action"] == "finished" and run.calls == ["undo:finish_commit"]
    assert run.journal.read()["state"] == "committed"


def test_replaying_a_pausing_run_undoes_what_its_journal_lists(tmp_path):
    run = make(tmp_path)
    done = ["pause_pgbouncer", "freeze_source", "drain_source_writers"]
    outcome = run.recover({"state": "pausing", "run_id": "old", "done": done}, "module", "left pending", every_step=False)
    assert outcome["action"] == "undone"
    assert undo_calls(run) == ["unfreeze_source", "resume_pgbouncer_on_source"]


def test_replaying_with_every_step_undoes_them_all(tmp_path):
    run = make(tmp_path)
    run.recover({"state": "pausing", "run_id": "old", "done": []}, "module", "journal not flushed", every_step=True)
    expected = [
        "resume_pgbouncer_on_source" if step.name == "pause_pgbouncer" else step.undo for step in reversed(sw.ALL_STEPS) if step.undo
    ]
    assert undo_calls(run) == expected


def test_a_failing_undo_does_not_stop_the_others_and_leaves_the_run_pending(tmp_path):
    run = make(tmp_path)

    def broken():
        raise PgError("the source is gone")

    run.unfreeze_source = broken
    run.recover({"state": "pausing", "run_id": "old", "done": ["pause_pgbouncer", "freeze_source"]}, "guardian", "eof", every_step=False)
    assert undo_calls(run) == ["resume_pgbouncer_on_source"]
    assert [entry["ok"] for entry in run.undone] == [False, True]
    assert run.journal.read()["state"] == "undoing"  # the next run repairs it again


def test_every_step_and_undo_names_a_method_the_switchover_has():
    for step in sw.PAUSE_STEPS:  # the prepare step runs inside prepare(), not by name
        assert hasattr(sw.Switchover, step.name)
    for step in sw.ALL_STEPS:
        if step.undo:
            assert hasattr(sw.Switchover, step.undo)


def test_the_journal_keeps_what_an_undo_needs_and_no_password():
    facts = sw.Facts(
        forward={"synchronous_commit": "off", "slot_name": "green_sub", "conninfo": "host=blue password=secret"},
        tables=["public.accounts"],
        source_readonly={"readonly": False, "value": None},
        target_readonly={"readonly": True, "value": "on"},
        write_pause_ms=12.5,
    )
    kept = facts.journaled()
    assert "secret" not in repr(kept) and "write_pause_ms" not in kept
    again = sw.Facts.from_journal(kept)
    assert again.forward == {"synchronous_commit": "off", "slot_name": "green_sub"}
    assert (again.tables, again.source_readonly, again.target_readonly) == (facts.tables, facts.source_readonly, facts.target_readonly)
