"""Pure parts of plugins/module_utils/redis/client.py; everything that talks to Redis is tested
against real servers in tests/integration/test_redis.py."""

from __future__ import annotations

import pytest
import redis

from ansible_collections.zerodowntime.migration.plugins.module_utils.redis.client import (
    SENTINEL_CLIENT_NAME,
    RedisModuleError,
    check_connection_params,
    check_pause_params,
    check_version,
    explain,
    is_replica_of,
    parse_version,
)

PARAMS = {"host": "10.0.0.5", "port": 6379, "password": "hunter2-secret", "connect_timeout": 5.0}


@pytest.mark.parametrize(("text", "expected"), [("7.0.15", (7, 0, 15)), ("6.2.0", (6, 2, 0)), ("5.0.14", (5, 0, 14)), ("7.2-rc1", (7, 2))])
def test_parse_version(text, expected):
    assert parse_version(text)[: len(expected)] == expected


def test_old_server_is_refused_with_its_version_and_the_fix():
    """Debian 12 has no Redis older than 6.2 to run; the modules ask the version before anything
    else (tests/integration/test_redis.py), and this is the verdict on it."""
    with pytest.raises(RedisModuleError) as error:
        check_version("6.0.16", PARAMS)
    message = str(error.value)
    assert "10.0.0.5:6379 is version 6.0.16" in message and "upgrade Redis to 6.2+" in message
    assert error.value.details == {"redis_version": "6.0.16"}


def test_new_server_passes():
    assert check_version("6.2.0", PARAMS) == "6.2.0"


@pytest.mark.parametrize(
    ("state", "duration", "mode", "probe", "words"),
    [
        ("paused", None, "write", 200, "duration_ms is required"),
        ("paused", 0, "write", 200, "1 to 600000"),
        ("paused", 600001, "write", 200, "1 to 600000"),
        ("paused", 1000, "reads", 200, "mode 'reads'"),
        ("unpaused", None, "write", 5, "probe_timeout_ms 5"),
    ],
)
def test_bad_pause_options_are_refused(state, duration, mode, probe, words):
    with pytest.raises(RedisModuleError, match=words):
        check_pause_params(state, duration, mode, probe)


def test_good_pause_options_pass():
    check_pause_params("paused", 600000, "all", 200)
    check_pause_params("unpaused", None, "write", 10)


@pytest.mark.parametrize(
    ("port", "timeout", "words"),
    [(0, 5.0, "not a TCP port"), (70000, 5.0, "not a TCP port"), (6379, 0, "connect_timeout")],
)
def test_bad_connection_options_are_refused(port, timeout, words):
    with pytest.raises(RedisModuleError, match=words):
        check_connection_params(dict(PARAMS, port=port, connect_timeout=timeout))


@pytest.mark.parametrize(
    ("exc", "params", "words"),
    [
        (redis.AuthenticationError("invalid username-password pair"), PARAMS, "refused the password"),
        (redis.AuthenticationError("NOAUTH Authentication required."), dict(PARAMS, password=None), "requires a password"),
        (redis.ConnectionError("Error 111 connecting. Connection refused."), PARAMS, "cannot connect to Redis at 10.0.0.5:6379"),
        (redis.TimeoutError("Timeout reading from socket"), PARAMS, "did not answer in time"),
    ],
)
def test_errors_name_the_server_and_the_fix_never_the_password(exc, params, words):
    message = explain(exc, params)
    assert words in message and "10.0.0.5:6379" in message
    assert "hunter2-secret" not in message


def test_replica_of_by_replication_id_or_address():
    primary = {"role": "master", "master_replid": "abc"}
    assert is_replica_of({"role": "slave", "master_replid": "abc", "master_host": "blue.example", "master_port": 1}, primary, PARAMS)
    assert is_replica_of({"role": "slave", "master_replid": "zzz", "master_host": "10.0.0.5", "master_port": 6379}, primary, PARAMS)
    assert not is_replica_of({"role": "slave", "master_replid": "zzz", "master_host": "10.0.0.6", "master_port": 6379}, primary, PARAMS)
    assert not is_replica_of({"role": "master", "master_replid": "abc"}, primary, PARAMS)


@pytest.mark.parametrize(
    ("name", "run_id"),
    [
        ("sentinel-deb7e516-cmd", "deb7e516"),
        ("sentinel-c11e3348-pubsub", "c11e3348"),
        ("sentinel-app-cmd", None),
        ("", None),
        ("my-sentinel-deb7e516-cmd", None),
    ],
)
def test_sentinel_connections_are_told_by_their_name(name, run_id):
    """What Redis 7's Sentinel names its connections (CLIENT LIST on a watched server)."""
    match = SENTINEL_CLIENT_NAME.match(name)
    assert (match.group(1) if match else None) == run_id
