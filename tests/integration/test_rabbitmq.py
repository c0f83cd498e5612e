"""roles/rabbitmq and zerodowntime.migration.rabbitmq_queue against the RabbitMQ 3.10 the role
installs on the lab's RabbitMQ hosts: mq-1's node rabbit@127.0.0.51 (Debian's; AMQP 127.0.0.51:5672,
management API 127.0.0.51:15672, Prometheus :15692), the first of the lab's three-node cluster (the
cluster and TLS are tested in test_rabbitmq_cluster.py).

The module tests declare queues of their own (named `zdm_t_...` in vhost /) and delete them
afterwards, so they do not touch the seed's queues or other people's.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.lab import LAB_PASSWORD, RABBITMQ_ADDRESS, RABBITMQ_API, RABBITMQ_HOSTS, ROOT, converged_again, run_module, run_playbook

MODULE = "zerodowntime.migration.rabbitmq_queue"
API = RABBITMQ_API
ADMIN = ("admin", LAB_PASSWORD)
LOGIN = {"login_host": RABBITMQ_ADDRESS, "login_port": 15672, "login_user": "admin", "login_password": LAB_PASSWORD}
ROLE_PLAY = [
    {
        "name": "Provision RabbitMQ",
        "hosts": "rabbitmq_servers",
        "become": True,
        "roles": [{"role": "zerodowntime.migration.rabbitmq"}],
    }
]


def inventory_flags() -> str | None:
    """The lab inventory gets the rabbitmq_servers group in hosts.yml; until it has it, a second
    inventory source adds the group (inventories/lab/group_vars/rabbitmq_servers.yml still applies)."""
    if "rabbitmq_servers" in (ROOT / "inventories" / "lab" / "hosts.yml").read_text():
        return None
    extra = Path(tempfile.gettempdir()) / "zdm-rabbitmq-servers.yml"
    extra.write_text("rabbitmq_servers:\n  hosts:\n    mq-1:\n")
    return f"-i {extra}"


def api(method: str, path: str, body=None, auth=ADMIN, timeout: float = 10):
    """(status, decoded JSON) of one management API call."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(API + path, method=method, data=data)  # noqa: S310 (fixed http:// URL of the lab)
    request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (fixed http:// URL of the lab)
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def queue(name: str, vhost: str = "/") -> dict | None:
    status, data = api("GET", f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
    return data if status == 200 else None


def delete_queue(name: str, vhost: str = "/") -> None:
    api("DELETE", f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")


def publish(name: str, payload: str = "hello") -> None:
    status, data = api(
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        {"properties": {"delivery_mode": 2}, "routing_key": name, "payload": payload, "payload_encoding": "string"},
    )
    assert status == 200 and data["routed"], data


def wait_for_messages(name: str, count: int, timeout: float = 30) -> None:
    """The API's message counts come from statistics emitted every few seconds."""
    deadline = time.monotonic() + timeout
    while (queue(name) or {}).get("messages") != count:
        assert time.monotonic() < deadline, f"{name} did not show {count} message(s): {queue(name)}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def converged():
    """The role converged, and converged again unless that was a second converge already
    (converged_again): the second run must change nothing."""
    first = run_playbook(ROLE_PLAY, cmdline=inventory_flags())
    assert first.status == "successful", first.stdout
    second = converged_again(first, ROLE_PLAY, cmdline=inventory_flags())
    assert second.status == "successful", second.stdout
    return first, second


@pytest.fixture()
def scratch(converged):
    """Queue names of a test's own, deleted before and after."""
    names = []

    def make(suffix: str) -> str:
        name = f"zdm_t_{suffix}"
        delete_queue(name)
        names.append(name)
        return name

    yield make
    for name in names:
        delete_queue(name)


# The role -------------------------------------------------------------------------------------
def test_second_converge_changes_nothing(converged):
    _first, second = converged
    for host in RABBITMQ_HOSTS:
        assert second.changed(host) == 0, (host, second.changed_tasks())


def test_no_password_in_the_output(converged):
    for run in converged:
        assert LAB_PASSWORD not in run.stdout


def test_listeners_are_on_loopback_only(converged):
    """Each node on its own host's address, every listener on its standard port: AMQP, AMQPS,
    management, Prometheus; nothing left on 127.0.0.1 (the layout before the hosts of their own).
    The Erlang distribution on the node's address too, one port each (RabbitMQ checks the port on
    every address of the machine). epmd: the machine's one, on the three addresses and loopback."""
    listening = subprocess.run(["ss", "-Hltn"], check=True, capture_output=True, text=True).stdout.split("\n")
    nodes = set(RABBITMQ_HOSTS.values())
    for port in (5672, 5671, 15672, 15692):
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening if line and line.split()[3].endswith(f":{port}")}
        assert addresses == nodes, (port, addresses)
    for port, address in zip((25672, 25673, 25674), sorted(nodes), strict=True):
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening if line and line.split()[3].endswith(f":{port}")}
        assert addresses == {address}, (port, addresses)
    epmd = {line.split()[3].rsplit(":", 1)[0] for line in listening if line and line.split()[3].endswith(":4369")}
    assert epmd - {"[::1]"} == nodes | {"127.0.0.1"}, epmd


def test_management_api_is_healthy(converged):
    assert api("GET", "/api/health/checks/alarms") == (200, {"status": "ok"})
    assert api("GET", "/api/health/checks/virtual-hosts") == (200, {"status": "ok"})
    assert api("GET", "/api/aliveness-test/%2F") == (200, {"status": "ok"})


def test_prometheus_endpoint_answers(converged):
    with urllib.request.urlopen(f"http://{RABBITMQ_ADDRESS}:15692/metrics", timeout=10) as response:
        assert b"rabbitmq_queue_messages" in response.read()


def test_guest_may_log_in_from_localhost_only(converged):
    assert "loopback_users.guest = true" in Path("/etc/rabbitmq/rabbitmq.conf").read_text()
    loopback = subprocess.run(
        ["rabbitmqctl", "-q", "eval", "application:get_env(rabbit, loopback_users)."], check=True, capture_output=True, text=True
    ).stdout
    assert '<<"guest">>' in loopback
    status = api("GET", "/api/whoami", auth=("guest", "guest"))[0]
    assert status == 200  # from this machine (a loopback address) it is allowed


def test_admin_and_application_users(converged):
    status, me = api("GET", "/api/whoami")
    assert status == 200 and "administrator" in str(me["tags"])
    status, permissions = api("GET", "/api/permissions/%2F/novacron")
    assert status == 200 and permissions["configure"] == ".*"
    assert api("GET", "/api/whoami", auth=("novacron", "wrong"))[0] == 401


def test_seed_queues_exist_with_their_arguments(converged):
    sync = queue("vcenter_sync")
    assert sync["durable"] is True and sync["auto_delete"] is False
    assert sync["arguments"] == {
        "x-queue-type": "quorum",
        "x-quorum-initial-group-size": 3,
        "x-message-ttl": 3600000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "vcenter_sync_dlq",
    }
    dlq = queue("vcenter_sync_dlq")
    assert dlq["durable"] is True and dlq["arguments"] == {"x-queue-type": "classic"}


# The module -----------------------------------------------------------------------------------
def test_create_then_idempotent(scratch):
    name = scratch("create")
    args = dict(LOGIN, name=name, max_priority=5, message_ttl=60000, max_length=100, arguments={"x-overflow": "reject-publish"})
    result = run_module(MODULE, args)[1]
    assert result["changed"] is True and not result["failed"], result
    assert result["queries"] == [f"PUT /api/queues/%2F/{name}"]
    assert queue(name)["arguments"] == {
        "x-queue-type": "classic",
        "x-max-priority": 5,
        "x-message-ttl": 60000,
        "x-max-length": 100,
        "x-overflow": "reject-publish",
    }
    again = run_module(MODULE, args)[1]
    assert again["changed"] is False and not again["failed"], again
    assert again["queries"] == []


def test_check_mode_creates_nothing(scratch):
    name = scratch("check")
    result = run_module(MODULE, dict(LOGIN, name=name, type="quorum"), check=True)[1]
    assert result["changed"] is True and not result["failed"], result
    assert result["queue"]["arguments"] == {"x-queue-type": "quorum"}
    assert queue(name) is None


def test_diff_shows_the_declaration(scratch):
    name = scratch("diff")
    result = run_module(MODULE, dict(LOGIN, name=name, message_ttl=1000), diff=True)[1]
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["arguments"] == {"x-queue-type": "classic", "x-message-ttl": 1000}


def test_drift_in_queue_type_is_an_error_naming_it(scratch):
    name = scratch("drift_type")
    run_module(MODULE, dict(LOGIN, name=name))
    result = run_module(MODULE, dict(LOGIN, name=name, type="quorum"))[1]
    assert result["failed"] and result["changed"] is False
    assert 'x-queue-type: have "classic", want "quorum"' in result["msg"], result["msg"]
    assert "recreate" in result["msg"]
    assert result["differences"] == {"x-queue-type": {"have": "classic", "want": "quorum"}}
    assert queue(name)["type"] == "classic"


def test_drift_in_ttl_is_an_error_naming_it(scratch):
    name = scratch("drift_ttl")
    run_module(MODULE, dict(LOGIN, name=name, message_ttl=1000))
    result = run_module(MODULE, dict(LOGIN, name=name, message_ttl=2000))[1]
    assert result["failed"]
    assert "x-message-ttl: have 1000, want 2000" in result["msg"], result["msg"]
    missing = run_module(MODULE, dict(LOGIN, name=name))[1]
    assert missing["failed"] and "x-message-ttl: have 1000, want (not set)" in missing["msg"], missing["msg"]
    assert queue(name)["arguments"]["x-message-ttl"] == 1000


def test_recreate_refused_while_messages_wait(scratch):
    name = scratch("recreate_full")
    run_module(MODULE, dict(LOGIN, name=name, message_ttl=600000))
    publish(name)
    wait_for_messages(name, 1)
    result = run_module(MODULE, dict(LOGIN, name=name, message_ttl=1000, recreate=True))[1]
    assert result["failed"] and result["changed"] is False
    assert "holds 1 message(s)" in result["msg"] and "x-message-ttl" in result["msg"], result["msg"]
    after = queue(name)
    assert after["arguments"]["x-message-ttl"] == 600000 and after["messages"] == 1
    absent = run_module(MODULE, dict(LOGIN, name=name, state="absent"))[1]
    assert absent["failed"] and "holds 1 message(s)" in absent["msg"]
    assert queue(name) is not None


def test_recreate_when_empty(scratch):
    name = scratch("recreate_empty")
    run_module(MODULE, dict(LOGIN, name=name, message_ttl=1000))
    checked = run_module(MODULE, dict(LOGIN, name=name, type="quorum", recreate=True), check=True, diff=True)[1]
    assert checked["changed"] is True and not checked["failed"], checked
    assert checked["diff"]["before"]["arguments"]["x-queue-type"] == "classic"
    assert checked["diff"]["after"]["arguments"] == {"x-queue-type": "quorum"}
    assert queue(name)["type"] == "classic"  # check mode changed nothing
    result = run_module(MODULE, dict(LOGIN, name=name, type="quorum", recreate=True))[1]
    assert result["changed"] is True and not result["failed"], result
    assert result["queries"] == [f"DELETE /api/queues/%2F/{name}?if-empty=true", f"PUT /api/queues/%2F/{name}"]
    assert queue(name)["type"] == "quorum" and "x-message-ttl" not in queue(name)["arguments"]
    again = run_module(MODULE, dict(LOGIN, name=name, type="quorum", recreate=True))[1]
    assert again["changed"] is False


def test_absent_deletes_an_empty_queue(scratch):
    name = scratch("absent")
    run_module(MODULE, dict(LOGIN, name=name))
    checked = run_module(MODULE, dict(LOGIN, name=name, state="absent"), check=True)[1]
    assert checked["changed"] is True and queue(name) is not None
    result = run_module(MODULE, dict(LOGIN, name=name, state="absent"))[1]
    assert result["changed"] is True and queue(name) is None
    again = run_module(MODULE, dict(LOGIN, name=name, state="absent"))[1]
    assert again["changed"] is False and not again["failed"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("zdm_t/slash", "contains '/'"), ("amq.zdm_t", "reserves"), ("x" * 256, "255 bytes")],
)
def test_bad_names_are_refused(converged, name, expected):
    result = run_module(MODULE, dict(LOGIN, name=name))[1]
    assert result["failed"] and expected in result["msg"], result["msg"]
    assert result["queries"] == []


def all_queues() -> list[tuple[str, str, bool, dict]]:
    status, data = api("GET", "/api/queues?columns=name,vhost,durable,arguments")
    assert status == 200 and isinstance(data, list), data
    return sorted((q["vhost"], q["name"], q["durable"], json.dumps(q.get("arguments"), sort_keys=True)) for q in data)


@pytest.mark.parametrize("name", [".", ".."])
@pytest.mark.parametrize(("state", "check"), [("present", False), ("present", True), ("absent", False), ("absent", True)])
def test_dot_queue_names_are_refused_and_change_nothing(converged, name, state, check):
    """`.` and `..` are not percent-encoded and the API resolves them: GET /api/queues/%2F/.. is the
    list of every queue, which the module once took for one queue ('list' object has no attribute 'get')."""
    before = all_queues()
    result = run_module(MODULE, dict(LOGIN, name=name, state=state), check=check)[1]
    assert result["failed"] and not result.get("changed"), result
    assert f"queue name {name!r}" in result["msg"] and "dot segment" in result["msg"], result["msg"]
    assert "Use another queue name" in result["msg"] and "has no attribute" not in result["msg"], result["msg"]
    assert result["queries"] == []
    assert all_queues() == before


@pytest.mark.parametrize("vhost", [".", ".."])
def test_dot_vhost_names_are_refused_and_change_nothing(scratch, vhost):
    name = scratch("dot_vhost")
    before = all_queues()
    result = run_module(MODULE, dict(LOGIN, name=name, vhost=vhost))[1]
    assert result["failed"] and f"vhost name {vhost!r}" in result["msg"] and "dot segment" in result["msg"], result["msg"]
    assert result["queries"] == []
    assert all_queues() == before and queue(name) is None


def test_a_path_prefix_with_dot_segments_is_refused(scratch):
    """path_prefix '/api/..' would make every request reach another URL than the one built."""
    name = scratch("dot_prefix")
    result = run_module(MODULE, dict(LOGIN, name=name, path_prefix="/x/.."))[1]
    assert result["failed"] and "path_prefix '/x/..'" in result["msg"] and "'..'" in result["msg"], result["msg"]
    assert queue(name) is None


def test_a_queue_with_dots_inside_its_name_works(scratch):
    name = scratch("dotted.name.")
    first = run_module(MODULE, dict(LOGIN, name=name))[1]
    assert first["changed"] and not first["failed"], first
    assert queue(name)["name"] == name
    again = run_module(MODULE, dict(LOGIN, name=name))[1]
    assert again["changed"] is False and not again["failed"], again


def test_conflicting_argument_and_option(scratch):
    name = scratch("conflict")
    result = run_module(MODULE, dict(LOGIN, name=name, message_ttl=10, arguments={"x-message-ttl": 20}))[1]
    assert result["failed"] and "message_ttl" in result["msg"] and "one place" in result["msg"]
    assert queue(name) is None


def test_quorum_queue_must_be_durable(scratch):
    name = scratch("quorum_transient")
    result = run_module(MODULE, dict(LOGIN, name=name, type="quorum", durable=False))[1]
    assert result["failed"] and "must be durable" in result["msg"]
    assert queue(name) is None


def test_unknown_vhost_is_named_with_the_fix(scratch):
    name = scratch("vhost")
    result = run_module(MODULE, dict(LOGIN, name=name, vhost="zdm_no_such_vhost"))[1]
    assert result["failed"]
    assert "'zdm_no_such_vhost' does not exist" in result["msg"] and "add_vhost" in result["msg"], result["msg"]


def test_wrong_password_is_explained_without_it(scratch):
    name = scratch("password")
    result = run_module(MODULE, dict(LOGIN, name=name, login_password="not-the-password-42"))[1]
    assert result["failed"] and "401" in result["msg"] and "login_password" in result["msg"], result["msg"]
    assert "not-the-password-42" not in json.dumps(result)
    assert queue(name) is None


def test_unreachable_api_names_host_port_and_timeout(converged):
    result = run_module(MODULE, dict(LOGIN, name="zdm_t_unreachable", login_port=1, timeout=3))[1]
    assert result["failed"]
    assert f"{RABBITMQ_ADDRESS}:1" in result["msg"] and "3.0 s timeout" in result["msg"], result["msg"]


def test_role_check_mode_changes_nothing(converged):
    extravars = {
        "rabbitmq_vhosts": ["zdm_t_check_vhost"],
        "rabbitmq_users": [{"name": "zdm_t_check_user", "password": "check-secret", "permissions": [{"vhost": "/"}]}],
        "rabbitmq_policies": [{"name": "zdm_t_check_policy", "pattern": "^zdm_t_$", "definition": {"max-length": 1}}],
        "rabbitmq_queues": [{"name": "zdm_t_check_queue"}, {"name": "zdm_t_check_queue", "vhost": "zdm_t_check_vhost"}],
    }
    run = run_playbook(ROLE_PLAY, extravars=extravars, cmdline=" ".join(filter(None, [inventory_flags(), "--check"])))
    assert run.status == "successful", run.stdout
    assert "Declare the queues" in run.changed_tasks()
    assert api("GET", "/api/vhosts/zdm_t_check_vhost")[0] == 404
    assert api("GET", "/api/users/zdm_t_check_user")[0] == 404
    assert api("GET", "/api/policies/%2F/zdm_t_check_policy")[0] == 404
    assert queue("zdm_t_check_queue") is None


def test_role_sets_a_changed_password_back(converged):
    subprocess.run(
        ["rabbitmqctl", "-q", "change_password", "novacron"], input="drifted-password\n", check=True, capture_output=True, text=True
    )
    assert api("GET", "/api/whoami", auth=("novacron", LAB_PASSWORD))[0] == 401
    run = run_playbook(ROLE_PLAY, cmdline=inventory_flags())
    assert run.status == "successful", run.stdout
    assert run.changed() == 1, run.stdout  # the password (the task's result is censored: no_log)
    status, body = api("GET", "/api/whoami", auth=("novacron", LAB_PASSWORD))
    assert status == 200 or (status == 401 and "Not management user" in str(body)), body  # authenticated, no management tag


def test_role_refuses_a_queue_name_with_a_slash(converged):
    run = run_playbook(ROLE_PLAY, extravars={"rabbitmq_queues": [{"name": "zdm_t/bad"}]}, cmdline=inventory_flags())
    assert run.status == "failed"
    results = run.task_results("Check the platform and the variables")
    assert len(results) == 3, results  # each of the cluster's nodes refuses it
    for result in results:
        assert result["failed"] and "queue names must not contain '/'" in result["msg"], result
    for host in RABBITMQ_HOSTS:
        assert run.changed(host) == 0, host
