# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A SQLite file as the modules see it: opened without ever creating it, with a busy timeout,
identifiers quoted by hand (the sqlite3 driver has no quoting), and check mode.

`query` reads and always runs. `execute` changes something: it is recorded in `queries` and,
in check mode, not run. `immediate()` is a short BEGIN IMMEDIATE transaction: it takes the write
lock at once (waiting at most the busy timeout), so what is read in it is still true when the
changes commit, and the application's writers wait for it (bounded by their own busy timeout)
instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from contextlib import contextmanager

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.connection import Connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError

CONNECTION_OPTIONS = dict(
    path=dict(type="path", required=True),
    busy_timeout=dict(type="float", default=5.0),
)

SQLITE_HEADER = b"SQLite format 3\x00"


class SqliteError(ModuleError):
    pass


def quote_ident(name: str) -> str:
    """`name` as an SQLite identifier: in double quotes, every double quote in it doubled.

    The sqlite3 driver binds values only, never identifiers, and has no quoting function; this is
    SQLite's own rule for a quoted identifier (https://sqlite.org/lang_keywords.html), so any name
    (spaces, quotes, semicolons, keywords) is one identifier and never SQL. A NUL cannot be part of
    an SQLite name and is refused.
    """
    if "\x00" in name:
        raise SqliteError(f"the name {name!r} contains a NUL character, which no SQLite identifier can hold")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """`text` as an SQL string literal (single quotes doubled); for trigger bodies, where no value can be bound."""
    if "\x00" in text:
        raise SqliteError(f"the text {text!r} contains a NUL character")
    return "'" + text.replace("'", "''") + "'"


def check_params(params: dict) -> None:
    timeout = params["busy_timeout"]
    if not 0 < timeout <= 600:
        raise SqliteError(f"busy_timeout={timeout} is out of range: give seconds, more than 0 and at most 600")


def is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Client(Connection):
    """One connection to the SQLite file `path` (autocommit; transactions are explicit)."""

    def __init__(self, params: dict, check_mode: bool = False):
        check_params(params)
        self.path = os.path.abspath(params["path"])
        self.busy_timeout = params["busy_timeout"]
        self.check_mode = check_mode
        self.queries: list[str] = []
        self.conn = None
        self.check_file()
        # mode=rw: a missing file is an error, never a new empty database. The path is
        # percent-encoded so that '?', '#' or '%' in it stay part of the file name.
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=rw"
        try:
            self.conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            self.conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            raise self.explain(exc, "opening the file") from exc

    def check_file(self) -> None:
        if not os.path.exists(self.path):
            raise SqliteError(
                f"SQLite file {self.path} does not exist (nothing was created): give the path of the application's database file"
            )
        if not os.path.isfile(self.path):
            raise SqliteError(f"{self.path} is not a file: give the path of the application's SQLite database file")
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise SqliteError(f"cannot read SQLite file {self.path}: {exc}; run the module as a user that can read and write it") from exc
        if header and header != SQLITE_HEADER:  # an empty file is a valid, empty SQLite database
            raise SqliteError(f"{self.path} is not an SQLite database (its header is not 'SQLite format 3'): check the path")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def explain(self, exc: Exception, doing: str) -> SqliteError:
        text = str(exc)
        if is_lock_error(exc):
            return SqliteError(
                f"SQLite file {self.path} is locked ({text}) while {doing}: another connection held its write lock "
                f"longer than busy_timeout={self.busy_timeout}s. End that connection's long transaction "
                f"(or stop the process holding it), or raise busy_timeout, and run again"
            )
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return SqliteError(
                f"SQLite file {self.path} is corrupt or not an SQLite database ({text}) while {doing}: "
                f"restore it from a backup or check it with 'sqlite3 {self.path} \"PRAGMA integrity_check\"'"
            )
        if "readonly" in text or "unable to open" in text:
            return SqliteError(
                f"SQLite file {self.path} cannot be written ({text}) while {doing}: the module needs write access to "
                f"the file and to its directory (for the -wal and -shm files)"
            )
        return SqliteError(f"SQLite file {self.path}: {text} while {doing}")

    def query(self, statement: str, args=()) -> list[tuple]:
        try:
            return self.conn.execute(statement, args).fetchall()
        except sqlite3.Error as exc:
            raise self.explain(exc, f"running {statement!r}") from exc

    def execute(self, statement: str, args=()) -> None:
        self.queries.append(statement)
        if self.check_mode:
            return
        try:
            self.conn.execute(statement, args)
        except sqlite3.Error as exc:
            raise self.explain(exc, f"running {statement!r}") from exc

    @contextmanager
    def immediate(self):
        """BEGIN IMMEDIATE (a plain deferred BEGIN in check mode, which only reads) ... COMMIT;
        rolled back on any error, so a failed run leaves the file as it was."""
        begin = "BEGIN" if self.check_mode else "BEGIN IMMEDIATE"
        try:
            self.conn.execute(begin)
        except sqlite3.Error as exc:
            raise self.explain(exc, "taking the write lock (BEGIN IMMEDIATE)") from exc
        try:
            yield self
        except BaseException:
            self.conn.rollback()
            raise
        try:
            self.conn.execute("ROLLBACK" if self.check_mode else "COMMIT")
        except sqlite3.Error as exc:
            self.conn.rollback()
            raise self.explain(exc, "committing") from exc

    def journal_mode(self) -> str:
        return self.query("PRAGMA journal_mode")[0][0].lower()

    def ensure_wal(self) -> bool:
        """Switch the file to WAL mode (persistent; readers and the writer no longer block each other).
        Returns whether it changed (would change, in check mode)."""
        if self.journal_mode() == "wal":
            return False
        self.queries.append("PRAGMA journal_mode = WAL")
        if self.check_mode:
            return True
        try:
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower()
        except sqlite3.Error as exc:
            raise self.explain(exc, "switching to WAL mode") from exc
        if mode != "wal":
            raise SqliteError(
                f"SQLite file {self.path} could not be switched to WAL mode (it stays in {mode} mode): "
                f"another connection holds it open in an exclusive mode, or the file system does not support WAL "
                f"(a network file system); close those connections or move the file to a local disk"
            )
        return True
