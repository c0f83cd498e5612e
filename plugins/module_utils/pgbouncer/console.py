# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PgBouncer's admin console: PAUSE / RESUME / RELOAD / SHOW, and repointing a pool.

The admin console speaks the simple query protocol only, and its commands take no parameters,
so every name that goes into a command is checked against a strict pattern first
(`check_name`). Connections are made with psycopg 3 in autocommit mode with `ClientCursor`:
a statement without parameters then goes out as one simple-protocol Query message. (psycopg's
default server-side-binding cursor would also send a parameterless statement as a simple
Query, but ClientCursor guarantees it whatever the arguments.)

`pause`, `resume` and `repoint` are plain functions on an `AdminConsole` so a caller with a
deadline (the switchover) can run them in one process; the pgbouncer_pool module is one such
caller.

The pgbouncer.ini it rewrites is read and written by `ini`; SCRAM verifiers are in `scram`.
"""

from __future__ import annotations

import contextlib
import re
import select
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.connection import Connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.ini import (
    backup_file,
    entry_target,
    find_database_entry,
    rewrite_database_entry,
    write_file_like,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import (
    CONNECTION_ARGUMENT_SPEC,
    HAS_PSYCOPG,
    PSYCOPG_IMPORT_ERROR,
    PgError,
    connection_params,
    describe_endpoint,
    explain_connection_error,
    last_line,
)

with contextlib.suppress(ImportError):  # pg_client says whether it is there (HAS_PSYCOPG)
    import psycopg
    from psycopg.rows import dict_row


# The admin console's connection options: the shared ones (pg_client) without their short
# aliases (pgbouncer_pool's own `database`, `host` and `port` name the pool and where it points),
# with PgBouncer's defaults: port 6432, the virtual database `pgbouncer`.
ADMIN_CONNECTION_ARGUMENT_SPEC = {
    name: {key: value for key, value in spec.items() if key != "aliases"} for name, spec in CONNECTION_ARGUMENT_SPEC.items()
}
ADMIN_CONNECTION_ARGUMENT_SPEC["login_port"]["default"] = 6432
ADMIN_CONNECTION_ARGUMENT_SPEC["login_user"]["default"] = "pgbouncer"
ADMIN_CONNECTION_ARGUMENT_SPEC["login_db"]["default"] = "pgbouncer"

# Names that end up inside admin console commands (which cannot be parameterised).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,63}")
# Hosts written into a [databases] connection string: names, IPv4/IPv6 addresses, socket dirs.
HOST_PATTERN = re.compile(r"[A-Za-z0-9_.:/%-]{1,255}")


def check_name(name, what: str = "pool name") -> str:
    """Return `name` if it is safe to put in an admin console command; else fail saying why.

    PgBouncer's console takes no parameters and no quoting, so only plain names pass:
    letters, digits, '_', '.', '-' (1 to 63 of them).
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise PgError(
            f"{what} {name!r} is not allowed: PgBouncer's admin console commands cannot be "
            f"parameterised, so only names made of letters, digits, '_', '.' and '-' "
            f"(1 to 63 characters) are accepted: fix the name"
        )
    if what == "pool name" and name == "pgbouncer":
        raise PgError("'pgbouncer' is PgBouncer's admin console, not a pool: name a database from [databases]")
    return name


def check_host(host: str) -> str:
    if not isinstance(host, str) or not HOST_PATTERN.fullmatch(host):
        raise PgError(
            f"host {host!r} is not allowed: use a host name, an IP address or a socket directory (letters, digits and '_.:/%-' only)"
        )
    return host


def check_port(port) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise PgError(f"port {port!r} is not a TCP port (1-65535)")
    return port


# The admin console ---------------------------------------------------------------------------


def explain_console_error(error: Exception, params: dict) -> str:
    """A connection failure to the admin console, in terms of PgBouncer."""
    text = str(error)
    where = describe_endpoint(params)
    user = params.get("login_user")
    if "Connection refused" in text or ("No such file or directory" in text and params.get("login_unix_socket")):
        return (
            f"cannot reach PgBouncer's admin console at {where}: connection refused. Is PgBouncer "
            f"running and listening there (listen_addr / listen_port in pgbouncer.ini)? Check "
            f"login_host / login_port"
        )
    if "password authentication failed" in text or "authentication failed" in text:
        return (
            f"authentication failed for user '{user}' on PgBouncer's admin console at {where}: "
            f"check login_user and login_password (the user must be in PgBouncer's auth_file)"
        )
    if "not allowed" in text:
        return (
            f"user '{user}' may not use PgBouncer's admin console at {where}: add it to admin_users "
            f"in pgbouncer.ini (roles/pgbouncer: pgbouncer_admin_user) or connect as an admin user"
        )
    if "no such database" in text:
        return f"PgBouncer at {where} has no database '{params.get('login_db')}': the admin console is login_db=pgbouncer"
    return explain_connection_error(error, params)


class AdminConsole(Connection):
    """One connection to PgBouncer's admin console, with check mode and an audit list.

    `show` reads (always runs). `command` changes something: recorded in `queries` and, in
    check mode, not run.
    """

    def __init__(self, params: dict, check_mode: bool = False, queries: list | None = None):
        if not HAS_PSYCOPG:
            raise PgError(f"the Python library psycopg (version 3) is required: {PSYCOPG_IMPORT_ERROR}")
        self.params = params
        self.check_mode = check_mode
        self.queries = queries if queries is not None else []
        try:
            self.conn = psycopg.connect(
                autocommit=True, cursor_factory=psycopg.ClientCursor, row_factory=dict_row, **connection_params(params)
            )
        except psycopg.OperationalError as exc:
            raise PgError(explain_console_error(exc, params)) from None

    @property
    def endpoint(self) -> str:
        return describe_endpoint(self.params)

    def sibling(self) -> AdminConsole:
        """A second connection with the same options, sharing the audit list."""
        return AdminConsole(self.params, self.check_mode, self.queries)

    def _run(self, command: str) -> list[dict]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(command)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            diag = getattr(exc, "diag", None)
            message = (diag.message_primary if diag else None) or last_line(str(exc))
            raise PgError(f"PgBouncer at {self.endpoint} refused {command}: {message}") from None

    def show(self, what: str) -> list[dict]:
        """SHOW <what> (DATABASES, POOLS, CLIENTS, SERVERS, CONFIG, ...)."""
        return self._run(f"SHOW {what}")

    def command(self, command: str) -> None:
        """PAUSE / RESUME / RELOAD ...: recorded; not run in check mode."""
        self.queries.append(command)
        if not self.check_mode:
            self._run(command)

    def database(self, name: str) -> dict | None:
        """The SHOW DATABASES row of `name` (host, port, database, paused, ...), or None."""
        for row in self.show("DATABASES"):
            if row["name"] == name:
                return row
        return None

    def require_database(self, name: str) -> dict:
        row = self.database(name)
        if row is None:
            known = sorted(row["name"] for row in self.show("DATABASES") if row["name"] != "pgbouncer")
            raise PgError(
                f"PgBouncer at {self.endpoint} has no pool '{name}' (SHOW DATABASES lists: "
                f"{', '.join(known) or 'none'}): check the pool name, or add it to [databases] in pgbouncer.ini"
            )
        return row

    def pools(self, name: str) -> dict:
        """SHOW POOLS figures of one database, summed over its users."""
        figures = {"cl_active": 0, "cl_waiting": 0, "sv_active": 0, "sv_idle": 0, "sv_used": 0, "maxwait": 0.0}
        for row in self.show("POOLS"):
            if row["database"] != name:
                continue
            for key in ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used"):
                figures[key] += int(row.get(key) or 0)
            wait = int(row.get("maxwait") or 0) + int(row.get("maxwait_us") or 0) / 1e6
            figures["maxwait"] = max(figures["maxwait"], round(wait, 6))
        return figures

    def holders(self, name: str) -> list[dict]:
        """The active server connections of `name`, with the client each one serves."""
        clients = {row.get("ptr"): row for row in self.show("CLIENTS")}
        held = []
        for server in self.show("SERVERS"):
            if server.get("database") != name or server.get("state") != "active":
                continue
            client = clients.get(server.get("link"), {})
            held.append(
                {
                    "backend_pid": server.get("remote_pid"),
                    "server": f"{server.get('addr')}:{server.get('port')}",
                    "user": server.get("user"),
                    "since": str(server.get("request_time")),
                    "client": f"{client.get('addr')}:{client.get('port')}" if client else None,
                    "application_name": client.get("application_name") if client else None,
                }
            )
        return held


def describe_holders(holders: list[dict]) -> str:
    if not holders:
        return "no active server connection was left when it was aborted"
    parts = []
    for held in holders:
        client = f", client {held['client']}" if held.get("client") else ""
        app = f" application '{held['application_name']}'" if held.get("application_name") else ""
        parts.append(
            f"backend pid {held['backend_pid']} on {held['server']} (user {held['user']}{client}{app}, busy since {held['since']})"
        )
    return f"{len(holders)} active server connection(s) held it: " + "; ".join(parts)


def _view(row: dict | None) -> dict:
    """What the result, the diff and check mode show of a pool."""
    if row is None:
        return {}
    return {"host": row.get("host"), "port": row.get("port"), "dbname": row.get("database"), "paused": bool(row.get("paused"))}


def wait_for_command(console: AdminConsole, command: str, timeout: float) -> float | None:
    """Send `command` on the console without blocking and wait up to `timeout` seconds.

    Returns how long it took (seconds) or None when it had not returned in time (the command
    is then still pending on that connection, which is no longer usable).
    """
    pgconn = console.conn.pgconn
    deadline = Deadline(timeout)
    pgconn.send_query(command.encode("ascii"))
    while pgconn.flush() != 0:
        select.select([], [pgconn.socket], [], deadline.remaining())
    results = []
    while True:  # waits on the socket (select), not a poll: answers arrive as they come
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                elapsed = deadline.elapsed()
                errors = [r.error_message.decode("utf-8", "replace").strip() for r in results if r.error_message]
                if errors:
                    message = errors[0].removeprefix("ERROR:").strip()
                    raise PgError(f"PgBouncer at {console.endpoint} refused {command}: {message}")
                return elapsed
            results.append(result)
        if deadline.passed:
            return None
        select.select([pgconn.socket], [], [], deadline.remaining())


def pause(console: AdminConsole, database: str, timeout: float) -> dict:
    """PAUSE `database`, bounded by `timeout` seconds.

    PAUSE returns once the pool's server connections are idle (in transaction pooling: once
    the transactions running now end); new queries queue meanwhile. If it has not returned in
    time, it is aborted: RESUME from a second admin connection (opened before the PAUSE so the
    abort does not wait for a connect), and a PgError names the pool, the wait and what held
    it. `console` is then switched to that second connection. Already paused (and drained):
    nothing to do.
    """
    check_name(database)
    before = console.require_database(database)
    result = {"changed": False, "pause_ms": None, "before": _view(before)}
    if before["paused"]:
        # Paused by someone else, possibly still draining: wait for the drain, do not RESUME.

        def still_draining(figures):
            raise PgError(
                f"pool '{database}' is marked paused but still has {figures['sv_active']} active server "
                f"connection(s) after {timeout} s: a PAUSE issued elsewhere is still waiting for them",
                pools=figures,
            )

        poll(lambda: console.pools(database), Deadline(timeout), still_draining, ready=lambda pools: not pools["sv_active"], interval=0.02)
        result["after"] = result["before"]
        return result
    command = f"PAUSE {database}"
    result["changed"] = True
    if console.check_mode:
        console.command(command)
        result["after"] = dict(result["before"], paused=True)
        return result
    abort = console.sibling()
    console.queries.append(command)
    started = time.monotonic()
    try:
        elapsed = wait_for_command(console, command, timeout)
    except BaseException:
        abort.close()
        raise
    if elapsed is None:
        waited = time.monotonic() - started
        console.close()  # its PAUSE would never return now: carry on with the second connection
        console.conn = abort.conn
        try:
            console.command(f"RESUME {database}")
        except PgError as exc:
            if "is not paused" not in str(exc):  # resumed by someone else meanwhile
                raise
        figures = console.pools(database)
        held = console.holders(database)
        raise PgError(
            f"PAUSE {database} did not finish within {timeout:g} s (timeout) and was aborted after "
            f"{waited:.2f} s: RESUME {database} was sent from a second admin connection, so the pool "
            f"'{database}' is serving again. {describe_holders(held)}. Let those transactions finish "
            f"(or end them) and retry, or raise timeout",
            pools=figures,
            holders=held,
            waited_ms=round(waited * 1000, 1),
        )
    abort.close()
    result["pause_ms"] = round(elapsed * 1000, 1)
    result["after"] = _view(console.require_database(database))
    return result


def resume(console: AdminConsole, database: str) -> dict:
    """RESUME `database`; nothing to do when it is not paused."""
    check_name(database)
    before = console.require_database(database)
    if not before["paused"]:
        return {"changed": False, "before": _view(before), "after": _view(before)}
    command = f"RESUME {database}"
    try:
        console.command(command)
    except PgError as exc:
        if "is not paused" not in str(exc):  # resumed by someone else meanwhile
            raise
    after = dict(_view(before), paused=False) if console.check_mode else _view(console.require_database(database))
    return {"changed": True, "before": _view(before), "after": after}


def repoint(
    console: AdminConsole,
    database: str,
    config_file: str,
    host: str | None = None,
    port: int | None = None,
    dbname: str | None = None,
    backup: bool = False,
) -> dict:
    """Point `database` at host/port/dbname: rewrite its [databases] line in `config_file`
    (nothing else in the file changes), then RELOAD so new server connections go there.

    Nothing to do when both PgBouncer (SHOW DATABASES) and the file already point there.
    Existing server connections move when next released (after their transaction).
    """
    check_name(database)
    if host is not None:
        check_host(host)
    if port is not None:
        check_port(port)
    if dbname is not None:
        check_name(dbname, "dbname")
    live = console.require_database(database)
    try:
        with open(config_file, "rb") as handle:
            content = handle.read()
    except OSError as exc:
        raise PgError(f"cannot read config_file {config_file}: {exc.strerror}: point config_file at PgBouncer's pgbouncer.ini") from None
    entry = find_database_entry(content, database)
    if entry is None:
        raise PgError(f"{config_file} has no [databases] entry for '{database}': is config_file the pgbouncer.ini PgBouncer runs with?")
    in_file = entry_target(entry["values"], database)
    wanted = {
        "host": host if host is not None else in_file["host"],
        "port": port if port is not None else in_file["port"],
        "dbname": dbname if dbname is not None else in_file["dbname"],
    }
    live_target = {"host": live.get("host"), "port": live.get("port"), "dbname": live.get("database")}
    changes = {key: value for key, value in wanted.items() if in_file[key] != value}
    result = {"changed": False, "before": _view(live), "after": _view(live), "backup_file": None}
    if not changes and live_target == wanted:
        return result
    result["changed"] = True
    result["after"] = dict(_view(live), host=wanted["host"], port=wanted["port"], dbname=wanted["dbname"])
    if console.check_mode:
        console.command("RELOAD")
        return result
    if changes:
        if backup:
            result["backup_file"] = backup_file(config_file)
        write_file_like(config_file, rewrite_database_entry(content, database, changes))
    console.command("RELOAD")
    now = console.require_database(database)
    if {"host": now.get("host"), "port": now.get("port"), "dbname": now.get("database")} != wanted:
        running = {row["key"]: row["value"] for row in console.show("CONFIG")}.get("conffile")
        raise PgError(
            f"after RELOAD PgBouncer at {console.endpoint} still points '{database}' at "
            f"{now.get('host')}:{now.get('port')}/{now.get('database')}, not "
            f"{wanted['host']}:{wanted['port']}/{wanted['dbname']}: PgBouncer runs with "
            f"{running or 'an unknown config file'} (config_file is {config_file}); check that "
            f"they are the same file and PgBouncer's log for a configuration error",
            backup_file=result["backup_file"],
        )
    result["after"] = _view(now)
    return result


def check_params(params: dict) -> None:
    """Fail on names and values that cannot go into console commands or the config file,
    before anything connects."""
    check_name(params["database"])
    if params.get("host") is not None:
        check_host(params["host"])
    if params.get("port") is not None:
        check_port(params["port"])
    if params.get("dbname") is not None:
        check_name(params["dbname"], "dbname")
    if params.get("timeout") is not None and not params["timeout"] > 0:
        raise PgError(f"timeout must be a positive number of seconds, not {params['timeout']}")


def ensure_pool(console: AdminConsole, params: dict) -> dict:
    """What the pgbouncer_pool module does: optional repoint, then paused / resumed."""
    check_params(params)
    database = params["database"]
    state = params["state"]
    repointing = any(params.get(key) is not None for key in ("host", "port", "dbname"))
    before = _view(console.require_database(database))
    changed, pause_ms, backup = False, None, None
    if state == "paused":
        outcome = pause(console, database, params["timeout"])
        changed, pause_ms = outcome["changed"], outcome["pause_ms"]
    if repointing:
        outcome = repoint(
            console, database, params["config_file"], params.get("host"), params.get("port"), params.get("dbname"), params.get("backup")
        )
        changed, backup = changed or outcome["changed"], outcome["backup_file"]
    if state == "resumed":
        outcome = resume(console, database)
        changed = changed or outcome["changed"]
    if console.check_mode:
        after = dict(before)
        if repointing:
            after.update({key: params[key] for key in ("host", "port", "dbname") if params.get(key) is not None})
        if state in ("paused", "resumed"):
            after["paused"] = state == "paused"
    else:
        after = _view(console.require_database(database))
    result = {
        "changed": changed,
        "database": database,
        "host": after.get("host"),
        "port": after.get("port"),
        "dbname": after.get("dbname"),
        "paused": after.get("paused"),
        "pause_ms": pause_ms,
        "pools": console.pools(database),
        "queries": list(console.queries),
        "diff": {"before": before, "after": after},
    }
    if backup:
        result["backup_file"] = backup
    return result
