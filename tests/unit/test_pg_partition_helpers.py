"""The pure parts of pg_partition: names, interval arithmetic, bounds, option validation."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import parse_qualified_name
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.partition_bounds import (
    DefaultBound,
    HashBound,
    ListBound,
    RangeBound,
    bound_text,
    overlaps,
    parse_bound,
    pg_text,
    same_bound,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.partition_spec import (
    DEFAULT_TEMPLATES,
    MAX_PARTITIONS,
    build_spec,
    check_template,
    floor_time,
    integer_ranges,
    list_suffix,
    normalise_values,
    parse_age,
    parse_integer,
    parse_time,
    render_name,
    shift,
    time_ranges,
)

UTC = timezone.utc  # noqa: UP017 - the modules support Python 3.9


def params(**overrides):
    base = dict(
        table="vms",
        schema=None,
        strategy="hash",
        modulus=None,
        interval=None,
        step=None,
        start=None,
        lookback=None,
        premake=None,
        values=None,
        default_partition=False,
        name_template=None,
        retention=None,
        retention_drop=False,
        lock_timeout=None,
    )
    base.update(overrides)
    return base


# Table names --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("vms", (None, "vms")),
        ("public.vms", ("public", "vms")),
        ("Public.VMs", ("Public", "VMs")),  # no case folding
        ('"my.schema"."a""b"', ("my.schema", 'a"b')),
        ('app."v.ms"', ("app", "v.ms")),
        ('a"; DROP TABLE x; --', (None, 'a"; DROP TABLE x; --')),
    ],
)
def test_parse_table_name(text, parsed):
    assert parse_qualified_name(text, default_schema=None) == parsed


@pytest.mark.parametrize("bad", ["a.b.c", ".vms", "vms.", '"unterminated', '"a"b'])
def test_parse_table_name_rejects(bad):
    with pytest.raises(PgError, match="table"):
        parse_qualified_name(bad, default_schema=None)


# Naming -------------------------------------------------------------------------------------
def test_default_templates():
    fields = dict(table="vm_metrics", schema="public")
    assert render_name(DEFAULT_TEMPLATES["hash"], dict(fields, table="vms", modulus=100, remainder=7)) == "vms_p7"
    assert render_name(DEFAULT_TEMPLATES["month"], dict(fields, start=date(2026, 5, 1), end=date(2026, 6, 1))) == "vm_metrics_p202605"
    assert render_name(DEFAULT_TEMPLATES["day"], dict(fields, start=datetime(2026, 5, 3, tzinfo=UTC), end=None)) == "vm_metrics_p20260503"
    assert render_name(DEFAULT_TEMPLATES["year"], dict(fields, start=date(2026, 1, 1), end=None)) == "vm_metrics_p2026"
    assert render_name(DEFAULT_TEMPLATES["step"], dict(fields, start=-1000, end=0)) == "vm_metrics_p-1000"
    assert render_name(DEFAULT_TEMPLATES["list"], dict(fields, table="tenants", suffix="eu")) == "tenants_eu"


def test_template_placeholders_are_checked():
    check_template("{schema}_{table}_{start:%Y_%m}_{end:%d}", "range")
    with pytest.raises(ValueError, match=r"uses \{remainder\}; range partitions can use \{table\}, \{schema\}, \{start\}, \{end\}"):
        check_template("{table}_{remainder}", "range")
    with pytest.raises(ValueError, match=r"uses \{start.year\}"):
        check_template("{table}_{start.year}", "range")  # no attribute access
    with pytest.raises(ValueError, match="no placeholder"):
        check_template("fixed", "hash")
    with pytest.raises(ValueError, match="not a valid template"):
        check_template("{table", "hash")


def test_names_longer_than_63_bytes_are_refused():
    assert render_name("{table}", {"table": "x" * 63}) == "x" * 63
    with pytest.raises(ValueError, match="longer than 63 bytes"):
        render_name("{table}_p{remainder}", {"table": "x" * 61, "remainder": 10})
    with pytest.raises(ValueError, match="longer than 63 bytes"):
        render_name("{table}", {"table": "é" * 32})  # 64 bytes in UTF-8


def test_bad_format_spec_is_a_value_error():
    with pytest.raises(ValueError, match="cannot format"):
        render_name("{table}_{start:%Y}", {"table": "t", "start": 1000})  # %Y on an integer key


def test_list_suffix():
    assert list_suffix(["EU", "uk-1"], 0) == "eu_uk_1"
    assert list_suffix([1, 2], 0) == "1_2"
    assert list_suffix([None], 0) == "null"
    assert list_suffix(["--"], 3) == "p3"


def test_normalise_values():
    assert normalise_values({"eu": ["de", "fr"], "us": "us"}) == [("eu", ["de", "fr"]), ("us", ["us"])]
    assert normalise_values([["de", "fr"], [1]]) == [("de_fr", ["de", "fr"]), ("1", [1])]
    with pytest.raises(ValueError, match="has no values"):
        normalise_values({"eu": []})
    with pytest.raises(ValueError, match=r"suffix.*used twice"):
        normalise_values([["a-b"], ["a b"]])
    with pytest.raises(ValueError, match="dict"):
        normalise_values("eu")


# Interval arithmetic ------------------------------------------------------------------------
def test_shift_clamps_the_day_and_crosses_years():
    assert shift(date(2026, 1, 31), months=1) == date(2026, 2, 28)
    assert shift(date(2024, 3, 31), months=-1) == date(2024, 2, 29)
    assert shift(date(2026, 11, 1), months=3) == date(2027, 2, 1)
    assert shift(date(2026, 1, 1), months=-13) == date(2024, 12, 1)
    assert shift(date(2026, 1, 1), days=-1) == date(2025, 12, 31)
    assert shift(date(2026, 5, 31), months=-6, days=-7) == date(2025, 11, 23)


def test_floor_time():
    moment = datetime(2026, 11, 21, 5, 26, 58, 3910, tzinfo=UTC)  # a Saturday
    assert floor_time(moment, "day") == datetime(2026, 11, 21, tzinfo=UTC)
    assert floor_time(moment, "week") == datetime(2026, 11, 16, tzinfo=UTC)  # Monday
    assert floor_time(moment, "month") == datetime(2026, 11, 1, tzinfo=UTC)
    assert floor_time(moment, "year") == datetime(2026, 1, 1, tzinfo=UTC)
    assert floor_time(date(2026, 11, 21), "month") == date(2026, 11, 1)


def test_monthly_ranges_cover_start_to_now_plus_premake():
    now = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
    ranges = time_ranges("month", now, start=datetime(2026, 5, 10, tzinfo=UTC), premake=3)
    assert ranges[0] == (datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC))
    assert ranges[-1] == (datetime(2027, 2, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC))
    assert len(ranges) == 10
    assert all(one[1] == following[0] for one, following in itertools.pairwise(ranges))  # contiguous
    assert time_ranges("month", now, lookback=6, premake=3) == ranges


def test_ranges_from_a_future_start_and_with_zero_premake():
    now = date(2026, 11, 21)
    assert time_ranges("year", now, start=date(2030, 6, 1), premake=1) == [
        (date(2030, 1, 1), date(2031, 1, 1)),
        (date(2031, 1, 1), date(2032, 1, 1)),
    ]
    assert time_ranges("week", now, premake=0) == [(date(2026, 11, 16), date(2026, 11, 23))]


def test_daily_ranges_follow_the_wall_clock_across_dst():
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 28, 12, 0, tzinfo=berlin)  # DST starts on the 29th
    ranges = time_ranges("day", now, premake=2)
    assert [lower.day for lower, upper in ranges] == [28, 29, 30]
    assert all(lower.hour == 0 for lower, upper in ranges)
    assert ranges[1][1].astimezone(UTC) - ranges[1][0].astimezone(UTC) == timedelta(hours=23)  # the short day
    assert pg_text(ranges[2][0]) == "2026-03-30 00:00:00+02"


def test_too_many_partitions_is_an_error():
    with pytest.raises(ValueError, match=f"more than {MAX_PARTITIONS} partitions"):
        time_ranges("day", date(2026, 11, 21), start=date(1990, 1, 1))


def test_integer_ranges():
    assert integer_ranges(1000, start=0, premake=2) == [(0, 1000), (1000, 2000), (2000, 3000)]
    # the current maximum moves the end, on start's grid
    assert integer_ranges(1000, start=500, current_max=2600, premake=1)[-2:] == [(2500, 3500), (3500, 4500)]
    assert integer_ranges(1000, start=500, current_max=2600, premake=1)[0] == (500, 1500)
    # no start: multiples of step, from the maximum's partition back `lookback` steps
    assert integer_ranges(100, current_max=-150, lookback=1, premake=0) == [(-300, -200), (-200, -100)]
    assert integer_ranges(10, premake=0) == [(0, 10)]


# Retention and start ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "age"),
    [
        ({"value": 6, "unit": "month"}, (6, 0)),
        ("6 months", (6, 0)),
        ("1 year 2 weeks", (12, 14)),
        ("30d", (0, 30)),
        ({"value": "2", "unit": "years"}, (24, 0)),
        (5000, 5000),
        ("5000", 5000),
    ],
)
def test_parse_age(given, age):
    assert parse_age(given) == age


@pytest.mark.parametrize("bad", ["6 months ago", "six months", "6 fortnights", "0 days", 0, -3, True, {"value": 6}, None])
def test_parse_age_rejects(bad):
    with pytest.raises(ValueError, match="retention"):
        parse_age(bad)


def test_parse_time():
    tz = ZoneInfo("Europe/Berlin")
    assert parse_time("2026-05-10", "date", tz) == date(2026, 5, 10)
    assert parse_time("2026-05-10 13:45", "timestamp", tz) == datetime(2026, 5, 10, 13, 45)
    assert parse_time("2026-05-10", "timestamptz", tz) == datetime(2026, 5, 10, tzinfo=tz)
    assert parse_time("2026-05-10T22:30:00Z", "timestamptz", tz) == datetime(2026, 5, 11, 0, 30, tzinfo=tz)
    assert parse_time("2026-05-10 00:00:00-03:30", "timestamptz", UTC) == datetime(2026, 5, 10, 3, 30, tzinfo=UTC)
    assert parse_time(date(2026, 5, 10), "timestamptz", UTC) == datetime(2026, 5, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a date or timestamp"):
        parse_time("10/05/2026", "date", tz)
    with pytest.raises(ValueError, match="start '2026-02-30'"):
        parse_time("2026-02-30", "date", tz)


def test_parse_integer():
    assert parse_integer("-20", "start") == -20
    assert parse_integer(7, "start") == 7
    with pytest.raises(ValueError, match="not an integer"):
        parse_integer("2026-01-01", "start")
    with pytest.raises(ValueError, match="not an integer"):
        parse_integer(True, "start")


# Bounds -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("FOR VALUES WITH (modulus 100, remainder 7)", HashBound(100, 7)),
        ("FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')", RangeBound("2024-01-01", "2024-02-01")),
        ("FOR VALUES FROM (MINVALUE) TO ('0')", RangeBound(None, "0")),
        ("FOR VALUES FROM (500) TO (MAXVALUE)", RangeBound("500", None)),
        ("FOR VALUES IN ('eu', 'o''b, c)', NULL, '')", ListBound(("eu", "o'b, c)", None, ""))),
        ("FOR VALUES IN (1, '-2', true)", ListBound(("1", "-2", "true"))),
        ("FOR VALUES IN (E'a\\\\b')", ListBound(("a\\b",))),
        ("DEFAULT", DefaultBound()),
    ],
)
def test_parse_bound(text, bound):
    assert parse_bound(text) == bound


def test_parse_bound_loads_values_in_the_key_type():
    assert parse_bound("FOR VALUES FROM ('-100') TO ('0')", int) == RangeBound(-100, 0)


@pytest.mark.parametrize(
    "bad",
    [
        "FOR VALUES FROM ('a', 1) TO ('b', 2)",
        "FOR VALUES IN ('a'",
        "FOR VALUES FROM ('a') UNTIL ('b')",
        "PARTITION",
        "FOR VALUES IN ('a') x",
    ],
)
def test_parse_bound_rejects(bad):
    with pytest.raises(ValueError, match="cannot read partition bound"):
        parse_bound(bad)


def test_bound_text_is_what_pg_get_expr_prints():
    berlin = ZoneInfo("Europe/Berlin")
    month = RangeBound(datetime(2026, 1, 1, tzinfo=berlin), datetime(2026, 7, 1, tzinfo=berlin))
    assert bound_text(month, "timestamptz") == "FOR VALUES FROM ('2026-01-01 00:00:00+01') TO ('2026-07-01 00:00:00+02')"
    assert bound_text(RangeBound(datetime(2026, 1, 1, 6, 30), None), "timestamp") == "FOR VALUES FROM ('2026-01-01 06:30:00') TO (MAXVALUE)"
    assert bound_text(RangeBound(date(2026, 1, 1), date(2026, 2, 1)), "date") == "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')"
    assert bound_text(RangeBound(-100, 0), "int8") == "FOR VALUES FROM ('-100') TO ('0')"
    assert bound_text(RangeBound(-100, 0), "int4") == "FOR VALUES FROM ('-100') TO (0)"
    assert bound_text(ListBound((1, -2, None)), "int4") == "FOR VALUES IN (1, '-2', NULL)"
    assert bound_text(ListBound(("o'b", True)), "text") == "FOR VALUES IN ('o''b', true)"
    assert bound_text(HashBound(4, 1)) == "FOR VALUES WITH (modulus 4, remainder 1)"
    assert bound_text(DefaultBound()) == "DEFAULT"
    india = datetime(2026, 1, 1, tzinfo=ZoneInfo("Asia/Kolkata"))
    assert pg_text(india) == "2026-01-01 00:00:00+05:30"


def test_bound_text_round_trips_through_parse_bound():
    for bound in (HashBound(8, 3), RangeBound("2024-01-01", None), ListBound(("a'b", "c"))):
        assert parse_bound(bound_text(bound, "text")) == bound


def test_same_bound_compares_values_not_spelling():
    berlin = ZoneInfo("Europe/Berlin")
    assert same_bound(RangeBound(datetime(2026, 1, 1, tzinfo=berlin), None), RangeBound(datetime(2025, 12, 31, 23, tzinfo=UTC), None))
    assert same_bound(ListBound(("a", "b")), ListBound(("b", "a")))
    assert not same_bound(ListBound(("a",)), ListBound(("a", "b")))
    assert not same_bound(HashBound(4, 1), HashBound(8, 1))
    assert same_bound(DefaultBound(), DefaultBound())


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        (HashBound(4, 1), HashBound(4, 2), False),
        (HashBound(4, 1), HashBound(8, 5), True),  # 5 % 4 == 1
        (HashBound(4, 1), HashBound(8, 2), False),
        (HashBound(4, 1), HashBound(6, 3), True),  # 6 is not a multiple of 4: PostgreSQL refuses the pair
        (RangeBound(0, 10), RangeBound(10, 20), False),  # upper bounds are exclusive
        (RangeBound(0, 11), RangeBound(10, 20), True),
        (RangeBound(None, 5), RangeBound(0, 10), True),
        (RangeBound(30, None), RangeBound(0, 10), False),
        (ListBound(("a", "b")), ListBound(("c", "b")), True),
        (ListBound(("a", None)), ListBound(("c",)), False),
        (DefaultBound(), ListBound(("a",)), False),
    ],
)
def test_overlaps(first, second, overlap):
    assert overlaps(first, second) is overlap
    assert overlaps(second, first) is overlap  # symmetric


# Option validation --------------------------------------------------------------------------
def test_build_spec_defaults():
    spec = build_spec(params(table="app.vms", modulus=100))
    assert (spec.schema, spec.table, spec.modulus, spec.name_template) == ("app", "vms", 100, "{table}_p{remainder}")
    monthly = build_spec(params(strategy="range", interval="month", lookback=6, retention="12 months"))
    assert (monthly.premake, monthly.name_template, monthly.retention) == (3, "{table}_p{start:%Y%m}", (12, 0))
    listed = build_spec(params(strategy="list", values={"eu": ["de"]}, default_partition=True))
    assert listed.values == [("eu", ["de"])] and listed.name_template == "{table}_{suffix}"
    verbatim = build_spec(params(table="a.b", schema="s", modulus=2))
    assert (verbatim.schema, verbatim.table) == ("s", "a.b")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(modulus=4, premake=2), "premake does not apply to strategy: hash"),
        (dict(modulus=0), "needs modulus"),
        (dict(modulus=4, default_partition=True), "cannot have a DEFAULT partition"),
        (dict(strategy="range"), "exactly one of interval"),
        (dict(strategy="range", interval="month", step=10), "exactly one of interval"),
        (dict(strategy="range", step=0), "step 0 must be positive"),
        (dict(strategy="range", step=10, premake=-1), "premake -1 must be 0 or more"),
        (dict(strategy="range", interval="month", start="2026-01-01", lookback=2), "start or lookback, not both"),
        (dict(strategy="range", interval="month", retention_drop=True), "retention_drop needs retention"),
        (dict(strategy="range", interval="month", retention="soon"), "retention 'soon' is not an age"),
        (dict(strategy="range", interval="month", name_template="{table}_{suffix}"), r"uses \{suffix\}"),
        (dict(strategy="list"), "needs values"),
        (dict(strategy="list", values={"a": [1]}, retention="1 day"), "retention does not apply to strategy: list"),
        (dict(table="a.b.c", modulus=2), "invalid table name 'a.b.c'"),
    ],
)
def test_build_spec_rejects(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_spec(params(**overrides))
