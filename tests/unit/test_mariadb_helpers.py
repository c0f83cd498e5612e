"""The MariaDB target's pure parts: type mapping both ways, the DDL of a created table, identifier
quoting, the session's UTC datetimes and the connection errors' messages (no server)."""

from __future__ import annotations

import datetime

import pymysql
import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.types import LOGICAL_TYPES, ValueMismatch, converter
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import (
    MariaDBError,
    escape_moment,
    explain_connection_error,
    quote_ident,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.copy_target import MariaDBTarget, default_type, parse_type
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.copy_target import parse_type as pg_parse_type

PARAMS = {"mariadb_host": "127.0.0.1", "mariadb_port": 3306, "mariadb_user": "app", "mariadb_password": "s3cret", "mariadb_database": "db"}


@pytest.mark.parametrize(
    ("text", "shown", "logical", "bits"),
    [
        ("bigint(20)", "bigint", "integer", 64),  # a display width is no parameter
        ("int(11)", "int", "integer", 32),
        ("INTEGER", "int", "integer", 32),
        ("mediumint", "mediumint", "integer", 24),
        ("smallint(6)", "smallint", "integer", 16),
        ("tinyint(4)", "tinyint", "integer", 8),
        ("tinyint(1)", "tinyint(1)", "boolean", 0),
        ("boolean", "tinyint(1)", "boolean", 0),
        ("double", "double", "real", 0),
        ("double precision", "double", "real", 0),
        ("float", "float", "real", 0),
        ("decimal(10,2)", "decimal(10,2)", "numeric", 0),
        ("numeric(65,30)", "decimal(65,30)", "numeric", 0),
        ("varchar(5)", "varchar(5)", "text", 0),
        ("char(36)", "char(36)", "text", 0),
        ("longtext", "longtext", "text", 0),
        ("varbinary(255)", "varbinary(255)", "blob", 0),
        ("longblob", "longblob", "blob", 0),
        ("date", "date", "date", 0),
        ("datetime(6)", "datetime(6)", "timestamp", 0),
        ("timestamp", "timestamp", "timestamptz", 0),
        ("timestamptz", "datetime(6)", "timestamptz", 0),
        ("json", "json", "json", 0),
        ("uuid", "uuid", "uuid", 0),
    ],
)
def test_a_mariadb_type_maps_to_its_logical_type(text, shown, logical, bits):
    kind = parse_type(text)
    assert (str(kind), kind.logical, kind.bits) == (shown, logical, bits)


@pytest.mark.parametrize("text", ["int(10) unsigned", "bigint unsigned zerofill", "geometry", "enum('a','b')", "", None, 5])
def test_a_type_the_copy_cannot_hold_is_none(text):
    assert parse_type(text) is None


def test_a_varchar_limits_the_length_a_decimal_its_scale_a_float_its_digits():
    assert parse_type("varchar(5)").length == 5 and parse_type("longtext").length is None
    assert parse_type("decimal(10,2)").scale == 2 and parse_type("decimal(10)").scale == 0 and parse_type("double").scale is None
    assert parse_type("float").real_digits == 6 and parse_type("double").real_digits == 15
    # PostgreSQL's types answer the same questions (compare/run.py asks them of either target)
    assert pg_parse_type("numeric(10,2)").scale == 2 and pg_parse_type("real").real_digits == 6
    assert pg_parse_type("double precision").real_digits == 15 and pg_parse_type("numeric").scale is None


def test_every_logical_type_has_a_created_type_that_maps_back():
    for logical in LOGICAL_TYPES:
        kind = default_type(logical)
        assert kind.logical == logical
        back = parse_type(str(kind))
        assert back is not None, logical
        if logical not in ("timestamptz", "uuid"):  # written as UTC datetime(6) and char(36): text on reading back
            assert back.logical == logical
    assert str(default_type("timestamptz")) == "datetime(6)" and str(default_type("numeric")) == "decimal(65,30)"


def test_an_8_bit_integer_column_refuses_a_value_out_of_its_range():
    convert = converter("integer", parse_type("tinyint").bits)
    assert convert(127) == 127
    with pytest.raises(ValueMismatch, match="8-bit"):
        convert(200)


def test_a_created_table_quotes_every_name_bounds_its_key_and_orders_text_by_code_point():
    target = MariaDBTarget(client=None)
    statement = target.create_statement(
        "we`ird; DROP",
        [("na`me", default_type("text"), False), ("id", default_type("integer"), False), ("body", default_type("text"), True)],
        ["na`me", "id"],
    )
    assert statement == (
        "CREATE TABLE `we``ird; DROP` (`na``me` varchar(255) NOT NULL, `id` bigint NOT NULL, `body` longtext NOT NULL, "
        "PRIMARY KEY (`na``me`, `id`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"
    )


def test_quote_ident_doubles_backticks_and_refuses_what_no_name_can_be():
    assert quote_ident("a`b") == "`a``b`" and quote_ident('x"; --') == '`x"; --`'
    assert quote_ident("5%s off") == "`5%%s off`"  # every statement passes PyMySQL's %-formatting
    assert quote_ident("t" * 64) == "`" + "t" * 64 + "`"
    for bad, says in (("t" * 65, "more than MariaDB's 64"), ("a\x00b", "NUL"), ("", "empty")):
        with pytest.raises(MariaDBError, match=says):
            quote_ident(bad)
    with pytest.raises(MariaDBError, match=r"^table: "):
        MariaDBTarget(client=None).check_name("t" * 65, "table")


def test_a_datetime_with_a_zone_is_written_in_utc():
    zoned = datetime.datetime(2026, 2, 28, 23, 59, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert escape_moment(zoned) == "'2026-02-28 21:59:59'"
    assert escape_moment(datetime.datetime(2026, 1, 2, 3, 4, 5, 6)) == "'2026-01-02 03:04:05.000006'"


def test_connection_errors_name_the_problem_and_the_fix_never_the_password():
    refused = pymysql.err.OperationalError(1045, "Access denied for user 'app'@'localhost' (using password: YES)")
    denied = explain_connection_error(refused, PARAMS)
    assert str(denied).startswith("authentication failed for user 'app' on MariaDB 127.0.0.1:3306: check mariadb_user and mariadb_password")
    unknown = explain_connection_error(pymysql.err.OperationalError(1049, "Unknown database 'db'"), PARAMS)
    assert "database 'db' does not exist" in str(unknown) and "mariadb_database" in str(unknown)
    down = explain_connection_error(pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'"), PARAMS)
    assert "cannot reach MariaDB at 127.0.0.1:3306" in str(down) and "mariadb_port" in str(down)
    no_tls = explain_connection_error(pymysql.err.OperationalError(2026, "SSL is required but the server doesn't support it"), PARAMS)
    assert "does not offer TLS" in str(no_tls) and "leave mariadb_ca_cert out" in str(no_tls)
    assert all("s3cret" not in str(error) for error in (denied, unknown, down, no_tls))
