"""pg_switchover against the real lab: blue (127.0.0.11:5432) and green (127.0.0.12:5432) with logical
replication in a database of the tests' own, behind a PgBouncer of the tests' own, under a write workload.
Both sides listen on port 5432: where the pool points and which server a write reached are told by address.

"Lost" is checked against what the writers saw commit: every committed row must be on the
side that serves afterwards, and (through the reverse replication) on the other side too."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.switchover import POOLER_STEPS
from tests.lab import (  # pylint: disable=unused-import
    BLUE,
    GREEN,
    LAB_PASSWORD,
    SERVER_ADDRESS,
    connect,
    drop_database,
    drop_replication,
    quick_worker_starts,  # pylint: disable=unused-import # noqa: F401 - pytestmark's fixture
    recreate_database,
    run_module,
    throwaway_pgbouncer,
    wait_for,
    writable_again,
)

# subscriptions are created, re-enabled and switched back to back here: their workers start within 100 ms
pytestmark = pytest.mark.usefixtures("quick_worker_starts")

DB = "zdm_switch"
MODULE = "zerodowntime.migration.pg_switchover"
FORWARD, REVERSE = "zdm_blue_to_green", "zdm_green_to_blue"
SCHEMA = [
    "CREATE TABLE accounts (id bigserial PRIMARY KEY, balance integer NOT NULL DEFAULT 0)",
    "CREATE TABLE history (id bigserial PRIMARY KEY, writer integer NOT NULL, seq integer NOT NULL, UNIQUE (writer, seq))",
    "CREATE SEQUENCE standalone_seq",
]
# events: a plain table on blue, hash-partitioned on green (the key must include tenant_id):
# blue sends tenant_id through its replica identity index; green publishes via the root.
BLUE_EVENTS = [
    "CREATE TABLE events (id bigserial, tenant_id integer NOT NULL, body text, PRIMARY KEY (id))",
    "CREATE UNIQUE INDEX events_identity ON events (tenant_id, id)",
    "ALTER TABLE events REPLICA IDENTITY USING INDEX events_identity",
]
GREEN_EVENTS = [
    "CREATE TABLE events (id bigserial, tenant_id integer NOT NULL, body text, PRIMARY KEY (tenant_id, id)) PARTITION BY HASH (tenant_id)",
    *(f"CREATE TABLE events_p{n} PARTITION OF events FOR VALUES WITH (MODULUS 4, REMAINDER {n})" for n in range(4)),
]
TABLES = ["accounts", "history", "events"]
CLIENT = {"host": "127.0.0.1", "user": "migrator", "password": LAB_PASSWORD, "dbname": DB, "prepare_threshold": None}
# (host, port) a pool points at on each side: the same port, different addresses
ON_BLUE, ON_GREEN = (BLUE["login_host"], BLUE["login_port"]), (GREEN["login_host"], GREEN["login_port"])


def wait_ready(side: dict, subscription: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with connect(side) as conn:
        while True:
            states = conn.execute(
                "SELECT r.srsubstate FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s",
                (subscription,),
            ).fetchall()
            if states and all(state == "r" for (state,) in states):
                return
            assert time.monotonic() < deadline, f"{subscription} not ready: {states}"
            time.sleep(0.1)


@pytest.fixture()
def lab_pair(lab):
    """Blue and green databases with blue -> green replication and a PgBouncer pool on blue.
    Afterwards: replication dropped, both instances writable again, databases dropped."""
    writable_again(BLUE, GREEN)
    drop_replication(DB, BLUE, GREEN)
    blue, green = recreate_database(BLUE, DB), recreate_database(GREEN, DB)
    with connect(blue) as conn:
        for statement in SCHEMA + BLUE_EVENTS:
            conn.execute(statement)
        conn.execute("INSERT INTO accounts (balance) SELECT g FROM generate_series(1, 100) g")
        conn.execute("SELECT setval('standalone_seq', 500)")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator")
        conn.execute("CREATE PUBLICATION zdm_blue_pub FOR TABLE accounts, history, events")
    with connect(green) as conn:
        for statement in SCHEMA + GREEN_EVENTS:
            conn.execute(statement)
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator")
        conn.execute(
            f"CREATE SUBSCRIPTION {FORWARD} CONNECTION 'host={BLUE['login_host']} port={BLUE['login_port']} dbname={DB} user=replicator "
            f"password={LAB_PASSWORD}' PUBLICATION zdm_blue_pub"
        )
    wait_ready(green, FORWARD)
    try:
        with throwaway_pgbouncer({DB: blue}) as bouncer:
            yield {"blue": blue, "green": green, "bouncer": bouncer}
    finally:
        writable_again(BLUE, GREEN)
        drop_replication(DB, BLUE, GREEN)
        drop_database(BLUE, DB)
        drop_database(GREEN, DB)


def args(pair: dict, direction: str = "blue_to_green", **overrides) -> dict:
    """Module arguments for a switchover in `direction` (green_to_blue: the rollback)."""
    source, target = (pair["blue"], pair["green"]) if direction == "blue_to_green" else (pair["green"], pair["blue"])
    subscription, reverse = (FORWARD, REVERSE) if direction == "blue_to_green" else (REVERSE, FORWARD)
    reverse_publication = "zdm_green_pub" if direction == "blue_to_green" else "zdm_blue_pub"
    result = {
        "source": source,
        "target": target,
        "subscription": subscription,
        "reverse_publication": reverse_publication,
        "reverse_subscription": reverse,
        "reverse_publisher": {
            "host": target["login_host"],
            "port": target["login_port"],
            "dbname": DB,
            "user": "replicator",
            "password": LAB_PASSWORD,
        },
        "pgbouncer": dict(pair["bouncer"]["admin"], database=DB, config_file=pair["bouncer"]["config_file"]),
        "timeout": 2,
    }
    result.update(overrides)
    return result


class Writers:
    """`count` clients writing through PgBouncer, each committing (writer, seq) rows into
    history and an event; what they saw commit is kept, every error counted. Writers are
    numbered from `first`, so several sets can write at once."""

    def __init__(self, port: int, count: int = 8, first: int = 0):
        self.port, self.count = port, count
        self.committed: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.max_latency = 0.0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.write, args=(first + n,), daemon=True) for n in range(count)]

    def write(self, writer: int) -> None:
        conn = psycopg.connect(
            host="127.0.0.1", port=self.port, user="migrator", password=LAB_PASSWORD, dbname=DB, autocommit=True, prepare_threshold=None
        )
        seq = 0
        while not self.stop.is_set():
            seq += 1
            started = time.monotonic()
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO history (writer, seq) VALUES (%s, %s)", (writer, seq))
                    conn.execute("INSERT INTO events (tenant_id, body) VALUES (%s, %s)", (seq % 7, f"{writer}:{seq}"))
                    conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (seq % 100 + 1,))
            except psycopg.Error as exc:
                with self.lock:
                    self.errors.append(str(exc).strip())
                continue
            latency = time.monotonic() - started
            with self.lock:
                self.committed.append((writer, seq))
                self.max_latency = max(self.max_latency, latency)
            time.sleep(0.005)
        conn.close()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def rows_missing(side: dict, committed: list[tuple[int, int]], timeout: float = 30) -> set:
    """The committed (writer, seq) pairs not on `side`, after waiting up to `timeout` s for
    replication to bring them."""
    deadline = time.monotonic() + timeout
    with connect(side) as conn:
        while True:
            present = set(conn.execute("SELECT writer, seq FROM history").fetchall())
            missing = set(committed) - present
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.2)


def readonly(side: dict) -> str:
    with connect(side) as conn:
        return conn.execute("SHOW default_transaction_read_only").fetchone()[0]


def subscriptions(side: dict) -> dict:
    with connect(side) as conn:
        rows = conn.execute(
            "SELECT subname, subenabled FROM pg_subscription "
            "WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return dict(rows.fetchall())


def slots(side: dict) -> list:
    with connect(side) as conn:
        return [name for (name,) in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (DB,))]


def pool_target(pair: dict) -> tuple[str, int]:
    """(host, port) the test's PgBouncer sends the pool to."""
    with psycopg.connect(**_admin(pair), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        for row in conn.execute("SHOW DATABASES").fetchall():
            if row[0] == DB:
                return row[1], int(row[2])
    raise AssertionError("pool missing")


def _admin(pair: dict) -> dict:
    admin = pair["bouncer"]["admin"]
    return {
        "host": admin["login_host"],
        "port": admin["login_port"],
        "user": admin["login_user"],
        "password": LAB_PASSWORD,
        "dbname": "pgbouncer",
    }


def through_pgbouncer(pair: dict, statement: str):
    with psycopg.connect(port=pair["bouncer"]["port"], autocommit=True, **CLIENT) as conn:
        return conn.execute(statement).fetchone()


def test_switchover_under_writes_loses_nothing_and_replicates_back(lab_pair):
    with Writers(lab_pair["bouncer"]["port"]) as writers:
        run, result = run_module(MODULE, args(lab_pair))
        time.sleep(0.5)  # writes on green after the switch
    assert not result["failed"], result["msg"]
    assert result["changed"] is True and result["switched"] is True
    assert [step["step"] for step in result["steps"]] == [
        "pause_pgbouncer",
        "freeze_source",
        "drain_source_writers",
        "wait_for_catch_up",
        "sync_sequences",
        "disable_forward_subscription",
        "create_reverse_slot",
        "create_reverse_subscription",
        "repoint_pgbouncer",
        "resume_pgbouncer",
    ]
    assert all(step["ok"] for step in result["steps"])
    assert 0 < result["write_pause_ms"] < 1000, result["steps"]
    assert result["serving"] == {"host": GREEN["login_host"], "port": GREEN["login_port"], "dbname": DB}
    assert result["reverse_streaming"] is True
    assert writers.errors == []
    assert len(writers.committed) > 100
    assert rows_missing(lab_pair["green"], writers.committed) == set()
    assert rows_missing(lab_pair["blue"], writers.committed) == set(), "reverse replication lost writes made on green"
    assert through_pgbouncer(lab_pair, SERVER_ADDRESS)[0] == GREEN["login_host"]
    assert pool_target(lab_pair) == ON_GREEN
    assert readonly(lab_pair["blue"]) == "on" and readonly(lab_pair["green"]) == "off"
    assert subscriptions(lab_pair["green"]) == {}  # the forward subscription is gone, with its slot on blue
    assert slots(lab_pair["blue"]) == [] and slots(lab_pair["green"]) == [REVERSE]
    assert subscriptions(lab_pair["blue"]) == {REVERSE: True}
    # sequences: green continues past blue's values, standalone ones too
    with connect(lab_pair["green"]) as conn:
        assert conn.execute("SELECT last_value FROM standalone_seq").fetchone()[0] >= 1500
    assert not any("password" in query.lower() and LAB_PASSWORD in query for query in result["queries"])
    assert LAB_PASSWORD not in run.stdout

    again = run_module(MODULE, args(lab_pair))[1]
    assert not again["failed"], again
    assert again["changed"] is False and again["switched"] is True, again


def test_three_cutovers_blue_green_blue_green_lose_nothing(lab_pair):
    with Writers(lab_pair["bouncer"]["port"]) as writers:
        for direction in ("blue_to_green", "green_to_blue", "blue_to_green"):
            result = run_module(MODULE, args(lab_pair, direction))[1]
            assert not result["failed"], result["msg"]
            assert result["write_pause_ms"] < 1000, result["steps"]
            time.sleep(1)
    assert writers.errors == []
    assert rows_missing(lab_pair["green"], writers.committed) == set()
    assert rows_missing(lab_pair["blue"], writers.committed) == set()
    assert pool_target(lab_pair) == ON_GREEN
    with connect(lab_pair["green"]) as green, connect(lab_pair["blue"]) as blue:
        for table in TABLES:
            query = f"SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {table} t"  # noqa: S608 - fixed names
            assert green.execute(query).fetchone() == blue.execute(query).fetchone(), table


def ddl_capture(endpoint: dict, **options) -> dict:
    result = run_module("zerodowntime.migration.pg_ddl_capture", dict(endpoint, **options))[1]
    assert not result.get("failed"), result.get("msg")
    return result


def columns(side: dict, table: str) -> list[str]:
    with connect(side) as conn:
        query = "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        return [name for (name,) in conn.execute(query, (table,)).fetchall()]


def apply_error_count(conn) -> int:
    query = "SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = %s"
    row = conn.execute(query, (REVERSE,)).fetchone()
    return row[0] if row else 0


def rows_with_note(side: dict) -> int:
    with connect(side) as conn:
        return conn.execute("SELECT count(*) FROM accounts WHERE note IS NOT NULL").fetchone()[0]


def test_a_deploy_after_the_cutover_reaches_blue_and_the_rollback_loses_nothing(lab_pair):
    """DDL replicated with the data (pg_ddl_capture: capture on blue, apply trigger on green, as phase 2
    installs them): pg_switchover installs the halves the other way round, so columns added on green
    after the switch - and the rows that fill them - reach blue, and the rollback loses none of them.
    Blue, frozen after the switch, cannot run DDL in its apply worker (read-only transactions): it stops
    on it, named; pg_ddl_apply on blue releases it, and so does the switchover back, before its pause. Blue's captures after the
    rollback do not collide with the ids of green's rows in its log."""
    blue, green = lab_pair["blue"], lab_pair["green"]
    ddl_capture(green, side="subscriber")
    ddl_capture(blue, side="publisher", publication="zdm_blue_pub", replication_user="replicator")
    ddl_capture(green, side="subscriber", subscription=FORWARD)
    wait_ready(green, FORWARD)
    with Writers(lab_pair["bouncer"]["port"]) as writers:
        switched = run_module(MODULE, args(lab_pair))[1]
        assert not switched["failed"], switched["msg"]
        assert not [warning for warning in switched.get("warnings", []) if "DDL" in warning], switched.get("warnings")
        with connect(green) as conn:  # a deploy on green while the application writes there
            conn.execute("ALTER TABLE accounts ADD COLUMN note text")
            conn.execute("INSERT INTO accounts (balance, note) VALUES (7, 'after the cutover')")
        # blue is frozen read-only after the switch: its apply worker stops on the deploy's DDL, named
        with connect(blue) as conn:
            wait_for("blue's apply worker stopped on green's DDL", lambda: apply_error_count(conn), timeout=30, interval=0.2)
        lag_args = dict(green, expected_replicas=[REVERSE], subscriber=dict(blue), subscriptions=[REVERSE], timeout=30)
        lag = run_module("zerodowntime.migration.pg_replication_lag", lag_args)[1]
        assert lag.get("failed") and "frozen read-only" in lag["msg"] and "ADD COLUMN note" in lag["msg"], lag.get("msg")
        # pg_ddl_apply on blue with the publisher releases it (check mode first: it names it, changes nothing)
        release = dict(blue, subscription=REVERSE, publisher=args(lab_pair)["reverse_publisher"])
        would = run_module("zerodowntime.migration.pg_ddl_apply", release, check=True)[1]
        assert not would.get("failed") and len(would["released"]) == 1 and "note" not in columns(blue, "accounts"), would
        released = run_module("zerodowntime.migration.pg_ddl_apply", release)[1]
        assert not released.get("failed") and released["released"] == would["released"] and released["changed"], released
        wait_for("the note row on blue", lambda: "note" in columns(blue, "accounts") and rows_with_note(blue), timeout=30, interval=0.2)
        # the next deploy, one transaction logging several commands (a drop logs two), waits on blue for the switchover back
        with connect(green) as conn, conn.transaction():
            conn.execute("ALTER TABLE history ADD COLUMN origin text NOT NULL DEFAULT 'green'")
            conn.execute("ALTER TABLE accounts ADD COLUMN scratch integer")
            conn.execute("ALTER TABLE accounts DROP COLUMN scratch")
        with connect(green) as conn:
            deployed = conn.execute("SELECT count(*) FROM zerodowntime.ddl_log WHERE statement ~ 'origin|scratch'").fetchone()[0]
        assert deployed >= 3
        time.sleep(0.5)  # the application's writes fill the new column on green
        rolled_back = run_module(MODULE, args(lab_pair, "green_to_blue"))[1]
        assert not rolled_back["failed"], rolled_back["msg"]
        assert len(rolled_back["ddl_released"]) == deployed, rolled_back  # applied on blue by the switchover back, before its pause
        time.sleep(0.5)
    assert writers.errors == []
    assert rows_missing(blue, writers.committed) == set()
    assert columns(blue, "accounts") == columns(green, "accounts") == ["id", "balance", "note"]
    assert columns(blue, "history")[-1] == "origin"
    with connect(blue) as conn:
        assert conn.execute("SELECT balance FROM accounts WHERE note = 'after the cutover'").fetchall() == [(7,)]
        with connect(green) as green_conn:
            for table in ("accounts", "history"):
                query = f"SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {table} t"  # noqa: S608 - fixed names
                assert conn.execute(query).fetchone() == green_conn.execute(query).fetchone(), table
        # blue's log holds green's rows with their ids: its next capture continues past them and reaches green,
        # writable again as rollback.yml leaves it
        conn.execute("ALTER TABLE accounts ADD COLUMN after_rollback integer")
        [(captured,)] = conn.execute("SELECT count(*) FROM zerodowntime.ddl_log WHERE statement LIKE '%after_rollback%'").fetchall()
        assert captured == 1
    writable_again(GREEN)
    wait_for("blue's DDL after the rollback on green", lambda: "after_rollback" in columns(green, "accounts"), timeout=30, interval=0.2)


def test_check_mode_reports_the_steps_and_changes_nothing(lab_pair):
    result = run_module(MODULE, args(lab_pair), check=True, diff=True)[1]
    assert not result["failed"], result["msg"]
    assert result["changed"] is True
    assert result["switched"] is False and result["would_switch"] is True
    green_frozen = readonly(lab_pair["green"]) == "on"
    assert [step["step"] for step in result["steps"]] == [name for name in POOLER_STEPS if green_frozen or name != "unfreeze_target"]
    assert result["steps"][0] == {"step": "pause_pgbouncer", "undo": "resume_pgbouncer", "ms": None, "ok": None}
    pools = [result["diff"][when]["pgbouncer_pool"] for when in ("before", "after")]
    assert [(pool["host"], pool["port"]) for pool in pools] == [ON_BLUE, ON_GREEN], pools
    assert result["diff"]["after"]["reverse_subscription"] == REVERSE
    assert pool_target(lab_pair) == ON_BLUE
    assert subscriptions(lab_pair["green"]) == {FORWARD: True} and subscriptions(lab_pair["blue"]) == {}
    assert readonly(lab_pair["blue"]) == "off"
    with connect(lab_pair["green"]) as conn:
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0
        assert conn.execute("SELECT subsynccommit FROM pg_subscription WHERE subname = %s", (FORWARD,)).fetchone()[0] == "off"


def assert_still_on_blue(pair: dict) -> None:
    """What every abort must leave: blue writable and serving through PgBouncer, forward
    replication running, no reverse objects."""
    assert readonly(pair["blue"]) == "off"
    assert pool_target(pair) == ON_BLUE
    served_by = through_pgbouncer(pair, "INSERT INTO history (writer, seq) VALUES (999, 1) RETURNING host(inet_server_addr())")[0]
    assert served_by == BLUE["login_host"]
    assert subscriptions(pair["green"]) == {FORWARD: True}
    assert subscriptions(pair["blue"]) == {}
    assert slots(pair["green"]) == []
    assert rows_missing(pair["green"], [(999, 1)]) == set(), "forward replication does not run after the abort"


def test_apply_stopped_on_green_hits_the_deadline_and_blue_keeps_serving(lab_pair):
    """A replica trigger on green sleeps in the apply worker (still connected, slot active). The
    row it stalls on commits on blue during the pause (a session that began writing before the
    freeze), so prepare had nothing to wait for and the catch-up runs into the deadline."""
    with connect(lab_pair["green"]) as conn:
        conn.execute(
            "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(4); RETURN NEW; END$$; "
            "CREATE TRIGGER stall BEFORE INSERT ON history FOR EACH ROW EXECUTE FUNCTION stall(); "
            "ALTER TABLE history ENABLE REPLICA TRIGGER stall"
        )
    writer = connect(lab_pair["blue"])
    writer.execute("BEGIN")
    writer.execute("INSERT INTO history (writer, seq) VALUES (0, 1)")

    def commit_once_frozen():
        with connect(lab_pair["blue"]) as probe:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and probe.execute("SHOW default_transaction_read_only").fetchone()[0] != "on":
                time.sleep(0.005)
        writer.execute("COMMIT")

    committer = threading.Thread(target=commit_once_frozen, daemon=True)
    committer.start()
    started = time.monotonic()
    result = run_module(MODULE, args(lab_pair, timeout=1))[1]
    took = time.monotonic() - started
    assert result["failed"] is True
    assert result["failed_step"] == "wait_for_catch_up", result["msg"]
    assert "did not catch up" in result["msg"] and "deadline" in result["msg"]
    assert [entry["step"] for entry in result["undone"]] == ["unfreeze_source", "resume_pgbouncer", "restore_forward_synchronous_commit"]
    assert all(entry["ok"] for entry in result["undone"])
    assert result["write_pause_ms"] < 1500
    assert took < 60
    committer.join(5)
    writer.close()
    with connect(lab_pair["green"]) as conn:
        conn.execute("DROP TRIGGER stall ON history")  # the apply goes on
    assert_still_on_blue(lab_pair)
    with connect(lab_pair["green"]) as conn:
        assert conn.execute("SELECT subsynccommit FROM pg_subscription WHERE subname = %s", (FORWARD,)).fetchone()[0] == "off"


def test_pause_held_by_an_open_transaction_aborts_and_resumes(lab_pair):
    with psycopg.connect(
        host="127.0.0.1", port=lab_pair["bouncer"]["port"], user="migrator", password=LAB_PASSWORD, dbname=DB, prepare_threshold=None
    ) as holder:
        holder.execute("INSERT INTO history (writer, seq) VALUES (0, 2)")  # a transaction left open
        result = run_module(MODULE, args(lab_pair, timeout=1))[1]
        assert result["failed"] is True
        assert result["failed_step"] == "pause_pgbouncer"
        assert "PAUSE" in result["msg"] and "aborted" in result["msg"]
        holder.rollback()
    assert_still_on_blue(lab_pair)


def test_a_direct_writer_on_blue_aborts_the_switchover(lab_pair):
    with connect(lab_pair["blue"]) as writer:
        writer.autocommit = False
        writer.execute("INSERT INTO history (writer, seq) VALUES (0, 3)")
        writer.execute("SET application_name = 'batch-job'")
        result = run_module(MODULE, args(lab_pair, timeout=1))[1]
        assert result["failed"] is True
        assert result["failed_step"] == "drain_source_writers"
        assert "batch-job" in result["msg"] and "terminate_writers" in result["msg"]
        assert [entry["step"] for entry in result["undone"]][:2] == ["unfreeze_source", "resume_pgbouncer"]
        writer.rollback()
    assert_still_on_blue(lab_pair)


def test_terminate_writers_ends_a_direct_writer_and_switches(lab_pair):
    writer = connect(lab_pair["blue"])
    writer.autocommit = False
    writer.execute("INSERT INTO history (writer, seq) VALUES (0, 4)")
    result = run_module(MODULE, args(lab_pair, terminate_writers=True, timeout=3))[1]
    assert not result["failed"], result["msg"]
    drain = next(step for step in result["steps"] if step["step"] == "drain_source_writers")
    assert len(drain["terminated"]) == 1
    with pytest.raises(psycopg.OperationalError):
        writer.execute("COMMIT")
    assert rows_missing(lab_pair["green"], [(0, 4)], timeout=0) == {(0, 4)}  # never committed


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"reverse_subscription": "evil; DROP TABLE history"}, "slot"),
        ({"subscription": "no_such_subscription"}, "does not exist on the target"),
        ({"pgbouncer": "bad pool"}, "pool name"),
        ({"timeout": 0}, "timeout must be"),
    ],
)
def test_bad_input_fails_clearly_and_changes_nothing(lab_pair, override, expected):
    arguments = args(lab_pair)
    if override.get("pgbouncer"):
        arguments["pgbouncer"]["database"] = override.pop("pgbouncer")
    arguments.update(override)
    result = run_module(MODULE, arguments)[1]
    assert result["failed"] is True
    assert expected in result["msg"], result["msg"]
    assert pool_target(lab_pair) == ON_BLUE and readonly(lab_pair["blue"]) == "off"
    assert subscriptions(lab_pair["green"]) == {FORWARD: True} and subscriptions(lab_pair["blue"]) == {}
    with connect(lab_pair["blue"]) as conn:
        assert conn.execute("SELECT to_regclass('history')").fetchone()[0] == "history"


def test_wrong_password_names_the_user_not_the_password(lab_pair):
    arguments = args(lab_pair)
    arguments["source"] = dict(arguments["source"], login_password="not-the-password")
    run, result = run_module(MODULE, arguments)
    assert result["failed"] is True
    assert "source" in result["msg"] and "migrator" in result["msg"]
    assert "not-the-password" not in result["msg"] and "not-the-password" not in run.stdout


def test_a_target_without_wal_level_logical_is_refused(lab_pair, replica_wal_server):
    arguments = args(lab_pair)
    arguments["target"] = replica_wal_server
    result = run_module(MODULE, arguments)[1]
    assert result["failed"] is True
    assert "wal_level" in result["msg"] and "logical" in result["msg"]
    assert pool_target(lab_pair) == ON_BLUE and readonly(lab_pair["blue"]) == "off"


def test_a_target_table_without_replica_identity_is_refused_before_pausing(lab_pair):
    with connect(lab_pair["green"]) as conn:
        conn.execute("ALTER TABLE accounts REPLICA IDENTITY NOTHING")
    result = run_module(MODULE, args(lab_pair))[1]
    assert result["failed"] is True
    assert "accounts" in result["msg"] and "replica identity" in result["msg"]
    assert pool_target(lab_pair) == ON_BLUE and subscriptions(lab_pair["blue"]) == {}


def test_a_sequence_created_on_blue_only_is_refused_before_pausing(lab_pair):
    """A sequence created on blue after green's schema: the sequence sync inside the pause would stop
    on it; the checks before the pause name it instead, in check mode too."""
    with connect(lab_pair["blue"]) as conn:
        conn.execute("CREATE SEQUENCE invoice_no START WITH 1000")
    for check in (True, False):
        result = run_module(MODULE, args(lab_pair), check=check)[1]
        assert result["failed"] is True
        assert "public.invoice_no" in result["msg"] and "missing on the target" in result["msg"], result["msg"]
        assert not any(query.startswith("PAUSE") for query in result.get("queries", []))
    assert pool_target(lab_pair) == ON_BLUE and subscriptions(lab_pair["blue"]) == {} and readonly(lab_pair["blue"]) == "off"
    with connect(lab_pair["green"]) as conn:  # the fix the message names: the sequence on green
        conn.execute("CREATE SEQUENCE invoice_no START WITH 1000")
    result = run_module(MODULE, args(lab_pair), check=True)[1]
    assert not result.get("failed"), result.get("msg")


def test_an_erroring_apply_is_refused_before_anything_pauses(lab_pair):
    """A row already on green makes the apply of blue's same row fail over and over: the module
    names the failing subscription, table and error in prepare within seconds (not after
    prepare_timeout), before PAUSE."""
    with connect(lab_pair["green"]) as conn:
        conn.execute("INSERT INTO history (id, writer, seq) VALUES (1000000, 0, 1)")
    through_pgbouncer(lab_pair, "INSERT INTO history (id, writer, seq) VALUES (1000000, 0, 1) RETURNING id")
    time.sleep(1)
    started = time.monotonic()
    result = run_module(MODULE, args(lab_pair, prepare_timeout=120))[1]
    elapsed = time.monotonic() - started
    assert result["failed"] is True
    assert elapsed < 5, f"took {elapsed:.1f} s: {result['msg']}"
    assert result["failed_step"] == "prepare"
    assert "Nothing was paused" in result["msg"] and f"'{FORWARD}'" in result["msg"]
    assert "public.history" in result["msg"] and "duplicate key" in result["msg"], result["msg"]
    assert result["steps"] == [] and result["write_pause_ms"] is None
    assert not any(query.startswith("PAUSE") for query in result["queries"])
    with connect(lab_pair["green"]) as conn:
        conn.execute("DELETE FROM history WHERE id = 1000000")
    assert_still_on_blue(lab_pair)


def test_a_column_added_on_blue_only_is_named_before_anything_pauses(lab_pair):
    """Issue 15's deploy during the migration: ADD COLUMN note on blue only and a row setting it
    stop green's apply worker; prepare names the subscription, the table and the column within
    seconds, with prepare_timeout 120 s."""
    with connect(lab_pair["blue"]) as conn:
        conn.execute("ALTER TABLE accounts ADD COLUMN note text")
        conn.execute("INSERT INTO accounts (balance, note) VALUES (1, 'set by the new release')")
    time.sleep(1)
    started = time.monotonic()
    result = run_module(MODULE, args(lab_pair, prepare_timeout=120))[1]
    elapsed = time.monotonic() - started
    assert result["failed"] is True
    assert elapsed < 5, f"took {elapsed:.1f} s: {result['msg']}"
    assert result["failed_step"] == "prepare" and "Nothing was paused" in result["msg"]
    assert f"'{FORWARD}'" in result["msg"] and 'relation "public.accounts" is missing replicated column: "note"' in result["msg"]
    assert result["apply_error"]["subscription"] == FORWARD
    assert not any(query.startswith("PAUSE") for query in result["queries"])
    with connect(lab_pair["green"]) as conn:  # the DBA's fix: the column on green too
        conn.execute("ALTER TABLE accounts ADD COLUMN note text")
    assert_still_on_blue(lab_pair)
