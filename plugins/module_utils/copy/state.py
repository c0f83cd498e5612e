# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy's checkpoints and progress in a migration_state phase row, in the target database (for
PostgreSQL postgres/migration_state.py's run_state; for MariaDB mariadb/migration_state.py's, the
same rules over a table of the same shape - the store adapter is the `run_state` given): written in the target's open
transaction, so a batch and the checkpoint that records it commit together - an interrupted copy
resumes exactly after the last committed batch.

details.copy: {source, snapshot_seq, replayed_seq, tables: {table: {last_key, rows, done}}, errors,
error_samples}; `source` is the identity of the data set the checkpoints belong to (the source
adapter's identity(): for SQLite the path and the capture's install id), checked before anything is
resumed (engine.reconcile_source); details.progress: the latest on_progress figures. Written at most every
`interval` seconds (and at a table's end, and at the end).
"""

from __future__ import annotations

import copy as copying
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.migration_state import run_state

MAX_SAMPLES = 20


class StateStore:
    def __init__(self, client, phase: str, schema: str, table: str, interval: float = 5.0, clock=time.monotonic, run_state=run_state):
        self.client = client
        self.run_state = run_state
        self.phase = phase
        self.schema = schema
        self.table = table
        self.interval = interval
        self.clock = clock
        self.status = None
        self.saved = {}
        self.copy = {}
        self.progress = None
        self.last_write = None
        self.writes = 0
        self.discarded: list[str] = []
        self.restarting = False

    def params(self, state: str, details: dict | None = None) -> dict:
        params = {
            "state": state,
            "phase": self.phase,
            "phases": [self.phase],
            "schema": self.schema,
            "table": self.table,
            "details": details,
        }
        if self.restarting and state == "started":
            params["force"] = True  # a succeeded phase starts over: its checkpoints were discarded
        return params

    def load(self) -> dict:
        """details.copy as recorded ({} for a phase never run); reads only."""
        found = self.run_state(self.client, self.params("query"))
        row = found["phase"]
        self.status = row.get("status")
        self.saved = copying.deepcopy((row.get("details") or {}).get("copy") or {})
        self.copy = copying.deepcopy(self.saved)
        self.copy.setdefault("tables", {})
        self.copy.setdefault("errors", 0)
        self.copy.setdefault("error_samples", [])
        return self.copy

    def checkpointed(self) -> bool:
        """Whether the phase holds checkpoints (a copy started or finished)."""
        return bool(self.copy.get("tables")) or self.copy.get("snapshot_seq") is not None

    def discard(self) -> list[str]:
        """Forget the checkpoints (in memory; written with the first batch of the new copy). The
        tables they named are listed in `discarded`: their target rows are the old copy's."""
        self.discarded = sorted(self.copy.get("tables") or {})
        self.copy = {"tables": {}, "errors": 0, "error_samples": []}
        self.restarting = self.status == "succeeded"
        self.status = "running" if self.status == "succeeded" else self.status
        return self.discarded

    def table_state(self, table: str) -> dict:
        return self.copy["tables"].setdefault(table, {"last_key": None, "rows": 0, "done": False})

    def add_error(self, sample: dict) -> int:
        self.copy["errors"] += 1
        if len(self.copy["error_samples"]) < MAX_SAMPLES:
            self.copy["error_samples"].append(sample)
        return self.copy["errors"]

    def dirty(self) -> bool:
        return self.copy != self.saved

    def due(self) -> bool:
        return self.last_write is None or self.clock() - self.last_write >= self.interval

    def save(self, final: bool = False) -> bool:
        """Write details (inside the caller's transaction, when there is one); False when nothing changed."""
        if not self.dirty() and not (final and self.status != "succeeded"):
            return False
        details = {"copy": copying.deepcopy(self.copy)}
        if self.progress is not None:
            details["progress"] = dict(self.progress)
        state = "succeeded" if final or self.status == "succeeded" else "started"
        self.run_state(self.client, self.params(state, details))
        self.status = "succeeded" if state == "succeeded" else "running"
        self.saved = copying.deepcopy(self.copy)
        self.last_write = self.clock()
        self.writes += 1
        return True

    def fail(self, message: str) -> None:
        """Record the failure (its own transaction: the failed one is gone). Best effort."""
        if self.status != "running":
            return
        try:
            self.client.conn.rollback()
            self.run_state(self.client, self.params("failed", {"error": message}))
        except Exception:
            return
