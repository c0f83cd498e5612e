# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An SQLite file as the copy's source: its tables and their columns (declared type -> logical
type), a consistent snapshot (one read transaction: the capture's sequence position and the bulk
read see the same committed state), keyed batches in key order, and the captured changes after a
sequence number with the rows they name as they are now.

The key of a table is the one sqlite_capture records (capture.table_key: its primary key or
key_columns), so a change row's key finds the row the bulk copy wrote.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager

from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import (
    CHANGE_COLUMNS,
    capture_id,
    table_key,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client, SqliteError, quote_ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.tables import user_tables

# The tables of a file a module works on (table_copy, table_compare); docs: the sqlite.tables doc fragment.
TABLE_OPTIONS = dict(
    tables=dict(type="list", elements="str"),
    key_columns=dict(type="dict", no_log=False),
    change_table=dict(type="str", default="zdm_changes"),
)

# Declared type names (upper case, parameters stripped) -> logical type. SQLite accepts any
# name and gives it an affinity; a name not listed here is refused (give column_types) rather
# than guessed, so a column of an application-specific type is never copied into the wrong type.
DECLARED = {
    "INTEGER": "integer",
    "INT": "integer",
    "BIGINT": "integer",
    "SMALLINT": "integer",
    "TINYINT": "integer",
    "MEDIUMINT": "integer",
    "INT2": "integer",
    "INT8": "integer",
    "UNSIGNED BIG INT": "integer",
    # Django's PositiveIntegerField family on SQLite (the unsigned range fits the target's bigint)
    "INTEGER UNSIGNED": "integer",
    "BIGINT UNSIGNED": "integer",
    "SMALLINT UNSIGNED": "integer",
    "REAL": "real",
    "DOUBLE": "real",
    "DOUBLE PRECISION": "real",
    "FLOAT": "real",
    "NUMERIC": "numeric",
    "DECIMAL": "numeric",
    "TEXT": "text",
    "CLOB": "text",
    "CHARACTER": "text",
    "VARCHAR": "text",
    "VARYING CHARACTER": "text",
    "NCHAR": "text",
    "NATIVE CHARACTER": "text",
    "NVARCHAR": "text",
    "STRING": "text",
    "BLOB": "blob",
    "": "blob",  # no declared type: BLOB affinity, values stored as given
    "BOOLEAN": "boolean",
    "BOOL": "boolean",
    "DATE": "date",
    "DATETIME": "timestamp",
    "TIMESTAMP": "timestamp",
    "JSON": "json",
    "UUID": "uuid",
}


def declared_base(declared: str) -> str:
    """'VARCHAR(255)' -> 'VARCHAR'; 'unsigned big int' -> 'UNSIGNED BIG INT'."""
    return " ".join(declared.split("(", 1)[0].upper().split())


def logical_type(declared: str) -> str | None:
    return DECLARED.get(declared_base(declared))


def decode_key(text: str) -> list:
    """A change row's key (a JSON array; a BLOB as {"blob": HEX}) as values."""
    return [bytes.fromhex(item["blob"]) if isinstance(item, dict) and set(item) == {"blob"} else item for item in json.loads(text)]


class Column:
    def __init__(self, name: str, declared: str, notnull: bool):
        self.name = name
        self.declared = declared
        self.notnull = notnull


class SqliteSource:
    """The copy's source adapter over one sqlite.client.Client (autocommit; reads only)."""

    kind = "SQLite"

    def __init__(self, client: Client, change_table: str, key_columns: dict | None = None):
        self.client = client
        self.change_table = change_table
        self.key_columns = key_columns or {}
        self.in_snapshot = False

    @property
    def where(self) -> str:
        return self.client.path

    def tables(self) -> list[str]:
        """Every table but the change table, a referenced table before the tables referencing it
        (a target with the foreign keys then accepts every batch); by name otherwise."""
        names = user_tables(self.client, self.change_table)
        parents = {
            name: {row[0] for row in self.client.query('SELECT "table" FROM pragma_foreign_key_list(?)', (name,)) if row[0] != name}
            for name in names
        }
        ordered: list[str] = []
        while len(ordered) < len(names):
            ready = [name for name in names if name not in ordered and not (parents[name] - set(ordered)) & set(names)]
            ordered.extend(ready or [name for name in names if name not in ordered])  # a cycle: the rest by name
        return ordered

    def columns(self, table: str) -> list[Column]:
        rows = self.client.query('SELECT name, type, "notnull" FROM pragma_table_info(?) ORDER BY cid', (table,))
        return [Column(name, declared or "", bool(notnull)) for name, declared, notnull in rows]

    @staticmethod
    def logical_type(declared: str) -> str | None:
        return logical_type(declared)

    def key(self, table: str) -> list[str]:
        return table_key(self.client, table, self.key_columns)

    def has_changes(self) -> bool:
        rows = self.client.query("SELECT name FROM pragma_table_info(?)", (self.change_table,))
        return tuple(name for (name,) in rows) == CHANGE_COLUMNS

    @contextmanager
    def snapshot(self):
        """One read transaction: every read inside sees the same committed state (WAL: the
        writer goes on meanwhile). Yields the capture's last sequence number in that state."""
        try:
            self.client.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise self.client.explain(exc, "starting a read transaction") from exc
        self.in_snapshot = True
        try:
            yield self.last_seq()  # the first read: it fixes the snapshot
        finally:
            self.in_snapshot = False
            self.client.conn.rollback()

    def identity(self) -> dict:
        """Which data set this is, as table_copy's checkpoints record it: the file and the id its
        capture recorded at install time (a new capture, another file: another id)."""
        return {"path": self.client.path, "change_table": self.change_table, "capture_id": capture_id(self.client, self.change_table)}

    def high_seq(self) -> int:
        """The highest sequence number the capture ever handed out (sqlite_sequence: kept when change
        rows are deleted, gone with the change table), 0 before the first change."""
        found = self.client.query("SELECT seq FROM sqlite_sequence WHERE name = ?", (self.change_table,))
        return int(found[0][0] or 0) if found else 0

    def last_seq(self) -> int:
        found = self.client.query(f"SELECT max(seq) FROM {quote_ident(self.change_table)}")  # noqa: S608 (quoted identifier)
        return found[0][0] or 0

    def count(self, table: str) -> int:
        return self.client.query(f"SELECT count(*) FROM {quote_ident(table)}")[0][0]  # noqa: S608 (quoted identifier)

    def batch(self, table: str, columns: list[str], key: list[str], after: list | None, size: int) -> list[tuple]:
        """Up to `size` rows with a key greater than `after` (None: from the start), in key order."""
        order = ", ".join(quote_ident(column) for column in key)
        selected = ", ".join(quote_ident(column) for column in columns)
        statement = f"SELECT {selected} FROM {quote_ident(table)}"  # noqa: S608 (quoted identifiers)
        args: tuple = ()
        if after is not None:
            statement += f" WHERE ({order}) > ({', '.join('?' * len(key))})"
            args = tuple(after)
        statement += f" ORDER BY {order} LIMIT ?"
        return self.client.query(statement, (*args, size))

    def changes(self, after_seq: int, limit: int) -> list[tuple]:
        """(seq, table, key values, old key values or None) after `after_seq`, in commit order."""
        rows = self.client.query(
            f"SELECT seq, table_name, pk, old_pk FROM {quote_ident(self.change_table)} WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
            (after_seq, limit),
        )
        return [(seq, table, decode_key(pk), decode_key(old) if old else None) for seq, table, pk, old in rows]

    def backlog(self, after_seq: int) -> int:
        return self.client.query(f"SELECT count(*) FROM {quote_ident(self.change_table)} WHERE seq > ?", (after_seq,))[0][0]  # noqa: S608

    def rows_by_key(self, table: str, columns: list[str], key: list[str], keys: list[list]) -> dict:
        """key tuple -> row, for the keys that exist now (in this snapshot)."""
        selected = ", ".join(quote_ident(column) for column in columns)
        match = " AND ".join(f"{quote_ident(column)} IS ?" for column in key)
        statement = f"SELECT {selected} FROM {quote_ident(table)} WHERE {match}"  # noqa: S608 (quoted identifiers)
        positions = [columns.index(column) for column in key]
        found = {}
        for values in keys:
            for row in self.client.query(statement, tuple(values)):
                found[tuple(row[position] for position in positions)] = row
        return found


def check_source(source: SqliteSource) -> None:
    mode = source.client.journal_mode()
    if mode != "wal":
        raise SqliteError(
            f"{source.where} is in {mode} journal mode: the copy reads one snapshot for the whole bulk copy, which in this "
            f"mode would keep the application's writers waiting. Switch it to WAL (zerodowntime.migration.sqlite_capture does)"
        )
    if not source.has_changes():
        raise SqliteError(
            f"{source.where} has no change table {source.change_table!r} (or it is not one): install the capture first "
            f"(zerodowntime.migration.sqlite_capture) - the copy replays the changes it records - or set change_table"
        )
