"""zerodowntime.migration.pg_index run against the suite's own PostgreSQL (SCRATCH_PG, not the
lab's: main's tests switch blue and green over meanwhile), in a scratch database (zdm_index_test)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sql_text import parse_only
from tests.lab import LAB_PASSWORD, SCRATCH_PG, connect, drop_database, recreate_database, run_module, run_playbook, where

MODULE = "zerodowntime.migration.pg_index"
DB = "zdm_index_test"
ARGS = dict(SCRATCH_PG, login_db=DB)
HOSTILE = 'a"; DROP TABLE zdm_victim; --'
# An IMMUTABLE function that takes 2 ms per call: an index on slow_key(v) over 1000 rows takes about
# 2 s to build, long enough to watch, without a big table. (It lies about being immutable; fine here.)
SLOW_KEY = "CREATE FUNCTION slow_key(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM pg_sleep(0.002); RETURN v; END $$"


@pytest.fixture(scope="module")
def scratch(scratch_postgres):
    recreate_database(SCRATCH_PG, DB)
    with connect(ARGS) as conn:
        conn.execute("CREATE TABLE zdm_victim (id int)")
        conn.execute(SLOW_KEY)
    yield
    drop_database(SCRATCH_PG, DB)


@pytest.fixture()
def db(scratch):
    with connect(ARGS) as conn:
        yield conn


def index(name, table, **args):
    return dict(ARGS, name=name, table=table, **args)


def index_row(conn, name, schema="public"):
    """(valid, ready, definition, table) of the index, or None."""
    return conn.execute(
        "SELECT x.indisvalid, x.indisready, pg_get_indexdef(x.indexrelid), x.indrelid::regclass::text FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace WHERE n.nspname = %s AND i.relname = %s",
        (schema, name),
    ).fetchone()


def attached(conn, parent_index):
    """{partition index name: its table} of the indexes attached to `parent_index`."""
    rows = conn.execute(
        "SELECT i.relname, x.indrelid::regclass::text FROM pg_inherits h JOIN pg_class i ON i.oid = h.inhrelid "
        "JOIN pg_index x ON x.indexrelid = i.oid WHERE h.inhparent = %s::regclass",
        (parent_index,),
    ).fetchall()
    return dict(rows)


def victim_exists(conn):
    return conn.execute("SELECT to_regclass('public.zdm_victim')").fetchone()[0] is not None


@contextmanager
def open_writer(table):
    """A transaction holding the lock a writer holds on `table`, left open: concurrent index
    builds and drops wait for it."""
    with connect(ARGS) as conn:
        conn.autocommit = False
        conn.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(table)))
        try:
            yield conn
        finally:
            conn.rollback()


# Plain tables ----------------------------------------------------------------------------------
def test_check_mode_create_diff_and_idempotence(db):
    db.execute("CREATE TABLE customers (id int, email varchar(200), status text, deleted_at timestamptz)")
    db.execute("INSERT INTO customers SELECT g, 'user' || g || '@example.com', 'active', NULL FROM generate_series(1, 500) g")
    args = index("customers_email_idx", "customers", columns=["id", "lower(email)"], include=["status"], where="deleted_at IS NULL")
    statement = (
        'CREATE INDEX CONCURRENTLY "customers_email_idx" ON "public"."customers" USING btree ("id", lower(email)) '
        'INCLUDE ("status") WHERE deleted_at IS NULL'
    )
    definition = (
        "CREATE INDEX customers_email_idx ON public.customers USING btree (id, lower((email)::text)) INCLUDE (status) "
        "WHERE (deleted_at IS NULL)"
    )
    run, checked = run_module(MODULE, args, check=True, diff=True)
    assert checked["failed"] is False, run.stdout
    assert (checked["changed"], checked["state"], checked["rebuilt"], checked["partitions"]) == (True, "present", False, [])
    assert checked["queries"] == [statement]
    assert checked["diff"]["before"] == {}
    assert checked["diff"]["after"] == {
        "name": "customers_email_idx",
        "table": "public.customers",
        "columns": ["id", "lower(email::text)"],
        "unique": False,
        "method": "btree",
        "include": ["status"],
        "where": "deleted_at IS NULL",
        "valid": True,
        "definition": definition,
    }
    assert index_row(db, "customers_email_idx") is None

    created = run_module(MODULE, args, diff=True)[1]
    assert created["failed"] is False, created.get("msg")
    assert (created["changed"], created["queries"], created["rebuilt"]) == (True, [statement], False)
    assert created["diff"] == checked["diff"]  # check mode predicted exactly what the server now reports
    assert created["index"] == checked["diff"]["after"]
    assert index_row(db, "customers_email_idx") == (True, True, definition, "customers")

    again = run_module(MODULE, args, diff=True)[1]
    assert (again["changed"], again["queries"], again["rebuilt"]) == (False, [], False)
    assert again["diff"]["before"] == again["diff"]["after"] == created["index"]
    # The same definition written differently (as the server prints it) is the same index.
    same = run_module(MODULE, dict(args, columns=["id", "lower(email::text)"], where="(deleted_at is null)"), check=True)[1]
    assert (same["changed"], same["queries"]) == (False, [])


def test_same_name_with_another_definition_or_table_is_an_error_naming_both(db):
    db.execute("CREATE TABLE accounts (id int, email text, region text)")
    db.execute("CREATE TABLE other_accounts (id int, email text, region text)")
    assert run_module(MODULE, index("accounts_idx", "accounts", columns=["email"]))[1]["changed"] is True
    found = "CREATE INDEX accounts_idx ON public.accounts USING btree (email)"

    for change, difference in [
        ({"columns": ["region"]}, "columns is ['email'], not ['region']"),
        ({"unique": True}, "unique is False, not True"),
        ({"method": "hash"}, "method is 'btree', not 'hash'"),
        ({"where": "id > 0"}, "where is None, not 'id > 0'"),
        ({"columns": ["email DESC"]}, None),  # not an expression: a column called "email DESC"
    ]:
        result = run_module(MODULE, index("accounts_idx", "accounts", **dict({"columns": ["email"]}, **change)))[1]
        assert result["failed"] is True
        if difference is None:
            assert 'column "email DESC" does not exist' in result["msg"]
            continue
        assert difference in result["msg"]
        assert f"found: {found}" in result["msg"]
        assert "asked for: CREATE " in result["msg"] and "INDEX accounts_idx ON public.accounts USING" in result["msg"]
        assert "drop it (state: absent)" in result["msg"] and "choose another name" in result["msg"]
        assert result["queries"] == []

    # Operator classes are compared too, though the column reads the same.
    pattern_ops = run_module(MODULE, index("accounts_idx", "accounts", columns=["(email) text_pattern_ops"]))[1]
    assert pattern_ops["failed"] is True
    assert "operator classes, collations or sort order differ" in pattern_ops["msg"]
    assert "asked for: CREATE INDEX accounts_idx ON public.accounts USING btree (email text_pattern_ops)" in pattern_ops["msg"]

    elsewhere = run_module(MODULE, index("accounts_idx", "other_accounts", columns=["email"]))[1]
    assert elsewhere["failed"] is True
    assert "already exists on another table (public.accounts, not public.other_accounts)" in elsewhere["msg"]
    assert f"found: {found}" in elsewhere["msg"]
    assert "asked for: CREATE INDEX accounts_idx ON public.other_accounts USING btree (email)" in elsewhere["msg"]
    assert elsewhere["queries"] == []
    assert index_row(db, "accounts_idx") == (True, True, found, "accounts")

    not_dropped = run_module(MODULE, index("accounts_idx", "other_accounts", state="absent"))[1]
    assert not_dropped["failed"] is True
    assert "is on public.accounts, not public.other_accounts" in not_dropped["msg"]
    assert index_row(db, "accounts_idx") is not None

    taken_by_a_table = run_module(MODULE, index("other_accounts", "accounts", columns=["email"]))[1]
    assert taken_by_a_table["failed"] is True
    assert "'public.other_accounts' in database 'zdm_index_test'" in taken_by_a_table["msg"]
    assert "is a table, not an index" in taken_by_a_table["msg"]


def test_an_invalid_index_is_dropped_and_rebuilt(db):
    db.execute("CREATE TABLE codes (id int, code text)")
    db.execute("INSERT INTO codes VALUES (1, 'a'), (2, 'b'), (3, 'a')")
    with pytest.raises(Exception, match="could not create unique index"):
        db.execute("CREATE UNIQUE INDEX CONCURRENTLY codes_code_key ON codes (code)")
    assert index_row(db, "codes_code_key")[:2] == (False, False)  # what an interrupted build leaves
    db.execute("DELETE FROM codes WHERE id = 3")

    args = index("codes_code_key", "codes", columns=["code"], unique=True)
    statements = [
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."codes_code_key"',
        'CREATE UNIQUE INDEX CONCURRENTLY "codes_code_key" ON "public"."codes" USING btree ("code")',
    ]
    checked = run_module(MODULE, args, check=True, diff=True)[1]
    assert checked["failed"] is False, checked.get("msg")
    assert (checked["changed"], checked["queries"]) == (True, statements)
    assert (checked["diff"]["before"]["valid"], checked["diff"]["after"]["valid"]) == (False, True)
    assert index_row(db, "codes_code_key")[:2] == (False, False)

    rebuilt = run_module(MODULE, args, diff=True)[1]
    assert (rebuilt["changed"], rebuilt["rebuilt"], rebuilt["queries"]) == (True, True, statements)
    assert (rebuilt["diff"]["before"]["valid"], rebuilt["diff"]["after"]["valid"]) == (False, True)
    assert rebuilt["index"]["valid"] is True
    assert index_row(db, "codes_code_key")[:2] == (True, True)
    with pytest.raises(Exception, match="duplicate key"):
        db.execute("INSERT INTO codes VALUES (4, 'a')")

    again = run_module(MODULE, args)[1]
    assert (again["changed"], again["rebuilt"], again["queries"]) == (False, False, [])


def test_a_failed_build_drops_the_invalid_index_it_left(db):
    db.execute("CREATE TABLE dupes (id int, v int)")
    db.execute("INSERT INTO dupes VALUES (1, 7), (2, 7)")
    result = run_module(MODULE, index("dupes_v_key", "dupes", columns=["v"], unique=True))[1]
    assert result["failed"] is True
    assert 'could not create unique index "dupes_v_key"' in result["msg"]
    assert "building index public.dupes_v_key in database 'zdm_index_test' failed" in result["msg"]
    assert "the invalid index the failed build left behind was dropped" in result["msg"]
    assert "remove them, or set unique: false" in result["msg"]
    assert result["queries"] == [
        'CREATE UNIQUE INDEX CONCURRENTLY "dupes_v_key" ON "public"."dupes" USING btree ("v")',
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."dupes_v_key"',
    ]
    assert index_row(db, "dupes_v_key") is None


def test_lock_timeout_bounds_the_wait_for_open_transactions_and_the_next_run_rebuilds(db):
    db.execute("CREATE TABLE waits (id serial, v int)")
    args = index("waits_v_idx", "waits", columns=["v"], lock_timeout=0.5)
    with open_writer("waits"):
        started = time.monotonic()
        result = run_module(MODULE, args)[1]
        assert result["failed"] is True
        assert "canceling statement due to lock timeout" in result["msg"]
        assert "did not end within lock_timeout" in result["msg"]
        # The drop of the invalid index waits for the same transaction: it is left for the next run.
        assert "dropping the invalid index it left behind failed too" in result["msg"]
        assert "the next run rebuilds it" in result["msg"]
        assert time.monotonic() - started < 30
        assert index_row(db, "waits_v_idx")[:2] == (False, False)
    rebuilt = run_module(MODULE, args)[1]
    assert (rebuilt["failed"], rebuilt["changed"], rebuilt["rebuilt"]) == (False, True, True)
    assert index_row(db, "waits_v_idx")[:2] == (True, True)


def test_timeout_bounds_the_build_and_drops_what_it_left(db):
    db.execute("CREATE TABLE slow (id serial, v int)")
    db.execute("INSERT INTO slow (v) SELECT g FROM generate_series(1, 1000) g")
    started = time.monotonic()
    result = run_module(MODULE, index("slow_key_idx", "slow", columns=["slow_key(v)"], timeout=0.5))[1]
    assert result["failed"] is True
    assert "canceling statement due to statement timeout" in result["msg"]
    assert "the invalid index the failed build left behind was dropped" in result["msg"]
    assert "raise timeout" in result["msg"]
    assert time.monotonic() - started < 30
    assert index_row(db, "slow_key_idx") is None


def test_a_concurrent_build_does_not_block_a_writer(db):
    db.execute("CREATE TABLE busy (id bigserial PRIMARY KEY, v int)")
    db.execute("INSERT INTO busy (v) SELECT g FROM generate_series(1, 1000) g")
    stop = threading.Event()
    inserts = []  # (start, end) of every insert the writer made
    building = []  # moments the build was seen in pg_stat_progress_create_index
    errors = []
    # The writer's pace: unpaced, it added rows faster than slow_key indexes them (from before the
    # module starts, then in both scans of the build), so the build grew to ~45 s instead of ~2.
    pause = 0.01

    def writer():
        try:
            with connect(ARGS) as conn:
                while not stop.is_set():
                    start = time.monotonic()
                    conn.execute("INSERT INTO busy (v) VALUES (1)")
                    inserts.append((start, time.monotonic()))
                    time.sleep(pause)
        except Exception as exc:  # reported by the assertions below
            errors.append(exc)

    def watcher():
        try:
            with connect(ARGS) as conn:
                while not stop.is_set():
                    progress = conn.execute(
                        "SELECT 1 FROM pg_stat_progress_create_index WHERE relid = 'busy'::regclass "
                        "AND command = 'CREATE INDEX CONCURRENTLY'"
                    )
                    if progress.fetchone():
                        building.append(time.monotonic())
                    time.sleep(0.02)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=watcher)]
    for thread in threads:
        thread.start()
    try:
        result = run_module(MODULE, index("busy_slow_idx", "busy", columns=["slow_key(v)"]))[1]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    assert (result["failed"], result["changed"]) == (False, True), result.get("msg")
    assert index_row(db, "busy_slow_idx")[:2] == (True, True)
    assert building, "the build was never seen in pg_stat_progress_create_index"
    first, last = building[0], building[-1]
    during = [end for start, end in inserts if first <= start and end <= last]
    assert last - first >= 1.0  # about 1000 rows x 2 ms, and the writer's
    # the writer kept writing through the build: at least a quarter of the inserts its pace allows
    expected = (last - first) / pause
    assert len(during) >= max(20, expected / 4), f"only {len(during)} inserts finished during a {last - first:.1f} s build"
    longest = max(end - start for start, end in inserts)
    assert longest < (last - first) / 2, f"an insert waited {longest:.2f} s during a {last - first:.1f} s build"
    rows = db.execute("SELECT count(*) FROM busy").fetchone()[0]
    assert rows == 1000 + len(inserts)


def test_drop_check_mode_diff_and_idempotence(db):
    db.execute("CREATE TABLE olds (id int, v int)")
    assert run_module(MODULE, index("olds_v_idx", "olds", columns=["v"]))[1]["changed"] is True
    checked = run_module(MODULE, index("olds_v_idx", "olds", state="absent"), check=True, diff=True)[1]
    assert checked["failed"] is False, checked.get("msg")
    assert (checked["changed"], checked["state"], checked["index"]) == (True, "absent", {})
    assert checked["queries"] == ['DROP INDEX CONCURRENTLY IF EXISTS "public"."olds_v_idx"']
    assert checked["diff"]["before"]["definition"] == "CREATE INDEX olds_v_idx ON public.olds USING btree (v)"
    assert checked["diff"]["after"] == {}
    assert index_row(db, "olds_v_idx") is not None

    dropped = run_module(MODULE, index("olds_v_idx", "olds", state="absent"))[1]
    assert (dropped["changed"], dropped["queries"]) == (True, checked["queries"])
    assert index_row(db, "olds_v_idx") is None
    again = run_module(MODULE, index("olds_v_idx", "olds", state="absent"))[1]
    assert (again["changed"], again["queries"]) == (False, [])
    gone_table = run_module(MODULE, index("olds_v_idx", "no_such_table", state="absent"))[1]
    assert (gone_table["failed"], gone_table["changed"]) == (False, False)


def test_concurrently_false_builds_and_drops_with_plain_statements(db):
    db.execute("CREATE TABLE quiet (id int, v int)")
    args = index("quiet_v_idx", "quiet", columns=["v"], concurrently=False)
    created = run_module(MODULE, args)[1]
    assert (created["changed"], created["queries"]) == (True, ['CREATE INDEX "quiet_v_idx" ON "public"."quiet" USING btree ("v")'])
    assert index_row(db, "quiet_v_idx")[:2] == (True, True)
    dropped = run_module(MODULE, dict(args, state="absent"))[1]
    assert (dropped["changed"], dropped["queries"]) == (True, ['DROP INDEX IF EXISTS "public"."quiet_v_idx"'])
    assert index_row(db, "quiet_v_idx") is None


def test_a_bad_definition_fails_before_anything_runs_also_in_check_mode(db):
    db.execute("CREATE TABLE shapes (id int, tags text[])")
    for args, said in [
        ({"columns": ["no_such_column"]}, 'column "no_such_column" does not exist'),
        ({"columns": ["lower(id)"]}, "function lower(integer) does not exist"),
        ({"columns": ["tags"], "method": "gin", "unique": True}, 'access method "gin" does not support unique indexes'),
        ({"columns": ["id"], "where": "random() > 0.5"}, "functions in index predicate must be marked IMMUTABLE"),
    ]:
        for check in (True, False):
            result = run_module(MODULE, index("shapes_idx", "shapes", **args), check=check)[1]
            assert result["failed"] is True
            assert said in result["msg"]
            assert "cannot be built on public.shapes in database 'zdm_index_test' as asked" in result["msg"]
            assert result["queries"] == []
    assert index_row(db, "shapes_idx") is None
    assert db.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'zdm_index_probe%'").fetchone()[0] == 0


def probe_tables(conn) -> int:
    return conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'zdm_index_probe%'").fetchone()[0]


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("where", "id > 0; DROP TABLE zdm_victim; --", "where 'id > 0; DROP TABLE zdm_victim; --' holds a statement separator ';'"),
        ("columns", "(id)); DROP TABLE zdm_victim; SELECT ((1", "the columns entry '(id)); DROP TABLE zdm_victim; SELECT ((1' holds"),
        ("where", "id > 0 /* ; */; DROP TABLE zdm_victim", "(character 15) outside quotes and comments"),
    ],
)
def test_a_statement_separator_in_sql_text_is_refused_and_runs_nothing(db, field, value, said):
    """The exact input of issue 18: with concurrently: false this `where` once dropped the table
    (and the trial build on the empty copy ran the same text)."""
    fields = {"columns": [value]} if field == "columns" else {"columns": ["id"], field: value}
    args = index("victim_idx", "zdm_victim", concurrently=False, **fields)
    for check in (True, False):
        result = run_module(MODULE, args, check=check)[1]
        assert result["failed"] is True and not result.get("changed"), result
        assert said in result["msg"], result["msg"]
        assert "without ';'" in result["msg"] and "Nothing was changed" in result["msg"], result["msg"]
        assert result["queries"] == []
        assert victim_exists(db)
    assert index_row(db, "victim_idx") is None
    assert probe_tables(db) == 0


def test_a_semicolon_inside_quotes_is_one_predicate(db):
    db.execute("CREATE TABLE notes_semicolon (id int, body text)")
    args = index("notes_semicolon_idx", "notes_semicolon", columns=["id"], where="body <> 'a; DROP TABLE zdm_victim' -- ;")
    created = run_module(MODULE, args)[1]
    assert created["changed"] is True and not created.get("failed"), created
    assert "body <> 'a; DROP TABLE zdm_victim'::text" in index_row(db, "notes_semicolon_idx")[2]
    assert victim_exists(db)
    assert run_module(MODULE, args)[1]["changed"] is False


def test_sql_text_the_server_cannot_parse_is_refused_before_anything_runs(db):
    result = run_module(MODULE, index("victim_idx", "zdm_victim", columns=["id"], where="id >"), check=False)[1]
    assert result["failed"] is True
    assert "cannot be parsed by the server" in result["msg"] and "syntax error" in result["msg"], result["msg"]
    assert result["queries"] == [] and index_row(db, "victim_idx") is None and probe_tables(db) == 0


def test_the_server_parse_refuses_several_statements_without_running_them(db):
    """parse_only is the server's word, whatever the module's own reading of quotes would say:
    several statements in one Parse are refused and none of them runs."""
    with Client(ARGS) as client, pytest.raises(PgError) as caught:
        parse_only(client, "CREATE INDEX x ON zdm_victim (id); DROP TABLE zdm_victim", "where")
    assert "cannot insert multiple commands into a prepared statement" in str(caught.value)
    assert "where would make several statements of one" in str(caught.value) and "Nothing was changed" in str(caught.value)
    assert victim_exists(db) and index_row(db, "x") is None


# Partitioned tables ----------------------------------------------------------------------------
def hash_partitioned(conn, table, modulus=4):
    name = sql.Identifier(table)
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint, v int, payload text) PARTITION BY HASH (id)").format(name))
    for remainder in range(modulus):
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES WITH (MODULUS {}, REMAINDER {})").format(
                sql.Identifier(f"{table}_p{remainder}"), name, sql.Literal(modulus), sql.Literal(remainder)
            )
        )
    conn.execute(sql.SQL("INSERT INTO {} SELECT g, g % 100, 'x' || g FROM generate_series(1, 2000) g").format(name))


def test_partitioned_table_is_indexed_partition_by_partition(db):
    hash_partitioned(db, "events")
    args = index("events_v_idx", "events", columns=["v"])
    expected = [
        {
            "partition": f"public.events_p{n}",
            "index": f"events_p{n}_events_v_idx",
            "parent_index": "public.events_v_idx",
            "created": True,
            "attached": True,
            "rebuilt": False,
        }
        for n in range(4)
    ]
    statements = ['CREATE INDEX "events_v_idx" ON ONLY "public"."events" USING btree ("v")']
    for n in range(4):
        statements += [
            f'CREATE INDEX CONCURRENTLY "events_p{n}_events_v_idx" ON "public"."events_p{n}" USING btree ("v")',
            f'ALTER INDEX "public"."events_v_idx" ATTACH PARTITION "public"."events_p{n}_events_v_idx"',
        ]
    checked = run_module(MODULE, args, check=True, diff=True)[1]
    assert checked["failed"] is False, checked.get("msg")
    assert (checked["changed"], checked["queries"], checked["partitions"]) == (True, statements, expected)
    assert checked["diff"]["after"]["definition"] == "CREATE INDEX events_v_idx ON ONLY public.events USING btree (v)"
    assert index_row(db, "events_v_idx") is None

    created = run_module(MODULE, args, diff=True)[1]
    assert created["failed"] is False, created.get("msg")
    assert (created["changed"], created["queries"], created["partitions"], created["rebuilt"]) == (True, statements, expected, False)
    assert created["diff"] == checked["diff"]
    assert created["index"]["valid"] is True
    assert index_row(db, "events_v_idx")[0] is True
    assert attached(db, "events_v_idx") == {f"events_p{n}_events_v_idx": f"events_p{n}" for n in range(4)}

    again = run_module(MODULE, args)[1]
    assert (again["changed"], again["queries"]) == (False, [])
    assert again["partitions"] == [dict(entry, created=False, attached=False) for entry in expected]

    checked_drop = run_module(MODULE, dict(args, state="absent"), check=True)[1]
    assert checked_drop["queries"] == ['DROP INDEX IF EXISTS "public"."events_v_idx"']  # not CONCURRENTLY: see the docs
    assert run_module(MODULE, dict(args, state="absent"))[1]["changed"] is True
    assert index_row(db, "events_v_idx") is None
    assert index_row(db, "events_p0_events_v_idx") is None


def test_an_interrupted_partitioned_build_resumes(db):
    hash_partitioned(db, "metrics")
    # What a run stopped half-way leaves: the parent, p0's index attached, p1's built but not
    # attached, p2's build interrupted (invalid), nothing for p3.
    db.execute("CREATE INDEX metrics_v_idx ON ONLY metrics (v)")
    db.execute("CREATE INDEX CONCURRENTLY metrics_p0_metrics_v_idx ON metrics_p0 (v)")
    db.execute("ALTER INDEX metrics_v_idx ATTACH PARTITION metrics_p0_metrics_v_idx")
    db.execute("CREATE INDEX CONCURRENTLY metrics_p1_metrics_v_idx ON metrics_p1 (v)")
    with open_writer("metrics_p2"):
        db.execute("SET lock_timeout = '200ms'")
        with pytest.raises(Exception, match="lock timeout"):
            db.execute("CREATE INDEX CONCURRENTLY metrics_p2_metrics_v_idx ON metrics_p2 (v)")
        db.execute("RESET lock_timeout")
    assert index_row(db, "metrics_p2_metrics_v_idx")[:2] == (False, False)
    assert index_row(db, "metrics_v_idx")[0] is False

    result = run_module(MODULE, index("metrics_v_idx", "metrics", columns=["v"]), diff=True)[1]
    assert result["failed"] is False, result.get("msg")
    assert (result["changed"], result["rebuilt"]) == (True, True)
    assert (result["diff"]["before"]["valid"], result["diff"]["after"]["valid"]) == (False, True)
    states = {entry["partition"]: (entry["created"], entry["attached"], entry["rebuilt"]) for entry in result["partitions"]}
    assert states == {
        "public.metrics_p0": (False, False, False),
        "public.metrics_p1": (False, True, False),
        "public.metrics_p2": (False, True, True),
        "public.metrics_p3": (True, True, False),
    }
    assert result["queries"] == [
        'ALTER INDEX "public"."metrics_v_idx" ATTACH PARTITION "public"."metrics_p1_metrics_v_idx"',
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."metrics_p2_metrics_v_idx"',
        'CREATE INDEX CONCURRENTLY "metrics_p2_metrics_v_idx" ON "public"."metrics_p2" USING btree ("v")',
        'ALTER INDEX "public"."metrics_v_idx" ATTACH PARTITION "public"."metrics_p2_metrics_v_idx"',
        'CREATE INDEX CONCURRENTLY "metrics_p3_metrics_v_idx" ON "public"."metrics_p3" USING btree ("v")',
        'ALTER INDEX "public"."metrics_v_idx" ATTACH PARTITION "public"."metrics_p3_metrics_v_idx"',
    ]
    assert index_row(db, "metrics_v_idx")[0] is True
    assert len(attached(db, "metrics_v_idx")) == 4
    assert run_module(MODULE, index("metrics_v_idx", "metrics", columns=["v"]))[1]["changed"] is False


def test_a_partition_index_with_another_definition_is_an_error(db):
    hash_partitioned(db, "clicks", modulus=2)
    db.execute("CREATE INDEX clicks_p1_clicks_v_idx ON clicks_p1 (payload)")
    result = run_module(MODULE, index("clicks_v_idx", "clicks", columns=["v"]))[1]
    assert result["failed"] is True
    assert "index public.clicks_p1_clicks_v_idx" in result["msg"]
    assert "found: CREATE INDEX clicks_p1_clicks_v_idx ON public.clicks_p1 USING btree (payload)" in result["msg"]
    assert "asked for: CREATE INDEX clicks_p1_clicks_v_idx ON public.clicks_p1 USING btree (v)" in result["msg"]
    # What ran before the error is reported; the next run (after the fix) resumes from there.
    assert result["queries"][0] == 'CREATE INDEX "clicks_v_idx" ON ONLY "public"."clicks" USING btree ("v")'
    assert [(e["partition"], e["created"], e["attached"]) for e in result["partitions"]] == [
        ("public.clicks_p0", True, True),
        ("public.clicks_p1", False, False),
    ]
    db.execute("DROP INDEX clicks_p1_clicks_v_idx")
    resumed = run_module(MODULE, index("clicks_v_idx", "clicks", columns=["v"]))[1]
    assert (resumed["failed"], resumed["changed"]) == (False, True)
    assert index_row(db, "clicks_v_idx")[0] is True


def test_unique_index_on_a_partitioned_table_and_long_partition_names(db):
    long_table = "very_long_partitioned_table_name_for_sensor_readings"
    db.execute(sql.SQL("CREATE TABLE {} (id bigint, v int) PARTITION BY HASH (id)").format(sql.Identifier(long_table)))
    for remainder in range(2):
        db.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES WITH (MODULUS 2, REMAINDER {})").format(
                sql.Identifier(f"{long_table}_part_{remainder}"), sql.Identifier(long_table), sql.Literal(remainder)
            )
        )
    db.execute(sql.SQL("INSERT INTO {} SELECT g, g FROM generate_series(1, 100) g").format(sql.Identifier(long_table)))
    result = run_module(MODULE, index("readings_id_key", long_table, columns=["id"], unique=True))[1]
    assert result["failed"] is False, result.get("msg")
    names = [entry["index"] for entry in result["partitions"]]
    assert all(len(name.encode()) == 63 for name in names) and len(set(names)) == 2
    assert all(name.startswith(long_table) for name in names)
    assert set(attached(db, "readings_id_key")) == set(names)
    assert run_module(MODULE, index("readings_id_key", long_table, columns=["id"], unique=True))[1]["changed"] is False
    without_key = run_module(MODULE, index("readings_v_key", long_table, columns=["v"], unique=True))[1]
    assert without_key["failed"] is True
    assert "must include all partitioning columns" in without_key["msg"]


def test_sub_partitioned_partitions_get_a_partitioned_index_of_their_own(db):
    db.execute("CREATE TABLE orders (region text, id bigint, v int) PARTITION BY LIST (region)")
    db.execute("CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu') PARTITION BY HASH (id)")
    db.execute("CREATE TABLE orders_eu_h0 PARTITION OF orders_eu FOR VALUES WITH (MODULUS 2, REMAINDER 0)")
    db.execute("CREATE TABLE orders_eu_h1 PARTITION OF orders_eu FOR VALUES WITH (MODULUS 2, REMAINDER 1)")
    db.execute("CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us')")
    db.execute("INSERT INTO orders SELECT CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g, g FROM generate_series(1, 200) g")
    result = run_module(MODULE, index("orders_v_idx", "orders", columns=["v"]))[1]
    assert result["failed"] is False, result.get("msg")
    assert [(e["partition"], e["index"], e["parent_index"], e["created"], e["attached"]) for e in result["partitions"]] == [
        ("public.orders_eu", "orders_eu_orders_v_idx", "public.orders_v_idx", True, True),
        ("public.orders_eu_h0", "orders_eu_h0_orders_eu_orders_v_idx", "public.orders_eu_orders_v_idx", True, True),
        ("public.orders_eu_h1", "orders_eu_h1_orders_eu_orders_v_idx", "public.orders_eu_orders_v_idx", True, True),
        ("public.orders_us", "orders_us_orders_v_idx", "public.orders_v_idx", True, True),
    ]
    assert index_row(db, "orders_v_idx")[0] is True
    assert index_row(db, "orders_eu_orders_v_idx")[0] is True
    again = run_module(MODULE, index("orders_v_idx", "orders", columns=["v"]))[1]
    assert (again["changed"], again["queries"], len(again["partitions"])) == (False, [], 4)


# Names, errors ---------------------------------------------------------------------------------
def test_hostile_names_are_quoted_and_execute_nothing(db):
    db.execute("CREATE TABLE notes (id int, body text)")
    result = run_module(MODULE, index(HOSTILE, "notes", columns=["body"]))[1]
    assert result["failed"] is False, result.get("msg")
    assert result["queries"] == ['CREATE INDEX CONCURRENTLY "a""; DROP TABLE zdm_victim; --" ON "public"."notes" USING btree ("body")']
    assert victim_exists(db)
    assert index_row(db, HOSTILE)[:2] == (True, True)
    assert run_module(MODULE, index(HOSTILE, "notes", columns=["body"]))[1]["changed"] is False
    assert run_module(MODULE, index(HOSTILE, "notes", state="absent"))[1]["changed"] is True
    assert index_row(db, HOSTILE) is None

    for args in (dict(columns=["body"]), dict(columns=[HOSTILE])):
        missing = run_module(MODULE, index("notes_idx", HOSTILE, **args))[1]
        assert missing["failed"] is True
        assert f"table public.{HOSTILE} not found in database 'zdm_index_test'" in missing["msg"]
        assert missing["queries"] == []
    bad_column = run_module(MODULE, index("notes_idx", "notes", columns=[HOSTILE]))[1]
    assert bad_column["failed"] is True
    assert f'column "{HOSTILE}" does not exist' in bad_column["msg"]
    assert victim_exists(db)


def test_a_missing_table_names_the_table_and_the_database(db):
    result = run_module(MODULE, index("x_idx", "sales.nowhere", columns=["id"]), check=True)[1]
    assert result["failed"] is True
    assert f"table sales.nowhere not found in database 'zdm_index_test' on {where(SCRATCH_PG)}" in result["msg"]
    assert result["queries"] == []


def test_wrong_password_names_the_user_and_not_the_password(db):
    run, result = run_module(MODULE, index("wrong_pw_idx", "zdm_victim", columns=["id"], login_password="Wrong-Secret-9"))
    assert result["failed"] is True
    assert "authentication failed for user 'migrator'" in result["msg"]
    assert "Wrong-Secret-9" not in run.stdout
    assert "Wrong-Secret-9" not in result["msg"]
    assert index_row(db, "wrong_pw_idx") is None


def state_table(conn, old_shape=False):
    """The migration_state progress table in the scratch database with phase3_optimize running;
    `old_shape`: as created before the progress column existed."""
    conn.execute("DROP TABLE IF EXISTS migration_progress")
    progress = "" if old_shape else ", progress jsonb NOT NULL DEFAULT '{}'"
    conn.execute(
        "CREATE TABLE migration_progress (phase text PRIMARY KEY, status text NOT NULL, started_at timestamptz, "
        f"completed_at timestamptz, attempts integer NOT NULL DEFAULT 0, details jsonb NOT NULL DEFAULT '{{}}'{progress})"
    )
    conn.execute("INSERT INTO migration_progress (phase, status, started_at, attempts) VALUES ('phase3_optimize', 'running', now(), 1)")


def test_a_build_reports_its_progress_into_migration_state_while_it_runs(db):
    """A reader of migration_state sees the build's progress change during the run (blocks done
    rising of a known total, then done), status.yml shows it live, and the table of the old shape
    got the progress column."""
    db.execute("CREATE TABLE watched (id bigserial PRIMARY KEY, v int)")
    db.execute("INSERT INTO watched (v) SELECT g FROM generate_series(1, 6000) g")  # about 12 s at 2 ms a row
    db.execute("VACUUM ANALYZE watched")
    state_table(db, old_shape=True)
    step = "index public.watched.watched_slow_idx"
    seen = []  # (moment, the step's progress) whenever it changed
    stop = threading.Event()
    errors = []

    def reader():
        try:
            with connect(ARGS) as conn:
                while not stop.is_set():
                    found = conn.execute(
                        "SELECT to_jsonb(p) -> 'progress' -> %s FROM migration_progress p WHERE phase = 'phase3_optimize'", (step,)
                    ).fetchone()
                    if found and found[0] and (not seen or seen[-1][1] != found[0]):
                        seen.append((time.monotonic(), found[0]))
                    time.sleep(0.05)
        except Exception as exc:
            errors.append(exc)

    results = {}

    def build():
        progress = dict(ARGS, phase="phase3_optimize", every=0.5)
        results["build"] = run_module(MODULE, index("watched_slow_idx", "watched", columns=["slow_key(v)"], progress=progress))[1]

    threads = [threading.Thread(target=reader), threading.Thread(target=build)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while not any(entry[1].get("unit") == "blocks" and entry[1].get("done", 0) > 0 for entry in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        state_db = {key: ARGS[key] for key in ("login_host", "login_port", "login_user", "login_db")}
        status = run_playbook(
            "status.yml",
            extravars={"migration_state_db": state_db, "migration_password": LAB_PASSWORD, "migration_phases": ["phase3_optimize"]},
        )
    finally:
        threads[1].join(timeout=120)
        stop.set()
        threads[0].join(timeout=30)
    assert errors == []
    result = results["build"]
    assert (result["failed"], result["changed"]) == (False, True), result.get("msg")
    assert not result.get("warnings"), result.get("warnings")
    running = [figures for _moment, figures in seen if figures["state"] == "running" and figures["unit"] == "blocks"]
    scanned = [figures for figures in running if figures["total"]]
    assert len(scanned) >= 3, seen
    assert {figures["total"] for figures in scanned} == {scanned[0]["total"]}
    done = [figures["done"] for figures in scanned]
    assert done == sorted(done) and done[-1] > done[0], done
    assert any(figures["detail"]["phase"].startswith("building index") for figures in scanned)
    assert any(figures["rate"] for figures in scanned)
    assert all(figures["updated_at"] for figures in scanned)
    assert seen[-1][1]["state"] == "done"
    assert status.status == "successful", status.stdout
    lines = status.task_results("Show where the migration stands")[0]["msg"].splitlines()
    line = next((line for line in lines if line.startswith(f"    step {step}: running ")), None)
    assert line is not None, "\n".join(lines)
    assert " blocks (" in line and ", updated " in line and "STALE" not in line, line
    column = "SELECT count(*) FROM pg_attribute WHERE attrelid = 'migration_progress'::regclass AND attname = 'progress'"
    assert db.execute(column).fetchone()[0] == 1


def test_progress_that_cannot_be_recorded_warns_and_check_mode_records_none(db):
    db.execute("CREATE TABLE unrecorded (id int, v int)")
    db.execute("INSERT INTO unrecorded SELECT g, g FROM generate_series(1, 300) g")
    state_table(db)
    nowhere = dict(ARGS, phase="phase9_unknown", every=0.1)
    result = run_module(MODULE, index("unrecorded_slow_idx", "unrecorded", columns=["slow_key(v)"], progress=nowhere))[1]
    assert (result["failed"], result["changed"]) == (False, True), result.get("msg")
    assert index_row(db, "unrecorded_slow_idx")[:2] == (True, True)
    assert any("phase 'phase9_unknown' has no row in public.migration_progress" in warning for warning in result["warnings"]), result

    recorded = dict(ARGS, phase="phase3_optimize", every=0.1)
    checked = run_module(MODULE, index("unrecorded_v_idx", "unrecorded", columns=["slow_key(v)"], progress=recorded), check=True)[1]
    assert (checked["failed"], checked["changed"]) == (False, True), checked.get("msg")
    assert db.execute("SELECT progress FROM migration_progress WHERE phase = 'phase3_optimize'").fetchone()[0] == {}
    assert index_row(db, "unrecorded_v_idx") is None
