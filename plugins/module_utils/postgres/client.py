# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way this collection talks to PostgreSQL (psycopg 3).

Connection options, turning libpq's errors into messages a DBA can act on, identifier quoting
(only through psycopg.sql), server version checks, and an audit list of every statement run.
Check mode lives here too: `Client.execute` (statements that change something) records instead
of running in check mode; `Client.query` (reads) always runs.
"""

from __future__ import annotations

import re

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.connection import Connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError as exc:  # reported by the module through missing_required_lib
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = exc
    # The rest of module_utils/postgres imports psycopg's `sql` from here (None without the library).
    psycopg = sql = dict_row = None


SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

# The shared argument spec; plugins/doc_fragments/postgres.py documents the same options.
CONNECTION_ARGUMENT_SPEC = dict(
    login_host=dict(type="str", default="localhost", aliases=["host"]),
    login_port=dict(type="int", default=5432, aliases=["port"]),
    login_unix_socket=dict(type="str", aliases=["unix_socket"]),
    login_user=dict(type="str", default="postgres", aliases=["user"]),
    login_password=dict(type="str", no_log=True, aliases=["password"]),
    login_db=dict(type="str", default="postgres", aliases=["db", "database"]),
    ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES),
    ssl_rootcert=dict(type="path"),
    ssl_cert=dict(type="path"),
    ssl_key=dict(type="path", no_log=False),
    connect_timeout=dict(type="int", default=10),
    application_name=dict(type="str", default="zerodowntime.migration"),
)


class PgError(ModuleError):
    """An error whose message is meant for the person running the playbook; `details` are
    figures the module returns with the failure (for example per-table states on a timeout).
    `sqlstate` (a statement's error) and `cause` (the driver's own text) say where it came from,
    for a caller that explains it further."""

    sqlstate: str | None = None
    cause: str = ""


def driver_error(message: str, exc: Exception) -> PgError:
    """A PgError with `message`, remembering the SQLSTATE and text of the driver's error."""
    error = PgError(message)
    error.sqlstate = getattr(exc, "sqlstate", None)
    error.cause = str(exc)
    return error


def connection_params(params: dict) -> dict:
    """Map the module's connection options to psycopg.connect() keywords.

    A unix socket wins over login_host: libpq treats a host that starts with "/" as a socket
    directory. Options left unset are not passed, so libpq's own defaults (and PG* variables)
    apply.
    """
    host = params.get("login_unix_socket") or params.get("login_host")
    kwargs = {
        "host": host,
        "port": params.get("login_port"),
        "user": params.get("login_user"),
        "password": params.get("login_password"),
        "dbname": params.get("login_db"),
        "sslmode": params.get("ssl_mode"),
        "sslrootcert": params.get("ssl_rootcert"),
        "sslcert": params.get("ssl_cert"),
        "sslkey": params.get("ssl_key"),
        "connect_timeout": params.get("connect_timeout"),
        "application_name": params.get("application_name"),
    }
    return {key: value for key, value in kwargs.items() if value not in (None, "")}


def describe_endpoint(params: dict) -> str:
    """host:port (or the socket path) as a person would name the server."""
    port = params.get("login_port") or 5432
    if params.get("login_unix_socket"):
        return f"socket {params['login_unix_socket']}/.s.PGSQL.{port}"
    return f"{params.get('login_host') or 'localhost'}:{port}"


def explain_connection_error(error: Exception, params: dict) -> str:
    """Turn a libpq connection failure into what happened and what to do about it.

    libpq reports connection failures as text (there is no SQLSTATE before a session exists),
    so the cases are recognised by their wording. The password never appears: libpq does not
    echo it and neither do we.
    """
    text = str(error)
    where = describe_endpoint(params)
    user = params.get("login_user")
    database = params.get("login_db")
    timeout = params.get("connect_timeout")
    if "password authentication failed" in text or "authentication failed" in text:
        return (
            f"authentication failed for user '{user}' on {where}: check login_user and "
            f"login_password (and the pg_hba.conf method for this user)"
        )
    if "no password supplied" in text:
        return f"the server at {where} asks for a password for user '{user}' and none was given: set login_password"
    if "no pg_hba.conf entry" in text:
        return (
            f"pg_hba.conf on {where} has no entry for user '{user}' and database '{database}' "
            f"from this client: add one, or connect through an allowed address or socket"
        )
    match = re.search(r'database "(.*)" does not exist', text)
    if match:
        return f"database '{match.group(1)}' does not exist on {where}: create it or fix login_db"
    match = re.search(r'role "(.*)" does not exist', text)
    if match:
        return f"role '{match.group(1)}' does not exist on {where}: create it or fix login_user"
    if "Connection refused" in text:
        return (
            f"connection refused by {where}: is PostgreSQL running and listening on that "
            f"address and port? Check login_host/login_port and listen_addresses"
        )
    if "No such file or directory" in text and params.get("login_unix_socket"):
        return (
            f"no PostgreSQL socket at {where}: is the server running on port {params.get('login_port')}? Check login_unix_socket/login_port"
        )
    if "timeout expired" in text:
        return f"no answer from {where} within {timeout} s (connect_timeout): check the address, firewalls, and that the server is up"
    if "could not translate host name" in text:
        return f"cannot resolve host '{params.get('login_host')}': check login_host"
    if "the database system is starting up" in text:
        return f"PostgreSQL at {where} is still starting up: retry in a few seconds"
    tls = explain_tls_error(text, params, where)
    if tls:
        return tls
    return f"cannot connect to {where} as '{user}': {last_line(text)}"


def explain_tls_error(text: str, params: dict, where: str) -> str | None:
    """A failed TLS handshake or certificate check, named with the option that fixes it (None
    when `text` is not about TLS)."""
    mode = params.get("ssl_mode")
    rootcert = params.get("ssl_rootcert")
    if "certificate verify failed" in text:
        against = f"ssl_rootcert {rootcert}" if rootcert else "libpq's default root certificate (~/.postgresql/root.crt)"
        return (
            f"the TLS certificate of {where} is not signed by the CA in {against} (certificate verify failed, "
            f"ssl_mode={mode}): set ssl_rootcert to the certificate of the CA that signed the server's certificate, "
            f"or renew the server's certificate from the CA in ssl_rootcert"
        )
    match = re.search(r'root certificate file "(.*?)" does not exist', text)
    if match:
        return (
            f"the CA certificate file '{match.group(1)}' does not exist on the host running the module; ssl_mode={mode} "
            f"verifies the certificate of {where} with it: set ssl_rootcert to the CA certificate's path, or use "
            f"ssl_mode=require to encrypt without verifying"
        )
    match = re.search(r'server certificate for "(.*?)"( \(and \d+ other names?\))? does not match host name "(.*?)"', text)
    if match:
        return (
            f"the TLS certificate of {where} is for '{match.group(1)}'{match.group(2) or ''}, not for host "
            f"'{match.group(3)}' (ssl_mode=verify-full checks the name): set login_host to a name or address the "
            f"certificate lists (its subject alternative names), or issue the certificate for this name"
        )
    if "server does not support SSL" in text:
        return (
            f"{where} does not accept TLS and ssl_mode={mode} requires it: turn TLS on at the server "
            f"(roles/postgresql: postgresql_ssl) or use ssl_mode=prefer"
        )
    if "certificate" in text or "SSL" in text:
        return f"TLS handshake with {where} failed ({last_line(text)}): check ssl_mode, ssl_rootcert and the server's certificate"
    return None


def last_line(text: str) -> str:
    """The last meaningful line of a libpq message (the one that says what went wrong)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def parse_version(server_version_num: int) -> tuple[int, int]:
    """150018 -> (15, 18); 90624 -> (9, 6)."""
    major = server_version_num // 10000
    if major >= 10:
        return major, server_version_num % 10000
    return major, (server_version_num // 100) % 100


def ident(*parts: str):
    """A possibly qualified identifier, quoted by psycopg: ident('s', 't') -> "s"."t"."""
    return sql.Identifier(*parts)


def statement_timeout(client, milliseconds: int) -> None:
    """Bound every statement this session runs from now on (also in check mode: it is a read)."""
    client.query(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(milliseconds))))


class Client(Connection):
    """A psycopg connection plus the audit list of statements and check mode.

    `query` reads and always runs. `execute` changes something: it is recorded in `queries`
    and, in check mode, not run. Pass `audit` when the statement carries a secret so the
    record shows a redacted form instead of the statement itself.
    """

    def __init__(self, params: dict, check_mode: bool = False, autocommit: bool = True):
        if not HAS_PSYCOPG:
            raise PgError(f"the Python library psycopg (version 3) is required: {PSYCOPG_IMPORT_ERROR}")
        self.params = params
        self.check_mode = check_mode
        self.queries: list[str] = []
        try:
            self.conn = psycopg.connect(autocommit=autocommit, row_factory=dict_row, **connection_params(params))
        except psycopg.OperationalError as exc:
            raise driver_error(explain_connection_error(exc, params), exc) from None

    @property
    def endpoint(self) -> str:
        return describe_endpoint(self.params)

    @property
    def server_version(self) -> tuple[int, int]:
        return parse_version(self.conn.info.server_version)

    def require_version(self, major: int, feature: str) -> None:
        """Fail clearly when `feature` needs a newer server than the one connected to."""
        found = self.server_version
        if found[0] < major:
            raise PgError(
                f"{feature} needs PostgreSQL {major} or later; {self.endpoint} runs "
                f"{found[0]}.{found[1]}: upgrade the server or drop the option"
            )

    def require_logical_wal(self) -> None:
        """Fail clearly unless the server can publish logical changes."""
        wal_level = self.setting("wal_level")
        if wal_level != "logical":
            raise PgError(
                f"wal_level is '{wal_level}' on {self.endpoint}; logical replication needs "
                f"wal_level=logical: set it in postgresql.conf (roles/postgresql: "
                f"postgresql_wal_level) and restart the server"
            )

    def render(self, statement) -> str:
        if isinstance(statement, str):
            return statement
        return statement.as_string(self.conn)

    def query(self, statement, args=None) -> list[dict]:
        """Run a read and return its rows as dicts."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, args)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise driver_error(self.explain(exc, statement), exc) from None

    def query_one(self, statement, args=None) -> dict | None:
        rows = self.query(statement, args)
        return rows[0] if rows else None

    def execute(self, statement, args=None, audit: str | None = None) -> None:
        """Run a statement that changes something (recorded; skipped in check mode)."""
        self.queries.append(audit if audit is not None else self.render(statement))
        if self.check_mode:
            return
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, args)
        except psycopg.Error as exc:
            raise driver_error(self.explain(exc, statement, audit), exc) from None

    def explain(self, exc: Exception, statement, audit: str | None = None) -> str:
        shown = audit if audit is not None else self.render(statement)
        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag else None) or last_line(str(exc))
        return f"{message} (on {self.endpoint}, running: {shown})"

    def transaction(self):
        """A transaction block: everything inside commits together or not at all."""
        return self.conn.transaction()

    def setting(self, name: str) -> str | None:
        row = self.query_one("SELECT setting FROM pg_catalog.pg_settings WHERE name = %s", (name,))
        return row["setting"] if row else None
