# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ordered SQL files applied to a database once each, recorded with their checksums.

A file runs in one transaction together with its history row, unless its first line is the
directive `-- zerodowntime: no-transaction` (for CREATE INDEX CONCURRENTLY and the like): then
its statements run one by one in autocommit and the history row is written after the last.
Such a file should be written to be re-runnable (IF NOT EXISTS), since an interruption leaves
the statements before it applied.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sql_text import separators

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql

NO_TRANSACTION = "-- zerodowntime: no-transaction"
DEFAULT_HISTORY_TABLE = "zerodowntime_schema_history"


def split_statements(text: str) -> list[str]:
    """Split a SQL script into statements on the semicolons that end them (sql_text.separators:
    quotes, dollar quotes and comments hide a semicolon)."""
    statements, start = [], 0
    for position in separators(text, strict=True):
        statements.append(text[start:position])
        start = position + 1
    statements.append(text[start:])
    return [statement.strip() for statement in statements if strip_comments(statement).strip()]


def strip_comments(text: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", "", text, flags=re.DOTALL)


def checksum(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def schema_directory(directory: str) -> str:
    """The real path of `directory`; PgError naming exactly what is wrong with it otherwise."""
    if not os.path.lexists(directory):
        raise PgError(f"schema directory '{directory}' does not exist on the host that runs the module: check 'path'")
    if not os.path.isdir(directory):
        kind = "a file" if os.path.isfile(directory) else "a dangling symlink" if os.path.islink(directory) else "not a directory"
        raise PgError(
            f"path '{directory}' is {kind}, not a directory: 'path' is the directory holding the *.sql files"
            + (f" (the file's directory is '{os.path.dirname(directory) or '.'}')" if kind == "a file" else "")
            + ". Nothing was run"
        )
    return os.path.realpath(directory)


def schema_file_path(directory: str, real_directory: str, name: str) -> str:
    """The real path of the directory's entry `name`, which must stay inside the directory and be a
    regular file: a symlink may point to another file of the directory, never out of it."""
    entry = os.path.join(directory, name)
    real = os.path.realpath(entry)
    if os.path.commonpath([real_directory, real]) != real_directory:
        raise PgError(
            f"symlink '{entry}' resolves to '{real}', outside the schema directory '{real_directory}': only files inside "
            f"the directory are applied. Copy the file into the directory (or point the link at a file inside it). "
            f"Nothing was run"
        )
    if not os.path.isfile(real):
        what = "a directory" if os.path.isdir(real) else "not a regular file"
        if not os.path.lexists(real):
            what = f"a dangling symlink (to '{real}')"
        raise PgError(f"schema file '{entry}' is {what}: every *.sql entry of the directory must be a regular file. Nothing was run")
    return real


def read_files(directory: str) -> list[dict]:
    """The directory's *.sql files in name order, with their text and checksum; every one is
    checked (inside the directory, a regular file) before any is read."""
    real_directory = schema_directory(directory)
    names = sorted(entry for entry in os.listdir(directory) if entry.endswith(".sql"))
    paths = {name: schema_file_path(directory, real_directory, name) for name in names}
    files = []
    for name in names:
        # O_NOFOLLOW: the resolved path is opened, so a link swapped in since the check is refused.
        try:
            descriptor = os.open(paths[name], os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(descriptor, "rb") as handle:
                content = handle.read()
        except OSError as exc:
            raise PgError(f"cannot read schema file '{os.path.join(directory, name)}': {exc.strerror}. Nothing was run") from None
        text = content.decode("utf-8")
        files.append(
            {
                "name": name,
                "checksum": checksum(content),
                "text": text,
                "transactional": not text.lstrip().startswith(NO_TRANSACTION),
            }
        )
    return files


class SchemaHistory:
    """The history table and the files it says were applied."""

    def __init__(self, client: Client, table: str, schema: str = "public"):
        self.client = client
        self.table = ident(schema, table)
        self.qualified = f"{schema}.{table}"
        self.schema, self.name = schema, table

    def exists(self) -> bool:
        row = self.client.query_one(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
            (self.schema, self.name),
        )
        return row is not None

    def applied(self) -> dict:
        if not self.exists():
            return {}
        rows = self.client.query(sql.SQL("SELECT filename, checksum FROM {}").format(self.table))
        return {row["filename"]: row["checksum"] for row in rows}

    def create(self) -> None:
        self.client.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (filename text PRIMARY KEY, checksum text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer NOT NULL)"
            ).format(self.table)
        )

    def record(self, schema_file: dict, duration_ms: int) -> None:
        self.client.execute(
            sql.SQL("INSERT INTO {} (filename, checksum, duration_ms) VALUES ({}, {}, {})").format(
                self.table, sql.Literal(schema_file["name"]), sql.Literal(schema_file["checksum"]), sql.Literal(duration_ms)
            )
        )


def plan(files: list[dict], applied: dict, directory: str) -> list[dict]:
    """The files still to apply; an applied file whose content changed is an error."""
    changed = [f for f in files if f["name"] in applied and applied[f["name"]] != f["checksum"]]
    if changed:
        names = ", ".join(f"{f['name']} (applied {applied[f['name']][:12]}, now {f['checksum'][:12]})" for f in changed)
        raise PgError(
            f"schema file(s) in {directory} changed after they were applied: {names}. Applied files are history: "
            f"put the change in a new file with a later name, or restore the original content"
        )
    return [f for f in files if f["name"] not in applied]


def apply_files(client: Client, directory: str, history_table: str = DEFAULT_HISTORY_TABLE) -> dict:
    """Apply the pending files in order; returns applied, pending, already_applied, queries."""
    files = read_files(directory)
    history = SchemaHistory(client, history_table)
    applied = history.applied()
    pending = plan(files, applied, directory)
    result = {
        "changed": bool(pending),
        "already_applied": sorted(applied),
        "pending": [f["name"] for f in pending],
        "applied": [],
    }
    if pending:
        history.create()
    for schema_file in pending:
        started = time.monotonic()
        try:
            if schema_file["transactional"]:
                with client.transaction():
                    client.execute(schema_file["text"], audit=f"-- {schema_file['name']} (in one transaction)")
                    history.record(schema_file, int((time.monotonic() - started) * 1000))
            else:
                for statement in split_statements(schema_file["text"]):
                    client.execute(statement)
                history.record(schema_file, int((time.monotonic() - started) * 1000))
        except PgError as exc:
            raise PgError(f"schema file {schema_file['name']} failed and is not recorded: {exc}", applied=result["applied"]) from None
        if not client.check_mode:
            result["applied"].append({"name": schema_file["name"], "duration_ms": int((time.monotonic() - started) * 1000)})
    if not client.check_mode:
        result["pending"] = []
    result["queries"] = list(client.queries)
    return result
