"""zerodowntime.migration.pg_partition run against the suite's own PostgreSQL (SCRATCH_PG, not
the lab's: main's tests switch blue and green over meanwhile), in a scratch database."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.lab import SCRATCH_PG, connect, run_module, scratch_database, where

MODULE = "zerodowntime.migration.pg_partition"
SCRATCH = "zdm_partition_test"
HOSTILE = 'a"; DROP TABLE zdm_victim; --'


@pytest.fixture(scope="module")
def scratch(scratch_postgres):
    """A database of our own, dropped at the end."""
    with scratch_database(SCRATCH_PG, SCRATCH) as endpoint:
        yield endpoint


@pytest.fixture()
def db(scratch):
    """A connection to the scratch database; every test starts with an empty public schema."""
    with connect(scratch) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS app CASCADE")
        conn.execute("CREATE SCHEMA public")
        yield conn


def pg_partition(scratch, check=False, diff=False, **args):
    return run_module(MODULE, dict(scratch, **args), check=check, diff=diff)[1]


def partitions(conn, table) -> dict:
    """name -> bound of the table's partitions, as the catalog says."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass",
        (table,),
    )
    return dict(rows.fetchall())


def months(conn, first_offset, last_offset, prefix):
    """Expected monthly partitions from `first_offset` to `last_offset` months around now, as PostgreSQL prints them."""
    rows = conn.execute(
        "SELECT %s || to_char(m, 'YYYYMM'), format('FOR VALUES FROM (%%L) TO (%%L)', m, m + interval '1 month') "
        "FROM generate_series(date_trunc('month', now()) + make_interval(months => %s), "
        "date_trunc('month', now()) + make_interval(months => %s), interval '1 month') AS m",
        (prefix, first_offset, last_offset),
    )
    return dict(rows.fetchall())


def test_100_hash_partitions_in_one_task_one_transaction_and_idempotent(scratch, db):
    db.execute("CREATE TABLE vms (id bigint, tenant_id bigint NOT NULL, name text) PARTITION BY HASH (tenant_id)")
    result = pg_partition(scratch, table="vms", strategy="hash", modulus=100)
    assert result["failed"] is False, result["msg"]
    assert result["changed"] is True
    assert result["created"] == [f"vms_p{r}" for r in range(100)]
    assert len(result["queries"]) == 100
    assert result["queries"][7] == 'CREATE TABLE "public"."vms_p7" PARTITION OF "public"."vms" FOR VALUES WITH (MODULUS 100, REMAINDER 7)'
    assert partitions(db, "vms") == {f"vms_p{r}": f"FOR VALUES WITH (modulus 100, remainder {r})" for r in range(100)}
    assert result["partitions"][42] == {"name": "vms_p42", "bound": "FOR VALUES WITH (modulus 100, remainder 42)"}
    # all 100 were created by one transaction: their catalog rows carry the same xmin
    xmins = db.execute(
        "SELECT count(DISTINCT c.xmin::text) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'vms'::regclass"
    )
    assert xmins.fetchone()[0] == 1
    db.execute("INSERT INTO vms (id, tenant_id, name) SELECT g, g % 37, 'vm' FROM generate_series(1, 1000) g")
    assert db.execute("SELECT count(*) FROM vms").fetchone()[0] == 1000

    again = pg_partition(scratch, table="public.vms", strategy="hash", modulus=100)
    assert (again["failed"], again["changed"], again["created"], again["queries"]) == (False, False, [], [])
    assert len(again["partitions"]) == 100


def test_monthly_range_with_start_and_premake_is_idempotent(scratch, db):
    db.execute("CREATE TABLE vm_metrics (id bigint, collected_at timestamptz NOT NULL, cpu_pct numeric) PARTITION BY RANGE (collected_at)")
    start = db.execute("SELECT to_char(date_trunc('month', now()) - interval '6 months' + interval '9 days', 'YYYY-MM-DD')").fetchone()[0]
    result = pg_partition(scratch, table="vm_metrics", strategy="range", interval="month", start=start, premake=3)
    assert result["failed"] is False, result["msg"]
    expected = months(db, -6, 3, "vm_metrics_p")  # start is rounded down to its month; current month + 3 ahead
    assert len(expected) == 10
    assert partitions(db, "vm_metrics") == expected
    assert result["created"] == sorted(expected)
    assert [p["name"] for p in result["partitions"]] == sorted(expected)
    db.execute("INSERT INTO vm_metrics VALUES (1, now(), 1), (2, now() + interval '3 months', 2), (3, now() - interval '6 months', 3)")

    again = pg_partition(scratch, table="vm_metrics", strategy="range", interval="month", start=start, premake=3)
    assert (again["failed"], again["changed"], again["queries"]) == (False, False, [])
    # the seed's shape (six months back, premake 3) written with lookback is the same partition set
    seed_shape = pg_partition(scratch, table="vm_metrics", strategy="range", interval="month", lookback=6, premake=3)
    assert (seed_shape["failed"], seed_shape["changed"]) == (False, False)

    further = pg_partition(scratch, table="vm_metrics", strategy="range", interval="month", lookback=6, premake=4)
    assert further["created"] == sorted(months(db, 4, 4, "vm_metrics_p"))


def test_daily_range_on_a_date_key(scratch, db):
    db.execute("CREATE TABLE events (day date NOT NULL) PARTITION BY RANGE (day)")
    result = pg_partition(scratch, table="events", strategy="range", interval="day", lookback=1, premake=1)
    assert result["failed"] is False, result["msg"]
    expected = dict(
        db.execute(
            "SELECT 'events_p' || to_char(d, 'YYYYMMDD'), format('FOR VALUES FROM (%L) TO (%L)', d::date, d::date + 1) "
            "FROM generate_series(current_date - 1, current_date + 1, interval '1 day') AS d"
        ).fetchall()
    )
    assert partitions(db, "events") == expected


def test_integer_step_range_follows_the_current_maximum(scratch, db):
    db.execute("CREATE TABLE readings (id bigint NOT NULL) PARTITION BY RANGE (id)")
    result = pg_partition(scratch, table="readings", strategy="range", step=1000, start=0, premake=2)
    assert result["failed"] is False, result["msg"]
    assert partitions(db, "readings") == {
        "readings_p0": "FOR VALUES FROM ('0') TO ('1000')",
        "readings_p1000": "FOR VALUES FROM ('1000') TO ('2000')",
        "readings_p2000": "FOR VALUES FROM ('2000') TO ('3000')",
    }
    db.execute("INSERT INTO readings VALUES (2500)")
    more = pg_partition(scratch, table="readings", strategy="range", step=1000, start=0, premake=2)
    assert more["created"] == ["readings_p3000", "readings_p4000"]
    assert len(partitions(db, "readings")) == 5
    assert pg_partition(scratch, table="readings", strategy="range", step=1000, start=0, premake=2)["changed"] is False


def test_list_with_default_partition(scratch, db):
    db.execute("CREATE TABLE tenants (id bigint, region text NOT NULL) PARTITION BY LIST (region)")
    values = {"eu": ["de", "fr", "o'brien"], "us": ["us-east", "us-west"]}
    result = pg_partition(scratch, table="tenants", strategy="list", values=values, default_partition=True)
    assert result["failed"] is False, result["msg"]
    assert partitions(db, "tenants") == {
        "tenants_eu": "FOR VALUES IN ('de', 'fr', 'o''brien')",
        "tenants_us": "FOR VALUES IN ('us-east', 'us-west')",
        "tenants_default": "DEFAULT",
    }
    db.execute("INSERT INTO tenants VALUES (1, 'fr'), (2, 'zz'), (3, 'o''brien')")
    placed = dict(db.execute("SELECT region, tableoid::regclass::text FROM tenants").fetchall())
    assert placed == {"fr": "tenants_eu", "zz": "tenants_default", "o'brien": "tenants_eu"}
    # same values in another order, as a list of lists: still nothing to do
    again = pg_partition(
        scratch, table="tenants", strategy="list", values=[["us-west", "us-east"], ["o'brien", "fr", "de"]], default_partition=True
    )
    assert (again["failed"], again["changed"], again["queries"]) == (False, False, [])


def test_integer_list_of_lists_is_named_after_its_values(scratch, db):
    db.execute("CREATE TABLE shards (shard int NOT NULL) PARTITION BY LIST (shard)")
    result = pg_partition(scratch, table="shards", strategy="list", values=[[1, 2], [3], [-4]])
    assert result["failed"] is False, result["msg"]
    assert partitions(db, "shards") == {
        "shards_1_2": "FOR VALUES IN (1, 2)",
        "shards_3": "FOR VALUES IN (3)",
        "shards_4": "FOR VALUES IN ('-4')",
    }


def test_check_mode_creates_nothing_and_diff_shows_what_would_be_created(scratch, db):
    db.execute("CREATE TABLE vms (id bigint, tenant_id bigint NOT NULL) PARTITION BY HASH (tenant_id)")
    db.execute("CREATE TABLE vms_p0 PARTITION OF vms FOR VALUES WITH (MODULUS 4, REMAINDER 0)")
    result = pg_partition(scratch, check=True, diff=True, table="vms", strategy="hash", modulus=4)
    assert result["failed"] is False, result["msg"]
    assert result["changed"] is True
    assert result["created"] == ["vms_p1", "vms_p2", "vms_p3"]
    assert result["queries"] == [
        f'CREATE TABLE "public"."vms_p{r}" PARTITION OF "public"."vms" FOR VALUES WITH (MODULUS 4, REMAINDER {r})' for r in (1, 2, 3)
    ]
    assert result["diff"] == {
        "before": {"partitions": {"vms_p0": "FOR VALUES WITH (modulus 4, remainder 0)"}},
        "after": {"partitions": {f"vms_p{r}": f"FOR VALUES WITH (modulus 4, remainder {r})" for r in range(4)}},
    }
    assert partitions(db, "vms") == {"vms_p0": "FOR VALUES WITH (modulus 4, remainder 0)"}


def test_partition_with_the_expected_name_but_other_bounds_is_an_error(scratch, db):
    db.execute("CREATE TABLE vm_metrics (collected_at timestamptz NOT NULL) PARTITION BY RANGE (collected_at)")
    name, first, mid = db.execute(
        "SELECT 'vm_metrics_p' || to_char(date_trunc('month', now()), 'YYYYMM'), date_trunc('month', now()), "
        "date_trunc('month', now()) + interval '14 days'"
    ).fetchone()
    db.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF vm_metrics FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(name), sql.Literal(first), sql.Literal(mid)
        )
    )
    actual = partitions(db, "vm_metrics")[name]
    expected = months(db, 0, 0, "vm_metrics_p")[name]
    result = pg_partition(scratch, table="vm_metrics", strategy="range", interval="month", lookback=2, premake=2)
    assert result["failed"] is True
    assert f"partition {name} exists with bounds {actual}; expected {expected}" in result["msg"]
    assert "nothing was changed" in result["msg"]
    assert list(partitions(db, "vm_metrics")) == [name]  # the other four months were not created either


def test_overlapping_partition_under_another_name_is_an_error(scratch, db):
    db.execute("CREATE TABLE readings (id int NOT NULL) PARTITION BY RANGE (id)")
    db.execute("CREATE TABLE readings_legacy PARTITION OF readings FOR VALUES FROM (500) TO (1500)")
    result = pg_partition(scratch, table="readings", strategy="range", step=1000, start=0, premake=2)
    assert result["failed"] is True
    assert (
        "partition readings_legacy (FOR VALUES FROM (500) TO (1500)) overlaps readings_p0 (FOR VALUES FROM (0) TO (1000))" in result["msg"]
    )
    assert list(partitions(db, "readings")) == ["readings_legacy"]


def test_changing_the_modulus_is_an_error(scratch, db):
    db.execute("CREATE TABLE vms (tenant_id bigint NOT NULL) PARTITION BY HASH (tenant_id)")
    assert pg_partition(scratch, table="vms", strategy="hash", modulus=2)["changed"] is True
    result = pg_partition(scratch, table="vms", strategy="hash", modulus=4)
    assert result["failed"] is True
    assert (
        "partition vms_p0 exists with bounds FOR VALUES WITH (modulus 2, remainder 0); expected FOR VALUES WITH (modulus 4, remainder 0)"
        in result["msg"]
    )
    assert len(partitions(db, "vms")) == 2


def test_retention_detaches_old_partitions_and_drops_only_when_asked(scratch, db):
    for table in ("kept", "purged"):
        db.execute(
            sql.SQL("CREATE TABLE {} (collected_at timestamptz NOT NULL, v int) PARTITION BY RANGE (collected_at)").format(
                sql.Identifier(table)
            )
        )
        made = pg_partition(scratch, table=table, strategy="range", interval="month", lookback=12, premake=1)
        assert len(made["created"]) == 14, made.get("msg")
        db.execute(sql.SQL("INSERT INTO {} VALUES (now() - interval '11 months', 1), (now(), 2)").format(sql.Identifier(table)))
    # upper bound at or before now - 6 months: the months from -12 to -7 (upper -11 .. -6 month starts)
    cutoff = db.execute("SELECT now() - interval '6 months'").fetchone()[0]
    old = sorted(
        name
        for (name,) in db.execute(
            "SELECT 'kept_p' || to_char(m, 'YYYYMM') FROM generate_series(date_trunc('month', now()) - interval '12 months', "
            "date_trunc('month', now()), interval '1 month') AS m WHERE m + interval '1 month' <= %s",
            (cutoff,),
        )
    )
    assert len(old) == 6

    kept = pg_partition(
        scratch, table="kept", strategy="range", interval="month", lookback=12, premake=1, retention={"value": 6, "unit": "month"}
    )
    assert kept["failed"] is False, kept["msg"]
    assert kept["detached"] == old and kept["dropped"] == [] and kept["created"] == []
    assert all("DETACH PARTITION" in query for query in kept["queries"])
    assert sorted(set(partitions(db, "kept")) | set(old)) == sorted(months(db, -12, 1, "kept_p"))
    assert not set(partitions(db, "kept")) & set(old)
    standalone = db.execute(
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND NOT relispartition AND relkind = 'r'", (old,)
    ).fetchall()
    assert sorted(name for (name,) in standalone) == old  # detached, still there with their rows
    rows_kept = sum(db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()[0] for name in old)
    assert rows_kept == 1  # the 11-month-old row left with its partition and is still there
    assert db.execute("SELECT count(*) FROM kept").fetchone()[0] == 1
    again = pg_partition(scratch, table="kept", strategy="range", interval="month", lookback=12, premake=1, retention="6 months")
    assert (again["changed"], again["created"], again["detached"]) == (False, [], [])  # detached months are not recreated

    purged = pg_partition(
        scratch, table="purged", strategy="range", interval="month", lookback=12, premake=1, retention="6 months", retention_drop=True
    )
    assert purged["failed"] is False, purged["msg"]
    gone = [name.replace("kept_", "purged_") for name in old]
    assert purged["detached"] == gone and purged["dropped"] == gone
    assert db.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (gone,)).fetchone()[0] == 0


def test_check_mode_retention_changes_nothing(scratch, db):
    db.execute("CREATE TABLE m (at date NOT NULL) PARTITION BY RANGE (at)")
    pg_partition(scratch, table="m", strategy="range", interval="month", lookback=3, premake=0)
    result = pg_partition(
        scratch, check=True, table="m", strategy="range", interval="month", lookback=3, premake=0, retention="1 month", retention_drop=True
    )
    assert result["failed"] is False, result["msg"]
    assert result["changed"] is True and len(result["dropped"]) == 2 and result["dropped"] == result["detached"]
    assert [query.split(" ", 2)[:2] for query in result["queries"]] == [["ALTER", "TABLE"], ["DROP", "TABLE"]] * 2
    assert len(partitions(db, "m")) == 4


@pytest.mark.parametrize(
    ("setup", "args", "messages"),
    [
        pytest.param(
            None,
            dict(table="app.no_such_table", strategy="hash", modulus=4),
            [f"table app.no_such_table does not exist in database '{SCRATCH}' on {where(SCRATCH_PG)}", "PARTITION BY HASH"],
            id="missing table",
        ),
        pytest.param(
            "CREATE TABLE vms (id bigint)",
            dict(table="vms", strategy="hash", modulus=4),
            [f"table public.vms on {where(SCRATCH_PG)} is not partitioned", "PARTITION BY HASH"],
            id="plain table",
        ),
        pytest.param(
            "CREATE TABLE vms (tenant_id bigint) PARTITION BY LIST (tenant_id)",
            dict(table="vms", strategy="hash", modulus=4),
            [f"table public.vms on {where(SCRATCH_PG)} is partitioned by LIST (tenant_id), not by hash: set strategy: list"],
            id="strategy mismatch",
        ),
        pytest.param(
            "CREATE TABLE readings (id bigint) PARTITION BY RANGE (id)",
            dict(table="readings", strategy="range", interval="month"),
            ["partitioned by RANGE (id) of type int8: interval needs a date/timestamp key; use step"],
            id="interval on an integer key",
        ),
    ],
)
def test_a_table_the_options_do_not_fit_is_a_clear_error_and_gets_no_partition(scratch, db, setup, args, messages):
    if setup:
        db.execute(setup)
    result = pg_partition(scratch, **args)
    assert result["failed"] is True
    for message in messages:
        assert message in result["msg"]
    if setup:
        assert partitions(db, args["table"]) == {}


def test_options_of_another_strategy_fail_before_connecting(scratch):
    result = pg_partition(dict(scratch, login_port=1), table="vms", strategy="range", interval="month", modulus=4)
    assert result["failed"] is True
    assert result["msg"] == "modulus does not apply to strategy: range; remove it"


def test_hostile_identifier_round_trips_and_executes_nothing(scratch, db):
    db.execute("CREATE TABLE zdm_victim (id int)")
    db.execute("CREATE SCHEMA app")
    db.execute(sql.SQL("CREATE TABLE {} (k int) PARTITION BY HASH (k)").format(sql.Identifier("app", HOSTILE)))
    result = pg_partition(scratch, table=HOSTILE, schema="app", strategy="hash", modulus=2)
    assert result["failed"] is False, result["msg"]
    assert result["created"] == [f"{HOSTILE}_p0", f"{HOSTILE}_p1"]
    assert result["queries"][0] == (
        'CREATE TABLE "app"."a""; DROP TABLE zdm_victim; --_p0" PARTITION OF "app"."a""; DROP TABLE zdm_victim; --" '
        "FOR VALUES WITH (MODULUS 2, REMAINDER 0)"
    )
    assert db.execute("SELECT to_regclass('zdm_victim')").fetchone()[0] is not None
    assert len(partitions(db, sql.Identifier("app", HOSTILE).as_string(db))) == 2
    # the same table as one schema.table string, with the name double-quoted
    quoted = '"app"."' + HOSTILE.replace('"', '""') + '"'
    again = pg_partition(scratch, table=quoted, strategy="hash", modulus=2)
    assert (again["failed"], again["changed"], again["table"]) == (False, False, f"app.{HOSTILE}")


def test_wrong_credentials_give_the_connection_helper_message(scratch):
    result = pg_partition(dict(scratch, login_password="Wrong-Secret-9"), table="vms", strategy="hash", modulus=4)
    assert result["failed"] is True
    assert f"authentication failed for user 'migrator' on {where(SCRATCH_PG)}" in result["msg"]
    assert "Wrong-Secret-9" not in result["msg"]
