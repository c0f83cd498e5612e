import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.schema import plan, split_statements


def test_splits_on_statement_ends_only():
    script = """
    -- a comment; with a semicolon
    CREATE TABLE "odd;name" (note text DEFAULT 'a;b', other text DEFAULT E'c\\';d');
    /* block; comment */
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;
    CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x)
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[0].endswith("other text DEFAULT E'c\\';d')")
    assert statements[1] == "/* block; comment */\n    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$"
    assert statements[2] == "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x)"


def test_comment_only_pieces_are_dropped():
    assert split_statements("-- zerodowntime: no-transaction\nSELECT 1;\n-- the end\n") == ["-- zerodowntime: no-transaction\nSELECT 1"]


def test_unterminated_dollar_quote_is_an_error():
    with pytest.raises(ValueError, match="unterminated"):
        split_statements("SELECT $x$ never closed")


def test_plan_keeps_order_and_refuses_changed_files():
    files = [{"name": "001.sql", "checksum": "a" * 64}, {"name": "002.sql", "checksum": "b" * 64}]
    assert [f["name"] for f in plan(files, {"001.sql": "a" * 64}, "/d")] == ["002.sql"]
    with pytest.raises(PgError, match=r"001\.sql \(applied aaaaaaaaaaaa, now cccccccccccc\)"):
        plan([{"name": "001.sql", "checksum": "c" * 64}], {"001.sql": "a" * 64}, "/d")
