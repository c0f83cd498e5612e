# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Change capture in an SQLite file: AFTER INSERT/UPDATE/DELETE triggers on the captured tables
write one row per changed row into a change table in the same file.

The change table: `seq` (INTEGER PRIMARY KEY AUTOINCREMENT - monotonic, never reused, so it
orders every change in commit order: SQLite has one writer at a time), `table_name`, `pk` (the
row's key as a JSON array, in key column order), `old_pk` (the key before an UPDATE that changed
it, else NULL), `op` (I, U or D) and `changed_at`. A trigger runs in the writer's own
transaction: a change row exists exactly when the change committed.

The capture is one ManagedObject: its attributes are the change table's name and the SQL of
every trigger that belongs to it (named <change_table>__<table>__insert|update|delete), so a
second run compares trigger SQL and changes nothing, and --diff lists triggers added and removed.

The capture's identity: a random id recorded at install time in a one-row view
<change_table>__capture (a view: never taken for an application table, nothing to write). A new
change table gets a new id, so a capture removed and installed again, or another file's capture,
is a different data set for table_copy's checkpoints; a copy of the file (a restore, a move)
keeps it. A capture installed before the id existed gets one on the next run (changed once).
"""

from __future__ import annotations

import datetime
import sqlite3
import uuid

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
)

OPERATIONS = {"insert": "I", "update": "U", "delete": "D"}
CHANGE_COLUMNS = ("seq", "table_name", "pk", "old_pk", "op", "changed_at")


def change_table_sql(change_table: str) -> str:
    return (
        f"CREATE TABLE {quote_ident(change_table)} ("
        "seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "table_name TEXT NOT NULL, "
        "pk TEXT NOT NULL, "
        "old_pk TEXT, "
        "op TEXT NOT NULL CHECK (op IN ('I', 'U', 'D')), "
        "changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
    )


def identity_view(change_table: str) -> str:
    return f"{change_table}__capture"


def identity_sql(change_table: str, capture_id: str) -> str:
    installed = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")  # noqa: UP017 (modules run on 3.9)
    return (
        f"CREATE VIEW {quote_ident(identity_view(change_table))} AS "
        f"SELECT {quote_literal(capture_id)} AS capture_id, {quote_literal(installed)} AS installed_at"
    )


def capture_id(client: Client, change_table: str) -> str | None:
    """The id the capture recorded at install time (None: no capture, or one installed before ids)."""
    view = identity_view(change_table)
    if not client.query("SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?", (view,)):
        return None
    found = client.query(f"SELECT capture_id FROM {quote_ident(view)}")  # noqa: S608 (quoted identifier)
    return str(found[0][0]) if found and found[0][0] is not None else None


def new_capture_id() -> str:
    return uuid.uuid4().hex


def trigger_prefix(change_table: str) -> str:
    return f"{change_table}__"


def trigger_name(change_table: str, table: str, operation: str) -> str:
    return f"{trigger_prefix(change_table)}{table}__{operation}"


def key_json(row: str, key: list[str]) -> str:
    """The key as a JSON array. SQLite's loose typing lets any column hold a BLOB, which json_array
    refuses - an error inside the application's own write - so a BLOB is recorded as {"blob": HEX}."""
    values = []
    for column in key:
        value = f"{row}.{quote_ident(column)}"
        values.append(f"CASE WHEN typeof({value}) = 'blob' THEN json_object('blob', hex({value})) ELSE {value} END")
    return "json_array(" + ", ".join(values) + ")"


def trigger_sql(change_table: str, table: str, key: list[str], operation: str) -> str:
    """The CREATE TRIGGER statement, as sqlite_master keeps it (compared as text on every run)."""
    name = quote_ident(trigger_name(change_table, table, operation))
    target = quote_ident(change_table)
    columns = "(table_name, pk, old_pk, op)"
    literal = quote_literal(table)
    op = quote_literal(OPERATIONS[operation])
    if operation == "insert":
        values = f"{literal}, {key_json('NEW', key)}, NULL, {op}"
    elif operation == "delete":
        values = f"{literal}, {key_json('OLD', key)}, NULL, {op}"
    else:
        moved = " OR ".join(f"NEW.{quote_ident(c)} IS NOT OLD.{quote_ident(c)}" for c in key)
        values = f"{literal}, {key_json('NEW', key)}, CASE WHEN {moved} THEN {key_json('OLD', key)} END, {op}"
    return (
        f"CREATE TRIGGER {name} AFTER {operation.upper()} ON {quote_ident(table)} FOR EACH ROW "  # noqa: S608 (quoted identifiers and literals)
        f"BEGIN INSERT INTO {target} {columns} VALUES ({values}); END"
    )


def table_key(client: Client, table: str, key_columns: dict) -> list[str]:
    """The key the capture records for `table`: key_columns[table], else its declared primary key."""
    require_table(client, table, "the capture", "capture the tables it is built from instead")
    info = client.query("SELECT name, pk FROM pragma_table_info(?)", (table,))
    columns = [name for name, _pk in info]
    if table in key_columns:
        key = list(key_columns[table])
        unknown = [column for column in key if column not in columns]
        if not key or unknown:
            raise SqliteError(
                f"key_columns for table {table!r} name columns it does not have ({', '.join(map(repr, unknown)) or 'none given'}); "
                f"its columns are {', '.join(map(repr, columns))}"
            )
        return key
    key = [name for name, pk in sorted(((n, p) for n, p in info if p), key=lambda item: item[1])]
    if not key:
        raise SqliteError(
            f"table {table!r} has no primary key, so its rows (and their changes) cannot be identified: declare one, or name columns "
            f"that identify a row in key_columns (for example key_columns: {{{table!r}: [id]}}). Its implicit rowid is "
            f"not used - VACUUM may renumber it"
        )
    return key


class Capture(ManagedObject):
    """The change table and its triggers in one file."""

    kind = "capture"

    def __init__(self, client: Client, change_table: str, force: bool = False):
        super().__init__(client, change_table)
        self.force = force

    def change_table_exists(self) -> bool:
        return bool(self.client.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.name,)))

    def triggers(self) -> dict:
        return triggers_named(self.client, trigger_prefix(self.name))

    def exists(self) -> bool:
        return self.change_table_exists() or bool(self.triggers()) or capture_id(self.client, self.name) is not None

    def pending(self) -> int:
        if not self.change_table_exists():
            return 0
        return self.client.query(f"SELECT count(*) FROM {quote_ident(self.name)}")[0][0]  # noqa: S608 (quoted identifier)

    def check_change_table(self) -> None:
        """An existing table of that name must be a change table: never write into an application table."""
        if not self.change_table_exists():
            return
        columns = tuple(name for (name,) in self.client.query("SELECT name FROM pragma_table_info(?)", (self.name,)))
        if columns != CHANGE_COLUMNS:
            raise SqliteError(
                f"table {self.name!r} in {self.client.path} exists but is not a change table (its columns are "
                f"{', '.join(columns)}): give another change_table name"
            )

    def attrs(self) -> dict:
        return {
            "change_table": self.name if self.change_table_exists() else None,
            "triggers": self.triggers(),
            "rows": self.pending(),
            "capture_id": capture_id(self.client, self.name),
        }

    def differences(self, current: dict, desired: dict) -> dict:
        changes = {}
        if current["change_table"] is None:
            changes["change_table"] = self.name
        if current["triggers"] != desired["triggers"]:
            changes["triggers"] = desired["triggers"]
        if current["change_table"] is None or current.get("capture_id") is None:
            changes["capture_id"] = desired["capture_id"]  # a new change table is a new data set: a new id
        return changes

    def create(self, desired: dict) -> None:
        self.update(
            {"change_table": None, "triggers": {}, "capture_id": None},
            {"change_table": self.name, "triggers": desired["triggers"], "capture_id": desired["capture_id"]},
        )

    def update(self, current: dict, changes: dict) -> None:
        if changes.get("change_table"):
            self.client.execute(change_table_sql(self.name))
        if "triggers" in changes:
            replace_triggers(self.client, current["triggers"], changes["triggers"])
        if changes.get("capture_id"):
            self.client.execute(f"DROP VIEW IF EXISTS {quote_ident(identity_view(self.name))}")
            self.client.execute(identity_sql(self.name, changes["capture_id"]))

    def drop(self, current: dict) -> None:
        rows = current["rows"]
        if rows and not self.force:
            raise SqliteError(
                f"change table {self.name!r} in {self.client.path} holds {rows} change rows not yet replayed; nothing was "
                f"removed. Replay them (or accept losing them) and run again with force: true"
            )
        for name in current["triggers"]:
            self.client.execute(f"DROP TRIGGER {quote_ident(name)}")
        if current["change_table"] is not None:
            self.client.execute(f"DROP TABLE {quote_ident(self.name)}")
        if current.get("capture_id") is not None:
            self.client.execute(f"DROP VIEW IF EXISTS {quote_ident(identity_view(self.name))}")

    def diff_view(self, attributes: dict | None) -> dict:
        if attributes is None:
            return {}
        return {
            "change_table": attributes.get("change_table", self.name),
            "triggers": dict(attributes.get("triggers", {})),
            "capture_id": attributes.get("capture_id"),
        }


def desired_triggers(client: Client, params: dict) -> dict:
    change_table = params["change_table"]
    key_columns = params.get("key_columns") or {}
    tables = params.get("tables")
    if tables is None:
        tables = user_tables(client, change_table)
        if not tables:
            raise SqliteError(f"{client.path} has no tables to capture")
    for table in tables:
        if table == change_table:
            raise SqliteError(f"table {table!r} is the change table itself: leave it out of tables")
        if table.startswith("sqlite_"):
            raise SqliteError(f"table {table!r} is an SQLite internal table and cannot be captured: leave it out of tables")
    unknown = sorted(set(key_columns) - set(tables))
    if unknown:
        raise SqliteError(f"key_columns names tables that are not captured: {', '.join(map(repr, unknown))}")
    wanted = {}
    for table in tables:
        key = table_key(client, table, key_columns)
        for operation in OPERATIONS:
            wanted[trigger_name(change_table, table, operation)] = trigger_sql(change_table, table, key, operation)
    return wanted


def ensure_capture(client: Client, params: dict) -> dict:
    """sqlite_capture: the change table and triggers present (the file in WAL mode) or absent."""
    if sqlite3.sqlite_version_info < (3, 38):
        raise SqliteError(
            f"the SQLite library of the Python that runs the module is {sqlite3.sqlite_version}; the capture needs 3.38 or later "
            f"(json_array, pragma_table_list): run the module with a newer Python (ansible_python_interpreter)"
        )
    if not params["change_table"] or params["change_table"].startswith("sqlite_"):
        raise SqliteError(f"change_table={params['change_table']!r} is not a usable table name: give a name not starting with sqlite_")
    for table, key in (params.get("key_columns") or {}).items():
        if not isinstance(key, list) or not all(isinstance(column, str) for column in key):
            raise SqliteError(f"key_columns for table {table!r} must be a list of column names, not {key!r}")
    journal_before = client.journal_mode()
    capture = Capture(client, params["change_table"], force=params["force"])
    if params["state"] == "present":
        # bad input is refused before anything changes, even the journal mode
        capture.check_change_table()
        desired_triggers(client, params)
    wal_changed = params["state"] == "present" and client.ensure_wal()
    with client.immediate():
        capture.check_change_table()
        desired = {"triggers": desired_triggers(client, params), "capture_id": new_capture_id()} if params["state"] == "present" else {}
        result = capture.ensure(params["state"], desired)
        rows = capture.pending()
    journal_after = "wal" if wal_changed else journal_before
    result["changed"] = result["changed"] or wal_changed
    result["journal_mode"] = journal_after
    result["pending_changes"] = rows
    result["diff"]["before"]["journal_mode"] = journal_before
    result["diff"]["after"]["journal_mode"] = journal_after
    result["path"] = client.path
    return result
