# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A write hold on some tables of one database that ends by itself: BEFORE ... FOR EACH STATEMENT
triggers that refuse every INSERT, UPDATE, DELETE and TRUNCATE with SQLSTATE 25006
(read_only_sql_transaction, what an application already treats as "wait and retry") until a
deadline, and let them through after it - so a hold whose process died (SIGKILL, a lost host) ends
at its deadline with no process to end it.

Unlike default_transaction_read_only (postgres/readonly.py) it reaches sessions already open at
their next statement, and only the tables named (a shared server's other databases and tables
keep working). Creating the triggers waits for open writers of those tables (lock_timeout bounds
it); dropping them ends the hold at once.
"""

from __future__ import annotations

import contextlib

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, ident

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql

FUNCTION = "zdm_write_hold"
TRIGGER = "zdm_write_hold"

FUNCTION_BODY = """
BEGIN
    IF clock_timestamp() < TG_ARGV[0]::timestamptz THEN
        RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction', MESSAGE = TG_ARGV[1],
            HINT = 'writes are held until ' || TG_ARGV[0] || ': retry';
    END IF;
    RETURN NULL;
END
"""


def hold(client: Client, schema: str, tables: list[str], until_utc: str, message: str, lock_timeout_ms: int = 5000) -> dict:
    """Hold writes to `tables` until `until_utc` ('YYYY-MM-DD HH:MM:SS.SSS', UTC); one transaction."""
    with client.transaction():
        # SET LOCAL: the bounds end with the transaction, not with the session the caller goes on using
        client.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms")))
        client.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms) * 2}ms")))
        client.execute(
            sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
                ident(schema, FUNCTION), sql.Literal(FUNCTION_BODY)
            )
        )
        for table in tables:
            client.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(ident(TRIGGER), ident(schema, table)))
            client.execute(
                sql.SQL(
                    "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}({}, {})"
                ).format(
                    ident(TRIGGER), ident(schema, table), ident(schema, FUNCTION), sql.Literal(f"{until_utc}+00"), sql.Literal(message)
                )
            )
    return {"schema": schema, "tables": list(tables), "until": until_utc}


def release(client: Client, schema: str, tables: list[str]) -> None:
    """End the hold (the triggers and their function dropped); nothing to do when there is none."""
    with client.transaction():
        for table in tables:
            client.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(ident(TRIGGER), ident(schema, table)))
        client.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(ident(schema, FUNCTION)))


def held_tables(client: Client, schema: str) -> list[str]:
    """The tables of `schema` that carry the hold's trigger (a dead run's leftovers)."""
    rows = client.query(
        "SELECT c.relname FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND t.tgname = %s AND NOT t.tgisinternal "
        "ORDER BY 1",
        (schema, TRIGGER),
    )
    return [row["relname"] for row in rows]
