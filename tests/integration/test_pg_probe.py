"""zerodowntime.migration.pg_probe against the lab: a scratch database of blue (and one of green,
which does not replicate it) for the write probes; reads through blue, green and PgBouncer."""

from __future__ import annotations

import psycopg
import pytest

from tests.lab import (
    BLUE,
    BLUE_ADDRESS,
    GREEN,
    GREEN_ADDRESS,
    LAB_PASSWORD,
    PG_PORT,
    POOL_1,
    POOLER_PORT,
    SERVER_ADDRESS,
    connect,
    run_module,
    scratch_database,
    through_pooler,
    where,
)

MODULE = "zerodowntime.migration.pg_probe"
DB = "zdm_probe_test"
HOSTILE = 'a"; DROP TABLE x; --'
TABLE = """CREATE TABLE markers (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL,
    action text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
)"""


@pytest.fixture(scope="module")
def scratch(lab):
    """markers (the probe's table) and x (what a hostile name would drop) in a database of blue,
    and the same markers table, empty, in a database of green."""
    with scratch_database(BLUE, DB) as blue_db, scratch_database(GREEN, DB) as green_db:
        with connect(blue_db) as conn:
            conn.execute(TABLE)
            conn.execute("CREATE TABLE x (id int)")
        with connect(green_db) as conn:
            conn.execute(TABLE)
        yield blue_db, green_db


def rows(endpoint: dict) -> list[tuple]:
    with connect(endpoint) as conn:
        return conn.execute("SELECT id, tenant_id, action, details FROM markers ORDER BY id").fetchall()


def marker(value: str, **extra) -> dict:
    return {"table": "markers", "values": dict({"tenant_id": 0, "action": "probe", "details": {"marker": value}}, **extra)}


def test_reports_the_server_reached_and_changes_nothing(lab):
    run, result = run_module(MODULE, dict(BLUE, expect={"address": BLUE_ADDRESS, "port": PG_PORT, "in_recovery": False}))
    assert result["failed"] is False, result.get("msg")
    assert result["changed"] is False
    assert result["endpoint"] == where(BLUE)
    server = result["server"]
    assert (server["port"], server["address"], server["database"], server["user"]) == (PG_PORT, BLUE_ADDRESS, "novacron", "migrator")
    assert server["in_recovery"] is False and server["version"].startswith("15.")
    assert result["row"] is None and result["visible_on"] == [] and result["queries"] == []
    assert LAB_PASSWORD not in run.stdout


def test_through_pgbouncer_it_reports_the_server_behind_the_pool(lab):
    with psycopg.connect(
        host=POOL_1, port=POOLER_PORT, user="migrator", password=LAB_PASSWORD, dbname="novacron", autocommit=True, prepare_threshold=None
    ) as conn:
        serving = conn.execute(SERVER_ADDRESS).fetchone()[0]  # blue's address, or green's after a cutover
    result = run_module(MODULE, through_pooler(expect={"address": serving}))[1]
    assert result["failed"] is False, result.get("msg")
    assert result["endpoint"] == f"{POOL_1}:{POOLER_PORT}" and result["server"]["address"] == serving and result["changed"] is False


def test_an_unexpected_server_fails_naming_what_it_found_and_writes_nothing(scratch):
    blue_db, _green_db = scratch
    before = rows(blue_db)
    # blue and green share port 5432: the address tells them apart
    result = run_module(MODULE, dict(blue_db, expect={"address": GREEN_ADDRESS}, write=marker("wrong-server")))[1]
    assert result["failed"] is True
    expected = f"through {where(BLUE)} the session reached a server with address '{BLUE_ADDRESS}', expected '{GREEN_ADDRESS}'"
    assert expected in result["msg"], result["msg"]
    assert "nothing was written" in result["msg"]
    assert result["changed"] is False and result["server"]["address"] == BLUE_ADDRESS
    assert rows(blue_db) == before


def system_identifier(endpoint: dict) -> str:
    with connect(endpoint) as conn:
        return str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])


def test_the_same_port_on_another_server_fails_by_its_system_identifier(scratch):
    """Blue and green both on 5432 (each on its own address, as on hosts of their own): the port
    cannot tell them apart, the system identifier does. Expecting green's identifier through blue
    fails and writes nothing."""
    blue_db, green_db = scratch
    blue_id, green_id = system_identifier(blue_db), system_identifier(green_db)
    assert blue_id != green_id
    before = rows(blue_db)
    result = run_module(MODULE, dict(blue_db, expect={"port": PG_PORT, "system_identifier": green_id}, write=marker("same-port")))[1]
    assert result["failed"] is True
    assert f"system_identifier '{blue_id}', expected '{green_id}'" in result["msg"], result["msg"]
    assert result["server"]["system_identifier"] == blue_id and rows(blue_db) == before
    result = run_module(MODULE, dict(green_db, expect={"port": PG_PORT, "system_identifier": green_id}))[1]
    assert result["failed"] is False and result["server"]["system_identifier"] == green_id, result.get("msg")


def test_write_check_mode_then_write_then_a_second_run_changes_nothing(scratch):
    blue_db, _green_db = scratch
    args = dict(blue_db, expect={"address": BLUE_ADDRESS, "read_only": False}, write=marker("round-1"), visible_on=[blue_db])
    before = rows(blue_db)

    checked = run_module(MODULE, args, check=True)[1]
    assert checked["failed"] is False, checked.get("msg")
    assert checked["changed"] is True and checked["row"] is None and checked["visible_on"] == []
    assert checked["queries"] == ['INSERT INTO "public"."markers" ("tenant_id", "action", "details") VALUES (%s, %s, %s)']
    assert rows(blue_db) == before  # check mode wrote nothing

    written = run_module(MODULE, args)[1]
    assert written["failed"] is False, written.get("msg")
    assert written["changed"] is True and written["server"]["address"] == BLUE_ADDRESS
    new_id = written["row"]["id"]
    assert rows(blue_db) == [*before, (new_id, 0, "probe", {"marker": "round-1"})]
    assert [(entry["server"], entry["found"]) for entry in written["visible_on"]] == [(where(BLUE), True)]

    again = run_module(MODULE, args)[1]
    assert again["failed"] is False, again.get("msg")
    assert again["changed"] is False and again["row"] == {"id": new_id} and again["queries"] == []
    assert len(rows(blue_db)) == len(before) + 1


def test_a_row_missing_on_a_server_of_visible_on_fails_after_the_timeout(scratch):
    """green's scratch database does not replicate blue's: the row is written on blue, never seen there."""
    blue_db, green_db = scratch
    result = run_module(MODULE, dict(blue_db, write=marker("not-replicated"), visible_on=[blue_db, green_db], visible_timeout=0.5))[1]
    assert result["failed"] is True
    assert f"is not on {where(GREEN)} after 0.5 s (visible_timeout)" in result["msg"]
    assert result["changed"] is True  # the row was written on blue
    assert [(entry["server"], entry["found"]) for entry in result["visible_on"]] == [(where(BLUE), True), (where(GREEN), False)]
    assert result["visible_on"][1]["waited_s"] >= 0.4
    assert any(row[3] == {"marker": "not-replicated"} for row in rows(blue_db))
    assert rows(green_db) == []


@pytest.mark.parametrize(
    ("write", "message"),
    [
        ({"table": HOSTILE, "values": {"tenant_id": 0}}, f'table public.a"; DROP TABLE x; -- does not exist on {where(BLUE)}'),
        ({"table": "no_such_table", "values": {"tenant_id": 0}}, f"table public.no_such_table does not exist on {where(BLUE)}"),
        ({"table": "markers", "values": {HOSTILE: 1}}, f"table public.markers on {where(BLUE)} (the endpoint) has no column"),
        ({"table": "markers", "values": {"tenant_id": 0, "action": "probe"}, "key": HOSTILE}, "has no column"),
        ({"table": "markers", "values": {}}, "write.values must map at least one column"),
    ],
    ids=["hostile-table", "missing-table", "hostile-column", "hostile-key", "no-values"],
)
def test_bad_names_fail_clearly_and_change_nothing(scratch, write, message):
    blue_db, _green_db = scratch
    before = rows(blue_db)
    result = run_module(MODULE, dict(blue_db, write=write))[1]
    assert result["failed"] is True
    assert message in result["msg"]
    assert result["changed"] is False and result["queries"] == []
    assert rows(blue_db) == before
    with connect(blue_db) as conn:
        assert conn.execute("SELECT to_regclass('public.x') IS NOT NULL").fetchone()[0]  # nothing was dropped


def test_a_table_missing_on_a_server_of_visible_on_fails_before_writing(scratch):
    blue_db, _green_db = scratch
    before = rows(blue_db)
    result = run_module(MODULE, dict(blue_db, write=marker("never"), visible_on=[dict(blue_db, login_db="postgres")]))[1]
    assert result["failed"] is True
    assert f"table public.markers does not exist on {where(BLUE)} (visible_on[0])" in result["msg"]
    assert rows(blue_db) == before


def test_wrong_passwords_name_the_connection_and_write_nothing(scratch):
    blue_db, _green_db = scratch
    before = rows(blue_db)
    run, result = run_module(MODULE, dict(blue_db, login_password="Wrong-Secret-9", write=marker("bad-password")))
    assert result["failed"] is True
    assert f"authentication failed for user 'migrator' on {where(BLUE)}" in result["msg"]
    assert "Wrong-Secret-9" not in run.stdout

    run, result = run_module(MODULE, dict(blue_db, write=marker("bad-password"), visible_on=[dict(GREEN, login_password="Wrong-Secret-9")]))
    assert result["failed"] is True
    assert "cannot connect to the visible_on[0]" in result["msg"]
    assert f"authentication failed for user 'migrator' on {where(GREEN)}" in result["msg"]
    assert "Wrong-Secret-9" not in run.stdout and LAB_PASSWORD not in run.stdout
    assert rows(blue_db) == before


def test_visible_on_needs_write(lab):
    result = run_module(MODULE, dict(BLUE, visible_on=[GREEN]))[1]
    assert result["failed"] is True
    assert "visible_on" in result["msg"] and "write" in result["msg"]
