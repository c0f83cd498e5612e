# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a pg_partition task asks for: its options validated into a Spec, partition names from
templates, interval arithmetic, and the ranges premake and retention cover.

Pure: no database."""

from __future__ import annotations

import calendar
import re
import string
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import MAX_IDENTIFIER_BYTES, parse_qualified_name
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.partition_bounds import UTC, pg_text

STRATEGIES = ("hash", "range", "list")
TIME_TYPES = ("date", "timestamp", "timestamptz")
INTEGER_TYPES = ("int2", "int4", "int8")
# interval name -> (months, days)
INTERVALS = {"day": (0, 1), "week": (0, 7), "month": (1, 0), "year": (12, 0)}
# the spellings a retention age may use -> (months, days) of the interval they name
AGE_UNITS = {
    spelling: INTERVALS[interval]
    for interval, spellings in {
        "day": ("day", "days", "d"),
        "week": ("week", "weeks", "w"),
        "month": ("month", "months", "mon", "mons"),
        "year": ("year", "years", "y"),
    }.items()
    for spelling in spellings
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
RELKINDS = {"r": "plain table", "v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence", "i": "index", "c": "type"}


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
