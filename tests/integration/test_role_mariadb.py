"""roles/mariadb on the lab's MariaDB host db-mariadb (127.0.0.14), reached over SSH: an instance of
the test's own (zdm-itest, on a free port of that address) beside the lab's instance "lab" (:3306),
converged through the role and removed afterwards; and site.yml's MariaDB play, whose second converge
changes nothing. The host shares this machine, so the test reads and removes the instance's files and
reaches root through its unix socket locally. The lab's services are not touched."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pymysql
import pytest

from tests.lab import LAB_PASSWORD, MARIADB_ADDRESS, MARIADB_PORT, free_port, run_playbook

HOST = "db-mariadb"  # inventories/lab hosts.yml: mariadb_bind_address is its own address

NAME = "zdm-itest"
APP_PASSWORD = "itest-app-secret"
VALIDATOR_PASSWORD = "itest-validator-secret"
APP_GRANTS = "SELECT,INSERT,UPDATE,DELETE,CREATE,ALTER,INDEX,DROP"  # the staged migration's application user
USERS = [
    {"name": "app", "password": APP_PASSWORD, "privileges": {"appdb.*": APP_GRANTS}},
    {"name": "validator", "password": VALIDATOR_PASSWORD, "privileges": {"appdb.*": "SELECT"}},
]
INSTANCE_FILES = [
    f"/etc/init.d/mariadb-{NAME}",
    f"/etc/mysql/mariadb-{NAME}.cnf",
    f"/var/lib/mysql-{NAME}",
    f"/run/mysqld-{NAME}",
    f"/var/log/mysql/mariadb-{NAME}.err",
]


def role_play(port: int, **variables) -> list[dict]:
    """roles/mariadb on db-mariadb (over SSH) for the test's instance; `variables` override the defaults below."""
    play_vars = {
        "mariadb_instance": NAME,
        "mariadb_port": port,
        "mariadb_databases": [{"name": "appdb"}],
        "mariadb_users": USERS,
        **variables,
    }
    role = "zerodowntime.migration.mariadb"
    return [{"name": "MariaDB test instance", "hosts": HOST, "become": True, "vars": play_vars, "roles": [role]}]


def remove_instance() -> None:
    if Path(INSTANCE_FILES[0]).exists():
        subprocess.run([INSTANCE_FILES[0], "stop"], check=True, capture_output=True)
    subprocess.run(["rm", "-rf", *INSTANCE_FILES], check=True)
    for link in Path("/etc").glob(f"rc?.d/[SK]??mariadb-{NAME}"):
        link.unlink()


def connect(port: int, user: str, password: str, database: str = "appdb") -> pymysql.Connection:
    return pymysql.connect(host=MARIADB_ADDRESS, port=port, user=user, password=password, database=database, autocommit=True)


def grants(port: int, user: str) -> str:
    """SHOW GRANTS for user@'%', as root through the socket (db-mariadb is this machine)."""
    with pymysql.connect(unix_socket=f"/run/mysqld-{NAME}/mysqld.sock", user="root") as conn, conn.cursor() as cur:
        cur.execute("SHOW GRANTS FOR %s@'%%'", (user,))
        return "\n".join(row[0] for row in cur.fetchall())


@pytest.fixture(scope="module")
def port(lab):
    remove_instance()  # a previous run that did not get to its cleanup
    port = free_port(MARIADB_ADDRESS)
    run = run_playbook(role_play(port))
    try:
        assert run.status == "successful", run.stdout
        yield port
    finally:
        remove_instance()


def test_second_converge_changes_nothing(port):
    again = run_playbook(role_play(port))
    assert again.status == "successful", again.stdout
    assert again.changed(HOST) == 0, again.changed_tasks()


def test_instance_listens_on_loopback_with_its_own_files(port):
    with connect(port, "validator", VALIDATOR_PASSWORD) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@port, @@bind_address, @@datadir, @@socket, @@character_set_server")
        assert cur.fetchone() == (port, MARIADB_ADDRESS, f"/var/lib/mysql-{NAME}/", f"/run/mysqld-{NAME}/mysqld.sock", "utf8mb4")
    status = subprocess.run([f"/etc/init.d/mariadb-{NAME}", "status"], check=False, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout


def test_root_has_no_password_login(port):
    for password in ("", "root"):
        with pytest.raises(pymysql.err.OperationalError) as refused:
            pymysql.connect(host=MARIADB_ADDRESS, port=port, user="root", password=password)
        # 1698: root@localhost authenticates by unix_socket, which a TCP client cannot pass
        assert refused.value.args[0] in (1045, 1698) and "Access denied for user 'root'" in refused.value.args[1]


def test_app_user_runs_a_migration_and_the_validator_only_reads(port):
    with connect(port, "app", APP_PASSWORD) as app, app.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS itest_orders")
        cur.execute("CREATE TABLE itest_orders (id BIGINT PRIMARY KEY, total DECIMAL(10,2))")
        cur.execute("ALTER TABLE itest_orders ADD COLUMN note VARCHAR(40)")
        cur.execute("CREATE INDEX itest_orders_total ON itest_orders (total)")
        cur.executemany("INSERT INTO itest_orders (id, total) VALUES (%s, %s)", [(1, "9.99"), (2, "20.00")])
        cur.execute("UPDATE itest_orders SET note = 'paid' WHERE id = 1")
        cur.execute("DELETE FROM itest_orders WHERE id = 2")
    with connect(port, "validator", VALIDATOR_PASSWORD) as validator, validator.cursor() as cur:
        cur.execute("SELECT id, note FROM itest_orders")
        assert cur.fetchall() == ((1, "paid"),)
        for statement in ("INSERT INTO itest_orders (id) VALUES (3)", "UPDATE itest_orders SET note = 'x'", "DROP TABLE itest_orders"):
            with pytest.raises(pymysql.err.OperationalError) as refused:
                cur.execute(statement)
            assert refused.value.args[0] == 1142, statement  # ER_TABLEACCESS_DENIED_ERROR
            assert "denied to user 'validator'" in refused.value.args[1]
    with connect(port, "app", APP_PASSWORD) as app, app.cursor() as cur:
        cur.execute("DROP TABLE itest_orders")


def test_wrong_password_is_refused_with_a_clear_error(port):
    with pytest.raises(pymysql.err.OperationalError) as refused:
        connect(port, "app", "not-the-password")
    assert refused.value.args[0] == 1045
    assert "Access denied for user 'app'" in refused.value.args[1]


def test_app_user_sees_no_other_database(port):
    with pytest.raises(pymysql.err.OperationalError) as refused:
        connect(port, "app", APP_PASSWORD, database="mysql")
    assert refused.value.args[0] == 1044  # ER_DBACCESS_DENIED_ERROR


def test_check_mode_changes_no_grant(port):
    wider = [USERS[0], dict(USERS[1], privileges={"appdb.*": "SELECT,INSERT"})]
    run = run_playbook(role_play(port, mariadb_users=wider), cmdline="--check")
    assert run.status == "successful", run.stdout
    assert run.changed(HOST) == 1  # the users task reports the grant it would give (its result is no_log)
    assert "INSERT" not in grants(port, "validator")


def test_grants_follow_the_variable_and_a_new_password_replaces_the_old(port):
    narrower = [dict(USERS[0], password="itest-app-rotated", privileges={"appdb.*": "SELECT,INSERT"}), USERS[1]]
    try:
        run = run_playbook(role_play(port, mariadb_users=narrower))
        assert run.status == "successful", run.stdout
        shown = grants(port, "app")
        assert "GRANT SELECT, INSERT ON `appdb`.*" in shown and "DROP" not in shown
        with pytest.raises(pymysql.err.OperationalError) as refused:
            connect(port, "app", APP_PASSWORD)
        assert refused.value.args[0] == 1045
        connect(port, "app", "itest-app-rotated").close()
    finally:
        restored = run_playbook(role_play(port))
        assert restored.status == "successful", restored.stdout
    connect(port, "app", APP_PASSWORD).close()
    assert "DROP" in grants(port, "app")


def test_a_setting_change_restarts_the_instance(port):
    def started_at() -> int:
        """When the server started (whole seconds): now less its Uptime."""
        with connect(port, "validator", VALIDATOR_PASSWORD) as conn, conn.cursor() as cur:
            cur.execute("SELECT UNIX_TIMESTAMP() - VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'")
            return int(cur.fetchone()[0])

    time.sleep(2)  # whole seconds: a restart from here on starts later than the server did
    before = started_at()
    try:
        run = run_playbook(role_play(port, mariadb_max_connections=77))
        assert run.status == "successful", run.stdout
        assert started_at() > before  # restarted by the converge
        with connect(port, "validator", VALIDATOR_PASSWORD) as conn, conn.cursor() as cur:
            cur.execute("SELECT @@max_connections")
            assert cur.fetchone() == (77,)
    finally:
        restored = run_playbook(role_play(port))
        assert restored.status == "successful", restored.stdout


def test_lab_instance_serves_the_app_and_the_validation_user(lab):
    """site.yml's MariaDB play (inventories/lab/group_vars/mariadb_servers.yml): instance lab on
    db-mariadb's own address, port 3306, and nothing left on lab-db's (its address before the move)."""
    with connect(MARIADB_PORT, "app", LAB_PASSWORD) as app, app.cursor() as cur:
        cur.execute("SELECT @@datadir, @@bind_address, @@port, DATABASE()")
        assert cur.fetchone() == ("/var/lib/mysql-lab/", MARIADB_ADDRESS, MARIADB_PORT, "appdb")
    with connect(MARIADB_PORT, "validator", LAB_PASSWORD) as validator, validator.cursor() as cur:
        cur.execute("SHOW GRANTS FOR CURRENT_USER")
        assert "GRANT SELECT ON `appdb`.*" in "\n".join(row[0] for row in cur.fetchall())
    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql.connect(host="127.0.0.1", port=MARIADB_PORT, user="validator", password=LAB_PASSWORD, connect_timeout=5)
    assert refused.value.args[0] == 2003  # CR_CONN_HOST_ERROR: nothing listens there


def test_site_converges_mariadb_over_ssh_and_a_second_converge_changes_nothing(lab):
    """site.yml's MariaDB play alone, on db-mariadb over SSH (--tags; --limit: the other plays, which
    gather facts under any tag, reach no host of their own)."""
    again = run_playbook("site.yml", cmdline="--tags mariadb --limit mariadb_servers")
    assert again.status == "successful", again.stdout
    assert set(again.stats["ok"]) == {HOST}, again.stats  # the role ran on the MariaDB host alone
    assert again.changes() == []


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"mariadb_users": [{"name": "app", "privileges": {"appdb.*": "SELECT"}}]}, "mariadb_users"),
        ({"mariadb_users": [{"name": "app", "password": "x", "privileges": "appdb.*:SELECT"}]}, "mariadb_users"),
        ({"mariadb_databases": [{"name": "app-db"}]}, "mariadb_databases"),
        ({"mariadb_instance": "Bad Name"}, "mariadb_instance"),
        ({"mariadb_settings": {"port": 3399}}, "mariadb_settings"),
    ],
)
def test_bad_input_is_refused_naming_the_variable(port, variables, named):
    run = run_playbook(role_play(port, **variables))
    assert run.status == "failed"
    failed = [e["event_data"] for e in run.events if e.get("event") == "runner_on_failed"]
    # refused by meta/argument_specs.yml or by tasks/validate.yml, before anything is installed or written
    assert failed and failed[0]["task"].startswith(("Validating arguments", "Check ")), failed
    assert named in failed[0]["res"]["msg"], failed[0]["res"]["msg"]
    assert run.changed(HOST) == 0
