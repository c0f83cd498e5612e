"""Pure parts of plugins/module_utils/postgres/drift.py: which type changes green can take, which
keys the apply worker can use, and what the error says."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import drift
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.drift import (
    failure_message,
    key_columns,
    large_objects_difference,
    lookup_key,
    no_replica_identity,
    table_differences,
    type_verdict,
)


def col(type_name, type_text=None, typmod=-1, not_null=False, has_default=False, identity=False, generated=False):
    return {
        "type_name": type_name,
        "type": type_text or type_name,
        "typmod": typmod,
        "not_null": not_null,
        "has_default": has_default,
        "identity": identity,
        "generated": generated,
    }


def varchar(n):
    return col("varchar", f"character varying({n})", n + 4)


def numeric(p, s):
    return col("numeric", f"numeric({p},{s})", ((p << 16) | s) + 4)


@pytest.mark.parametrize(
    ("blue", "green", "verdict"),
    [
        (col("int4", "integer"), col("int4", "integer"), None),
        (col("int4", "integer"), col("int8", "bigint"), "widened"),
        (col("int8", "bigint"), col("int4", "integer"), "incompatible"),
        (col("int8", "bigint"), col("numeric"), "widened"),
        (col("int8", "bigint"), numeric(10, 2), "incompatible"),
        (numeric(10, 2), numeric(12, 2), "widened"),
        (numeric(10, 2), numeric(10, 3), "incompatible"),  # fewer digits before the point
        (numeric(10, 2), col("numeric"), "widened"),
        (col("numeric"), numeric(10, 2), "incompatible"),
        (varchar(20), varchar(40), "widened"),
        (varchar(40), varchar(20), "incompatible"),
        (varchar(20), col("text"), "widened"),
        (col("text"), varchar(20), "incompatible"),
        (col("float4", "real"), col("float8", "double precision"), "widened"),
        (col("float8", "double precision"), col("float4", "real"), "incompatible"),
        (col("json"), col("jsonb"), "widened"),
        (col("jsonb"), col("json"), "incompatible"),
        (col("text"), col("uuid"), "incompatible"),
    ],
)
def test_type_verdict(blue, green, verdict):
    assert type_verdict(blue, green) == verdict


def table(columns, primary_key=None, identity_index=None, replident="d", partition_key=None, sequences=None):
    return {
        "schema": "public",
        "name": "t",
        "relkind": "p" if partition_key else "r",
        "relreplident": replident,
        "primary_key": primary_key,
        "identity_index": identity_index,
        "partition_key": partition_key,
        "columns": columns,
        "sequences": sequences or {},
    }


def test_keys_blue_sends_and_green_looks_up():
    columns = {"id": col("int8"), "tenant_id": col("int4")}
    assert key_columns(table(columns, primary_key=["id"])) == ["id"]
    assert key_columns(table(columns, replident="f")) == ["id", "tenant_id"]
    assert key_columns(table(columns, primary_key=["id"], identity_index=["tenant_id", "id"], replident="i")) == ["tenant_id", "id"]
    assert key_columns(table(columns)) is None
    assert key_columns(table(columns, primary_key=["id"], replident="n")) is None
    assert lookup_key(table(columns, primary_key=["tenant_id", "id"], replident="f")) == ["tenant_id", "id"]
    assert lookup_key(table(columns, replident="f")) is None


def severities(found):
    return {(entry["kind"], entry["column"], entry["severity"]) for entry in found}


def test_keys_green_cannot_use_are_blocking():
    columns = {"id": col("int8", not_null=True), "tenant_id": col("int4", not_null=True)}
    blue = table(columns, primary_key=["id"])
    green = table(columns, primary_key=["tenant_id", "id"])
    assert ("replica_identity", None, "blocking") in severities(table_differences("public.t", blue, green))
    blue_full = table(columns, primary_key=["id"], replident="f")
    assert ("replica_identity", None, "harmless") in severities(table_differences("public.t", blue_full, green))
    keyless_green = table(columns)
    assert ("replica_identity", None, "blocking") in severities(table_differences("public.t", blue, keyless_green))
    # green without a key while blue sends FULL: the apply worker matches whole rows
    assert ("replica_identity", None, "harmless") in severities(table_differences("public.t", blue_full, table(columns)))


def test_columns_generated_and_extra_columns():
    blue = table({"id": col("int8", not_null=True), "total": col("int8", generated=True, has_default=True)}, primary_key=["id"])
    green = table(
        {
            "id": col("int8", not_null=True),
            "flag": col("bool", not_null=True, has_default=True),
            "must": col("int4", not_null=True),
            "seen": col("timestamptz"),
        },
        primary_key=["id"],
    )
    assert severities(table_differences("public.t", blue, green)) == {
        ("missing_column", "total", "harmless"),  # generated columns are not replicated
        ("extra_column", "flag", "harmless"),
        ("extra_column", "must", "blocking"),
        ("extra_column", "seen", "harmless"),
    }


def test_failure_message_names_each_failing_difference_and_fix():
    found = [
        {
            "kind": "missing_column",
            "object": "public.t.c",
            "severity": "blocking",
            "blue": "text",
            "green": None,
            "why": "w",
            "fix": "ALTER X",
        },
        {"kind": "extra_column", "object": "public.t.d", "severity": "harmless", "blue": None, "green": "int", "why": "w", "fix": None},
    ]
    message = failure_message(found, "blocking")
    assert "1 blocking difference(s)" in message and "public.t.c" in message and "fix on green: ALTER X" in message
    assert "public.t.d" not in message
    assert "public.t.d" in failure_message(found, "any")
    assert failure_message(found, "none") is None
    assert failure_message(found[1:], "blocking") is None


def test_a_table_blue_sends_no_key_for_is_one_hazard_fixed_on_both_sides():
    columns = {"id": col("int8", not_null=True), "body": col("text")}
    keyless = table(columns)
    hazard = no_replica_identity("public.t", keyless)
    assert (hazard["kind"], hazard["severity"], hazard["fix_on"]) == ("no_replica_identity", "blocking", "blue and green")
    assert hazard["fix"].as_string() == 'ALTER TABLE "public"."t" REPLICA IDENTITY FULL'
    assert "primary key" in hazard["why"] and "UPDATE" in hazard["why"]
    # whatever green has, the table comparison reports the hazard once, not a replica_identity difference as well
    for green in (table(columns), table(columns, primary_key=["id"])):
        found = severities(table_differences("public.t", keyless, green))
        assert ("no_replica_identity", None, "blocking") in found
        assert not any(entry[0] == "replica_identity" for entry in found)
    assert no_replica_identity("public.t", table(columns, primary_key=["id"], replident="n"))["blue"] == "NOTHING"
    assert no_replica_identity("public.t", table(columns, primary_key=["id"])) is None
    assert no_replica_identity("public.t", table(columns, replident="f")) is None


def test_large_objects_name_count_oids_and_the_copy():
    entry = large_objects_difference(15, 12, list(range(100, 110)))
    assert (entry["kind"], entry["object"], entry["severity"]) == ("large_objects", "large objects", "blocking")
    assert (entry["blue"], entry["green"]) == ("15 large object(s)", "3 of them")
    assert "OIDs 100, 101" in entry["why"] and "109 and 2 more" in entry["why"] and "110" not in entry["why"]
    assert "pg_dump" in entry["why"] and "lo_from_bytea" in entry["why"]


def test_failure_message_says_where_the_fix_runs():
    found = [
        {
            "kind": "unlogged_table",
            "object": "public.cache",
            "severity": "blocking",
            "blue": "UNLOGGED",
            "green": None,
            "why": "w",
            "fix": 'ALTER TABLE "public"."cache" SET LOGGED',
            "fix_on": "blue",
        }
    ]
    assert 'fix on blue: ALTER TABLE "public"."cache" SET LOGGED' in failure_message(found, "blocking")


class PagedLargeObjects:
    """blue with OIDs 1..n read a page at a time; green lacking every OID divisible by 7."""

    def __init__(self, count: int):
        self.oids = list(range(1, count + 1))
        self.pages = 0

    def query(self, text, params):
        if "unnest" in text:  # green: which of these it lacks
            return [{"oid": oid} for oid in params[0] if oid % 7 == 0]
        after, limit = params
        self.pages += 1
        return [{"oid": oid} for oid in self.oids if oid > after][:limit]


def test_large_objects_are_read_a_page_at_a_time_and_only_the_shown_oids_kept(monkeypatch):
    monkeypatch.setattr(drift, "LARGE_OBJECTS_PAGE", 100)
    server = PagedLargeObjects(1050)
    total, missing_count, shown = drift.large_objects(server, server)
    assert (total, missing_count) == (1050, 150) and shown == [7 * n for n in range(1, 11)]
    assert server.pages == 12  # 11 pages of OIDs, then an empty one
