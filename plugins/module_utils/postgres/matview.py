# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Materialized views: what pg_validate checks about them, and the refresh pg_matview_refresh does.

A refresh is skipped when the view already holds what its query returns (compared as a multiset,
EXCEPT ALL both ways), so a second run says changed: false. CONCURRENTLY (readers not blocked)
needs a unique index PostgreSQL accepts for it; without one the module refuses before refreshing
anything, unless concurrently: false. A view never populated is refreshed plainly (nobody can read
it yet, and CONCURRENTLY refuses it). The one piece of SQL text not built here is a view's own
definition (pg_get_viewdef), which the staleness check runs.
"""

from __future__ import annotations

import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, ident, sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import format_qualified_name, split_qualified_name

# A unique index REFRESH MATERIALIZED VIEW CONCURRENTLY accepts (is_usable_unique_index() in
# PostgreSQL): btree, unique, immediate, valid, no predicate, plain columns only.
MATVIEWS_IN_SCHEMAS_QUERY = (
    "SELECT c.oid, m.schemaname AS schema, m.matviewname AS name, m.ispopulated AS populated, "
    "EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid "
    "  JOIN pg_catalog.pg_am am ON am.oid = ic.relam "
    "  WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indpred IS NULL "
    "  AND i.indexprs IS NULL AND i.indnatts > 0 AND am.amname = 'btree') AS unique_index, "
    "pg_catalog.pg_get_viewdef(c.oid) AS definition "
    "FROM pg_catalog.pg_matviews m "
    "JOIN pg_catalog.pg_namespace n ON n.nspname = m.schemaname "
    "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = m.matviewname AND c.relkind = 'm' "
    "WHERE m.schemaname = ANY(%s) ORDER BY m.schemaname, m.matviewname"
)


def strip_definition(definition: str) -> str:
    """pg_get_viewdef()'s text as a subquery: surrounding blanks and trailing semicolons removed."""
    text = definition.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def staleness_statement(schema: str, name: str, definition: str):
    """Rows that differ between a materialized view and its defining query (as a multiset)."""
    view = ident(schema, name)
    query = sql.SQL(strip_definition(definition))
    return sql.SQL(
        "SELECT count(*) AS stale_rows FROM ((TABLE {view} EXCEPT ALL ({query})) "
        "UNION ALL (({query}) EXCEPT ALL TABLE {view})) AS difference"
    ).format(view=view, query=query)


def read_views(client: Client, names: list[str]) -> list[dict]:
    """The views asked for, in that order; PgError naming those that are not materialized views."""
    wanted = [split_qualified_name(name) for name in names]
    rows = client.query(MATVIEWS_IN_SCHEMAS_QUERY, (sorted({qualified[0] for qualified in wanted}),))
    found = {(row["schema"], row["name"]): row for row in rows}
    missing = [format_qualified_name(*key) for key in wanted if key not in found]
    if missing:
        raise PgError(
            f"not a materialized view in database '{client.params.get('login_db')}' on {client.endpoint}: {', '.join(missing)}: "
            f"create it first (zerodowntime.migration.pg_schema_apply) or fix views (schema.name; public when no schema)"
        )
    return [found[key] for key in dict.fromkeys(wanted)]


def refresh_matviews(client: Client, params: dict) -> dict:
    """What pg_matview_refresh does: refresh each view that differs from its query."""
    if not params["views"]:
        raise PgError("views is empty: list the materialized views to refresh")
    views = read_views(client, params["views"])
    concurrently = params["concurrently"]
    unusable = [
        format_qualified_name(row["schema"], row["name"]) for row in views if concurrently and row["populated"] and not row["unique_index"]
    ]
    if unusable:
        raise PgError(
            f"REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on {', '.join(unusable)} (btree, plain columns, "
            f"no WHERE clause); nothing was refreshed. Create one (CREATE UNIQUE INDEX ON <view> (<columns that identify a row>)), "
            f"or set concurrently: false (a plain refresh locks out the view's readers while it runs)"
        )
    results = []
    for row in views:
        entry = {"name": format_qualified_name(row["schema"], row["name"]), "populated": row["populated"], "stale_rows": None}
        if row["populated"] and not params["force"]:
            entry["stale_rows"] = client.query_one(staleness_statement(row["schema"], row["name"], row["definition"]))["stale_rows"]
        entry["refreshed"] = not row["populated"] or params["force"] or entry["stale_rows"] > 0
        entry["concurrently"] = bool(entry["refreshed"] and concurrently and row["populated"])
        entry["ms"] = None
        if entry["refreshed"]:
            started = time.monotonic()
            client.execute(
                sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(
                    sql.SQL("CONCURRENTLY " if entry["concurrently"] else ""), ident(row["schema"], row["name"])
                )
            )
            entry["ms"] = None if client.check_mode else round((time.monotonic() - started) * 1000, 1)
        results.append(entry)
    changed = any(entry["refreshed"] for entry in results)
    return {
        "changed": changed,
        "views": results,
        "diff": {
            "before": {entry["name"]: {"stale_rows": entry["stale_rows"]} for entry in results},
            "after": {entry["name"]: {"stale_rows": 0 if entry["refreshed"] else entry["stale_rows"]} for entry in results},
        },
        "queries": list(client.queries),
    }
