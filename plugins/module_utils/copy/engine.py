# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy: tables from a source adapter to a target adapter, in keyed batches, resumable, then
the captured changes replayed until the backlog is small.

1. Plan (pure reads): per table its key, every column's target type (an existing target
   column's type; else column_types; else the source's declared type mapped), whether the target
   table is created. A table without a key, a type with no mapping, a column the target table
   lacks are refused before anything is written. Check mode stops here and returns the plan.
2. Bulk copy in one source snapshot (the capture's sequence number read in the same read
   transaction): batches in key order after the table's checkpoint; every value converted in
   Python first - a value that does not fit is counted against max_errors (its row is skipped)
   and named with table, key, column and value. Batches and the checkpoint that records them
   commit in one target transaction, every few seconds, so a run killed at any point resumes
   exactly after its last commit.
3. Replay: the change rows after the snapshot's sequence number, a chunk at a time; each changed
   key's row read as it is now (in one source snapshot with the chunk), deleted from the target
   and inserted again when it still exists. Idempotent, so a resumed or repeated replay is exact.
   Again until at most replay_until changes are left (or replay_timeout passes).

Before any of it, the checkpoints are checked to belong to this source (reconcile_source): they
record the source's identity, and a checkpoint of another data set - another file, the same file
with its capture installed again, a file restored from an older copy - is refused (resuming it
would skip rows) unless `restart` discards it.

Adapters: the source has identity/high_seq/tables/columns/key/logical_type/snapshot/count/batch/
changes/backlog/rows_by_key (sqlite/source.py); the target columns/parse_type/default_type/has_rows/create/
create_statement/empty/transaction/write/delete_keys/record (postgres/copy_target.py, mariadb/copy_target.py).
The way back of the SQLite cutover (sqlite/reverse.py) is plan_tables and Copier.replay with the
directions swapped: postgres/change_capture.py's PgChangeSource into sqlite/copy_target.py's SqliteTarget.
"""

from __future__ import annotations

import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.types import RowMismatch, converter, row_converter, shown


class CopyError(ModuleError):
    pass


def encode_key(values) -> list | None:
    """A key as JSON can hold it (bytes as {"blob": HEX}, as the capture records them)."""
    if values is None:
        return None
    return [{"blob": bytes(value).hex().upper()} if isinstance(value, (bytes, bytearray, memoryview)) else value for value in values]


def decode_key(values) -> list | None:
    if values is None:
        return None
    return [bytes.fromhex(value["blob"]) if isinstance(value, dict) and set(value) == {"blob"} else value for value in values]


def describe_source(identity: dict | None) -> str:
    """A source identity as an operator reads it."""
    if not identity:
        return "a source not recorded (a checkpoint written before sources were recorded)"
    shown = str(identity.get("path"))
    if identity.get("change_table"):
        shown += f" (change table {identity['change_table']!r}"
        shown += f", capture id {identity['capture_id']})" if identity.get("capture_id") else ", no capture id)"
    return shown


def source_mismatch(recorded: dict | None, current: dict, replayed_seq, high_seq: int) -> str | None:
    """Why checkpoints recorded for `recorded` cannot be resumed from `current` (None: they can).

    `replayed_seq` is the checkpoint's last change replayed (or its snapshot's), `high_seq` the
    highest sequence number the current capture ever handed out: within one capture it only grows,
    so a lower one is another capture whatever the names say. A checkpoint without a recorded
    source (written before sources were recorded) is judged by that alone; a recorded capture id
    must be the same (a capture recorded without one may have got one since)."""
    if replayed_seq is not None and high_seq < replayed_seq:
        return (
            f"its capture has handed out change numbers up to {high_seq} only, but the checkpoints already reached "
            f"{replayed_seq}: the file was replaced (restored from an older copy) or its capture installed again"
        )
    if recorded is None:
        return None
    if recorded.get("path") != current.get("path"):
        return "it is another file"
    if recorded.get("change_table") != current.get("change_table"):
        return "its change table is another one"
    if recorded.get("capture_id") is not None and recorded.get("capture_id") != current.get("capture_id"):
        return "its capture is another one: the file was replaced, or its capture removed and installed again"
    return None


def reconcile_source(store, identity: dict, high_seq: int, restart: bool) -> dict:
    """Tie the phase's checkpoints to the source `identity` before anything is resumed.

    No checkpoint: the identity is recorded with the first one. The same source: resumed (the
    identity refreshed, e.g. a capture id the capture got since). Another source: CopyError naming
    the tables, both sources and the fix, nothing written - unless `restart`, which discards the
    checkpoints (the tables they name are emptied before their copy starts again)."""
    recorded = store.copy.get("source")
    outcome = {"source": identity, "restarted": [], "warnings": []}
    if store.checkpointed():
        why = source_mismatch(recorded, identity, store.copy.get("replayed_seq", store.copy.get("snapshot_seq")), high_seq)
        if why is not None:
            tables = sorted(store.copy.get("tables") or {}) or ["(none yet)"]
            if not restart:
                raise CopyError(
                    f"phase {store.phase!r} holds checkpoints for table(s) {', '.join(tables)} recorded for "
                    f"{describe_source(recorded)}, but the source is now {describe_source(identity)}: {why}. Resuming "
                    f"would skip rows, so nothing was written. If this source is the one to copy, run again with "
                    f"restart: true - the checkpoints are discarded and every table is copied again from the start (the "
                    f"tables they name are emptied first); otherwise fix path, or give this copy its own phase"
                )
            outcome["restarted"] = store.discard()
        elif recorded is None:
            outcome["warnings"].append(
                f"phase {store.phase!r} holds checkpoints recorded without their source (an earlier version): they are "
                f"taken to be {describe_source(identity)}'s and recorded so from now on"
            )
    store.copy["source"] = identity
    return outcome


class TablePlan:
    def __init__(self, name: str, key: list[str], columns: list[str], types: list, create: bool, statement: str, declared: list[str]):
        self.name = name
        self.key = key
        self.columns = columns
        self.types = types
        self.create = create
        self.statement = statement
        self.declared = declared
        self.key_positions = [columns.index(column) for column in key]
        self.convert = row_converter([converter(kind.logical, kind.bits or 64, kind.length) for kind in types])
        self.key_convert = row_converter(
            [converter(types[position].logical, types[position].bits or 64) for position in self.key_positions]
        )
        self.notnull = []
        self.total = 0

    def key_of(self, row) -> list:
        return [row[position] for position in self.key_positions]

    def view(self, done: dict | None) -> dict:
        return {
            "table": self.name,
            "key": list(self.key),
            "columns": {
                column: f"{declared or '(none)'} -> {kind}"
                for column, declared, kind in zip(self.columns, self.declared, self.types, strict=True)
            },
            "create": self.create,
            "create_statement": self.statement if self.create else None,
            "rows": self.total,
            "done": bool(done and done.get("done")),
            "rows_copied_before": (done or {}).get("rows", 0),
        }


def plan_tables(source, target, tables: list[str] | None, column_types: dict) -> list[TablePlan]:
    """The plan of every table (reads only); bad input raised as CopyError naming the fix."""
    names = list(tables) if tables else source.tables()
    if not names:
        raise CopyError(f"{source.where} has no tables to copy")
    unknown = sorted(set(column_types) - set(names))
    if unknown:
        raise CopyError(
            f"column_types names tables that are not copied: {', '.join(map(repr, unknown))}; fix the names or add them to tables"
        )
    known = set(source.tables())
    plans = []
    for table in names:
        if table not in known:
            raise CopyError(f"table {table!r} does not exist in {source.where} (its tables: {', '.join(sorted(known))}): fix tables")
        key = source.key(table)
        columns = source.columns(table)
        names_of = [column.name for column in columns]
        overrides = column_types.get(table) or {}
        if not isinstance(overrides, dict):
            raise CopyError(f"column_types for table {table!r} must map column names to types, not {overrides!r}")
        missing = sorted(set(overrides) - set(names_of))
        if missing:
            raise CopyError(f"column_types for table {table!r} names columns it does not have: {', '.join(map(repr, missing))}")
        existing = target.columns(table)
        types = []
        for column in columns:
            override = overrides.get(column.name)
            wanted = None
            if override is not None:
                wanted = target.parse_type(override)
                if wanted is None:
                    raise CopyError(
                        f"column_types gives {table}.{column.name} the type {override!r}, which the copy does not know for "
                        f"{target.kind}: use one of {', '.join(target.type_names())}"
                    )
            if existing is not None:
                if column.name not in existing:
                    raise CopyError(
                        f"target table {target.qualified(table)} on {target.where} has no column {column.name!r} that {table} has in "
                        f"{source.where}: add it (or drop the target table and let the copy create it)"
                    )
                kind = target.parse_type(existing[column.name])
                if kind is None:
                    raise CopyError(
                        f"column {column.name!r} of target table {target.qualified(table)} is of type {existing[column.name]}, which has "
                        f"no mapping from {source.kind}: change it to one of {', '.join(target.type_names())}"
                    )
                if wanted is not None and str(wanted) != str(kind):
                    raise CopyError(
                        f"column_types gives {table}.{column.name} the type {wanted}, but the existing target column is {kind}: "
                        f"alter the target column or drop the override"
                    )
            elif wanted is not None:
                kind = wanted
            else:
                logical = source.logical_type(column.declared)
                if logical is None:
                    raise CopyError(
                        f"column {table}.{column.name} is declared {column.declared!r} in {source.where}, a type with no mapping to "
                        f"{target.kind}: give its target type in column_types (for example column_types: "
                        f"{{{table!r}: {{{column.name!r}: text}}}})"
                    )
                kind = target.default_type(logical)
            types.append(kind)
        create = existing is None
        statement = (
            target.render(target.create_statement(table, [(c.name, k, c.notnull) for c, k in zip(columns, types, strict=True)], key))
            if create
            else None
        )
        plan = TablePlan(table, key, names_of, types, create, statement, [column.declared for column in columns])
        plan.notnull = [column.notnull for column in columns]
        plans.append(plan)
    return plans


class Copier:
    """One run of the copy. `on_progress(table, rows_done, rows_total, rate, eta)` is called after every batch."""

    def __init__(self, source, target, store, options: dict, on_progress=None, clock=time.monotonic):
        self.source = source
        self.target = target
        self.store = store
        self.options = options
        self.on_progress = on_progress or (lambda *args: None)
        self.clock = clock
        self.changed = False
        self.copied = {}
        self.replayed = 0
        self.stopped = False

    # -- errors -------------------------------------------------------------------------------
    def mismatch(self, plan: TablePlan, key, column: str, value, reason: str) -> None:
        sample = {"table": plan.name, "key": encode_key(key), "column": column, "value": shown(value), "error": reason}
        count = self.store.add_error(sample)
        limit = self.options["max_errors"]
        if count > limit:
            raise CopyError(
                f"table {plan.name!r}, key {encode_key(key)}, column {column!r}: the value {shown(value)} does not fit "
                f"the target type ({reason}). That is {count} value(s) that do not fit, more than max_errors={limit}: fix the "
                f"value in the source, give the column a type that holds it (column_types), or raise max_errors to skip such "
                f"rows (they are not copied and are listed in error_samples)",
                errors=count,
                error_samples=list(self.store.copy["error_samples"]),
            )

    def convert_rows(self, plan: TablePlan, rows) -> list:
        out = []
        for row in rows:
            try:
                out.append(plan.convert(row))
            except RowMismatch as exc:
                self.mismatch(plan, plan.key_of(row), plan.columns[exc.index], exc.value, exc.reason)
        return out

    def convert_key(self, plan: TablePlan, values):
        try:
            return plan.key_convert(values)
        except RowMismatch as exc:
            self.mismatch(plan, values, plan.key[exc.index], exc.value, exc.reason)
            return None

    # -- the bulk copy ---------------------------------------------------------------------------
    def prepare(self, plan: TablePlan, state: dict | None) -> None:
        if plan.create:
            self.target.create(plan.name, list(zip(plan.columns, plan.types, plan.notnull, strict=True)), plan.key)
            self.changed = True
        elif state is None and self.target.has_rows(plan.name):
            if plan.name in self.store.discarded:  # the rows of a discarded checkpoint's copy
                self.target.empty(plan.name)
                self.changed = True
                return
            if not self.options["overwrite"]:
                raise CopyError(
                    f"target table {self.target.qualified(plan.name)} on {self.target.where} already holds rows that this copy did "
                    f"not write (no checkpoint for it in phase {self.store.phase!r}): nothing was written. Empty it, or set "
                    f"overwrite: true to have the copy empty it first"
                )
            self.target.empty(plan.name)
            self.changed = True

    def copy_table(self, plan: TablePlan) -> None:
        recorded = self.store.copy["tables"].get(plan.name)
        if recorded and recorded.get("done"):
            return
        size = self.options["batch_size"]
        started = self.clock()
        copied = 0
        first = True
        while True:
            with self.target.transaction():
                if first:
                    self.prepare(plan, recorded)
                    first = False
                state = self.store.table_state(plan.name)
                while True:
                    budget = self.options["max_rows"]
                    if budget is not None:
                        left = budget - sum(self.copied.values()) - copied
                        if left <= 0:
                            self.stopped = True
                            break
                        size = min(size, left)
                    rows = self.source.batch(plan.name, plan.columns, plan.key, decode_key(state["last_key"]), size)
                    if not rows:
                        state["done"] = True
                        break
                    converted = self.convert_rows(plan, rows)
                    if converted:
                        self.target.write(plan.name, plan.columns, converted)
                        self.changed = True
                    copied += len(rows)
                    state["last_key"] = encode_key(plan.key_of(rows[-1]))
                    state["rows"] += len(converted)
                    state["read"] = state.get("read", 0) + len(rows)
                    elapsed = max(self.clock() - started, 1e-6)
                    rate = copied / elapsed
                    left_rows = max(plan.total - state["read"], 0)
                    self.on_progress(plan.name, state["read"], plan.total, round(rate, 1), round(left_rows / rate, 1) if rate else None)
                    if self.store.due():
                        break
                if self.store.save():
                    self.changed = True
            if state["done"] or self.stopped:
                break
        self.copied[plan.name] = copied
        self.target.record(
            f"{self.target.bulk_write} {self.target.qualified(plan.name)}: {copied} rows in batches of {self.options['batch_size']}"
        )

    # -- the replay -----------------------------------------------------------------------------
    def replay(self, plans: list[TablePlan]) -> int:
        by_name = {plan.name: plan for plan in plans if self.store.copy["tables"].get(plan.name, {}).get("done")}
        deadline = self.clock() + self.options["replay_timeout"]
        while True:
            after = self.store.copy["replayed_seq"]
            with self.source.snapshot():
                changes = self.source.changes(after, self.options["batch_size"])
                if not changes:
                    return 0
                keys: dict = {}
                for _seq, table, key, old in changes:
                    if table in by_name:
                        wanted = keys.setdefault(table, {})
                        for values in (key, old):
                            if values is not None:
                                wanted[tuple(values)] = list(values)
                current = {
                    table: self.source.rows_by_key(table, by_name[table].columns, by_name[table].key, list(wanted.values()))
                    for table, wanted in keys.items()
                }
                backlog = self.source.backlog(changes[-1][0])
            with self.target.transaction():
                for table, wanted in keys.items():
                    plan = by_name[table]
                    targets = [
                        converted for converted in (self.convert_key(plan, values) for values in wanted.values()) if converted is not None
                    ]
                    self.target.delete_keys(table, plan.key, targets)
                    rows = self.convert_rows(plan, list(current[table].values()))
                    if rows:
                        self.target.write(table, plan.columns, rows)
                    self.changed = True
                self.replayed += len(changes)
                self.store.copy["replayed_seq"] = changes[-1][0]
                self.on_progress("(changes)", self.replayed, self.replayed + backlog, None, None)
                self.store.save()
            if backlog <= self.options["replay_until"] or self.clock() >= deadline:
                return backlog

    # -- the run --------------------------------------------------------------------------------
    def run(self, plans: list[TablePlan], check_mode: bool) -> dict:
        started = self.clock()
        state = self.store.copy
        with self.source.snapshot() as seq:
            for plan in plans:
                plan.total = self.source.count(plan.name)
            if check_mode:
                after = state.get("replayed_seq", seq)
                return {
                    "changed": any(plan.create or not state["tables"].get(plan.name, {}).get("done") for plan in plans)
                    or self.source.backlog(after) > 0,
                    "plan": [plan.view(state["tables"].get(plan.name)) for plan in plans],
                    "snapshot_seq": state.get("snapshot_seq", seq),
                    "pending_changes": self.source.backlog(after),
                    "complete": False,
                }
            if state.get("snapshot_seq") is None:
                state["snapshot_seq"] = seq
                state["replayed_seq"] = seq
            for plan in plans:
                self.copy_table(plan)
                if self.stopped:
                    break
        backlog = None
        if not self.stopped:
            backlog = self.replay(plans)
            with self.target.transaction():
                if self.store.save(final=True):
                    self.changed = True
        seconds = self.clock() - started
        rows = sum(self.copied.values())
        return {
            "changed": self.changed,
            "plan": [plan.view(state["tables"].get(plan.name)) for plan in plans],
            "tables": {
                plan.name: {"rows_total": plan.total, "rows_copied": self.copied.get(plan.name, 0), **state["tables"].get(plan.name, {})}
                for plan in plans
            },
            "rows_copied": rows,
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
            "replayed_changes": self.replayed,
            "backlog": backlog,
            "errors": state["errors"],
            "error_samples": list(state["error_samples"]),
            "snapshot_seq": state["snapshot_seq"],
            "replayed_seq": state["replayed_seq"],
            "complete": not self.stopped,
        }


def validate_options(options: dict) -> None:
    for name, low in (("batch_size", 1), ("max_errors", 0), ("replay_until", 0)):
        if options[name] < low:
            raise CopyError(f"{name}={options[name]} is out of range: give {low} or more")
    if options.get("max_rows") is not None and options["max_rows"] < 1:
        raise CopyError(f"max_rows={options['max_rows']} is out of range: give 1 or more, or leave it out for no limit")
    if options["replay_timeout"] <= 0:
        raise CopyError(f"replay_timeout={options['replay_timeout']} is out of range: give seconds, more than 0")
