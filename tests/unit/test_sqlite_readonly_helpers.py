"""Pure parts of plugins/module_utils/sqlite/readonly.py: the message, the trigger SQL (every name
quoted), finding the tables back from trigger names, and the input refused before the file is locked."""

from __future__ import annotations

import sqlite3

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import SqliteError
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.readonly import (
    check_params,
    desired_triggers,
    message,
    tables_of,
    trigger_sql,
)

PARAMS = {"state": "present", "migration": "m1", "target_description": None, "tables": None, "change_table": "zdm_changes"}


def test_message_names_the_migration_and_the_target():
    assert message("m1", None) == "zerodowntime.migration m1: this database is read-only during the cutover"
    assert message("m1", "green") == message("m1", None) + "; the application moves to green"


def test_trigger_sql_quotes_a_hostile_table_and_message_and_sqlite_runs_it():
    table = 'a "b"; DROP TABLE x; --'
    text = "it's; END; DROP TABLE x"
    sql = trigger_sql(table, "insert", text)
    assert sql == (
        'CREATE TRIGGER "zdm_readonly__a ""b""; DROP TABLE x; --__insert" BEFORE INSERT ON "a ""b""; DROP TABLE x; --" '
        "FOR EACH ROW BEGIN SELECT RAISE(ABORT, 'it''s; END; DROP TABLE x'); END"
    )
    conn = sqlite3.connect(":memory:")
    conn.execute('CREATE TABLE "a ""b""; DROP TABLE x; --" (id INTEGER)')
    conn.execute(sql)
    with pytest.raises(sqlite3.IntegrityError, match="it's; END; DROP TABLE x"):
        conn.execute('INSERT INTO "a ""b""; DROP TABLE x; --" VALUES (1)')
    assert conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == sql  # compared as text on every run


def test_tables_of_keeps_double_underscores_in_table_names():
    triggers = desired_triggers(["a__b", "c"], PARAMS)
    assert len(triggers) == 6
    assert tables_of(triggers) == ["a__b", "c"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"migration": None}, "migration is required"),
        ({"migration": "  "}, "migration is required"),
        ({"migration": "a\x00b"}, "NUL"),
        ({"tables": ["t", "zdm_changes"]}, "change table"),
        ({"tables": ["sqlite_sequence"]}, "internal table"),
        ({"tables": [""]}, "empty name"),
    ],
)
def test_bad_input_is_refused_by_name(changes, named):
    with pytest.raises(SqliteError, match=named):
        check_params(dict(PARAMS, **changes))


def test_absent_needs_no_migration():
    check_params(dict(PARAMS, state="absent", migration=None))
