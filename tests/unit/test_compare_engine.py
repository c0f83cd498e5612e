"""The comparison engine across engines: canonical values, bisection over two sides, the SQLite side."""

from __future__ import annotations

import datetime
import decimal
import sqlite3
import typing
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.canonical import Canonical, normaliser, row_digest
from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.engine import RangeComparison, option_problem, summarise
from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.run import CompareError, canonical_for, sides
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.engine import TablePlan
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.copy_target import PgTarget, parse_type
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.compare import SqliteSide

PARAMS = {"chunk_rows": 50, "leaf_rows": 8, "sample_percent": 100.0, "seed": None, "max_keys": 100, "rechecks": 0, "recheck_delay": 0.0}
UTC = datetime.timezone.utc  # noqa: UP017 - datetime.UTC is Python 3.11+
EAST = datetime.timezone(datetime.timedelta(hours=1))
WEST = datetime.timezone(-datetime.timedelta(hours=5))


# Canonical values: SQLite's loose form on the left, PostgreSQL's typed value (as psycopg returns it) on the right.
@pytest.mark.parametrize(
    ("logical", "loose", "typed"),
    [
        ("integer", "42", 42),
        ("integer", 42.0, 42),
        ("integer", True, 1),
        ("real", 0.1, 0.1),
        ("real", "2.5", 2.5),
        ("real", 0.30000000000000004, 0.3),  # the stated tolerance: 15 significant digits
        ("numeric", 1.5, decimal.Decimal("1.50")),
        ("numeric", "100", decimal.Decimal("100.000")),
        ("numeric", 0, decimal.Decimal("-0.00")),
        ("text", "héllo", "héllo"),
        ("text", b"abc", "abc"),
        ("text", 7, "7"),
        ("blob", b"\x00\xff", b"\x00\xff"),
        ("blob", "ab", b"ab"),
        ("boolean", 1, True),
        ("boolean", "f", False),
        ("boolean", "TRUE", True),
        ("date", "2026-01-02", datetime.date(2026, 1, 2)),
        ("timestamp", "2026-01-02 03:04:05", datetime.datetime(2026, 1, 2, 3, 4, 5)),
        ("timestamp", "2026-01-02T03:04:05.5", datetime.datetime(2026, 1, 2, 3, 4, 5, 500000)),
        ("timestamp", "2026-01-02T05:04:05+02:00", datetime.datetime(2026, 1, 2, 3, 4, 5)),
        ("timestamptz", "2026-01-02 03:04:05", datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (
            "timestamptz",
            "2026-01-02T04:04:05+01:00",
            datetime.datetime(2026, 1, 1, 22, 4, 5, tzinfo=WEST),
        ),
        ("timestamptz", 0, datetime.datetime(1970, 1, 1, tzinfo=UTC)),
        ("json", '{"b": 1, "a": [1, 2]}', '{"a": [1, 2], "b": 1}'),
        ("json", '"x"', '"x"'),
        ("uuid", "6F9619FF-8B86-D011-B42D-00C04FC964FF", uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")),
    ],
)
def test_loose_and_typed_values_have_one_canonical_form(logical, loose, typed):
    form = normaliser(logical)
    assert form(loose) == form(typed)


@pytest.mark.parametrize(
    ("logical", "one", "other"),
    [
        ("integer", 1, 2),
        ("real", 0.1, 0.1000001),
        ("numeric", "1.5", decimal.Decimal("1.51")),
        ("text", "a", "a "),
        ("boolean", 1, False),
        ("timestamp", "2026-01-02 03:04:05", datetime.datetime(2026, 1, 2, 3, 4, 6)),
        (
            "timestamptz",
            "2026-01-02 03:04:05",
            datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=EAST),
        ),
        ("json", '{"a": 1}', '{"a": 1.5}'),
        ("json", '"1"', "1"),
    ],
)
def test_different_values_stay_different(logical, one, other):
    form = normaliser(logical)
    assert form(one) != form(other)


def test_real_column_of_four_bytes_compares_six_digits():
    assert normaliser("real", 6)(0.1) == normaliser("real", 6)(0.10000000149011612)  # float4 0.1 read back as a double
    assert normaliser("real")(0.1) != normaliser("real")(0.10000000149011612)


def test_numeric_column_with_a_scale_compares_what_it_stores():
    assert normaliser("numeric", scale=2)(0.1 + 0.2) == normaliser("numeric", scale=2)(decimal.Decimal("0.30"))
    assert normaliser("numeric", scale=0)("2.5") == normaliser("numeric", scale=0)(decimal.Decimal("3"))
    assert normaliser("numeric")(0.1 + 0.2) != normaliser("numeric")(decimal.Decimal("0.30"))


def test_scales_and_digits_come_from_the_target_types():
    assert canonical_for(plan(["bigint", "numeric(10,2)"])).normalisers[1](0.1 + 0.2) == "0.3"
    assert canonical_for(plan(["bigint", "numeric(10)"])).normalisers[1]("2.5") == "3"
    assert canonical_for(plan(["bigint", "real"])).normalisers[1](0.10000000149011612) == "0.1"
    assert canonical_for(plan(["bigint", "double precision"])).normalisers[1](0.10000000149011612) == "0.100000001490116"


def test_null_differs_from_every_text_and_a_bad_value_differs_from_everything():
    text = normaliser("text")
    assert text(None) is None
    assert row_digest([None]) != row_digest(["None"]) != row_digest([""])
    integer = normaliser("integer")
    assert integer("forty") == "!'forty'"
    assert row_digest([integer("forty")]) != row_digest([integer(40)])


# The engine over two in-memory sides ---------------------------------------------------------
class MemorySide:
    """A side over {key tuple: row}; the key is the first column. Records every leaf it diffed."""

    def __init__(self, role: str, rows: dict, canonical: Canonical):
        self.role = role
        self.readers = [None]
        self.rows = rows
        self.canonical = canonical
        self.leaves: list[int] = []

    def within(self, lower, upper):
        return [
            self.rows[key] for key in sorted(self.rows) if (lower is None or key >= tuple(lower)) and (upper is None or key < tuple(upper))
        ]

    def estimate_rows(self):
        return len(self.rows)

    def keys(self, lower=None, upper=None, limit=None, offset=0, sample_percent=None):
        keys = [self.canonical.key(row) for row in self.within(lower, upper)]
        return keys[offset:] if limit is None else keys[offset : offset + limit]

    def summary(self, lower=None, upper=None, keyless=False, client=None):
        return self.canonical.summary(self.within(lower, upper), keyless)

    def digests(self, lower, upper):
        rows = self.within(lower, upper)
        self.leaves.append(len(rows))
        return self.canonical.digests(rows)


def compare(source, target, key=("id",), **params):
    with ThreadPoolExecutor(max_workers=2) as pool:
        return RangeComparison(source, target, "vms", list(key), {**PARAMS, **params}, pool).compare()


def test_engine_bisects_to_exactly_the_differing_keys():
    canonical = Canonical(["integer", "text", "boolean"], [0])
    rows = {(key,): (key, f"vm-{key}", key % 2) for key in range(1, 1001)}
    target_rows = {key: (row[0], row[1], bool(row[2])) for key, row in rows.items()}  # typed as PostgreSQL returns them
    target_rows[(500,)] = (500, "vm-500-renamed", False)
    del target_rows[(777,)]
    target_rows[(1500,)] = (1500, "vm-1500", True)
    source, target = MemorySide("source", rows, canonical), MemorySide("target", target_rows, canonical)
    result = compare(source, target)
    assert {entry["key"]["id"]: entry["kind"] for entry in result["differing_keys"]} == {500: "changed", 777: "missing", 1500: "extra"}
    assert (result["missing"], result["extra"], result["changed"], result["equal"]) == (1, 1, 1, False)
    assert (result["rows_source"], result["rows_target"]) == (1000, 1000)
    assert result["chunks"] == 20
    assert result["chunks_differing"] == 3
    assert source.leaves and max(source.leaves) <= PARAMS["leaf_rows"]  # bisected, not diffed chunk-wide
    assert summarise([result], 0.0)["differing_tables"] == ["vms"]


def test_engine_finds_equal_tables_equal_and_counts_keys_beyond_max_keys():
    canonical = Canonical(["integer", "text"], [0])
    rows = {(key,): (key, str(key)) for key in range(200)}
    assert compare(MemorySide("source", rows, canonical), MemorySide("target", dict(rows), canonical))["equal"] is True
    result = compare(MemorySide("source", rows, canonical), MemorySide("target", {}, canonical), max_keys=5)
    assert result["missing"] == 200
    assert len(result["differing_keys"]) == 5


def test_engine_with_a_composite_text_key():
    canonical = Canonical(["text", "integer", "text"], [0, 1])
    rows = {(tenant, number): (tenant, number, "x") for tenant in ("a", "b", "é", "Z") for number in range(30)}
    target_rows = dict(rows)
    target_rows[("é", 3)] = ("é", 3, "y")
    result = compare(MemorySide("source", rows, canonical), MemorySide("target", target_rows, canonical), key=("tenant", "n"))
    assert result["differing_keys"] == [{"key": {"tenant": "é", "n": 3}, "kind": "changed"}]


# The SQLite side over real files -------------------------------------------------------------
def sqlite_file(path, statements) -> Client:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return Client({"path": str(path), "busy_timeout": 1.0})


LOGICALS = ["integer", "text", "boolean", "timestamp", "json", "real"]
COLUMNS = ["id", "name", "active", "seen", "doc", "load"]


def test_sqlite_side_loose_rows_equal_typed_rows_and_differences_are_located(tmp_path):
    canonical = Canonical(LOGICALS, [0])
    client = sqlite_file(
        tmp_path / "app.db",
        [
            "CREATE TABLE vms (id INTEGER PRIMARY KEY, name TEXT, active BOOLEAN, seen DATETIME, doc JSON, load REAL)",
            *(
                f"INSERT INTO vms VALUES ({key}, 'vm-{key}', {key % 2}, '2026-01-02T03:04:{key % 60:02d}Z', "  # noqa: S608 (the test's own values)
                f'\'{{"b": {key}, "a": null}}\', {key / 10})'
                for key in range(1, 301)
            ),
        ],
    )
    side = SqliteSide(client, "source", "vms", COLUMNS, ["id"], canonical)
    assert side.estimate_rows() == 300
    assert side.keys(limit=3, offset=10) == [(11,), (12,), (13,)]
    assert side.keys((100,), (103,)) == [(100,), (101,), (102,)]
    assert len(side.keys(sample_percent=10)) == 30
    # the rows as PostgreSQL would return them: typed values, jsonb's own key order
    typed = {
        (key,): (key, f"vm-{key}", bool(key % 2), datetime.datetime(2026, 1, 2, 3, 4, key % 60), f'{{"a": null, "b": {key}}}', key / 10)
        for key in range(1, 301)
    }
    assert side.summary((1,), (301,)) == MemorySide("target", typed, canonical).summary()
    typed[(42,)] = (42, "vm-42", False, datetime.datetime(2026, 1, 2, 3, 4, 42), '{"a": null, "b": 43}', 4.2)
    del typed[(250,)]
    typed[(0,)] = (0, "vm-0", False, None, None, None)
    result = compare(side, MemorySide("target", typed, canonical))
    assert {entry["key"]["id"]: entry["kind"] for entry in result["differing_keys"]} == {0: "extra", 42: "changed", 250: "missing"}
    client.close()


def test_sqlite_sides_composite_key_ranges(tmp_path):
    canonical = Canonical(["text", "integer", "numeric"], [0, 1])
    statements = ["CREATE TABLE m (site TEXT, n INTEGER, amount NUMERIC, PRIMARY KEY (site, n))"]
    rows = [(site, n) for site in ("b", "a", "é", "B") for n in range(40)]
    statements += [f"INSERT INTO m VALUES ('{site}', {n}, {n}.50)" for site, n in rows]  # noqa: S608 (the test's own values)
    left = SqliteSide(sqlite_file(tmp_path / "left.db", statements), "source", "m", ["site", "n", "amount"], ["site", "n"], canonical)
    statements[1 + 2 * 40 + 7] = "INSERT INTO m VALUES ('é', 7, '7.5000')"  # the same number, written as text
    statements[1 + 3 * 40 + 9] = "INSERT INTO m VALUES ('B', 9, 9.51)"
    right = SqliteSide(sqlite_file(tmp_path / "right.db", statements), "target", "m", ["site", "n", "amount"], ["site", "n"], canonical)
    assert left.keys(("a", 38), ("b", 1)) == [("a", 38), ("a", 39), ("b", 0)]
    assert left.keys(limit=1) == [("B", 0)]  # BINARY collation: upper case first, as COLLATE "C"
    result = compare(left, right, key=("site", "n"), chunk_rows=20, leaf_rows=5)
    assert result["differing_keys"] == [{"key": {"site": "B", "n": 9}, "kind": "changed"}]
    assert result["rows_source"] == 160


# Refusals, before anything is read -------------------------------------------------------------
class Named:
    where = "the lab's green database"
    client = None

    @staticmethod
    def qualified(table):
        return f"public.{table}"


def plan(types, create=False, key=("id",)):
    columns = ["id", "value"]
    return TablePlan("vms", list(key), columns, [parse_type(name) for name in types], create, "", ["INTEGER", "TEXT"])


def test_a_table_missing_on_the_target_is_refused_by_name():
    with pytest.raises(CompareError, match=r"public\.vms does not exist on the lab's green database.*copy it first"):
        sides(Named(), Named(), plan(["bigint", "text"], create=True))


def test_a_key_of_a_type_the_engines_order_differently_is_refused():
    with pytest.raises(CompareError, match=r"key column vms\.id is timestamp with time zone.*key_columns for 'vms'"):
        sides(Named(), Named(), plan(["timestamp with time zone", "text"]))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"leaf_rows": 0}, "leaf_rows must be at least 1"),
        ({"sample_percent": 0}, "sample_percent must be more than 0 and at most 100"),
        ({"rechecks": -1}, "rechecks must be 0 or more"),
    ],
)
def test_the_engines_options_are_checked_once_for_every_module(change, problem):
    assert option_problem({**PARAMS, **change}) == problem


# run_compare end to end: the PostgreSQL side played by a second SQLite file holding the values in
# PostgreSQL's forms, so the planning (the copy's plan_tables), canonical_for and the summary run as
# in the module. The real PostgreSQL side is tests/integration/test_table_compare.py's.
class StandInTarget:
    kind = "PostgreSQL"
    where = "the stand-in"
    types: typing.ClassVar[dict] = {}
    side_client = None

    def __init__(self, client, schema):
        self.client = client
        self.schema = schema

    def qualified(self, table):
        return f"{self.schema}.{table}"

    parse_type = staticmethod(parse_type)
    default_type = staticmethod(PgTarget.default_type)

    @staticmethod
    def type_names():
        return ["bigint", "text"]

    def columns(self, table):
        return self.types.get(table)

    def create_statement(self, *args):
        return ""

    def render(self, statement):
        return statement

    def prepare_compare(self):
        pass

    def compare_side(self, role, table, columns, key, canonical):
        """The target's side: a second SQLite file standing in for the target database."""
        return SqliteSide(self.side_client, role, table, columns, key, canonical)


def test_run_compare_plans_with_the_copys_types_and_reports_the_differing_keys(tmp_path, monkeypatch):
    from ansible_collections.zerodowntime.migration.plugins.module_utils.compare import run

    source = sqlite_file(
        tmp_path / "app.db",
        [
            "CREATE TABLE vms (id INTEGER PRIMARY KEY, active BOOLEAN, seen TEXT, price NUMERIC)",
            *(f"INSERT INTO vms VALUES ({key}, {key % 2}, '2026-01-02 03:04:05', {key}.5)" for key in range(1, 121)),  # noqa: S608
        ],
    )
    typed = sqlite_file(
        tmp_path / "typed.db",
        [
            "CREATE TABLE vms (id INTEGER PRIMARY KEY, active TEXT, seen TEXT, price TEXT)",
            *(
                f"INSERT INTO vms VALUES ({key}, '{'true' if key % 2 else 'false'}', '2026-01-02T04:04:05+01:00', '{key}.50')"  # noqa: S608
                for key in range(1, 121)
            ),
        ],
    )
    StandInTarget.types = {"vms": {"id": "bigint", "active": "boolean", "seen": "timestamp with time zone", "price": "numeric(10,2)"}}
    StandInTarget.side_client = typed
    monkeypatch.setattr(run, "target_adapter", lambda client, params: StandInTarget(client, params["target_schema"]))
    params = {name: spec.get("default") for name, spec in run.COMPARE_OPTIONS.items()}
    params.update(chunk_rows=25, leaf_rows=4)

    equal = run.run_compare(source, None, params)
    assert (equal["equal"], equal["changed"], equal["rows_compared"]) == (True, False, 120)
    assert equal["tables"][0]["chunks"] == 5 and equal["msg"] == "1 tables equal (120 rows)"

    typed.conn.execute("UPDATE vms SET price = '7.51' WHERE id = 7")
    typed.conn.execute("DELETE FROM vms WHERE id = 77")
    typed.conn.execute("INSERT INTO vms VALUES (500, 'true', '2026-01-02T04:04:05+01:00', '1')")
    differs = run.run_compare(source, None, params)
    assert differs["differing_tables"] == ["vms"]
    assert differs["tables"][0]["differing_keys"] == [
        {"key": {"id": 7}, "kind": "changed"},
        {"key": {"id": 77}, "kind": "missing"},
        {"key": {"id": 500}, "kind": "extra"},
    ]
    assert "vms (1 missing, 1 extra, 1 changed)" in differs["msg"]

    StandInTarget.types = {}
    with pytest.raises(CompareError, match=r"public\.vms does not exist on the stand-in"):
        run.run_compare(source, None, params)
    with pytest.raises(CompareError, match="leaf_rows must be at least 1"):
        run.run_compare(source, None, {**params, "leaf_rows": 0})
