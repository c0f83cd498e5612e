# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL as the copy's target: its column types as logical types (copy/types.py) and back,
a table created from the source's columns when missing (an existing one - plain or partitioned,
pg_partition's - is used as it is), batches written with COPY, and the replay's delete-and-insert
by key. Identifiers only through psycopg.sql; a type name in DDL only from TYPE_NAMES (never the
user's text).
"""

from __future__ import annotations

import contextlib
import re

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, driver_error, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.compare import CanonicalSide, prepare_session
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import check_identifier

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    import psycopg
    from psycopg import sql

# PostgreSQL's own type names (format_type) -> logical type, integer bits.
TYPE_NAMES = {
    "smallint": ("integer", 16),
    "integer": ("integer", 32),
    "bigint": ("integer", 64),
    "real": ("real", 0),
    "double precision": ("real", 0),
    "numeric": ("numeric", 0),
    "text": ("text", 0),
    "character varying": ("text", 0),
    "character": ("text", 0),
    "bytea": ("blob", 0),
    "boolean": ("boolean", 0),
    "date": ("date", 0),
    "timestamp without time zone": ("timestamp", 0),
    "timestamp with time zone": ("timestamptz", 0),
    "json": ("json", 0),
    "jsonb": ("json", 0),
    "uuid": ("uuid", 0),
}
ALIASES = {
    "int": "integer",
    "int4": "integer",
    "int2": "smallint",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "float": "double precision",
    "decimal": "numeric",
    "varchar": "character varying",
    "char": "character",
    "bool": "boolean",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}
# The target type a logical type gets in a table the copy creates.
DEFAULT_TYPES = {
    "integer": "bigint",
    "real": "double precision",
    "numeric": "numeric",
    "text": "text",
    "blob": "bytea",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "json": "jsonb",
    "uuid": "uuid",
}
TYPE_TEXT = re.compile(r"^\s*([a-z][a-z0-9 ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


class TargetType:
    """A PostgreSQL column type the copy knows: its canonical name, parameters, logical type."""

    def __init__(self, name: str, params: tuple = ()):
        self.name = name
        self.params = params
        self.logical, self.bits = TYPE_NAMES[name]

    @property
    def length(self):
        return self.params[0] if self.name in ("character varying", "character") and self.params else None

    @property
    def scale(self):
        """A numeric(p, s)'s fixed scale (its values compare rounded to it, as the column stores them)."""
        return (self.params[1:] or (0,))[0] if self.name == "numeric" and self.params else None

    @property
    def real_digits(self) -> int:
        return 6 if self.name == "real" else 15  # a 4-byte real holds about 6

    def __str__(self):
        return self.name + (f"({','.join(map(str, self.params))})" if self.params else "")

    def ddl(self):
        """The type as DDL: a name from TYPE_NAMES and integers only."""
        return sql.SQL(str(self))


def parse_type(text: str) -> TargetType | None:
    """'varchar(20)' -> character varying(20); 'timestamptz' -> timestamp with time zone; None when unknown."""
    if not isinstance(text, str):
        return None
    match = TYPE_TEXT.match(text.lower())
    if not match:
        return None
    name = " ".join(match.group(1).split())
    name = ALIASES.get(name, name)
    if name not in TYPE_NAMES:
        return None
    params = tuple(int(group) for group in match.group(2, 3) if group is not None)
    return TargetType(name, params)


class PgTarget:
    """The copy's target adapter over one postgres.client.Client (autocommit; transactions explicit)."""

    kind = "PostgreSQL"
    bulk_write = "COPY"

    def __init__(self, client: Client, schema: str):
        self.client = client
        self.schema = schema

    @property
    def where(self) -> str:
        return f"{self.client.endpoint} database {self.client.params.get('login_db')}"

    def qualified(self, table: str) -> str:
        return f"{self.schema}.{table}"

    @staticmethod
    def check_name(name: str, what: str) -> None:
        check_identifier(name, what)

    @staticmethod
    def parse_type(text: str) -> TargetType | None:
        return parse_type(text)

    @staticmethod
    def default_type(logical: str) -> TargetType:
        return TargetType(DEFAULT_TYPES[logical])

    @staticmethod
    def type_names() -> list[str]:
        return sorted(set(TYPE_NAMES) | set(ALIASES))

    def record(self, line: str) -> None:
        """A summary line in the audit list (COPY batches are not listed one by one)."""
        self.client.queries.append(line)

    def render(self, statement) -> str:
        return self.client.render(statement)

    def columns(self, table: str) -> dict | None:
        """column -> type text (format_type) of an existing table or partitioned table; None when missing."""
        found = self.client.query(
            "SELECT c.relkind, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = %s AND c.relname = %s ORDER BY a.attnum",
            (self.schema, table),
        )
        if not found:
            return None
        if found[0]["relkind"] not in ("r", "p"):
            raise PgError(f"{self.qualified(table)} on {self.where} is not a table (relkind {found[0]['relkind']}): copy into a table")
        return {row["attname"]: row["type"] for row in found if row["attname"] is not None}

    def has_rows(self, table: str) -> bool:
        return bool(self.client.query(sql.SQL("SELECT 1 AS found FROM {} LIMIT 1").format(ident(self.schema, table))))

    def create_statement(self, table: str, columns: list, key: list[str]):
        """columns: [(name, TargetType, not null)]."""
        parts = [
            sql.SQL("{} {}{}").format(ident(name), kind.ddl(), sql.SQL(" NOT NULL" if notnull or name in key else ""))
            for name, kind, notnull in columns
        ]
        parts.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(ident, key))))
        return sql.SQL("CREATE TABLE {} ({})").format(ident(self.schema, table), sql.SQL(", ").join(parts))

    def create(self, table: str, columns: list, key: list[str]) -> None:
        if not self.client.query("SELECT 1 AS found FROM pg_catalog.pg_namespace WHERE nspname = %s", (self.schema,)):
            self.client.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(self.schema)))
        self.client.execute(self.create_statement(table, columns, key))

    def empty(self, table: str) -> None:
        self.client.execute(sql.SQL("TRUNCATE {}").format(ident(self.schema, table)))

    def transaction(self):
        return self.client.transaction()

    def write(self, table: str, columns: list[str], rows: list) -> None:
        """COPY the (converted) rows into the table."""
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(ident(self.schema, table), sql.SQL(", ").join(map(ident, columns)))
        try:
            with self.client.conn.cursor() as cur, cur.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            raise driver_error(
                f"writing a batch into {self.qualified(table)} on {self.where} failed: {exc.diag.message_primary or exc} "
                f"({exc.diag.message_detail or 'no detail'}); nothing of this batch was kept - fix the target table "
                f"(a constraint or type the source's values do not meet) and run again",
                exc,
            ) from None

    def delete_keys(self, table: str, key: list[str], keys: list) -> None:
        if not keys:
            return
        statement = sql.SQL("DELETE FROM {} WHERE {}").format(
            ident(self.schema, table), sql.SQL(" AND ").join(sql.SQL("{} = %s").format(ident(column)) for column in key)
        )
        try:
            with self.client.conn.cursor() as cur:
                cur.executemany(statement, [tuple(values) for values in keys])
        except psycopg.Error as exc:
            raise driver_error(f"deleting replayed keys from {self.qualified(table)} on {self.where} failed: {exc}", exc) from None

    # -- as a side of the comparison (compare/run.py) --------------------------------------------
    def prepare_compare(self) -> None:
        """timestamptz in UTC, floats with every digit."""
        prepare_session(self.client)

    def compare_side(self, role: str, table: str, columns: list[str], key: list[str], canonical):
        return CanonicalSide(self.client, role, self.qualified(table), columns, key, canonical)
