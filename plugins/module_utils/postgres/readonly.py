# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The write freeze: default_transaction_read_only for a whole instance or one database.

Two scopes:

* `instance`: ``ALTER SYSTEM SET default_transaction_read_only = on`` and ``pg_reload_conf()``.
  Every backend re-reads the configuration before its next command, so existing sessions get
  read-only transactions from their next transaction on; a transaction already open stays
  read-write until it ends. The freeze *is* "postgresql.auto.conf says on": that is what
  `read_state` reads back, and unfreezing RESETs it (or restores the value that was there).
* `database`: ``ALTER DATABASE <db> SET default_transaction_read_only = on``. PostgreSQL applies
  per-database settings when a session starts, so only new sessions are read-only; existing ones
  keep writing until they reconnect.

A role-level (or database-and-role-level) setting wins over both, and a client can override the
default in its own session; `overrides` lists the catalog settings that defeat the freeze.

`freeze` and `unfreeze` are the fast parts (one ALTER plus, for the instance, one reload) that
pg_switchover calls inside the write pause; reading the state, listing sessions, waiting and
terminating are separate so the caller decides what it can afford.
"""

from __future__ import annotations

import contextlib

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, ident

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql

SETTING = "default_transaction_read_only"
SCOPES = ("instance", "database")
# How long `terminate` waits for signalled backends to exit (a backend inside COMMIT finishes it).
TERMINATE_TIMEOUT = 5.0
MAX_WAIT = 3600


def parse_bool(value) -> bool | None:
    """A GUC boolean as PostgreSQL's parse_bool() reads it: true/yes/on/1 and false/no/off/0, any
    case, words or their unique prefixes ("o" alone is ambiguous); None when absent or invalid."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("1", "0"):
        return text == "1"
    if len(text) >= 2 and "on".startswith(text):
        return True
    if len(text) >= 2 and "off".startswith(text):
        return False
    for word, meaning in (("true", True), ("false", False), ("yes", True), ("no", False)):
        if text and word.startswith(text):
            return meaning
    return None


def setting_from_config(setconfig) -> str | None:
    """The raw value of default_transaction_read_only in a pg_db_role_setting.setconfig array."""
    for entry in setconfig or []:
        name, separator, value = entry.partition("=")
        if separator and name.strip().lower() == SETTING:
            return value
    return None


def validate(scope: str, database: str | None, wait_for_sessions: float | None = None) -> None:
    if scope not in SCOPES:
        raise PgError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if scope == "database" and not database:
        raise PgError("scope 'database' needs the database to freeze: set login_db (alias database)")
    if wait_for_sessions is not None and not 0 <= wait_for_sessions <= MAX_WAIT:
        raise PgError(f"wait_for_sessions must be between 0 and {MAX_WAIT} seconds, not {wait_for_sessions}")


# --- reading ---------------------------------------------------------------------------------
def read_state(client: Client, scope: str, database: str | None = None) -> dict:
    """What the freeze looks like now.

    instance: `value` is the raw entry in postgresql.auto.conf (None when there is none),
    `readonly` whether it says on, `pending_reload` whether the server still runs with another
    value (written but not reloaded: only visible when this session has no own setting), and
    `configured_elsewhere` the value another configuration file gives when auto.conf says nothing.
    database: `value` is the database's own setting in pg_db_role_setting.
    """
    if scope == "instance":
        rows = client.query(
            "SELECT sourcefile, setting, error, "
            "sourcefile = pg_catalog.current_setting('data_directory') || '/postgresql.auto.conf' AS auto "
            "FROM pg_catalog.pg_file_settings WHERE name = %s ORDER BY seqno",
            (SETTING,),
        )
        valid = [row for row in rows if not row["error"] and parse_bool(row["setting"]) is not None]
        auto = [row for row in valid if row["auto"]]
        value = auto[-1]["setting"] if auto else None
        effective = parse_bool(valid[-1]["setting"]) if valid else False
        elsewhere = [row for row in valid if not row["auto"]]
        running = client.query_one("SELECT setting, source FROM pg_catalog.pg_settings WHERE name = %s", (SETTING,))
        pending = bool(running and running["source"] in ("default", "configuration file") and parse_bool(running["setting"]) != effective)
        return {
            "scope": scope,
            "value": value,
            "readonly": parse_bool(value) is True,
            "pending_reload": pending,
            "configured_elsewhere": {"file": elsewhere[-1]["sourcefile"], "value": elsewhere[-1]["setting"]} if elsewhere else None,
        }
    row = client.query_one(
        "SELECT s.setconfig FROM pg_catalog.pg_database d "
        "LEFT JOIN pg_catalog.pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0 "
        "WHERE d.datname = %s",
        (database,),
    )
    if row is None:
        raise PgError(f"database '{database}' does not exist on {client.endpoint}: create it or fix login_db")
    value = setting_from_config(row["setconfig"])
    return {"scope": scope, "database": database, "value": value, "readonly": parse_bool(value) is True, "pending_reload": False}


def overrides(client: Client, scope: str, database: str | None = None) -> list[dict]:
    """Role, database and database-and-role settings of default_transaction_read_only that are
    not `on` and would defeat the freeze for the sessions they apply to (a role-level setting
    wins over a database-level one, and both win over the configuration files)."""
    rows = client.query(
        "SELECT d.datname AS database, r.rolname AS role, s.setconfig "
        "FROM pg_catalog.pg_db_role_setting s "
        "LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase "
        "LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole "
        "ORDER BY 1 NULLS FIRST, 2 NULLS FIRST"
    )
    found = []
    for row in rows:
        value = setting_from_config(row["setconfig"])
        if value is None or parse_bool(value) is True:
            continue
        if scope == "database" and (row["role"] is None or row["database"] not in (None, database)):
            continue  # only role-level settings win over the database's own
        found.append({"database": row["database"], "role": row["role"], "value": value})
    return found


def check_privileges(client: Client, scope: str, database: str | None, terminate: bool) -> dict:
    """Fail before changing anything when the role cannot do what was asked.

    Returns {"superuser": bool} (a non-superuser cannot terminate superusers' sessions)."""
    user = client.query_one(
        "SELECT current_user AS role, r.rolsuper AS superuser, pg_catalog.pg_has_role('pg_signal_backend', 'MEMBER') AS signal "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
    )
    role = user["role"]
    if scope == "instance" and not user["superuser"]:
        granted = False
        if client.server_version[0] >= 15:
            row = client.query_one(
                "SELECT pg_catalog.has_parameter_privilege(%s, 'ALTER SYSTEM') "
                "AND pg_catalog.has_function_privilege('pg_catalog.pg_reload_conf()', 'EXECUTE') "
                "AND pg_catalog.pg_has_role('pg_read_all_settings', 'MEMBER') AS granted",
                (SETTING,),
            )
            granted = row["granted"]
        if not granted:
            raise PgError(
                f"role '{role}' on {client.endpoint} is not a superuser: ALTER SYSTEM (scope instance) needs one. "
                f"Connect as a superuser (login_user), or on PostgreSQL 15+ grant the role what the freeze uses: "
                f"GRANT ALTER SYSTEM ON PARAMETER {SETTING} TO {role}; "
                f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO {role}; GRANT pg_read_all_settings TO {role}"
            )
    if scope == "database" and not user["superuser"]:
        row = client.query_one(
            "SELECT pg_catalog.pg_has_role(datdba, 'MEMBER') AS owner FROM pg_catalog.pg_database WHERE datname = %s", (database,)
        )
        if row is None:
            raise PgError(f"database '{database}' does not exist on {client.endpoint}: create it or fix login_db")
        if not row["owner"]:
            raise PgError(
                f"role '{role}' on {client.endpoint} neither owns database '{database}' nor is a superuser: "
                f"ALTER DATABASE ... SET needs one of the two. Connect as the owner or a superuser (login_user)"
            )
    if terminate and not user["superuser"] and not user["signal"]:
        raise PgError(
            f"role '{role}' on {client.endpoint} cannot terminate sessions (terminate_writers): "
            f"connect as a superuser, or GRANT pg_signal_backend TO {role}"
        )
    return {"superuser": bool(user["superuser"])}


def server_now(client: Client):
    return client.query_one("SELECT pg_catalog.clock_timestamp() AS now")["now"]


def config_loaded_at(client: Client):
    """When the configuration was last loaded (this session's view, at most the postmaster's)."""
    return client.query_one("SELECT pg_catalog.pg_conf_load_time() AS loaded")["loaded"]


def sessions(client: Client, scope: str, database: str | None, since, exclude_pids=()) -> list[dict]:
    """Client sessions the freeze concerns, each with `can_write`: whether it may still write.

    Only client backends count: walsenders, logical replication workers, autovacuum, parallel
    workers (their leader is the session) and other background processes are left out, and so
    are this session and `exclude_pids`.

    instance: every client session; it can still write when it is in a transaction that has
    written (backend_xid set), is idle in transaction, or began before `since` (the freeze:
    such a transaction started read-write and stays so).
    database: the sessions connected to the database; one that started before `since` keeps its
    read-write default for as long as it lives, so it can write.
    """
    rows = client.query(
        "SELECT a.pid, a.usename, a.datname, a.application_name, a.state, a.xact_start, a.backend_xid::text AS backend_xid, "
        "coalesce(r.rolsuper, false) AS superuser, coalesce(CASE WHEN %(scope)s::text = 'instance' "
        "THEN a.backend_xid IS NOT NULL OR a.state = 'idle in transaction' OR a.xact_start < %(since)s "
        "ELSE a.backend_start < %(since)s END, false) AS can_write "
        "FROM pg_catalog.pg_stat_activity a LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid "
        "WHERE a.backend_type = 'client backend' AND a.pid <> pg_catalog.pg_backend_pid() "
        "AND NOT (a.pid = ANY(%(exclude)s::integer[])) AND (%(scope)s::text = 'instance' OR a.datname = %(database)s::text) "
        "ORDER BY a.pid",
        {"scope": scope, "since": since, "database": database, "exclude": [int(pid) for pid in exclude_pids]},
    )
    return [session_view(row) for row in rows]


def session_view(row: dict) -> dict:
    view = dict(row)
    if view.get("xact_start") is not None:
        view["xact_start"] = view["xact_start"].isoformat()
    return view


def wait_for_writers(
    client: Client, scope: str, database: str | None, since, timeout: float, exclude_pids=(), interval: float = 0.1
) -> tuple[list[dict], float]:
    """Give the sessions that can still write up to `timeout` seconds to finish their
    transactions (or, for a database, to disconnect). Returns the last listing and the wait."""
    deadline = Deadline(timeout)
    found = poll(
        lambda: sessions(client, scope, database, since, exclude_pids),
        deadline,
        None,
        ready=lambda found: not any(session["can_write"] for session in found),
        interval=interval,
    )
    return found, round(deadline.elapsed(), 3)


# --- changing --------------------------------------------------------------------------------
def keep_session_writable(client: Client) -> None:
    """Let this session write even when the database (or instance) is read-only: ALTER DATABASE
    is refused in a read-only transaction. A session-level setting, gone when the session ends."""
    client.query("SET default_transaction_read_only = off")


def freeze(client: Client, scope: str = "instance", database: str | None = None) -> None:
    """Make new transactions read-only: for the instance one ALTER SYSTEM and one reload, for a
    database one ALTER DATABASE (new sessions only). No reads, no waits."""
    if scope == "instance":
        client.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        client.execute("SELECT pg_catalog.pg_reload_conf()")
    else:
        keep_session_writable(client)
        client.execute(sql.SQL("ALTER DATABASE {} SET {} = on").format(ident(database), sql.SQL(SETTING)))


def unfreeze(client: Client, scope: str = "instance", database: str | None = None, previous: str | None = None) -> None:
    """Undo `freeze`: RESET the setting, or, when `previous` (read_state()['value'] taken before
    the freeze) is given, put that value back."""
    setting = sql.SQL(SETTING)
    if scope == "instance":
        if previous is None:
            client.execute(sql.SQL("ALTER SYSTEM RESET {}").format(setting))
        else:
            client.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(setting, sql.Literal(previous)))
        client.execute("SELECT pg_catalog.pg_reload_conf()")
    else:
        keep_session_writable(client)
        if previous is None:
            client.execute(sql.SQL("ALTER DATABASE {} RESET {}").format(ident(database), setting))
        else:
            client.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(ident(database), setting, sql.Literal(previous)))


def terminate(client: Client, pids, timeout: float = TERMINATE_TIMEOUT, interval: float = 0.02) -> list[int]:
    """pg_terminate_backend every pid in one statement, then wait (at most `timeout` seconds)
    until they are gone. Returns the pids that are gone (in check mode: all of them, none is
    signalled). A backend that was committing when signalled finishes its commit first."""
    pids = sorted({int(pid) for pid in pids})
    if not pids:
        return []
    client.execute(
        sql.SQL("SELECT pg_catalog.pg_terminate_backend(pid) FROM unnest(ARRAY[{}]::integer[]) AS pid").format(
            sql.SQL(", ").join(sql.Literal(pid) for pid in pids)
        )
    )
    if client.check_mode:
        return pids
    alive = poll(
        lambda: {row["pid"] for row in client.query("SELECT pid FROM pg_catalog.pg_stat_activity WHERE pid = ANY(%s::integer[])", (pids,))},
        Deadline(timeout),
        None,
        ready=lambda alive: not alive,
        interval=interval,
    )
    return [pid for pid in pids if pid not in alive]


# --- the module's whole run ------------------------------------------------------------------
def apply(
    client: Client,
    readonly: bool,
    scope: str,
    database: str | None = None,
    terminate_writers: bool = False,
    wait_for_sessions: float = 0,
    exclude_pids=(),
    warn=None,
) -> dict:
    """Bring the freeze to `readonly` and report; what pg_readonly does."""
    validate(scope, database, wait_for_sessions)
    terminate_writers = terminate_writers and readonly
    privileges = check_privileges(client, scope, database, terminate_writers)
    before = read_state(client, scope, database)
    in_place = before["readonly"] == readonly and not before["pending_reload"]

    if not in_place:
        if readonly:
            freeze(client, scope, database)
        else:
            unfreeze(client, scope, database)
    # Since when new transactions are read-only (the instance) or new sessions are (a database);
    # an old freeze's moment is unknown: the last configuration load, or now, bounds it.
    since = server_now(client) if not in_place or scope == "database" else config_loaded_at(client)

    waited = 0.0
    if readonly and terminate_writers and wait_for_sessions and not client.check_mode:
        found, waited = wait_for_writers(client, scope, database, since, wait_for_sessions, exclude_pids)
    else:
        found = sessions(client, scope, database, since, exclude_pids)

    terminated: list[int] = []
    not_terminated: list[dict] = []
    if terminate_writers:
        writers = [session for session in found if session["can_write"]]
        allowed = [session["pid"] for session in writers if privileges["superuser"] or not session["superuser"]]
        not_terminated = [
            {"pid": session["pid"], "reason": "a superuser's session: only a superuser may terminate it"}
            for session in writers
            if session["pid"] not in allowed
        ]
        terminated = terminate(client, allowed)
        not_terminated += [
            {"pid": pid, "reason": f"still running {TERMINATE_TIMEOUT} s after pg_terminate_backend"}
            for pid in allowed
            if pid not in terminated
        ]
        if not_terminated and warn:
            warn(f"{len(not_terminated)} session(s) that can still write were not terminated: {not_terminated}")

    result = {
        "changed": not in_place,
        "readonly": readonly,
        "scope": scope,
        "already_frozen": before["readonly"],
        "applies_to": applies_to(scope, readonly),
        "sessions_affected": [
            {key: value for key, value in session.items() if key != "superuser" and (readonly or key != "can_write")} for session in found
        ],
        "terminated": terminated,
        "not_terminated": not_terminated,
        "waited": waited,
        "diff": {"before": diff_view(before["readonly"], scope, database), "after": diff_view(readonly, scope, database)},
        "queries": list(client.queries),
    }
    if scope == "database":
        result["database"] = database
    if readonly:
        result["overrides"] = overrides(client, scope, database)
        if result["overrides"] and warn:
            warn(
                f"settings of {SETTING} that win over the freeze: {result['overrides']}; sessions they apply to stay "
                f"read-write: ALTER ROLE/DATABASE ... RESET {SETTING} to freeze them too"
            )
    elif scope == "instance" and before["configured_elsewhere"] and parse_bool(before["configured_elsewhere"]["value"]) and warn:
        warn(
            f"{before['configured_elsewhere']['file']} sets {SETTING} = {before['configured_elsewhere']['value']}: "
            f"the instance stays read-only after ALTER SYSTEM RESET; change that file and reload"
        )
    return result


def applies_to(scope: str, readonly: bool) -> str:
    mode = "read-only" if readonly else "read-write"
    if scope == "instance":
        return (
            f"every database of the instance: new sessions, and existing sessions from their next transaction "
            f"(the configuration is re-read before their next command), are {mode}; a transaction already open keeps its mode"
        )
    return (
        f"new sessions only: sessions connecting to the database from now on are {mode}; "
        f"existing sessions keep their mode until they reconnect"
    )


def diff_view(readonly: bool, scope: str, database: str | None) -> dict:
    view = {"readonly": readonly, "scope": scope}
    if scope == "database":
        view["database"] = database
    return view
