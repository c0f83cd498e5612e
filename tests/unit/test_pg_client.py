"""The connection helper's pure parts; the messages are checked against real servers in
tests/integration/test_pg_client.py."""

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import (
    CONNECTION_ARGUMENT_SPEC,
    connection_params,
    describe_endpoint,
    explain_connection_error,
    parse_version,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import (
    connection_option,
    pair_argument_spec,
    pair_openers,
)


def defaults(**overrides):
    params = {name: spec.get("default") for name, spec in CONNECTION_ARGUMENT_SPEC.items()}
    params.update(overrides)
    return params


def test_defaults_map_to_libpq_keywords():
    assert connection_params(defaults()) == {
        "host": "localhost",
        "port": 5432,
        "user": "postgres",
        "dbname": "postgres",
        "sslmode": "prefer",
        "connect_timeout": 10,
        "application_name": "zerodowntime.migration",
    }


def test_unix_socket_wins_over_host():
    params = connection_params(defaults(login_unix_socket="/var/run/postgresql", login_port=5433))
    assert params["host"] == "/var/run/postgresql"
    assert (
        describe_endpoint(defaults(login_unix_socket="/var/run/postgresql", login_port=5433)) == "socket /var/run/postgresql/.s.PGSQL.5433"
    )


def test_certificates_are_passed_when_set():
    params = connection_params(defaults(ssl_mode="verify-full", ssl_rootcert="/ca.pem", ssl_cert="/c.pem", ssl_key="/k.pem"))
    assert (params["sslmode"], params["sslrootcert"], params["sslcert"], params["sslkey"]) == ("verify-full", "/ca.pem", "/c.pem", "/k.pem")


def test_password_is_not_in_the_endpoint_description():
    assert "s3cret" not in describe_endpoint(defaults(login_password="s3cret", login_host="db1", login_port=6000))
    assert describe_endpoint(defaults(login_host="db1", login_port=6000)) == "db1:6000"


def test_password_only_passed_when_given():
    assert "password" not in connection_params(defaults())
    assert connection_params(defaults(login_password="pw"))["password"] == "pw"


def test_the_spec_hides_the_password():
    assert CONNECTION_ARGUMENT_SPEC["login_password"]["no_log"] is True


def test_parse_version():
    assert parse_version(150018) == (15, 18)
    assert parse_version(170002) == (17, 2)
    assert parse_version(90624) == (9, 6)


def test_a_connection_option_is_the_shared_spec_and_a_pair_is_two_required_ones():
    assert connection_option(type="list", elements="dict") == {"type": "list", "elements": "dict", "options": CONNECTION_ARGUMENT_SPEC}
    spec = pair_argument_spec(tables=dict(type="list"))
    assert spec["source"] == spec["target"] == {"type": "dict", "required": True, "options": CONNECTION_ARGUMENT_SPEC}
    assert spec["tables"] == {"type": "list"}
    assert set(pair_openers({"source": {}, "target": {}})) == {"source", "target"}


TLS = defaults(login_host="db.example", login_port=5433, ssl_mode="verify-full", ssl_rootcert="/etc/tls/ca.crt")


def test_a_certificate_for_another_name_says_which_names_and_what_to_set():
    text = (
        'connection to server at "db.example" (10.0.0.5), port 5433 failed: '
        'server certificate for "lab-db" (and 3 other names) does not match host name "db.example"'
    )
    message = explain_connection_error(Exception(text), TLS)
    assert "the TLS certificate of db.example:5433 is for 'lab-db' (and 3 other names), not for host 'db.example'" in message
    assert "set login_host to a name or address the certificate lists" in message


def test_a_server_without_tls_says_how_to_turn_it_on():
    message = explain_connection_error(Exception("server does not support SSL, but SSL was required"), TLS)
    assert "db.example:5433 does not accept TLS and ssl_mode=verify-full requires it" in message
    assert "postgresql_ssl" in message


def test_an_unverifiable_certificate_names_the_ca_file():
    message = explain_connection_error(Exception("SSL error: certificate verify failed"), TLS)
    assert "is not signed by the CA in ssl_rootcert /etc/tls/ca.crt" in message
    without = explain_connection_error(Exception("SSL error: certificate verify failed"), dict(TLS, ssl_rootcert=None))
    assert "libpq's default root certificate (~/.postgresql/root.crt)" in without
