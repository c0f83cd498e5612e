# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One canonical text per value of each of the copy's logical types (copy/types.py), so two
engines that type values differently digest equal data alike: SQLite's loose values (an integer
in text, a date as text or Unix seconds, a boolean as 0/1, JSON as text) and PostgreSQL's typed
ones (int, Decimal, date, datetime, bool, bytes, UUID).

A loose value is first converted the way the copy converts it before writing (copy/types.py's
converter), then written in the canonical form:
- integer: decimal digits;
- real: the float rounded to `real_digits` significant digits (15 for double precision: the
  last bits of a double may differ between engines' parsers and printers; 6 for PostgreSQL's
  4-byte real) - the stated tolerance;
- numeric: the exact decimal without trailing zeros (1.50 = 1.5; the scale is not compared),
  rounded first to a numeric(p, s) column's scale, as the column stores it;
- text: the text itself; blob: lower-case hex;
- boolean: "t" or "f" (SQLite 0/1, 'true', ... PostgreSQL true/false);
- date: YYYY-MM-DD; timestamp: ISO 8601 with microseconds; timestamptz: the same in UTC with
  +00:00 (SQLite's text dates with an offset, or none: UTC);
- json: parsed and dumped again with sorted keys and no spaces (jsonb's reordering is no
  difference);
- uuid: the lower-case hyphenated form;
- NULL: null (a JSON null in the row's encoding, unlike every text).
A value the copy could not convert is written as "!" and its repr, so it differs from whatever
the other side holds and is reported as changed rather than failing the comparison.

A row's digest: the first 8 bytes of BLAKE2b over the JSON list of its canonical values.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import math
import uuid

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.types import UTC, ValueMismatch, converter


def real_text(value: float, digits: int) -> str:
    if math.isnan(value):
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    text = format(value, f".{digits}g")
    return "0" if float(text) == 0 else text  # -0.0 is 0


def numeric_text(value: decimal.Decimal, scale: int | None = None) -> str:
    if not value.is_finite():
        return str(value)
    # every digit the value and its scale need: the default context's 28 would round a decimal(65,30)
    context = decimal.Context(prec=max(len(value.as_tuple().digits), value.adjusted() + 1, 1) + (scale or 0) + 1)
    if scale is not None:  # numeric(p, s) stores the value rounded to s places, half away from zero
        value = value.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP, context=context)
    if value == 0:
        return "0"
    text = format(value.normalize(context), "f")
    return text


def json_text(value) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8")
    parsed = json.loads(value) if isinstance(value, str) else value
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def moment_text(value, logical: str) -> str:
    if logical == "date":
        if isinstance(value, datetime.datetime):
            value = value.date()
        return value.isoformat()
    if logical == "timestamptz":
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def normaliser(logical: str, real_digits: int = 15, scale: int | None = None):
    """value -> canonical text (None stays None) for a column of the `logical` type; `scale`: a
    numeric column's fixed scale (its values are compared rounded to it, as the column stores them)."""
    convert = converter(logical)

    def typed(value):
        """The value as the Python type of its logical type: as it is when it already is one."""
        if logical in ("date", "timestamp", "timestamptz") and isinstance(value, datetime.date):
            return value
        if logical == "numeric" and isinstance(value, decimal.Decimal):
            return value
        if logical == "uuid" and isinstance(value, uuid.UUID):
            return value
        if logical == "json":
            return value  # parsed by json_text
        return convert(value)

    def form(value):
        if value is None:
            return None
        try:
            value = typed(value)
            if logical == "integer":
                return str(value)
            if logical == "real":
                return real_text(value, real_digits)
            if logical == "numeric":
                return numeric_text(value, scale)
            if logical == "text":
                return value
            if logical == "blob":
                return value.hex()
            if logical == "boolean":
                return "t" if value else "f"
            if logical in ("date", "timestamp", "timestamptz"):
                return moment_text(value, logical)
            if logical == "json":
                return json_text(value)
            return str(value)  # uuid
        except (ValueMismatch, ValueError, TypeError, AttributeError):
            return "!" + repr(value)

    return form


def row_digest(values) -> int:
    """The 64-bit digest of a row of canonical values."""
    encoded = json.dumps(list(values), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "big")


# Key types both engines order alike: integers by value, text by code point (SQLite's BINARY
# collation; PostgreSQL's COLLATE "C" over UTF-8). A key value is the typed value (int, str), so
# it serves as a bound on either side.
KEY_TYPES = ("integer", "text")


class Canonical:
    """A table's rows in canonical form: `logicals` (logical types in column order) and the key's positions."""

    def __init__(self, logicals: list[str], key_positions: list[int], real_digits: list | None = None, scales: list | None = None):
        digits = real_digits or [15] * len(logicals)
        scales = scales or [None] * len(logicals)
        self.normalisers = [normaliser(*column) for column in zip(logicals, digits, scales, strict=True)]
        self.key_positions = key_positions
        self.key_converters = [converter(logicals[position]) for position in key_positions]

    def row(self, row) -> list:
        return [normalise(value) for normalise, value in zip(self.normalisers, row, strict=True)]

    def key(self, row) -> tuple:
        """The key of a full raw row as a typed tuple."""
        return tuple(convert(row[position]) for convert, position in zip(self.key_converters, self.key_positions, strict=True))

    def bare_key(self, values) -> tuple:
        """The key of a row of key columns only."""
        return tuple(convert(value) for convert, value in zip(self.key_converters, values, strict=True))

    def summary(self, rows, keyless: bool = False) -> tuple[int, str]:
        """(rows, checksum): XOR of the row digests (a sum for a keyless table, where duplicates would cancel out)."""
        count = 0
        checksum = 0
        for row in rows:
            digest = row_digest(self.row(row))
            checksum = checksum + digest if keyless else checksum ^ digest
            count += 1
        return count, str(checksum) if count else None

    def digests(self, rows) -> dict[tuple, int]:
        return {self.key(row): row_digest(self.row(row)) for row in rows}
