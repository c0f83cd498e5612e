# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An online backup of a live SQLite file (SQLite's backup API), verified, taken before a migration
changes anything: the rollback point of the SQLite path.

The copy is made inside one read transaction of the source, so it is exactly the snapshot whose
row counts are read in that transaction; in WAL mode the application's writers go on meanwhile.
It is written beside the destination under PARTIAL_SUFFIX, checked (PRAGMA integrity_check, the
same tables with the same row counts), switched to rollback-journal mode (one self-contained
file) and only then renamed over the destination: a killed run never leaves a half backup under
the destination's name, and the next run removes what it left.

An existing destination is a rollback point: it is kept (changed false) when it is a sound SQLite
file, refused when it is not, and replaced only with `force`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import urllib.parse

from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client, SqliteError, quote_ident

PARTIAL_SUFFIX = ".zdm-partial"


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    ]
    return {name: conn.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchone()[0] for name in names}  # noqa: S608 (quoted)


def verify(path: str) -> dict:
    """The file's integrity check and row counts, read without writing to it."""
    try:
        conn = sqlite3.connect("file:" + urllib.parse.quote(path) + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SqliteError(f"{path} cannot be opened as an SQLite file ({exc})") from exc
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise SqliteError(f"{path} fails PRAGMA integrity_check: {'; '.join(problems[:5])}")
        tables = table_counts(conn)
    except sqlite3.Error as exc:
        raise SqliteError(f"{path} is not a sound SQLite file ({exc})") from exc
    finally:
        conn.close()
    return {"integrity": "ok", "tables": tables, "rows": sum(tables.values()), "bytes": os.path.getsize(path)}


def copy_snapshot(client: Client, partial: str) -> dict[str, int]:
    """The source's snapshot into `partial`; its row counts, read in the same read transaction."""
    try:
        client.conn.execute("BEGIN")
        try:
            counts = table_counts(client.conn)
            target = sqlite3.connect(partial)
            try:
                client.conn.backup(target)
                target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            finally:
                target.close()
        finally:
            client.conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise client.explain(exc, f"copying it into {partial}") from exc
    return counts


def back_up(client: Client, dest: str, force: bool) -> dict:
    """What the sqlite_backup module does."""
    dest = os.path.abspath(dest)
    if dest == client.path:
        raise SqliteError(f"dest {dest} is the source file itself: give another path")
    directory = os.path.dirname(dest)
    if not os.path.isdir(directory):
        raise SqliteError(f"the directory of dest, {directory}, does not exist: create it (the module never does) or fix dest")
    partial = dest + PARTIAL_SUFFIX
    if os.path.exists(partial) and not client.check_mode:
        os.remove(partial)  # what a killed run left: never a backup
    before = None
    if os.path.exists(dest):
        try:
            before = verify(dest)
        except SqliteError as exc:
            if not force:
                raise SqliteError(
                    f"dest {dest} exists and is not a sound SQLite backup ({exc}): move it away, or give force: true to replace it"
                ) from None
            before = {"integrity": "failed"}
        if not force:
            return {"changed": False, "dest": dest, **before, "diff": {"before": summary(dest, before), "after": summary(dest, before)}}
    after = {"dest": dest, "state": "present"}
    if client.check_mode:
        return {"changed": True, "dest": dest, "diff": {"before": summary(dest, before), "after": after}}
    started = time.monotonic()
    try:
        counts = copy_snapshot(client, partial)
        verified = verify(partial)
        if verified["tables"] != counts:
            raise SqliteError(
                f"the backup {partial} does not hold the source's snapshot (row counts {verified['tables']} against {counts}): "
                f"check the file system's free space and run again"
            )
        os.replace(partial, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    result = {"changed": True, "dest": dest, **verified, "seconds": round(time.monotonic() - started, 3)}
    result["diff"] = {"before": summary(dest, before), "after": summary(dest, verified)}
    return result


def summary(dest: str, verified: dict | None) -> dict:
    if verified is None:
        return {"dest": dest, "state": "absent"}
    return {"dest": dest, "state": "present", "integrity": verified["integrity"], "rows": verified.get("rows")}
