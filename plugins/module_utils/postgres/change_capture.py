# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Change capture on PostgreSQL tables (the way back of the SQLite cutover), the mirror of
sqlite/capture.py: one row per changed row in a change table, written by AFTER row triggers in the
writer's own transaction - a change row exists exactly when the change committed.

The change table (default zdm_reverse_changes, in the tables' schema): `seq` (bigint identity),
`table_name`, `pk` (the row's key as a JSON array in key column order, numbers as JSON numbers -
the form the SQLite capture records), `old_pk` (the key before an UPDATE that changed it, else
NULL), `op` (I, U or D) and `at`. One plpgsql trigger function <change_table>_record; on every
captured table one trigger named <change_table> (trigger names are per table) whose arguments are
the table's name and its key columns: the name is passed, not read from TG_TABLE_NAME, because on
a partitioned table (pg_partition's) the trigger is cloned onto every partition, where
TG_TABLE_NAME is the partition's name.

The capture is one ManagedObject: its attributes are the change table, the function's body and
table -> key columns of its triggers, so a second run changes nothing, check mode runs nothing
(the Client records the statements) and --diff lists the triggers.

PgChangeSource reads those change rows as the copy engine's source (copy/engine.py: plan_tables
and Copier.replay), so the way back is the copy's own replay with the directions swapped.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import uuid
from contextlib import contextmanager

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.types import moment_text
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.copy_target import parse_type
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import check_identifier

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql
    from psycopg.rows import tuple_row

DEFAULT_CHANGE_TABLE = "zdm_reverse_changes"
CHANGE_COLUMNS = ("seq", "table_name", "pk", "old_pk", "op", "at")


def function_name(change_table: str) -> str:
    return f"{change_table}_record"


def check_names(change_table: str) -> None:
    check_identifier(change_table, "change_table")
    check_identifier(function_name(change_table), "change_table (with _record appended, the trigger function's name)")


def change_table_sql(schema: str, change_table: str):
    return sql.SQL(
        "CREATE TABLE {} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, table_name text NOT NULL, pk jsonb NOT NULL, "
        "old_pk jsonb, op char(1) NOT NULL CHECK (op IN ('I', 'U', 'D')), at timestamptz NOT NULL DEFAULT clock_timestamp())"
    ).format(ident(schema, change_table))


def function_body(client: Client, schema: str, change_table: str) -> str:
    """The function's body (compared with pg_proc.prosrc on every run). TG_ARGV[0] is the table's
    name, the rest its key columns; `->` keeps a number a JSON number (as the SQLite capture's
    json_array does), so a key reads back as the value it is."""
    target = client.render(ident(schema, change_table))  # quoted by the driver
    return f"""
DECLARE
    new_row jsonb;
    old_row jsonb;
    new_pk jsonb := '[]'::jsonb;
    old_pk jsonb := '[]'::jsonb;
    i integer;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
        FOR i IN 1 .. TG_NARGS - 1 LOOP
            new_pk := new_pk || jsonb_build_array(new_row -> TG_ARGV[i]);
        END LOOP;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
        FOR i IN 1 .. TG_NARGS - 1 LOOP
            old_pk := old_pk || jsonb_build_array(old_row -> TG_ARGV[i]);
        END LOOP;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {target} (table_name, pk, old_pk, op) VALUES (TG_ARGV[0], new_pk, NULL, 'I');
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {target} (table_name, pk, old_pk, op) VALUES (TG_ARGV[0], old_pk, NULL, 'D');
    ELSE
        INSERT INTO {target} (table_name, pk, old_pk, op)
        VALUES (TG_ARGV[0], new_pk, CASE WHEN new_pk IS DISTINCT FROM old_pk THEN old_pk END, 'U');
    END IF;
    RETURN NULL;
END
"""  # noqa: S608 (a quoted identifier)


def function_sql(schema: str, change_table: str, body: str):
    # SECURITY DEFINER: the application's own user (often not the migrator who owns the change table)
    # writes through it; search_path pinned, as every SECURITY DEFINER function must be
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {}"
    ).format(ident(schema, function_name(change_table)), sql.Literal(body))


def trigger_sql(schema: str, change_table: str, table: str, key: list[str]):
    args = sql.SQL(", ").join(sql.Literal(value) for value in [table, *key])
    return sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}({})").format(
        ident(change_table), ident(schema, table), ident(schema, function_name(change_table)), args
    )


class TargetCapture(ManagedObject):
    """The change table, the trigger function and the triggers of one schema."""

    kind = "capture"

    def __init__(self, client: Client, schema: str, change_table: str):
        super().__init__(client, change_table)
        self.schema = schema

    def change_table_columns(self) -> tuple | None:
        rows = self.client.query(
            "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (self.schema, self.name),
        )
        return tuple(row["attname"] for row in rows) or None

    def body(self) -> str | None:
        found = self.client.query_one(
            "SELECT p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = %s AND p.pronargs = 0",
            (self.schema, function_name(self.name)),
        )
        return found["prosrc"] if found else None

    def triggers(self) -> dict:
        """table -> key columns of this capture's triggers (the parents' on a partitioned table, not their clones)."""
        rows = self.client.query(
            "SELECT c.relname, t.tgargs, t.tgnargs FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND t.tgname = %s AND t.tgparentid = 0 ORDER BY c.relname",
            (self.schema, self.name),
        )
        found = {}
        for row in rows:
            # tgargs: the arguments, each ended by a NUL; the first is the table's name
            args = bytes(row["tgargs"]).split(b"\x00")[: row["tgnargs"]]
            found[row["relname"]] = [arg.decode("utf-8") for arg in args[1:]]
        return found

    def pending(self) -> int:
        if self.change_table_columns() is None:
            return 0
        return self.client.query_one(sql.SQL("SELECT count(*) AS n FROM {}").format(ident(self.schema, self.name)))["n"]

    def check_change_table(self) -> None:
        """An existing table of that name must be a change table: never write into an application table."""
        columns = self.change_table_columns()
        if columns is not None and columns != CHANGE_COLUMNS:
            raise PgError(
                f"{self.schema}.{self.name} on {self.client.endpoint} exists but is not a change table (its columns are "
                f"{', '.join(columns)}): give another change_table name"
            )

    def exists(self) -> bool:
        return self.change_table_columns() is not None or self.body() is not None or bool(self.triggers())

    def attrs(self) -> dict:
        return {
            "change_table": self.name if self.change_table_columns() is not None else None,
            "function": self.body(),
            "triggers": self.triggers(),
            "rows": self.pending(),
        }

    def differences(self, current: dict, desired: dict) -> dict:
        changes = {}
        if current["change_table"] is None:
            changes["change_table"] = self.name
        if current["function"] != desired["function"]:
            changes["function"] = desired["function"]
        if current["triggers"] != desired["triggers"]:
            changes["triggers"] = desired["triggers"]
        return changes

    def create(self, desired: dict) -> None:
        self.update({"change_table": None, "function": None, "triggers": {}}, {"change_table": self.name, **desired})

    def update(self, current: dict, changes: dict) -> None:
        if changes.get("change_table"):
            self.client.execute(change_table_sql(self.schema, self.name))
        if "function" in changes:
            self.client.execute(function_sql(self.schema, self.name, changes["function"]))
        if "triggers" in changes:
            wanted = changes["triggers"]
            for table, key in current["triggers"].items():
                if wanted.get(table) != key:
                    self.client.execute(sql.SQL("DROP TRIGGER {} ON {}").format(ident(self.name), ident(self.schema, table)))
            for table, key in wanted.items():
                if current["triggers"].get(table) != key:
                    self.client.execute(trigger_sql(self.schema, self.name, table, key))

    def drop(self, current: dict) -> None:
        for table in current["triggers"]:
            self.client.execute(sql.SQL("DROP TRIGGER {} ON {}").format(ident(self.name), ident(self.schema, table)))
        if current["function"] is not None:
            self.client.execute(sql.SQL("DROP FUNCTION {}()").format(ident(self.schema, function_name(self.name))))
        if current["change_table"] is not None:
            self.client.execute(sql.SQL("DROP TABLE {}").format(ident(self.schema, self.name)))

    def diff_view(self, attributes: dict | None) -> dict:
        if attributes is None:
            return {}
        return {
            "change_table": f"{self.schema}.{attributes.get('change_table', self.name)}",
            "triggers": {f"{self.schema}.{table}": list(key) for table, key in (attributes.get("triggers") or {}).items()},
        }


def check_tables(client: Client, schema: str, tables_with_keys: dict) -> None:
    """Every table exists (a table or a partitioned table) and has every key column; refused by name before anything changes."""
    if not tables_with_keys:
        raise PgError("tables_with_keys is empty: name the tables to capture and their key columns")
    for table, key in tables_with_keys.items():
        check_identifier(table, "table")
        if not isinstance(key, list) or not key or not all(isinstance(column, str) and column for column in key):
            raise PgError(f"the key of table {table!r} must be a list of column names, not {key!r}")
        found = client.query(
            "SELECT c.relkind, a.attname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, table),
        )
        if not found:
            raise PgError(f"table {schema}.{table} does not exist on {client.endpoint}: capture the tables the copy wrote")
        if found[0]["relkind"] not in ("r", "p"):
            raise PgError(f"{schema}.{table} on {client.endpoint} is not a table (relkind {found[0]['relkind']}): capture tables only")
        missing = [column for column in key if column not in {row["attname"] for row in found}]
        if missing:
            raise PgError(f"table {schema}.{table} has no column(s) {', '.join(map(repr, missing))} of the key given for it")


def ensure_target_capture(
    client: Client, schema: str, tables_with_keys: dict, change_table: str = DEFAULT_CHANGE_TABLE, state: str = "present"
) -> dict:
    """The reverse capture present (change table, function, a trigger per table) or absent, in one transaction."""
    check_identifier(schema, "schema")
    check_names(change_table)
    capture = TargetCapture(client, schema, change_table)
    desired = {}
    if state == "present":
        check_tables(client, schema, tables_with_keys)
        if change_table in tables_with_keys:
            raise PgError(f"table {change_table!r} is the change table itself: leave it out of the captured tables")
        desired = {"function": function_body(client, schema, change_table), "triggers": {t: list(k) for t, k in tables_with_keys.items()}}
    with client.transaction():
        capture.check_change_table()
        result = capture.ensure(state, desired)
        result["pending_changes"] = capture.pending()
    return result


# -- the copy engine's source over the change rows ----------------------------------------------------


class Column:
    def __init__(self, name: str, declared: str, notnull: bool):
        self.name = name
        self.declared = declared
        self.notnull = notnull


def plain(value):
    """A PostgreSQL value in the neutral form copy/types.py's converters take (they read dates as
    ISO text, JSON as text): timestamps in UTC as text, dates as text, JSON as text, UUIDs as text."""
    if value is None or isinstance(value, (int, float, str, bool, decimal.Decimal)):
        return value
    if isinstance(value, datetime.datetime):
        return moment_text(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


class PgChangeSource:
    """The copy engine's source adapter over a schema's tables and the reverse capture's change rows."""

    kind = "PostgreSQL"

    def __init__(self, client: Client, schema: str, change_table: str = DEFAULT_CHANGE_TABLE):
        self.client = client
        self.schema = schema
        self.change_table = change_table
        self.capture = TargetCapture(client, schema, change_table)
        self.keys = None

    @property
    def where(self) -> str:
        return f"{self.client.endpoint} database {self.client.params.get('login_db')} schema {self.schema}"

    def has_changes(self) -> bool:
        return self.capture.change_table_columns() == CHANGE_COLUMNS

    def captured(self) -> dict:
        if self.keys is None:
            self.keys = self.capture.triggers()
        return self.keys

    def tables(self) -> list[str]:
        return sorted(self.captured())

    def key(self, table: str) -> list[str]:
        """The key recorded for the capture (its trigger's arguments): the key a change row holds."""
        key = self.captured().get(table)
        if key is None:
            raise PgError(f"table {self.schema}.{table} on {self.client.endpoint} has no reverse capture trigger: capture it first")
        return list(key)

    def columns(self, table: str) -> list[Column]:
        rows = self.client.query(
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull FROM pg_catalog.pg_attribute a "
            "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (self.schema, table),
        )
        return [Column(row["attname"], row["type"], row["attnotnull"]) for row in rows]

    @staticmethod
    def logical_type(declared: str) -> str | None:
        kind = parse_type(declared)
        return kind.logical if kind is not None else None

    @contextmanager
    def snapshot(self):
        """One REPEATABLE READ read-only transaction: the change rows and the rows they name are read
        in the same state. Yields the last sequence number in it."""
        self.client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield self.last_seq()  # the first read: it fixes the snapshot
        finally:
            self.client.conn.execute("ROLLBACK")

    def identity(self) -> dict:
        """Which change table this is: a capture removed and installed again is another one (its numbers start over)."""
        found = self.client.query_one(
            "SELECT c.oid::bigint AS oid, (SELECT system_identifier FROM pg_catalog.pg_control_system()) AS system "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (self.schema, self.change_table),
        )
        return {
            "endpoint": self.client.endpoint,
            "database": self.client.params.get("login_db"),
            "change_table": f"{self.schema}.{self.change_table}",
            "oid": found["oid"] if found else None,
            "system": str(found["system"]) if found else None,
        }

    def high_seq(self) -> int:
        """The highest sequence number the change table's identity ever handed out (0 before the first)."""
        found = self.client.query_one(
            "SELECT s.last_value FROM pg_catalog.pg_sequences s WHERE pg_catalog.format('%%I.%%I', s.schemaname, s.sequencename)::regclass "
            "= pg_catalog.pg_get_serial_sequence(%s, 'seq')::regclass",
            (self.client.render(ident(self.schema, self.change_table)),),
        )
        return int(found["last_value"]) if found and found["last_value"] is not None else 0

    def last_seq(self) -> int:
        found = self.client.query_one(sql.SQL("SELECT max(seq) AS seq FROM {}").format(ident(self.schema, self.change_table)))
        return found["seq"] or 0

    def count(self, table: str) -> int:
        return self.client.query_one(sql.SQL("SELECT count(*) AS n FROM {}").format(ident(self.schema, table)))["n"]

    def changes(self, after_seq: int, limit: int) -> list[tuple]:
        """(seq, table, key values, old key values or None) after `after_seq`, in sequence order."""
        rows = self.client.query(
            sql.SQL("SELECT seq, table_name, pk, old_pk FROM {} WHERE seq > %s ORDER BY seq LIMIT %s").format(
                ident(self.schema, self.change_table)
            ),
            (after_seq, limit),
        )
        return [(row["seq"], row["table_name"], list(row["pk"]), list(row["old_pk"]) if row["old_pk"] else None) for row in rows]

    def backlog(self, after_seq: int) -> int:
        statement = sql.SQL("SELECT count(*) AS n FROM {} WHERE seq > %s").format(ident(self.schema, self.change_table))
        return self.client.query_one(statement, (after_seq,))["n"]

    def rows_by_key(self, table: str, columns: list[str], key: list[str], keys: list[list]) -> dict:
        """key tuple -> row (values in the neutral form, `plain`), for the keys that exist now (in this snapshot)."""
        if not keys:
            return {}
        statement = sql.SQL("SELECT {} FROM {} WHERE {}").format(
            sql.SQL(", ").join(map(ident, columns)),
            ident(self.schema, table),
            sql.SQL(" AND ").join(sql.SQL("{} = %s").format(ident(column)) for column in key),
        )
        positions = [columns.index(column) for column in key]
        found = {}
        with self.client.conn.cursor(row_factory=tuple_row) as cur:
            for values in keys:
                cur.execute(statement, tuple(values))
                for row in cur.fetchall():
                    found[tuple(row[position] for position in positions)] = tuple(plain(value) for value in row)
        return found
