# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The partitions of an existing partitioned table: hash, range (with premake and retention), list.

The pure part (no database): option validation, naming, interval arithmetic, the partitions a
spec asks for, and reading pg_get_expr(relpartbound) back into typed bounds. The database part:
`PartitionSet`, "the partition set of one table" as a ManagedObject, so changed/diff/queries and check
mode work as for every other object in the collection. All changes run in one transaction.

Bounds are compared as typed values (the key column's type, loaded by psycopg), never as text;
the text shown in results and messages is what pg_get_expr prints (for ISO DateStyle).
"""

from __future__ import annotations

import calendar
import re
import string
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

try:
    from psycopg import sql
    from psycopg.pq import Format
except ImportError:  # pg_client reports the missing library before anything here runs
    pass

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import MAX_IDENTIFIER_BYTES, parse_qualified_name

STRATEGIES = ("hash", "range", "list")
TIME_TYPES = ("date", "timestamp", "timestamptz")
INTEGER_TYPES = ("int2", "int4", "int8")
# interval name -> (months, days)
INTERVALS = {"day": (0, 1), "week": (0, 7), "month": (1, 0), "year": (12, 0)}
AGE_UNITS = {
    "day": (0, 1),
    "days": (0, 1),
    "d": (0, 1),
    "week": (0, 7),
    "weeks": (0, 7),
    "w": (0, 7),
    "month": (1, 0),
    "months": (1, 0),
    "mon": (1, 0),
    "mons": (1, 0),
    "year": (12, 0),
    "years": (12, 0),
    "y": (12, 0),
}
DEFAULT_TEMPLATES = {
    "hash": "{table}_p{remainder}",
    "list": "{table}_{suffix}",
    "day": "{table}_p{start:%Y%m%d}",
    "week": "{table}_p{start:%Y%m%d}",
    "month": "{table}_p{start:%Y%m}",
    "year": "{table}_p{start:%Y}",
    "step": "{table}_p{start}",
}
PLACEHOLDERS = {
    "hash": ("table", "schema", "modulus", "remainder"),
    "range": ("table", "schema", "start", "end"),
    "list": ("table", "schema", "suffix"),
}
DEFAULT_PREMAKE = 3
MAX_PARTITIONS = 10000  # a typo (day for month, a start decades back) must not create a million tables
UTC = timezone(timedelta(0))  # datetime.UTC is Python 3.11+; modules run on 3.9
RELKINDS = {"r": "plain table", "v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence", "i": "index", "c": "type"}


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


def check_template(template: str, strategy: str) -> None:
    allowed = PLACEHOLDERS[strategy]
    try:
        fields = [part[1] for part in string.Formatter().parse(template) if part[1] is not None]
    except ValueError as exc:
        raise ValueError(f"name_template {template!r} is not a valid template: {exc}") from None
    for name in fields:
        if name not in allowed:
            shown = ", ".join("{" + placeholder + "}" for placeholder in allowed)
            raise ValueError(f"name_template {template!r} uses {{{name}}}; {strategy} partitions can use {shown}")
    if not fields:
        raise ValueError(f"name_template {template!r} has no placeholder, so every partition would get the same name")


def render_name(template: str, fields: dict) -> str:
    try:
        name = template.format(**fields)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"name_template {template!r} cannot format {fields}: {exc}") from None
    if not name:
        raise ValueError(f"name_template {template!r} gives an empty name")
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"partition name {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes (PostgreSQL would truncate it): shorten name_template"
        )
    return name


def list_suffix(values: list, index: int) -> str:
    """A name suffix from list values: ['EU', 'uk-1'] -> 'eu_uk_1'."""
    words = [re.sub(r"[^0-9A-Za-z]+", "_", "null" if value is None else str(value)).strip("_").lower() for value in values]
    suffix = "_".join(word for word in words if word)
    return suffix or f"p{index}"


# Interval arithmetic -------------------------------------------------------------------------
def shift(value, months: int = 0, days: int = 0):
    """Calendar arithmetic on a date/datetime: months first (day clamped), then days (wall clock)."""
    if months:
        total = value.month - 1 + months
        year, month = value.year + total // 12, total % 12 + 1
        value = value.replace(year=year, month=month, day=min(value.day, calendar.monthrange(year, month)[1]))
    if days:
        value = value + timedelta(days=days)
    return value


def floor_time(value, interval: str):
    """The start of the interval that contains value (weeks start on Monday)."""
    if isinstance(value, datetime):
        value = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        value = value - timedelta(days=value.weekday())
    elif interval == "month":
        value = value.replace(day=1)
    elif interval == "year":
        value = value.replace(month=1, day=1)
    return value


def time_ranges(interval: str, now, start=None, lookback: int = 0, premake: int = DEFAULT_PREMAKE) -> list[tuple]:
    """[lower, upper) of every partition from start (or `lookback` intervals before now's) to
    the one `premake` intervals after now's (or after start's, when start is later)."""
    months, days = INTERVALS[interval]
    current = floor_time(now, interval)
    first = floor_time(start, interval) if start is not None else shift(current, -months * lookback, -days * lookback)
    last = shift(max(current, first), months * premake, days * premake)
    return _walk(first, last, lambda value: shift(value, months, days))


def integer_ranges(step: int, start: int | None = None, current_max: int | None = None, lookback: int = 0, premake: int = DEFAULT_PREMAKE):
    """[lower, upper) of every partition on the grid start + k*step (0 + k*step without start),
    from start (or `lookback` steps before the current one) to `premake` steps after the one
    holding the key's current maximum (or start)."""
    origin = 0 if start is None else start
    anchor = origin if current_max is None else (current_max if start is None else max(start, current_max))
    current = origin + ((anchor - origin) // step) * step
    first = start if start is not None else current - lookback * step
    last = max(current, first) + premake * step
    return _walk(first, last, lambda value: value + step)


def _walk(first, last, advance) -> list[tuple]:
    ranges = []
    lower = first
    while lower <= last:
        upper = advance(lower)
        ranges.append((lower, upper))
        lower = upper
        if len(ranges) > MAX_PARTITIONS:
            raise ValueError(
                f"more than {MAX_PARTITIONS} partitions from {pg_text(first)} to {pg_text(last)}: use a later start or a longer interval"
            )
    return ranges


def parse_age(value):
    """retention -> an int (integer keys) or (months, days): {value: 6, unit: month}, '6 months', '1 year 2 weeks'."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"retention {value!r} is not an age: use e.g. {{value: 6, unit: month}} or '6 months'")
    if isinstance(value, dict):
        if set(value) != {"value", "unit"}:
            raise ValueError(f"retention {value!r}: give exactly 'value' and 'unit' (day, week, month, year)")
        return parse_age(f"{value['value']} {value['unit']}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"retention {value} must be positive")
        return value
    text = str(value).strip().lower()
    if re.fullmatch(r"\d+", text):
        return parse_age(int(text))
    parts = re.findall(r"(\d+)\s*([a-z]+)\s*", text)
    if not parts or "".join(f"{number}{unit}" for number, unit in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"retention {value!r} is not an age: use e.g. '6 months', '30 days', '1 year'")
    months = days = 0
    for number, unit in parts:
        if unit not in AGE_UNITS:
            raise ValueError(f"retention {value!r}: unknown unit {unit!r} (use day, week, month or year)")
        unit_months, unit_days = AGE_UNITS[unit]
        months += int(number) * unit_months
        days += int(number) * unit_days
    if months == 0 and days == 0:
        raise ValueError(f"retention {value!r} must be positive")
    return (months, days)


_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?")


def parse_time(value, type_name: str, tz):
    """start for a date/timestamp/timestamptz key, in the key's type (naive times are in `tz`)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        match = _TIME.fullmatch(str(value).strip())
        if not match:
            raise ValueError(f"start {value!r} is not a date or timestamp: use YYYY-MM-DD or YYYY-MM-DD HH:MM:SS[+HH:MM]")
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        try:
            moment = datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), int((fraction or "0").ljust(6, "0"))
            )
        except ValueError as exc:
            raise ValueError(f"start {value!r}: {exc}") from None
        if offset:
            if offset == "Z":
                moment = moment.replace(tzinfo=UTC)
            else:
                digits = offset[1:].replace(":", "")
                delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
                moment = moment.replace(tzinfo=timezone(delta if offset[0] == "+" else -delta))
    if type_name == "date":
        return moment.date()
    if type_name == "timestamp":
        return moment.replace(tzinfo=None)
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment.astimezone(tz)


def parse_integer(value, option: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{option} {value!r} is not an integer")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{option} {value!r} is not an integer (the partition key is an integer column)")
    return int(text)


# What the task asks for ----------------------------------------------------------------------
@dataclass
class Spec:
    """The module's options, validated (everything that needs no database)."""

    schema: str | None
    table: str
    strategy: str
    modulus: int | None = None
    interval: str | None = None
    step: int | None = None
    start: object = None
    lookback: int | None = None
    premake: int = DEFAULT_PREMAKE
    values: list = field(default_factory=list)  # [(suffix, [values])]
    default_partition: bool = False
    name_template: str = ""
    retention: object = None
    retention_drop: bool = False
    lock_timeout: str | None = None


def build_spec(params: dict) -> Spec:
    """Validate the options that need no database; raise ValueError naming the fix."""
    strategy = params["strategy"]
    if params.get("schema"):
        schema, table = params["schema"], params["table"]
    else:
        try:
            schema, table = parse_qualified_name(params["table"], default_schema=None)
        except PgError as exc:
            raise ValueError(str(exc)) from None
    not_for = {
        "hash": ("interval", "step", "start", "lookback", "premake", "values", "retention"),
        "range": ("modulus", "values"),
        "list": ("modulus", "interval", "step", "start", "lookback", "premake", "retention"),
    }[strategy]
    for option in not_for:
        if params.get(option) is not None:
            raise ValueError(f"{option} does not apply to strategy: {strategy}; remove it")
    if params.get("retention_drop") and params.get("retention") is None:
        raise ValueError("retention_drop needs retention: say how old a partition must be to go")
    spec = Spec(
        schema=schema,
        table=table,
        strategy=strategy,
        default_partition=bool(params.get("default_partition")),
        retention_drop=bool(params.get("retention_drop")),
        lock_timeout=params.get("lock_timeout"),
    )
    if strategy == "hash":
        if params.get("modulus") is None or params["modulus"] < 1:
            raise ValueError("strategy: hash needs modulus, the number of partitions (1 or more)")
        if spec.default_partition:
            raise ValueError("a hash-partitioned table cannot have a DEFAULT partition: remove default_partition")
        spec.modulus = params["modulus"]
        template_key = "hash"
    elif strategy == "range":
        if (params.get("interval") is None) == (params.get("step") is None):
            raise ValueError(
                "strategy: range needs exactly one of interval (day, week, month, year: date/timestamp keys) or step (integer keys)"
            )
        if params.get("step") is not None and params["step"] < 1:
            raise ValueError(f"step {params['step']} must be positive")
        if params.get("start") is not None and params.get("lookback") is not None:
            raise ValueError("give start or lookback, not both")
        for option in ("premake", "lookback"):
            if params.get(option) is not None and params[option] < 0:
                raise ValueError(f"{option} {params[option]} must be 0 or more")
        spec.interval, spec.step, spec.start = params.get("interval"), params.get("step"), params.get("start")
        spec.lookback = params.get("lookback")
        spec.premake = DEFAULT_PREMAKE if params.get("premake") is None else params["premake"]
        if params.get("retention") is not None:
            spec.retention = parse_age(params["retention"])
        template_key = spec.interval or "step"
    else:
        spec.values = normalise_values(params.get("values"))
        if not spec.values and not spec.default_partition:
            raise ValueError("strategy: list needs values (suffix: [values]) and/or default_partition: true")
        template_key = "list"
    spec.name_template = params.get("name_template") or DEFAULT_TEMPLATES[template_key]
    check_template(spec.name_template, strategy)
    return spec


def normalise_values(values) -> list:
    """values as a dict (suffix -> values) or a list of lists -> [(suffix, [values])]."""
    if values is None:
        return []
    if isinstance(values, dict):
        pairs = [(str(suffix), items) for suffix, items in values.items()]
    elif isinstance(values, list):
        pairs = [(None, items) for items in values]
    else:
        raise ValueError(f"values must be a dict (suffix: [values]) or a list of lists, not {type(values).__name__}")
    result = []
    for index, (suffix, items) in enumerate(pairs):
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        if not items:
            raise ValueError(f"values: partition {suffix if suffix is not None else index} has no values")
        result.append((suffix if suffix is not None else list_suffix(items, index), items))
    suffixes = [pair[0] for pair in result]
    duplicates = sorted({suffix for suffix in suffixes if suffixes.count(suffix) > 1})
    if duplicates:
        raise ValueError(f"values: suffix(es) {', '.join(duplicates)} used twice: give the partitions distinct suffixes")
    return result


# The database side ---------------------------------------------------------------------------
@dataclass
class Partition:
    schema: str
    name: str
    bound: object
    text: str  # as pg_get_expr prints it

    def label(self, parent_schema: str) -> str:
        return self.name if self.schema == parent_schema else f"{self.schema}.{self.name}"


def sort_key(partition: Partition):
    bound = partition.bound
    if isinstance(bound, DefaultBound):
        return (1, (), partition.name)
    if isinstance(bound, HashBound):
        return (0, (bound.remainder, bound.modulus), partition.name)
    if isinstance(bound, RangeBound):
        return (0, (0,) if bound.lower is None else (1, norm(bound.lower)), partition.name)
    return (0, (), partition.name)


@dataclass
class Plan:
    existing: list
    create: list = field(default_factory=list)
    detach: list = field(default_factory=list)
    conflicts: list = field(default_factory=list)

    def after(self) -> list:
        gone = {(p.schema, p.name) for p in self.detach}
        return sorted([p for p in self.existing if (p.schema, p.name) not in gone] + self.create, key=sort_key)


class PartitionSet(ManagedObject):
    """The partitions of one partitioned table; attrs() is {"partitions": {name: bound}}."""

    kind = "partition_set"

    def __init__(self, client, spec: Spec):
        self.spec = spec
        self.plan: Plan | None = None
        super().__init__(client, spec.table)
        self.read_table()

    # The parent ---------------------------------------------------------------------------
    def read_table(self) -> None:
        spec = self.spec
        given = f"{spec.schema}.{spec.table}" if spec.schema else spec.table
        qualified = ident(spec.schema, spec.table) if spec.schema else ident(spec.table)
        row = self.client.query_one("SELECT pg_catalog.to_regclass(%s)::oid AS oid", (self.client.render(qualified),))
        if row["oid"] is None:
            hint = "" if spec.schema else " (looked up in the search_path: write schema.table if it lives elsewhere)"
            raise PgError(
                f"table {given} does not exist in database '{self.client.params.get('login_db')}' on {self.client.endpoint}{hint}: "
                f"create it first as a partitioned table (CREATE TABLE ... PARTITION BY {spec.strategy.upper()} (column)), or fix 'table'"
            )
        self.oid = row["oid"]
        info = self.client.query_one(
            "SELECT n.nspname AS schema, c.relname AS name, c.relkind, p.partstrat, p.partnatts, "
            "pg_catalog.pg_get_partkeydef(c.oid) AS keydef, a.attname AS key_column, t.oid AS key_oid, t.typname AS key_type "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_catalog.pg_partitioned_table p ON p.partrelid = c.oid "
            "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0] AND a.attnum > 0 "
            "LEFT JOIN pg_catalog.pg_opclass o ON o.oid = p.partclass[0] "
            "LEFT JOIN pg_catalog.pg_type t ON t.oid = COALESCE(a.atttypid, o.opcintype) "
            "WHERE c.oid = %s",
            (self.oid,),
        )
        self.schema, self.table = info["schema"], info["name"]
        self.display = f"{self.schema}.{self.table}"
        self.parent = ident(self.schema, self.table)
        where = f"on {self.client.endpoint}"
        if info["relkind"] != "p":
            if info["relkind"] == "r":
                raise PgError(
                    f"table {self.display} {where} is not partitioned: PostgreSQL cannot partition an existing table in place; "
                    f"create it with PARTITION BY {spec.strategy.upper()} (column) (on green: before the initial sync) "
                    f"and run this task again"
                )
            kind = RELKINDS.get(info["relkind"], f"relation of kind {info['relkind']!r}")
            raise PgError(f"{self.display} {where} is a {kind}, not a partitioned table: fix 'table'")
        actual = {"h": "hash", "r": "range", "l": "list"}[info["partstrat"]]
        if actual != spec.strategy:
            raise PgError(
                f"table {self.display} {where} is partitioned by {info['keydef']}, not by {spec.strategy}: "
                f"set strategy: {actual}, or recreate the table with PARTITION BY {spec.strategy.upper()} (...)"
            )
        self.keydef, self.key_column, self.key_type, self.key_oid = info["keydef"], info["key_column"], info["key_type"], info["key_oid"]
        self.tz = self.client.conn.info.timezone
        if spec.strategy == "range":
            if info["partnatts"] != 1 or self.key_column is None:
                raise PgError(
                    f"table {self.display} is partitioned by {self.keydef}: range partitions are managed for a single key column only"
                )
            if spec.interval and self.key_type not in TIME_TYPES:
                raise PgError(
                    f"table {self.display} is partitioned by {self.keydef} of type {self.key_type}: "
                    f"interval needs a date/timestamp key; use step"
                )
            if spec.step and self.key_type not in INTEGER_TYPES:
                raise PgError(
                    f"table {self.display} is partitioned by {self.keydef} of type {self.key_type}: step needs an integer key; use interval"
                )
            retention_is_count = isinstance(spec.retention, int)
            if spec.retention is not None and retention_is_count != bool(spec.step):
                wanted = "a number (of key units)" if spec.step else "an age such as '6 months'"
                raise PgError(f"retention for {self.display} (key type {self.key_type}) must be {wanted}")
        loader_class = self.client.conn.adapters.get_loader(self.key_oid, Format.TEXT) if self.key_oid else None
        self._loader = loader_class(self.key_oid, self.client.conn) if loader_class else None

    def load(self, raw: str):
        """A value printed by PostgreSQL (or given by the user) in the key column's type."""
        if self.key_type == "bool":
            return raw.strip().lower() in ("t", "true", "yes", "on", "1")
        if self._loader is None:
            return raw
        try:
            return self._loader.load(raw.encode("utf-8"))
        except Exception as exc:  # psycopg raises DataError and friends
            raise PgError(f"{raw!r} is not a valid {self.key_type} for the key {self.keydef} of {self.display}: {exc}") from None

    def typed(self, value):
        if value is None:
            return None
        if self.key_type in INTEGER_TYPES and isinstance(value, int) and not isinstance(value, bool):
            return value
        if self.key_type == "bool" and isinstance(value, bool):
            return value
        return self.load(str(value))

    # What is there ------------------------------------------------------------------------
    def read_partitions(self) -> list:
        rows = self.client.query(
            "SELECT n.nspname AS schema, c.relname AS name, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound "
            "FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = %s",
            (self.oid,),
        )
        partitions = []
        for row in rows:
            try:
                bound = parse_bound(row["bound"], self.load)
            except ValueError as exc:
                raise PgError(f"partition {row['schema']}.{row['name']} of {self.display}: {exc}") from None
            partitions.append(Partition(row["schema"], row["name"], bound, row["bound"]))
        return sorted(partitions, key=sort_key)

    def exists(self) -> bool:
        return True  # read_table() failed already if the table is not there

    def attrs(self) -> dict:
        return {"partitions": {p.label(self.schema): p.text for p in self.read_partitions()}}

    # What should be there -----------------------------------------------------------------
    def now(self):
        return self.client.query_one("SELECT pg_catalog.now() AS now")["now"]

    def current_max(self):
        statement = sql.SQL("SELECT max({}) AS value FROM {}").format(ident(self.key_column), self.parent)
        return self.client.query_one(statement)["value"]

    def partition_name(self, fields: dict) -> str:
        try:
            return render_name(self.spec.name_template, dict(fields, table=self.table, schema=self.schema))
        except ValueError as exc:
            raise PgError(str(exc)) from None

    def expected(self) -> tuple[list, object]:
        """(the partitions this task wants, the retention cutoff or None)."""
        spec = self.spec
        cutoff = None
        if spec.strategy == "hash":
            wanted = [
                (self.partition_name({"modulus": spec.modulus, "remainder": r}), HashBound(spec.modulus, r)) for r in range(spec.modulus)
            ]
        elif spec.strategy == "range":
            try:
                if spec.interval:
                    now = self.now().astimezone(self.tz)
                    now = {"date": now.date(), "timestamp": now.replace(tzinfo=None)}.get(self.key_type, now)
                    start = None if spec.start is None else parse_time(spec.start, self.key_type, self.tz)
                    ranges = time_ranges(spec.interval, now, start, spec.lookback or 0, spec.premake)
                    if spec.retention is not None:
                        cutoff = shift(now, -spec.retention[0], -spec.retention[1])
                else:
                    start = None if spec.start is None else parse_integer(spec.start, "start")
                    current_max = self.current_max()
                    ranges = integer_ranges(spec.step, start, current_max, spec.lookback or 0, spec.premake)
                    anchor = current_max if current_max is not None else start
                    if spec.retention is not None and anchor is not None:
                        cutoff = anchor - spec.retention
            except ValueError as exc:
                raise PgError(f"{self.display}: {exc}") from None
            if cutoff is not None:
                ranges = [(lower, upper) for lower, upper in ranges if norm(upper) > norm(cutoff)]
            wanted = [(self.partition_name({"start": lower, "end": upper}), RangeBound(lower, upper)) for lower, upper in ranges]
        else:
            wanted, seen = [], {}
            for suffix, items in spec.values:
                values = tuple(self.typed(value) for value in items)
                for value in values:
                    if norm(value) in seen:
                        raise PgError(
                            f"values: {pg_text(value)} is listed for both {seen[norm(value)]!r} and {suffix!r}: "
                            f"a value goes in one partition"
                        )
                    seen[norm(value)] = suffix
                wanted.append((self.partition_name({"suffix": suffix}), ListBound(values)))
        if spec.default_partition:
            wanted.append((f"{self.table}_default", DefaultBound()))
        names = [pair[0] for pair in wanted]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise PgError(
                f"name_template {spec.name_template!r} gives the same name to several partitions ({', '.join(duplicates[:5])}): "
                f"include {{start}} with a finer format, or {{remainder}}/{{suffix}}"
            )
        return [Partition(self.schema, name, bound, bound_text(bound, self.key_type)) for name, bound in wanted], cutoff

    def make_plan(self) -> Plan:
        existing = self.read_partitions()
        wanted, cutoff = self.expected()
        plan = Plan(existing=existing)
        if cutoff is not None:
            plan.detach = [
                p for p in existing if isinstance(p.bound, RangeBound) and p.bound.upper is not None and norm(p.bound.upper) <= norm(cutoff)
            ]
        gone = {(p.schema, p.name) for p in plan.detach}
        staying = [p for p in existing if (p.schema, p.name) not in gone]
        by_name = {(p.schema, p.name): p for p in staying}
        for want in wanted:
            if isinstance(want.bound, DefaultBound):
                if any(isinstance(p.bound, DefaultBound) for p in staying):
                    continue  # one DEFAULT partition per table, whatever its name
            elif any(same_bound(p.bound, want.bound) for p in staying):
                continue  # there already, possibly under another name
            clash = by_name.get((want.schema, want.name))
            if clash is not None:
                plan.conflicts.append(f"partition {clash.label(self.schema)} exists with bounds {clash.text}; expected {want.text}")
                continue
            for other in staying:
                if overlaps(other.bound, want.bound):
                    plan.conflicts.append(
                        f"partition {other.label(self.schema)} ({other.text}) overlaps {want.name} ({want.text}) "
                        f"that this task would create"
                    )
                    break
            else:
                plan.create.append(want)
        if plan.create:
            taken = self.client.query(
                "SELECT c.relname AS name, c.relkind, c.relispartition FROM pg_catalog.pg_class c "
                "WHERE c.relnamespace = (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = %s) AND c.relname = ANY(%s)",
                (self.oid, [p.name for p in plan.create]),
            )
            for row in taken:
                kind = RELKINDS.get(row["relkind"], "relation")
                what = f"a {kind}" + (" that is a partition of another table" if row["relispartition"] else "")
                plan.conflicts.append(
                    f"{self.schema}.{row['name']} already exists and is not a partition of {self.display} ({what}): "
                    f"rename or drop it, or set name_template"
                )
        return plan

    def check(self, plan: Plan) -> None:
        if plan.conflicts:
            shown = "; ".join(plan.conflicts[:5]) + (f"; and {len(plan.conflicts) - 5} more" if len(plan.conflicts) > 5 else "")
            raise PgError(
                f"table {self.display} on {self.client.endpoint}: existing partitions conflict with this task, "
                f"nothing was changed: {shown}. Detach or rename the conflicting partitions, "
                f"or change the task (modulus, interval, start, values, name_template) to match them"
            )

    # ManagedObject ----------------------------------------------------------------------------
    def create(self, desired: dict) -> None:  # the set always exists; changes go through update
        self.update({}, desired)

    def update(self, current: dict, changes: dict) -> None:
        with self.client.transaction():
            if not self.client.check_mode:
                if self.spec.lock_timeout:
                    self.client.query("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (self.spec.lock_timeout,))
                # One run at a time; rows keep flowing (SHARE UPDATE EXCLUSIVE blocks only DDL/VACUUM).
                self.client.query(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(self.parent))
                self.plan = self.make_plan()  # again, under the lock
                self.check(self.plan)
            for partition in self.plan.detach:
                child = ident(partition.schema, partition.name)
                self.client.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(self.parent, child))
                if self.spec.retention_drop:
                    self.client.execute(sql.SQL("DROP TABLE {}").format(child))
            for partition in self.plan.create:
                self.client.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} {}").format(
                        ident(partition.schema, partition.name), self.parent, bound_sql(partition.bound)
                    )
                )

    def drop(self, current: dict) -> None:
        raise NotImplementedError("pg_partition does not drop partition sets")


def manage_partitions(client, spec: Spec) -> dict:
    """The module's work: plan, fail on conflicts, apply in one transaction, report."""
    partition_set = PartitionSet(client, spec)
    partition_set.plan = partition_set.make_plan()
    partition_set.check(partition_set.plan)
    desired = {"partitions": {p.label(partition_set.schema): p.text for p in partition_set.plan.after()}}
    try:
        result = partition_set.ensure("present", desired)
    except PgError as exc:
        if "lock timeout" in str(exc):
            raise PgError(f"{exc}: another session holds a lock on {partition_set.display}; retry, or raise lock_timeout") from None
        raise
    after = result.pop(PartitionSet.kind)
    result.pop("state", None)  # always "present": the table exists or the task failed
    plan = partition_set.plan
    detached = [p.label(partition_set.schema) for p in plan.detach]
    result.update(
        table=partition_set.display,
        strategy=spec.strategy,
        partitions=[{"name": name, "bound": bound} for name, bound in after.get("partitions", {}).items()],
        created=[p.label(partition_set.schema) for p in plan.create],
        detached=detached,
        dropped=detached if spec.retention_drop else [],
    )
    return result
