"""zerodowntime.migration.pg_server_info run against the lab."""

from __future__ import annotations

from tests.lab import BLUE, GREEN, GREEN_ADDRESS, LAB_PASSWORD, run_module, where

MODULE = "zerodowntime.migration.pg_server_info"


def test_reports_version_wal_and_settings(lab):
    run, result = run_module(MODULE, dict(BLUE, settings=["max_wal_senders", "wal_level"], require_logical=True))
    assert run.status == "successful", run.stdout
    assert result["changed"] is False
    assert result["version"].startswith("15.")
    assert result["wal_level"] == "logical"
    assert result["in_recovery"] is False
    assert "/" in result["wal_lsn"]
    assert result["settings"] == {"max_wal_senders": "10", "wal_level": "logical"}
    assert result["queries"] == []


def test_check_mode_gives_the_same_answer(lab):
    # listen_addresses, not port: blue and green both listen on 5432
    result = run_module(MODULE, dict(GREEN, settings=["listen_addresses"]), check=True)[1]
    assert result["settings"] == {"listen_addresses": GREEN_ADDRESS}
    assert result["changed"] is False


def test_server_without_logical_wal_fails_with_the_fix(replica_wal_server):
    result = run_module(MODULE, dict(replica_wal_server, require_logical=True))[1]
    assert result["failed"] is True
    assert f"wal_level is 'replica' on {where(replica_wal_server)}" in result["msg"]
    assert "wal_level=logical" in result["msg"]


def test_wrong_password_names_the_user_and_hides_the_password(lab):
    run, result = run_module(MODULE, dict(BLUE, login_password="Wrong-Secret-9"))
    assert result["failed"] is True
    assert "authentication failed for user 'migrator'" in result["msg"]
    assert "Wrong-Secret-9" not in run.stdout
    assert "Wrong-Secret-9" not in str(result)


def test_unknown_setting_is_an_error(lab):
    result = run_module(MODULE, dict(BLUE, settings=["wal_level", "no_such_setting"]))[1]
    assert result["failed"] is True
    assert f"unknown setting(s) on {where(BLUE)}: no_such_setting" in result["msg"]


def test_password_is_not_logged_in_invocation(lab):
    run, result = run_module(MODULE, dict(BLUE, login_password=LAB_PASSWORD))
    assert result["failed"] is False
    assert LAB_PASSWORD not in str(result.get("invocation", {}))
    assert LAB_PASSWORD not in run.stdout


def test_counts_the_rows_of_the_tables_asked_for(sample_data, blue):
    tables = ["tenants", "public.vms", "no_such_table", "no_such_schema.vms"]
    run, result = run_module(MODULE, dict(BLUE, count_rows=tables))
    assert run.status == "successful", run.stdout
    assert result["changed"] is False
    expected = {name: blue.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in ("tenants", "public.vms")}  # noqa: S608 (fixed names)
    assert expected["tenants"] > 0
    assert result["table_rows"] == dict(expected, no_such_table=None) | {"no_such_schema.vms": None}
    assert result["queries"] == []
    assert run_module(MODULE, dict(BLUE, count_rows=["tenants"]), check=True)[1]["table_rows"] == {"tenants": expected["tenants"]}


def test_a_malformed_table_name_is_an_error_naming_it(lab):
    result = run_module(MODULE, dict(BLUE, count_rows=["tenants", "a.b.c"]))[1]
    assert result["failed"] is True
    assert "invalid table name 'a.b.c'" in result["msg"]
    assert "schema.table" in result["msg"]
