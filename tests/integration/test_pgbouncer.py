"""roles/pgbouncer and zerodowntime.migration.pgbouncer_pool against a real PgBouncer 1.18 on
the lab host pool-1 (127.0.0.61:6432, reached over SSH; pool `novacron` -> HAProxy's write frontend
127.0.0.31:5000, blue its write server until a cutover), and the lab's second PgBouncer (host
pool-2: instance `pgbouncer2` on 127.0.0.62:6432, beside pool-1's on this machine). Blue and green
share port 5432: where the pool goes is its host and port, and the server a client reached is
told by its address (server_reached).

Every test leaves the pool resumed and pointing at HAProxy (the `pool_restored` fixture), so a
failure does not leak into the next test or into other people's runs.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import stat
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.console import AdminConsole, repoint, resume
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.scram import parse_auth_file, scram_verifier_matches
from tests.lab import (
    GREEN,
    GREEN_ADDRESS,
    HAPROXY_ADDRESS,
    HAPROXY_WRITES,
    LAB_PASSWORD,
    PG_PORT,
    POOL_1,
    POOL_2,
    POOLER_PORT,
    converged_again,
    kill_outright,
    run_module,
    run_playbook,
    server_reached,
    where,
)

MODULE = "zerodowntime.migration.pgbouncer_pool"
CONFIG = Path("/etc/pgbouncer/pgbouncer.ini")
AUTH_FILE = Path("/etc/pgbouncer/userlist.txt")
ADMIN = {"login_host": POOL_1, "login_port": POOLER_PORT, "login_user": "pgbouncer_admin", "login_password": LAB_PASSWORD}
CONSOLE = dict(ADMIN, login_db="pgbouncer", connect_timeout=5)
POOL = "novacron"
# Debian's instance (pool-1); the second PgBouncer of the group is converged by its own play.
FIRST = "pool-1"
ROLE_PLAY = [
    {
        "name": "Provision PgBouncer",
        "hosts": FIRST,
        "become": True,
        "roles": [{"role": "zerodowntime.migration.pgbouncer"}],
    }
]
SECOND = "pool-2"
SECOND_PLAY = [dict(ROLE_PLAY[0], hosts=SECOND)]
SECOND_DIR = Path("/etc/pgbouncer/pgbouncer2")
SECOND_ADMIN = dict(ADMIN, login_host=POOL_2)
# where the pool points: home is HAProxy's write frontend (inventories/lab pgbouncer_databases: a
# cutover switches HAProxy, not the pool); a repoint by hand sends it to green itself
HOME, ON_GREEN = (HAPROXY_ADDRESS, HAPROXY_WRITES), (GREEN_ADDRESS, PG_PORT)
TO_GREEN = {"host": GREEN_ADDRESS, "port": PG_PORT}
TO_HOME = {"host": HAPROXY_ADDRESS, "port": HAPROXY_WRITES}
HOME_TEXT = f"{HAPROXY_ADDRESS}:{HAPROXY_WRITES}"


def app_connect(**overrides) -> psycopg.Connection:
    """A client of the pool, through PgBouncer, as the application role."""
    params = dict(host=POOL_1, port=POOLER_PORT, user="novacron", password=LAB_PASSWORD, dbname=POOL, connect_timeout=10, autocommit=True)
    params.update(overrides)
    return psycopg.connect(**params)


def pool_module(args: dict, host: str = FIRST, **options) -> tuple:
    """pgbouncer_pool run on a PgBouncer's own host (its config_file is there), over SSH."""
    return run_module(MODULE, args, host=host, **options)


def pool_row() -> dict:
    with AdminConsole(CONSOLE) as console:
        return console.require_database(POOL)


def pool_target() -> tuple[str, int]:
    """(host, port) the pool points at in PgBouncer."""
    row = pool_row()
    return row["host"], row["port"]


def restore_pool() -> None:
    """Resumed, and pointing at HAProxy (in the file and in PgBouncer)."""
    with AdminConsole(CONSOLE) as console:
        resume(console, POOL)
        repoint(console, POOL, str(CONFIG), **TO_HOME, dbname=POOL)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pgbouncer(lab):
    """PgBouncer converged by the role (a fresh machine gets it here), pool restored."""
    run = run_playbook(ROLE_PLAY)
    assert run.status == "successful", run.stdout
    restore_pool()
    return run


@pytest.fixture()
def pool_restored(pgbouncer):
    yield
    restore_pool()


# --- the role -------------------------------------------------------------------------------


def test_role_converges_again_without_changes(pgbouncer):
    again = converged_again(pgbouncer, ROLE_PLAY)
    assert again.status == "successful", again.stdout
    assert again.changed() == 0, again.changed_tasks()


def test_a_stale_pid_file_naming_another_live_process_is_removed_and_pgbouncer_started(pgbouncer):
    """Without systemd the pid file outlives a machine's reset and may name a process that is not
    PgBouncer: Debian's init script then says it runs, and PgBouncer refuses to start."""
    pidfile = Path("/var/run/postgresql/pgbouncer.pid")
    pid = int(pidfile.read_text())
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        kill_outright("PgBouncer", [pid])
        pidfile.write_text(f"{stranger.pid}\n")
        run = run_playbook(ROLE_PLAY)
    finally:
        stranger.kill()
        stranger.wait()
        if subprocess.run(["/etc/init.d/pgbouncer", "status"], check=False).returncode != 0:  # pool-1 serves the rest of the suite
            pidfile.unlink(missing_ok=True)
            subprocess.run(["/etc/init.d/pgbouncer", "start"], check=False)
    assert run.status == "successful", run.stdout
    assert {"Remove a stale pid file (it names no process, or another one)", "Start PgBouncer and start it at boot (init script)"} <= set(
        run.changed_tasks()
    )
    assert int(pidfile.read_text()) != stranger.pid
    with app_connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_pgbouncer_answers_with_transaction_pooling_and_scram(pgbouncer):
    with AdminConsole(CONSOLE) as console:
        config = {row["key"]: row["value"] for row in console.show("CONFIG")}
        row = console.require_database(POOL)
    assert config["pool_mode"] == "transaction"
    assert config["listen_addr"] == POOL_1
    assert config["listen_port"] == str(POOLER_PORT)
    assert config["auth_type"] == "scram-sha-256"
    assert config["admin_users"] == "pgbouncer_admin"
    assert config["ignore_startup_parameters"] == "extra_float_digits"
    assert (row["host"], row["port"], row["database"]) == (*HOME, POOL)


def test_auth_file_is_private_and_holds_a_scram_verifier_for_the_admin(pgbouncer):
    info = AUTH_FILE.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert (pwd.getpwuid(info.st_uid).pw_name, info.st_gid) == ("postgres", pwd.getpwnam("postgres").pw_gid)
    entries = parse_auth_file(AUTH_FILE.read_text())
    assert entries["pgbouncer_admin"].startswith("SCRAM-SHA-256$4096:")
    assert scram_verifier_matches(entries["pgbouncer_admin"], LAB_PASSWORD)
    assert LAB_PASSWORD not in entries["pgbouncer_admin"]


def test_a_client_reads_novacron_through_pgbouncer(pgbouncer):
    with app_connect() as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (POOL, "novacron")
        assert server_reached(conn) == "blue"
        assert conn.execute("SELECT count(*) FROM pg_catalog.pg_tables").fetchone()[0] > 0


# --- pause / resume ---------------------------------------------------------------------------


def test_pause_makes_clients_wait_until_resume(pool_restored):
    run, paused = pool_module(dict(ADMIN, database=POOL, state="paused", timeout=5))
    assert run.status == "successful", run.stdout
    assert paused["changed"] is True
    assert paused["paused"] is True
    assert paused["queries"] == [f"PAUSE {POOL}"]
    assert isinstance(paused["pause_ms"], float) and paused["pause_ms"] < 5000
    assert pool_row()["paused"] == 1

    outcome = {}

    def client():
        started = time.monotonic()
        try:
            with app_connect() as conn:
                outcome["row"] = conn.execute("SELECT 42").fetchone()
        except psycopg.Error as exc:  # recorded: the test fails on it below
            outcome["error"] = exc
        outcome["waited"] = time.monotonic() - started

    waiter = threading.Thread(target=client)
    waiter.start()
    time.sleep(1.5)
    assert waiter.is_alive(), outcome  # blocked, not failed
    with AdminConsole(CONSOLE) as console:
        assert console.pools(POOL)["cl_waiting"] >= 1
    resumed = pool_module(dict(ADMIN, database=POOL, state="resumed"))[1]
    waiter.join(timeout=30)
    assert resumed["changed"] is True and resumed["paused"] is False
    assert "error" not in outcome, outcome
    assert outcome["row"] == (42,)
    assert outcome["waited"] >= 1.5


def test_pause_and_resume_are_idempotent(pool_restored):
    first = pool_module(dict(ADMIN, database=POOL, state="paused"))[1]
    second = pool_module(dict(ADMIN, database=POOL, state="paused"))[1]
    assert (first["changed"], second["changed"]) == (True, False)
    assert second["queries"] == [] and second["pause_ms"] is None and second["paused"] is True
    third = pool_module(dict(ADMIN, database=POOL, state="resumed"))[1]
    fourth = pool_module(dict(ADMIN, database=POOL, state="resumed"))[1]
    assert (third["changed"], fourth["changed"]) == (True, False)
    assert third["queries"] == [f"RESUME {POOL}"] and fourth["queries"] == []
    assert pool_row()["paused"] == 0


def test_check_mode_changes_nothing(pool_restored):
    before = digest(CONFIG)
    paused = pool_module(dict(ADMIN, database=POOL, state="paused"), check=True)[1]
    assert paused["changed"] is True and paused["paused"] is True
    assert paused["queries"] == [f"PAUSE {POOL}"]
    assert pool_row()["paused"] == 0
    moved = pool_module(dict(ADMIN, database=POOL, **TO_GREEN), check=True)[1]
    assert moved["changed"] is True and (moved["host"], moved["port"]) == ON_GREEN
    assert moved["queries"] == ["RELOAD"]
    assert pool_target() == HOME
    assert digest(CONFIG) == before


def test_diff_shows_host_port_and_paused(pool_restored):
    result = pool_module(dict(ADMIN, database=POOL, state="paused", **TO_GREEN), check=True, diff=True)[1]
    assert result["diff"]["before"] == dict(TO_HOME, dbname=POOL, paused=False)
    assert result["diff"]["after"] == dict(TO_GREEN, dbname=POOL, paused=True)
    # returned like every module's diff, --diff or not (Ansible shows it only with --diff)
    assert pool_module(dict(ADMIN, database=POOL), check=True)[1]["diff"]["before"] == result["diff"]["before"]


def test_pause_held_by_an_open_transaction_is_aborted_and_the_pool_serves(pool_restored):
    holder = app_connect(autocommit=False, application_name="zdm-holder")
    try:
        holder.execute("SELECT 1")  # BEGIN; SELECT 1; and no COMMIT: keeps a server connection active
        started = time.monotonic()
        result = pool_module(dict(ADMIN, database=POOL, state="paused", timeout=1.5))[1]
        assert result["failed"] is True
        assert f"PAUSE {POOL} did not finish within 1.5 s" in result["msg"]
        assert f"pool '{POOL}' is serving again" in result["msg"]
        assert "1 active server connection(s) held it" in result["msg"]
        assert "application 'zdm-holder'" in result["msg"]
        assert result["holders"][0]["application_name"] == "zdm-holder"
        assert result["pools"]["sv_active"] == 1
        assert result["waited_ms"] >= 1500
        assert result["queries"] == [f"PAUSE {POOL}", f"RESUME {POOL}"]
        assert time.monotonic() - started < 30
        assert pool_row()["paused"] == 0
        served = time.monotonic()
        with app_connect(connect_timeout=5) as conn:
            assert conn.execute("SELECT 7").fetchone() == (7,)
        assert time.monotonic() - served < 2  # served at once, not after the holder
        assert holder.execute("SELECT 2").fetchone() == (2,)  # the holder's transaction was never touched
    finally:
        holder.rollback()
        holder.close()


# --- repoint ---------------------------------------------------------------------------------


def test_role_refuses_to_undo_a_cutover_unless_allowed(pool_restored):
    """After a repoint (what a cutover does), converging the role must not send the application
    back to the old primary: it fails, naming the pool and both targets, and changes nothing."""
    pool_module(dict(ADMIN, database=POOL, **TO_GREEN))
    moved = CONFIG.read_bytes()
    refused = run_playbook(ROLE_PLAY)
    assert refused.status == "failed"
    [result] = refused.task_results("Refuse to undo a repoint made since the last converge")
    assert f"{POOL} goes to {where(GREEN)}/{POOL}, the inventory says {HOME_TEXT}/{POOL}" in result["msg"]
    assert "pgbouncer_allow_repoint" in result["msg"]
    assert CONFIG.read_bytes() == moved and pool_target() == ON_GREEN

    allowed = run_playbook(ROLE_PLAY, extravars={"pgbouncer_allow_repoint": True})
    assert allowed.status == "successful", allowed.stdout
    assert pool_target() == HOME


def test_repoint_to_green_and_back(pool_restored):
    original = CONFIG.read_bytes()
    run, moved = pool_module(dict(ADMIN, database=POOL, **TO_GREEN, backup=True))
    assert run.status == "successful", run.stdout
    try:
        assert moved["changed"] is True
        assert (moved["host"], moved["port"], moved["paused"]) == (*ON_GREEN, False)
        assert moved["queries"] == ["RELOAD"]
        assert pool_target() == ON_GREEN
        changed_lines = [
            (old, new)
            for old, new in zip(original.splitlines(keepends=True), CONFIG.read_bytes().splitlines(keepends=True), strict=True)
            if old != new
        ]
        assert changed_lines == [
            (
                f"{POOL} = host={HAPROXY_ADDRESS} port={HAPROXY_WRITES} dbname={POOL} pool_size=20\n".encode(),
                f"{POOL} = host={GREEN_ADDRESS} port={PG_PORT} dbname={POOL} pool_size=20\n".encode(),
            )
        ]
        assert len(CONFIG.read_bytes()) == len(original)
        backup = Path(moved["backup_file"])
        assert backup.read_bytes() == original
        assert stat.S_IMODE(backup.stat().st_mode) == 0o640 and backup.stat().st_uid == CONFIG.stat().st_uid
        with app_connect() as conn:
            assert server_reached(conn) == "green"  # a new server connection goes to green

        again = pool_module(dict(ADMIN, database=POOL, **TO_GREEN))[1]
        assert again["changed"] is False and again["queries"] == []

        back = pool_module(dict(ADMIN, database=POOL, **TO_HOME))[1]
        assert back["changed"] is True and (back["host"], back["port"]) == HOME
        assert CONFIG.read_bytes() == original  # byte-identical again
        with app_connect() as conn:
            assert server_reached(conn) == "blue"
    finally:
        if moved.get("backup_file"):
            Path(moved["backup_file"]).unlink(missing_ok=True)


def test_repoint_then_resume_in_one_call(pool_restored):
    pool_module(dict(ADMIN, database=POOL, state="paused"))
    result = pool_module(dict(ADMIN, database=POOL, state="resumed", **TO_GREEN))[1]
    assert result["changed"] is True
    assert result["queries"] == ["RELOAD", f"RESUME {POOL}"]
    assert (result["host"], result["port"], result["paused"]) == (*ON_GREEN, False)


# --- errors ----------------------------------------------------------------------------------


def test_wrong_admin_password_names_the_user_not_the_password(pgbouncer):
    run, result = pool_module(dict(ADMIN, login_password="Wrong-Secret-7", database=POOL, state="paused"))
    assert result["failed"] is True
    assert f"authentication failed for user 'pgbouncer_admin' on PgBouncer's admin console at {POOL_1}:{POOLER_PORT}" in result["msg"]
    assert "Wrong-Secret-7" not in run.stdout and "Wrong-Secret-7" not in str(result)
    assert pool_row()["paused"] == 0


def test_a_user_outside_admin_users_is_told_so(pgbouncer):
    result = pool_module(dict(ADMIN, login_user="novacron", database=POOL, state="paused"))[1]
    assert result["failed"] is True
    assert f"user 'novacron' may not use PgBouncer's admin console at {POOL_1}:{POOLER_PORT}: add it to admin_users" in result["msg"]


def test_hostile_pool_name_is_refused(pgbouncer):
    result = pool_module(dict(ADMIN, database='a"; SHUTDOWN; --', state="paused"))[1]
    assert result["failed"] is True
    assert "pool name 'a\"; SHUTDOWN; --' is not allowed" in result["msg"]
    assert "cannot be parameterised" in result["msg"]
    assert pool_row()["paused"] == 0  # and PgBouncer is still up


def test_unknown_pool_is_named(pgbouncer):
    result = pool_module(dict(ADMIN, database="no_such_pool", state="paused"))[1]
    assert result["failed"] is True
    assert "has no pool 'no_such_pool' (SHOW DATABASES lists: novacron)" in result["msg"]


def test_unreachable_console_names_host_and_port(pgbouncer):
    result = pool_module(dict(ADMIN, login_port=1, database=POOL, state="resumed"))[1]
    assert result["failed"] is True
    assert f"cannot reach PgBouncer's admin console at {POOL_1}:1" in result["msg"]
    assert "listen_port" in result["msg"]


def test_config_file_must_hold_the_entry(pool_restored, tmp_path):
    other = tmp_path / "pgbouncer.ini"
    other.write_text("[databases]\nsomething_else = host=x\n")
    os.chmod(other, 0o600)
    result = pool_module(dict(ADMIN, database=POOL, **TO_GREEN, config_file=str(other)))[1]
    assert result["failed"] is True
    assert f"{other} has no [databases] entry for '{POOL}'" in result["msg"]
    assert pool_target() == HOME


# --- a second instance (pgbouncer_instance) ---------------------------------------------------


@pytest.fixture(scope="module")
def second_converged(pgbouncer):
    """pool-2 converged, once for its tests: each leaves its files as the converge wrote them
    (a restart, or a repoint its test converges back)."""
    run = run_playbook(SECOND_PLAY)
    assert run.status == "successful", run.stdout
    return run


@pytest.fixture()
def second_restored(second_converged):
    """pool-2 converged; afterwards its pool resumed and pointing at HAProxy again."""
    yield
    with AdminConsole(dict(SECOND_ADMIN, login_db="pgbouncer", connect_timeout=5)) as console:
        resume(console, POOL)
        repoint(console, POOL, str(SECOND_DIR / "pgbouncer.ini"), **TO_HOME, dbname=POOL)


def test_second_instance_runs_from_its_own_files(second_converged, second_restored):
    again = converged_again(second_converged, SECOND_PLAY)
    assert again.status == "successful", again.stdout
    assert again.changed(SECOND) == 0, again.changed_tasks()
    startup = (SECOND_DIR / "pgbouncer-startup.ini").read_text()
    assert f"listen_addr = {POOL_2}" in startup and f"listen_port = {POOLER_PORT}" in startup
    assert "pidfile = /var/run/postgresql/pgbouncer2.pid" in startup
    assert "unix_socket_dir = /var/run/postgresql/pgbouncer2" in startup
    ini = (SECOND_DIR / "pgbouncer.ini").read_text()
    assert "%include /etc/pgbouncer/pgbouncer2/pgbouncer-startup.ini" in ini
    assert "auth_file = /etc/pgbouncer/pgbouncer2/userlist.txt" in ini
    assert "logfile = /var/log/postgresql/pgbouncer2.log" in ini
    assert "max_prepared_statements" not in ini and "max_prepared_statements" not in CONFIG.read_text()  # 1.18 refuses it
    assert stat.S_IMODE((SECOND_DIR / "userlist.txt").stat().st_mode) == 0o640
    status = subprocess.run(["/etc/init.d/pgbouncer-pgbouncer2", "status"], capture_output=True, text=True, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert Path(f"/var/run/postgresql/pgbouncer2/.s.PGSQL.{POOLER_PORT}").is_socket()
    with app_connect(host=POOL_2) as conn:
        assert server_reached(conn) == "blue"
    with app_connect() as conn:  # Debian's instance is still there, on its own host's address
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_second_instance_reload_and_restart_through_its_init_script(second_restored):
    script = "/etc/init.d/pgbouncer-pgbouncer2"
    pid = Path("/var/run/postgresql/pgbouncer2.pid").read_text().strip()
    assert subprocess.run([script, "reload"], capture_output=True, check=False).returncode == 0
    assert Path("/var/run/postgresql/pgbouncer2.pid").read_text().strip() == pid  # SIGHUP: same process
    assert subprocess.run([script, "restart"], capture_output=True, check=False).returncode == 0
    assert Path("/var/run/postgresql/pgbouncer2.pid").read_text().strip() != pid
    with app_connect(host=POOL_2) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool_row()["paused"] == 0  # Debian's instance untouched


def test_second_instance_refuses_to_undo_its_own_repoint(second_restored):
    """The refusal reads the instance's own pgbouncer.ini: a repoint of the second PgBouncer
    refuses its converge and not Debian's instance's."""
    pool_module(dict(SECOND_ADMIN, database=POOL, **TO_GREEN, config_file=str(SECOND_DIR / "pgbouncer.ini")), host=SECOND)
    refused = run_playbook(SECOND_PLAY)
    assert refused.status == "failed"
    [result] = refused.task_results("Refuse to undo a repoint made since the last converge")
    assert "/etc/pgbouncer/pgbouncer2/pgbouncer.ini" in result["msg"]
    assert f"{POOL} goes to {where(GREEN)}/{POOL}, the inventory says {HOME_TEXT}/{POOL}" in result["msg"]
    first = run_playbook(ROLE_PLAY)
    assert first.status == "successful", first.stdout
    allowed = run_playbook(SECOND_PLAY, extravars={"pgbouncer_allow_repoint": True})
    assert allowed.status == "successful", allowed.stdout
    with app_connect(host=POOL_2) as conn:
        assert server_reached(conn) == "blue"
