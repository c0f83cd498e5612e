"""Pure helpers of plugins/module_utils/postgres/index.py: partition index names, definition comparison,
option validation, the CREATE INDEX statement and timeout settings."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.index import (
    build_failure_hint,
    create_statement,
    definition_differences,
    index_spec,
    is_expression,
    partition_index_name,
    seconds_setting,
    truncate_bytes,
)

HOSTILE = 'a"; DROP TABLE zdm_victim; --'


def spec(**overrides):
    params = {"state": "present", "columns": ["a"], "unique": False, "method": "btree", "include": None, "where": None}
    params.update(overrides)
    return index_spec(params)


# Partition index names -------------------------------------------------------------------
def test_short_partition_index_names_are_partition_underscore_index():
    assert partition_index_name("events_p0", "events_payload_idx") == "events_p0_events_payload_idx"
    assert partition_index_name("a", "b") == "a_b"


def test_a_name_of_exactly_63_bytes_is_kept():
    partition, index = "p" * 31, "i" * 31
    assert partition_index_name(partition, index) == f"{partition}_{index}"
    assert len(partition_index_name(partition, index)) == 63


def test_longer_names_are_cut_to_63_bytes_with_a_hash_of_the_whole():
    partition = "measurements_" + "x" * 40
    long_a = partition_index_name(partition, "by_device_and_time_idx")
    long_b = partition_index_name(partition, "by_device_and_time_idy")
    assert len(long_a.encode()) == 63 and len(long_b.encode()) == 63
    assert long_a.startswith(partition[:40])
    assert long_a != long_b  # same first 54 bytes, different hashes
    assert long_a[-9] == "_" and all(c in "0123456789abcdef" for c in long_a[-8:])
    assert partition_index_name(partition, "by_device_and_time_idx") == long_a  # deterministic


def test_derived_names_never_split_a_multibyte_character():
    name = partition_index_name("é" * 40, "índice")
    assert len(name.encode("utf-8")) <= 63
    name.encode("utf-8").decode("utf-8")  # valid UTF-8
    assert name.startswith("é" * 27)


def test_truncate_bytes():
    assert truncate_bytes("abc", 2) == "ab"
    assert truncate_bytes("aé", 2) == "a"  # é is two bytes: cut before it, not through it
    assert truncate_bytes("aé", 3) == "aé"


# Definition comparison -------------------------------------------------------------------
BASE = {
    "columns": ["customer_id", "lower(email::text)"],
    "include": ["status"],
    "unique": False,
    "method": "btree",
    "where": None,
    "key_details": "1978 3126 / 0 100 / 0 0 / false",
    "valid": True,
    "definition": "CREATE INDEX ix ON public.t USING btree (customer_id, lower(email::text)) INCLUDE (status)",
}


def test_same_definition_has_no_differences_whatever_the_name_validity_or_text():
    other = dict(BASE, valid=False, definition="CREATE INDEX other ON public.t USING btree (...)", name="other")
    assert definition_differences(BASE, other) == []
    assert definition_differences(BASE, dict(BASE, columns=tuple(BASE["columns"]), include=tuple(BASE["include"]))) == []
    assert definition_differences(dict(BASE, include=None), dict(BASE, include=[])) == []


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"columns": ["customer_id"]}, "columns is ['customer_id', 'lower(email::text)'], not ['customer_id']"),
        ({"columns": ["lower(email::text)", "customer_id"]}, "columns is"),
        ({"include": []}, "include is ['status'], not []"),
        ({"unique": True}, "unique is False, not True"),
        ({"method": "hash"}, "method is 'btree', not 'hash'"),
        ({"where": "deleted_at IS NULL"}, "where is None, not 'deleted_at IS NULL'"),
        ({"key_details": "1978 3126 / 0 100 / 3 0 / false"}, "operator classes, collations or sort order differ"),
    ],
)
def test_each_difference_is_named(change, said):
    found = definition_differences(BASE, dict(BASE, **change))
    assert len(found) == 1
    assert found[0].startswith(said)


def test_several_differences_are_all_named():
    found = definition_differences(BASE, dict(BASE, unique=True, method="hash"))
    assert found == ["unique is False, not True", "method is 'btree', not 'hash'"]


# Options ---------------------------------------------------------------------------------
def test_spec_defaults_and_normalisation():
    assert spec() == {"columns": ["a"], "include": [], "unique": False, "method": "btree", "where": None}
    assert spec(where="  deleted_at IS NULL  ")["where"] == "deleted_at IS NULL"
    assert spec(where="   ")["where"] is None
    assert spec(method=None)["method"] == "btree"
    assert spec(columns=["Email", "lower(email)", HOSTILE])["columns"] == ["Email", "lower(email)", HOSTILE]


def test_absent_needs_no_columns():
    assert spec(state="absent", columns=None)["columns"] == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"columns": []}, "columns must list at least one column"),
        ({"columns": None}, "columns must list at least one column"),
        ({"columns": ["a", " "]}, "invalid entry ' ' in columns"),
        ({"columns": ["x" * 64]}, "longer than 63 bytes"),
        ({"include": ["lower(b)"]}, "include takes column names only"),
        ({"include": [""]}, "empty name"),
        ({"method": "spgist"}, "unknown index method 'spgist'"),
        ({"timeout": -1}, "timeout must be 0"),
        ({"lock_timeout": -0.5}, "lock_timeout must be 0"),
    ],
)
def test_bad_options_are_refused_with_the_fix(overrides, message):
    with pytest.raises(PgError, match=message):
        spec(**overrides)


def test_an_entry_with_a_parenthesis_is_an_expression():
    assert is_expression("lower(email)") and is_expression("(a + b)")
    assert not is_expression("email") and not is_expression(HOSTILE)


# The statement ---------------------------------------------------------------------------
def render(statement) -> str:
    return statement.as_string(None)


def test_create_statement_quotes_names_and_passes_expressions_and_predicate():
    statement = create_statement(
        "ix",
        ("sales", "orders"),
        spec(columns=["Customer", "lower(email)"], include=["status"], unique=True, where="deleted_at IS NULL"),
        concurrently=True,
    )
    assert render(statement) == (
        'CREATE UNIQUE INDEX CONCURRENTLY "ix" ON "sales"."orders" USING btree ("Customer", lower(email)) '
        'INCLUDE ("status") WHERE deleted_at IS NULL'
    )


def test_create_statement_on_only_a_partitioned_parent_is_not_concurrent():
    statement = create_statement("ix", ("public", "events"), spec(columns=["payload"], method="gin"), concurrently=False, only=True)
    assert render(statement) == 'CREATE INDEX "ix" ON ONLY "public"."events" USING gin ("payload")'


def test_hostile_names_are_quoted_identifiers():
    statement = create_statement(HOSTILE, ("public", HOSTILE), spec(columns=[HOSTILE]), concurrently=True)
    assert render(statement) == (
        'CREATE INDEX CONCURRENTLY "a""; DROP TABLE zdm_victim; --" ON "public"."a""; DROP TABLE zdm_victim; --" '
        'USING btree ("a""; DROP TABLE zdm_victim; --")'
    )


# Settings and hints ----------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "setting"), [(0, "0"), (None, "0"), (5, "5000ms"), (2.5, "2500ms"), (0.0001, "1ms")])
def test_seconds_setting(seconds, setting):
    assert seconds_setting(seconds) == setting


def test_build_failure_hints_name_the_option_to_change():
    assert "raise timeout" in build_failure_hint("canceling statement due to statement timeout")
    assert "lock_timeout" in build_failure_hint("canceling statement due to lock timeout")
    assert "duplicate values" in build_failure_hint('could not create unique index "ix"')
    assert build_failure_hint("something else") == "fix the cause and run again"
