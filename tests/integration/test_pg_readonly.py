"""zerodowntime.migration.pg_readonly: the instance-wide freeze on a throwaway PostgreSQL of this
file's own (the lab's blue and green are shared: never frozen instance-wide here), the
database-wide freeze on scratch databases of blue."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import ident
from tests.lab import BLUE, connect, run_module, throwaway_postgres, where

MODULE = "zerodowntime.migration.pg_readonly"
READ_ONLY = "in a read-only transaction"
APP_PASSWORD = "app-lab-password"
DB = "zdm_ro_test"
OTHER_DB = "zdm_ro_other"
HOSTILE_DB = 'zdm_ro "; DROP DATABASE postgres; --'


@pytest.fixture(scope="module")
def server(lab):
    """A throwaway PostgreSQL 15 (wal_level=logical) on a free port, with a non-superuser `app`
    and a table `t`; stopped and removed at the end."""
    with throwaway_postgres("zdm-readonly-", wal_level="logical") as endpoint:
        with connect(endpoint) as conn:
            conn.execute(sql.SQL("CREATE ROLE app LOGIN PASSWORD {}").format(sql.Literal(APP_PASSWORD)))
            conn.execute("CREATE TABLE t (id serial PRIMARY KEY, note text)")
            conn.execute("GRANT ALL ON t, t_id_seq TO app")
        yield endpoint


@pytest.fixture()
def instance(server):
    """The throwaway server, unfrozen before and after each test."""
    unfreeze(server)
    yield server
    unfreeze(server)


def unfreeze(endpoint: dict) -> None:
    with connect(endpoint) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("ALTER ROLE app RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.2)


def auto_conf_value(endpoint: dict) -> str | None:
    with connect(endpoint) as conn:
        row = conn.execute(
            "SELECT setting FROM pg_file_settings WHERE name = 'default_transaction_read_only' AND sourcefile LIKE '%postgresql.auto.conf'"
        ).fetchone()
    return row[0] if row else None


def can_write(conn) -> bool:
    """Whether an autocommit session's next INSERT works (False: refused as read-only)."""
    try:
        conn.execute("INSERT INTO t (note) VALUES ('probe')")
        return True
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        assert READ_ONLY in str(exc)
        return False


def alive(conn) -> bool:
    try:
        conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        conn.close()  # terminated: nothing to commit or roll back when the test leaves it
        return False


def pids(result: dict) -> dict:
    return {session["pid"]: session for session in result["sessions_affected"]}


# --- scope instance (the throwaway server) ----------------------------------------------------
def test_instance_freeze_reaches_existing_idle_and_new_sessions_and_unfreeze_restores(instance):
    with connect(instance) as idle:
        assert can_write(idle)
        frozen = run_module(MODULE, dict(instance, readonly=True))[1]
        assert frozen["failed"] is False, frozen.get("msg")
        assert (frozen["changed"], frozen["already_frozen"], frozen["scope"]) == (True, False, "instance")
        assert frozen["queries"] == ["ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_catalog.pg_reload_conf()"]
        assert "existing sessions from their next transaction" in frozen["applies_to"]
        assert auto_conf_value(instance) == "on"
        idle_pid = idle.info.backend_pid
        assert pids(frozen)[idle_pid]["state"] == "idle"
        assert pids(frozen)[idle_pid]["can_write"] is False
        assert frozen["terminated"] == []

        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match=r"cannot execute INSERT in a read-only transaction"):
            idle.execute("INSERT INTO t (note) VALUES ('after the freeze')")
        with connect(instance) as new:
            assert not can_write(new)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="cannot execute nextval"):
                new.execute("SELECT nextval('t_id_seq')")

        thawed = run_module(MODULE, dict(instance, readonly=False))[1]
        assert (thawed["changed"], thawed["already_frozen"]) == (True, True)
        assert thawed["queries"] == ["ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_catalog.pg_reload_conf()"]
        assert auto_conf_value(instance) is None
        time.sleep(0.1)
        assert can_write(idle)
        with connect(instance) as new:
            assert can_write(new)


def test_open_write_transaction_stays_writable_until_terminate_writers(instance):
    with connect(instance) as idle, psycopg.connect(**as_kwargs(instance)) as writer, psycopg.connect(**as_kwargs(instance)) as reader:
        writer.execute("INSERT INTO t (note) VALUES ('in an open transaction')")  # BEGIN implicitly; xid assigned
        reader.execute("SELECT 1")  # idle in transaction, nothing written
        frozen = run_module(MODULE, dict(instance, readonly=True))[1]
        assert frozen["changed"] is True
        writer_session = pids(frozen)[writer.info.backend_pid]
        assert writer_session["state"] == "idle in transaction"
        assert writer_session["backend_xid"] is not None
        assert writer_session["can_write"] is True
        assert pids(frozen)[reader.info.backend_pid]["can_write"] is True
        assert pids(frozen)[idle.info.backend_pid]["can_write"] is False
        writer.execute("INSERT INTO t (note) VALUES ('still writing after the freeze')")  # its transaction began read-write

        checked = run_module(MODULE, dict(instance, readonly=True, terminate_writers=True), check=True)[1]
        assert (checked["changed"], checked["already_frozen"]) == (False, True)
        assert checked["terminated"] == sorted([writer.info.backend_pid, reader.info.backend_pid])
        assert alive(writer) and alive(reader)

        writers = sorted([writer.info.backend_pid, reader.info.backend_pid])
        killed = run_module(MODULE, dict(instance, readonly=True, terminate_writers=True))[1]
        assert killed["failed"] is False, killed.get("msg")
        assert killed["changed"] is False
        assert killed["terminated"] == writers
        listed = ", ".join(map(str, writers))
        assert killed["queries"] == [f"SELECT pg_catalog.pg_terminate_backend(pid) FROM unnest(ARRAY[{listed}]::integer[]) AS pid"]  # noqa: S608
        assert not alive(writer)
        assert not alive(reader)
        assert alive(idle)  # an idle session is already read-only: left alone
        assert not can_write(idle)
    with connect(instance) as conn:
        assert conn.execute("SELECT count(*) FROM t WHERE note LIKE '%after the freeze'").fetchone()[0] == 0


def commit_once_frozen(endpoint: dict, conn, delay: float) -> threading.Thread:
    """Commit `conn` `delay` seconds after new sessions of `endpoint` see the freeze."""

    def run():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with connect(endpoint) as probe:
                if probe.execute("SHOW default_transaction_read_only").fetchone()[0] == "on":
                    break
            time.sleep(0.05)
        time.sleep(delay)
        conn.commit()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_for_sessions_lets_an_open_transaction_commit_before_terminating(instance):
    with psycopg.connect(**as_kwargs(instance)) as writer:
        writer.execute("INSERT INTO t (note) VALUES ('committed during the wait')")
        committer = commit_once_frozen(instance, writer, delay=1.0)
        result = run_module(MODULE, dict(instance, readonly=True, terminate_writers=True, wait_for_sessions=20))[1]
        committer.join(timeout=30)
        assert result["failed"] is False, result.get("msg")
        assert result["terminated"] == []
        assert 0.5 < result["waited"] < 20
        assert pids(result)[writer.info.backend_pid]["can_write"] is False
        assert alive(writer)
    with connect(instance) as conn:
        assert conn.execute("SELECT count(*) FROM t WHERE note = 'committed during the wait'").fetchone()[0] == 1


def test_wait_for_sessions_ends_in_terminating_a_transaction_that_stays_open(instance):
    with psycopg.connect(**as_kwargs(instance)) as writer:
        writer.execute("INSERT INTO t (note) VALUES ('never committed')")
        result = run_module(MODULE, dict(instance, readonly=True, terminate_writers=True, wait_for_sessions=1.5))[1]
        assert result["terminated"] == [writer.info.backend_pid]
        assert 1.5 <= result["waited"] < 5
        assert not alive(writer)


def test_walsenders_and_own_session_are_neither_listed_nor_terminated(instance):
    walsender = psycopg.connect(**as_kwargs(instance), replication="database", autocommit=True)
    try:
        pid = walsender.info.backend_pid
        with connect(instance) as conn:
            assert conn.execute("SELECT backend_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == ("walsender",)
        result = run_module(MODULE, dict(instance, readonly=True, terminate_writers=True, application_name="zdm-ro-under-test"))[1]
        assert result["changed"] is True
        assert pid not in pids(result)
        assert all(session["application_name"] != "zdm-ro-under-test" for session in result["sessions_affected"])
        assert result["terminated"] == []
        with connect(instance) as conn:
            assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 1
    finally:
        walsender.close()


def test_check_mode_diff_and_idempotence(instance):
    checked = run_module(MODULE, dict(instance, readonly=True), check=True, diff=True)[1]
    assert (checked["changed"], checked["already_frozen"]) == (True, False)
    assert checked["diff"] == {"before": {"readonly": False, "scope": "instance"}, "after": {"readonly": True, "scope": "instance"}}
    assert checked["queries"] == ["ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_catalog.pg_reload_conf()"]
    assert auto_conf_value(instance) is None
    with connect(instance) as conn:
        assert can_write(conn)

    assert run_module(MODULE, dict(instance, readonly=True))[1]["changed"] is True
    again = run_module(MODULE, dict(instance, readonly=True), diff=True)[1]
    assert (again["changed"], again["already_frozen"], again["queries"]) == (False, True, [])
    assert again["diff"]["before"] == again["diff"]["after"]

    checked_thaw = run_module(MODULE, dict(instance, readonly=False), check=True, diff=True)[1]
    assert checked_thaw["changed"] is True
    assert checked_thaw["diff"]["after"] == {"readonly": False, "scope": "instance"}
    assert auto_conf_value(instance) == "on"

    assert run_module(MODULE, dict(instance, readonly=False))[1]["changed"] is True
    thawed_again = run_module(MODULE, dict(instance, readonly=False))[1]
    assert (thawed_again["changed"], thawed_again["already_frozen"], thawed_again["queries"]) == (False, False, [])


def test_a_value_written_but_not_reloaded_is_reloaded(instance):
    with connect(instance) as conn:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")  # no pg_reload_conf()
    result = run_module(MODULE, dict(instance, readonly=True))[1]
    assert result["changed"] is True
    assert "SELECT pg_catalog.pg_reload_conf()" in result["queries"]
    time.sleep(0.1)
    with connect(instance) as conn:
        assert not can_write(conn)
    assert run_module(MODULE, dict(instance, readonly=True))[1]["changed"] is False


def test_role_setting_that_defeats_the_freeze_is_reported(instance):
    with connect(instance) as conn:
        conn.execute("ALTER ROLE app SET default_transaction_read_only = off")
    result = run_module(MODULE, dict(instance, readonly=True))[1]
    assert result["changed"] is True
    assert result["overrides"] == [{"database": None, "role": "app", "value": "off"}]
    assert any("win over the freeze" in warning for warning in result.get("warnings", [])), result.get("warnings")
    with connect(instance, login_user="app", login_password=APP_PASSWORD) as app:
        assert can_write(app)  # the role's own setting wins: why the module warns


def test_non_superuser_is_refused_with_the_fix_and_nothing_changes(instance):
    result = run_module(MODULE, dict(instance, login_user="app", login_password=APP_PASSWORD, readonly=True))[1]
    assert result["failed"] is True
    assert f"role 'app' on {where(instance)}" in result["msg"]
    assert "is not a superuser" in result["msg"]
    assert "GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only TO app" in result["msg"]
    assert result["queries"] == []
    assert auto_conf_value(instance) is None


def test_wrong_password_names_the_user_and_never_shows_the_password(instance):
    run, result = run_module(MODULE, dict(instance, login_password="Wrong-Secret-7", readonly=True))
    assert result["failed"] is True
    assert "authentication failed for user 'postgres'" in result["msg"]
    assert "Wrong-Secret-7" not in run.stdout
    assert "Wrong-Secret-7" not in json.dumps(result)
    assert auto_conf_value(instance) is None


def test_wait_for_sessions_is_bounded(instance):
    result = run_module(MODULE, dict(instance, readonly=True, terminate_writers=True, wait_for_sessions=99999))[1]
    assert result["failed"] is True
    assert "wait_for_sessions must be between 0 and 3600" in result["msg"]
    assert auto_conf_value(instance) is None


def as_kwargs(endpoint: dict) -> dict:
    return {
        "host": endpoint["login_host"],
        "port": endpoint["login_port"],
        "user": endpoint["login_user"],
        "password": endpoint["login_password"],
        "dbname": endpoint["login_db"],
    }


# --- scope database (scratch databases on blue) -----------------------------------------------
@pytest.fixture()
def databases(lab):
    names = (DB, OTHER_DB, HOSTILE_DB)
    with connect(BLUE, login_db="postgres") as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident(name)))
    for name in names:
        with connect(BLUE, login_db=name) as conn:
            conn.execute("CREATE TABLE t (id serial PRIMARY KEY, note text)")
    yield
    with connect(BLUE, login_db="postgres") as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(name)))


def without_login_db(endpoint: dict) -> dict:
    """The endpoint for `database: ...` (login_db's alias) to choose the database."""
    return {key: value for key, value in endpoint.items() if key != "login_db"}


def database_setting(name: str) -> list | None:
    with connect(BLUE, login_db="postgres") as conn:
        row = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = %s AND s.setrole = 0",
            (name,),
        ).fetchone()
    return row[0] if row else None


def test_database_scope_freezes_new_sessions_of_that_database_only(databases):
    with connect(BLUE, login_db=DB) as existing:
        checked = run_module(MODULE, dict(BLUE, login_db=DB, scope="database", readonly=True), check=True, diff=True)[1]
        assert checked["changed"] is True
        assert checked["diff"]["after"] == {"readonly": True, "scope": "database", "database": DB}
        assert database_setting(DB) is None

        frozen = run_module(MODULE, dict(without_login_db(BLUE), database=DB, scope="database", readonly=True))[1]
        assert frozen["failed"] is False, frozen.get("msg")
        assert (frozen["changed"], frozen["database"]) == (True, DB)
        assert frozen["queries"] == [f'ALTER DATABASE "{DB}" SET default_transaction_read_only = on']
        assert frozen["applies_to"].startswith("new sessions only")
        assert database_setting(DB) == ["default_transaction_read_only=on"]
        assert pids(frozen)[existing.info.backend_pid]["can_write"] is True
        assert {session["datname"] for session in frozen["sessions_affected"]} == {DB}

        assert can_write(existing)  # existing sessions keep writing
        with connect(BLUE, login_db=DB) as new:
            assert not can_write(new)
        with connect(BLUE, login_db=OTHER_DB) as other:
            assert can_write(other)

        again = run_module(MODULE, dict(BLUE, login_db=DB, scope="database", readonly=True))[1]
        assert (again["changed"], again["already_frozen"], again["queries"]) == (False, True, [])

        killed = run_module(MODULE, dict(BLUE, login_db=DB, scope="database", readonly=True, terminate_writers=True))[1]
        assert killed["terminated"] == [existing.info.backend_pid]
        assert not alive(existing)

    thawed = run_module(MODULE, dict(BLUE, login_db=DB, scope="database", readonly=False))[1]
    assert thawed["failed"] is False, thawed.get("msg")  # its own session was read-only: the module lifts that for itself
    assert (thawed["changed"], thawed["queries"]) == (True, [f'ALTER DATABASE "{DB}" RESET default_transaction_read_only'])
    assert database_setting(DB) is None
    with connect(BLUE, login_db=DB) as new:
        assert can_write(new)
    assert run_module(MODULE, dict(BLUE, login_db=DB, scope="database", readonly=False))[1]["changed"] is False


def test_hostile_database_name_round_trips(databases):
    frozen = run_module(MODULE, dict(BLUE, login_db=HOSTILE_DB, scope="database", readonly=True))[1]
    assert frozen["failed"] is False, frozen.get("msg")
    assert frozen["database"] == HOSTILE_DB
    assert frozen["queries"] == ['ALTER DATABASE "zdm_ro ""; DROP DATABASE postgres; --" SET default_transaction_read_only = on']
    assert database_setting(HOSTILE_DB) == ["default_transaction_read_only=on"]
    with connect(BLUE, login_db=HOSTILE_DB) as new:
        assert not can_write(new)
    thawed = run_module(MODULE, dict(BLUE, login_db=HOSTILE_DB, scope="database", readonly=False))[1]
    assert thawed["changed"] is True
    assert database_setting(HOSTILE_DB) is None
    with connect(BLUE, login_db="postgres") as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'postgres'").fetchone()[0] == 1


def test_unknown_database_is_named(lab):
    result = run_module(MODULE, dict(BLUE, login_db="zdm_ro_no_such_db", scope="database", readonly=True))[1]
    assert result["failed"] is True
    assert f"database 'zdm_ro_no_such_db' does not exist on {where(BLUE)}" in result["msg"]
