"""zerodowntime.migration.pg_cutover_watch on real servers: writers through a real PgBouncer into a
PostgreSQL of the test's own (pg_stat_statements preloaded, as roles/postgresql does; nothing of the
lab is touched, so the file runs in lane own, beside the rest), a baseline taken under them, then each fault the watch must
catch injected for real - slow statements (pg_sleep in a trigger), transactions rolled back (a
trigger failing a fifth of the inserts), clients waiting in PgBouncer (a lock held on the hot
table), the replication behind a watched slot stopped - and caught within one or two intervals.
Phase 5's use of it (a breach rolls the cutover back) is in test_phase5_cutover.py."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import psycopg
import pytest

from tests.lab import (
    LAB_PASSWORD,
    Clients,
    connect,
    gate_breached_told,
    run_module,
    run_playbook,
    throwaway_pgbouncer,
    throwaway_postgres,
    wait_for,
    webhook_receiver,
)

DATABASE = "zdm_watch"
SLOT = "zdm_watch_stream"
INTERVAL = 1.0


class Writers(Clients):
    """`count` threads inserting into probe through a pooler, each about every 5 ms (enough for every
    gate; without the pause this file used 165 s of CPU, with it 57), counting errors."""

    def __init__(self, port: int, count: int = 4):
        self.port = port
        self.committed = 0
        self.errors = 0
        super().__init__(count, "writer")

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="migrator",
                    password=LAB_PASSWORD,
                    dbname=DATABASE,
                    autocommit=True,
                    prepare_threshold=None,
                ) as conn:
                    while not self.stop.is_set():
                        try:
                            conn.execute("INSERT INTO probe (note) VALUES (%s)", ("watched",))
                            with self.lock:
                                self.committed += 1
                        except psycopg.errors.RaiseException:
                            with self.lock:
                                self.errors += 1
                        time.sleep(0.005)
            except psycopg.OperationalError:
                with self.lock:
                    self.errors += 1
                time.sleep(0.05)


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL of the file's own: pg_stat_statements preloaded and created in postgres, a
    superuser migrator (PgBouncer's client and admin user), the database DATABASE."""
    settings = dict(shared_preload_libraries="pg_stat_statements", wal_level="logical")
    with throwaway_postgres("zdm-watch-", **settings) as admin:
        with connect(admin) as conn:
            conn.execute(f"CREATE ROLE migrator SUPERUSER LOGIN REPLICATION PASSWORD '{LAB_PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER migrator")
            conn.execute("CREATE EXTENSION pg_stat_statements")
        yield dict(admin, login_user="migrator", login_db=DATABASE)


@pytest.fixture()
def watched(server):
    """A hot table, a PgBouncer (pool of 2) in front of it, writers through it, and the baseline
    taken under them."""
    with connect(server) as conn:
        conn.execute("DROP TABLE IF EXISTS probe; DROP FUNCTION IF EXISTS slow(); DROP FUNCTION IF EXISTS flaky()")
        conn.execute("CREATE TABLE probe (id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now())")
    with throwaway_pgbouncer({DATABASE: server}, pool_size=2) as pooler, Writers(pooler["port"]) as writers:
        time.sleep(1)  # every writer connected
        result = watch_module(dict(server, mode="baseline", baseline_seconds=3))
        assert not result.get("failed"), result
        yield {"server": server, "pooler": pooler, "writers": writers, "baseline": result["baseline"]}


@pytest.fixture()
def stream(server):
    """A logical replication stream of the test's own: pg_recvlogical on slot SLOT. Yields its process."""
    env = dict(os.environ, PGPASSWORD=LAB_PASSWORD)
    argv = ["pg_recvlogical", "-h", server["login_host"], "-p", str(server["login_port"]), "-U", "migrator", "-d", DATABASE]
    subprocess.run([*argv, "--slot", SLOT, "--create-slot", "--if-not-exists", "-P", "test_decoding"], env=env, check=True)
    streaming = [*argv, "--slot", SLOT, "--start", "-f", "/dev/null", "-F", "0", "-s", "1"]  # -F 0: confirms what it got at once
    process = subprocess.Popen(streaming, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for("the slot to stream", lambda: slot_active(server), timeout=30, interval=0.2)
        yield process
    finally:
        process.kill()
        process.wait()
        wait_for("the walsender to end", lambda: not slot_active(server), timeout=30, interval=0.2)
        with connect(server) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))


def slot_active(server: dict) -> bool:
    with connect(server) as conn:
        return conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone()[0]


def watch_module(args: dict, check: bool = False) -> dict:
    return run_module("zerodowntime.migration.pg_cutover_watch", args, check=check)[1]


def watch_args(watched: dict, **options) -> dict:
    pool = dict(watched["pooler"]["admin"], database=DATABASE)
    # each gate judged on one sample: these tests time how soon a real signal is caught (phase 5's test
    # runs the lab's breach_samples of 2, the unit tests the streaks)
    args = dict(
        watched["server"],
        mode="watch",
        baseline=watched["baseline"],
        watch_seconds=8,
        interval=INTERVAL,
        pgbouncers=[pool],
        breach_samples=1,
    )
    return dict(args, **options)


def breach_of(result: dict) -> dict:
    assert result.get("failed"), result
    return result["breach"]


def test_a_baseline_is_blues_statements_under_the_writers(watched):
    baseline = watched["baseline"]
    assert 2.5 < baseline["seconds"] < 6
    [insert] = [entry for entry in baseline["statements"] if entry["query"].startswith("INSERT INTO probe")]
    assert insert["calls"] > 100 and 0 < insert["mean_ms"] < 5
    assert "$1" in insert["query"]  # normalised: no value of the application's reaches the result


def test_a_healthy_server_passes_the_whole_watch_in_check_mode_too(watched):
    for check in (False, True):
        result = watch_module(watch_args(watched, watch_seconds=5), check=check)
        assert not result.get("failed"), result
        assert result["healthy"] and not result["changed"] and result["watched_seconds"] >= 5
        assert len(result["samples"]) >= 4
        assert all(sample["latency"] and sample["latency"]["ratio"] < 3 for sample in result["samples"])
        assert all(sample["client_wait_ms"] < 1000 for sample in result["samples"])


def test_slow_statements_breach_the_latency_gate_within_an_interval(watched):
    with connect(watched["server"]) as conn:
        conn.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(0.03); RETURN NEW; END$$;"
            "CREATE TRIGGER slow BEFORE INSERT ON probe FOR EACH ROW EXECUTE FUNCTION slow()"
        )
    result = watch_module(watch_args(watched, min_calls=5, max_client_wait_ms=0))
    breach = breach_of(result)
    assert breach["signal"] == "latency_ratio" and breach["value"] > 3 and breach["gate"] == 3
    assert breach["at_s"] <= 2 * INTERVAL + 0.5
    assert "latency_ratio" in result["msg"] and "over the gate 3.0" in result["msg"]


def test_rolled_back_transactions_breach_the_rollback_gate(watched):
    rollbacks_injected(watched["server"])
    result = watch_module(watch_args(watched))
    breach = breach_of(result)
    assert breach["signal"] == "rollback_rate" and 0.1 < breach["value"] < 0.3
    assert breach["at_s"] <= 2 * INTERVAL + 0.5
    assert watched["writers"].errors > 0  # the writers saw the failures the gate counted


def rollbacks_injected(server: dict) -> None:
    """A fifth of the inserts into probe fail (the writers' transactions roll back)."""
    with connect(server) as conn:
        conn.execute(
            "CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN IF random() < 0.2 THEN RAISE EXCEPTION 'injected'; END IF; RETURN NEW; END$$;"
            "CREATE TRIGGER flaky BEFORE INSERT ON probe FOR EACH ROW EXECUTE FUNCTION flaky()"
        )


def test_the_roles_watch_tells_a_webhook_of_the_breach_and_fails_with_the_watchs_message(watched, stream):
    """roles/migration tasks_from cutover_watch (watch_mode watch, as phase 5 runs it) with
    migration_notify_webhooks set: the breach reaches the webhook as one gate_breached event of
    cutover_watch (Slack-compatible), then the play fails with the watch's message."""
    rollbacks_injected(watched["server"])
    server = {key: value for key, value in watched["server"].items() if key != "login_password"}
    pool = dict(watched["pooler"]["admin"], database=DATABASE)
    with webhook_receiver() as (url, taken):
        role_vars = {
            "watch_mode": "watch",
            "migration_blue": server,
            "migration_green": server,
            "migration_password": LAB_PASSWORD,
            "migration_pgbouncers": [pool],
            "migration_pgbouncer_password": LAB_PASSWORD,
            "migration_reverse_subscription": SLOT,
            "migration_watch_baseline": watched["baseline"],
            "migration_watch_seconds": 8,
            "migration_watch_interval": INTERVAL,
            "migration_watch_gates": {"breach_samples": 1},
            "migration_name": "zdm-watch",
            "migration_notify_webhooks": [{"name": "oncall", "url": url}],
        }
        task = {
            "name": "the watch",
            "ansible.builtin.include_role": {"name": "zerodowntime.migration.migration", "tasks_from": "cutover_watch"},
        }
        run = run_playbook([{"name": "watch green", "hosts": "lab-db", "gather_facts": False, "tasks": [dict(task, vars=role_vars)]}])
    assert run.status == "failed", run.stdout
    [watch] = run.task_results("Watch green against the baseline of blue")
    breach = breach_of(watch)
    assert breach["signal"] == "rollback_rate", breach
    [stopped] = run.task_results("Stop on the watch's failure")
    assert stopped["failed"] and stopped["msg"] == watch["msg"], stopped
    event, fields = gate_breached_told(taken, "zdm-watch", "cutover_watch")
    assert event["details"] == breach and "rollback_rate" in event["summary"], event
    assert fields["signal"] == "rollback_rate", fields


def test_a_lock_on_the_hot_table_breaches_the_client_wait_gate(watched):
    """The lock holds both server connections of the pool; the other writers wait in PgBouncer."""
    release = threading.Event()

    def hold_lock():
        with connect(watched["server"]) as conn, conn.transaction():
            conn.execute("LOCK TABLE probe IN ACCESS EXCLUSIVE MODE")
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        result = watch_module(watch_args(watched, max_client_wait_ms=500))
    finally:
        release.set()
        holder.join()
    breach = breach_of(result)
    assert breach["signal"] == "client_wait_ms" and breach["value"] > 500
    assert breach["at_s"] <= 3 * INTERVAL + 0.5


def test_a_server_refusing_connections_breaches_the_client_wait_gate(watched):
    """Two seconds into the watch the database stops taking connections and the pool's server
    connections end (the watch's own session is spared): PgBouncer cannot open new ones, and the
    writers wait in it."""
    results = []
    watcher = threading.Thread(target=lambda: results.append(watch_module(watch_args(watched, max_client_wait_ms=500))))
    watcher.start()
    time.sleep(4)  # the module started, connected and watching
    try:
        with connect(dict(watched["server"], login_db="postgres")) as conn:
            conn.execute(f"ALTER DATABASE {DATABASE} ALLOW_CONNECTIONS false")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name <> %s",
                (DATABASE, "zerodowntime.migration"),
            )
        watcher.join(timeout=60)
    finally:
        with connect(dict(watched["server"], login_db="postgres")) as conn:
            conn.execute(f"ALTER DATABASE {DATABASE} ALLOW_CONNECTIONS true")
    [result] = results
    breach = breach_of(result)
    assert breach["signal"] == "client_wait_ms" and breach["value"] > 500
    healthy_before = [sample for sample in result["samples"] if sample["client_wait_ms"] < 500]
    assert healthy_before and breach["at_s"] - healthy_before[-1]["at_s"] <= 2 * INTERVAL + 0.5


def test_an_active_stream_passes_and_a_stopped_one_breaches_the_slot_gates(watched, stream):
    streaming = watch_module(watch_args(watched, watch_seconds=3, reverse_slot=SLOT))
    assert not streaming.get("failed"), streaming
    assert all(sample["reverse"]["active"] for sample in streaming["samples"])

    stream.kill()  # the replication stops; the writers' WAL piles up behind its slot
    stream.wait()
    result = watch_module(watch_args(watched, reverse_slot=SLOT, max_reverse_inactive_seconds=2, max_reverse_lag_bytes=0))
    breach = breach_of(result)
    assert breach["signal"] == "reverse_inactive_seconds" and breach["value"] > 2
    assert breach["at_s"] <= 4 * INTERVAL + 0.5
    assert all(sample["reverse"]["active"] is False for sample in result["samples"])

    lagging = watch_module(watch_args(watched, reverse_slot=SLOT, max_reverse_inactive_seconds=0, max_reverse_lag_bytes=262144))
    breach = breach_of(lagging)
    assert breach["signal"] == "reverse_lag_bytes" and breach["value"] > 262144 and breach["at_s"] <= 2 * INTERVAL + 0.5


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"reverse_slot": "no_such_slot"}, "there is no replication slot 'no_such_slot'"),
        ({"reverse_slot": 'x"; DROP TABLE probe; --'}, "reverse_slot"),
        ({"statements_db": DATABASE}, "pg_stat_statements is not installed in database 'zdm_watch'"),
        ({"login_password": "wrong"}, "authentication failed for user 'migrator'"),
        ({"baseline": None}, "mode watch needs baseline"),
        ({"interval": 0}, "interval must be above 0"),
        ({"max_rollback_rate": 2}, "max_rollback_rate is a share"),
        ({"breach_samples": 0}, "breach_samples is a count of samples in a row, at least 1"),
        ({"breach_samples": 5}, "could never breach"),
    ],
)
def test_bad_input_is_named_and_nothing_is_watched(watched, options, expected):
    args = watch_args(watched, watch_seconds=2)
    args.update(options)
    result = watch_module(args)
    assert result.get("failed") and expected in result["msg"], result
    assert "samples" not in result
    assert "wrong" not in result["msg"]  # a password given is never quoted
    with connect(watched["server"]) as conn:
        assert conn.execute("SELECT to_regclass('probe') IS NOT NULL").fetchone()[0]


def test_a_login_that_cannot_read_other_users_statements_is_told_the_grant(watched):
    with connect(watched["server"]) as conn:
        conn.execute("DROP ROLE IF EXISTS zdm_watcher")
        conn.execute(f"CREATE ROLE zdm_watcher LOGIN PASSWORD '{LAB_PASSWORD}'")
    try:
        result = watch_module(dict(watch_args(watched, watch_seconds=2), login_user="zdm_watcher"))
        assert result.get("failed") and "GRANT pg_read_all_stats TO zdm_watcher" in result["msg"], result
    finally:
        with connect(watched["server"]) as conn:
            conn.execute("DROP ROLE zdm_watcher")
