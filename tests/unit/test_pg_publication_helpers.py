"""Pure helpers of plugins/module_utils/postgres/publication.py: table names, publish actions and the
attributes the module asks for."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import (
    check_identifier,
    format_qualified_name,
    split_qualified_name,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.publication import (
    normalise_publish,
    normalise_tables,
    publication_desired,
)

HOSTILE = 'a"; DROP TABLE x; --'


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("orders", ("public", "orders")),
        ("sales.orders", ("sales", "orders")),
        ("Sales.Orders", ("Sales", "Orders")),  # literal: no case folding
        (HOSTILE, ("public", HOSTILE)),
        ('"my.schema"."my.table"', ("my.schema", "my.table")),
        ('"my.schema".t', ("my.schema", "t")),
        ('s."a""b"', ("s", 'a"b')),
        ('"x"', ("public", "x")),
    ],
)
def test_split_qualified_name(text, parts):
    assert split_qualified_name(text) == parts


@pytest.mark.parametrize(
    "bad",
    ["", ".", "a.", ".a", "a..b", "a.b.c", '"unterminated', '"a"b', None, "x" * 64, "s." + "y" * 64],
)
def test_split_rejects_what_is_not_a_table_name(bad):
    with pytest.raises(PgError, match=r"table|name"):
        split_qualified_name(bad)


@pytest.mark.parametrize(
    "parts",
    [("public", "orders"), ("my.schema", "t"), ("s", '"quoted"'), ("s", HOSTILE), ("a.b", 'c."d'), ("s", 'x"y')],
)
def test_format_reads_back_unchanged(parts):
    assert split_qualified_name(format_qualified_name(*parts)) == parts


def test_format_is_plain_for_plain_names():
    assert format_qualified_name("public", "orders") == "public.orders"
    assert format_qualified_name("my.schema", "t") == '"my.schema".t'


def test_normalise_tables_qualifies_sorts_and_deduplicates():
    assert normalise_tables(["orders", "public.orders", "b.x", "a"]) == ["b.x", "public.a", "public.orders"]
    assert normalise_tables([]) == []
    assert normalise_tables(None) is None


def test_normalise_publish_uses_postgresql_order():
    assert normalise_publish(["truncate", "insert", "insert"]) == ["insert", "truncate"]
    assert normalise_publish([]) == []
    with pytest.raises(PgError, match="unknown publish action"):
        normalise_publish(["insert", "upsert"])


def test_identifier_length_is_counted_in_bytes():
    assert check_identifier("é" * 31, "publication name") == "é" * 31  # 62 bytes
    with pytest.raises(PgError, match="longer than 63 bytes"):
        check_identifier("é" * 32, "publication name")
    with pytest.raises(PgError, match="empty name"):
        check_identifier("", "publication name")


def test_desired_table_list_implies_not_all_tables():
    desired = publication_desired({"tables": ["orders"], "publish": ["update", "insert"], "publish_via_partition_root": False})
    assert desired == {
        "all_tables": False,
        "tables": ["public.orders"],
        "schemas": None,
        "publish": ["insert", "update"],
        "publish_via_partition_root": False,
        "owner": None,
    }


def test_desired_without_membership_leaves_it_alone():
    desired = publication_desired({"publish": ["insert"]})
    assert (desired["all_tables"], desired["tables"], desired["schemas"]) == (None, None, None)


def test_all_tables_with_a_list_is_an_error():
    with pytest.raises(PgError, match="all_tables: true publishes every table"):
        publication_desired({"all_tables": True, "tables": ["orders"]})
    with pytest.raises(PgError, match="all_tables: true publishes every table"):
        publication_desired({"all_tables": True, "schemas": ["sales"]})
    assert publication_desired({"all_tables": True, "tables": []})["tables"] is None
