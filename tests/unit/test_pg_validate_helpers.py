"""Pure helpers of plugins/module_utils/postgres/validate.py: option checks, the SQL of the orphan and
freshness checks, and the failure sentences."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.matview import staleness_statement, strip_definition
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.validate import (
    check_count,
    check_reference_shape,
    foreign_key_failure,
    matview_failures,
    normalise_schemas,
    normalise_tenants,
    orphan_statements,
    tenant_failure,
)

HOSTILE = 'a"; DROP TABLE x; --'


def render(statement) -> str:
    return statement.as_string(None)


def orphan_check(**overrides) -> dict:
    check = {
        "schema": "public",
        "table_name": "vms",
        "only": True,
        "columns": ["tenant_id"],
        "ref_schema": "public",
        "ref_table_name": "tenants",
        "only_ref": True,
        "ref_columns": ["id"],
    }
    check.update(overrides)
    return check


def fk_entry(**overrides) -> dict:
    entry = {
        "constraint": "vms_tenant_id_fkey",
        "declared": True,
        "validated": True,
        "table": "public.vms",
        "columns": ["tenant_id"],
        "ref_table": "public.tenants",
        "ref_columns": ["id"],
        "orphans": 0,
        "sample": [],
    }
    entry.update(overrides)
    return entry


def test_schemas_default_to_public_and_keep_their_order_once():
    assert normalise_schemas(None) == ["public"]
    assert normalise_schemas([]) == ["public"]
    assert normalise_schemas(["sales", "public", "sales"]) == ["sales", "public"]
    with pytest.raises(PgError, match="longer than 63 bytes"):
        normalise_schemas(["s" * 64])


@pytest.mark.parametrize("bad", [-1, None, "3", True])
def test_counts_must_be_zero_or_more(bad):
    with pytest.raises(PgError, match="sample_size must be 0 or more"):
        check_count(bad, "sample_size")


def test_counts_accept_zero():
    assert check_count(0, "max_stale_rows") == 0


def test_tenants_become_text_once_in_order():
    assert normalise_tenants(None) == []
    assert normalise_tenants([2, "1", 2, "2", 1.5]) == ["2", "1", "1.5"]
    with pytest.raises(PgError, match="not a tenant value"):
        normalise_tenants([None])
    with pytest.raises(PgError, match="not a tenant value"):
        normalise_tenants([{"id": 1}])


def test_reference_shape():
    check_reference_shape({"table": "t", "columns": ["a", "b"], "ref_table": "p", "ref_columns": ["x", "y"]})
    with pytest.raises(PgError, match=r"2 column\(s\) \['a', 'b'\] but 1 referenced column\(s\) \['x'\]"):
        check_reference_shape({"table": "t", "columns": ["a", "b"], "ref_table": "p", "ref_columns": ["x"]})
    with pytest.raises(PgError, match="at least one column"):
        check_reference_shape({"table": "t", "columns": [], "ref_table": "p", "ref_columns": []})
    with pytest.raises(PgError, match="empty name"):
        check_reference_shape({"table": "t", "columns": [""], "ref_table": "p", "ref_columns": ["x"]})


@pytest.mark.parametrize(
    ("definition", "query"),
    [
        (" SELECT 1 AS x;", "SELECT 1 AS x"),
        ("SELECT 1\n  FROM t ;\n", "SELECT 1\n  FROM t"),
        ("SELECT ';' AS x;;", "SELECT ';' AS x"),
    ],
)
def test_strip_definition(definition, query):
    assert strip_definition(definition) == query


def test_orphan_statements_single_column_plain_tables_read_only():
    count, sample = orphan_statements(orphan_check(), 10)
    assert render(count) == (
        'SELECT count(*) AS orphans FROM ONLY "public"."vms" AS child WHERE "child"."tenant_id" IS NOT NULL AND '
        'NOT EXISTS (SELECT 1 FROM ONLY "public"."tenants" AS parent WHERE "parent"."id" = "child"."tenant_id")'
    )
    assert render(sample).startswith('SELECT "child"."tenant_id"::text AS key FROM ONLY "public"."vms" AS child WHERE ')
    assert render(sample).endswith('GROUP BY "child"."tenant_id" ORDER BY "child"."tenant_id" LIMIT 10')


def test_orphan_statements_multi_column_partitioned_and_hostile_names_are_quoted():
    check = orphan_check(only=False, only_ref=False, table_name=HOSTILE, columns=["tenant_id", HOSTILE], ref_columns=["tenant_id", "id"])
    count, sample = orphan_statements(check, 3)
    assert render(count) == (
        'SELECT count(*) AS orphans FROM "public"."a""; DROP TABLE x; --" AS child WHERE "child"."tenant_id" IS NOT NULL AND '
        '"child"."a""; DROP TABLE x; --" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "public"."tenants" AS parent WHERE '
        '"parent"."tenant_id" = "child"."tenant_id" AND "parent"."id" = "child"."a""; DROP TABLE x; --")'
    )
    assert render(sample).startswith('SELECT ROW("child"."tenant_id", "child"."a""; DROP TABLE x; --")::text AS key FROM ')
    assert render(sample).endswith("LIMIT 3")


def test_orphan_condition_match_full_counts_partly_null_keys():
    count, _sample = orphan_statements(orphan_check(columns=["a", "b"], ref_columns=["x", "y"], match_full=True), 1)
    assert (
        'WHERE NOT ("child"."a" IS NULL AND "child"."b" IS NULL) AND '
        '(NOT ("child"."a" IS NOT NULL AND "child"."b" IS NOT NULL) OR NOT EXISTS'
    ) in render(count)


def test_staleness_statement_compares_both_ways():
    statement = staleness_statement("public", "tenant_vm_counts", " SELECT t.id\n   FROM tenants t;")
    assert render(statement) == (
        'SELECT count(*) AS stale_rows FROM ((TABLE "public"."tenant_vm_counts" EXCEPT ALL (SELECT t.id\n   FROM tenants t)) '
        'UNION ALL ((SELECT t.id\n   FROM tenants t) EXCEPT ALL TABLE "public"."tenant_vm_counts")) AS difference'
    )


def test_foreign_key_failure_sentences():
    assert foreign_key_failure(fk_entry()) is None
    text = foreign_key_failure(fk_entry(orphans=3, sample=["7", "9"]))
    assert text.startswith(
        "foreign key vms_tenant_id_fkey on public.vms (tenant_id) -> public.tenants (id): 3 orphaned row(s), e.g. key(s) 7, 9: "
    )
    assert "VALIDATE CONSTRAINT" not in text
    not_valid = foreign_key_failure(fk_entry(orphans=1, validated=False))
    assert "e.g." not in not_valid
    assert not_valid.endswith("ALTER TABLE ... VALIDATE CONSTRAINT vms_tenant_id_fkey (it is NOT VALID)")
    reference = foreign_key_failure(fk_entry(constraint=None, declared=False, validated=None, orphans=1, sample=["(1,2)"]))
    assert reference.startswith("reference public.vms (tenant_id) -> public.tenants (id) (not declared as a constraint): 1 orphaned row(s)")


def test_matview_failures():
    fresh = {"name": "public.mv", "populated": True, "unique_index": True, "stale_rows": 0, "fresh": True}
    assert matview_failures(fresh, '"public"."mv"', 0) == []
    assert matview_failures(dict(fresh, stale_rows=4), '"public"."mv"', 5) == []
    stale = matview_failures(dict(fresh, stale_rows=6), '"public"."mv"', 5)
    assert stale == [
        "materialized view public.mv is stale: 6 row(s) differ from its query (max_stale_rows 5): "
        'REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."mv"'
    ]
    empty = matview_failures(dict(fresh, populated=False, unique_index=False, stale_rows=None), '"public"."mv"', 0)
    assert len(empty) == 2
    assert empty[0].startswith("materialized view public.mv is not populated")
    assert empty[1].startswith("materialized view public.mv has no unique index")
    broken = matview_failures(dict(fresh, stale_rows=None, error="no equality operator for type json"), '"public"."mv"', 0)
    assert broken == ["materialized view public.mv could not be compared with its query: no equality operator for type json"]


def test_tenant_failure():
    entry = {"table": "public.vms", "tenant": "1", "visible": 3, "foreign_visible": 0, "expected": 3}
    assert tenant_failure(entry, "app", "app.tenant_id", "tenant_id", 1, "bigint") is None
    leak = tenant_failure(dict(entry, visible=5, foreign_visible=2), "app", "app.tenant_id", "tenant_id", 1, "bigint")
    assert leak.startswith("row level security on public.vms leaks: role 'app' with app.tenant_id = '1' sees 2 row(s) of other tenants")
    hidden = tenant_failure(dict(entry, visible=1), "app", "app.tenant_id", "tenant_id", 1, "bigint")
    assert hidden.startswith("role 'app' with app.tenant_id = '1' sees 1 of the tenant's 3 row(s) in public.vms: a policy hides rows")
    no_policy = tenant_failure(dict(entry, visible=0), "app", "app.tenant_id", "tenant_id", 0, "bigint")
    assert "has no policy" in no_policy and "current_setting('app.tenant_id')::bigint" in no_policy
