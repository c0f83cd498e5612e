"""roles/postgresql's layout of a host's instances (plugins/plugin_utils/pg_layout.py): the lab's
paths unchanged by default, per-instance sockets and certificates when asked, and the members
that would collide on one machine refused by name."""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.filter.pg import FilterModule
from ansible_collections.zerodowntime.migration.plugins.plugin_utils.pg_layout import (
    per_instance_path,
    pg_instance_certificates,
    pg_instance_conflicts,
    pg_instance_layout,
    subject_alt_names,
)

LAB = [{"name": "blue", "port": 5433}, {"name": "green", "port": 5434}]
LAB_REPLICAS = [{"name": "green_r1", "port": 5435, "replica_of": {"name": "green"}}]
TLS = {"ssl_cert_file": "/etc/zerodowntime/tls/postgresql.crt", "ssl_key_file": "/etc/zerodowntime/tls/postgresql.key"}
SHARED_PORT = [
    {"name": "zdmaddr_a", "port": 5432, "listen_addresses": "127.0.0.71"},
    {"name": "zdmaddr_b", "port": 5432, "listen_addresses": "127.0.0.72"},
]


def test_the_lab_keeps_its_paths():
    layout = pg_instance_layout(LAB, LAB_REPLICAS, version=15, listen_addresses="127.0.0.1", **TLS)
    assert list(layout) == ["blue", "green", "green_r1"]
    for name, member in layout.items():
        assert member["socket_dir"] == "/var/run/postgresql"
        assert member["data_dir"] == f"/var/lib/postgresql/15/{name}"
        assert member["ssl_cert_file"] == TLS["ssl_cert_file"]
        assert member["ssl_key_file"] == TLS["ssl_key_file"]
        assert member["ssl_subject_alt_names"] is None
    assert (layout["green_r1"]["primary_host"], layout["green_r1"]["primary_port"]) == ("127.0.0.1", 5434)
    assert pg_instance_certificates(layout) == [
        {
            "cert_file": TLS["ssl_cert_file"],
            "key_file": TLS["ssl_key_file"],
            "members": ["blue", "green", "green_r1"],
            "subject_alt_names": None,
        }
    ]
    assert pg_instance_conflicts(LAB, LAB_REPLICAS, listen_addresses="127.0.0.1") == []


def test_per_instance_sockets_and_certificates():
    replica = {"name": "zdmaddr_a_r1", "port": 5432, "listen_addresses": "127.0.0.73", "replica_of": {"name": "zdmaddr_a"}}
    layout = pg_instance_layout(SHARED_PORT, [replica], socket_dir_per_instance=True, ssl_per_instance=True, **TLS)
    assert [member["socket_dir"] for member in layout.values()] == [
        "/var/run/postgresql/zdmaddr_a",
        "/var/run/postgresql/zdmaddr_b",
        "/var/run/postgresql/zdmaddr_a_r1",
    ]
    assert layout["zdmaddr_b"]["ssl_cert_file"] == "/etc/zerodowntime/tls/postgresql-zdmaddr_b.crt"
    assert layout["zdmaddr_b"]["ssl_key_file"] == "/etc/zerodowntime/tls/postgresql-zdmaddr_b.key"
    assert layout["zdmaddr_a_r1"]["primary_host"] == "127.0.0.71"
    certificates = pg_instance_certificates(layout)
    assert [(c["members"], c["subject_alt_names"]) for c in certificates] == [
        (["zdmaddr_a"], ["IP:127.0.0.71"]),
        (["zdmaddr_b"], ["IP:127.0.0.72"]),
        (["zdmaddr_a_r1"], ["IP:127.0.0.73"]),
    ]
    assert pg_instance_conflicts(SHARED_PORT, [replica], socket_dir_per_instance=True) == []


def test_an_instance_socket_dir_wins():
    layout = pg_instance_layout([dict(SHARED_PORT[0], socket_dir="/run/pg-a")], socket_dir_per_instance=True)
    assert layout["zdmaddr_a"]["socket_dir"] == "/run/pg-a"


def test_names_for_a_certificate():
    assert per_instance_path("/etc/tls/postgresql.crt", "blue") == "/etc/tls/postgresql-blue.crt"
    assert per_instance_path("/etc/tls/server", "blue") == "/etc/tls/server-blue"
    assert subject_alt_names("127.0.0.71, db.example.com") == ["IP:127.0.0.71", "DNS:db.example.com"]
    assert subject_alt_names("localhost") == ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    assert subject_alt_names("*") is None
    assert subject_alt_names("127.0.0.71,0.0.0.0") is None


def test_same_address_and_port_is_refused_naming_both():
    same = [dict(SHARED_PORT[0]), dict(SHARED_PORT[1], listen_addresses="127.0.0.71")]
    [problem] = pg_instance_conflicts(same, socket_dir_per_instance=True)
    assert problem.startswith("instance zdmaddr_a and instance zdmaddr_b would both listen on port 5432 of 127.0.0.71")
    assert "own address (listen_addresses) or its own port" in problem


def test_a_shared_socket_is_refused_naming_the_fix():
    [problem] = pg_instance_conflicts(SHARED_PORT)
    assert "instance zdmaddr_a and instance zdmaddr_b would share the unix socket /var/run/postgresql/.s.PGSQL.5432" in problem
    assert "postgresql_socket_dir_per_instance: true" in problem


def test_wildcards_and_localhost_overlap():
    wildcard = [dict(SHARED_PORT[0]), dict(SHARED_PORT[1], listen_addresses="*")]
    assert "port 5432 of 127.0.0.71" in pg_instance_conflicts(wildcard, socket_dir_per_instance=True)[0]
    ipv6_only = [dict(SHARED_PORT[0]), dict(SHARED_PORT[1], listen_addresses="::")]
    assert pg_instance_conflicts(ipv6_only, socket_dir_per_instance=True) == []
    local = [dict(SHARED_PORT[0], listen_addresses="localhost"), dict(SHARED_PORT[1], listen_addresses="::1")]
    assert "port 5432 of ::1" in pg_instance_conflicts(local, socket_dir_per_instance=True)[0]
    both = [dict(SHARED_PORT[0], listen_addresses="0.0.0.0"), dict(SHARED_PORT[1], listen_addresses="*")]  # noqa: S104
    assert "port 5432 of every IPv4 address" in pg_instance_conflicts(both, socket_dir_per_instance=True)[0]


def test_a_replica_name_and_data_directory_are_checked_too():
    replica = {"name": "zdmaddr_a", "port": 5433, "listen_addresses": "127.0.0.73", "replica_of": {"name": "zdmaddr_b"}}
    problems = pg_instance_conflicts(SHARED_PORT, [replica], socket_dir_per_instance=True)
    assert problems == [
        "instance zdmaddr_a and replica zdmaddr_a have the same name: an instance's name keeps its configuration, "
        "data, socket, pid file and log apart; rename one."
    ]
    shared_data = [SHARED_PORT[0], dict(SHARED_PORT[1], data_dir="/var/lib/postgresql/15/zdmaddr_a")]
    [problem] = pg_instance_conflicts(shared_data, socket_dir_per_instance=True)
    assert "would share the data directory /var/lib/postgresql/15/zdmaddr_a" in problem


def test_the_filters_are_registered():
    filters = FilterModule().filters()
    layout = filters["pg_instance_layout"](LAB, LAB_REPLICAS)
    assert filters["pg_instance_certificates"](layout)[0]["members"] == ["blue", "green", "green_r1"]
    assert filters["pg_instance_conflicts"](SHARED_PORT) != []
