"""The SQLite helpers that need no file: identifier and literal quoting, the trigger text."""

from __future__ import annotations

import sqlite3

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import change_table_sql, trigger_name, trigger_sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import SqliteError, quote_ident, quote_literal


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("t", '"t"'), ('a"b', '"a""b"'), ('"', '""""'), ("select", '"select"'), ("x; DROP TABLE t; --", '"x; DROP TABLE t; --"')],
)
def test_quote_ident_doubles_embedded_quotes(name, quoted):
    assert quote_ident(name) == quoted


@pytest.mark.parametrize("name", ["t", 'a"b', '""', "x'; DROP TABLE t; --", "ünï cödé", "select", "a.b"])
def test_a_quoted_name_is_one_identifier_to_sqlite(name):
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE TABLE {quote_ident(name)} ({quote_ident(name)} INTEGER PRIMARY KEY)")
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [(name,)]
    assert conn.execute("SELECT name FROM pragma_table_info(?)", (name,)).fetchall() == [(name,)]
    assert conn.execute(f"SELECT {quote_literal(name)}").fetchone()[0] == name


def test_nul_is_refused():
    with pytest.raises(SqliteError, match="NUL"):
        quote_ident("a\x00b")
    with pytest.raises(SqliteError, match="NUL"):
        quote_literal("a\x00b")


def test_triggers_record_the_key_as_json_and_the_old_key_when_it_moved():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute('CREATE TABLE "o\'k" (a INTEGER, b TEXT, v TEXT, PRIMARY KEY (a, b))')
    conn.execute(change_table_sql("chg"))
    for operation in ("insert", "update", "delete"):
        conn.execute(trigger_sql("chg", "o'k", ["a", "b"], operation))
    assert trigger_name("chg", "o'k", "update") == "chg__o'k__update"
    conn.execute("INSERT INTO \"o'k\" VALUES (1, 'x', 'v')")
    conn.execute("UPDATE \"o'k\" SET v = 'w'")
    conn.execute('UPDATE "o\'k" SET a = 2')
    conn.execute('DELETE FROM "o\'k"')
    assert conn.execute("SELECT seq, table_name, pk, old_pk, op FROM chg").fetchall() == [
        (1, "o'k", '[1,"x"]', None, "I"),
        (2, "o'k", '[1,"x"]', None, "U"),
        (3, "o'k", '[2,"x"]', '[1,"x"]', "U"),
        (4, "o'k", '[2,"x"]', None, "D"),
    ]
    # sqlite_master keeps the statement as given: that text is what a second run compares
    stored = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
    assert stored["chg__o'k__insert"] == trigger_sql("chg", "o'k", ["a", "b"], "insert")
