# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cutover's critical section: move writes from `source` to `target` behind a PgBouncer
PAUSE, in one call, with a hard deadline and an undo for every step.

Before the pause (bounded by `prepare_timeout`): the forward subscription (source -> target)
is enabled, every table ready, its lag under `max_lag_bytes`, and it commits synchronously on
the target so the source's slot confirms an applied position within milliseconds (with
`synchronous_commit = off` the confirmation waits for the target's WAL writer: ~0.4 s); the
reverse publication exists on the target; every table it sends has a replica identity.

The pause (bounded by `timeout`, each statement by statement_timeout):

  pause_pgbouncer -> freeze_source -> drain_source_writers -> wait_for_catch_up ->
  sync_sequences -> disable_forward_subscription -> create_reverse_slot ->
  create_reverse_subscription -> unfreeze_target -> repoint_pgbouncer -> resume_pgbouncer

The reverse slot is created after the target has applied the source's last write and before
any client reaches the target, so it holds exactly the writes made on the target from then on:
the reverse subscription (copy_data false) brings them to the source, which makes a rollback
lossless. The source stays read-only afterwards; a switchover back (rollback) unfreezes it.

On any error, or when the deadline passes, the steps done are undone in reverse order and the
pool resumes on the source: the result names the step that failed and what was undone.
After the pause: the disabled forward subscription is dropped with its slot (an inactive slot
retains WAL), and the reverse subscription is watched until its worker streams.
"""

from __future__ import annotations

import contextlib
import math
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils import pg_readonly, pgbouncer
from ansible_collections.zerodowntime.migration.plugins.module_utils.pg_client import Client, PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.pg_publication import ensure_publication, format_qualified_name
from ansible_collections.zerodowntime.migration.plugins.module_utils.pg_sequences import sync_sequences
from ansible_collections.zerodowntime.migration.plugins.module_utils.pg_slot import ReplicationSlot, validate_slot_name
from ansible_collections.zerodowntime.migration.plugins.module_utils.pg_subscription import Subscription, build_conninfo

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql

STEPS = (
    "pause_pgbouncer",
    "freeze_source",
    "drain_source_writers",
    "wait_for_catch_up",
    "sync_sequences",
    "disable_forward_subscription",
    "create_reverse_slot",
    "create_reverse_subscription",
    "unfreeze_target",
    "repoint_pgbouncer",
    "resume_pgbouncer",
)
POLL_INTERVAL = 0.002  # the catch-up wait polls the source's slot this often (seconds)
UNDO_STATEMENT_TIMEOUT_MS = 15000
CLEANUP_TIMEOUT = 15.0


class DeadlineExceeded(PgError):
    pass


def statement_timeout(client: Client, milliseconds: int) -> None:
    """Bound every statement this session runs from now on (also in check mode: it is a read)."""
    client.query(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(milliseconds))))


def subscribed_tables(client: Client, subscription: str) -> list[str]:
    """The tables a subscription receives, as qualified names pg_publication reads back."""
    rows = client.query(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_subscription_rel r "
        "JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid AND s.subdbid = (SELECT oid FROM pg_catalog.pg_database "
        "WHERE datname = pg_catalog.current_database()) "
        "JOIN pg_catalog.pg_class c ON c.oid = r.srrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE s.subname = %s ORDER BY 1, 2",
        (subscription,),
    )
    return [format_qualified_name(row["nspname"], row["relname"]) for row in rows]


def unusable_replica_identities(client: Client, subscription: str) -> list[str]:
    """The tables the subscription receives, and their partitions (pg_partition_tree lists
    nothing for a plain table), whose UPDATE and DELETE would
    be refused once published back: no replica identity (NOTHING, or DEFAULT without a primary key)."""
    rows = client.query(
        "SELECT t.relid::regclass::text AS name FROM pg_catalog.pg_subscription_rel r "
        "JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid "
        "CROSS JOIN LATERAL (SELECT r.srrelid AS relid UNION SELECT relid FROM pg_catalog.pg_partition_tree(r.srrelid)) AS t "
        "JOIN pg_catalog.pg_class c ON c.oid = t.relid "
        "WHERE s.subname = %s AND c.relkind = 'r' AND NOT (c.relreplident = 'f' "
        "OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) "
        "OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))) "
        "ORDER BY 1",
        (subscription,),
    )
    return [row["name"] for row in rows]


class Switchover:
    """One switchover. `source` and `target` are Clients (check mode on both alike), `console`
    PgBouncer's admin console; `params` the module's options."""

    def __init__(self, source: Client, target: Client, console: pgbouncer.AdminConsole, params: dict, log=None):
        self.source, self.target, self.console = source, target, console
        self.params = params
        self.check_mode = source.check_mode
        self.log = log or (lambda message: None)
        self.pool = pgbouncer.check_name(params["pgbouncer"]["database"])
        self.forward = Subscription(target, params["subscription"])
        self.reverse_name = validate_slot_name(params["reverse_subscription"])
        self.reverse = Subscription(source, self.reverse_name)
        self.reverse_slot = ReplicationSlot(target, self.reverse_name, force=True)
        self.steps: list[dict] = []
        self.undo_stack: list[tuple[str, object]] = []  # (step, callable), newest last
        self.spare: pgbouncer.AdminConsole | None = None  # second admin connection the undo uses
        self.undone: list[dict] = []
        self.warnings: list[str] = []
        self.deadline = math.inf
        self.failed_step: str | None = None
        self.facts: dict = {}

    # --- where things stand ------------------------------------------------------------------
    def target_endpoint(self) -> dict:
        """Where the pool must point once writes go to the target."""
        bouncer, target = self.params["pgbouncer"], self.params["target"]
        return {
            "host": bouncer.get("target_host") or target["login_host"],
            "port": int(bouncer.get("target_port") or target["login_port"]),
            "dbname": bouncer.get("target_dbname") or target["login_db"],
        }

    def pool_endpoint(self) -> dict:
        row = self.console.require_database(self.pool)
        return {"host": row["host"], "port": int(row["port"]), "dbname": row["database"], "paused": bool(row["paused"])}

    def status(self) -> str:
        """`switched` when the pool points at the target and the reverse subscription exists;
        `pending` when it points elsewhere and the forward subscription is enabled."""
        pool = self.facts["pool_before"] = self.pool_endpoint()
        on_target = {key: pool[key] for key in ("host", "port", "dbname")} == self.target_endpoint()
        forward = self.forward.row()
        reverse = self.reverse.exists()
        if on_target and reverse:
            return "switched"
        if on_target:
            raise PgError(
                f"PgBouncer already sends pool '{self.pool}' to the target {self.target.endpoint}, but the source "
                f"{self.source.endpoint} has no reverse subscription '{self.reverse_name}': writes made on the target "
                f"do not reach the source. Create the reverse replication, or roll back (playbooks/rollback.yml)"
            )
        if forward is None:
            raise PgError(
                f"subscription '{self.forward.name}' does not exist on the target {self.target.endpoint}: the target is "
                f"not replicating from the source. Run phase 2 (playbooks/phase2_schema.yml) or fix subscription"
            )
        if not forward["subenabled"]:
            raise PgError(
                f"subscription '{self.forward.name}' on the target {self.target.endpoint} is disabled: the target is not "
                f"receiving the source's writes. Enable it (zerodowntime.migration.pg_subscription enabled: true) first"
            )
        if reverse:
            raise PgError(
                f"the source {self.source.endpoint} already has a subscription '{self.reverse_name}' while PgBouncer still "
                f"sends pool '{self.pool}' to {pool['host']}:{pool['port']}: a leftover of an earlier switchover? "
                f"Drop it (zerodowntime.migration.pg_subscription state: absent) or choose another reverse_subscription"
            )
        return "pending"

    def check_ready(self) -> None:
        """Everything the pause relies on, read before pausing: fail here, not in the pause."""
        for client, side in ((self.source, "source"), (self.target, "target")):
            pg_readonly.check_privileges(client, "instance", None, self.params["terminate_writers"])
            self.facts[f"{side}_readonly"] = pg_readonly.read_state(client, "instance")
        forward = self.forward.attrs()
        self.facts["forward"] = forward
        if forward["slot_name"] == "none":
            raise PgError(f"subscription '{self.forward.name}' on the target has no slot (slot_name NONE): it cannot be caught up")
        tables = self.forward.table_states()
        waiting = [f"{table['table_name']} ({table['state_name']})" for table in tables if table["state"] != "r"]
        if not tables or waiting:
            raise PgError(
                f"subscription '{self.forward.name}' on the target is not ready: "
                + (f"tables still syncing: {', '.join(waiting)}" if waiting else "it replicates no table")
                + ". Wait for the initial copy (pg_subscription wait_for_sync: true) before the cutover"
            )
        self.facts["tables"] = subscribed_tables(self.target, self.forward.name)
        slot = self.source.query_one(
            "SELECT active, wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = %s AND database = current_database()",
            (forward["slot_name"],),
        )
        if slot is None:
            raise PgError(
                f"the forward subscription's slot '{forward['slot_name']}' does not exist on the source {self.source.endpoint}: "
                f"the target cannot catch up. Re-create the replication (phase 2)"
            )
        if slot["wal_status"] == "lost":
            raise PgError(
                f"the forward slot '{forward['slot_name']}' on the source has lost required WAL: re-create the replication (phase 2)"
            )
        unusable = unusable_replica_identities(self.target, self.forward.name)
        if unusable:
            raise PgError(
                f"on the target {self.target.endpoint}, {', '.join(unusable)} have no replica identity: once published back "
                f"to the source, their UPDATEs and DELETEs would fail for clients. Add a primary key or "
                f"ALTER TABLE ... REPLICA IDENTITY USING INDEX / FULL, then retry"
            )
        if self.reverse_slot.exists():
            raise PgError(
                f"a replication slot '{self.reverse_name}' already exists on the target {self.target.endpoint}: drop it "
                f"(zerodowntime.migration.pg_replication_slot state: absent) or choose another reverse_subscription"
            )

    # --- before the pause ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Changes that do not need the pause: the reverse publication, synchronous apply of the
        forward subscription, and a lag small enough to catch up inside the pause."""
        for client in (self.source, self.target):
            pg_readonly.keep_session_writable(client)  # this session's DDL must work on a frozen side
        publication = ensure_publication(
            self.target,
            {"name": self.params["reverse_publication"], "tables": self.facts["tables"], "publish_via_partition_root": True},
        )
        if publication["changed"]:
            self.log(f"reverse publication {self.params['reverse_publication']} on the target: {publication['diff']['after']}")
        forward = self.facts["forward"]
        if forward["synchronous_commit"] != "on":
            self.forward.update(forward, {"synchronous_commit": "on"})
            self.undo_stack.append(("restore_forward_synchronous_commit", lambda: self.restore_synchronous_commit(forward)))
        if not self.check_mode:
            self.wait_for_lag(self.params["prepare_timeout"])

    def restore_synchronous_commit(self, forward: dict) -> None:
        if self.forward.exists():
            self.forward.update(self.forward.attrs(), {"synchronous_commit": forward["synchronous_commit"]})

    def lag(self) -> dict | None:
        return self.source.query_one(
            "SELECT active, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes "
            "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
            (self.facts["forward"]["slot_name"],),
        )

    def wait_for_lag(self, timeout: float) -> None:
        """Until the forward slot is active and at most max_lag_bytes behind (an apply worker
        restarted by the synchronous_commit change reconnects first)."""
        limit = self.params["max_lag_bytes"]
        started = time.monotonic()
        reported = 0.0
        while True:
            row = self.lag()
            elapsed = time.monotonic() - started
            if row and row["active"] and row["lag_bytes"] <= limit:
                self.facts["lag_before_pause"] = int(row["lag_bytes"])
                return
            if elapsed >= timeout:
                state = "no walsender streams it" if row and not row["active"] else f"it is {row['lag_bytes'] if row else '?'} bytes behind"
                raise PgError(
                    f"the forward subscription '{self.forward.name}' did not get within max_lag_bytes {limit} of the source "
                    f"in {timeout:g} s (prepare_timeout): {state}. Nothing was paused. Reduce the write load, check the "
                    f"target's log for apply errors, or raise max_lag_bytes / prepare_timeout"
                )
            if elapsed - reported >= 5:
                reported = elapsed
                self.log(f"waiting for the forward lag to drop: {row['lag_bytes'] if row else '?'} bytes after {elapsed:.0f} s")
            time.sleep(0.05)

    # --- the pause -----------------------------------------------------------------------------
    def remaining(self, step: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"the write pause reached its deadline (timeout {self.params['timeout']:g} s) before {step} finished")
        return left

    @contextlib.contextmanager
    def step(self, name: str):
        """Time one step; the deadline is checked before and after it."""
        self.failed_step = name
        self.remaining(name)
        started = time.monotonic()
        entry = {"step": name, "ms": None, "ok": False}
        self.steps.append(entry)
        try:
            yield entry
        finally:
            entry["ms"] = round((time.monotonic() - started) * 1000, 2)
        entry["ok"] = True
        self.remaining(name)
        self.failed_step = None

    def switch(self) -> None:
        """The critical section. Raises after undoing when a step fails or the deadline passes."""
        timeout = self.params["timeout"]
        self.spare = self.console.sibling()  # opened now: the undo must not wait for a connect
        for client in (self.source, self.target):
            statement_timeout(client, max(1, timeout * 1000))
        self.deadline = time.monotonic() + timeout
        pause_started = time.monotonic()
        try:
            self.run_steps()
        except BaseException:
            self.facts["write_pause_ms"] = round((time.monotonic() - pause_started) * 1000, 1)
            self.undo()
            raise
        finally:
            self.spare.close()
        self.facts["write_pause_ms"] = round((time.monotonic() - pause_started) * 1000, 1)

    def run_steps(self) -> None:
        source, target, params = self.source, self.target, self.params
        with self.step("pause_pgbouncer"):
            pgbouncer.pause(self.console, self.pool, self.remaining("pause_pgbouncer"))
        self.undo_stack.append(("resume_pgbouncer", lambda: pgbouncer.resume(self.spare, self.pool)))
        with self.step("freeze_source"):
            since = pg_readonly.server_now(source)
            pg_readonly.freeze(source, "instance")
        previous = self.facts["source_readonly"]["value"]
        self.undo_stack.append(("unfreeze_source", lambda: pg_readonly.unfreeze(source, "instance", previous=previous)))
        with self.step("drain_source_writers") as entry:
            self.drain_writers(since, entry)
        with self.step("wait_for_catch_up") as entry:
            self.wait_for_catch_up(entry)
        with self.step("sync_sequences") as entry:
            synced = sync_sequences(source, target, params["sequence_margin"])
            entry["sequences_changed"] = sum(1 for sequence in synced["sequences"] if sequence["changed"])
            self.facts["sequences"] = synced["sequences"]
        forward = self.forward
        with self.step("disable_forward_subscription"):
            forward.update({"enabled": True}, {"enabled": False})
        self.undo_stack.append(("enable_forward_subscription", lambda: forward.update({"enabled": False}, {"enabled": True})))
        with self.step("create_reverse_slot"):
            self.reverse_slot.create({"slot_type": "logical", "plugin": "pgoutput"})
        self.undo_stack.append(("drop_reverse_slot", self.drop_reverse_slot))
        with self.step("create_reverse_subscription"):
            self.reverse.create(
                {
                    "conninfo": build_conninfo(params["reverse_publisher"]),
                    "publications": [params["reverse_publication"]],
                    "create_slot": False,
                    "slot_name": self.reverse_name,
                    "copy_data": False,
                    "synchronous_commit": "on",
                }
            )
        self.undo_stack.append(("drop_reverse_subscription", self.drop_reverse_subscription))
        if self.facts["target_readonly"]["readonly"]:
            with self.step("unfreeze_target"):
                pg_readonly.unfreeze(target, "instance")
            frozen = self.facts["target_readonly"]["value"]
            self.undo_stack.append(("freeze_target", lambda: pg_readonly.unfreeze(target, "instance", previous=frozen)))
        with self.step("repoint_pgbouncer"):
            wanted = self.target_endpoint()
            pgbouncer.repoint(self.console, self.pool, params["pgbouncer"]["config_file"], wanted["host"], wanted["port"], wanted["dbname"])
        before = self.facts["pool_before"]
        self.undo_stack.append(
            (
                "repoint_pgbouncer_to_source",
                lambda: pgbouncer.repoint(
                    self.spare, self.pool, params["pgbouncer"]["config_file"], before["host"], before["port"], before["dbname"]
                ),
            )
        )
        with self.step("resume_pgbouncer"):
            pgbouncer.resume(self.console, self.pool)
        self.undo_stack = []  # writes go to the target now: nothing is undone from here on

    def drain_writers(self, since, entry: dict) -> None:
        """Sessions that began a read-write transaction before the freeze can still commit:
        wait for them (bounded), terminate them when allowed, else abort."""
        found, waited = pg_readonly.wait_for_writers(self.source, "instance", None, since, self.remaining("drain_source_writers") * 0.5)
        writers = [session for session in found if session["can_write"]]
        if writers and self.params["terminate_writers"]:
            pids = [session["pid"] for session in writers]
            entry["terminated"] = pg_readonly.terminate(self.source, pids, timeout=self.remaining("drain_source_writers"))
            writers = [session for session in writers if session["pid"] not in entry["terminated"]]
        entry["waited_ms"] = round(waited * 1000, 1)
        if writers:
            shown = ", ".join(
                f"pid {s['pid']} ({s['usename']}@{s['datname']}, {s['application_name'] or 'no application_name'})" for s in writers
            )
            raise PgError(
                f"sessions on the source still in a read-write transaction after the freeze: {shown}. They bypass PgBouncer "
                f"and could commit after the target caught up. End them, route them through PgBouncer, or set "
                f"terminate_writers: true",
                writers=writers,
            )

    def wait_for_catch_up(self, entry: dict) -> None:
        """Until the forward slot confirms the source's WAL position taken after the freeze:
        the target then has applied (and, committing synchronously, flushed) every write."""
        position = self.source.query_one("SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn")["lsn"]
        entry["source_lsn"] = position
        slot = self.facts["forward"]["slot_name"]
        while True:
            row = self.source.query_one(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn AS caught_up, active, "
                "pg_catalog.pg_wal_lsn_diff(%s::pg_lsn, confirmed_flush_lsn)::bigint AS behind "
                "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                (position, position, slot),
            )
            if row and row["caught_up"]:
                return
            if time.monotonic() >= self.deadline:
                state = "it is still applying"
                if row and not row["active"]:
                    state = "its walsender is not running (is the target's apply worker up?)"
                raise DeadlineExceeded(
                    f"the target did not catch up with the source's WAL position {position} before the deadline "
                    f"(timeout {self.params['timeout']:g} s): slot '{slot}' is {row['behind'] if row else '?'} bytes behind and {state}. "
                    f"Check the forward lag (max_lag_bytes) and the target's log for apply errors",
                    lag_bytes=row["behind"] if row else None,
                )
            time.sleep(POLL_INTERVAL)

    # --- undo ----------------------------------------------------------------------------------
    def drop_reverse_subscription(self) -> None:
        if self.reverse.exists():
            self.reverse.drop_slot = False  # the slot lives on the target: dropped by drop_reverse_slot
            self.reverse.drop(self.reverse.attrs())

    def drop_reverse_slot(self) -> None:
        current = self.reverse_slot.attrs()
        if current is not None:
            self.reverse_slot.drop(current)

    def undo(self) -> None:
        """Undo every step done, newest first; each undo is tried even if an earlier one failed.
        The pool resumes last, on the source, once the source takes writes again."""
        for client in (self.source, self.target):
            with contextlib.suppress(PgError):
                statement_timeout(client, UNDO_STATEMENT_TIMEOUT_MS)
        for name, action in reversed(self.undo_stack):
            started = time.monotonic()
            try:
                action()
                outcome = {"step": name, "ok": True}
            except PgError as exc:
                outcome = {"step": name, "ok": False, "error": str(exc)}
                self.warnings.append(f"undo step {name} failed: {exc}")
            outcome["ms"] = round((time.monotonic() - started) * 1000, 2)
            self.undone.append(outcome)
        self.undo_stack = []

    # --- after the pause -------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Drop the disabled forward subscription and its slot on the source, and watch the
        reverse subscription start; problems here are warnings: writes already go to the target."""
        for client in (self.source, self.target):
            statement_timeout(client, UNDO_STATEMENT_TIMEOUT_MS)
        if self.params["drop_forward_subscription"] and self.forward.exists():
            self.forward.drop_slot = True
            deadline = time.monotonic() + CLEANUP_TIMEOUT
            while True:
                try:
                    self.forward.drop(self.forward.attrs())
                    break
                except PgError as exc:  # its walsender may not have exited yet
                    if "is active" not in str(exc) or time.monotonic() >= deadline:
                        self.warnings.append(
                            f"the forward subscription '{self.forward.name}' is disabled but could not be dropped ({exc}): drop it "
                            f"and its slot on the source, or the slot retains WAL"
                        )
                        break
                    time.sleep(0.1)
        if self.check_mode:
            return
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        while time.monotonic() < deadline:
            row = self.source.query_one(
                "SELECT pid, received_lsn::text AS received_lsn FROM pg_catalog.pg_stat_subscription WHERE subname = %s AND relid IS NULL",
                (self.reverse_name,),
            )
            if row and row["pid"] and row["received_lsn"]:
                self.facts["reverse_streaming"] = True
                return
            time.sleep(0.05)
        self.facts["reverse_streaming"] = False
        self.warnings.append(
            f"the reverse subscription '{self.reverse_name}' on the source has not started streaming within {CLEANUP_TIMEOUT:g} s: "
            f"writes on the target are kept in slot '{self.reverse_name}' there; check the source's log"
        )


def view(status: str, pool: dict, forward: str, reverse: str) -> dict:
    return {"status": status, "pgbouncer_pool": pool, "forward_subscription": forward, "reverse_subscription": reverse}


def switchover(source: Client, target: Client, console: pgbouncer.AdminConsole, params: dict, log=None) -> dict:
    """What the pg_switchover module does."""
    if not 0 < params["timeout"] <= 60:
        raise PgError(f"timeout must be more than 0 and at most 60 seconds (it bounds the write pause), not {params['timeout']}")
    for client in (source, target):
        client.require_logical_wal()
        statement_timeout(client, params["prepare_timeout"] * 1000)  # no statement before the pause waits longer
    run = Switchover(source, target, console, params, log)
    status = run.status()
    wanted = run.target_endpoint()
    before_pool = {key: run.facts["pool_before"][key] for key in ("host", "port", "dbname")}
    before = view(status, before_pool, run.forward.name, "absent")
    result = {"changed": False, "switched": status == "switched", "steps": [], "write_pause_ms": None, "queries": []}
    if status == "switched":
        result["diff"] = {"before": before, "after": before}
        result["serving"] = wanted
        return result
    run.check_ready()
    after = view("switched", wanted, "absent" if params["drop_forward_subscription"] else "disabled", run.reverse_name)
    result.update(changed=True, diff={"before": before, "after": after}, serving=wanted)
    try:
        run.failed_step = "prepare"
        run.prepare()
        run.failed_step = None
        if run.check_mode:
            result["steps"] = [{"step": name, "ms": None, "ok": None} for name in STEPS]
        else:
            run.switch()
        result["switched"] = True
    except Exception as error:  # whatever broke, the undo has run: report it plainly
        exc = error if isinstance(error, PgError) else PgError(f"unexpected error: {error!r}")
        failed = run.failed_step or "prepare"
        if run.undo_stack:  # a failure before the pause: undo prepare()
            run.undo()
        exc.details.update(
            failed_step=failed,
            steps=run.steps,
            undone=run.undone,
            write_pause_ms=run.facts.get("write_pause_ms"),
            serving=before_pool,
        )
        exc.args = (f"switchover aborted at step {failed}: {exc}; undone: {', '.join(u['step'] for u in run.undone) or 'nothing'}",)
        raise exc from None
    if not run.check_mode:
        try:
            run.cleanup()
        except PgError as exc:  # writes already go to the target: report, do not fail
            run.warnings.append(f"after the switchover: {exc}")
        result["steps"] = run.steps
    result.update(
        queries=source.queries + target.queries + console.queries,
        write_pause_ms=run.facts.get("write_pause_ms"),
        lag_before_pause=run.facts.get("lag_before_pause"),
        sequences=run.facts.get("sequences", []),
        reverse_streaming=run.facts.get("reverse_streaming"),
        warnings=run.warnings,
    )
    return result
