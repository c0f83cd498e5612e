"""zerodowntime.migration.pg_publication run against blue, in a scratch database of its
own (zdm_pub_test) with a role of its own (zdm_pub_test_owner), so concurrent runs of other tests
are not disturbed."""

from __future__ import annotations

import re

import pytest
from psycopg import sql

from tests.lab import BLUE, connect, drop_database, recreate_database, run_module, where

MODULE = "zerodowntime.migration.pg_publication"
DB = "zdm_pub_test"
OWNER = "zdm_pub_test_owner"
ARGS = dict(BLUE, login_db=DB)
HOSTILE = 'a"; DROP TABLE zdm_victim; --'
ALL_ACTIONS = ["insert", "update", "delete", "truncate"]
WITH_DEFAULTS = "WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = false)"


def drop_scratch():
    drop_database(BLUE, DB)
    with connect(BLUE, login_db="postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(OWNER)))


@pytest.fixture(scope="module")
def scratch(lab):
    drop_scratch()
    recreate_database(BLUE, DB)
    with connect(BLUE, login_db="postgres") as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(OWNER)))
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(DB), sql.Identifier(OWNER)))
    with connect(ARGS) as conn:
        conn.execute("CREATE TABLE zdm_victim (id int)")
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        conn.execute("CREATE SCHEMA sales")
        conn.execute("CREATE TABLE sales.items (id int PRIMARY KEY)")
        conn.execute("CREATE SCHEMA reports")
        conn.execute("CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100)")
        conn.execute("CREATE TABLE parent (id int)")
        conn.execute("CREATE TABLE child () INHERITS (parent)")
        conn.execute("CREATE UNLOGGED TABLE scratch_unlogged (id int)")
        conn.execute("CREATE VIEW customer_ids AS SELECT id FROM customers")
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(HOSTILE)))
    yield
    drop_scratch()


@pytest.fixture()
def db(scratch):
    with connect(ARGS) as conn:
        yield conn


def pub(name, **args):
    return dict(ARGS, name=name, **args)


def catalog(conn, name):
    """The publication as the catalogs say, independently of the module's own reading."""
    row = conn.execute(
        "SELECT oid, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot, pg_get_userbyid(pubowner) "
        "FROM pg_publication WHERE pubname = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    tables = conn.execute("SELECT prrelid::regclass::text FROM pg_publication_rel WHERE prpubid = %s ORDER BY 1", (row[0],)).fetchall()
    schemas = conn.execute(
        "SELECT nspname FROM pg_publication_namespace JOIN pg_namespace n ON n.oid = pnnspid WHERE pnpubid = %s ORDER BY 1", (row[0],)
    ).fetchall()
    return {
        "all_tables": row[1],
        "publish": [action for action, on in zip(ALL_ACTIONS, row[2:6], strict=True) if on],
        "via_root": row[6],
        "owner": row[7],
        "tables": [t for (t,) in tables],
        "schemas": [s for (s,) in schemas],
    }


def test_create_check_mode_diff_and_second_run(db):
    args = pub("zdm_p_create", tables=["sales.items", "customers", "public.customers"])
    run, checked = run_module(MODULE, args, check=True, diff=True)
    assert checked["failed"] is False, run.stdout
    assert checked["changed"] is True
    assert checked["queries"] == [
        f'CREATE PUBLICATION "zdm_p_create" FOR TABLE ONLY "public"."customers", ONLY "sales"."items" {WITH_DEFAULTS}'
    ]
    assert checked["diff"]["before"] == {}
    assert checked["diff"]["after"]["tables"] == ["public.customers", "sales.items"]
    assert catalog(db, "zdm_p_create") is None

    created = run_module(MODULE, args, diff=True)[1]
    assert (created["changed"], created["queries"]) == (True, checked["queries"])
    assert created["publication"] == {
        "all_tables": False,
        "tables": ["public.customers", "sales.items"],
        "schemas": [],
        "publish": ALL_ACTIONS,
        "publish_via_partition_root": False,
        "owner": "migrator",
    }
    assert catalog(db, "zdm_p_create") == {
        "all_tables": False,
        "publish": ALL_ACTIONS,
        "via_root": False,
        "owner": "migrator",
        "tables": ["customers", "sales.items"],
        "schemas": [],
    }

    again = run_module(MODULE, args, diff=True)[1]
    assert (again["changed"], again["queries"]) == (False, [])
    assert again["publication"] == created["publication"]
    assert again["diff"]["before"] == again["diff"]["after"]


def test_each_parameter_is_read_back_and_altered_alone(db):
    name = "zdm_p_alter"
    base = pub(name, tables=["customers"])
    assert run_module(MODULE, base)[1]["changed"] is True

    steps = [
        (dict(tables=["customers", "orders"]), [f'ALTER PUBLICATION "{name}" ADD TABLE ONLY "public"."orders"']),
        (dict(tables=["orders"]), [f'ALTER PUBLICATION "{name}" DROP TABLE ONLY "public"."customers"']),
        (
            dict(tables=["customers", "sales.items"]),
            [
                f'ALTER PUBLICATION "{name}" DROP TABLE ONLY "public"."orders"',
                f'ALTER PUBLICATION "{name}" ADD TABLE ONLY "public"."customers", ONLY "sales"."items"',
            ],
        ),
        (
            dict(tables=["customers", "sales.items"], publish=["update", "insert"]),
            [f"ALTER PUBLICATION \"{name}\" SET (publish = 'insert, update')"],
        ),
        (
            dict(tables=["customers", "sales.items"], publish=["insert", "update"], publish_via_partition_root=True),
            [f'ALTER PUBLICATION "{name}" SET (publish_via_partition_root = true)'],
        ),
        (
            dict(tables=["customers", "sales.items"], publish=["insert", "update"], publish_via_partition_root=True, owner=OWNER),
            [f'ALTER PUBLICATION "{name}" OWNER TO "{OWNER}"'],
        ),
        # Not naming the tables leaves them alone; publish and publish_via_partition_root have defaults.
        (
            dict(),
            [
                f"ALTER PUBLICATION \"{name}\" SET (publish = 'insert, update, delete, truncate')",
                f'ALTER PUBLICATION "{name}" SET (publish_via_partition_root = false)',
            ],
        ),
        (dict(tables=[]), [f'ALTER PUBLICATION "{name}" DROP TABLE ONLY "public"."customers", ONLY "sales"."items"']),
    ]
    for options, queries in steps:
        before = catalog(db, name)
        checked = run_module(MODULE, pub(name, **options), check=True, diff=True)[1]
        assert (checked["changed"], checked["queries"]) == (True, queries), options
        assert catalog(db, name) == before, options
        changed = run_module(MODULE, pub(name, **options), diff=True)[1]
        assert (changed["changed"], changed["queries"]) == (True, queries), options
        assert changed["diff"]["before"] != changed["diff"]["after"]
        assert changed["diff"]["after"] == changed["publication"] == checked["diff"]["after"], options
        again = run_module(MODULE, pub(name, **options))[1]
        assert (again["changed"], again["queries"]) == (False, []), options

    final = catalog(db, name)
    assert final == {"all_tables": False, "publish": ALL_ACTIONS, "via_root": False, "owner": OWNER, "tables": [], "schemas": []}


def test_schemas_are_added_and_dropped(db):
    name = "zdm_p_schemas"
    created = run_module(MODULE, pub(name, schemas=["sales"], tables=["customers"]))[1]
    assert created["queries"] == [
        f'CREATE PUBLICATION "{name}" FOR TABLE ONLY "public"."customers", TABLES IN SCHEMA "sales" {WITH_DEFAULTS}'
    ]
    assert (created["publication"]["schemas"], created["publication"]["tables"]) == (["sales"], ["public.customers"])

    moved = run_module(MODULE, pub(name, schemas=["reports"]))[1]
    assert moved["queries"] == [
        f'ALTER PUBLICATION "{name}" DROP TABLES IN SCHEMA "sales"',
        f'ALTER PUBLICATION "{name}" ADD TABLES IN SCHEMA "reports"',
    ]
    assert catalog(db, name)["schemas"] == ["reports"]
    assert catalog(db, name)["tables"] == ["customers"]  # tables not named: left alone
    assert run_module(MODULE, pub(name, schemas=["reports"]))[1]["changed"] is False

    missing = run_module(MODULE, pub(name, schemas=["reports", "no_such_schema"]))[1]
    assert missing["failed"] is True
    assert f"schema(s) not found in database 'zdm_pub_test' on {where(BLUE)}: no_such_schema" in missing["msg"]
    assert missing["queries"] == []


def test_switching_to_and_from_all_tables_needs_recreate(db):
    name = "zdm_p_switch"
    assert run_module(MODULE, pub(name, tables=["customers"]))[1]["changed"] is True

    refused = run_module(MODULE, pub(name, all_tables=True))[1]
    assert refused["failed"] is True
    assert "is a table/schema list and FOR ALL TABLES was asked for" in refused["msg"]
    assert "ALTER PUBLICATION cannot switch" in refused["msg"]
    assert "recreate: true" in refused["msg"] and "REFRESH PUBLICATION" in refused["msg"]
    assert refused["queries"] == []
    assert catalog(db, name)["tables"] == ["customers"]

    checked = run_module(MODULE, pub(name, all_tables=True, recreate=True), check=True, diff=True)[1]
    assert checked["changed"] is True
    assert checked["queries"] == [f'DROP PUBLICATION "{name}"', f'CREATE PUBLICATION "{name}" FOR ALL TABLES {WITH_DEFAULTS}']
    assert checked["diff"]["after"]["all_tables"] is True
    assert catalog(db, name)["all_tables"] is False

    recreated = run_module(MODULE, pub(name, all_tables=True, recreate=True))[1]
    assert (recreated["changed"], recreated["queries"]) == (True, checked["queries"])
    assert catalog(db, name)["all_tables"] is True
    assert run_module(MODULE, pub(name, all_tables=True, recreate=True))[1]["changed"] is False
    assert run_module(MODULE, pub(name, all_tables=True))[1]["changed"] is False

    back_refused = run_module(MODULE, pub(name, tables=["orders"]))[1]
    assert back_refused["failed"] is True
    assert "is FOR ALL TABLES and a table/schema list was asked for" in back_refused["msg"]
    assert catalog(db, name)["all_tables"] is True

    back = run_module(MODULE, pub(name, tables=["orders"], recreate=True))[1]
    assert back["queries"] == [
        f'DROP PUBLICATION "{name}"',
        f'CREATE PUBLICATION "{name}" FOR TABLE ONLY "public"."orders" {WITH_DEFAULTS}',
    ]
    assert catalog(db, name)["tables"] == ["orders"] and catalog(db, name)["all_tables"] is False


def test_a_failure_inside_the_transaction_leaves_nothing_half_done(db):
    """The DROP of a recreate, and the table drops of an alter, are rolled back when a later statement fails."""
    name = "zdm_p_atomic"
    assert run_module(MODULE, pub(name, all_tables=True))[1]["changed"] is True
    failed = run_module(MODULE, pub(name, tables=["customers", "scratch_unlogged"], recreate=True))[1]
    assert failed["failed"] is True
    # PostgreSQL's message, primary or DETAIL line (pg_client.last_line has picked either)
    assert re.search(r'cannot add relation "scratch_unlogged"|not supported for unlogged tables', failed["msg"])
    assert failed["queries"][0] == f'DROP PUBLICATION "{name}"'
    assert catalog(db, name)["all_tables"] is True  # the DROP was rolled back

    other = "zdm_p_atomic_alter"
    assert run_module(MODULE, pub(other, tables=["customers"]))[1]["changed"] is True
    failed = run_module(MODULE, pub(other, tables=["scratch_unlogged"]))[1]
    assert failed["failed"] is True
    assert failed["queries"] == [
        f'ALTER PUBLICATION "{other}" DROP TABLE ONLY "public"."customers"',
        f'ALTER PUBLICATION "{other}" ADD TABLE ONLY "public"."scratch_unlogged"',
    ]
    assert catalog(db, other)["tables"] == ["customers"]  # the DROP TABLE was rolled back


def test_missing_table_view_or_owner_is_an_error_and_changes_nothing(db):
    name = "zdm_p_missing"
    not_created = run_module(MODULE, pub(name, tables=["customers", "no_such_table"]))[1]
    assert not_created["failed"] is True
    assert f"table(s) not found in database 'zdm_pub_test' on {where(BLUE)}: public.no_such_table" in not_created["msg"]
    assert "create them first or fix 'tables'" in not_created["msg"]
    assert not_created["queries"] == []
    assert catalog(db, name) is None

    assert run_module(MODULE, pub(name, tables=["customers"]))[1]["changed"] is True
    not_altered = run_module(MODULE, pub(name, tables=["orders", "sales.no_such_table"], publish=["insert"]))[1]
    assert not_altered["failed"] is True
    assert "sales.no_such_table" in not_altered["msg"]
    assert not_altered["queries"] == []
    view = run_module(MODULE, pub(name, tables=["customer_ids"]))[1]
    assert view["failed"] is True
    assert f"not a table in database 'zdm_pub_test' on {where(BLUE)}: public.customer_ids" in view["msg"]
    no_owner = run_module(MODULE, pub(name, tables=["orders"], owner="zdm_no_such_role"))[1]
    assert no_owner["failed"] is True
    assert f"role 'zdm_no_such_role' does not exist on {where(BLUE)}: create it first or fix 'owner'" in no_owner["msg"]
    assert no_owner["queries"] == []
    assert catalog(db, name) == {
        "all_tables": False,
        "publish": ALL_ACTIONS,
        "via_root": False,
        "owner": "migrator",
        "tables": ["customers"],
        "schemas": [],
    }

    conflicting = run_module(MODULE, pub(name, all_tables=True, tables=["customers"]))[1]
    assert conflicting["failed"] is True
    assert "drop 'tables' and 'schemas', or set all_tables: false" in conflicting["msg"]


def test_hostile_names_round_trip_and_execute_nothing(db):
    created = run_module(MODULE, pub(HOSTILE, tables=[HOSTILE]))[1]
    assert created["failed"] is False, created.get("msg")
    assert created["changed"] is True
    assert created["queries"] == [
        f'CREATE PUBLICATION "a""; DROP TABLE zdm_victim; --" FOR TABLE ONLY "public"."a""; DROP TABLE zdm_victim; --" {WITH_DEFAULTS}'
    ]
    assert created["publication"]["tables"] == [f"public.{HOSTILE}"]
    assert db.execute("SELECT to_regclass('zdm_victim')").fetchone()[0] is not None
    assert catalog(db, HOSTILE)["tables"] == ['"a""; DROP TABLE zdm_victim; --"']  # regclass quotes it

    again = run_module(MODULE, pub(HOSTILE, tables=[f"public.{HOSTILE}"]))[1]
    assert (again["changed"], again["queries"]) == (False, [])
    dropped = run_module(MODULE, pub(HOSTILE, state="absent"))[1]
    assert dropped["changed"] is True
    assert catalog(db, HOSTILE) is None
    assert db.execute("SELECT to_regclass('zdm_victim')").fetchone()[0] is not None

    too_long = run_module(MODULE, pub("p" * 64))[1]
    assert too_long["failed"] is True and "longer than 63 bytes" in too_long["msg"]


def test_partitions_and_inheritance_are_published_exactly_as_listed(db):
    name = "zdm_p_parted"
    created = run_module(MODULE, pub(name, tables=["parted", "parent"], publish_via_partition_root=True))[1]
    assert created["publication"]["tables"] == ["public.parent", "public.parted"]
    assert created["publication"]["publish_via_partition_root"] is True
    assert catalog(db, name)["tables"] == ["parent", "parted"]  # ONLY: the inheritance child is not added
    assert run_module(MODULE, pub(name, tables=["parted", "parent"], publish_via_partition_root=True))[1]["changed"] is False


def test_drop_check_mode_diff_and_idempotence(db):
    name = "zdm_p_drop"
    assert run_module(MODULE, pub(name, tables=["orders"]))[1]["changed"] is True
    checked = run_module(MODULE, pub(name, state="absent"), check=True, diff=True)[1]
    assert checked["changed"] is True
    assert checked["queries"] == [f'DROP PUBLICATION "{name}"']
    assert checked["diff"]["before"]["tables"] == ["public.orders"] and checked["diff"]["after"] == {}
    assert catalog(db, name) is not None
    dropped = run_module(MODULE, pub(name, state="absent"))[1]
    assert (dropped["changed"], dropped["state"], dropped["publication"]) == (True, "absent", {})
    assert catalog(db, name) is None
    assert run_module(MODULE, pub(name, state="absent"))[1]["changed"] is False


def test_publication_needs_wal_level_logical(replica_wal_server):
    result = run_module(MODULE, dict(replica_wal_server, name="zdm_p_nowal"))[1]
    assert result["failed"] is True
    assert f"wal_level is 'replica' on {where(replica_wal_server)}" in result["msg"]
    assert "wal_level=logical" in result["msg"]
    assert result["queries"] == []
    with connect(replica_wal_server) as conn:
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0


def test_wrong_password_names_the_user_and_changes_nothing(db):
    run, result = run_module(MODULE, pub("zdm_p_password", login_password="Wrong-Secret-9"))
    assert result["failed"] is True
    assert "authentication failed for user 'migrator'" in result["msg"]
    assert "Wrong-Secret-9" not in run.stdout
    assert catalog(db, "zdm_p_password") is None
