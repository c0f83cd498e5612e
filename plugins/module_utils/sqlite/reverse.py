# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The way back of the SQLite cutover: the writes the application made on the PostgreSQL target
(recorded by postgres/change_capture.py) replayed into the SQLite file it left.

It is the copy engine's replay (copy/engine.py's Copier.replay) with the directions swapped: the
source is PgChangeSource, the target SqliteTarget (sqlite/copy_target.py). Each changed key is
deleted from the file and the row inserted as it is now on the target - idempotent, so a run
repeated or resumed after a failure is exact.

Everything happens in ONE BEGIN IMMEDIATE transaction of the file: the write freeze's triggers
(sqlite/readonly.py), when present, are dropped first and created again from their own SQL last,
so the file is never writable for the application, and a failure leaves it exactly as it was.

The position replayed so far is kept in the one-row view zdm_reverse__state (a view, like the
freeze's state view: no application table, so no capture, freeze or copy ever takes it for one),
written in the same transaction as the rows it records, with the identity of the change table it
belongs to. A position of another change table (the capture installed again, another database)
is not used: the replay starts from the first change - costing time, never rows.

Run it with the target's writes stopped (the rollback freezes the target first): a change row's
number is handed out when the row is written, not when its transaction commits, so a transaction
still open during a run could commit a number below the position recorded - and be skipped.
"""

from __future__ import annotations

import datetime
import json
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.engine import Copier, CopyError, plan_tables
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.change_capture import DEFAULT_CHANGE_TABLE, PgChangeSource
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import check_identifier
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite import readonly
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client, quote_ident, quote_literal
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.copy_target import SqliteTarget
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.tables import triggers_named

STATE_VIEW = "zdm_reverse__state"
MAX_SAMPLES = 20


def read_position(client: Client) -> dict | None:
    """{"source": identity, "replayed_seq", "replayed_at"} as last recorded; None when never."""
    if not client.query("SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?", (STATE_VIEW,)):
        return None
    found = client.query(f"SELECT source, replayed_seq, replayed_at FROM {quote_ident(STATE_VIEW)}")  # noqa: S608 (quoted identifier)
    if not found:
        return None
    source, seq, at = found[0]
    return {"source": json.loads(source), "replayed_seq": int(seq), "replayed_at": at}


def position_sql(identity: dict, seq: int) -> str:
    at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")  # noqa: UP017 (modules run on 3.9)
    return (
        f"CREATE VIEW {quote_ident(STATE_VIEW)} AS SELECT {quote_literal(json.dumps(identity, sort_keys=True))} AS source, "
        f"{int(seq)} AS replayed_seq, {quote_literal(at)} AS replayed_at"
    )


class PositionStore:
    """What Copier.replay keeps its position in (copy/state.py's StateStore's shape): here the state view, in the file's transaction."""

    phase = "replay_back"

    def __init__(self, client: Client, identity: dict, seq: int, tables: list[str]):
        self.client = client
        self.identity = identity
        self.saved = seq
        self.copy = {"tables": {table: {"done": True} for table in tables}, "replayed_seq": seq, "errors": 0, "error_samples": []}

    def add_error(self, sample: dict) -> int:
        self.copy["errors"] += 1
        if len(self.copy["error_samples"]) < MAX_SAMPLES:
            self.copy["error_samples"].append(sample)
        return self.copy["errors"]

    def save(self, final: bool = False) -> bool:
        if self.copy["replayed_seq"] == self.saved:
            return False
        self.client.execute(f"DROP VIEW IF EXISTS {quote_ident(STATE_VIEW)}")
        self.client.execute(position_sql(self.identity, self.copy["replayed_seq"]))
        self.saved = self.copy["replayed_seq"]
        return True


def start_position(recorded: dict | None, identity: dict, high_seq: int) -> int:
    """Where to replay from: the recorded position when it is this change table's, else the start."""
    if recorded is None or recorded["source"] != identity or recorded["replayed_seq"] > high_seq:
        return 0
    return recorded["replayed_seq"]


def replay_back(sqlite_client: Client, target_client, params: dict, deadline_seconds: float, check_mode: bool) -> dict:
    """Replay the target's captured changes after the recorded position into the file, in one
    immediate transaction (the freeze's triggers dropped and created again inside it).

    params: target_schema (default public), change_table (the reverse capture's, default
    zdm_reverse_changes), batch_size (default 10000), max_errors (default 0: a value the file's
    column cannot hold refuses the whole replay, naming table, key, column and value)."""
    started = time.monotonic()
    schema = params.get("target_schema") or "public"
    change_table = params.get("change_table") or DEFAULT_CHANGE_TABLE
    check_identifier(schema, "target_schema")
    check_identifier(change_table, "change_table")
    if deadline_seconds <= 0:
        raise CopyError(f"deadline_seconds={deadline_seconds} is out of range: give seconds, more than 0")
    source = PgChangeSource(target_client, schema, change_table)
    if not source.has_changes():
        raise CopyError(
            f"there is no reverse change table {schema}.{change_table} on {source.where}, so the writes made on the target "
            f"since the cutover are not known and cannot be brought back into {sqlite_client.path}; nothing was written. "
            f"Install the reverse capture (postgres/change_capture.py ensure_target_capture) at the cutover, before the "
            f"application writes to the target - or, if the target's writes may be lost, restore the file as it is"
        )
    target = SqliteTarget(sqlite_client)
    plans = plan_tables(source, target, None, {})
    identity = source.identity()
    recorded = read_position(sqlite_client)
    after = start_position(recorded, identity, source.high_seq())
    options = {
        "batch_size": params.get("batch_size") or 10000,
        "max_errors": params.get("max_errors") or 0,
        "replay_until": 0,
        "replay_timeout": deadline_seconds,
    }
    result = {"path": sqlite_client.path, "source": identity, "replayed_from": after}
    if check_mode:
        pending = source.backlog(after)
        result.update(changed=pending > 0, replayed_changes=0, pending_changes=pending, replayed_seq=after, tables={}, backlog=pending)
        result["queries"] = []
        return result
    store = PositionStore(sqlite_client, identity, after, [plan.name for plan in plans])
    copier = Copier(source, target, store, options)
    with sqlite_client.immediate():
        # the freeze stays on for the application: its triggers are gone only inside this
        # transaction, which no other connection sees, and come back from their own SQL text
        frozen = triggers_named(sqlite_client, readonly.PREFIX)
        for name in frozen:
            sqlite_client.execute(f"DROP TRIGGER {quote_ident(name)}")
        # the file's own capture (zdm_changes) records these writes too: a later cutover replays
        # them to a target that already holds the rows, and that replay is idempotent
        backlog = copier.replay(plans)
        store.save()
        for text in frozen.values():
            sqlite_client.execute(text)
    result.update(
        changed=copier.replayed > 0,
        replayed_changes=copier.replayed,
        replayed_seq=store.copy["replayed_seq"],
        backlog=backlog,
        complete=backlog == 0,
        tables=target.counts,
        errors=store.copy["errors"],
        error_samples=store.copy["error_samples"],
        freeze_triggers_kept=sorted(frozen),
        seconds=round(time.monotonic() - started, 3),
        queries=list(sqlite_client.queries) + list(target_client.queries),
    )
    return result
