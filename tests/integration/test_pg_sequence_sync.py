"""zerodowntime.migration.pg_sequence_sync from blue (source) to green (target), in scratch
databases zdm_seq_test of its own on both."""

from __future__ import annotations

import json

import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import ident
from tests.lab import BLUE, GREEN, connect, run_module, where

MODULE = "zerodowntime.migration.pg_sequence_sync"
DB = "zdm_seq_test"
HOSTILE = 's"; DROP TABLE x; --'
SOURCE = dict(BLUE, login_db=DB)
TARGET = dict(GREEN, login_db=DB)
SCHEMA = f"""
CREATE TABLE orders (id bigserial PRIMARY KEY, note text);
CREATE TABLE items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
CREATE SEQUENCE invoice_numbers;
CREATE SEQUENCE never_used;
CREATE SEQUENCE countdown INCREMENT BY -1;
CREATE SEQUENCE {ident(HOSTILE).as_string(None)};
CREATE TABLE x (id int);
CREATE SCHEMA billing;
CREATE SEQUENCE billing.credit_notes START 100;
"""


@pytest.fixture()
def databases(lab):
    """The same schema on both sides; blue has handed out values, green none."""
    for endpoint in (BLUE, GREEN):
        with connect(endpoint, login_db="postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(DB)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident(DB)))
        with connect(endpoint, login_db=DB) as conn:
            conn.execute(SCHEMA)
    with connect(SOURCE) as blue:
        blue.execute("INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 50) g")
        blue.execute("INSERT INTO items (note) SELECT 'item ' || g FROM generate_series(1, 4) g")
        blue.execute("SELECT nextval('invoice_numbers') FROM generate_series(1, 7)")
        blue.execute("SELECT nextval('countdown') FROM generate_series(1, 5)")
        blue.execute("SELECT nextval(%s) FROM generate_series(1, 3)", (ident(HOSTILE).as_string(blue),))
        blue.execute("SELECT nextval('billing.credit_notes') FROM generate_series(1, 2)")
    yield
    for endpoint in (BLUE, GREEN):
        with connect(endpoint, login_db="postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(DB)))


def args(**overrides) -> dict:
    return dict(TARGET, source=dict(SOURCE)) | overrides


def green_value(schema: str, name: str) -> tuple[int, bool]:
    """(last_value, is_called) of a sequence on green, read from the sequence itself."""
    with connect(TARGET) as conn:
        return conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(ident(schema, name))).fetchone()


def entries(result: dict) -> dict:
    return {entry["name"]: entry for entry in result["sequences"]}


UNTOUCHED = {
    ("public", "orders_id_seq"): (1, False),
    ("public", "items_id_seq"): (1, False),
    ("public", "invoice_numbers"): (1, False),
    ("public", "never_used"): (1, False),
    ("public", "countdown"): (-1, False),
    ("public", HOSTILE): (1, False),
    ("billing", "credit_notes"): (100, False),
}


def green_values(*leave_out: tuple[str, str]) -> dict:
    return {key: green_value(*key) for key in UNTOUCHED if key not in leave_out}


def test_values_are_copied_with_the_margin_and_the_target_then_continues_above(databases):
    result = run_module(MODULE, args())[1]
    assert result["failed"] is False, result.get("msg")
    assert result["changed"] is True
    found = entries(result)
    assert found["public.orders_id_seq"] == {
        "name": "public.orders_id_seq",
        "source_value": 50,
        "old_target_value": None,
        "new_target_value": 1050,
        "changed": True,
    }
    assert (found["public.items_id_seq"]["source_value"], found["public.items_id_seq"]["new_target_value"]) == (4, 1004)  # identity
    assert (found["public.invoice_numbers"]["source_value"], found["public.invoice_numbers"]["new_target_value"]) == (7, 1007)
    assert (found["public.countdown"]["source_value"], found["public.countdown"]["new_target_value"]) == (-5, -1005)
    assert (found[f"public.{HOSTILE}"]["source_value"], found[f"public.{HOSTILE}"]["new_target_value"]) == (3, 1003)
    assert (found["billing.credit_notes"]["source_value"], found["billing.credit_notes"]["new_target_value"]) == (101, 1101)
    assert found["public.never_used"] == {
        "name": "public.never_used",
        "source_value": None,
        "old_target_value": None,
        "new_target_value": None,
        "changed": False,
    }
    assert green_values() == {
        ("public", "orders_id_seq"): (1050, True),
        ("public", "items_id_seq"): (1004, True),
        ("public", "invoice_numbers"): (1007, True),
        ("public", "never_used"): (1, False),
        ("public", "countdown"): (-1005, True),
        ("public", HOSTILE): (1003, True),
        ("billing", "credit_notes"): (1101, True),
    }
    assert len(result["queries"]) == 1
    assert result["queries"][0].startswith("SELECT pg_catalog.setval(v.seq::regclass, v.value::bigint, true) FROM (VALUES ")
    assert """('"public"."s""; DROP TABLE x; --"', 1003)""" in result["queries"][0]
    with connect(TARGET) as green:
        assert green.execute("INSERT INTO orders (note) VALUES ('first on green') RETURNING id").fetchone() == (1051,)
        assert green.execute("INSERT INTO items (note) VALUES ('first on green') RETURNING id").fetchone() == (1005,)
        assert green.execute("SELECT to_regclass('public.x') IS NOT NULL").fetchone() == (True,)  # nothing was injected


def test_a_target_already_ahead_never_moves_backwards(databases):
    with connect(TARGET) as green:
        green.execute("SELECT setval('invoice_numbers', 5000, true)")
        green.execute("SELECT setval('countdown', -9000, true)")
    result = run_module(MODULE, args())[1]
    found = entries(result)
    assert found["public.invoice_numbers"] == {
        "name": "public.invoice_numbers",
        "source_value": 7,
        "old_target_value": 5000,
        "new_target_value": 5000,
        "changed": False,
    }
    assert (found["public.countdown"]["changed"], found["public.countdown"]["new_target_value"]) == (False, -9000)
    assert found["public.orders_id_seq"]["changed"] is True
    assert green_value("public", "invoice_numbers") == (5000, True)
    assert green_value("public", "countdown") == (-9000, True)
    assert '"public"."invoice_numbers"' not in result["queries"][0]


def test_second_run_changes_nothing_until_the_source_moves(databases):
    assert run_module(MODULE, args())[1]["changed"] is True
    again = run_module(MODULE, args())[1]
    assert (again["changed"], again["queries"]) == (False, [])
    assert not any(entry["changed"] for entry in again["sequences"])
    assert entries(again)["public.orders_id_seq"]["old_target_value"] == 1050

    with connect(SOURCE) as blue:
        blue.execute("INSERT INTO orders (note) SELECT 'later ' || g FROM generate_series(1, 10) g")
    moved = run_module(MODULE, args())[1]
    assert moved["changed"] is True
    assert [entry["name"] for entry in moved["sequences"] if entry["changed"]] == ["public.orders_id_seq"]
    assert entries(moved)["public.orders_id_seq"]["new_target_value"] == 1060
    assert green_value("public", "orders_id_seq") == (1060, True)


def test_a_sequence_missing_on_the_target_is_named_and_nothing_changes(databases):
    with connect(TARGET) as green:
        green.execute("DROP SEQUENCE invoice_numbers")
    result = run_module(MODULE, args())[1]
    assert result["failed"] is True
    assert "missing on the target: public.invoice_numbers" in result["msg"]
    assert "nothing was changed" in result["msg"]
    assert result["queries"] == []
    dropped = ("public", "invoice_numbers")
    assert green_values(dropped) == {key: value for key, value in UNTOUCHED.items() if key != dropped}


def test_a_value_beyond_the_target_maxvalue_is_an_error_and_nothing_changes(databases):
    with connect(TARGET) as green:
        green.execute("ALTER SEQUENCE invoice_numbers MAXVALUE 1000")
    result = run_module(MODULE, args())[1]
    assert result["failed"] is True
    assert "public.invoice_numbers: 7 + margin 1000 = 1007 is beyond its MAXVALUE 1000" in result["msg"]
    assert result["queries"] == []
    assert green_values() == UNTOUCHED


def test_check_mode_reports_and_changes_nothing_and_diff_shows_the_values(databases):
    result = run_module(MODULE, args(margin=10), check=True, diff=True)[1]
    assert result["failed"] is False, result.get("msg")
    assert result["changed"] is True
    assert entries(result)["public.orders_id_seq"]["new_target_value"] == 60
    assert result["diff"]["before"]["public.orders_id_seq"] is None
    assert result["diff"]["after"]["public.orders_id_seq"] == 60
    assert result["diff"]["after"][f"public.{HOSTILE}"] == 13
    assert result["diff"]["after"]["public.never_used"] is None
    assert len(result["queries"]) == 1 and "setval" in result["queries"][0]
    assert green_values() == UNTOUCHED


def test_schemas_and_sequences_restrict_what_is_copied(databases):
    only_billing = run_module(MODULE, args(schemas=["billing"]))[1]
    assert [entry["name"] for entry in only_billing["sequences"]] == ["billing.credit_notes"]
    assert green_value("public", "orders_id_seq") == (1, False)
    assert green_value("billing", "credit_notes") == (1101, True)

    picked = run_module(MODULE, args(sequences=["public.invoice_numbers", HOSTILE]))[1]
    assert [entry["name"] for entry in picked["sequences"]] == ["public.invoice_numbers", f"public.{HOSTILE}"]
    assert green_value("public", "invoice_numbers") == (1007, True)
    assert green_value("public", "orders_id_seq") == (1, False)

    unknown = run_module(MODULE, args(sequences=["public.no_such_seq"]))[1]
    assert unknown["failed"] is True
    assert "not found on the source: public.no_such_seq" in unknown["msg"]
    missing_schema = run_module(MODULE, args(schemas=["no_such_schema"]))[1]
    assert missing_schema["failed"] is True
    assert "no_such_schema do not exist on the source" in missing_schema["msg"]


def test_wrong_source_password_names_the_user_and_never_shows_the_password(databases):
    run, result = run_module(MODULE, args(source=dict(SOURCE, login_password="Wrong-Source-Secret-3")), through_ansible=True)
    assert result["failed"] is True
    assert "cannot connect to the source" in result["msg"]
    assert f"authentication failed for user 'migrator' on {where(BLUE)}" in result["msg"]
    assert "Wrong-Source-Secret-3" not in run.stdout
    assert "Wrong-Source-Secret-3" not in json.dumps([event.get("event_data", {}).get("res") for event in run.events])
    assert green_values() == UNTOUCHED
