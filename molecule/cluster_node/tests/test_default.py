"""testinfra checks of roles/cluster_node and raft_bootstrap after molecule's converge: three
members over TLS, one cluster, the package's default member gone."""

import json

PKI = "/etc/etcd/pki"


def member(host):
    variables = host.ansible.get_variables()
    return variables["inventory_hostname"], variables["cluster_node_client_port"]


def etcdctl(host, name, port, *args):
    tls = f"--cacert {PKI}/ca.crt --cert {PKI}/{name}.crt --key {PKI}/{name}.key"
    return host.run(f"ETCDCTL_API=3 etcdctl --endpoints https://127.0.0.1:{port} {tls} -w json {' '.join(args)}")


def test_member_settings_and_init_script_are_the_roles(host):
    name, port = member(host)
    env = host.file(f"/etc/etcd/{name}.env")
    assert env.mode == 0o640 and env.group == "etcd"
    assert f"ETCD_ADVERTISE_CLIENT_URLS=https://127.0.0.1:{port}" in env.content_string
    assert f"ETCD_CERT_FILE={PKI}/{name}.crt" in env.content_string
    assert "ETCD_CLIENT_CERT_AUTH=true" in env.content_string
    assert "ETCD_INITIAL_CLUSTER" not in env.content_string  # raft_bootstrap passes those
    assert host.file(f"/etc/init.d/etcd-{name}").mode == 0o755
    assert host.file(f"/var/lib/etcd/{name}").user == "etcd"
    assert host.file(f"/var/lib/etcd/{name}").mode == 0o700
    assert host.file(f"{PKI}/{name}.key").mode == 0o640


def test_member_runs_and_listens(host):
    name, port = member(host)
    assert host.run(f"/etc/init.d/etcd-{name} status").rc == 0
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert host.socket(f"tcp://127.0.0.1:{port + 1}").is_listening


def test_one_cluster_of_three_over_tls(host):
    name, port = member(host)
    health = etcdctl(host, name, port, "endpoint health")
    assert health.rc == 0, health.stderr
    listed = json.loads(etcdctl(host, name, port, "member list").stdout)
    assert sorted(m["name"] for m in listed["members"]) == ["mol-etcd1", "mol-etcd2", "mol-etcd3"]
    assert all(url.startswith("https://") for m in listed["members"] for url in m["peerURLs"])


def status_over_tls(host, port, cert=None):
    """POST /v3/maintenance/status with Python's TLS client, with or without a client certificate."""
    load = f"context.load_cert_chain('{PKI}/{cert}.crt', '{PKI}/{cert}.key'); " if cert else ""
    probe = (
        "import ssl, urllib.request; "
        f"context = ssl.create_default_context(cafile='{PKI}/ca.crt'); {load}"
        f"urllib.request.urlopen(urllib.request.Request('https://127.0.0.1:{port}/v3/maintenance/status', data=b'{{}}'), "
        "context=context, timeout=5)"
    )
    return host.run(f'python3 -c "{probe}"')


def test_a_client_needs_a_certificate_of_the_clusters_ca(host):
    name, port = member(host)
    assert status_over_tls(host, port, cert=name).rc == 0
    anonymous = status_over_tls(host, port)
    assert anonymous.rc != 0
    assert "ssl" in anonymous.stderr.lower()  # the TLS handshake is refused, not the request


def test_the_packages_default_member_is_gone(host):
    assert not host.file("/var/lib/etcd/default").exists
    assert host.run("/etc/init.d/etcd status").rc != 0
