# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way this collection talks to MariaDB (PyMySQL).

Connection options, the server's errors turned into messages naming the problem and the fix,
identifier quoting (`quote_ident`, the only place a name becomes SQL), check mode and an audit
list of the statements that change something.

The session runs with autocommit off and in UTC: a DDL statement commits implicitly in MariaDB,
and with autocommit off the statements after it still belong to one transaction that
`transaction()` commits or rolls back - so a batch and its checkpoint commit together even in the
transaction that created the table. `query` (reads) always runs and, outside a transaction, ends
its read snapshot at once; `execute` (changes) is recorded and, in check mode, not run.
"""

from __future__ import annotations

import datetime
import uuid
from contextlib import contextmanager

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.connection import Connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import Library

try:
    import pymysql
    from pymysql import converters

    HAS_PYMYSQL = True
    PYMYSQL_IMPORT_ERROR = None
except ImportError as exc:  # reported by the module through missing_required_lib
    pymysql = converters = None
    HAS_PYMYSQL = False
    PYMYSQL_IMPORT_ERROR = exc

PYMYSQL = Library(HAS_PYMYSQL, "PyMySQL >= 1.0", PYMYSQL_IMPORT_ERROR)

MAX_IDENTIFIER_CHARS = 64

# The MariaDB connection options; plugins/doc_fragments/mariadb.py documents the same.
CONNECTION_OPTIONS = dict(
    mariadb_host=dict(type="str", default="localhost"),
    mariadb_port=dict(type="int", default=3306),
    mariadb_user=dict(type="str"),
    mariadb_password=dict(type="str", no_log=True),
    mariadb_database=dict(type="str"),
    mariadb_ca_cert=dict(type="path"),
    mariadb_connect_timeout=dict(type="int", default=10),
)

# Server error numbers the messages explain.
ACCESS_DENIED = 1045
DATABASE_ACCESS_DENIED = 1044
UNKNOWN_DATABASE = 1049
TABLE_ACCESS_DENIED = 1142
CANNOT_CONNECT = (2003, 2005, 2013)
VALUE_ERRORS = (1264, 1265, 1292, 1366, 1406)  # out of range, truncated, incorrect value, too long


class MariaDBError(ModuleError):
    """An error whose message names the problem and the fix; `errno` the server's error number."""

    errno: int | None = None


def quote_ident(name) -> str:
    """`name` as a MariaDB identifier: in backticks, every backtick in it doubled.

    PyMySQL binds values only; this is MariaDB's rule for a quoted identifier, so any name
    (spaces, quotes, semicolons, keywords) is one identifier and never SQL. A NUL cannot be part
    of a name, and a name longer than 64 characters would be refused by the server anyway.
    PyMySQL fills parameters in with Python's %-formatting, and Client runs every statement
    through it (with an empty tuple when there are none), so a % in a name is doubled here."""
    if not isinstance(name, str) or name == "":
        raise MariaDBError(f"the name {name!r} is empty: MariaDB names are 1 to {MAX_IDENTIFIER_CHARS} characters")
    if "\x00" in name:
        raise MariaDBError(f"the name {name!r} contains a NUL character, which no MariaDB identifier can hold: rename it")
    if len(name) > MAX_IDENTIFIER_CHARS:
        raise MariaDBError(
            f"the name {name!r} is {len(name)} characters long, more than MariaDB's {MAX_IDENTIFIER_CHARS}: rename it "
            f"(or copy it into a target table of a shorter name)"
        )
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


def escape_moment(value, mapping=None) -> str:
    """A datetime as MariaDB text; one with a zone in UTC (the session's zone: MariaDB keeps none)."""
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)  # noqa: UP017 (modules run on 3.9)
    return converters.escape_datetime(value, mapping)


def encoders() -> dict:
    """PyMySQL's conversions, with datetimes in UTC and UUIDs as their text."""
    conversions = dict(converters.conversions)
    conversions[datetime.datetime] = escape_moment
    conversions[uuid.UUID] = lambda value, mapping=None: converters.escape_str(str(value), mapping)
    return conversions


def describe_endpoint(params: dict) -> str:
    return f"{params.get('mariadb_host') or 'localhost'}:{params.get('mariadb_port') or 3306}"


def check_params(params: dict) -> None:
    missing = [name for name in ("mariadb_user", "mariadb_database") if not params.get(name)]
    if missing:
        raise MariaDBError(f"target_engine: mariadb needs {' and '.join(missing)}: give the MariaDB user and database to connect to")
    if not 0 < (params.get("mariadb_connect_timeout") or 10) <= 300:
        raise MariaDBError(f"mariadb_connect_timeout={params['mariadb_connect_timeout']} is out of range: give seconds, 1 to 300")


def explain_connection_error(exc: Exception, params: dict) -> MariaDBError:
    """A connection failure as what happened and what to do; the password never appears."""
    errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = exc.args[1] if len(exc.args) > 1 else str(exc)
    where = describe_endpoint(params)
    user = params.get("mariadb_user")
    database = params.get("mariadb_database")
    if errno == ACCESS_DENIED:
        message = (
            f"authentication failed for user '{user}' on MariaDB {where}: check mariadb_user and mariadb_password "
            f"(and that the user may connect from this host)"
        )
    elif errno == DATABASE_ACCESS_DENIED:
        message = (
            f"user '{user}' has no access to database '{database}' on MariaDB {where} (or it does not exist): grant it, "
            f"or fix mariadb_database"
        )
    elif errno == UNKNOWN_DATABASE:
        message = (
            f"database '{database}' does not exist on MariaDB {where}: create it (roles/mariadb mariadb_databases), or fix mariadb_database"
        )

    elif errno in CANNOT_CONNECT:
        message = (
            f"cannot reach MariaDB at {where} ({text}): is the server running and listening there? "
            f"Check mariadb_host and mariadb_port (or raise mariadb_connect_timeout)"
        )
    elif "doesn't support" in text and "SSL" in text:
        message = (
            f"MariaDB {where} does not offer TLS, and mariadb_ca_cert asks for it: enable TLS on the server "
            f"(ssl_cert/ssl_key in its configuration), or leave mariadb_ca_cert out"
        )
    elif "SSL" in text or "ssl" in text or "certificate" in text:
        message = f"TLS to MariaDB {where} failed ({text}): check mariadb_ca_cert (the CA that signed the server's certificate)"
    else:
        message = f"cannot connect to MariaDB {where} as '{user}': {text}"
    error = MariaDBError(message)
    error.errno = errno
    return error


def statement_error(exc: Exception, doing: str) -> MariaDBError:
    errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = exc.args[1] if len(exc.args) > 1 else str(exc)
    if errno == TABLE_ACCESS_DENIED:
        message = f"{doing} was refused ({text}): grant the MariaDB user the privilege it names"
    else:
        message = f"{doing} failed: {text} (MariaDB error {errno})"
    error = MariaDBError(message)
    error.errno = errno
    return error


class Client(Connection):
    """One MariaDB session (autocommit off, time zone UTC, utf8mb4)."""

    def __init__(self, params: dict, check_mode: bool = False):
        check_params(params)
        self.params = params
        self.check_mode = check_mode
        self.endpoint = describe_endpoint(params)
        self.database = params["mariadb_database"]
        self.queries: list[str] = []
        self.depth = 0  # transaction() nesting: only the outermost commits
        self.conn = None
        tls = {"ssl_ca": params["mariadb_ca_cert"], "ssl_verify_cert": True} if params.get("mariadb_ca_cert") else {}
        try:
            self.conn = pymysql.connect(
                host=params.get("mariadb_host") or "localhost",
                port=params.get("mariadb_port") or 3306,
                user=params["mariadb_user"],
                password=params.get("mariadb_password") or "",
                database=self.database,
                connect_timeout=params.get("mariadb_connect_timeout") or 10,
                charset="utf8mb4",
                autocommit=False,
                conv=encoders(),
                init_command="SET time_zone = '+00:00'",
                **tls,
            )
        except pymysql.Error as exc:
            raise explain_connection_error(exc, params) from None
        except OSError as exc:  # a CA file that cannot be read
            raise MariaDBError(
                f"cannot read the CA certificate {params.get('mariadb_ca_cert')} for MariaDB {self.endpoint} ({exc.strerror or exc}): "
                f"check mariadb_ca_cert (a PEM file on the host that runs the module)"
            ) from None

    @property
    def where(self) -> str:
        return f"MariaDB {self.endpoint} database {self.database}"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def query(self, statement: str, args=()) -> list[tuple]:
        """Rows of a read; outside a transaction its snapshot ends at once (no long-lived read view)."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, args or ())  # always formatted: quote_ident doubled any % in a name
                rows = list(cur.fetchall())
            if self.depth == 0:
                self.conn.commit()
            return rows
        except pymysql.Error as exc:
            raise statement_error(exc, f"reading from {self.where}") from None

    def render(self, statement: str, args=()) -> str:
        """The statement as the server would receive it (values escaped), for the audit list."""
        with self.conn.cursor() as cur:
            return cur.mogrify(statement, args or ())

    def execute(self, statement: str, args=()) -> None:
        """A change: recorded, and run unless in check mode (committed at once outside a transaction)."""
        self.queries.append(self.render(statement, args))
        if self.check_mode:
            return
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, args or ())
            if self.depth == 0:
                self.conn.commit()
        except pymysql.Error as exc:
            raise statement_error(exc, f"running {statement!r} on {self.where}") from None

    def executemany(self, statement: str, rows: list) -> None:
        """One statement for many rows (PyMySQL sends an INSERT as multi-row INSERTs); not recorded row by row."""
        if self.check_mode:
            return
        with self.conn.cursor() as cur:
            cur.executemany(statement, rows)

    @contextmanager
    def transaction(self):
        """One transaction around the block (nested blocks join the outer one); rolled back on any error."""
        self.depth += 1
        try:
            yield self
        except BaseException:
            self.depth -= 1
            if self.depth == 0 and self.conn is not None:
                self.conn.rollback()
            raise
        self.depth -= 1
        if self.depth == 0 and self.check_mode:
            self.conn.rollback()  # check mode only read
        elif self.depth == 0:
            try:
                self.conn.commit()
            except pymysql.Error as exc:
                raise statement_error(exc, f"committing on {self.where}") from None
