# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy's neutral type model: a handful of logical types between any source and any target.

A source adapter says which logical type each of its columns holds (SQLite: from the declared
type, by its affinity rules and the date names); a target adapter says which of its column types
holds a logical type (and which logical type an existing column of its own is). The value of a
row is converted here, in Python, before anything is written: a value that does not fit raises
ValueMismatch, which the engine counts against max_errors and reports with table, key, column
and value. Pure code; no connection.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import uuid

UTC = datetime.timezone(datetime.timedelta(0))  # datetime.UTC is Python 3.11+; modules run on 3.9

LOGICAL_TYPES = ("integer", "real", "numeric", "text", "blob", "boolean", "date", "timestamp", "timestamptz", "json", "uuid")

INTEGER_RANGES = {bits: (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (8, 16, 24, 32, 64)}  # 8 and 24: MariaDB's tinyint, mediumint
ISO_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$", re.IGNORECASE
)


class ValueMismatch(Exception):
    """A value the target column cannot hold; the message says why."""


def shown(value) -> str:
    """A value as an error message shows it: repr, bytes in hex, at most 80 characters."""
    text = "x'" + value.hex() + "'" if isinstance(value, (bytes, bytearray, memoryview)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_date_time(value, logical: str):
    """An SQLite date: ISO 8601 text ('2026-01-02', '2026-01-02 03:04:05.678', 'T', 'Z' or an
    offset) or a Unix time in seconds (an integer or a real). A timestamp without a zone is UTC
    for timestamptz (SQLite's datetime() and CURRENT_TIMESTAMP are UTC)."""
    if isinstance(value, bool):
        raise ValueMismatch("a boolean is not a date")
    if isinstance(value, (int, float)):
        try:
            moment = datetime.datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueMismatch(f"{value} seconds since 1970 is out of range") from exc
    elif isinstance(value, str):
        match = ISO_DATE_TIME.match(value.strip())
        if not match:
            raise ValueMismatch("not an ISO 8601 date or date and time (YYYY-MM-DD[ HH:MM[:SS[.fff]]][Z|+HH:MM])")
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        try:
            micro = int((fraction or "0").ljust(6, "0")[:6])
            moment = datetime.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro)
        except ValueError as exc:
            raise ValueMismatch(f"not a valid date ({exc})") from exc
        if zone and zone.upper() != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset = datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            moment = moment.replace(tzinfo=datetime.timezone(sign * offset))
        elif zone or logical == "timestamptz":
            moment = moment.replace(tzinfo=UTC)
        if logical == "date" and (hour is not None or zone) and (moment.time() != datetime.time(0) or zone):
            raise ValueMismatch("a date column cannot hold a time of day")
    else:
        raise ValueMismatch(f"a {type(value).__name__} is not a date")
    if logical == "date":
        return moment.date()
    if logical == "timestamp":
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    return moment


def moment_text(value) -> str:
    """A date and time as an SQLite application writes it (datetime('now'), CURRENT_TIMESTAMP): in
    UTC, 'YYYY-MM-DD HH:MM:SS', a fraction only when there is one (trailing zeros dropped)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text


def to_integer(value, bits: int = 64):
    if isinstance(value, bool):
        value = int(value)
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueMismatch("a fraction in an integer column")
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError as exc:
            raise ValueMismatch("text that is not an integer") from exc
    elif not isinstance(value, int):
        raise ValueMismatch(f"a {type(value).__name__} is not an integer")
    low, high = INTEGER_RANGES[bits]
    if not low <= value <= high:
        raise ValueMismatch(f"out of range for a {bits}-bit integer ({low} to {high})")
    return value


def to_real(value):
    if isinstance(value, (bool, bytes)):
        raise ValueMismatch(f"a {type(value).__name__} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueMismatch("not a number") from exc


def to_numeric(value):
    if isinstance(value, (bool, bytes)):
        raise ValueMismatch(f"a {type(value).__name__} is not a number")
    try:
        number = decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation as exc:
        raise ValueMismatch("not a number") from exc
    if not number.is_finite():
        raise ValueMismatch("not a finite number")
    return number


def to_text(value, length: int | None = None):
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueMismatch("bytes that are not UTF-8 text") from exc
    elif isinstance(value, float):
        value = repr(value)
    elif not isinstance(value, str):
        value = str(value)
    if "\x00" in value:
        raise ValueMismatch("text holding a NUL character, which the target cannot store")
    if length is not None and len(value) > length:
        raise ValueMismatch(f"{len(value)} characters, longer than the column's {length}")
    return value


def to_blob(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ValueMismatch(f"a {type(value).__name__} is not bytes")


def to_boolean(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false", "t", "f", "yes", "no"):
        return value.strip().lower() in ("1", "true", "t", "yes")
    raise ValueMismatch("not a boolean (0, 1, true or false)")


def to_json(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueMismatch("bytes are not JSON")
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as exc:
            raise ValueMismatch(f"not JSON ({exc})") from exc
        if "\\u0000" in value:
            raise ValueMismatch("JSON holding a NUL character, which the target cannot store")
        return value
    return json.dumps(value)


def to_uuid(value):
    try:
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 16:
            return uuid.UUID(bytes=bytes(value))
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise ValueMismatch("not a UUID") from exc


def converter(logical: str, bits: int = 64, length: int | None = None):
    """value -> value the target's driver writes into a column of `logical` type; None stays None.
    A value already of the target's Python type is passed on at once (the bulk of a copy)."""
    if logical == "integer":
        low, high = INTEGER_RANGES[bits]

        def convert(value):
            if value.__class__ is int and low <= value <= high:
                return value
            return to_integer(value, bits)

        return convert
    if logical == "text":

        def convert(value):
            if value.__class__ is str and "\x00" not in value and (length is None or len(value) <= length):
                return value
            return to_text(value, length)

        return convert
    if logical == "real":
        return lambda value: value if value.__class__ is float else to_real(value)
    if logical in ("date", "timestamp", "timestamptz"):

        def convert(value):
            # the common 'YYYY-MM-DD HH:MM:SS' / 'YYYY-MM-DDTHH:MM:SS' in C; anything else by the rules
            if logical != "date" and value.__class__ is str and len(value) == 19 and value[10] in " T":
                try:
                    moment = datetime.datetime.fromisoformat(value)
                except ValueError:
                    return parse_date_time(value, logical)
                return moment.replace(tzinfo=UTC) if logical == "timestamptz" else moment
            return parse_date_time(value, logical)

        return convert
    convert = {
        "numeric": to_numeric,
        "blob": to_blob,
        "boolean": to_boolean,
        "json": to_json,
        "uuid": to_uuid,
    }.get(logical)
    if convert is None:
        raise ValueError(f"unknown logical type {logical!r}")
    return convert


def row_converter(converters: list):
    """One function converting a whole row (a tuple in column order): returns the converted list,
    or raises (index, ValueMismatch) through RowMismatch for the first column that does not fit."""

    def convert(row):
        out = []
        for index, (value, convert_one) in enumerate(zip(row, converters, strict=False)):
            if value is None:
                out.append(None)
                continue
            try:
                out.append(convert_one(value))
            except ValueMismatch as exc:
                raise RowMismatch(index, value, str(exc)) from None
        return out

    return convert


class RowMismatch(Exception):
    def __init__(self, index: int, value, reason: str):
        super().__init__(reason)
        self.index = index
        self.value = value
        self.reason = reason
