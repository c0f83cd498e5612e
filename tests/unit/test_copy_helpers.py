"""The copy's pure parts: value conversion into the logical types, the target's type names, the
SQLite declared types, and the checkpoint's key encoding."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.engine import decode_key, encode_key
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.types import (
    RowMismatch,
    ValueMismatch,
    converter,
    parse_date_time,
    row_converter,
    shown,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.copy_target import parse_type
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import decode_key as change_key
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import logical_type

UTC = datetime.timezone.utc  # noqa: UP017


@pytest.mark.parametrize(
    ("text", "logical", "expected"),
    [
        ("2026-01-02", "date", datetime.date(2026, 1, 2)),
        ("2026-01-02 00:00:00", "date", datetime.date(2026, 1, 2)),
        ("2026-01-02T03:04:05Z", "timestamptz", datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02 03:04:05", "timestamptz", datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02 03:04:05.5+02:00", "timestamptz", datetime.datetime(2026, 1, 2, 1, 4, 5, 500000, tzinfo=UTC)),
        ("2026-01-02 03:04:05+0200", "timestamp", datetime.datetime(2026, 1, 2, 1, 4, 5)),
        ("2026-01-02 03:04", "timestamp", datetime.datetime(2026, 1, 2, 3, 4)),
        (0, "timestamptz", datetime.datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_sqlite_text_dates(text, logical, expected):
    assert parse_date_time(text, logical) == expected


@pytest.mark.parametrize("text", ["02/01/2026", "2026-13-01", "2026-01-02 03:04:05 junk", "yesterday"])
def test_text_that_is_no_date_is_refused(text):
    with pytest.raises(ValueMismatch):
        parse_date_time(text, "timestamptz")


def test_a_date_column_refuses_a_time_of_day():
    with pytest.raises(ValueMismatch, match="time of day"):
        parse_date_time("2026-01-02 03:04:05", "date")


def test_integers_are_range_checked_and_text_numbers_converted():
    assert converter("integer", 16)("12") == 12
    assert converter("integer", 64)(3.0) == 3
    for bad, bits in ((99999, 16), (2**31, 32), (1.5, 64), ("x", 64), (b"\x01", 64)):
        with pytest.raises(ValueMismatch):
            converter("integer", bits)(bad)


def test_other_types():
    assert converter("numeric")("12.50") == decimal.Decimal("12.50")
    assert converter("real")("1e3") == 1000.0
    assert converter("boolean")(1) is True and converter("boolean")("false") is False
    assert converter("blob")("é") == "é".encode()
    assert converter("text")(7) == "7"
    assert converter("json")('{"a": 1}') == '{"a": 1}'
    assert converter("uuid")("12345678-1234-5678-1234-567812345678") == uuid.UUID("12345678-1234-5678-1234-567812345678")
    for logical, bad in (("text", "a\x00b"), ("json", "{bad"), ("boolean", 2), ("uuid", "nope"), ("numeric", "NaN"), ("text", b"\xff")):
        with pytest.raises(ValueMismatch):
            converter(logical)(bad)
    with pytest.raises(ValueMismatch, match="longer than"):
        converter("text", length=3)("abcd")


def test_a_row_names_the_first_column_that_does_not_fit():
    convert = row_converter([converter("integer"), converter("date")])
    assert convert((1, None)) == [1, None]
    with pytest.raises(RowMismatch) as failed:
        convert((1, "soon"))
    assert failed.value.index == 1 and failed.value.value == "soon"


def test_values_are_shown_short():
    assert shown(b"\x00\xff") == "x'00ff'"
    assert len(shown("x" * 500)) == 80


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamptz", "timestamp with time zone"),
        ("VARCHAR(20)", "character varying(20)"),
        ("int2", "smallint"),
        ("numeric(10, 2)", "numeric(10,2)"),
        ("double precision", "double precision"),
        ("money", None),
        ("text; DROP TABLE x", None),
    ],
)
def test_target_type_names(text, expected):
    found = parse_type(text)
    assert (str(found) if found else None) == expected


@pytest.mark.parametrize(
    ("declared", "logical"),
    [
        ("INTEGER", "integer"),
        ("unsigned big int", "integer"),
        ("integer unsigned", "integer"),  # Django's PositiveIntegerField
        ("VARCHAR(255)", "text"),
        ("", "blob"),
        ("DATETIME", "timestamp"),
        ("double  precision", "real"),
        ("GEOMETRY", None),
    ],
)
def test_sqlite_declared_types(declared, logical):
    assert logical_type(declared) == logical


def test_keys_with_bytes_survive_json():
    assert decode_key(encode_key([1, b"\x01\xab", "x"])) == [1, b"\x01\xab", "x"]
    assert change_key('[1, {"blob": "01AB"}]') == [1, b"\x01\xab"]
    assert encode_key(None) is None
