"""zerodowntime.migration.pg_subscription between the lab's blue (publisher) and green
(subscriber), in scratch databases of its own."""

from __future__ import annotations

import json
import threading
import time

import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.subscription import Subscription, build_conninfo
from tests.lab import BLUE, GREEN, LAB_PASSWORD, connect, drop_database, recreate_database, run_module, where

MODULE = "zerodowntime.migration.pg_subscription"
DB = "zdm_sub_test"
PUBLISHER = {"host": BLUE["login_host"], "port": BLUE["login_port"], "dbname": DB, "user": "replicator", "password": LAB_PASSWORD}
SUBSCRIBER = dict(GREEN, login_db=DB)
HOSTILE = 'a"; DROP TABLE zdm_victim; --'


def drop_subscriptions() -> None:
    with connect(SUBSCRIBER) as green:
        for (name,) in green.execute(
            "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = %s)", (DB,)
        ).fetchall():
            green.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident(name)))
            green.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident(name)))
            green.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident(name)))
    with connect(BLUE, login_db="postgres") as blue:
        blue.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s AND NOT active", (DB,))


@pytest.fixture(scope="module")
def databases(lab):
    """blue: two published tables with rows; green: the same tables, `items` hash-partitioned."""
    recreate_database(BLUE, DB)
    recreate_database(GREEN, DB)
    with connect(BLUE, login_db=DB) as blue:
        blue.execute("CREATE TABLE items (id bigint PRIMARY KEY, tenant_id int NOT NULL, note text)")
        blue.execute("INSERT INTO items SELECT g, g % 17, 'row ' || g FROM generate_series(1, 200000) g")
        # green's key is (tenant_id, id): blue must send tenant_id with every UPDATE/DELETE
        blue.execute("CREATE UNIQUE INDEX items_tenant_id_id_key ON items (tenant_id, id)")
        blue.execute("ALTER TABLE items REPLICA IDENTITY USING INDEX items_tenant_id_id_key")
        blue.execute("CREATE TABLE tags (id int PRIMARY KEY, label text)")
        blue.execute("INSERT INTO tags SELECT g, 'tag ' || g FROM generate_series(1, 100) g")
        blue.execute("CREATE TABLE extra (id int PRIMARY KEY)")
        blue.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator")
        blue.execute("CREATE PUBLICATION zdm_pub FOR TABLE items, tags")
    with connect(SUBSCRIBER) as green:
        columns = "id bigint NOT NULL, tenant_id int NOT NULL, note text, PRIMARY KEY (tenant_id, id)"
        green.execute(f"CREATE TABLE items ({columns}) PARTITION BY HASH (tenant_id)")
        for remainder in range(4):
            green.execute(f"CREATE TABLE items_p{remainder} PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER {remainder})")
        green.execute("CREATE UNIQUE INDEX ON items_p0 (id)")  # not required; shows extra indexes are fine
        green.execute("CREATE TABLE tags (id int PRIMARY KEY, label text)")
        green.execute("CREATE TABLE extra (id int PRIMARY KEY)")
        green.execute("CREATE TABLE zdm_victim (id int)")
    yield
    drop_subscriptions()
    for endpoint in (GREEN, BLUE):
        drop_database(endpoint, DB)


def args(**overrides) -> dict:
    base = dict(SUBSCRIBER, name="zdm_sub", publications=["zdm_pub"], publisher=dict(PUBLISHER))
    base.update(overrides)
    return base


class Writer(threading.Thread):
    """Inserts, updates and deletes on blue while the initial copy runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.operations = 0

    def run(self):
        with connect(BLUE, login_db=DB) as blue:
            next_id = 1_000_000
            while not self.stop.is_set():
                next_id += 1
                blue.execute("INSERT INTO items VALUES (%s, %s, 'written during copy')", (next_id, next_id % 17))
                blue.execute("UPDATE items SET note = 'updated during copy' WHERE id = %s", (next_id % 200000 + 1,))
                blue.execute("DELETE FROM items WHERE id = %s", (next_id % 200000 + 7,))
                self.operations += 3
                time.sleep(0.002)


def table_digest(endpoint: dict, table: str) -> tuple:
    with connect(endpoint, login_db=DB) as conn:
        return conn.execute(sql.SQL("SELECT count(*), sum(hashtext(t::text)) FROM {} AS t").format(ident(table))).fetchone()


def wait_until_equal(table: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while table_digest(BLUE, table) != table_digest(SUBSCRIBER, table):
        assert time.monotonic() < deadline, f"{table} differs between blue and green after {seconds} s"
        time.sleep(0.5)


def test_check_mode_creates_nothing_and_masks_the_password(databases):
    run, result = run_module(MODULE, args(), check=True, diff=True, through_ansible=True)
    assert result["failed"] is False, result
    assert result["changed"] is True
    assert result["queries"][0].startswith('CREATE SUBSCRIPTION "zdm_sub" CONNECTION')
    assert "password=********" in result["queries"][0]
    assert LAB_PASSWORD not in json.dumps(run.events)
    with connect(SUBSCRIBER) as green:
        assert green.execute("SELECT count(*) FROM pg_subscription WHERE subname = 'zdm_sub'").fetchone()[0] == 0


class ProgressReader(threading.Thread):
    """Reads the step's progress in green's migration_progress table while the copy runs, keeping each change."""

    def __init__(self, step: str):
        super().__init__(daemon=True)
        self.step = step
        self.stop = threading.Event()
        self.seen: list[dict] = []
        self.errors: list[Exception] = []

    def run(self):
        try:
            with connect(SUBSCRIBER) as green:
                while not self.stop.is_set():
                    found = green.execute("SELECT progress -> %s FROM migration_progress WHERE phase = 'phase2_schema'", (self.step,))
                    value = found.fetchone()[0]
                    if value and (not self.seen or self.seen[-1] != value):
                        self.seen.append(value)
                    time.sleep(0.02)
        except Exception as exc:
            self.errors.append(exc)


def test_sync_under_writes_replicates_updates_and_deletes_into_partitions(databases):
    with connect(SUBSCRIBER) as green:  # where the copy reports its progress (a migration_state table)
        green.execute("DROP TABLE IF EXISTS migration_progress")
        green.execute(
            "CREATE TABLE migration_progress (phase text PRIMARY KEY, status text NOT NULL, started_at timestamptz, "
            "completed_at timestamptz, attempts integer NOT NULL DEFAULT 0, details jsonb NOT NULL DEFAULT '{}', "
            "progress jsonb NOT NULL DEFAULT '{}')"
        )
        green.execute("INSERT INTO migration_progress (phase, status, started_at, attempts) VALUES ('phase2_schema', 'running', now(), 1)")
    progress = dict(SUBSCRIBER, phase="phase2_schema", step="initial copy", every=0.1)
    reader = ProgressReader("initial copy")
    reader.start()
    writer = Writer()
    writer.start()
    try:
        run, result = run_module(
            MODULE, args(wait_for_sync=True, timeout=120, poll_interval=0.2, progress=progress), diff=True, through_ansible=True
        )
    finally:
        time.sleep(1)  # writes keep going a moment after the copy
        writer.stop.set()
        writer.join()
        reader.stop.set()
        reader.join()
    assert result["failed"] is False, result.get("msg")
    assert not result.get("warnings"), result["warnings"]
    assert reader.errors == []
    running = [seen for seen in reader.seen if seen["state"] == "running"]
    assert running, reader.seen
    assert all((seen["unit"], seen["total"]) == ("tables", 2) for seen in running), running
    assert running[0]["done"] < 2 and running[0]["updated_at"]
    copying = [item for seen in running for name, item in seen.get("items", {}).items() if name == "public.items"]
    assert all(item["unit"] == "bytes" and item["total"] > 0 for item in copying), copying
    assert (reader.seen[-1]["state"], reader.seen[-1]["done"], reader.seen[-1]["total"]) == ("done", 2, 2), reader.seen[-1]
    assert result["changed"] is True
    assert (result["tables_ready"], result["tables_total"]) == (2, 2)
    assert {t["table_name"]: t["state"] for t in result["tables"]} == {"public.items": "r", "public.tags": "r"}
    assert result["history"] and result["history"][-1]["tables_ready"] == 2
    assert result["subscription"]["enabled"] is True
    assert "password=********" in result["subscription"]["conninfo"]
    assert "password=********" in result["diff"]["after"]["conninfo"]
    assert LAB_PASSWORD not in json.dumps(run.events)
    assert writer.operations > 0
    wait_until_equal("items")
    wait_until_equal("tags")
    with connect(SUBSCRIBER) as green:
        assert green.execute("SELECT count(*) FROM items WHERE note = 'updated during copy'").fetchone()[0] > 0
        assert green.execute("SELECT count(*) FROM items WHERE note = 'written during copy'").fetchone()[0] > 0
        partitions_used = green.execute("SELECT count(DISTINCT tableoid) FROM items").fetchone()[0]
        assert partitions_used == 4


def test_second_run_changes_nothing(databases):
    result = run_module(MODULE, args())[1]
    assert (result["failed"], result["changed"], result["queries"]) == (False, False, [])
    assert result["lag_bytes"] is not None


def test_disable_and_enable_show_in_the_diff(databases):
    disabled = run_module(MODULE, dict(SUBSCRIBER, name="zdm_sub", enabled=False), diff=True)[1]
    assert disabled["changed"] is True
    assert (disabled["diff"]["before"]["enabled"], disabled["diff"]["after"]["enabled"]) == (True, False)
    assert disabled["queries"] == ['ALTER SUBSCRIPTION "zdm_sub" DISABLE']
    enabled = run_module(MODULE, dict(SUBSCRIBER, name="zdm_sub", enabled=True))[1]
    assert enabled["changed"] is True and enabled["subscription"]["enabled"] is True


def test_options_are_read_back_and_only_changes_are_applied(databases):
    changed = run_module(MODULE, args(binary=True, disable_on_error=True, synchronous_commit="local"))[1]
    assert changed["changed"] is True
    assert changed["queries"] == [
        "ALTER SUBSCRIPTION \"zdm_sub\" SET (binary = true, disable_on_error = true, synchronous_commit = 'local')"
    ]
    again = run_module(MODULE, args(binary=True, disable_on_error=True, synchronous_commit="local"))[1]
    assert again["changed"] is False


def test_refresh_adds_a_table_published_later(databases):
    with connect(BLUE, login_db=DB) as blue:
        blue.execute("INSERT INTO extra SELECT generate_series(1, 50)")
        blue.execute("ALTER PUBLICATION zdm_pub ADD TABLE extra")
    refreshed = run_module(MODULE, args(refresh=True, wait_for_sync=True, timeout=120))[1]
    assert refreshed["failed"] is False, refreshed.get("msg")
    assert refreshed["changed"] is True
    assert refreshed["refreshed"] == {"added": ["public.extra"], "removed": []}
    assert refreshed["tables_total"] == 3
    wait_until_equal("tags")
    with connect(SUBSCRIBER) as green:
        assert green.execute("SELECT count(*) FROM extra").fetchone()[0] == 50
    assert run_module(MODULE, args(refresh=True))[1]["changed"] is False


def test_a_failing_copy_is_named_at_once(databases):
    """The table's copy fails on every retry: the wait ends within seconds, not at its timeout,
    naming the table and the error."""
    with connect(BLUE, login_db=DB) as blue:
        blue.execute("CREATE TABLE broken (id int PRIMARY KEY, payload text)")
        blue.execute("INSERT INTO broken VALUES (1, 'x')")
        blue.execute("GRANT SELECT ON broken TO replicator")
        blue.execute("CREATE PUBLICATION zdm_pub_broken FOR TABLE broken")
    with connect(SUBSCRIBER) as green:
        green.execute("CREATE TABLE broken (id int PRIMARY KEY)")  # no payload column: the copy fails
    started = time.monotonic()
    result = run_module(
        MODULE, args(name="zdm_sub_broken", publications=["zdm_pub_broken"], wait_for_sync=True, timeout=120, poll_interval=0.5)
    )[1]
    assert result["failed"] is True
    assert time.monotonic() - started < 60
    assert f"subscription 'zdm_sub_broken' on the subscriber {where(GREEN)} is failing" in result["msg"]
    assert "public.broken" in result["msg"] and "payload" in result["msg"]


def test_timeout_names_the_tables_not_ready(databases):
    """A copy that waits (blue's table locked) fails at the timeout, naming the table not ready."""
    with connect(BLUE, login_db=DB) as blue:
        blue.execute("CREATE TABLE held (id int PRIMARY KEY)")
        blue.execute("INSERT INTO held VALUES (1)")
        blue.execute("GRANT SELECT ON held TO replicator")
        blue.execute("CREATE PUBLICATION zdm_pub_held FOR TABLE held")
    with connect(SUBSCRIBER) as green:
        green.execute("CREATE TABLE held (id int PRIMARY KEY)")
    # Created disabled first: creating its slot would wait for the lock's transaction.
    created = run_module(MODULE, args(name="zdm_sub_held", publications=["zdm_pub_held"], enabled=False))[1]
    assert created["failed"] is False, created.get("msg")
    with connect(BLUE, login_db=DB) as locker:
        locker.autocommit = False
        locker.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        result = run_module(
            MODULE,
            args(name="zdm_sub_held", publications=["zdm_pub_held"], enabled=True, wait_for_sync=True, timeout=10, poll_interval=0.5),
        )[1]
        locker.rollback()
    assert result["failed"] is True
    assert "subscription 'zdm_sub_held': 1 of 1 tables not ready after" in result["msg"]
    assert "public.held" in result["msg"]
    assert result["tables"][0]["table_name"] == "public.held"
    assert result["history"]


def test_creation_held_by_a_long_transaction_is_bounded_and_named(databases):
    """Creating the slot waits for every transaction with an ID on the publisher: the module gives
    up at its timeout, names the transaction and leaves nothing behind."""
    with connect(BLUE, login_db=DB) as blue:
        blue.execute("CREATE TABLE waited (id int PRIMARY KEY)")
        blue.execute("GRANT SELECT ON waited TO replicator")
        blue.execute("CREATE PUBLICATION zdm_pub_waited FOR TABLE waited")
    with connect(SUBSCRIBER) as green:
        green.execute("CREATE TABLE waited (id int PRIMARY KEY)")
    with connect(BLUE, login_db=DB) as long_transaction:
        long_transaction.autocommit = False
        long_transaction.execute("INSERT INTO waited VALUES (1)")  # takes a transaction ID
        pid = long_transaction.info.backend_pid
        started = time.monotonic()
        result = run_module(MODULE, args(name="zdm_sub_waited", publications=["zdm_pub_waited"], timeout=5))[1]
        elapsed = time.monotonic() - started
        long_transaction.rollback()
    assert result["failed"] is True
    assert elapsed < 60
    assert "subscription 'zdm_sub_waited' was not created within timeout (5 s)" in result["msg"]
    assert f"pid {pid} (user migrator, database {DB}" in result["msg"]  # its state is hidden from replicator
    assert "nothing was created" in result["msg"]
    assert subscription_row("zdm_sub_waited") is None
    with connect(BLUE, login_db="postgres") as blue:
        assert blue.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'zdm_sub_waited'").fetchone()[0] == 0


def test_missing_subscription_without_what_creates_it(databases):
    result = run_module(MODULE, dict(SUBSCRIBER, name="zdm_nothing_here", enabled=True))[1]
    assert result["failed"] is True
    assert (
        f"subscription 'zdm_nothing_here' does not exist on {where(GREEN)}: to create it, give publications and publisher" in result["msg"]
    )
    assert run_module(MODULE, dict(SUBSCRIBER, name="zdm_nothing_here", state="absent"))[1]["changed"] is False


def subscription_row(name: str):
    with connect(SUBSCRIBER) as green:
        return green.execute("SELECT subenabled, subslotname, subconninfo FROM pg_subscription WHERE subname = %s", (name,)).fetchone()


def test_wrong_publisher_password_is_named_and_hidden(databases):
    run, result = run_module(MODULE, args(name="zdm_sub_badpw", publisher=dict(PUBLISHER, password="Bad-Pass-77")), through_ansible=True)
    assert result["failed"] is True
    # the publisher's connection is named, with its fix - not the module's own login
    assert result["msg"].startswith(
        f"the publisher at {where(BLUE)} refused authentication for user 'replicator' "
        '(password authentication failed for user "replicator") when the module connected to it: '
        "this is the subscription's connection to the publisher (the options under publisher), not the module's own login"
    ), result["msg"]
    assert "fix publisher.password (or publisher.user), or pg_hba.conf on the publisher" in result["msg"]
    assert "check login_user and login_password" not in result["msg"]
    assert "Bad-Pass-77" not in json.dumps(run.events)
    assert subscription_row("zdm_sub_badpw") is None


def test_publisher_password_refused_to_the_subscriber_by_create_subscription(databases):
    """CREATE SUBSCRIPTION itself: the subscriber server connects to the publisher and fails with
    SQLSTATE 08006 (what happens when the module's own check reached the publisher but the
    subscriber cannot, e.g. another pg_hba.conf line for the subscriber's address)."""
    conninfo = build_conninfo(dict(PUBLISHER, password="Bad-Pass-77"))
    with Client(SUBSCRIBER) as client, pytest.raises(PgError) as refused:
        Subscription(client, "zdm_sub_badpw").create({"conninfo": conninfo, "publications": ["zdm_pub"]})
    assert str(refused.value).startswith(
        f"cannot create subscription 'zdm_sub_badpw': the subscriber {where(GREEN)} could not connect to the publisher: "
        f"the publisher at {where(BLUE)} refused authentication for user 'replicator' "
        '(password authentication failed for user "replicator"); nothing was created: '
        "this is the subscription's connection to the publisher (the options under publisher), not the module's own login"
    ), str(refused.value)
    assert "Bad-Pass-77" not in str(refused.value)
    assert subscription_row("zdm_sub_badpw") is None


def test_drop_when_the_publisher_refuses_the_password_names_it_and_changes_nothing(databases):
    created = run_module(MODULE, args(name="zdm_sub_refused", publisher=dict(PUBLISHER, password="Bad-Pass-77"), connect=False))[1]
    assert created["failed"] is False, created.get("msg")
    before = subscription_row("zdm_sub_refused")
    assert before[1] == "zdm_sub_refused"
    run, refused = run_module(MODULE, dict(SUBSCRIBER, name="zdm_sub_refused", state="absent"), through_ansible=True)
    assert refused["failed"] is True and refused["changed"] is False
    assert refused["msg"].startswith(
        f"cannot drop subscription 'zdm_sub_refused': the publisher at {where(BLUE)} refused authentication for user "
        "'replicator' (password authentication failed for user \"replicator\"), and DROP SUBSCRIPTION must drop the slot "
        "'zdm_sub_refused' there; nothing was changed."
    ), refused["msg"]
    assert "the right publisher.password runs ALTER SUBSCRIPTION ... CONNECTION" in refused["msg"]
    assert (
        "set drop_slot: false to disable the subscription, detach the slot (ALTER SUBSCRIPTION ... SET (slot_name = NONE))"
        in (refused["msg"])
    )
    assert "unreachable" not in refused["msg"]
    assert "Bad-Pass-77" not in json.dumps(run.events)
    assert subscription_row("zdm_sub_refused") == before  # not dropped, not disabled, slot still attached
    dropped = run_module(MODULE, dict(SUBSCRIBER, name="zdm_sub_refused", state="absent", drop_slot=False))[1]
    assert dropped["changed"] is True
    assert subscription_row("zdm_sub_refused") is None


def test_wrong_subscriber_credentials(databases):
    result = run_module(MODULE, args(login_password="nope-nope"))[1]
    assert result["failed"] is True
    assert f"authentication failed for user 'migrator' on {where(GREEN)}" in result["msg"]


def test_publisher_without_logical_wal_is_refused_with_the_fix(databases, replica_wal_server):
    publisher = {
        "host": replica_wal_server["login_host"],
        "port": replica_wal_server["login_port"],
        "dbname": "postgres",
        "user": "postgres",
        "password": LAB_PASSWORD,
    }
    result = run_module(MODULE, args(name="zdm_sub_nolog", publisher=publisher))[1]
    assert result["failed"] is True
    assert "wal_level is 'replica'" in result["msg"] and "wal_level=logical" in result["msg"]


def test_hostile_name_round_trips_and_executes_nothing(databases):
    created = run_module(MODULE, args(name=HOSTILE, connect=False, slot_name="zdm_hostile_slot"))[1]
    assert created["failed"] is False, created.get("msg")
    with connect(SUBSCRIBER) as green:
        assert green.execute("SELECT count(*) FROM pg_subscription WHERE subname = %s", (HOSTILE,)).fetchone()[0] == 1
        assert green.execute("SELECT to_regclass('zdm_victim')").fetchone()[0] is not None
    dropped = run_module(MODULE, dict(SUBSCRIBER, name=HOSTILE, state="absent", drop_slot=False))[1]
    assert dropped["changed"] is True


def test_drop_with_unreachable_publisher_needs_drop_slot_false(databases):
    unreachable = dict(PUBLISHER, port=5497)
    created = run_module(MODULE, args(name="zdm_sub_orphan", publisher=unreachable, connect=False))[1]
    assert created["failed"] is False, created.get("msg")
    refused = run_module(MODULE, dict(SUBSCRIBER, name="zdm_sub_orphan", state="absent"))[1]
    assert refused["failed"] is True
    assert "the publisher is unreachable" in refused["msg"] and "drop_slot: false" in refused["msg"]
    with connect(SUBSCRIBER) as green:
        assert green.execute("SELECT count(*) FROM pg_subscription WHERE subname = 'zdm_sub_orphan'").fetchone()[0] == 1
    dropped = run_module(MODULE, dict(SUBSCRIBER, name="zdm_sub_orphan", state="absent", drop_slot=False))[1]
    assert dropped["changed"] is True
    assert dropped["queries"][-1] == 'DROP SUBSCRIPTION "zdm_sub_orphan"'
    with connect(SUBSCRIBER) as green:
        assert green.execute("SELECT count(*) FROM pg_subscription WHERE subname = 'zdm_sub_orphan'").fetchone()[0] == 0


def test_drop_removes_subscription_and_slot(databases):
    dropped = run_module(MODULE, dict(SUBSCRIBER, name="zdm_sub", state="absent"), diff=True)[1]
    assert dropped["failed"] is False, dropped.get("msg")
    assert dropped["changed"] is True and dropped["diff"]["after"] == {}
    with connect(BLUE, login_db="postgres") as blue:
        assert blue.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'zdm_sub'").fetchone()[0] == 0
    assert run_module(MODULE, dict(SUBSCRIBER, name="zdm_sub", state="absent"))[1]["changed"] is False
