"""The lab's RabbitMQ cluster as the seed runs it: three nodes on hosts of their own (mq-1's
rabbit@127.0.0.51, mq-2's rabbit2@127.0.0.52, mq-3's rabbit3@127.0.0.53, inventories/lab/hosts.yml), the
seed's vcenter_sync a quorum queue on all three, and AMQPS listeners with certificates of the lab CA.

The failover tests stop only the nodes the role added as instances (rabbit2, rabbit3) and start them
again, whatever happens; Debian's node rabbit@127.0.0.51 keeps running. Messages go through pika with
publisher confirms: a message counts as sent only once the cluster confirmed it.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pika
import pytest

from tests.lab import (
    LAB_PASSWORD,
    RABBITMQ_ADDRESS,
    RABBITMQ_FIRST_NODE,
    RABBITMQ_HOSTS,
    RABBITMQ_NODES,
    ROOT,
    converged_again,
    free_port,
    kill_outright,
    run_playbook,
    wait_for,
    write_wrong_ca,
)

ROLE_PLAY = [
    {"name": "Provision RabbitMQ", "hosts": "rabbitmq_servers", "become": True, "roles": [{"role": "zerodowntime.migration.rabbitmq"}]}
]
NODES = RABBITMQ_NODES
RABBIT2, RABBIT3 = list(NODES)[1:]
ADDED = {RABBIT2: "rabbitmq-server-rabbit2", RABBIT3: "rabbitmq-server-rabbit3"}  # nodes a test may stop
# a throwaway fourth node on 127.0.0.1, an address the machine's one epmd listens on (loopback)
RABBIT4 = "rabbit4@127.0.0.1"
LAB_CA = Path("/var/lib/zerodowntime/lab-ca/ca.crt")
CREDENTIALS = pika.PlainCredentials("admin", LAB_PASSWORD)
MESSAGES = 200


def management(path: str, address: str = RABBITMQ_ADDRESS):
    """GET from a node's management API as the admin user (the data is the cluster's)."""
    request = urllib.request.Request(f"http://{address}:15672/api{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{LAB_PASSWORD}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (fixed loopback URL)
        return json.loads(response.read())


def ctl(*argv: str, node: str = RABBITMQ_FIRST_NODE) -> str:
    argv = ["rabbitmqctl", "--longnames", "-n", node, "-q", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout


def running_nodes() -> set[str]:
    return {node["name"] for node in management("/nodes") if node["running"]}


def online_members(name: str) -> set[str]:
    """The quorum queue's members that are up (the node the API answers from reports them)."""
    data = management(f"/queues/%2F/{name}")
    return set(data.get("online", [])) if set(data.get("online", [])) == set(data.get("members", [])) else set()


def service(node: str, action: str) -> None:
    subprocess.run([f"/etc/init.d/{ADDED[node]}", action], check=True, capture_output=True, text=True, timeout=300)


def connect(address: str, **ssl_params) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(host=address, credentials=CREDENTIALS, connection_attempts=3, retry_delay=1, **ssl_params)
    )


def publish(channel, queue: str, ids: list[str]) -> None:
    """Publish persistent messages one by one; with confirm_delivery() pika raises on a nack or an
    unroutable message, so each message that returns was confirmed by the queue's quorum."""
    for message_id in ids:
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=message_id.encode(),
            properties=pika.BasicProperties(delivery_mode=2, message_id=message_id),
            mandatory=True,
        )


def drain(address: str, queue: str) -> list[str]:
    """Every message of the queue, consumed and acknowledged through the node at `address`."""
    got = []
    connection = connect(address)
    try:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue)
            if method is None:
                return got
            got.append(body.decode())
            channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def converged():
    run = run_playbook(ROLE_PLAY)
    assert run.status == "successful", run.stdout
    return run


@pytest.fixture()
def all_nodes_running_after(converged):
    """Whatever a test stops, the added nodes run again afterwards and are members once more."""
    yield
    for node in ADDED:
        service(node, "start")
    wait_for("three running nodes", lambda: running_nodes() == set(NODES), timeout=120)


# The cluster --------------------------------------------------------------------------------
def test_the_cluster_has_three_running_nodes(converged):
    assert running_nodes() == set(NODES)
    status = json.loads(ctl("cluster_status", "--formatter", "json"))
    assert sorted(status["disk_nodes"]) == sorted(NODES), status


def test_each_node_serves_its_own_address(converged):
    for node, address in NODES.items():
        assert management("/overview", address)["node"] == node


def test_vcenter_sync_is_a_quorum_queue_on_all_three(converged):
    data = management("/queues/%2F/vcenter_sync")
    assert data["type"] == "quorum"
    assert sorted(data["members"]) == sorted(NODES)
    assert sorted(data["online"]) == sorted(NODES)


def test_a_second_converge_joins_nothing(converged):
    run = converged_again(converged, ROLE_PLAY)
    assert run.status == "successful", run.stdout
    joins = run.task_results("Join the cluster (stop_app, reset, join_cluster, start_app)")
    assert all(result.get("skipped") for result in joins), joins
    for host in RABBITMQ_HOSTS:
        assert run.changed(host) == 0, (host, run.changed_tasks())


def test_vcenter_sync_survives_a_follower_stopped(all_nodes_running_after):
    """vcenter_sync's leader is Debian's node (it declared the queue); rabbit3, a follower, is
    stopped halfway through: the queue keeps confirming and delivering, none of the confirmed
    messages is lost, and rabbit3 comes back as a member."""
    assert management("/queues/%2F/vcenter_sync")["messages"] == 0, "vcenter_sync holds messages of someone else; empty it first"
    ids = [f"zdm_t_{number}_{uuid.uuid4().hex}" for number in range(MESSAGES)]
    connection = connect(NODES[RABBITMQ_FIRST_NODE])
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        publish(channel, "vcenter_sync", ids[: MESSAGES // 2])
        service(RABBIT3, "stop")
        assert RABBIT3 not in running_nodes()
        publish(channel, "vcenter_sync", ids[MESSAGES // 2 :])
    finally:
        connection.close()
    assert sorted(drain(NODES[RABBIT2], "vcenter_sync")) == sorted(ids)
    service(RABBIT3, "start")
    wait_for("rabbit3 back in vcenter_sync", lambda: online_members("vcenter_sync") == set(NODES), timeout=120)


def test_a_quorum_queue_survives_its_leader_stopped(all_nodes_running_after):
    """A quorum queue declared through rabbit2 has its leader there; rabbit2 is stopped halfway
    through: another member is elected, publishing and consuming go on, nothing confirmed is lost."""
    name = "zdm_t_quorum_failover"
    ids = [f"zdm_t_{number}_{uuid.uuid4().hex}" for number in range(MESSAGES)]
    connection = connect(NODES[RABBIT2])
    try:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
        channel.confirm_delivery()
        publish(channel, name, ids[: MESSAGES // 2])
    finally:
        connection.close()
    data = management(f"/queues/%2F/{name}")
    assert data["leader"] == RABBIT2 and sorted(data["members"]) == sorted(NODES), data
    try:
        service(RABBIT2, "stop")
        connection = connect(NODES[RABBITMQ_FIRST_NODE])
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            publish(channel, name, ids[MESSAGES // 2 :])
        finally:
            connection.close()
        leader = management(f"/queues/%2F/{name}")["leader"]
        assert leader in {RABBITMQ_FIRST_NODE, RABBIT3}, leader
        assert sorted(drain(NODES[RABBIT3], name)) == sorted(ids)
        service(RABBIT2, "start")
        wait_for("rabbit2 back in the queue", lambda: online_members(name) == set(NODES), timeout=120)
    finally:
        subprocess.run(["rabbitmqctl", "--longnames", "-q", "delete_queue", name], check=False, capture_output=True)


def test_a_node_killed_outright_starts_again_through_its_init_script(all_nodes_running_after):
    """SIGKILL leaves the node's pid file behind (the end of a session kills the lab this way);
    the init script starts the node again all the same and it rejoins the cluster."""
    pid_file = Path("/run/rabbitmq-rabbit3/pid")
    pid = int(pid_file.read_text().strip())
    kill_outright("rabbit3's VM", [pid], timeout=30)
    assert pid_file.exists()  # what the next start has to cope with
    service(RABBIT3, "start")
    wait_for("rabbit3 running again", lambda: running_nodes() == set(NODES), timeout=120)
    assert int(pid_file.read_text().strip()) != pid


@pytest.fixture()
def fourth_node(converged, tmp_path):
    """A throwaway fourth node (instance rabbit4 on 127.0.0.1, reached with a local connection) made
    by the role: the inventory source that adds it, and everything of it removed afterwards."""
    inventory = tmp_path / "rabbit4.yml"
    inventory.write_text(
        "rabbitmq_servers:\n  hosts:\n    zdm-t-rabbit4:\n      ansible_connection: local\n      ansible_host: 127.0.0.1\n"
        f"      rabbitmq_instance: rabbit4\n      rabbitmq_dist_port: {free_port()}\n"
        "      rabbitmq_tls_enabled: false\n      rabbitmq_prometheus_enabled: false\n"
    )
    yield f"-i {ROOT / 'inventories' / 'lab'} -i {inventory} --limit zdm-t-rabbit4"
    subprocess.run(["rabbitmqctl", "--longnames", "-n", RABBIT4, "-q", "stop_app"], check=False, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "--longnames", "-n", RABBIT4, "-q", "reset"], check=False, capture_output=True, timeout=120)
    # the init script takes a node whose app is stopped for a stopped node: stop the Erlang VM itself
    subprocess.run(["rabbitmqctl", "--longnames", "-n", RABBIT4, "-q", "stop"], check=False, capture_output=True, timeout=300)
    subprocess.run(["rabbitmqctl", "--longnames", "-q", "forget_cluster_node", RABBIT4], check=False, capture_output=True, timeout=120)
    for path in ("/etc/rabbitmq/rabbit4", "/var/lib/rabbitmq/rabbit4", "/var/log/rabbitmq/rabbit4", "/run/rabbitmq-rabbit4"):
        shutil.rmtree(path, ignore_errors=True)
    Path("/etc/init.d/rabbitmq-server-rabbit4").unlink(missing_ok=True)
    assert running_nodes() == set(NODES)


def test_a_node_with_data_of_its_own_is_not_reset(fourth_node):
    """A node that runs on its own and holds users and queues is refused when it is told to join,
    naming what it holds and the fix, and keeps it; with rabbitmq_cluster_force_reset it joins."""
    alone = run_playbook(ROLE_PLAY, cmdline=fourth_node)  # its own cluster: it declares the users and queues
    assert alone.status == "successful", alone.stdout
    assert RABBIT4 not in running_nodes()

    refused = run_playbook(ROLE_PLAY, cmdline=fourth_node, extravars={"rabbitmq_cluster_join": RABBITMQ_FIRST_NODE})
    assert refused.status == "failed"
    (result,) = refused.task_results("Refuse to reset a node that holds data of its own")
    assert "users admin, novacron" in result["msg"] and "queues " in result["msg"], result["msg"]
    assert "rabbitmq_cluster_force_reset: true" in result["msg"], result["msg"]
    assert "vcenter_sync" in ctl("list_queues", "name", node=RABBIT4)
    assert RABBIT4 not in running_nodes()

    forced = run_playbook(
        ROLE_PLAY, cmdline=fourth_node, extravars={"rabbitmq_cluster_join": RABBITMQ_FIRST_NODE, "rabbitmq_cluster_force_reset": True}
    )
    assert forced.status == "successful", forced.stdout
    assert running_nodes() == {*NODES, RABBIT4}


# TLS ----------------------------------------------------------------------------------------
def tls_context(cafile: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = True
    return context


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory) -> Path:
    """A throwaway CA that signed none of the nodes' certificates."""
    return write_wrong_ca(tmp_path_factory.mktemp("wrong-ca"))


@pytest.mark.parametrize("address", list(NODES.values()))
def test_a_client_trusting_the_lab_ca_speaks_amqp_over_tls(converged, address):
    connection = connect(address, port=5671, ssl_options=pika.SSLOptions(tls_context(LAB_CA), server_hostname=address))
    try:
        channel = connection.channel()
        declared = channel.queue_declare("vcenter_sync", passive=True)
        assert declared.method.queue == "vcenter_sync"
    finally:
        connection.close()


@pytest.mark.parametrize("address", list(NODES.values()))
def test_the_certificate_names_the_node_address(converged, address):
    with socket.create_connection((address, 5671), timeout=10) as raw, tls_context(LAB_CA).wrap_socket(raw, server_hostname=address) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("address", list(NODES.values()))
def test_a_client_with_another_ca_is_refused(converged, wrong_ca, address):
    with socket.create_connection((address, 5671), timeout=10) as raw, pytest.raises(ssl.SSLCertVerificationError):
        tls_context(wrong_ca).wrap_socket(raw, server_hostname=address)
    # pika gives up after its connection attempts and raises the handshake's error itself
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        connect(address, port=5671, ssl_options=pika.SSLOptions(tls_context(wrong_ca), server_hostname=address))


def test_the_lab_ca_is_the_shared_one(converged):
    """Made once at the agreed place; the role installs that very certificate on each node."""
    assert LAB_CA.with_name("ca.key").stat().st_mode & 0o077 == 0
    for conf_dir in ("/etc/rabbitmq", "/etc/rabbitmq/rabbit2", "/etc/rabbitmq/rabbit3"):  # mq-1 (Debian's), mq-2, mq-3
        assert (Path(conf_dir) / "tls" / "ca.crt").read_bytes() == LAB_CA.read_bytes()
