# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integrity checks on one database (phase 4, on green): orphaned foreign keys, row level
security per tenant, and materialized views. Reads only; the verdict is a list of failures, each
naming the object and what to do.

How it stays read-only and consistent:

* Every check runs in its own transaction, REPEATABLE READ and READ ONLY, that is always rolled
  back (`snapshot`): figures that belong together (a count and its sample; a tenant's view of a
  table and the owner's count of the same rows) come from one snapshot even while replication
  writes, and nothing a view definition or policy calls can write.
* Nothing goes through Client.execute, so `queries` stays empty and check mode behaves the same.
* Every name is checked against the catalogs before any check runs, and reaches SQL only as a
  psycopg identifier. The one piece of SQL text not built here is a materialized view's own
  definition, as pg_get_viewdef() returns it from the catalog.

Foreign keys: a row is orphaned when all its referencing columns are non-NULL and no parent row
has that key (MATCH SIMPLE; for MATCH FULL a partly NULL key is orphaned too), counted with a
NOT EXISTS anti-join. A declared constraint reads its tables as PostgreSQL's own check does
(ONLY for a plain table, so inheritance children are not included; a partitioned table with its
partitions); a listed reference reads them as a query does (children included). Constraints
cloned onto partitions (conparentid <> 0) are checked once, through their parent.

Row level security: the role must not be able to bypass RLS (superuser, BYPASSRLS, or owner of
the table, or a member of its owner, unless the table has FORCE ROW LEVEL SECURITY); the owner
side of the comparison runs with row_security = off, so a connecting user that is itself
filtered by a policy gets an error instead of a wrong "expected" count.
"""

from __future__ import annotations

from contextlib import contextmanager

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, ident, psycopg, sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import (
    check_identifier,
    format_qualified_name,
    split_qualified_name,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.matview import MATVIEWS_IN_SCHEMAS_QUERY, staleness_statement

DEFAULT_SCHEMAS = ["public"]
DEFAULT_SAMPLE_SIZE = 10
DEFAULT_SETTING = "app.tenant_id"
DEFAULT_TENANT_COLUMN = "tenant_id"
PICKED_TENANTS = 3  # tenants tried when rls.tenants is empty
READABLE_KINDS = ("r", "p", "v", "m", "f")  # tables, partitioned tables, views, materialized views, foreign tables

RELATION_QUERY = (
    "SELECT c.oid, c.relkind, n.nspname AS schema, c.relname AS name, c.relrowsecurity AS rls_enabled, "
    "c.relforcerowsecurity AS rls_forced, pg_catalog.pg_get_userbyid(c.relowner) AS owner, "
    "(SELECT count(*) FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid) AS policies "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s"
)
COLUMNS_QUERY = (
    "SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type FROM pg_catalog.pg_attribute a "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)


FOREIGN_KEYS_QUERY = (
    "SELECT c.conname AS constraint, c.convalidated AS validated, c.confmatchtype = 'f' AS match_full, "
    "cn.nspname AS schema, cc.relname AS table, cc.relkind AS relkind, "
    "rn.nspname AS ref_schema, rc.relname AS ref_table, rc.relkind AS ref_relkind, "
    # The key columns in key order, as arrays of names.
    "ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns, "
    "ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord) "
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.ord) AS ref_columns "
    "FROM pg_catalog.pg_constraint c "
    "JOIN pg_catalog.pg_class cc ON cc.oid = c.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace "
    "JOIN pg_catalog.pg_class rc ON rc.oid = c.confrelid JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace "
    "WHERE c.contype = 'f' AND c.conparentid = 0 AND cn.nspname = ANY(%s) "
    "ORDER BY cn.nspname, cc.relname, c.conname"
)


# Pure helpers ------------------------------------------------------------------------------
def normalise_schemas(schemas) -> list[str]:
    """The schemas option: each a valid name, in the order given, each once; [public] when unset."""
    if not schemas:
        return list(DEFAULT_SCHEMAS)
    found = []
    for schema in schemas:
        check_identifier(schema, "schema")
        if schema not in found:
            found.append(schema)
    return found


def check_count(value, option: str) -> int:
    """A count option (sample_size, max_stale_rows): an integer, 0 or more."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PgError(f"{option} must be 0 or more, not {value!r}")
    return value


def normalise_tenants(tenants) -> list[str]:
    """rls.tenants as the text set_config() receives, each once, in the order given."""
    found = []
    for tenant in tenants or []:
        if tenant is None or isinstance(tenant, (dict, list)):
            raise PgError(f"rls.tenants: {tenant!r} is not a tenant value: give numbers or strings, as {DEFAULT_SETTING} would be set")
        text = str(tenant)
        if text not in found:
            found.append(text)
    return found


def check_reference_shape(reference: dict) -> None:
    """A listed reference names as many columns as referenced columns, at least one."""
    columns, ref_columns = reference.get("columns") or [], reference.get("ref_columns") or []
    where = f"references: {reference.get('table')!r} -> {reference.get('ref_table')!r}"
    if not columns or not ref_columns:
        raise PgError(f"{where}: give at least one column in both 'columns' and 'ref_columns'")
    if len(columns) != len(ref_columns):
        raise PgError(
            f"{where}: {len(columns)} column(s) {columns} but {len(ref_columns)} referenced column(s) {ref_columns}: "
            f"list the columns pairwise, in the same order"
        )
    for column in [*columns, *ref_columns]:
        check_identifier(column, f"{where}: column")


def relation_sql(schema: str, name: str, only: bool):
    return sql.SQL("ONLY {}").format(ident(schema, name)) if only else ident(schema, name)


def orphan_condition(columns: list[str], ref_columns: list[str], parent, match_full: bool = False):
    """WHERE clause (over alias child) of the rows of child that have no row in `parent` (a
    relation as SQL) with their key; MATCH SIMPLE skips rows with any NULL key column, MATCH FULL
    also counts a partly NULL key."""
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(ident("child", column)) for column in columns)
    joined = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(ident("parent", ref_column), ident("child", column))
        for column, ref_column in zip(columns, ref_columns, strict=True)
    )
    missing = sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS parent WHERE {})").format(parent, joined)
    if not match_full or len(columns) == 1:
        return sql.SQL("{} AND {}").format(not_null, missing)
    all_null = sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(ident("child", column)) for column in columns)
    return sql.SQL("NOT ({}) AND (NOT ({}) OR {})").format(all_null, not_null, missing)


def orphan_statements(check: dict, sample_size: int):
    """(count statement, sample statement) of one foreign key or reference. The sample is the
    distinct orphan keys as text (a row value for a multi-column key), in key order."""
    child = relation_sql(check["schema"], check["table_name"], check["only"])
    parent = relation_sql(check["ref_schema"], check["ref_table_name"], check["only_ref"])
    condition = orphan_condition(check["columns"], check["ref_columns"], parent, check.get("match_full", False))
    keys = sql.SQL(", ").join(ident("child", column) for column in check["columns"])
    key_text = sql.SQL("{}::text").format(keys) if len(check["columns"]) == 1 else sql.SQL("ROW({})::text").format(keys)
    count = sql.SQL("SELECT count(*) AS orphans FROM {} AS child WHERE {}").format(child, condition)
    sample = sql.SQL("SELECT {} AS key FROM {} AS child WHERE {} GROUP BY {} ORDER BY {} LIMIT {}").format(
        key_text, child, condition, keys, keys, sql.Literal(sample_size)
    )
    return count, sample


def foreign_key_failure(entry: dict) -> str | None:
    """What to say (and do) about a foreign key or reference with orphans; None when it has none."""
    if not entry["orphans"]:
        return None
    columns, ref_columns = ", ".join(entry["columns"]), ", ".join(entry["ref_columns"])
    if entry["declared"]:
        what = f"foreign key {entry['constraint']} on {entry['table']} ({columns}) -> {entry['ref_table']} ({ref_columns})"
    else:
        what = f"reference {entry['table']} ({columns}) -> {entry['ref_table']} ({ref_columns}) (not declared as a constraint)"
    sample = f", e.g. key(s) {', '.join(entry['sample'])}" if entry["sample"] else ""
    text = (
        f"{what}: {entry['orphans']} orphaned row(s){sample}: delete or fix those rows of {entry['table']}, "
        f"or insert the missing rows into {entry['ref_table']} (is replication of {entry['ref_table']} complete?)"
    )
    if entry["declared"] and not entry["validated"]:
        text += f"; then ALTER TABLE ... VALIDATE CONSTRAINT {entry['constraint']} (it is NOT VALID)"
    return text


def matview_failures(entry: dict, quoted: str, max_stale_rows: int) -> list[str]:
    """What to say (and do) about one materialized view; `quoted` is its name as SQL."""
    name = entry["name"]
    failures = []
    if not entry["populated"]:
        failures.append(
            f"materialized view {name} is not populated (created WITH NO DATA, or never refreshed): "
            f"REFRESH MATERIALIZED VIEW {quoted}, then run the check again"
        )
    if not entry["unique_index"]:
        failures.append(
            f"materialized view {name} has no unique index that REFRESH MATERIALIZED VIEW CONCURRENTLY can use "
            f"(a plain REFRESH locks out its readers): CREATE UNIQUE INDEX ON {quoted} (<columns that identify a row>), "
            f"plain columns and no WHERE clause"
        )
    if entry.get("error"):
        failures.append(f"materialized view {name} could not be compared with its query: {entry['error']}")
    elif entry["stale_rows"] is not None and entry["stale_rows"] > max_stale_rows:
        concurrently = "CONCURRENTLY " if entry["unique_index"] else ""
        failures.append(
            f"materialized view {name} is stale: {entry['stale_rows']} row(s) differ from its query "
            f"(max_stale_rows {max_stale_rows}): REFRESH MATERIALIZED VIEW {concurrently}{quoted}"
        )
    return failures


def tenant_failure(entry: dict, role: str, setting: str, column: str, policies: int, column_type: str) -> str | None:
    """What to say about one tenant's view of one table under RLS; None when it is exactly its rows."""
    tenant, table = entry["tenant"], entry["table"]
    own = entry["visible"] - entry["foreign_visible"]
    who = f"role '{role}' with {setting} = '{tenant}'"
    if entry["foreign_visible"]:
        return (
            f"row level security on {table} leaks: {who} sees {entry['foreign_visible']} row(s) of other tenants "
            f"({column} is not '{tenant}'): fix the policies of {table} (a permissive policy such as USING (true) "
            f"opens every row; every policy for {role} must compare {column} with current_setting('{setting}'))"
        )
    if own != entry["expected"]:
        if not policies:
            return (
                f"{who} sees {own} of the tenant's {entry['expected']} row(s) in {table}: row level security is enabled "
                f"but {table} has no policy, so every row is hidden: CREATE POLICY ... ON {table} "
                f"USING ({column} = current_setting('{setting}')::{column_type})"
            )
        return (
            f"{who} sees {own} of the tenant's {entry['expected']} row(s) in {table}: a policy hides rows the "
            f"tenant owns: check the USING clauses of the policies of {table}"
        )
    return None


# Talking to the server ---------------------------------------------------------------------
@contextmanager
def snapshot(client: Client):
    """A REPEATABLE READ, READ ONLY transaction that is always rolled back."""
    with client.transaction() as transaction:
        client.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield
        raise psycopg.Rollback(transaction)


def check_schemas_exist(client: Client, schemas: list[str]) -> None:
    found = {row["nspname"] for row in client.query("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(%s)", (schemas,))}
    missing = [schema for schema in schemas if schema not in found]
    if missing:
        raise PgError(
            f"schema(s) not found in database '{client.conn.info.dbname}' on {client.endpoint}: {', '.join(missing)}: fix 'schemas'"
        )


def resolve_table(client: Client, text, option: str) -> dict:
    """The relation `text` names ('table' or 'schema.table') with its columns {name: type};
    an error naming `option` when it does not exist or cannot be read like a table."""
    schema, name = split_qualified_name(text)
    row = client.query_one(RELATION_QUERY, (schema, name))
    database = client.conn.info.dbname
    display = format_qualified_name(schema, name)
    if row is None:
        raise PgError(
            f"table {display} (in {option}) does not exist in database '{database}' on {client.endpoint}: "
            f"fix {option} (a name without a schema means public.<name>)"
        )
    if row["relkind"] not in READABLE_KINDS:
        raise PgError(f"{display} (in {option}) is not a table in database '{database}' on {client.endpoint}: fix {option}")
    row["display"] = display
    row["columns"] = {column["name"]: column["type"] for column in client.query(COLUMNS_QUERY, (row["oid"],))}
    return row


def require_columns(table: dict, columns: list[str], option: str) -> None:
    missing = [column for column in columns if column not in table["columns"]]
    if missing:
        raise PgError(
            f"table {table['display']} has no column(s) {', '.join(missing)} (in {option}): its columns are "
            f"{', '.join(table['columns'])}: fix {option}"
        )


def plan_references(client: Client, references) -> list[dict]:
    """Each listed reference as an orphan check, after checking its tables and columns exist."""
    checks = []
    for reference in references or []:
        check_reference_shape(reference)
        table = resolve_table(client, reference.get("table"), "references (table)")
        ref_table = resolve_table(client, reference.get("ref_table"), "references (ref_table)")
        require_columns(table, reference["columns"], "references (columns)")
        require_columns(ref_table, reference["ref_columns"], "references (ref_columns)")
        checks.append(
            {
                "constraint": None,
                "declared": False,
                "validated": None,
                "schema": table["schema"],
                "table_name": table["name"],
                "table": table["display"],
                "only": False,
                "columns": list(reference["columns"]),
                "ref_schema": ref_table["schema"],
                "ref_table_name": ref_table["name"],
                "ref_table": ref_table["display"],
                "only_ref": False,
                "ref_columns": list(reference["ref_columns"]),
            }
        )
    return checks


def plan_foreign_keys(client: Client, schemas: list[str]) -> list[dict]:
    """Every foreign key constraint of the tables in `schemas` (NOT VALID ones too)."""
    return [
        {
            "constraint": row["constraint"],
            "declared": True,
            "validated": row["validated"],
            "match_full": row["match_full"],
            "schema": row["schema"],
            "table_name": row["table"],
            "table": format_qualified_name(row["schema"], row["table"]),
            "only": row["relkind"] == "r",
            "columns": row["columns"],
            "ref_schema": row["ref_schema"],
            "ref_table_name": row["ref_table"],
            "ref_table": format_qualified_name(row["ref_schema"], row["ref_table"]),
            "only_ref": row["ref_relkind"] == "r",
            "ref_columns": row["ref_columns"],
        }
        for row in client.query(FOREIGN_KEYS_QUERY, (schemas,))
    ]


def count_orphans(client: Client, check: dict, sample_size: int) -> dict:
    count, sample = orphan_statements(check, sample_size)
    with snapshot(client):
        orphans = client.query_one(count)["orphans"]
        keys = [row["key"] for row in client.query(sample)] if orphans and sample_size else []
    return {
        "constraint": check["constraint"],
        "declared": check["declared"],
        "validated": check["validated"],
        "table": check["table"],
        "columns": check["columns"],
        "ref_table": check["ref_table"],
        "ref_columns": check["ref_columns"],
        "orphans": orphans,
        "sample": keys,
    }


def plan_rls(client: Client, options: dict) -> dict:
    """The RLS check's role, setting, column and tables, checked before anything runs: the role
    exists, cannot bypass RLS on any of the tables, and the connecting user can become it."""
    role = check_identifier(options.get("role"), "rls.role")
    setting = options.get("setting") or DEFAULT_SETTING
    column = check_identifier(options.get("column") or DEFAULT_TENANT_COLUMN, "rls.column")
    if not options.get("tables"):
        raise PgError("rls.tables is empty: list the tables whose rows belong to tenants")
    endpoint = client.endpoint
    found = client.query_one(
        "SELECT r.rolsuper, r.rolbypassrls, pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') AS can_become "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = %s",
        (role,),
    )
    if found is None:
        raise PgError(
            f"role '{role}' (rls.role) does not exist on {endpoint}: name the role the application connects as (it must not own the tables)"
        )
    pointless = "so checking as it would prove nothing: name the application's role (not an owner, not a superuser, no BYPASSRLS)"
    if found["rolsuper"]:
        raise PgError(f"role '{role}' (rls.role) is a superuser on {endpoint}: superusers bypass row level security, {pointless}")
    if found["rolbypassrls"]:
        raise PgError(f"role '{role}' (rls.role) has BYPASSRLS on {endpoint}: it bypasses row level security, {pointless}")
    tables = []
    for name in options["tables"]:
        table = resolve_table(client, name, "rls.tables")
        require_columns(table, [column], "rls.column")
        rights = client.query_one(
            "SELECT pg_catalog.pg_has_role(%s, c.relowner, 'USAGE') AS owns, "
            "pg_catalog.has_table_privilege(%s, c.oid, 'SELECT') AS can_read "
            "FROM pg_catalog.pg_class c WHERE c.oid = %s",
            (role, role, table["oid"]),
        )
        if rights["owns"] and not table["rls_forced"]:
            raise PgError(
                f"role '{role}' (rls.role) owns table {table['display']} (or is a member of its owner '{table['owner']}') on {endpoint}: "
                f"owners bypass row level security unless the table has FORCE ROW LEVEL SECURITY, {pointless}"
            )
        table["can_read"] = rights["can_read"]
        tables.append(table)
    if not found["can_become"]:
        user = client.params.get("login_user")
        raise PgError(
            f"'{user}' cannot SET ROLE {role} on {endpoint}: GRANT {role} TO {user}, or connect as a superuser, to check row level security"
        )
    return {"role": role, "setting": setting, "column": column, "tables": tables, "tenants": normalise_tenants(options.get("tenants"))}


def pick_tenants(client: Client, table: dict, column: str) -> list[str]:
    """Up to PICKED_TENANTS distinct tenant values of `table`, as the connecting user sees them."""
    statement = sql.SQL("SELECT {col}::text AS tenant FROM {table} WHERE {col} IS NOT NULL GROUP BY {col} ORDER BY {col} LIMIT {n}").format(
        col=ident(column), table=ident(table["schema"], table["name"]), n=sql.Literal(PICKED_TENANTS)
    )
    with snapshot(client):
        client.query("SET LOCAL row_security = off")
        return [row["tenant"] for row in client.query(statement)]


def tenant_view(client: Client, plan: dict, tenant: str, tables: list[dict]) -> list[dict]:
    """What the role sees of every table with the tenant setting set to `tenant`, and how many
    rows the tenant has (as the connecting user), in one snapshot that is rolled back."""
    column = ident(plan["column"])
    entries = []
    with snapshot(client):
        client.query(sql.SQL("SET LOCAL ROLE {}").format(ident(plan["role"])))
        client.query("SELECT pg_catalog.set_config(%s, %s, true)", (plan["setting"], tenant))
        for table in tables:
            row = client.query_one(
                sql.SQL("SELECT count(*) AS visible, count(*) FILTER (WHERE {} IS DISTINCT FROM %s) AS foreign_visible FROM {}").format(
                    column, ident(table["schema"], table["name"])
                ),
                (tenant,),
            )
            entries.append(
                {"table": table["display"], "tenant": tenant, "visible": row["visible"], "foreign_visible": row["foreign_visible"]}
            )
        client.query("RESET ROLE")
        client.query("SET LOCAL row_security = off")
        for table, entry in zip(tables, entries, strict=True):
            entry["expected"] = client.query_one(
                sql.SQL("SELECT count(*) AS expected FROM {} WHERE {} = %s").format(ident(table["schema"], table["name"]), column),
                (tenant,),
            )["expected"]
    return entries


def check_rls(client: Client, plan: dict, failures: list[str]) -> list[dict]:
    role, setting, column = plan["role"], plan["setting"], plan["column"]
    readable = []
    for table in plan["tables"]:
        quoted = client.render(ident(table["schema"], table["name"]))
        if not table["rls_enabled"]:
            failures.append(
                f"row level security is not enabled on {table['display']}: every role that may read it sees every tenant's rows: "
                f"ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY and CREATE POLICY tenant_isolation ON {quoted} "
                f"USING ({client.render(ident(column))} = current_setting('{setting}')::{table['columns'][column]})"
            )
        if table["can_read"]:
            readable.append(table)
        else:
            failures.append(
                f"role '{role}' may not read {table['display']}, so its row level security cannot be checked: "
                f"GRANT SELECT ON {quoted} TO {client.render(ident(role))}"
            )
    tenants = plan["tenants"]
    if not tenants:
        first = plan["tables"][0]
        tenants = pick_tenants(client, first, column)
        if not tenants:
            failures.append(
                f"no tenant found to check row level security with: {first['display']} has no rows with {column} set: "
                f"give rls.tenants, or list a table with rows first in rls.tables"
            )
            return []
    entries = []
    by_name = {table["display"]: table for table in readable}
    for tenant in tenants:
        for entry in tenant_view(client, plan, tenant, readable):
            table = by_name[entry["table"]]
            entry["rls_enabled"] = table["rls_enabled"]
            failure = tenant_failure(entry, role, setting, column, table["policies"], table["columns"][column])
            entry["passed"] = failure is None
            if failure and table["rls_enabled"]:  # a table without RLS is reported once, above
                failures.append(failure)
            entries.append(entry)
    return entries


def check_matviews(client: Client, schemas: list[str], max_stale_rows: int, failures: list[str]) -> list[dict]:
    entries = []
    for row in client.query(MATVIEWS_IN_SCHEMAS_QUERY, (schemas,)):
        entry = {
            "name": format_qualified_name(row["schema"], row["name"]),
            "populated": row["populated"],
            "unique_index": row["unique_index"],
            "stale_rows": None,
            "fresh": False,
        }
        if row["populated"]:
            try:
                with snapshot(client):
                    entry["stale_rows"] = client.query_one(staleness_statement(row["schema"], row["name"], row["definition"]))["stale_rows"]
            except PgError as exc:  # e.g. a column type without an equality operator (json, point)
                entry["error"] = str(exc)
            entry["fresh"] = entry["stale_rows"] is not None and entry["stale_rows"] <= max_stale_rows
        failures.extend(matview_failures(entry, client.render(ident(row["schema"], row["name"])), max_stale_rows))
        entries.append(entry)
    return entries


def validate(client: Client, params: dict) -> dict:
    """Run the checks the parameters ask for; the result the module returns. With fail_on_error
    and any failure, a PgError listing them (its details carry the same figures)."""
    schemas = normalise_schemas(params.get("schemas"))
    sample_size = check_count(params.get("sample_size", DEFAULT_SAMPLE_SIZE), "sample_size")
    max_stale_rows = check_count(params.get("max_stale_rows", 0), "max_stale_rows")
    # Every name is resolved before any check runs: a typo fails fast, with nothing run.
    check_schemas_exist(client, schemas)
    orphan_checks = plan_foreign_keys(client, schemas) if params.get("foreign_keys", True) else []
    orphan_checks += plan_references(client, params.get("references"))
    rls_plan = plan_rls(client, params["rls"]) if params.get("rls") else None

    failures: list[str] = []
    foreign_keys = []
    for check in orphan_checks:
        entry = count_orphans(client, check, sample_size)
        failure = foreign_key_failure(entry)
        if failure:
            failures.append(failure)
        foreign_keys.append(entry)
    rls = check_rls(client, rls_plan, failures) if rls_plan else []
    matviews = check_matviews(client, schemas, max_stale_rows, failures) if params.get("matviews", True) else []

    result = {"passed": not failures, "failures": failures, "foreign_keys": foreign_keys, "rls": rls, "matviews": matviews}
    if failures and params.get("fail_on_error"):
        raise PgError(
            f"{len(failures)} integrity check(s) failed in database '{client.conn.info.dbname}' on {client.endpoint}: "
            + " | ".join(failures),
            **result,
        )
    return dict(result, changed=False, queries=list(client.queries))
