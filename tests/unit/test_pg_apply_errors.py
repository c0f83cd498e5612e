"""postgres/apply_errors: reading a subscription's failures from its server's log, and when a
watch says a subscription fails (counters rising, a worker dead on an error, no worker)."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.apply_errors import ApplyWatch, last_failures
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError

LOG = """cut line from the offset
2026-12-03 19:54:24.409 UTC [3411] LOG:  logical replication apply worker for subscription "ae_sub" has started
2026-12-03 19:54:24.417 UTC [3414] LOG:  logical replication table synchronization worker for subscription "ae_sub", table "ae" has started
2026-12-03 19:54:24.430 UTC [3414] ERROR:  logical replication target relation "public.ae" is missing replicated column: "note"
2026-12-03 19:54:24.432 UTC [23306] LOG:  background worker "logical replication worker" (PID 3414) exited with exit code 1
2026-12-03 19:54:29.000 UTC [4000] LOG:  logical replication apply worker for subscription "other" has started
2026-12-03 19:54:29.100 UTC [4000] ERROR:  duplicate key value violates unique constraint "history_pkey"
2026-12-03 19:54:29.100 UTC [4000] DETAIL:  Key (id)=(1) already exists.
2026-12-03 19:54:29.100 UTC [4000] CONTEXT:  processing remote data for replication origin "pg_1" during message type "INSERT" \
for replication target relation "public.history" in transaction 7, finished at 0/1
"""


def test_a_sync_worker_dead_on_a_missing_column_is_named():
    failures = last_failures(LOG, "ae_sub")
    assert failures == [
        {
            "worker": "table synchronization",
            "table": "public.ae",
            "error": 'logical replication target relation "public.ae" is missing replicated column: "note"',
            "notes": [],
            "logged_at": "2026-12-03 19:54:24.430 UTC [3414]",
            "current": True,
        }
    ]


def test_the_table_comes_from_the_context_and_other_subscriptions_are_left_out():
    failures = last_failures(LOG, "other")
    assert [(f["worker"], f["table"], f["current"]) for f in failures] == [("apply", "public.history", True)]
    assert failures[0]["notes"][0] == "Key (id)=(1) already exists."


def test_a_worker_started_again_after_its_error_is_not_current():
    log = LOG + '2026-12-03 19:54:35.000 UTC [5000] LOG:  logical replication apply worker for subscription "other" has started\n'
    assert [f["current"] for f in last_failures(log, "other")] == [False]


def test_a_stop_by_alter_subscription_is_no_failure():
    log = (
        "x\n"
        '2026-12-03 19:54:35.000 UTC [5000] LOG:  logical replication apply worker for subscription "s" has started\n'
        "2026-12-03 19:54:42.484 UTC [5000] FATAL:  terminating logical replication worker due to administrator command\n"
    )
    assert last_failures(log, "s") == []


class FakeClient:
    """Answers the watch's queries: the state rows, and the log (or a refusal)."""

    endpoint = "127.0.0.1:5434"

    def __init__(self, rows, log: str | None = LOG):
        self.rows, self.log = rows, log
        self.params = {"login_user": "watcher"}

    def query(self, statement, args=None):
        return [dict(row) for row in self.rows]

    def query_one(self, statement, args=None):
        if self.log is None:
            raise PgError("permission denied for function pg_current_logfile")
        if "pg_current_logfile" in statement:
            return {"path": "/proc/self/fd/2"}
        if "pg_stat_file" in statement:
            return {"size": len(self.log), "isdir": False}
        return {"tail": self.log.encode()}


def row(name="ae_sub", apply_errors=0, sync_errors=0, enabled=True, worker=True, disable_on_error=False, age=None) -> dict:
    return {
        "apply_worker_age_s": age,
        "oid": 1,
        "subname": name,
        "subenabled": enabled,
        "subdisableonerr": disable_on_error,
        "apply_errors": apply_errors,
        "sync_errors": sync_errors,
        "apply_worker": worker,
    }


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_rising_counters_fail_naming_the_table_and_error():
    client, clock = FakeClient([row(sync_errors=1)]), Clock()
    watch = ApplyWatch(client, ["ae_sub"], clock=clock)
    watch.check()  # the baseline: errors of the past alone are no alarm
    client.rows = [row(sync_errors=2)]
    clock.now = 1.0
    with pytest.raises(PgError) as caught:
        watch.check()
    message = str(caught.value)
    assert "'ae_sub'" in message and "public.ae" in message and 'missing replicated column: "note"' in message
    assert caught.value.details["apply_error"]["sync_error_count"] == 2


def test_past_errors_with_a_running_worker_are_no_alarm():
    client, clock = FakeClient([row(name="other", apply_errors=5, worker=True)]), Clock()
    watch = ApplyWatch(client, None, clock=clock)
    for second in range(30):
        clock.now = float(second)
        watch.check()


def test_an_apply_worker_dead_on_its_error_fails_at_the_first_look():
    watch = ApplyWatch(FakeClient([row(name="other", apply_errors=1, worker=False)]), ["other"], clock=Clock())
    with pytest.raises(PgError) as caught:
        watch.check()
    assert "duplicate key" in str(caught.value) and "public.history" in str(caught.value)


def test_no_apply_worker_fails_after_the_grace_without_the_log():
    client, clock = FakeClient([row(worker=False)], log=None), Clock()
    watch = ApplyWatch(client, ["ae_sub"], clock=clock, absent_grace=10)
    watch.check()
    clock.now = 9.0
    watch.check()
    clock.now = 10.5
    with pytest.raises(PgError) as caught:
        watch.check()
    assert "no apply worker for 10 s" in str(caught.value) and "may not read the server log" in str(caught.value)


def test_disabled_by_disable_on_error_fails():
    watch = ApplyWatch(FakeClient([row(apply_errors=1, enabled=False, worker=False, disable_on_error=True)]), ["ae_sub"], clock=Clock())
    with pytest.raises(PgError, match="disable_on_error"):
        watch.check()


def test_checks_are_spaced():
    client, clock = FakeClient([row(sync_errors=1)]), Clock()
    watch = ApplyWatch(client, ["ae_sub"], clock=clock)
    watch.check()
    client.rows = [row(sync_errors=2)]
    clock.now = 0.1
    watch.check()  # too soon: not looked at
    clock.now = 0.6
    with pytest.raises(PgError):
        watch.check()


class Sleeper:
    """Advances the clock by what the watch sleeps; `then(at, rows)` changes the rows from then on."""

    def __init__(self, client, clock):
        self.client, self.clock, self.slept, self.changes = client, clock, 0.0, []

    def then(self, at: float, rows: list[dict]):
        self.changes.append((at, rows))
        return self

    def __call__(self, seconds):
        self.slept += seconds
        self.clock.now += seconds
        for at, rows in self.changes:
            if self.clock.now >= at:
                self.client.rows = rows


def test_a_worker_restarted_after_errors_that_fails_again_is_caught_by_one_look():
    """The race a single look used to lose: it fell between two runs of a failing worker."""
    client, clock = FakeClient([row(sync_errors=1, age=0.4)]), Clock()
    sleeper = Sleeper(client, clock).then(1.5, [row(sync_errors=2, age=None, worker=False)])
    watch = ApplyWatch(client, ["ae_sub"], clock=clock, single_look=True, sleep=sleeper)
    with pytest.raises(PgError, match="failed 1 time"):
        watch.check()
    assert 1.5 <= sleeper.slept < 2.5


def test_a_worker_restarted_after_errors_that_lives_is_trusted_once_settled():
    client, clock = FakeClient([row(sync_errors=1, age=1.0)]), Clock()
    sleeper = Sleeper(client, clock)
    watch = ApplyWatch(client, ["ae_sub"], clock=clock, single_look=True, sleep=sleeper)
    watch.check()
    assert 3.9 <= sleeper.slept <= 4.01  # until the worker would be RESTART_SETTLE (5 s) old, no longer


def test_an_old_worker_or_one_of_unknown_age_or_without_errors_costs_no_wait():
    for rows in ([row(sync_errors=3, age=600.0)], [row(sync_errors=3, age=None)], [row(age=0.1)]):
        client, clock = FakeClient(rows), Clock()
        sleeper = Sleeper(client, clock)
        ApplyWatch(client, ["ae_sub"], clock=clock, single_look=True, sleep=sleeper).check()
        assert sleeper.slept == 0, rows


def test_a_wait_that_looks_again_is_not_held_by_a_restarted_worker():
    client, clock = FakeClient([row(sync_errors=1, age=0.4)]), Clock()
    sleeper = Sleeper(client, clock)
    ApplyWatch(client, ["ae_sub"], clock=clock, sleep=sleeper).check()
    assert sleeper.slept == 0
