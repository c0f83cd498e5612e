# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a long wait's progress goes: the migration_state table (postgres/migration_state.py).

A module with the `progress` option (plugins/doc_fragments/progress.py) opens a Reporter
(common/progress.py) with `open_reporter`; its sink `StateTableSink` writes the step's snapshot
into the `progress` jsonb column of the phase's row, keyed by the step:

    progress = {"initial_copy": {"done": 3, "total": 8, "unit": "tables", "rate": ..., "eta_seconds": ...,
                                 "state": "running", "items": {...}, "updated_at": "<server time>"}}

It has its own autocommit connection (never inside the work's transaction), keeps its session
writable while the instance is frozen read-only, and bounds each write (lock_timeout,
statement_timeout) so a busy progress table slows the work by seconds at most. A table created
before the column existed gets it (ALTER TABLE ... ADD COLUMN IF NOT EXISTS). Every failure is
raised to the Reporter, which turns it into a warning: progress never fails the work. Check mode
writes nothing (no sink at all).
"""

from __future__ import annotations

import contextlib

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.progress import DEFAULT_EVERY, Reporter
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import CONNECTION_ARGUMENT_SPEC, Client, PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.migration_state import (
    DEFAULT_TABLE,
    PROGRESS_COLUMN,
    ProgressTable,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.readonly import keep_session_writable

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql
    from psycopg.types.json import Jsonb

# The `progress` option; plugins/doc_fragments/progress.py documents it.
PROGRESS_SPEC = dict(
    type="dict",
    options=dict(
        CONNECTION_ARGUMENT_SPEC,
        phase=dict(type="str", required=True),
        step=dict(type="str"),
        schema=dict(type="str", default="public"),
        table=dict(type="str", default=DEFAULT_TABLE),
        every=dict(type="float", default=DEFAULT_EVERY),
    ),
)
WRITE_LOCK_TIMEOUT = "2s"
WRITE_STATEMENT_TIMEOUT = "5s"


class StateTableSink:
    """Writes a step's snapshot into its phase's row of the migration_state table."""

    def __init__(self, options: dict, step: str, opener=Client):
        self.options = options
        self.phase = options["phase"]
        self.step = step
        self.opener = opener
        self.client = None
        self.table = None
        self.broken: str | None = None  # a connection that failed is not retried at every emission

    def connect(self) -> None:
        try:
            self.client = self.opener(self.options, check_mode=False)
        except PgError as exc:
            self.broken = f"cannot connect to the migration_state database (options under progress): {exc}"
            raise PgError(self.broken) from None
        keep_session_writable(self.client)
        self.client.query(
            "SELECT pg_catalog.set_config('lock_timeout', %s, false), pg_catalog.set_config('statement_timeout', %s, false)",
            (WRITE_LOCK_TIMEOUT, WRITE_STATEMENT_TIMEOUT),
        )
        table = ProgressTable(self.client, self.options.get("schema") or "public", self.options.get("table") or DEFAULT_TABLE)
        if not table.check_shape():
            self.broken = (
                f"there is no progress table {table.qualified} on {self.client.endpoint}: start the phase with "
                f"zerodowntime.migration.migration_state (state: started) first, or fix progress.schema/progress.table"
            )
            raise PgError(self.broken)
        table.add_progress_column()
        self.table = table

    def write(self, snapshot: dict) -> None:
        if self.broken:
            raise PgError(self.broken)
        if self.client is None:
            self.connect()
        column = sql.Identifier(PROGRESS_COLUMN)
        updated = self.client.query(
            sql.SQL(
                "UPDATE {table} SET {column} = COALESCE({column}, '{{}}'::jsonb) || "
                "pg_catalog.jsonb_build_object(%s::text, %s::jsonb || pg_catalog.jsonb_build_object('updated_at', pg_catalog.now(), "
                "'updated_epoch', extract(epoch FROM pg_catalog.now()))) "
                "WHERE phase = %s RETURNING phase"
            ).format(table=self.table.table, column=column),
            (self.step, Jsonb(snapshot), self.phase),
        )
        if not updated:
            raise PgError(
                f"phase '{self.phase}' has no row in {self.table.qualified}: start it with "
                f"zerodowntime.migration.migration_state (state: started) before the step reports progress"
            )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def open_reporter(options: dict | None, step: str, check_mode: bool = False, unit: str = "items", total=None, opener=Client) -> Reporter:
    """The Reporter of a module's step: writing to the migration_state table when the module has
    a `progress` option (its value is `options`) and is not in check mode; otherwise one without
    sinks, which only counts (every call is cheap and emits nothing)."""
    step = (options or {}).get("step") or step
    if not options or check_mode:
        return Reporter(step, unit=unit, total=total)
    every = options.get("every")
    return Reporter(step, [StateTableSink(options, step, opener)], unit=unit, total=total, every=DEFAULT_EVERY if every is None else every)
