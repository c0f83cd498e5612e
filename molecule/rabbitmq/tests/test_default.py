"""testinfra checks of roles/rabbitmq after molecule's converge (instance molecule, vhost molecule)."""

import json

NODE = "molecule@127.0.0.1"
CONF_DIR = "/etc/rabbitmq/molecule"


def ctl(host, *args):
    return json.loads(host.check_output(f"rabbitmqctl --longnames -n {NODE} -q " + " ".join(args) + " --formatter json"))


def test_listeners_on_loopback(host):
    for port in (5682, 15682, 15702, 25682):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_configuration(host):
    conf = host.file(f"{CONF_DIR}/rabbitmq.conf")
    assert "loopback_users.guest = true" in conf.content_string
    assert "management.tcp.ip = 127.0.0.1" in conf.content_string
    assert "rabbitmq_management" in host.file(f"{CONF_DIR}/enabled_plugins").content_string
    env = host.file(f"{CONF_DIR}/rabbitmq-env.conf").content_string
    assert f"NODENAME={NODE}" in env and "USE_LONGNAME=true" in env


def test_users_vhost_permissions(host):
    users = {user["user"]: user["tags"] for user in ctl(host, "list_users")}
    assert users["molecule_admin"] == ["administrator"]
    assert users["molecule_app"] == ["monitoring"]
    assert {"name": "molecule"} in ctl(host, "list_vhosts")
    permissions = {p["user"]: p for p in ctl(host, "list_permissions", "-p", "molecule")}
    assert permissions["molecule_app"]["configure"] == "^molecule\\."
    assert permissions["molecule_admin"]["write"] == ".*"


def test_policy(host):
    (policy,) = ctl(host, "list_policies", "-p", "molecule")
    assert policy["name"] == "molecule_limit" and policy["apply-to"] == "queues"
    assert json.loads(policy["definition"]) == {"max-length": 1000}


def test_queues(host):
    queues = {q["name"]: q for q in ctl(host, "list_queues", "-p", "molecule", "name", "durable", "arguments", "type")}
    assert queues["molecule.quorum"]["type"] == "quorum"
    work = queues["molecule.work"]
    assert work["durable"] is True
    arguments = {name: value for name, _type, value in work["arguments"]}  # rabbitmqctl: [name, AMQP type, value]
    assert arguments == {
        "x-queue-type": "classic",
        "x-max-priority": 10,
        "x-message-ttl": 3600000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "molecule.dlq",
    }
