# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Partition bounds as typed values: compared, overlapped, written as SQL, and read back from
pg_get_expr(relpartbound) (the text shown is what pg_get_expr prints, for ISO DateStyle).

Pure: no database."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

with contextlib.suppress(ImportError):  # pg_client reports the missing library before anything here runs
    from psycopg import sql

UTC = timezone(timedelta(0))  # datetime.UTC is Python 3.11+; modules run on 3.9


# Bounds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HashBound:
    modulus: int
    remainder: int


@dataclass(frozen=True)
class RangeBound:
    lower: object  # None: MINVALUE
    upper: object  # None: MAXVALUE


@dataclass(frozen=True)
class ListBound:
    values: tuple


@dataclass(frozen=True)
class DefaultBound:
    pass


def norm(value):
    """A value comparable with any other of its kind (aware datetimes in UTC)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def same_bound(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, RangeBound):
        return norm(a.lower) == norm(b.lower) and norm(a.upper) == norm(b.upper)
    if isinstance(a, ListBound):
        return {norm(v) for v in a.values} == {norm(v) for v in b.values}
    return a == b


def overlaps(a, b) -> bool:
    """Whether two bounds of the same table could hold the same row (DEFAULT overlaps nothing)."""
    if isinstance(a, DefaultBound) or isinstance(b, DefaultBound) or type(a) is not type(b):
        return False
    if isinstance(a, HashBound):
        small, big = sorted((a, b), key=lambda bound: bound.modulus)
        if big.modulus % small.modulus:
            return True  # PostgreSQL refuses moduli that are not factors of each other
        return big.remainder % small.modulus == small.remainder
    if isinstance(a, RangeBound):
        below = a.lower is None or b.upper is None or norm(a.lower) < norm(b.upper)
        above = b.lower is None or a.upper is None or norm(b.lower) < norm(a.upper)
        return below and above
    return bool({norm(v) for v in a.values} & {norm(v) for v in b.values})


def pg_text(value) -> str:
    """A value as PostgreSQL prints it (ISO DateStyle), unquoted."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        offset = value.utcoffset()
        if offset is not None:
            seconds = int(offset.total_seconds())
            sign = "-" if seconds < 0 else "+"
            hours, rest = divmod(abs(seconds), 3600)
            minutes, secs = divmod(rest, 60)
            text += f"{sign}{hours:02d}" + (f":{minutes:02d}" if minutes or secs else "") + (f":{secs:02d}" if secs else "")
        return text
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def pg_literal(value, key_type: str | None = None) -> str:
    """A bound value as pg_get_expr prints it: NULL and booleans bare, int4/numeric bare when not
    negative, everything else (int2 and int8 too) quoted."""
    if value is None or isinstance(value, bool):
        return pg_text(value)
    if key_type in ("int4", "numeric") and not isinstance(value, str) and value >= 0:
        return pg_text(value)
    return quote(pg_text(value))


def bound_text(bound, key_type: str | None = None) -> str:
    """What pg_get_expr(relpartbound, oid) prints for this bound of a key of type `key_type`."""
    if isinstance(bound, HashBound):
        return f"FOR VALUES WITH (modulus {bound.modulus}, remainder {bound.remainder})"
    if isinstance(bound, RangeBound):
        lower = "MINVALUE" if bound.lower is None else pg_literal(bound.lower, key_type)
        upper = "MAXVALUE" if bound.upper is None else pg_literal(bound.upper, key_type)
        return f"FOR VALUES FROM ({lower}) TO ({upper})"
    if isinstance(bound, ListBound):
        return f"FOR VALUES IN ({', '.join(pg_literal(value, key_type) for value in bound.values)})"
    return "DEFAULT"


def bound_sql(bound):
    """The bound clause of CREATE TABLE ... PARTITION OF, values as literals (never formatted)."""
    if isinstance(bound, HashBound):
        return sql.SQL("FOR VALUES WITH (MODULUS {}, REMAINDER {})").format(sql.Literal(bound.modulus), sql.Literal(bound.remainder))
    if isinstance(bound, RangeBound):
        lower = sql.SQL("MINVALUE") if bound.lower is None else sql.Literal(bound.lower)
        upper = sql.SQL("MAXVALUE") if bound.upper is None else sql.Literal(bound.upper)
        return sql.SQL("FOR VALUES FROM ({}) TO ({})").format(lower, upper)
    if isinstance(bound, ListBound):
        return sql.SQL("FOR VALUES IN ({})").format(sql.SQL(", ").join(sql.Literal(value) for value in bound.values))
    return sql.SQL("DEFAULT")


# Reading pg_get_expr(relpartbound) back ------------------------------------------------------
MINVALUE = "\0MINVALUE"
MAXVALUE = "\0MAXVALUE"
_ITEM = re.compile(r"\s*(?:(E?)'((?:[^']|'')*)'|([^,()'\s]+))\s*")


def _scan_list(text: str, pos: int) -> tuple[list, int]:
    """Items of a parenthesised list starting just after '(' -> (raw items, position after ')').

    Quoted items come back unquoted; NULL as None; MINVALUE/MAXVALUE as markers; other bare
    items (numbers, true/false) as their text.
    """
    items = []
    while True:
        match = _ITEM.match(text, pos)
        if not match:
            raise ValueError(f"cannot read partition bound {text!r} at position {pos}")
        escape, quoted, bare = match.groups()
        if quoted is not None:
            item = quoted.replace("''", "'")
            if escape:
                item = item.replace("\\\\", "\\")
        elif bare.upper() == "NULL":
            item = None
        elif bare.upper() in ("MINVALUE", "MAXVALUE"):
            item = MINVALUE if bare.upper() == "MINVALUE" else MAXVALUE
        else:
            item = bare
        items.append(item)
        pos = match.end()
        if text.startswith(",", pos):
            pos += 1
        elif text.startswith(")", pos):
            return items, pos + 1
        else:
            raise ValueError(f"cannot read partition bound {text!r} at position {pos}")


def parse_bound(text: str, load=lambda raw: raw):
    """pg_get_expr(relpartbound) -> a bound; `load` turns one raw item into the key's type."""
    text = text.strip()
    if text == "DEFAULT":
        return DefaultBound()
    match = re.fullmatch(r"FOR VALUES WITH \(modulus (\d+), remainder (\d+)\)", text)
    if match:
        return HashBound(int(match.group(1)), int(match.group(2)))
    if text.startswith("FOR VALUES FROM ("):
        lower, pos = _scan_list(text, len("FOR VALUES FROM ("))
        if not text.startswith(" TO (", pos):
            raise ValueError(f"cannot read partition bound {text!r}")
        upper, pos = _scan_list(text, pos + len(" TO ("))
        if pos != len(text) or len(lower) != 1 or len(upper) != 1:
            raise ValueError(f"cannot read partition bound {text!r} (only single-column range keys are supported)")
        return RangeBound(
            None if lower[0] == MINVALUE else load(lower[0]),
            None if upper[0] == MAXVALUE else load(upper[0]),
        )
    if text.startswith("FOR VALUES IN ("):
        values, pos = _scan_list(text, len("FOR VALUES IN ("))
        if pos != len(text):
            raise ValueError(f"cannot read partition bound {text!r}")
        return ListBound(tuple(None if value is None else load(value) for value in values))
    raise ValueError(f"cannot read partition bound {text!r}")
