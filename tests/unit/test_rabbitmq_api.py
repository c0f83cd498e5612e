"""module_utils/rabbitmq_api without a broker: names, arguments, differences, and the API client
with a fake opener (errors explained, check mode sends nothing)."""

from __future__ import annotations

import io
import json
from urllib.error import HTTPError, URLError

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.rabbitmq_api import (
    ManagementApi,
    RabbitMQError,
    argument_differences,
    check_queue_name,
    current_arguments,
    describe_differences,
    desired_arguments,
    ensure_queue,
    queue_path,
)

PARAMS = {
    "login_host": "127.0.0.1",
    "login_port": 15672,
    "login_protocol": "http",
    "login_user": "admin",
    "login_password": "s3cret-pw",
    "path_prefix": "",
    "validate_certs": True,
    "ca_path": None,
    "timeout": 5.0,
}


class Response:
    def __init__(self, status, body=None):
        self.status = status
        self.body = json.dumps(body).encode() if body is not None else b""

    def getcode(self):
        return self.status

    def read(self):
        return self.body


class FakeBroker:
    """An opener answering from a dict of queues; records every call."""

    def __init__(self, queues=None, vhosts=("/",)):
        self.queues = dict(queues or {})
        self.vhosts = set(vhosts)
        self.calls = []

    def __call__(self, url, data=None, method=None, **kwargs):
        path = url.split("15672", 1)[1]
        self.calls.append((method, path, json.loads(data) if data else None))
        if path.startswith("/api/vhosts/"):
            vhost = path.rsplit("/", 1)[1].replace("%2F", "/")
            if vhost in self.vhosts:
                return Response(200, {"name": vhost})
            raise HTTPError(url, 404, "Not Found", {}, io.BytesIO(b'{"error":"Object Not Found","reason":"Not Found"}'))
        if method == "GET":
            if path in self.queues:
                return Response(200, self.queues[path])
            raise HTTPError(url, 404, "Not Found", {}, io.BytesIO(b'{"error":"Object Not Found","reason":"Not Found"}'))
        if method == "PUT":
            self.queues[path] = dict(json.loads(data), type=json.loads(data)["arguments"].get("x-queue-type", "classic"), messages=0)
            return Response(201)
        if method == "DELETE":
            self.queues.pop(path.split("?", 1)[0], None)
            return Response(204)
        raise AssertionError(method)


def queue_params(**overrides):
    params = dict(
        PARAMS,
        name="jobs",
        vhost="/",
        state="present",
        durable=True,
        auto_delete=False,
        type="classic",
        message_ttl=None,
        max_priority=None,
        dead_letter_exchange=None,
        dead_letter_routing_key=None,
        max_length=None,
        arguments={},
        recreate=False,
    )
    params.update(overrides)
    return params


@pytest.mark.parametrize("name", ["a/b", "/", "", "amq.x", "x" * 256, "é" * 128])
def test_bad_queue_names(name):
    with pytest.raises(RabbitMQError):
        check_queue_name(name)


def test_good_queue_name_and_path():
    assert check_queue_name("vcenter_sync") == "vcenter_sync"
    assert queue_path("/", "a b") == "/api/queues/%2F/a%20b"
    assert queue_path("app/x", "q") == "/api/queues/app%2Fx/q"


def test_desired_arguments_merge_typed_options():
    wanted = desired_arguments(
        queue_params(max_priority=10, message_ttl=3600000, dead_letter_exchange="", arguments={"x-overflow": "drop-head"})
    )
    assert wanted == {
        "x-queue-type": "classic",
        "x-max-priority": 10,
        "x-message-ttl": 3600000,
        "x-dead-letter-exchange": "",
        "x-overflow": "drop-head",
    }


def test_desired_arguments_conflict_names_the_option():
    with pytest.raises(RabbitMQError, match="message_ttl"):
        desired_arguments(queue_params(message_ttl=1, arguments={"x-message-ttl": 2}))
    with pytest.raises(RabbitMQError, match="option type"):
        desired_arguments(queue_params(type="quorum", arguments={"x-queue-type": "classic"}))


def test_current_arguments_take_the_type_field():
    assert current_arguments({"type": "quorum", "arguments": {}}) == {"x-queue-type": "quorum"}
    assert current_arguments({"type": "classic", "arguments": {"x-queue-type": "classic", "x-max-length": 3}}) == {
        "x-queue-type": "classic",
        "x-max-length": 3,
    }


def test_differences_cover_every_argument_both_ways():
    have = {"durable": True, "auto_delete": False, "arguments": {"x-queue-type": "classic", "x-message-ttl": 5}}
    want = {"durable": False, "auto_delete": False, "arguments": {"x-queue-type": "quorum", "x-max-length": 1}}
    differences = argument_differences(have, want)
    assert differences == {
        "durable": (True, False),
        "x-max-length": (None, 1),
        "x-message-ttl": (5, None),
        "x-queue-type": ("classic", "quorum"),
    }
    text = describe_differences(differences)
    assert "x-message-ttl: have 5, want (not set)" in text and 'x-queue-type: have "classic", want "quorum"' in text


def test_create_then_no_change():
    broker = FakeBroker()
    result = ensure_queue(ManagementApi(PARAMS, opener=broker), queue_params(max_priority=10))
    assert result["changed"] is True and result["queries"] == ["PUT /api/queues/%2F/jobs"]
    again = ensure_queue(ManagementApi(PARAMS, opener=broker), queue_params(max_priority=10))
    assert again["changed"] is False and again["queries"] == []


def test_check_mode_sends_no_change():
    broker = FakeBroker()
    result = ensure_queue(ManagementApi(PARAMS, check_mode=True, opener=broker), queue_params())
    assert result["changed"] is True and result["queries"] == ["PUT /api/queues/%2F/jobs"]
    assert [call[0] for call in broker.calls] == ["GET", "GET"]  # the vhost, the queue


def test_drift_without_recreate_changes_nothing():
    broker = FakeBroker(
        {"/api/queues/%2F/jobs": {"durable": True, "type": "classic", "arguments": {}, "messages": 0, "auto_delete": False}}
    )
    with pytest.raises(RabbitMQError, match='x-queue-type: have "classic", want "quorum"') as caught:
        ensure_queue(ManagementApi(PARAMS, opener=broker), queue_params(type="quorum"))
    assert caught.value.details["differences"] == {"x-queue-type": {"have": "classic", "want": "quorum"}}
    assert all(call[0] == "GET" for call in broker.calls)


def test_recreate_refuses_a_queue_with_messages():
    broker = FakeBroker(
        {"/api/queues/%2F/jobs": {"durable": True, "auto_delete": False, "type": "classic", "arguments": {}, "messages": 7}}
    )
    with pytest.raises(RabbitMQError, match="holds 7 message"):
        ensure_queue(ManagementApi(PARAMS, opener=broker), queue_params(type="quorum", recreate=True))
    assert all(call[0] == "GET" for call in broker.calls)


def test_unknown_vhost():
    with pytest.raises(RabbitMQError, match=r"vhost 'nope' does not exist.*add_vhost nope"):
        ensure_queue(ManagementApi(PARAMS, opener=FakeBroker()), queue_params(vhost="nope"))


def test_401_is_explained_without_the_password():
    def opener(url, **kwargs):
        raise HTTPError(url, 401, "Unauthorized", {}, io.BytesIO(b'{"error":"not_authorised","reason":"Login failed"}'))

    with pytest.raises(RabbitMQError) as caught:
        ManagementApi(PARAMS, opener=opener).request("GET", "/api/whoami")
    assert "401" in str(caught.value) and "'admin'" in str(caught.value) and "s3cret-pw" not in str(caught.value)


def test_unreachable_names_host_port_and_timeout():
    def opener(url, **kwargs):
        raise URLError(ConnectionRefusedError(111, "Connection refused"))

    with pytest.raises(RabbitMQError, match=r"127\.0\.0\.1:15672 .* 5\.0 s timeout"):
        ManagementApi(PARAMS, opener=opener).request("GET", "/api/overview")


def test_path_prefix_and_tls_options_reach_the_opener():
    seen = {}

    def opener(url, **kwargs):
        seen.update(kwargs, url=url)
        return Response(200, {"name": "admin"})

    params = dict(PARAMS, login_protocol="https", path_prefix="/rabbitmq/", validate_certs=False, ca_path="/etc/ca.pem")
    ManagementApi(params, opener=opener).request("GET", "/api/whoami")
    assert seen["url"] == "https://127.0.0.1:15672/rabbitmq/api/whoami"
    assert seen["validate_certs"] is False and seen["ca_path"] == "/etc/ca.pem" and seen["timeout"] == 5.0
