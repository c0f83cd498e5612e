"""zerodowntime.migration.pg_matview_refresh against a scratch database of blue: a view with a
unique index (refreshed concurrently), one without, one never populated, and a table `x` a hostile
name would drop."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.lab import BLUE, LAB_PASSWORD, connect, run_module, scratch_database

MODULE = "zerodowntime.migration.pg_matview_refresh"
DB = "zdm_matview_test"
HOSTILE = 'a"; DROP TABLE x; --'


@pytest.fixture()
def scratch(lab):
    with scratch_database(BLUE, DB) as endpoint:
        with connect(endpoint) as conn:
            conn.execute("CREATE TABLE usage (tenant int, vms int)")
            conn.execute("INSERT INTO usage SELECT t, t * 10 FROM generate_series(1, 5) AS t")
            conn.execute("CREATE MATERIALIZED VIEW per_tenant AS SELECT tenant, sum(vms) AS vms FROM usage GROUP BY tenant")
            conn.execute("CREATE UNIQUE INDEX ON per_tenant (tenant)")
            conn.execute("CREATE MATERIALIZED VIEW no_key AS SELECT tenant, vms FROM usage")
            conn.execute("CREATE MATERIALIZED VIEW empty AS SELECT tenant FROM usage WITH NO DATA")
            conn.execute("CREATE TABLE x (id int)")
        yield endpoint


def stale(endpoint: dict, view: str) -> int:
    """Rows of `view` that differ from its query (the test's own count, not the module's)."""
    with connect(endpoint) as conn:
        query = conn.execute("SELECT pg_get_viewdef(%s::regclass)", (view,)).fetchone()[0].rstrip().rstrip(";")
        difference = sql.SQL(
            "SELECT count(*) FROM ((TABLE {view} EXCEPT ALL ({query})) UNION ALL (({query}) EXCEPT ALL TABLE {view})) AS d"
        ).format(view=sql.Identifier(view), query=sql.SQL(query))
        return conn.execute(difference).fetchone()[0]


def write(endpoint: dict) -> None:
    with connect(endpoint) as conn:
        conn.execute("UPDATE usage SET vms = vms + 1 WHERE tenant = 2")


def args(endpoint: dict, **options) -> dict:
    return dict(endpoint, **options)


def test_a_stale_view_is_refreshed_concurrently_and_a_second_run_changes_nothing(scratch):
    write(scratch)
    assert stale(scratch, "per_tenant") == 2
    run, result = run_module(MODULE, args(scratch, views=["per_tenant"]), diff=True)
    assert result["failed"] is False, result.get("msg")
    assert result["changed"] is True
    [view] = result["views"]
    assert (view["name"], view["stale_rows"], view["refreshed"], view["concurrently"]) == ("public.per_tenant", 2, True, True)
    assert result["queries"] == ['REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."per_tenant"']
    assert result["diff"] == {"before": {"public.per_tenant": {"stale_rows": 2}}, "after": {"public.per_tenant": {"stale_rows": 0}}}
    assert stale(scratch, "per_tenant") == 0
    assert LAB_PASSWORD not in run.stdout

    again = run_module(MODULE, args(scratch, views=["public.per_tenant"]))[1]
    assert again["changed"] is False and again["queries"] == [] and again["views"][0]["stale_rows"] == 0


def test_check_mode_reports_the_refresh_and_runs_none(scratch):
    write(scratch)
    result = run_module(MODULE, args(scratch, views=["per_tenant"]), check=True)[1]
    assert result["failed"] is False, result.get("msg")
    assert result["changed"] is True and result["views"][0]["refreshed"] is True and result["views"][0]["ms"] is None
    assert stale(scratch, "per_tenant") == 2


def test_force_refreshes_a_fresh_view(scratch):
    result = run_module(MODULE, args(scratch, views=["per_tenant"], force=True))[1]
    assert result["changed"] is True and result["views"][0]["stale_rows"] is None and result["views"][0]["refreshed"] is True


def test_a_view_never_populated_is_refreshed_plainly(scratch):
    result = run_module(MODULE, args(scratch, views=["empty"]))[1]
    assert result["failed"] is False, result.get("msg")
    assert result["views"][0]["concurrently"] is False and result["queries"] == ['REFRESH MATERIALIZED VIEW "public"."empty"']
    with connect(scratch) as conn:
        assert conn.execute("SELECT count(*) FROM empty").fetchone()[0] == 5


def test_a_view_without_a_unique_index_is_refused_before_anything_is_refreshed(scratch):
    write(scratch)
    result = run_module(MODULE, args(scratch, views=["per_tenant", "no_key"]))[1]
    assert result["failed"] is True
    assert "public.no_key" in result["msg"] and "unique index" in result["msg"] and "concurrently: false" in result["msg"]
    assert result["queries"] == [] and stale(scratch, "per_tenant") == 2 and stale(scratch, "no_key") == 2

    plain = run_module(MODULE, args(scratch, views=["no_key"], concurrently=False))[1]
    assert plain["failed"] is False and plain["queries"] == ['REFRESH MATERIALIZED VIEW "public"."no_key"']
    assert stale(scratch, "no_key") == 0


@pytest.mark.parametrize("name", ["missing_view", "usage", HOSTILE, "nope.per_tenant"])
def test_what_is_not_a_materialized_view_is_refused_by_name_and_nothing_runs(scratch, name):
    write(scratch)
    result = run_module(MODULE, args(scratch, views=["per_tenant", name]))[1]
    assert result["failed"] is True
    assert "not a materialized view" in result["msg"] and "zdm_matview_test" in result["msg"]
    assert result["queries"] == [] and stale(scratch, "per_tenant") == 2
    with connect(scratch) as conn:
        assert conn.execute("SELECT to_regclass('x')").fetchone()[0] == "x"


def test_wrong_password_names_the_user_never_the_password(scratch):
    run, result = run_module(MODULE, args(scratch, views=["per_tenant"], login_password="not-the-password"))
    assert result["failed"] is True and "migrator" in result["msg"]
    assert "not-the-password" not in run.stdout
