"""module_utils/rabbitmq_api without a broker: names, arguments, differences and URLs. Everything
that talks to RabbitMQ is tested against the real broker (tests/integration/test_rabbitmq.py)."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.rabbitmq.api import (
    ManagementApi,
    RabbitMQError,
    argument_differences,
    check_queue_name,
    check_vhost,
    current_arguments,
    describe_differences,
    desired_arguments,
    expect_object,
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


@pytest.mark.parametrize("name", ["a/b", "/", "", ".", "..", "amq.x", "x" * 256, "é" * 128])
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


def test_path_prefix_is_part_of_every_url():
    assert ManagementApi(dict(PARAMS, path_prefix="/rabbitmq/")).base == "http://127.0.0.1:15672/rabbitmq"
    assert ManagementApi(dict(PARAMS, login_protocol="https", path_prefix="")).base == "https://127.0.0.1:15672"


@pytest.mark.parametrize("vhost", [".", ".."])
def test_dot_vhosts_are_refused_naming_the_problem(vhost):
    with pytest.raises(RabbitMQError, match="dot segment"):
        check_vhost(vhost)
    with pytest.raises(RabbitMQError, match="vhost name"):
        queue_path(vhost, "jobs")


def test_names_with_dots_inside_are_fine():
    assert check_queue_name("app.jobs") == "app.jobs" and check_queue_name("...") == "..."
    assert queue_path("/", "app.jobs") == "/api/queues/%2F/app.jobs"
    assert check_vhost("/") == "/"


@pytest.mark.parametrize("prefix", ["/../api", "a/./b", "x?y", "x#y", "a%2Fb", "a b"])
def test_bad_path_prefixes_are_refused(prefix):
    with pytest.raises(RabbitMQError, match="path_prefix"):
        ManagementApi(dict(PARAMS, path_prefix=prefix))


def test_an_answer_must_be_the_object_asked_for():
    queue = {"name": "jobs", "vhost": "/", "durable": True}
    assert expect_object(queue, "/api/queues/%2F/jobs", "http://x", "queue", name="jobs", vhost="/") is queue
    with pytest.raises(RabbitMQError, match="a list of 2 item"):
        expect_object([queue, queue], "/api/queues/%2F/jobs", "http://x", "queue", name="jobs", vhost="/")
    with pytest.raises(RabbitMQError, match="name 'other'"):
        expect_object(dict(queue, name="other"), "/api/queues/%2F/jobs", "http://x", "queue", name="jobs", vhost="/")
    with pytest.raises(RabbitMQError, match="str"):
        expect_object("<html>", "/api/queues/%2F/jobs", "http://x", "queue", name="jobs", vhost="/")
