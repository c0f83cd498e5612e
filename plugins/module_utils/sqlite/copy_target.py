# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An SQLite file as the copy engine's target (copy/engine.py): the way back of the SQLite cutover,
where the rows written on the new database are replayed into the file the application left.

The file's tables exist (the application made them); their declared types decide the logical type
of every column (sqlite/source.py's logical_type), and a value is stored as the application wrote
it: dates and times as text ('YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS' in UTC, a fraction only when there
is one), booleans as 0/1, bytes as a BLOB, JSON and UUIDs as text, a numeric as text that the
column's affinity turns into a number (SQLite's own rule for what the application would have
written). Never creates or empties a table: this target only takes the replay's delete-and-insert.
Identifiers through quote_ident.
"""

from __future__ import annotations

import datetime
from contextlib import contextmanager

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.types import moment_text
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client, SqliteError, quote_ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import DECLARED, logical_type


class SqliteType:
    """A declared SQLite column type the copy knows: its text and its logical type."""

    bits = 64
    length = None
    scale = None
    real_digits = 15

    def __init__(self, declared: str):
        self.declared = declared
        self.logical = logical_type(declared)

    def __str__(self):
        return self.declared or "(none)"


def stored(value, logical: str):
    """A converted value (copy/types.py's converter for `logical`) as the SQLite application stores it."""
    if value is None:
        return None
    if logical == "boolean":
        return 1 if value else 0
    if logical in ("timestamp", "timestamptz") and isinstance(value, datetime.datetime):
        return moment_text(value)
    if logical == "date" and isinstance(value, datetime.date):
        return value.isoformat()
    if logical in ("numeric", "uuid"):
        # a Decimal as text: the column's NUMERIC affinity stores it as INTEGER or REAL when that
        # keeps it exactly, as text otherwise - what the application's own write would have become
        return str(value)
    return value


class SqliteTarget:
    """The copy engine's target adapter over one sqlite.client.Client; its writes run inside the
    caller's transaction (sqlite/reverse.py holds one BEGIN IMMEDIATE for the whole replay)."""

    kind = "SQLite"
    bulk_write = "INSERT"

    def __init__(self, client: Client):
        self.client = client
        self.types: dict = {}
        self.counts: dict = {}

    @property
    def where(self) -> str:
        return self.client.path

    @staticmethod
    def qualified(table: str) -> str:
        return table

    @staticmethod
    def check_name(name: str, what: str) -> None:
        quote_ident(name)  # a NUL is refused by name

    @staticmethod
    def parse_type(text: str) -> SqliteType | None:
        kind = SqliteType(text or "")
        return kind if kind.logical is not None else None

    @staticmethod
    def default_type(logical: str) -> SqliteType:
        raise SqliteError(f"the way back writes into the file's own tables only; no column type is chosen for {logical}")

    @staticmethod
    def type_names() -> list[str]:
        return sorted(name for name in DECLARED if name)

    def record(self, line: str) -> None:
        self.client.queries.append(line)

    def columns(self, table: str) -> dict:
        """column -> declared type. A missing table is refused: the file's tables are the application's, never made here."""
        rows = self.client.query("SELECT name, type FROM pragma_table_info(?) ORDER BY cid", (table,))
        if not rows:
            raise SqliteError(
                f"table {table!r} is captured on the target but does not exist in {self.client.path}: the way back writes "
                f"into the tables the copy was made from. Restore the table in the file, or remove its reverse capture trigger"
            )
        found = {name: declared or "" for name, declared in rows}
        self.types[table] = {name: self.parse_type(declared) for name, declared in found.items()}
        return found

    def has_rows(self, table: str) -> bool:
        return bool(self.client.query(f"SELECT 1 FROM {quote_ident(table)} LIMIT 1"))  # noqa: S608 (quoted identifier)

    def create(self, table: str, columns: list, key: list[str]) -> None:
        raise SqliteError(f"table {table!r} does not exist in {self.client.path}, and the way back does not create tables")

    def create_statement(self, table: str, columns: list, key: list[str]) -> str:
        return f"-- {table!r} missing: not created"

    @staticmethod
    def render(statement) -> str:
        return str(statement)

    def empty(self, table: str) -> None:
        raise SqliteError(f"the way back never empties {table!r} in {self.client.path}: it replays changes only")

    @contextmanager
    def transaction(self):
        """A savepoint inside the caller's transaction (a chunk's delete and insert undone together on
        an error); a transaction of its own when there is none."""
        if not self.client.conn.in_transaction:
            with self.client.immediate():
                yield
            return
        self.run("SAVEPOINT zdm_replay_chunk")
        try:
            yield
        except BaseException:
            self.run("ROLLBACK TO zdm_replay_chunk")
            self.run("RELEASE zdm_replay_chunk")
            raise
        self.run("RELEASE zdm_replay_chunk")

    def run(self, statement: str) -> None:
        if not self.client.check_mode:
            self.client.conn.execute(statement)

    def storable(self, table: str, columns: list[str], rows: list) -> list[tuple]:
        kinds = [self.types[table][column].logical for column in columns]
        return [tuple(stored(value, kind) for value, kind in zip(row, kinds, strict=True)) for row in rows]

    def many(self, table: str, statement: str, rows: list, counted: str) -> None:
        self.client.queries.append(f"{statement} -- {len(rows)} row(s)")
        tally = self.counts.setdefault(table, {"deleted": 0, "inserted": 0})
        if self.client.check_mode:
            return
        try:
            cursor = self.client.conn.executemany(statement, rows)
        except Exception as exc:  # sqlite3.Error: a constraint of the file's table the target's row does not meet
            raise SqliteError(
                f"replaying into table {table!r} of {self.client.path} failed ({exc}) while running {statement!r}; nothing of the "
                f"replay was kept - fix the row on the target (or the file's constraint) and run again"
            ) from None
        tally[counted] += max(cursor.rowcount, 0)

    def write(self, table: str, columns: list[str], rows: list) -> None:
        statement = (
            f"INSERT INTO {quote_ident(table)} ({', '.join(map(quote_ident, columns))}) "  # noqa: S608 (quoted identifiers)
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        self.many(table, statement, self.storable(table, columns, rows), "inserted")

    def delete_keys(self, table: str, key: list[str], keys: list) -> None:
        if not keys:
            return
        match = " AND ".join(f"{quote_ident(column)} = ?" for column in key)
        statement = f"DELETE FROM {quote_ident(table)} WHERE {match}"  # noqa: S608 (quoted identifiers)
        self.many(table, statement, self.storable(table, key, keys), "deleted")
