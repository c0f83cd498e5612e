"""The subscription's pure parts: connection strings and WITH options."""

from psycopg.conninfo import conninfo_to_dict

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.subscription import (
    build_conninfo,
    masked,
    publisher_refused,
    refused_authentication,
    with_options,
)

PUBLISHER = {"host": "db1", "port": 5433, "dbname": "app", "user": "replicator", "password": "it's a \\ secret; host=evil"}


def test_conninfo_quotes_every_value():
    params = conninfo_to_dict(build_conninfo(PUBLISHER))
    assert params == {"host": "db1", "port": "5433", "dbname": "app", "user": "replicator", "password": "it's a \\ secret; host=evil"}


def test_unset_values_are_left_out():
    assert "sslmode" not in conninfo_to_dict(build_conninfo(dict(PUBLISHER, sslmode=None)))


def test_masked_hides_only_the_password():
    shown = conninfo_to_dict(masked(build_conninfo(PUBLISHER)))
    assert shown["password"] == "********"
    assert shown["host"] == "db1"
    assert "secret" not in masked(build_conninfo(PUBLISHER))


def test_with_options_renders_booleans_as_keywords_and_quotes_the_rest(tmp_path):
    rendered = with_options({"binary": True, "copy_data": False, "synchronous_commit": "o'ff"}).as_string(None)
    assert rendered == "binary = true, copy_data = false, synchronous_commit = 'o''ff'"


def test_publisher_refused_names_host_port_user_and_libpq_reason():
    cause = 'connection to server at "127.0.0.1", port 5433 failed: FATAL:  password authentication failed for user "replicator"'
    assert refused_authentication(cause)
    assert publisher_refused({"host": "db1", "port": "5433", "user": "replicator"}, cause) == (
        "the publisher at db1:5433 refused authentication for user 'replicator' (password authentication failed for user \"replicator\")"
    )
    assert "(no password supplied)" in publisher_refused({"host": "db1", "user": "r"}, "fe_sendauth: no password supplied")
    assert not refused_authentication('connection to server at "127.0.0.1", port 5497 failed: Connection refused')
