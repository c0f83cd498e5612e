# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the migration stands: one row per phase in a `migration_progress` table.

The phase row is a ManagedObject. What a state asks for is planned by `plan` (pure: the rows read,
the request and the server's clock in, the wanted row attributes out, or a PgError that names
the fix), and `ManagedObject.ensure` writes it, so check mode and diff mode work as for every other
object. The rules:

* `started` refuses while the phase before it (in `phases`) has not succeeded, unless `force`.
  A running phase is resumed as it is; a failed one runs again (attempts + 1) keeping the
  checkpoints it recorded, so finished steps are known; a succeeded one is left alone unless
  `force`, which starts it over with no checkpoints.
* `checkpoint` adds a step to `details.checkpoints` of a running phase (once).
* `succeeded` / `failed` set the status and completed_at, and merge `details`.

Concurrent runs against the same table are serialised with a transaction-level advisory lock.
The table lives in the migration's own database; the session stays writable while the
instance is frozen read-only (pg_readonly / pg_switchover), so phases after the cutover can
still record their status.
"""

from __future__ import annotations

import contextlib

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import MAX_IDENTIFIER_BYTES
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.readonly import keep_session_writable

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql
    from psycopg.types.json import Jsonb

DEFAULT_PHASES = ["phase1_infra", "phase2_schema", "phase3_optimize", "phase4_validate", "phase5_cutover", "phase6_verify"]
DEFAULT_TABLE = "migration_progress"
STATES = ["started", "succeeded", "failed", "checkpoint", "query"]
STATUSES = ("running", "succeeded", "failed")
PENDING = "pending"
COLUMNS = ("phase", "status", "started_at", "completed_at", "attempts", "details")
# The live progress of the phase's long steps (postgres/progress.py writes it, keyed by step); a
# table created before it existed gets it on the first progress write.
PROGRESS_COLUMN = "progress"
STALE_AFTER = 30.0  # seconds: a running step whose last update is older (and older than 3 reports) is stale


# --- pure logic ----------------------------------------------------------------------------
def validate_name(name, option: str) -> str:
    """`name` if PostgreSQL keeps it as given (1 to 63 bytes); a PgError saying why not."""
    if name == "":
        raise PgError(
            f"invalid {option} name '': it is empty, and it must be 1 to {MAX_IDENTIFIER_BYTES} bytes: "
            f"name the {option}, or leave '{option}' out for its default"
        )
    if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise PgError(
            f"invalid {option} name {name!r}: it must be 1 to {MAX_IDENTIFIER_BYTES} bytes "
            f"(PostgreSQL truncates longer identifiers): choose a shorter {option} name"
        )
    return name


def validate_phases(phases) -> list[str]:
    """The ordered phase list: non-empty, names that are non-empty strings, each once."""
    if not phases:
        raise PgError("phases is empty: list the migration's phases in the order they run")
    seen = set()
    for name in phases:
        if not isinstance(name, str) or not name:
            raise PgError(f"phases holds {name!r}: every phase must be a non-empty name")
        if name in seen:
            raise PgError(f"phase '{name}' appears twice in phases {phases}: list each phase once, in order")
        seen.add(name)
    return list(phases)


def validate_request(params: dict) -> None:
    """Options that make no sense together: refused before anything runs."""
    state = params.get("state") or "query"
    details = params.get("details") or {}
    if params.get("step") is not None and state != "checkpoint":
        raise PgError(f"step applies to state: checkpoint only (state is {state}): drop 'step' or use state: checkpoint")
    if state == "checkpoint" and not params.get("step"):
        raise PgError("state: checkpoint needs a non-empty step naming what finished")
    if state == "query" and details:
        raise PgError("details are not recorded with state: query (it only reads): drop 'details' or choose another state")
    if "checkpoints" in details:
        raise PgError("details.checkpoints is kept by the module: record a finished step with state: checkpoint and step: <name>")
    where = nul_in(details, "details")
    if where:
        raise PgError(
            f"{where} holds a NUL character (\\x00), which PostgreSQL cannot store in jsonb: "
            "remove it from 'details' (nothing was sent to the server)"
        )


def nul_in(value, path: str) -> str | None:
    """The path (details.key[index]...) of the first key or string in `value` holding a NUL character, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return f"{path} key {key!r}"
            found = nul_in(item, f"{path}.{key}")
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = nul_in(item, f"{path}[{index}]")
            if found:
                return found
    return None


def predecessor(phases: list[str], phase: str) -> str | None:
    """The phase that runs before `phase`; a PgError naming the list when `phase` is not in it."""
    if phase not in phases:
        raise PgError(f"unknown phase '{phase}': phases are {', '.join(phases)}: fix 'phase' or add it to 'phases'", phases=phases)
    position = phases.index(phase)
    return phases[position - 1] if position > 0 else None


def status_of(row: dict | None) -> str:
    return row["status"] if row is not None and row.get("status") else PENDING


def merge_details(current: dict | None, extra: dict | None) -> dict:
    merged = dict(current or {})
    merged.update(extra or {})
    return merged


def checkpoints_of(row: dict | None) -> list:
    if row is None:
        return []
    found = (row.get("details") or {}).get("checkpoints")
    return list(found) if isinstance(found, list) else []


def plan(state: str, phase: str, phases: list[str], rows: dict, now, force: bool = False, details=None, step=None, where="the table"):
    """What `state` asks of `phase`'s row, given the rows read (phase name -> row).

    Returns (desired, flags): the row attributes to set ({} when nothing changes; every column
    when the row is created) and {'resumed': bool, 'already_succeeded': bool}. Raises PgError
    when the request is refused; `where` names the table in messages.
    """
    before = predecessor(phases, phase)
    current = rows.get(phase)
    flags = {"resumed": False, "already_succeeded": False}
    if state == "started":
        if before is not None and not force and status_of(rows.get(before)) != "succeeded":
            found = status_of(rows.get(before))
            shown = f"{found} (no record in {where})" if found == PENDING else found
            raise PgError(
                f"phase '{phase}' cannot start: the phase before it, '{before}', is {shown}, not succeeded. "
                f"Run {before} until it succeeds, or set force: true to start {phase} anyway",
                predecessor=before,
                predecessor_status=found,
            )
        return plan_start(phase, current, now, force, details, flags)
    if current is None:
        raise PgError(f"phase '{phase}' has not been started (no record in {where}): record state: started first", phase_status=PENDING)
    current_details = current.get("details") or {}
    if state == "checkpoint":
        if status_of(current) != "running":
            raise PgError(
                f"phase '{phase}' is {status_of(current)}, not running: checkpoints are recorded while a phase runs; "
                f"start it first (state: started)",
                phase_status=status_of(current),
            )
        checkpoints = checkpoints_of(current)
        if step not in checkpoints:
            checkpoints.append(step)
        wanted = merge_details(current_details, details)
        wanted["checkpoints"] = checkpoints
        return ({"details": wanted} if wanted != current_details else {}), flags
    if state in ("succeeded", "failed"):
        wanted = merge_details(current_details, details)
        if current["status"] == state:
            return ({"details": wanted} if wanted != current_details else {}), flags
        return {"status": state, "completed_at": now, "details": wanted}, flags
    raise PgError(f"unknown state '{state}': choose one of {', '.join(STATES)}")


def plan_request(params: dict, phases: list[str], rows: dict, now, where: str):
    """`plan` for a run_state request (its parameters), on any engine's phase table."""
    return plan(
        params.get("state") or "query",
        params.get("phase"),
        phases,
        rows,
        now,
        force=bool(params.get("force")),
        details=params.get("details"),
        step=params.get("step"),
        where=where,
    )


def plan_start(phase: str, current: dict | None, now, force: bool, details, flags: dict):
    """`started` once the order is known to allow it (see plan)."""
    if current is None:
        return {
            "phase": phase,
            "status": "running",
            "started_at": now,
            "completed_at": None,
            "attempts": 1,
            "details": merge_details({}, details),
        }, flags
    current_details = current.get("details") or {}
    status = status_of(current)
    if status == "running":  # an interrupted run comes back: carry on where it was
        flags["resumed"] = True
        wanted = merge_details(current_details, details)
        return ({"details": wanted} if wanted != current_details else {}), flags
    if status == "succeeded" and not force:
        flags["already_succeeded"] = True
        return {}, flags
    kept = dict(current_details)
    if status == "succeeded":  # forced: start over, nothing is finished yet
        kept.pop("checkpoints", None)
    else:  # failed (or a hand-written status): run again, the checkpoints say what is done
        flags["resumed"] = status == "failed"
        if "error" in kept:  # the error belongs to the attempt that failed, not to this one
            kept["previous_error"] = kept.pop("error")
    return {
        "status": "running",
        "started_at": now,
        "completed_at": None,
        "attempts": (current.get("attempts") or 0) + 1,
        "details": merge_details(kept, details),
    }, flags


def iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def progress_view(progress, now_epoch: float | None = None) -> dict:
    """The steps' progress as returned: each step with `age_seconds` (since its last update, by
    the server's clock) and `stale` (a running step not updated for max(30 s, 3 reports))."""
    shown = {}
    for step, figures in (progress or {}).items():
        if not isinstance(figures, dict):
            continue
        figures = dict(figures)
        updated = figures.get("updated_epoch")
        if now_epoch is not None and isinstance(updated, (int, float)):
            age = max(0.0, now_epoch - float(updated))
            figures["age_seconds"] = round(age, 1)
            every = figures.get("every") if isinstance(figures.get("every"), (int, float)) else 0
            figures["stale"] = figures.get("state") == "running" and age > max(STALE_AFTER, 3 * every)
        shown[step] = figures
    return shown


def row_view(row: dict | None, name: str | None = None, now_epoch: float | None = None) -> dict:
    """A row as the module returns it: ISO timestamps, duration, `pending` for no row."""
    if row is None:
        row = {"phase": name, "status": PENDING}
    started, completed = row.get("started_at"), row.get("completed_at")
    duration = round((completed - started).total_seconds(), 3) if started is not None and completed is not None else None
    return {
        "phase": row.get("phase"),
        "status": row.get("status") or PENDING,
        "started_at": iso(started),
        "completed_at": iso(completed),
        "attempts": row.get("attempts") or 0,
        "details": dict(row.get("details") or {}),
        "duration_seconds": duration,
        "progress": progress_view(row.get(PROGRESS_COLUMN), now_epoch),
    }


def phases_view(phases: list[str], rows: dict, now_epoch: float | None = None) -> list[dict]:
    """Every phase in `phases` order (pending when it has no row), then rows of other phases."""
    listed = [row_view(rows.get(name), name, now_epoch) for name in phases]
    others = [row_view(rows[name], now_epoch=now_epoch) for name in sorted(rows) if name not in phases]
    return listed + others


# --- the table and the row -------------------------------------------------------------------
class ProgressTable:
    """The migration_progress table: whether it exists, its rows, creating it."""

    def __init__(self, client, schema: str, table: str):
        self.client = client
        self.schema = validate_name(schema, "schema")
        self.name = validate_name(table, "table")
        self.table = ident(self.schema, self.name)
        self.qualified = f"{self.schema}.{self.name}"
        self.present = None  # known once read
        self.has_progress = False  # whether the table has the progress column (known once read)

    def check_shape(self) -> bool:
        """Whether the table exists; an existing table without the expected columns is an error."""
        rows = self.client.query(
            "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped",
            (self.schema, self.name),
        )
        if not rows:
            return False
        found = {row["attname"] for row in rows}
        self.has_progress = PROGRESS_COLUMN in found
        missing = [column for column in COLUMNS if column not in found]
        if missing:
            raise PgError(
                f"table {self.qualified} on {self.client.endpoint} exists but has no column(s) {', '.join(missing)}: "
                f"it is not a migration progress table; choose another 'table' or 'schema'"
            )
        return True

    def columns(self):
        """The columns read: COLUMNS, and the progress column where the table has it."""
        names = [*COLUMNS, PROGRESS_COLUMN] if self.has_progress else list(COLUMNS)
        return sql.SQL(", ").join(map(sql.Identifier, names))

    def add_progress_column(self) -> None:
        """Give a table created before the progress column existed that column (not recorded:
        only the progress sink calls it, on its own connection, never in check mode)."""
        if not self.has_progress:
            self.client.query(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} jsonb NOT NULL DEFAULT '{{}}'").format(
                    self.table, sql.Identifier(PROGRESS_COLUMN)
                )
            )
            self.has_progress = True

    def rows(self) -> dict:
        """Phase name -> row; {} while the table does not exist."""
        self.present = self.check_shape()
        if not self.present:
            return {}
        found = self.client.query(sql.SQL("SELECT {} FROM {}").format(self.columns(), self.table))
        return {row["phase"]: row for row in found}

    def row(self, phase: str) -> dict | None:
        if self.present is None:
            self.present = self.check_shape()
        if not self.present:
            return None
        return self.client.query_one(
            sql.SQL("SELECT {} FROM {} WHERE phase = %s").format(self.columns(), self.table),
            (phase,),
        )

    def create(self) -> None:
        """The schema (when missing) and the table; recorded, and skipped in check mode."""
        if self.present:
            return
        if not self.client.query_one("SELECT 1 AS found FROM pg_catalog.pg_namespace WHERE nspname = %s", (self.schema,)):
            self.client.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(self.schema)))
        self.client.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (phase text PRIMARY KEY, "
                "status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')), "
                "started_at timestamptz, completed_at timestamptz, attempts integer NOT NULL DEFAULT 0, "
                "details jsonb NOT NULL DEFAULT '{{}}', progress jsonb NOT NULL DEFAULT '{{}}')"
            ).format(self.table)
        )
        self.present = not self.client.check_mode

    def lock(self) -> None:
        """Serialise concurrent runs on this table until the transaction ends (a read: no record)."""
        self.client.query("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(%s))", (self.qualified,))


def literal(column: str, value):
    return sql.Literal(Jsonb(value) if column == "details" else value)


class PhaseRow(ManagedObject):
    """One phase's row. Every desired attribute is set as given: None clears a timestamp."""

    kind = "phase"

    def __init__(self, client, table: ProgressTable, name: str):
        super().__init__(client, name)
        self.table = table

    def exists(self) -> bool:
        return self.attrs() is not None

    def attrs(self) -> dict | None:
        return self.table.row(self.name)

    def create(self, desired: dict) -> None:
        self.table.create()
        self.client.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                self.table.table,
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                sql.SQL(", ").join(literal(column, desired.get(column)) for column in COLUMNS),
            )
        )

    def update(self, current: dict, changes: dict) -> None:
        assignments = [
            sql.SQL("{} = {}").format(sql.Identifier(column), literal(column, changes[column])) for column in COLUMNS if column in changes
        ]
        self.client.execute(
            sql.SQL("UPDATE {} SET {} WHERE phase = {}").format(self.table.table, sql.SQL(", ").join(assignments), sql.Literal(self.name))
        )

    def drop(self, current: dict) -> None:
        raise PgError(f"phase rows are not dropped by this module (phase '{self.name}' in {self.table.qualified})")

    def differences(self, current: dict, desired: dict) -> dict:
        return {key: value for key, value in desired.items() if current.get(key) != value}

    @staticmethod
    def projected(current: dict, changes: dict) -> dict:
        merged = dict(current)
        merged.update(changes)
        return merged

    def diff_view(self, attributes: dict | None) -> dict:
        return row_view(attributes) if attributes is not None else {}


# --- the module's work -----------------------------------------------------------------------
def report(phases: list[str], rows: dict, phase: str | None, phase_view: dict | None = None, now_epoch: float | None = None) -> dict:
    """`phase`, `checkpoints` and `phases` as every state returns them; `phase_view` is the
    phase's row as this run leaves it (or, in check mode, would leave it); `now_epoch` (the
    server's clock) dates the steps' progress."""
    views = phases_view(phases, rows, now_epoch)
    if phase_view:
        views = [phase_view if view["phase"] == phase else view for view in views]
    shown = next((view for view in views if view["phase"] == phase), {}) if phase else {}
    checkpoints = shown.get("details", {}).get("checkpoints")
    return {"phase": shown, "checkpoints": list(checkpoints) if isinstance(checkpoints, list) else [], "phases": views}


def run_state(client, params: dict) -> dict:
    """What the migration_state module does, given its parameters."""
    validate_request(params)
    phases = validate_phases(params.get("phases") or DEFAULT_PHASES)
    state = params.get("state") or "query"
    phase = params.get("phase")
    table = ProgressTable(
        client,
        "public" if params.get("schema") is None else params["schema"],
        DEFAULT_TABLE if params.get("table") is None else params["table"],
    )
    flags = {"resumed": False, "already_succeeded": False}
    if state == "query":
        if phase is not None:
            predecessor(phases, phase)
        rows = table.rows()
        now_epoch = client.query_one("SELECT extract(epoch FROM pg_catalog.now())::float AS now")["now"]
        return dict(changed=False, queries=[], **flags, **report(phases, rows, phase, now_epoch=now_epoch))
    if not phase:
        raise PgError(f"state: {state} needs 'phase' (one of {', '.join(phases)})")
    keep_session_writable(client)
    with client.transaction():
        table.lock()
        rows = table.rows()
        now = client.query_one("SELECT pg_catalog.now() AS now")["now"]
        desired, flags = plan_request(params, phases, rows, now, table.qualified)
        result = PhaseRow(client, table, phase).ensure("present", desired)
    result.pop("state", None)
    result.update(flags)
    result.update(report(phases, rows, phase, result["phase"]))
    return result
