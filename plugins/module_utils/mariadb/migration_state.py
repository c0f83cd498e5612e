# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration_state phase row kept in a MariaDB database: the store adapter of the copy's
checkpoints (copy/state.py) when MariaDB is the target, so a batch and the checkpoint that records
it commit in one MariaDB transaction.

The table has the shape of postgres/migration_state.py's (phase, status, started_at, completed_at,
attempts, details as JSON text, progress) and the rules are that file's: its pure `plan` (plan_request) decides
what a state does to the row; only reading and writing the row are MariaDB's here. `run_state`
takes the same parameters and returns the same `phase` view as postgres.migration_state.run_state
(the states the copy uses: query, started, succeeded, failed).
"""

from __future__ import annotations

import json

from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import MariaDBError, quote_ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.migration_state import (
    COLUMNS,
    DEFAULT_PHASES,
    DEFAULT_TABLE,
    plan_request,
    report,
    validate_phases,
    validate_request,
)


class PhaseTable:
    """The phase table in the client's database: its shape, its rows, creating it."""

    def __init__(self, client, name: str):
        self.client = client
        self.name = name
        self.table = quote_ident(name)
        self.qualified = f"{client.database}.{name}"

    def present(self) -> bool:
        found = self.client.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = %s", (self.name,)
        )
        if not found:
            return False
        missing = [column for column in COLUMNS if column not in {row[0].lower() for row in found}]
        if missing:
            raise MariaDBError(
                f"table {self.qualified} on {self.client.where} exists but has no column(s) {', '.join(missing)}: it is not a "
                f"migration progress table; choose another progress_table"
            )
        return True

    def create_statement(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} (phase VARCHAR(255) NOT NULL PRIMARY KEY, "
            "status VARCHAR(16) NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')), "
            "started_at DATETIME(6) NULL, completed_at DATETIME(6) NULL, attempts INT NOT NULL DEFAULT 0, "
            "details LONGTEXT NOT NULL CHECK (JSON_VALID(details)), progress LONGTEXT NOT NULL DEFAULT '{}') "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )

    def ensure(self) -> bool:
        """Create the table when missing (DDL commits implicitly in MariaDB: call it before the copy's first transaction)."""
        if self.present():
            return False
        self.client.execute(self.create_statement())
        return True

    def rows(self, lock_phase: str | None = None) -> dict:
        """Phase name -> row; {} while the table does not exist. `lock_phase`: its row is locked until the transaction ends."""
        if not self.present():
            return {}
        found = self.client.query(f"SELECT {', '.join(COLUMNS)} FROM {self.table}")  # noqa: S608 (quoted identifier)
        if lock_phase is not None:
            self.client.query(f"SELECT phase FROM {self.table} WHERE phase = %s FOR UPDATE", (lock_phase,))  # noqa: S608
        rows = {}
        for values in found:
            row = dict(zip(COLUMNS, values, strict=True))
            row["details"] = json.loads(row["details"] or "{}")
            rows[row["phase"]] = row
        return rows

    def write(self, phase: str, exists: bool, desired: dict) -> None:
        values = {column: json.dumps(value) if column == "details" else value for column, value in desired.items()}
        if exists:
            assignments = ", ".join(f"{quote_ident(column)} = %s" for column in values)
            statement = f"UPDATE {self.table} SET {assignments} WHERE phase = %s"  # noqa: S608 (quoted identifiers)
            self.client.execute(statement, (*values.values(), phase))
        else:
            columns = ", ".join(quote_ident(column) for column in values)
            marks = ", ".join(["%s"] * len(values))
            self.client.execute(f"INSERT INTO {self.table} ({columns}) VALUES ({marks})", tuple(values.values()))  # noqa: S608


def run_state(client, params: dict) -> dict:
    """What migration_state does to a phase row, on MariaDB (`schema` is the client's database)."""
    validate_request(params)
    phases = validate_phases(params.get("phases") or DEFAULT_PHASES)
    state = params.get("state") or "query"
    phase = params.get("phase")
    table = PhaseTable(client, DEFAULT_TABLE if params.get("table") is None else params["table"])
    if state == "query":
        return dict(changed=False, queries=[], **report(phases, table.rows(), phase))
    if not phase:
        raise MariaDBError(f"state: {state} needs 'phase' (one of {', '.join(phases)})")
    with client.transaction():
        table.ensure()  # normally there already: the copy creates it ahead of its transactions (DDL commits implicitly)
        rows = table.rows(lock_phase=phase)
        now = client.query("SELECT UTC_TIMESTAMP(6)")[0][0]
        desired, flags = plan_request(params, phases, rows, now, table.qualified)
        if desired:
            table.write(phase, phase in rows, desired)
    after = dict(rows)
    if desired:
        after[phase] = {**(rows.get(phase) or {}), **desired}
    return dict(changed=bool(desired), **flags, **report(phases, after, phase))
