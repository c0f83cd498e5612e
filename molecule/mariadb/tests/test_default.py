"""testinfra checks of roles/mariadb after molecule's converge: two instances, the application
user with the staged migration's grants, a read-only validation user."""

import shlex

INSTANCES = {"molecule-main": 3316, "molecule-second": 3317}
APP = ("app", "molecule-app-secret")
VALIDATOR = ("validator", "molecule-validator-secret")


def sql(host, port, user, statement, database="appdb"):
    """Run one statement over TCP as `user` (password from the environment, not the command line)."""
    name, password = user
    command = (
        f"env MYSQL_PWD={shlex.quote(password)} mariadb --protocol=TCP -h 127.0.0.1 -P {port} -u {name} "
        f"--batch --skip-column-names {database} -e {shlex.quote(statement)}"
    )
    return host.run(command)


def test_instances_listen_on_loopback_and_run_from_their_init_scripts(host):
    for name, port in INSTANCES.items():
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
        assert host.file(f"/etc/init.d/mariadb-{name}").mode == 0o755
        assert host.run(f"/etc/init.d/mariadb-{name} status").rc == 0
        assert host.file(f"/run/mysqld-{name}/mysqld.sock").is_socket
        assert host.file(f"/var/lib/mysql-{name}").user == "mysql"
        conf = host.file(f"/etc/mysql/mariadb-{name}.cnf")
        assert conf.mode == 0o640 and conf.contains(f"port = {port}")


def test_each_instance_has_its_own_settings(host):
    for name, port in INSTANCES.items():
        packet = host.check_output(f"mariadb --defaults-file=/etc/mysql/mariadb-{name}.cnf -N -e 'SELECT @@port, @@max_allowed_packet'")
        expected = 64 * 1024 * 1024 if name == "molecule-second" else 16 * 1024 * 1024
        assert packet.split() == [str(port), str(expected)]


def test_root_only_through_the_unix_socket(host):
    for name, port in INSTANCES.items():
        assert host.check_output(f"mariadb --defaults-file=/etc/mysql/mariadb-{name}.cnf -N -e 'SELECT current_user()'") == "root@localhost"
        refused = host.run(f"mariadb --protocol=TCP -h 127.0.0.1 -P {port} -u root -N -e 'SELECT 1'")
        assert refused.rc != 0 and "Access denied" in refused.stderr


def test_no_anonymous_users(host):
    for name in INSTANCES:
        query = shlex.quote("SELECT count(*) FROM mysql.user WHERE user = ''")
        out = host.check_output(f"mariadb --defaults-file=/etc/mysql/mariadb-{name}.cnf -N -e {query}")
        assert out == "0"


def test_app_user_creates_writes_and_drops(host):
    for port in INSTANCES.values():
        steps = [
            "CREATE TABLE molecule_probe (id INT PRIMARY KEY, note VARCHAR(20))",
            "ALTER TABLE molecule_probe ADD COLUMN n INT",
            "CREATE INDEX molecule_probe_n ON molecule_probe (n)",
            "INSERT INTO molecule_probe VALUES (1, 'one', 1), (2, 'two', 2)",
            "UPDATE molecule_probe SET note = 'uno' WHERE id = 1",
            "DELETE FROM molecule_probe WHERE id = 2",
        ]
        try:
            for statement in steps:
                run = sql(host, port, APP, statement)
                assert run.rc == 0, (statement, run.stderr)
            assert sql(host, port, APP, "SELECT id, note FROM molecule_probe").stdout.split() == ["1", "uno"]
            # the validation user reads what the application wrote, and nothing else
            assert sql(host, port, VALIDATOR, "SELECT count(*) FROM molecule_probe").stdout.strip() == "1"
            writes = ("INSERT INTO molecule_probe VALUES (3, 'three', 3)", "DELETE FROM molecule_probe", "DROP TABLE molecule_probe")
            for statement in writes:
                refused = sql(host, port, VALIDATOR, statement)
                assert refused.rc != 0 and "command denied to user 'validator'" in refused.stderr, statement
        finally:
            assert sql(host, port, APP, "DROP TABLE IF EXISTS molecule_probe").rc == 0


def test_app_user_has_no_other_database(host):
    refused = sql(host, 3316, APP, "SELECT 1", database="mysql")
    assert refused.rc != 0 and "Access denied for user 'app'" in refused.stderr


def test_wrong_password_is_refused(host):
    refused = sql(host, 3316, ("app", "not-the-password"), "SELECT 1")
    assert refused.rc != 0 and "Access denied for user 'app'" in refused.stderr
