# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A reversible read-only toggle for a live SQLite file (the cutover's write freeze; SQLite has no
server to freeze): on every application table, BEFORE INSERT / UPDATE / DELETE triggers that
RAISE(ABORT, <message naming the migration>). A BEFORE trigger aborts the statement before any row
changes, so the capture's AFTER triggers never record a refused write; a write that committed
before the toggle committed with its change row.

All triggers are created (or dropped) in ONE BEGIN IMMEDIATE transaction: no write commits between
two tables, and the application's writers wait for it (their busy timeout) instead of failing. A
transaction of the application that read before the toggle and writes after it cannot commit
either: in WAL mode its snapshot is stale (SQLITE_BUSY_SNAPSHOT), otherwise the schema change
makes its statement prepare again, with the triggers.

The toggle is one ManagedObject: its attributes are the SQL of its triggers (named
zdm_readonly__<table>__insert|update|delete, found by that prefix and removed exactly) and the time
it was switched on, kept in the one-row view zdm_readonly__state (a view: no application table,
nothing to write) - so a second run compares trigger SQL and changes nothing, and --diff lists the
triggers.
"""

from __future__ import annotations

import datetime
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import (
    Client,
    SqliteError,
    quote_ident,
    quote_literal,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.tables import (
    replace_triggers,
    require_table,
    triggers_named,
    user_tables,
    virtual_tables,
)

PREFIX = "zdm_readonly__"
STATE_VIEW = f"{PREFIX}state"
OPERATIONS = ("insert", "update", "delete")


def message(migration: str, target_description: str | None) -> str:
    text = f"zerodowntime.migration {migration}: this database is read-only during the cutover"
    if target_description:
        text += f"; the application moves to {target_description}"
    return text


def trigger_name(table: str, operation: str) -> str:
    return f"{PREFIX}{table}__{operation}"


def trigger_sql(table: str, operation: str, text: str, until: str | None = None) -> str:
    """The CREATE TRIGGER statement, as sqlite_master keeps it (compared as text on every run).
    With `until` (UTC, 'YYYY-MM-DD HH:MM:SS.SSS') the trigger refuses writes only before that
    moment: a freeze that ends by itself, whatever happens to the process that made it."""
    when = f"WHEN julianday('now') < julianday({quote_literal(until)}) " if until else ""
    return (
        f"CREATE TRIGGER {quote_ident(trigger_name(table, operation))} BEFORE {operation.upper()} ON {quote_ident(table)} "
        f"FOR EACH ROW {when}BEGIN SELECT RAISE(ABORT, {quote_literal(text)}); END"
    )


def state_sql(since: str) -> str:
    return f"CREATE VIEW {quote_ident(STATE_VIEW)} AS SELECT {quote_literal(since)} AS readonly_since"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")  # noqa: UP017 (modules run on 3.9)


class ReadOnly(ManagedObject):
    """The read-only triggers of one file and the time they were installed."""

    kind = "readonly"

    def __init__(self, client: Client):
        super().__init__(client, PREFIX)

    def triggers(self) -> dict:
        return triggers_named(self.client, PREFIX)

    def since(self) -> str | None:
        if not self.client.query("SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?", (STATE_VIEW,)):
            return None
        found = self.client.query(f"SELECT readonly_since FROM {quote_ident(STATE_VIEW)}")  # noqa: S608 (quoted identifier)
        return str(found[0][0]) if found and found[0][0] is not None else None

    def exists(self) -> bool:
        return bool(self.triggers()) or self.since() is not None

    def attrs(self) -> dict:
        return {"triggers": self.triggers(), "readonly_since": self.since()}

    def differences(self, current: dict, desired: dict) -> dict:
        changes = {}
        if current["triggers"] != desired["triggers"]:
            changes["triggers"] = desired["triggers"]
        if current["readonly_since"] is None:
            changes["readonly_since"] = desired["readonly_since"]  # read-only since it was first switched on, not since the last change
        return changes

    def create(self, desired: dict) -> None:
        self.update({"triggers": {}, "readonly_since": None}, desired)

    def update(self, current: dict, changes: dict) -> None:
        if "triggers" in changes:
            replace_triggers(self.client, current["triggers"], changes["triggers"])
        if changes.get("readonly_since"):
            self.client.execute(f"DROP VIEW IF EXISTS {quote_ident(STATE_VIEW)}")
            self.client.execute(state_sql(changes["readonly_since"]))

    def drop(self, current: dict) -> None:
        for name in current["triggers"]:
            self.client.execute(f"DROP TRIGGER {quote_ident(name)}")
        if current["readonly_since"] is not None:
            self.client.execute(f"DROP VIEW IF EXISTS {quote_ident(STATE_VIEW)}")

    def diff_view(self, attributes: dict | None) -> dict:
        if attributes is None:
            return {}
        return {"triggers": dict(attributes.get("triggers", {})), "readonly_since": attributes.get("readonly_since")}


def check_params(params: dict) -> None:
    """Bad input is refused before the file is locked."""
    migration = params.get("migration")
    if params["state"] == "present" and not (migration and migration.strip()):
        raise SqliteError("migration is required with state=present: give the migration's name, which the refused writes' message names")
    for name in (migration, params.get("target_description")):
        if name:
            quote_literal(name)  # a NUL is refused by name
    change_table = params["change_table"]
    for table in params.get("tables") or []:
        if not table:
            raise SqliteError("tables holds an empty name: give the names of the application's tables")
        if table == change_table:
            raise SqliteError(f"table {table!r} is the capture's change table, which must stay writable: leave it out of tables")
        if table.startswith("sqlite_"):
            raise SqliteError(f"table {table!r} is an SQLite internal table: leave it out of tables")


def desired_tables(client: Client, params: dict) -> list[str]:
    tables = params.get("tables")
    if tables is None:
        tables = user_tables(client, params["change_table"])
        if not tables:
            raise SqliteError(f"{client.path} has no tables to make read-only")
    for table in tables:
        require_table(client, table, "the read-only toggle", "make the tables it is built from read-only instead")
    return sorted(set(tables))


def desired_triggers(tables: list[str], params: dict) -> dict:
    text = message(params["migration"], params.get("target_description"))
    until = params.get("until")
    return {trigger_name(table, operation): trigger_sql(table, operation, text, until) for table in tables for operation in OPERATIONS}


def tables_of(triggers: dict) -> list[str]:
    # trigger_name is PREFIX + table + "__" + operation; a table name may itself hold "__"
    return sorted({name[len(PREFIX) :].rsplit("__", 1)[0] for name in triggers})


def ensure_readonly(client: Client, params: dict) -> dict:
    """sqlite_readonly: the file read-only (state=present) or writable again (state=absent)."""
    check_params(params)
    toggle = ReadOnly(client)
    started = time.monotonic()
    # one write transaction: the tables are listed and every trigger created while no one else can
    # write, so no write slips in between two tables and a table created meanwhile is not missed
    with client.immediate():
        locked = time.monotonic()
        desired = {}
        if params["state"] == "present":
            desired = {"triggers": desired_triggers(desired_tables(client, params), params), "readonly_since": now()}
        result = toggle.ensure(params["state"], desired)
        uncovered = virtual_tables(client) if params["state"] == "present" else []
    done = time.monotonic()
    after = result["readonly"]
    result["path"] = client.path
    result["readonly_since"] = after.get("readonly_since")
    result["triggers"] = after.get("triggers", {})
    result["tables"] = tables_of(result["triggers"])
    result["message"] = message(params["migration"], params.get("target_description")) if params["state"] == "present" else None
    # how long the application's writers may have waited on this run's write lock (held, not refused)
    result["lock_wait_ms"] = round((locked - started) * 1000, 1)
    result["lock_held_ms"] = round((done - locked) * 1000, 1)
    if uncovered:
        result["warnings"] = [
            f"virtual table {name!r} stays writable: SQLite cannot put a trigger on a virtual table (an FTS index kept by "
            f"triggers on its content table follows that table)"
            for name in uncovered
        ]
    return result
