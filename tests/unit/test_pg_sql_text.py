"""plugins/module_utils/postgres/sql_text.py without a server: where a ';' ends a statement, as
PostgreSQL's lexer reads quotes and comments. The server-side parse is tested against the lab
(tests/integration/test_pg_index.py)."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sql_text import check_fragment, find_separator


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("id > 0; DROP TABLE victim; --", 6),
        ("0); DROP TABLE victim; SELECT (1", 2),
        ("deleted_at IS NULL", None),
        ("a = ';'", None),
        ("a = ''';' ; x", 10),
        ("E'\\';' ", None),
        ("E'\\'' ; x", 6),
        ("'\\' ; x", 4),  # standard_conforming_strings: a backslash is a plain character
        ("name'\\' ; x", 8),  # ...also after an identifier ending in e
        ('"a;b" > 0', None),
        ('"a"";b" > 0', None),
        ("$$;$$", None),
        ("$t$ ; $x$ ; $t$", None),
        ("$1;", 2),
        ("a$b$ ; $b$", 5),  # a$b$ is an identifier, not a dollar quote
        ("x -- ;\n", None),
        ("x -- a\n;", 7),
        ("/* /* ; */ ; */ x", None),
        ("/* */ ;", 6),
        ("U&'\\0041;'", None),
        ("'unterminated ;", None),
    ],
)
def test_separator_outside_quotes_and_comments(text, position):
    assert find_separator(text) == position


def test_check_fragment_names_the_field_the_problem_and_the_fix():
    with pytest.raises(PgError) as caught:
        check_fragment("id > 0; DROP TABLE victim; --", "where", "predicate", "CREATE INDEX ... WHERE")
    message = str(caught.value)
    assert message.startswith("where 'id > 0; DROP TABLE victim; --' holds a statement separator ';' (character 7)")
    assert "without ';'" in message and "Nothing was changed" in message


def test_check_fragment_refuses_nul_and_passes_one_expression():
    with pytest.raises(PgError, match="NUL"):
        check_fragment("a\x00b", "where")
    assert check_fragment("lower(email) LIKE 'a;%'", "where") == "lower(email) LIKE 'a;%'"
