"""roles/postgresql with several instances on one port, each on its own loopback address (issue 14):
zdmaddr_a 127.0.0.71:5432, zdmaddr_b 127.0.0.72:5432 and zdmaddr_a_r1 127.0.0.73:5432 (a streaming
replica of zdmaddr_a), each with its own socket directory /var/run/postgresql/NAME and its own
certificate of the lab CA naming its address (host zdm-addresses in an inventory of its own). The
lab's blue, green and green_r1 and Debian's 15/main (5432 on 127.0.0.1, down) are not touched; the
test's clusters, sockets and certificates are removed at the end, also after a failure."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from cryptography import x509

from tests.lab import LAB_PASSWORD, PG_SERVERS, converge_of_own, inventory_of_own, run_playbook

HOST = "zdm-addresses"
PORT = 5432
TLS_DIR = Path("/etc/zerodowntime/tls/zdmaddr")
INSTANCES = [
    {"name": "zdmaddr_a", "port": PORT, "listen_addresses": "127.0.0.71", "memory_mb": 256},
    {"name": "zdmaddr_b", "port": PORT, "listen_addresses": "127.0.0.72", "memory_mb": 256},
]
REPLICAS = [{"name": "zdmaddr_a_r1", "port": PORT, "listen_addresses": "127.0.0.73", "memory_mb": 256, "replica_of": {"name": "zdmaddr_a"}}]
ADDRESSES = {"zdmaddr_a": "127.0.0.71", "zdmaddr_b": "127.0.0.72", "zdmaddr_a_r1": "127.0.0.73"}
# replicas first, so the primary's slot is free; zdmaddr_c and zdmaddr_d only if a refusal failed to refuse
CLUSTERS = ["zdmaddr_a_r1", "zdmaddr_a", "zdmaddr_b", "zdmaddr_c", "zdmaddr_d"]
DB = "zdmaddr_db"
HOST_VARS = {
    "ansible_connection": "local",
    "ansible_become": False,
    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    "postgresql_max_connections": 50,
    "postgresql_socket_dir_per_instance": True,
    "postgresql_ssl": True,
    "postgresql_ssl_lab_ca": True,
    "postgresql_ssl_per_instance": True,
    "postgresql_ssl_cert_file": str(TLS_DIR / "postgresql.crt"),
    "postgresql_ssl_key_file": str(TLS_DIR / "postgresql.key"),
    "postgresql_ssl_ca_file": str(TLS_DIR / "ca.crt"),
    "postgresql_hba": [
        {"type": "local", "database": "all", "user": "postgres", "method": "peer", "options": "map=zerodowntime_admin"},
        {"type": "local", "database": "all", "user": "all", "method": "peer"},
        {"type": "host", "database": "all", "user": "all", "address": "127.0.0.0/8", "method": "scram-sha-256"},
        {"type": "host", "database": "replication", "user": "replicator", "address": "127.0.0.0/8", "method": "scram-sha-256"},
    ],
    "postgresql_instances": INSTANCES,
    "postgresql_replicas": REPLICAS,
    "postgresql_replication_user": {"name": "replicator", "password": LAB_PASSWORD},
    "postgresql_users": [{"name": "migrator", "password": LAB_PASSWORD, "role_attr_flags": "LOGIN,SUPERUSER"}],
    "postgresql_databases": [{"name": DB, "owner": "migrator"}],
}
CONVERGE = [
    {
        "name": "Converge zdmaddr_a, zdmaddr_b and zdmaddr_a_r1 on port 5432",
        "hosts": HOST,
        "gather_facts": True,
        "roles": ["zerodowntime.migration.postgresql"],
    }
]
REFUSAL = "Refuse instances that would share a socket, an address and port, a name or a data directory"


def drop_clusters() -> None:
    for name in CLUSTERS:
        if Path(f"/etc/postgresql/15/{name}").exists():
            subprocess.run(["pg_dropcluster", "--stop", "15", name], check=True, capture_output=True)
        shutil.rmtree(f"/var/lib/postgresql/15/{name}", ignore_errors=True)
        shutil.rmtree(f"/var/run/postgresql/{name}", ignore_errors=True)
    shutil.rmtree(TLS_DIR, ignore_errors=True)


def clusters() -> dict[str, tuple[str, str]]:
    """pg_lsclusters: {name: (port, status)} of version 15."""
    out = subprocess.run(["pg_lsclusters", "--no-header"], check=True, capture_output=True, text=True).stdout
    return {fields[1]: (fields[2], fields[3]) for fields in (line.split() for line in out.splitlines()) if fields[0] == "15"}


def connect(name: str, **params) -> psycopg.Connection:
    defaults = {"host": ADDRESSES[name], "port": PORT, "user": "migrator", "password": LAB_PASSWORD, "dbname": DB, "connect_timeout": 5}
    return psycopg.connect(**dict(defaults, **params), autocommit=True)


def identity(conn: psycopg.Connection) -> tuple:
    return conn.execute(
        "SELECT host(inet_server_addr()), current_setting('port'), current_setting('cluster_name'),"
        " current_setting('data_directory'), (SELECT system_identifier FROM pg_control_system()), pg_is_in_recovery()"
    ).fetchone()


@pytest.fixture(scope="module")
def inventory():
    """The inventory, and the test's clusters dropped before (a clean first converge) and after."""
    drop_clusters()
    # only the lab's clusters and Debian's 15/main: a test in another lane may make and drop clusters
    # of its own meanwhile (test_pg_replicas)
    before = {name: state for name, state in clusters().items() if name in {*PG_SERVERS.values(), "main"}}
    try:
        with inventory_of_own(HOST, HOST_VARS, "zdm-addresses-") as path:
            yield path
    finally:
        drop_clusters()
        # the lab's clusters there still, none of the test's left, Debian's 15/main as it was
        after = clusters()
        assert not set(CLUSTERS) & set(after), after
        assert set(before) <= set(after), after
        assert after.get("main") == before.get("main")


@pytest.fixture(scope="module")
def converged(inventory):
    return converge_of_own(CONVERGE, inventory, HOST, first=True)


def test_second_converge_changes_nothing(inventory, converged):
    converge_of_own(CONVERGE, inventory, HOST, first=False)


def test_each_answers_on_its_own_address_and_they_are_different_servers(converged):
    seen = {}
    for name, address in ADDRESSES.items():
        with connect(name) as conn:
            seen[name] = identity(conn)
        assert seen[name][:4] == (address, str(PORT), f"15/{name}", f"/var/lib/postgresql/15/{name}")
    assert seen["zdmaddr_a"][4] != seen["zdmaddr_b"][4]  # two clusters (initdb each)
    assert seen["zdmaddr_a_r1"][4] == seen["zdmaddr_a"][4]  # a copy of zdmaddr_a ...
    assert [seen[name][5] for name in ADDRESSES] == [False, False, True]  # ... in recovery
    listed = clusters()
    assert {name: listed[name] for name in ADDRESSES} == {
        "zdmaddr_a": ("5432", "online"),
        "zdmaddr_b": ("5432", "online"),
        "zdmaddr_a_r1": ("5432", "online,recovery"),
    }


def test_each_has_its_own_socket_directory(converged):
    assert not Path("/var/run/postgresql/.s.PGSQL.5432").exists()  # Debian's 15/main stays down
    for name in ADDRESSES:
        socket_dir = Path(f"/var/run/postgresql/{name}")
        assert (socket_dir / ".s.PGSQL.5432").is_socket()
        assert f"unix_socket_directories = '{socket_dir}'" in Path(f"/etc/postgresql/15/{name}/postgresql.conf").read_text()
        with psycopg.connect(host=str(socket_dir), port=PORT, user="postgres", dbname="postgres", autocommit=True) as conn:
            assert conn.execute("SELECT current_setting('cluster_name')").fetchone()[0] == f"15/{name}"


def test_tls_verify_full_against_each_address(converged):
    for name, address in ADDRESSES.items():
        cert = x509.load_pem_x509_certificate((TLS_DIR / f"postgresql-{name}.crt").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [address]
        assert names.get_values_for_type(x509.DNSName) == [HOST]
        assert (TLS_DIR / f"postgresql-{name}.key").stat().st_mode & 0o777 == 0o600
        with connect(name, sslmode="verify-full", sslrootcert=str(TLS_DIR / "ca.crt")) as conn:
            (ssl,) = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
            assert ssl is True
            assert conn.execute("SHOW ssl_cert_file").fetchone()[0] == str(TLS_DIR / f"postgresql-{name}.crt")
    assert not (TLS_DIR / "postgresql.crt").exists()  # no certificate shared by the three


def test_the_replica_streams_from_its_primary_address(converged):
    auto_conf = Path("/var/lib/postgresql/15/zdmaddr_a_r1/postgresql.auto.conf").read_text()
    assert "host=127.0.0.71" in auto_conf and "port=5432" in auto_conf
    with connect("zdmaddr_a") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS zdm_canary (id serial PRIMARY KEY, note text)")
        row_id = conn.execute("INSERT INTO zdm_canary (note) VALUES ('hello 127.0.0.73') RETURNING id").fetchone()[0]
        streaming = conn.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
    assert streaming == [("zdmaddr_a_r1", "streaming")]
    deadline = time.monotonic() + 20
    with connect("zdmaddr_a_r1") as conn:
        while conn.execute("SELECT note FROM zdm_canary WHERE id = %s", (row_id,)).fetchone() is None:
            assert time.monotonic() < deadline, "the row did not reach zdmaddr_a_r1 within 20 s"
            time.sleep(0.2)
    with connect("zdmaddr_b") as conn:
        assert conn.execute("SELECT to_regclass('zdm_canary')").fetchone()[0] is None  # zdmaddr_b is another server


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {
                "postgresql_instances": [
                    {"name": "zdmaddr_c", "port": PORT, "listen_addresses": "127.0.0.74"},
                    {"name": "zdmaddr_d", "port": PORT, "listen_addresses": "127.0.0.74"},
                ],
            },
            "instance zdmaddr_c and instance zdmaddr_d would both listen on port 5432 of 127.0.0.74: give each its own address",
        ),
        (
            {
                "postgresql_socket_dir_per_instance": False,
                "postgresql_instances": [
                    {"name": "zdmaddr_c", "port": PORT, "listen_addresses": "127.0.0.74"},
                    {"name": "zdmaddr_d", "port": PORT, "listen_addresses": "127.0.0.75"},
                ],
            },
            "instance zdmaddr_c and instance zdmaddr_d would share the unix socket /var/run/postgresql/.s.PGSQL.5432",
        ),
    ],
    ids=["same-address-and-port", "same-socket"],
)
def test_a_collision_is_refused_naming_both_before_anything_changes(inventory, converged, overrides, expected):
    run = run_playbook(CONVERGE, inventory=inventory, extravars={"postgresql_replicas": [], **overrides})
    assert run.status == "failed"
    [refused] = run.task_results(REFUSAL)
    assert refused["failed"]
    assert expected in refused["msg"], refused["msg"]
    assert refused["msg"].endswith("Nothing was changed.")
    assert run.changed(HOST) == 0, run.changes()
    for name in ("zdmaddr_c", "zdmaddr_d"):
        assert not Path(f"/etc/postgresql/15/{name}").exists()
        assert not Path(f"/var/lib/postgresql/15/{name}").exists()
        assert not Path(f"/var/run/postgresql/{name}").exists()
