"""The connection helper's messages against real servers: what a DBA reads must say what
went wrong, where, and what to fix, and never show the password."""

from __future__ import annotations

import re

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError
from tests.lab import BLUE, BLUE_ADDRESS, PG_PORT, where

BLUE_SOCKET_DIR = "/var/run/postgresql/blue"  # each lab instance has a socket directory of its own


def params(**overrides) -> dict:
    base = dict(BLUE, ssl_mode="disable", connect_timeout=5, application_name="zdm-test")
    base.update(overrides)
    return base


def connect_error(**overrides) -> str:
    with pytest.raises(PgError) as caught:
        Client(params(**overrides))
    return str(caught.value)


def test_refused_names_host_and_port(lab):
    message = connect_error(login_port=5498)
    assert "connection refused" in message
    assert f"{BLUE_ADDRESS}:5498" in message


def test_wrong_password_names_the_user_not_the_password(lab):
    message = connect_error(login_password="not-the-Password-42")
    assert "authentication failed for user 'migrator'" in message
    assert where(BLUE) in message
    assert "not-the-Password-42" not in message


def test_unknown_database_is_named(lab):
    message = connect_error(login_db="no_such_db")
    assert "database 'no_such_db' does not exist" in message
    assert "login_db" in message


def test_unknown_role_is_named(lab):
    # scram-sha-256 does not tell a missing role from a wrong password, by design
    assert "authentication failed for user 'nobody_here'" in connect_error(login_user="nobody_here")


def test_peer_authentication_names_the_user(lab):
    message = connect_error(login_unix_socket=BLUE_SOCKET_DIR, login_user="novacron", login_password=None)
    assert f"authentication failed for user 'novacron' on socket {BLUE_SOCKET_DIR}/.s.PGSQL.{PG_PORT}" in message


def test_missing_socket_names_the_path(lab):
    message = connect_error(login_unix_socket=BLUE_SOCKET_DIR, login_port=5498)
    assert f"{BLUE_SOCKET_DIR}/.s.PGSQL.5498" in message


def test_version_and_settings(lab):
    with Client(params()) as client:
        assert client.server_version[0] >= 15
        assert client.setting("wal_level") == "logical"
        client.require_version(15, "anything")
        with pytest.raises(PgError, match=rf"needs PostgreSQL 99 or later; {re.escape(where(BLUE))} runs 15\."):
            client.require_version(99, "a future feature")


def test_require_logical_wal_explains_the_fix(replica_wal_server):
    with Client(params(**replica_wal_server)) as client, pytest.raises(PgError) as caught:
        client.require_logical_wal()
    message = str(caught.value)
    assert f"wal_level is 'replica' on {where(replica_wal_server)}" in message
    assert "wal_level=logical" in message and "restart" in message


def test_check_mode_records_but_does_not_run(blue):
    with Client(params(), check_mode=True) as client:
        client.execute("CREATE TABLE zdm_check_mode_probe (id int)")
        assert client.queries == ["CREATE TABLE zdm_check_mode_probe (id int)"]
    assert blue.execute("SELECT to_regclass('zdm_check_mode_probe')").fetchone()[0] is None


def test_failed_statement_names_server_and_statement(lab):
    with Client(params()) as client, pytest.raises(PgError) as caught:
        client.execute("DROP TABLE zdm_table_that_is_not_there")
    assert 'table "zdm_table_that_is_not_there" does not exist' in str(caught.value)
    assert where(BLUE) in str(caught.value)


def test_audit_text_replaces_a_secret_statement(lab):
    with Client(params(), check_mode=True) as client:
        client.execute("ALTER ROLE novacron PASSWORD 'secret'", audit="ALTER ROLE novacron PASSWORD ********")
        assert client.queries == ["ALTER ROLE novacron PASSWORD ********"]
