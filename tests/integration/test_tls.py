"""TLS between the lab's hosts (inventories/lab: PostgreSQL blue/green/green_r1 each on its own address
with a certificate of its own, PgBouncer on pool-1 127.0.0.61:6432 and pool-2 127.0.0.62:6432,
Redis TLS listeners of blue 127.0.0.21:6479 and green 127.0.0.22:6479), every certificate issued by the lab's CA (roles/lab_ca).

Clients verify with sslmode=verify-full against the lab's CA; a throwaway CA made here (the
`cryptography` library) stands for a wrong one and must be refused, with an error naming the
cause and the fix."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import psycopg
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError
from tests.lab import (
    BLUE,
    BLUE_ADDRESS,
    GREEN,
    GREEN_ADDRESS,
    GREEN_R1_ADDRESS,
    HAPROXY_ADDRESS,
    HAPROXY_WRITES,
    LAB_PASSWORD,
    PG_PORT,
    POOLER_HOSTS,
    POOLER_PORT,
    REDIS_BLUE_ADDRESS,
    REDIS_GREEN_ADDRESS,
    REDIS_PORT,
    REDIS_TLS_PORT,
    connect,
    drop_database,
    drop_replication,
    recreate_database,
    run_module,
    through_haproxy,
    through_pooler,
    wait_for,
    where,
    write_wrong_ca,
)

LAB_CA = "/etc/zerodowntime/tls/ca.crt"  # inventories/lab/group_vars/all.yml lab_ca_certificate
CA_DIR = Path("/var/lib/zerodowntime/lab-ca")  # roles/lab_ca lab_ca_dir, on the controller (this machine)
VERIFY_FULL = {"ssl_mode": "verify-full", "ssl_rootcert": LAB_CA}
POOLERS = tuple(POOLER_HOSTS.values())  # pool-1 (Debian's instance) and pool-2 (pgbouncer2)
GREEN_R1 = dict(GREEN, login_host=GREEN_R1_ADDRESS)
REDIS_TLS = {REDIS_BLUE_ADDRESS: "master", REDIS_GREEN_ADDRESS: "slave"}  # blue, green (replica of blue), both on REDIS_TLS_PORT
DB = "zdm_tls_test"


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory) -> str:
    """A self-signed CA of our own: it signed none of the lab's certificates."""
    return str(write_wrong_ca(tmp_path_factory.mktemp("wrong-ca")))


def params(endpoint: dict, **overrides) -> dict:
    return dict(endpoint, connect_timeout=5, application_name="zdm-tls-test", **overrides)


def tls_of_session(client: Client) -> dict:
    return client.query_one("SELECT ssl, version FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()")


# --- the CA and the certificates ------------------------------------------------------------


def test_lab_ca_signed_the_servers_certificates_for_their_addresses(lab):
    ca = x509.load_pem_x509_certificate((CA_DIR / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (CA_DIR / "ca.key").stat().st_mode & 0o077 == 0, "the CA's key must be readable by its owner only"
    assert Path(LAB_CA).read_bytes() == (CA_DIR / "ca.crt").read_bytes()
    for name, owner, address in (
        ("postgresql-blue", "postgres", BLUE_ADDRESS),
        ("postgresql-green", "postgres", GREEN_ADDRESS),
        ("postgresql-green_r1", "postgres", GREEN_R1_ADDRESS),
        ("pgbouncer-pgbouncer", "postgres", POOLER_HOSTS["pool-1"]),
        ("pgbouncer-pgbouncer2", "postgres", POOLER_HOSTS["pool-2"]),
        ("redis-cache-blue", "redis", REDIS_BLUE_ADDRESS),
        ("redis-cache-green", "redis", REDIS_GREEN_ADDRESS),
    ):
        cert = x509.load_pem_x509_certificate(Path(f"/etc/zerodowntime/tls/{name}.crt").read_bytes())
        assert cert.issuer == ca.subject, name
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        addresses = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
        if name.startswith("postgresql-"):
            # a PostgreSQL instance's certificate names its own address and HAProxy's (lb-1: the frontends
            # pass TLS through: postgresql_ssl_extra_names), not another instance's: it cannot pass for one
            assert sorted(addresses) == sorted([address, HAPROXY_ADDRESS]), (name, addresses)
        else:
            # a Redis host's or PgBouncer's certificate names its own address only (redis_ and
            # pgbouncer_tls_subject_alt_names): nothing reaches a TLS listener through another address
            # (HAProxy :6389 goes to Redis's plain ports)
            assert addresses == [address], (name, addresses)
            poolers = {ip: pooler for pooler, ip in POOLER_HOSTS.items()}
            host = name.removeprefix("redis-") if name.startswith("redis-") else poolers[address]
            assert names.get_values_for_type(x509.DNSName) == [host], name
        key = Path(f"/etc/zerodowntime/tls/{name}.key")
        assert key.stat().st_mode & 0o077 == 0 and key.owner() == owner, f"{key} must be private to {owner}"


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [BLUE, GREEN, GREEN_R1], ids=["blue", "green", "green_r1"])
def test_verify_full_with_the_lab_ca_connects_over_tls(lab, endpoint):
    with Client(params(endpoint, **VERIFY_FULL)) as client:
        session = tls_of_session(client)
    assert session["ssl"] is True and session["version"].startswith("TLSv1.")


def test_verify_full_through_haproxy_checks_the_server_against_haproxys_address(lab):
    """HAProxy's write frontend (lb-1) passes TLS through: blue's certificate names lb-1's address."""
    with Client(params(through_haproxy(HAPROXY_WRITES), **VERIFY_FULL)) as client:
        session = tls_of_session(client)
        server = client.query_one("SELECT host(inet_server_addr()) AS address")["address"]
    assert session["ssl"] is True and server == BLUE_ADDRESS


def test_plain_connections_still_work(lab):
    with Client(params(BLUE, ssl_mode="disable")) as client:
        assert tls_of_session(client)["ssl"] is False


def test_a_wrong_ca_is_refused_with_cause_and_fix(lab, wrong_ca):
    with pytest.raises(PgError) as caught:
        Client(params(BLUE, ssl_mode="verify-full", ssl_rootcert=wrong_ca))
    message = str(caught.value)
    assert f"the TLS certificate of {where(BLUE)} is not signed by the CA in ssl_rootcert {wrong_ca}" in message
    assert "certificate verify failed" in message
    assert "set ssl_rootcert to the certificate of the CA that signed the server's certificate" in message
    assert LAB_PASSWORD not in message


def test_a_missing_ca_file_is_named(lab, tmp_path):
    missing = tmp_path / "no-such-ca.crt"
    with pytest.raises(PgError) as caught:
        Client(params(GREEN, ssl_mode="verify-full", ssl_rootcert=str(missing)))
    message = str(caught.value)
    assert f"the CA certificate file '{missing}' does not exist" in message
    assert "set ssl_rootcert" in message


def test_a_module_connects_over_verify_full(lab, wrong_ca):
    args = dict(BLUE, **VERIFY_FULL)
    result = run_module("zerodowntime.migration.pg_server_info", args)[1]
    assert result["failed"] is False, result.get("msg")
    refused = run_module("zerodowntime.migration.pg_server_info", dict(args, ssl_rootcert=wrong_ca))[1]
    assert refused["failed"] is True
    assert "is not signed by the CA in ssl_rootcert" in refused["msg"] and "set ssl_rootcert" in refused["msg"], refused["msg"]


def test_the_streaming_replica_replicates_over_tls(lab):
    """green_r1 (127.0.0.13:5432) streams from green with libpq's default sslmode (prefer): TLS now."""
    with connect(GREEN, login_db="postgres") as green:
        rows = green.execute(
            "SELECT r.application_name, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) "
            "WHERE r.application_name = 'green_r1'"
        ).fetchall()
    assert rows and all(row[1] for row in rows), rows


def drop_everything() -> None:
    drop_replication(DB, GREEN, BLUE)
    for endpoint in (GREEN, BLUE):
        drop_database(endpoint, DB)


@pytest.fixture()
def databases(lab):
    drop_everything()
    recreate_database(BLUE, DB)
    recreate_database(GREEN, DB)
    with connect(BLUE, login_db=DB) as blue:
        blue.execute("CREATE TABLE notes (id int PRIMARY KEY, note text)")
        blue.execute("INSERT INTO notes SELECT g, 'before ' || g FROM generate_series(1, 50) g")
        blue.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator")
        blue.execute("CREATE PUBLICATION zdm_tls_pub FOR TABLE notes")
    with connect(GREEN, login_db=DB) as green:
        green.execute("CREATE TABLE notes (id int PRIMARY KEY, note text)")
    yield
    drop_everything()


def publisher(**overrides) -> dict:
    base = {"host": BLUE_ADDRESS, "port": PG_PORT, "dbname": DB, "user": "replicator", "password": LAB_PASSWORD}
    base.update(overrides)
    return base


def test_a_subscription_with_verify_full_replicates_over_tls(databases, wrong_ca):
    sub = dict(GREEN, login_db=DB, name="zdm_tls_sub", publications=["zdm_tls_pub"], wait_for_sync=True, timeout=60)

    refused = run_module(
        "zerodowntime.migration.pg_subscription", dict(sub, publisher=publisher(sslmode="verify-full", sslrootcert=wrong_ca))
    )[1]
    assert refused["failed"] is True
    assert "is not signed by the CA" in refused["msg"], refused["msg"]
    assert LAB_PASSWORD not in refused["msg"]
    with connect(GREEN, login_db=DB) as green:
        assert green.execute("SELECT count(*) FROM pg_subscription WHERE subname = 'zdm_tls_sub'").fetchone()[0] == 0

    run, result = run_module(
        "zerodowntime.migration.pg_subscription",
        dict(sub, publisher=publisher(sslmode="verify-full", sslrootcert=LAB_CA)),
        through_ansible=True,
    )
    assert result["failed"] is False, result.get("msg")
    conninfo = result["subscription"]["conninfo"]
    assert "sslmode=verify-full" in conninfo and f"sslrootcert={LAB_CA}" in conninfo
    assert "password=********" in conninfo
    assert LAB_PASSWORD not in str(run.events)

    with connect(BLUE, login_db=DB) as blue:
        blue.execute("INSERT INTO notes VALUES (1000, 'written after the copy')")
        walsenders = blue.execute(
            "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = 'zdm_tls_sub'"
        ).fetchall()
    assert walsenders == [(True,)], f"the subscription's walsender on blue: {walsenders}"

    def replicated():
        with connect(GREEN, login_db=DB) as green:
            return green.execute("SELECT count(*) FROM notes").fetchone()[0] == 51

    wait_for("the row written on blue to reach green over TLS", replicated, timeout=30)


# --- PgBouncer ------------------------------------------------------------------------------


@pytest.mark.parametrize("address", POOLERS)
def test_pgbouncer_client_tls_verify_full_and_server_tls(lab, address):
    endpoint = through_pooler(address)
    with Client(params(endpoint, **VERIFY_FULL)) as client:
        assert client.conn.pgconn.ssl_in_use, f"the client's connection to PgBouncer {address} is not TLS"
        assert client.conn.info.parameter_status("server_version"), "PgBouncer passes the server's parameters"
        # PgBouncer's own connection to PostgreSQL (server_tls_sslmode verify-full): the backend
        # serving this session sees TLS.
        assert tls_of_session(client)["ssl"] is True


@pytest.mark.parametrize("address", POOLERS)
def test_pgbouncer_refuses_a_wrong_ca(lab, address, wrong_ca):
    with pytest.raises(PgError) as caught:
        Client(params(through_pooler(address), ssl_mode="verify-full", ssl_rootcert=wrong_ca))
    assert f"the TLS certificate of {address}:{POOLER_PORT} is not signed by the CA in ssl_rootcert {wrong_ca}" in str(caught.value)


@pytest.mark.parametrize("address", POOLERS)
def test_pgbouncer_servers_use_tls(lab, address):
    """SHOW SERVERS on the admin console: every server connection to PostgreSQL is TLS."""
    with Client(params(through_pooler(address))) as client:
        client.query("SELECT 1")  # makes sure the pool has a server connection
        with psycopg.connect(
            host=address, port=POOLER_PORT, user="pgbouncer_admin", password=LAB_PASSWORD, dbname="pgbouncer", autocommit=True
        ) as admin:
            cur = admin.cursor()
            cur.execute("SHOW SERVERS")
            columns = [c.name for c in cur.description]
            servers = [dict(zip(columns, row, strict=True)) for row in cur.fetchall() if row[columns.index("database")] == "novacron"]
    assert servers, f"PgBouncer {address} has no server connection to novacron"
    assert all(server["tls"] for server in servers), [(s["addr"], s["port"], s["tls"]) for s in servers]


# --- Redis ----------------------------------------------------------------------------------


def redis_tls(address: str, ca: str) -> redis.Redis:
    return redis.Redis(
        host=address,
        port=REDIS_TLS_PORT,
        password=LAB_PASSWORD,
        ssl=True,
        ssl_ca_certs=ca,
        ssl_cert_reqs="required",
        ssl_check_hostname=True,
        socket_timeout=5,
    )


@pytest.mark.parametrize("address", sorted(REDIS_TLS))
def test_redis_tls_listener_verifies_with_the_lab_ca(lab, address):
    client = redis_tls(address, LAB_CA)
    try:
        assert client.ping() is True
        assert client.info("replication")["role"] == REDIS_TLS[address]
        assert client.connection_pool.connection_kwargs["port"] == REDIS_TLS_PORT
    finally:
        client.close()


@pytest.mark.parametrize("address", sorted(REDIS_TLS))
def test_redis_tls_listener_refuses_a_wrong_ca(lab, address, wrong_ca):
    client = redis_tls(address, wrong_ca)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        client.ping()
    client.close()


def test_redis_tls_reads_what_the_plain_port_wrote(lab):
    """Same instance behind both listeners; the write on blue reaches green, read over TLS."""
    plain = redis.Redis(host=REDIS_BLUE_ADDRESS, port=REDIS_PORT, password=LAB_PASSWORD, socket_timeout=5)
    key = f"zdm:tls-test:{time.time_ns()}"
    try:
        plain.set(key, "over tls", ex=60)
        green = redis_tls(REDIS_GREEN_ADDRESS, LAB_CA)
        wait_for("the key to reach green", lambda: green.get(key) == b"over tls", timeout=10)
        green.close()
    finally:
        plain.delete(key)
        plain.close()


def test_python_ssl_rejects_the_lab_certificate_without_the_ca(lab):
    """Nothing trusts the lab's certificates by accident: the system's CAs do not."""
    context = ssl.create_default_context()
    with socket.create_connection((REDIS_BLUE_ADDRESS, REDIS_TLS_PORT), timeout=5) as sock, pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(sock, server_hostname=REDIS_BLUE_ADDRESS)
