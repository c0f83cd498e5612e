"""A failing subscription worker named at once (issue 15): a column added on blue only (the
issue's `ADD COLUMN note text` and one row setting it) stops green's apply worker; the waits of
pg_subscription (wait_for_sync) and pg_replication_lag (with subscriber) fail within seconds naming
the subscription, the table and the missing column, not after their timeout. Once repaired, the
same waits pass: past errors counted in pg_stat_subscription_stats are no false alarm.

Throwaway databases of this file's own on blue and green; the subscription is dropped with its
slot afterwards (no slot is left on blue). pg_switchover's preparation: test_pg_switchover.py."""

from __future__ import annotations

import time

import pytest

from tests.lab import (
    BLUE,
    GREEN,
    LAB_PASSWORD,
    connect,
    drop_database,
    drop_replication,
    recreate_database,
    run_module,
    run_playbook,
    wait_for,
)

DB = "zdm_apply_errors"
PUBLICATION, SUBSCRIPTION = "zdm_ae_pub", "zdm_ae_sub"
PUBLISHER = {"host": BLUE["login_host"], "port": BLUE["login_port"], "dbname": DB, "user": "replicator", "password": LAB_PASSWORD}
BLUE_DB, GREEN_DB = dict(BLUE, login_db=DB), dict(GREEN, login_db=DB)
FAST = 5.0  # seconds: a failing worker must be named within this, with a timeout of 120 s


def error_count() -> int:
    with connect(GREEN_DB) as conn:
        row = conn.execute(
            "SELECT apply_error_count + sync_error_count FROM pg_stat_subscription_stats WHERE subname = %s", (SUBSCRIPTION,)
        ).fetchone()
    return row[0] if row else 0


def tables_ready() -> bool:
    with connect(GREEN_DB) as conn:
        states = conn.execute(
            "SELECT r.srsubstate FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s",
            (SUBSCRIPTION,),
        ).fetchall()
    return bool(states) and all(state == "r" for (state,) in states)


def slots_on_blue() -> list[str]:
    with connect(BLUE) as conn:
        return [name for (name,) in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (DB,)).fetchall()]


@pytest.fixture(scope="module")
def replication(lab):
    """audit_log on blue and green, blue -> green subscribed and ready. Afterwards the
    subscription is dropped (with its slot), then both databases."""
    drop_replication(DB, GREEN, BLUE)
    recreate_database(BLUE, DB)
    recreate_database(GREEN, DB)
    try:
        with connect(BLUE_DB) as conn:
            conn.execute("CREATE TABLE audit_log (id bigint PRIMARY KEY, message text NOT NULL)")
            conn.execute("INSERT INTO audit_log SELECT g, 'row ' || g FROM generate_series(1, 100) g")
            conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator")
            conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE audit_log")
        with connect(GREEN_DB) as conn:
            conn.execute("CREATE TABLE audit_log (id bigint PRIMARY KEY, message text NOT NULL)")
            conn.execute(
                f"CREATE SUBSCRIPTION {SUBSCRIPTION} CONNECTION 'host={PUBLISHER['host']} port={PUBLISHER['port']} dbname={DB} "
                f"user=replicator password={LAB_PASSWORD}' PUBLICATION {PUBLICATION}"
            )
        wait_for("the initial copy of audit_log", tables_ready, timeout=60, interval=0.2)
        yield
    finally:
        with connect(GREEN_DB) as conn:  # DROP SUBSCRIPTION drops its slot on blue
            if conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (SUBSCRIPTION,)).fetchone():
                conn.execute(f"DROP SUBSCRIPTION {SUBSCRIPTION}")
        drop_replication(DB, GREEN, BLUE)
        for endpoint in (GREEN, BLUE):
            drop_database(endpoint, DB)
        assert slots_on_blue() == []


def wait_for_sync_args(**overrides) -> dict:
    return dict(GREEN_DB, name=SUBSCRIPTION, publications=[PUBLICATION], publisher=dict(PUBLISHER), wait_for_sync=True, **overrides)


def lag_args(**overrides) -> dict:
    """A gate on the subscription's walsender streaming (blue's other walsenders are the lab's)."""
    return dict(BLUE_DB, expected_replicas=[SUBSCRIPTION], subscriber=dict(GREEN_DB), subscriptions=[SUBSCRIPTION], **overrides)


def lag_gate_play() -> list[dict]:
    """The migration role's lag gate on this file's subscription, its subscriber given."""
    gate = {
        "lag_bound_bytes": 0,
        "lag_label": "apply errors test",
        "lag_server": BLUE_DB,
        "lag_slot": SUBSCRIPTION,
        "lag_subscriber": GREEN_DB,
    }
    include = {"name": "zerodowntime.migration.migration", "tasks_from": "replication_lag"}
    tasks = [{"ansible.builtin.include_role": include, "vars": gate}]
    return [{"name": "lag gate", "hosts": "lab-db", "gather_facts": False, "tasks": tasks}]


def timed(module: str, args: dict) -> tuple[dict, float]:
    started = time.monotonic()
    result = run_module(module, args)[1]
    return result, time.monotonic() - started


def assert_named(result: dict, elapsed: float) -> None:
    assert result["failed"] is True, result
    assert elapsed < FAST, f"took {elapsed:.1f} s: {result['msg']}"
    print(f"named in {elapsed:.1f} s: {result['msg']}")
    message = result["msg"]
    assert f"'{SUBSCRIPTION}'" in message, message
    assert "public.audit_log" in message and 'missing replicated column: "note"' in message, message
    assert result["apply_error"]["subscription"] == SUBSCRIPTION
    assert any(failure["table"] == "public.audit_log" for failure in result["apply_error"]["failures"])


def test_a_column_added_on_blue_only_is_named_at_once(replication):
    before = error_count()
    with connect(BLUE_DB) as conn:
        conn.execute("ALTER TABLE audit_log ADD COLUMN note text")
        conn.execute("INSERT INTO audit_log (id, message, note) VALUES (1001, 'deploy', 'set by the new release')")
    wait_for("green's apply worker to fail", lambda: error_count() > before, timeout=30, interval=0.2)

    result, elapsed = timed("zerodowntime.migration.pg_subscription", wait_for_sync_args(timeout=120, max_lag_bytes=0))
    assert_named(result, elapsed)

    result, elapsed = timed("zerodowntime.migration.pg_replication_lag", lag_args(timeout=120))
    assert_named(result, elapsed)

    # Without a bound to wait for, a failing apply worker is still named (one look, from the log).
    result, elapsed = timed("zerodowntime.migration.pg_replication_lag", dict(BLUE_DB, subscriber=dict(GREEN_DB)))
    assert_named(result, elapsed)

    # The phases' lag gate (roles/migration replication_lag) watches the subscriber too: the failure
    # names the broken worker, not "no walsender streams the slot".
    run = run_playbook(lag_gate_play(), extravars={"migration_password": LAB_PASSWORD})
    results = run.task_results("Read the replication of the slot's server - apply errors test")
    assert run.status == "failed" and len(results) == 1, run.stdout
    assert_named(results[0], 0)


def test_repaired_subscription_is_no_false_alarm(replication):
    """The column added on green too: the worker applies the row; the counted errors of the past
    do not fail the waits."""
    with connect(GREEN_DB) as conn:
        conn.execute("ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS note text")

    def applied() -> bool:
        with connect(GREEN_DB) as conn:
            return conn.execute("SELECT count(*) FROM audit_log WHERE id = 1001").fetchone()[0] == 1

    wait_for("the row to arrive on green", applied, timeout=30, interval=0.2)
    assert error_count() > 0  # the past errors stay counted
    with connect(BLUE_DB) as conn:
        conn.execute("INSERT INTO audit_log (id, message, note) VALUES (1002, 'after the fix', 'fine')")

    result = run_module("zerodowntime.migration.pg_subscription", wait_for_sync_args(timeout=60, max_lag_bytes=0))[1]
    assert result["failed"] is False, result["msg"]
    result = run_module("zerodowntime.migration.pg_replication_lag", lag_args(timeout=60))[1]
    assert result["failed"] is False, result.get("msg")
    assert SUBSCRIPTION in [replica["application_name"] for replica in result["replicas"]]
    # A subscription restarted by an ALTER (its worker briefly absent) with errors counted: no alarm either.
    with connect(GREEN_DB) as conn:
        conn.execute(f"ALTER SUBSCRIPTION {SUBSCRIPTION} SET (synchronous_commit = 'on')")
    result = run_module("zerodowntime.migration.pg_replication_lag", lag_args(timeout=60))[1]
    assert result["failed"] is False, result.get("msg")
