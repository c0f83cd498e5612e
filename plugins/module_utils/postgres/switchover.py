# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cutover's critical section: move writes from `source` to `target` behind a PAUSE of
every PgBouncer in front of them, in one call, with a hard deadline and an undo for every step.

Before the pause (bounded by `prepare_timeout`): leftovers of an earlier run are repaired (see
"The journal" below); the forward subscription (source -> target) is enabled, every table ready,
its lag under `max_lag_bytes`, and it commits synchronously on the target so the source's slot
confirms an applied position within milliseconds (with `synchronous_commit = off` the
confirmation waits for the target's WAL writer: ~0.4 s); the reverse publication exists on the
target; every table it sends has a replica identity; every sequence of the source exists on the target.

The pause (bounded by `timeout`, each statement by statement_timeout), STEPS in order:

  pause_pgbouncer -> freeze_source -> drain_source_writers -> wait_for_catch_up ->
  sync_sequences -> disable_forward_subscription -> create_reverse_slot ->
  create_reverse_subscription -> unfreeze_target -> repoint_pgbouncer | switch_haproxy ->
  resume_pgbouncer

Every pooler is paused, repointed and resumed concurrently; one that fails or cannot be reached
undoes the switchover for all of them.

Writes move one of two ways. Without `haproxy`, every pool points at the source itself and is
repointed (its pgbouncer.ini rewritten, so every pooler must run on the module's host). With
`haproxy`, every pool points at HAProxy's write frontend and stays there: the step
switch_haproxy makes the target the write backend's one server (through the runtime API, so the
poolers may run anywhere). PAUSE has closed the pools' server connections, so RESUME opens new
ones, through HAProxy, to the target; HAProxy's own clients move inside the same pause.

The reverse slot is created after the target has applied the source's last write and before
any client reaches the target, so it holds exactly the writes made on the target from then on:
the reverse subscription (copy_data false) brings them to the source, which makes a rollback
lossless. The source stays read-only afterwards; a switchover back (rollback) unfreezes it.

On any error, or when the deadline passes, the steps begun are undone newest first and every
pool resumes on the source: the result names the step that failed and what was undone.
After the pause: the disabled forward subscription is dropped with its slot (an inactive slot
retains WAL), and the reverse subscription is watched until its worker streams. When the DDL log
(pg_ddl_capture) is among the tables, DDL goes back too: the apply trigger on the source before the
pause, the capture on the target after it.

The journal (pg_journal) and the guardian (pg_guardian): each step is recorded before it runs;
a guardian process that outlives the module undoes the run from the journal when the module dies
(SIGTERM, SIGHUP, SIGKILL) or overruns its deadline. Once `committing` is recorded (just before
the first RESUME on the target) a dead run is finished instead: clients may already write to
the target. The next run of the module reads the journal first and repairs what a run whose
guardian died too (the host rebooted) left behind.

Why the freeze is ALTER SYSTEM default_transaction_read_only and not table locks held by the
module's session (which would end by themselves with it): the source must stay read-only for
direct clients after the switchover, which no session can hold, and the guardian ends the
freeze anyway, as it ends PAUSE and the repoint, which nothing ends by itself.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.failpoint import hold
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.proxy import Proxy, locate
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.runtime import HAProxyError
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer import console as pgbouncer
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import guardian as pg_guardian
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import readonly as pg_readonly
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.apply_errors import ApplyWatch
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, statement_timeout
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.ddl import LOG_NAME as DDL_LOG
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.ddl import DdlCapture, release_frozen_ddl
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import format_qualified_name
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.journal import Journal, JournalError, pending
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.publication import ensure_publication
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sequences import missing_sequences, qualified, sync_sequences
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.slot import ReplicationSlot, validate_slot_name
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.subscription import Subscription, build_conninfo


@dataclass(frozen=True)
class Step:
    """One step of the switchover: `name` is the Switchover method that does it, `undo` the
    method that undoes it (idempotent: harmless when the step never ran), None when nothing to undo."""

    name: str
    undo: str | None


@dataclass
class Facts:
    """What a switchover learns as it runs. The journal keeps what an undo or a finish needs
    (JOURNALED, and of the forward subscription only FORWARD_JOURNALED: its conninfo holds a
    password); the result reports the rest."""

    forward: dict | None = None  # the forward subscription's attributes (pg_subscription's view)
    tables: list = field(default_factory=list)  # the tables it replicates, qualified
    source_readonly: dict | None = None  # pg_readonly.read_state of each side before the pause
    target_readonly: dict | None = None
    pool_before: dict | None = None  # where the first pool pointed before
    lag_before_pause: int | None = None  # bytes
    frozen_at: object = None  # the source's clock when it was frozen
    write_pause_ms: float | None = None
    write_pause_started_at: float | None = None  # UTC epoch seconds: where the pause stands on a clock (the report's charts)
    sequences: list = field(default_factory=list)
    reverse_streaming: bool | None = None
    ddl_released: list = field(default_factory=list)  # ddl_log ids applied on the frozen target before the pause

    JOURNALED = ("source_readonly", "target_readonly", "tables")
    FORWARD_JOURNALED = ("synchronous_commit", "slot_name")

    def journaled(self) -> dict:
        kept = {name: getattr(self, name) for name in self.JOURNALED}
        kept["forward"] = {key: self.forward[key] for key in self.FORWARD_JOURNALED} if self.forward else None
        return kept

    @classmethod
    def from_journal(cls, saved: dict) -> Facts:
        return cls(forward=saved.get("forward"), **{name: saved.get(name) for name in cls.JOURNALED if saved.get(name) is not None})


# Before the pause: the forward subscription made to commit synchronously.
PREPARE_STEP = Step("set_forward_synchronous_commit", "restore_forward_synchronous_commit")
PAUSE_STEPS = (
    Step("pause_pgbouncer", "resume_pgbouncer"),
    Step("freeze_source", "unfreeze_source"),
    Step("drain_source_writers", None),
    Step("wait_for_catch_up", None),
    Step("sync_sequences", None),
    Step("disable_forward_subscription", "enable_forward_subscription"),
    Step("create_reverse_slot", "drop_reverse_slot"),
    Step("create_reverse_subscription", "drop_reverse_subscription"),
    Step("unfreeze_target", "freeze_target"),
    Step("repoint_pgbouncer", "repoint_pgbouncer_to_source"),
    Step("switch_haproxy", "switch_haproxy_to_source"),
    Step("resume_pgbouncer", None),  # the point of no return: clients reach the target
)
STEPS = tuple(step.name for step in PAUSE_STEPS)
# A run moves writes one way, never both: it repoints the pools, or (`haproxy`) switches HAProxy.
POOLER_STEPS = tuple(name for name in STEPS if name != "switch_haproxy")
HAPROXY_STEPS = tuple(name for name in STEPS if name != "repoint_pgbouncer")
ALL_STEPS = (PREPARE_STEP, *PAUSE_STEPS)
POLL_INTERVAL = 0.002  # the catch-up wait polls the source's slot this often (seconds)
UNDO_STATEMENT_TIMEOUT_MS = 15000
CLEANUP_TIMEOUT = 15.0
HAPROXY_UNDO_TIMEOUT = 5.0  # seconds an undo (or a finish) waits for HAProxy to show the write server it set
GUARDIAN_CONNECT_TIMEOUT = 5


class DeadlineExceeded(PgError):
    pass


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


class Pooler:
    """One PgBouncer in front of the databases: its admin console, the pool, its pgbouncer.ini,
    where the pool pointed before the switchover and where it points after."""

    def __init__(self, index: int, params: dict, console: pgbouncer.AdminConsole | None, error: str | None = None):
        self.index = index
        self.params = params
        self.console = console
        self.error = error  # why the console could not be opened (the guardian carries on without it)
        self.pool = pgbouncer.check_name(params["database"])
        self.config_file = params["config_file"]
        self.spare: pgbouncer.AdminConsole | None = None  # the undo's connection, opened before the pause
        self.before: dict | None = None  # {"host", "port", "dbname"}
        self.after: dict | None = None

    @property
    def label(self) -> str:
        where = self.console.endpoint if self.console else f"{self.params.get('login_host')}:{self.params.get('login_port')}"
        return f"pgbouncers[{self.index}] ({where})"

    def require_console(self) -> pgbouncer.AdminConsole:
        if self.console is None:
            raise PgError(f"cannot reach {self.label}: {self.error}")
        return self.console

    def undo_console(self) -> pgbouncer.AdminConsole:
        return self.spare or self.require_console()

    def endpoint(self) -> dict:
        row = self.require_console().require_database(self.pool)
        return {"host": row["host"], "port": int(row["port"]), "dbname": row["database"], "paused": bool(row["paused"])}

    def public(self) -> dict:
        """What the journal keeps of this pooler (no password)."""
        keep = ("login_host", "login_port", "login_unix_socket", "database", "config_file", "target_host", "target_port", "target_dbname")
        return {key: self.params.get(key) for key in keep}


def each_pooler(poolers: list[Pooler], action, what: str) -> dict:
    """Run action(pooler) for every pooler at once; after all finished, raise one PgError naming
    each pooler that failed. Returns {pooler index: result}."""
    if len(poolers) == 1:
        outcomes = {0: _outcome(action, poolers[0])}
    else:
        with ThreadPoolExecutor(max_workers=len(poolers)) as pool:
            futures = {pooler.index: pool.submit(_outcome, action, pooler) for pooler in poolers}
        outcomes = {index: future.result() for index, future in futures.items()}
    failed = [f"{pooler.label}: {outcomes[pooler.index][1]}" for pooler in poolers if outcomes[pooler.index][1] is not None]
    if failed:
        raise PgError(f"{what} failed on {len(failed)} of {len(poolers)} PgBouncer(s): " + "; ".join(failed))
    return {index: outcome[0] for index, outcome in outcomes.items()}


def _outcome(action, pooler: Pooler) -> tuple[object, str | None]:
    try:
        return action(pooler), None
    except PgError as exc:
        return None, str(exc)
    except Exception as exc:  # a dead connection raises psycopg's own errors
        return None, repr(exc)


class Switchover:
    """One switchover. `source` and `target` are Clients (check mode on both alike), `poolers`
    the PgBouncers; `params` the module's options; `journal` the pool's journal (None in check mode)."""

    def __init__(self, source: Client, target: Client, poolers: list[Pooler], params: dict, journal: Journal | None = None, log=None):
        self.source, self.target, self.poolers = source, target, poolers
        self.params = params
        self.journal = journal
        self.check_mode = bool(getattr(source, "check_mode", False))
        self.log = log or (lambda message: None)
        self.forward = Subscription(target, params["subscription"])
        self.reverse_name = validate_slot_name(params["reverse_subscription"])
        self.reverse = Subscription(source, self.reverse_name)
        self.reverse_slot = ReplicationSlot(target, self.reverse_name, force=True)
        self.steps: list[dict] = []
        self.done: list[str] = []  # steps begun (recorded in the journal before they run)
        self.undone: list[dict] = []
        self.warnings: list[str] = []
        self.deadline = Deadline(math.inf)
        self.failed_step: str | None = None
        self.facts = Facts()
        self.guardian: pg_guardian.Guardian | None = None
        self.proxies: list[Proxy] = []  # with `haproxy`: its write backends (locate_proxies)
        self.haproxy_commands: list[str] = []  # the runtime API commands sent, for the result's queries
        self.haproxy_before: dict = {}  # {HAProxy: the server it sent writes to before the run}

    # --- the journal -----------------------------------------------------------------------------
    def record(self, durable: bool = False, **changes) -> None:
        if self.journal is not None:
            self.journal.update(durable=durable, **changes)

    def begin(self, step: str) -> None:
        """Write-ahead: the step is in the journal before it changes anything."""
        self.done.append(step)
        self.record(done=list(self.done))

    def load(self, record: dict) -> None:
        """Take the facts a run recorded (to undo or finish it)."""
        saved = record.get("facts") or {}
        self.facts = Facts.from_journal(saved)
        for pooler, kept in zip(self.poolers, saved.get("poolers") or [], strict=False):
            pooler.before, pooler.after = kept.get("before"), kept.get("after")
        # the run's own HAProxies, whatever this run's options say: they are what its undo must put back
        self.proxies = [Proxy(**kept) for kept in saved.get("haproxy") or []]

    def saved_facts(self) -> dict:
        facts = self.facts.journaled()
        facts["poolers"] = [dict(pooler.public(), before=pooler.before, after=pooler.after) for pooler in self.poolers]
        facts["haproxy"] = [dict(proxy.journaled(), timeout=proxy.timeout) for proxy in self.proxies]
        return facts

    # --- where things stand ----------------------------------------------------------------------
    def target_endpoint(self, pooler: Pooler) -> dict:
        """Where a pool must point once writes go to the target."""
        bouncer, target = pooler.params, self.params["target"]
        return {
            "host": bouncer.get("target_host") or target["login_host"],
            "port": int(bouncer.get("target_port") or target["login_port"]),
            "dbname": bouncer.get("target_dbname") or target["login_db"],
        }

    def writes_go(self) -> str:
        """Who sends the application's writes, for the errors."""
        return "HAProxy sends writes" if self.proxies else f"PgBouncer sends pool '{self.poolers[0].pool}'"

    def serving(self, switched: bool) -> dict:
        """Where writes go: the pool's endpoint, or with `haproxy` the side HAProxy sends them to."""
        if not self.proxies:
            return self.target_endpoint(self.poolers[0]) if switched else self.facts.pool_before
        side = self.params["target" if switched else "source"]
        return {"host": side["login_host"], "port": int(side["login_port"]), "dbname": side["login_db"]}

    def status(self) -> str:
        """`switched` when every pool points at the target (with `haproxy`: every HAProxy sends writes
        to it) and the reverse subscription exists; `pending` when none does and the forward
        subscription is enabled."""
        on_target = self.haproxy_on_target() if self.proxies else self.pools_on_target()
        forward = self.forward.row()
        reverse = self.reverse.exists()
        if all(on_target) and reverse:
            return "switched"
        if all(on_target):
            raise PgError(
                f"{self.writes_go()} to the target {self.target.endpoint} already, but the source "
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
                f"the source {self.source.endpoint} already has a subscription '{self.reverse_name}' while {self.writes_go()} "
                f"to {describe(self.serving(False))}: a leftover of an earlier "
                f"switchover? If no client wrote to the target since, drop it on the source (ALTER SUBSCRIPTION "
                f"{self.reverse_name} DISABLE; ALTER SUBSCRIPTION {self.reverse_name} SET (slot_name = NONE); DROP SUBSCRIPTION "
                f"{self.reverse_name}) and its slot on the target (SELECT pg_drop_replication_slot('{self.reverse_name}')), or "
                f"choose another reverse_subscription"
            )
        return "pending"

    def pools_on_target(self) -> list[bool]:
        """For each pool, whether it points at the target (they must agree)."""
        on_target = []
        for pooler in self.poolers:
            live = pooler.endpoint()
            pooler.before = {key: live[key] for key in ("host", "port", "dbname")}
            pooler.after = self.target_endpoint(pooler)
            on_target.append(pooler.before == pooler.after)
        self.facts.pool_before = self.poolers[0].before
        if any(on_target) and not all(on_target):
            shown = "; ".join(f"{pooler.label} sends '{pooler.pool}' to {describe(pooler.before)}" for pooler in self.poolers)
            raise PgError(
                f"the PgBouncers disagree: {shown}. A switchover was left half done without a journal. Point every pool "
                f"at the side that holds the latest writes (zerodowntime.migration.pgbouncer_pool), then run again"
            )
        return on_target

    def haproxy_on_target(self) -> list[bool]:
        """For each HAProxy, whether it sends writes to the target (they must agree). The pools stay
        where they are: they must point at HAProxy, not at either side itself."""
        sides = {host_port(client): client for client in (self.source, self.target)}
        for pooler in self.poolers:
            live = pooler.endpoint()
            pooler.before = pooler.after = {key: live[key] for key in ("host", "port", "dbname")}
            direct = sides.get((live["host"], live["port"]))
            if direct is not None:
                raise PgError(
                    f"{pooler.label} sends pool '{pooler.pool}' to {describe(live)}, {direct.endpoint} itself, not through HAProxy: "
                    f"with haproxy, every pool must point at HAProxy's write frontend (pgbouncer_databases: the host and "
                    f"port of haproxy_pg_write_bind). Point it there, or leave haproxy out to repoint the pools; nothing was changed"
                )
        self.facts.pool_before = self.poolers[0].before
        self.haproxy_before = {proxy.describe(): proxy.write_server() for proxy in self.proxies}
        nowhere = [name for name, server in self.haproxy_before.items() if server is None]
        if nowhere:
            raise PgError(
                f"HAProxy {', '.join(nowhere)} sends new connections neither to the source's server nor to the target's "
                f"(both in maintenance, drained or down): make the side that holds the latest writes its write server "
                f"(roles/haproxy tasks_from: set_primary), then run again; nothing was changed"
            )
        on_target = [self.haproxy_before[proxy.describe()] == proxy.target_server for proxy in self.proxies]
        if any(on_target) and not all(on_target):
            shown = "; ".join(f"{name} sends writes to {server}" for name, server in self.haproxy_before.items())
            raise PgError(
                f"the HAProxies disagree: {shown}. A switchover was left half done without a journal. Make the side that "
                f"holds the latest writes the write server of every one (roles/haproxy tasks_from: set_primary), then run again"
            )
        return on_target

    def check_ready(self) -> None:
        """Everything the pause relies on, read before pausing: fail here, not in the pause."""
        for client, side in ((self.source, "source"), (self.target, "target")):
            pg_readonly.check_privileges(client, "instance", None, self.params["terminate_writers"])
            setattr(self.facts, f"{side}_readonly", pg_readonly.read_state(client, "instance"))
        if self.facts.source_readonly["readonly"]:
            raise PgError(
                f"the source {self.source.endpoint} is read-only (default_transaction_read_only = "
                f"{self.facts.source_readonly['value']} in postgresql.auto.conf) while PgBouncer sends the application to "
                f"it, and no journal says a switchover froze it: clients get errors. If nothing else needs it frozen, "
                f"run ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf(); on the source "
                f"(zerodowntime.migration.pg_readonly readonly: false), then run again"
            )
        for pooler in self.poolers:
            if pooler.endpoint()["paused"]:
                raise PgError(
                    f"pool '{pooler.pool}' on {pooler.label} is paused, and no journal says a switchover paused it: "
                    f"its clients wait. If nothing else holds it, send RESUME {pooler.pool} on that admin console "
                    f"(zerodowntime.migration.pgbouncer_pool state: resumed), then run again"
                )
        forward = self.forward.attrs()
        self.facts.forward = forward
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
        self.facts.tables = subscribed_tables(self.target, self.forward.name)
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
        # sync_sequences (inside the pause) moves every sequence of the source: one the target lacks
        # (created after the target's schema) would fail there and undo the switchover. Refuse it now.
        missing = [qualified(row["schema"], row["name"]) for row in missing_sequences(self.source, self.target)]
        if missing:
            raise PgError(
                f"{len(missing)} sequence(s) of the source are missing on the target {self.target.endpoint}: {', '.join(missing)}: "
                f"the switchover's sequence sync would stop on them inside the pause. Create them on the target "
                f"(pg_schema_drift names each with its CREATE SEQUENCE), then retry; nothing was changed"
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
            {"name": self.params["reverse_publication"], "tables": self.facts.tables, "publish_via_partition_root": True},
        )
        if publication["changed"]:
            self.log(f"reverse publication {self.params['reverse_publication']} on the target: {publication['diff']['after']}")
        if DDL_LOG in self.facts.tables:  # inert until the reverse subscription brings the target's DDL
            self.ensure_reverse_ddl("subscriber")
        if self.facts.forward["synchronous_commit"] != "on":
            self.begin(PREPARE_STEP.name)
            self.forward.update(self.facts.forward, {"synchronous_commit": "on"})
        if not self.check_mode:
            if DDL_LOG in self.facts.tables and self.facts.target_readonly["readonly"]:
                # the way back after a deploy on the new primary: its DDL waits for us on the frozen old one
                deadline = Deadline(self.params["prepare_timeout"])
                self.facts.ddl_released = release_frozen_ddl(self.target, self.source, self.forward.name, deadline, self.log)
            self.wait_for_lag(self.params["prepare_timeout"])

    def lag(self, position: str) -> dict | None:
        return self.source.query_one(
            "SELECT active, confirmed_flush_lsn >= %s::pg_lsn AS confirmed_position, "
            "pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes "
            "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
            (position, self.facts.forward["slot_name"]),
        )

    def wait_for_lag(self, timeout: float) -> None:
        """Until the forward slot has confirmed the source's WAL position taken now and is at most
        max_lag_bytes behind. "Active" alone is not enough: an apply worker that fails on a row
        reconnects every few seconds and is briefly active each time, but it never confirms past
        the failing transaction."""
        limit = self.params["max_lag_bytes"]
        position = self.source.query_one("SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn")["lsn"]

        def too_far_behind(row):
            if not row:
                state = "its slot is gone"
            elif not row["confirmed_position"]:
                state = f"it has not confirmed the source's position {position} ({row['lag_bytes']} bytes behind)"
            elif not row["active"]:
                state = "no walsender streams it"
            else:
                state = f"it is {row['lag_bytes']} bytes behind"
            raise PgError(
                f"the forward subscription '{self.forward.name}' did not get within max_lag_bytes {limit} of the source "
                f"in {timeout:g} s (prepare_timeout): {state}; {self.forward.error_counts()}. Nothing was paused. "
                f"Reduce the write load, look for apply errors in the target's log (a duplicate key, a missing column), "
                f"or raise max_lag_bytes / prepare_timeout"
            )

        watch = ApplyWatch(self.target, [self.forward.name])  # a failing apply worker: fail now, not at the timeout

        def probe():
            try:
                watch.check()
            except PgError as exc:
                raise PgError(f"{exc}. Nothing was paused", **exc.details) from None
            return self.lag(position)

        row = poll(
            probe,
            Deadline(timeout),
            too_far_behind,
            ready=lambda row: bool(row and row["active"] and row["confirmed_position"] and row["lag_bytes"] <= limit),
            report=lambda row, elapsed: self.log(
                f"waiting for the forward lag to drop: {row['lag_bytes'] if row else '?'} bytes after {elapsed:.0f} s"
            ),
        )
        self.facts.lag_before_pause = int(row["lag_bytes"])

    # --- the pause -----------------------------------------------------------------------------
    def remaining(self, step: str) -> float:
        left = self.deadline.remaining()
        if left <= 0:
            raise DeadlineExceeded(f"the write pause reached its deadline (timeout {self.params['timeout']:g} s) before {step} finished")
        return left

    @contextlib.contextmanager
    def step(self, name: str):
        """Time one step; the deadline is checked before and after it (not after the last one:
        once clients write to the target, nothing is undone)."""
        self.remaining(name)
        hold(f"before {name}")  # tests: a module stalled between the deadline's check and the step
        started = time.monotonic()
        entry = {"step": name, "ms": None, "ok": False}
        self.steps.append(entry)
        try:
            yield entry
        finally:
            entry["ms"] = round((time.monotonic() - started) * 1000, 2)
        entry["ok"] = True
        hold(name)
        if name != STEPS[-1]:
            self.remaining(name)
        self.failed_step = None

    def switch(self) -> None:
        """The critical section. Raises after undoing when a step fails or the deadline passes."""
        timeout = self.params["timeout"]
        for pooler in self.poolers:  # opened now: the undo must not wait for a connect
            pooler.spare = pooler.console.sibling()
        for client in (self.source, self.target):
            statement_timeout(client, max(1, timeout * 1000))
        self.deadline = Deadline(timeout)
        self.record(state="pausing", deadline_at=time.time() + timeout)
        pause_started = time.monotonic()
        self.facts.write_pause_started_at = round(time.time(), 3)
        try:
            self.run_steps()
        except BaseException as error:
            self.facts.write_pause_ms = round((time.monotonic() - pause_started) * 1000, 1)
            self.undo_after(error)
            raise
        finally:
            for pooler in self.poolers:
                pooler.spare.close()
        self.facts.write_pause_ms = round((time.monotonic() - pause_started) * 1000, 1)

    def planned_steps(self) -> list[Step]:
        """The pause's steps for this run (the target's freeze is undone only if it had one);
        check mode reports this same list."""
        skipped = {"repoint_pgbouncer"} if self.proxies else {"switch_haproxy"}
        if not self.facts.target_readonly["readonly"]:
            skipped.add("unfreeze_target")
        return [step for step in PAUSE_STEPS if step.name not in skipped]

    def run_steps(self) -> None:
        for step in self.planned_steps():
            self.failed_step = step.name  # from its journal record on: switch() undoes a failure here
            if step.name == STEPS[-1]:
                self.commit_point()
            else:
                self.begin(step.name)
            with self.step(step.name) as entry:
                getattr(self, step.name)(entry)
        self.record(state="committed", durable=True, committed_at=time.time())

    def commit_point(self) -> None:
        """From here on clients may write to the target: a dead run is finished, not undone."""
        if self.journal is None:
            return
        claimed, record = self.journal.transition(("pausing",), durable=True, state="committing")
        if not claimed:
            raise TakenOver(f"the guardian took the switchover over ({record.get('reason') or record.get('state')}) before it committed")

    def pause_pgbouncer(self, entry: dict) -> None:
        timeout = self.remaining("pause_pgbouncer")
        paused = each_pooler(self.poolers, lambda pooler: pgbouncer.pause(pooler.console, pooler.pool, timeout), "PAUSE")
        entry["pause_ms"] = [paused[pooler.index]["pause_ms"] for pooler in self.poolers]

    def freeze_source(self, entry: dict) -> None:
        self.facts.frozen_at = pg_readonly.server_now(self.source)
        pg_readonly.freeze(self.source, "instance")

    def drain_source_writers(self, entry: dict) -> None:
        """Sessions that began a read-write transaction before the freeze can still commit:
        wait for them (bounded), terminate them when allowed, else abort."""
        since = self.facts.frozen_at
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
        slot = self.facts.forward["slot_name"]

        def not_caught_up(row):
            state = "it is still applying"
            if row and not row["active"]:
                state = "its walsender is not running (is the target's apply worker up?)"
            raise DeadlineExceeded(
                f"the target did not catch up with the source's WAL position {position} before the deadline "
                f"(timeout {self.params['timeout']:g} s): slot '{slot}' is {row['behind'] if row else '?'} bytes behind and {state}. "
                f"Check the forward lag (max_lag_bytes) and the target's log for apply errors",
                lag_bytes=row["behind"] if row else None,
            )

        poll(
            lambda: self.source.query_one(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn AS caught_up, active, "
                "pg_catalog.pg_wal_lsn_diff(%s::pg_lsn, confirmed_flush_lsn)::bigint AS behind "
                "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                (position, position, slot),
            ),
            self.deadline,
            not_caught_up,
            ready=lambda row: bool(row and row["caught_up"]),
            interval=POLL_INTERVAL,
        )

    def sync_sequences(self, entry: dict) -> None:
        synced = sync_sequences(self.source, self.target, self.params["sequence_margin"])
        entry["sequences_changed"] = sum(1 for sequence in synced["sequences"] if sequence["changed"])
        self.facts.sequences = synced["sequences"]

    def disable_forward_subscription(self, entry: dict) -> None:
        self.forward.update({"enabled": True}, {"enabled": False})

    def create_reverse_slot(self, entry: dict) -> None:
        self.reverse_slot.create({"slot_type": "logical", "plugin": "pgoutput"})

    def create_reverse_subscription(self, entry: dict) -> None:
        self.reverse.create(
            {
                "conninfo": build_conninfo(self.params["reverse_publisher"]),
                "publications": [self.params["reverse_publication"]],
                "create_slot": False,
                "slot_name": self.reverse_name,
                "copy_data": False,
                "synchronous_commit": "on",
            }
        )

    def unfreeze_target(self, entry: dict) -> None:
        pg_readonly.unfreeze(self.target, "instance")

    def repoint_pgbouncer(self, entry: dict) -> None:
        def repoint(pooler: Pooler):
            wanted = pooler.after
            return pgbouncer.repoint(pooler.console, pooler.pool, pooler.config_file, wanted["host"], wanted["port"], wanted["dbname"])

        each_pooler(self.poolers, repoint, "repointing the pool")

    def switch_haproxy(self, entry: dict) -> None:
        self.send_writes(True, self.deadline)
        entry["commands"] = len(self.haproxy_commands)

    def send_writes(self, to_target: bool, deadline: Deadline) -> None:
        """Every HAProxy's write backend to the target (or back to the source), each confirmed; every
        one is tried, then one PgError names those that failed."""
        failed = []
        for proxy in self.proxies:
            try:
                proxy.send_writes(to_target, self.haproxy_commands, deadline)
            except HAProxyError as exc:
                failed.append(str(exc))
        if failed:
            raise PgError(f"switching HAProxy's write server failed on {len(failed)} of {len(self.proxies)}: " + "; ".join(failed))

    def resume_pgbouncer(self, entry: dict) -> None:
        """Every pool resumes on the target. One that fails is not undone (the others' clients
        may already write to the target): it is named, and resumes pointing at the target."""
        try:
            each_pooler(self.poolers, lambda pooler: pgbouncer.resume(pooler.console, pooler.pool), "RESUME")
        except PgError as exc:
            self.warnings.append(f"{exc}. Its pool already points at the target: RESUME it there (pgbouncer_pool state: resumed)")

    # --- undo ----------------------------------------------------------------------------------
    def resume_pgbouncer_on_source(self) -> None:  # the undo of pause_pgbouncer
        each_pooler(self.poolers, lambda pooler: pgbouncer.resume(pooler.undo_console(), pooler.pool), "RESUME")

    def unfreeze_source(self) -> None:
        pg_readonly.unfreeze(self.source, "instance", previous=self.facts.source_readonly["value"])

    def enable_forward_subscription(self) -> None:
        row = self.forward.row()
        if row is not None and not row["subenabled"]:
            self.forward.update({"enabled": False}, {"enabled": True})

    def drop_reverse_subscription(self) -> None:
        if self.reverse.exists():
            self.reverse.drop_slot = False  # the slot lives on the target: dropped by drop_reverse_slot
            self.reverse.drop(self.reverse.attrs())

    def drop_reverse_slot(self) -> None:
        current = self.reverse_slot.attrs()
        if current is not None:
            self.reverse_slot.drop(current)

    def freeze_target(self) -> None:
        if self.facts.target_readonly["readonly"]:
            pg_readonly.unfreeze(self.target, "instance", previous=self.facts.target_readonly["value"])

    def repoint_pgbouncer_to_source(self) -> None:
        if self.proxies:  # the pools point at HAProxy and were never repointed (an undo of every step comes here)
            return

        def repoint(pooler: Pooler):
            before = pooler.before
            return pgbouncer.repoint(
                pooler.undo_console(), pooler.pool, pooler.config_file, before["host"], before["port"], before["dbname"]
            )

        each_pooler(self.poolers, repoint, "repointing the pool back")

    def switch_haproxy_to_source(self) -> None:
        self.send_writes(False, Deadline(HAPROXY_UNDO_TIMEOUT))

    def restore_forward_synchronous_commit(self) -> None:
        row = self.forward.row()
        if row is not None and row["subsynccommit"] != self.facts.forward["synchronous_commit"]:
            self.forward.update(self.forward.attrs(), {"synchronous_commit": self.facts.forward["synchronous_commit"]})

    def undo(self, begun) -> None:
        """Undo every step begun, newest first; each undo is tried even if an earlier one failed.
        The pools resume last, on the source, once the source takes writes again."""
        for client in (self.source, self.target):
            with contextlib.suppress(Exception):
                statement_timeout(client, UNDO_STATEMENT_TIMEOUT_MS)
                pg_readonly.keep_session_writable(client)  # a frozen side must take the undo's DDL
        for step in reversed(ALL_STEPS):
            if step.undo is None or step.name not in begun:
                continue
            name = "resume_pgbouncer" if step.name == "pause_pgbouncer" else step.undo
            method = self.resume_pgbouncer_on_source if step.name == "pause_pgbouncer" else getattr(self, step.undo)
            started = time.monotonic()
            try:
                method()
                outcome = {"step": name, "ok": True}
            except Exception as exc:  # every undo is tried; each failure is reported
                outcome = {"step": name, "ok": False, "error": str(exc)}
                self.warnings.append(f"undo step {name} failed: {exc}")
            outcome["ms"] = round((time.monotonic() - started) * 1000, 2)
            self.undone.append(outcome)

    def undo_after(self, error: BaseException) -> None:
        """The module's own undo, unless the guardian has taken the run over."""
        taken_over = isinstance(error, TakenOver)
        if not taken_over and self.journal is not None:
            taken_over = not self.journal.transition(("preparing", "pausing"), state="undoing", undo_by="module", reason=str(error))[0]
        if taken_over:
            self.undo_late_steps(self.wait_for_guardian())
            return
        self.undo(self.done)
        self.record(durable=True, state="undone", undone=self.undone, undone_at=time.time())

    def wait_for_guardian(self) -> dict:
        """The guardian undoes (or finishes) the run: wait for it, bounded, and report what it did."""
        record = poll(lambda: self.journal.read() or {}, Deadline(pg_guardian.UNDO_BUDGET), None, ready=lambda record: not pending(record))
        self.undone = record.get("undone") or []
        self.warnings.append(f"the guardian took over: {record.get('reason')}; journal state {record.get('state')}")
        return record

    def undo_late_steps(self, record: dict) -> None:
        """A module stalled (stopped, swapped out) after its deadline check may have run its step
        after the guardian's undo: it would leave the source frozen or the pools paused for good.
        Once the guardian has undone this run, the module undoes what it began once more; every
        undo is harmless when not needed. One that fails leaves the run pending: the next run repairs it."""
        if record.get("state") != "undone" or record.get("undo_by") != "guardian" or record.get("pid") != os.getpid():
            return
        by_guardian = len(self.undone)
        self.undo(self.done)
        late = self.undone[by_guardian:]
        failed = [entry["step"] for entry in late if not entry["ok"]]
        self.record(durable=True, undone_late_by_module=late, **({"state": "undoing"} if failed else {}))
        self.warnings.append(
            f"the module had run a step the guardian's undo had not seen; it undid again: {', '.join(entry['step'] for entry in late)}"
            + (f" ({', '.join(failed)} failed: the next run repairs it)" if failed else "")
        )

    # --- after the pause -------------------------------------------------------------------------
    def drop_forward_subscription(self) -> bool:
        """Drop the disabled forward subscription and its slot on the source (an inactive slot
        retains WAL); its walsender may need a moment to exit. Returns whether it was dropped."""
        if not self.params["drop_forward_subscription"] or not self.forward.exists():
            return False
        self.forward.drop_slot = True

        def drop() -> PgError | None:
            try:
                self.forward.drop(self.forward.attrs())
            except PgError as exc:
                return exc
            return None

        error = poll(drop, Deadline(CLEANUP_TIMEOUT), None, ready=lambda exc: exc is None or "is active" not in str(exc), interval=0.1)
        if error is None:
            return True
        self.warnings.append(
            f"the forward subscription '{self.forward.name}' is disabled but could not be dropped ({error}): drop it "
            f"and its slot on the source, or the slot retains WAL"
        )
        return False

    def cleanup(self) -> None:
        """After the pause: drop the forward subscription, watch the reverse one start; problems
        here are warnings: writes already go to the target."""
        for client in (self.source, self.target):
            statement_timeout(client, UNDO_STATEMENT_TIMEOUT_MS)
        self.drop_forward_subscription()
        if self.check_mode:
            return

        def streaming() -> bool:
            row = self.source.query_one(
                "SELECT pid, received_lsn::text AS received_lsn FROM pg_catalog.pg_stat_subscription WHERE subname = %s AND relid IS NULL",
                (self.reverse_name,),
            )
            return bool(row and row["pid"] and row["received_lsn"])

        self.facts.reverse_streaming = poll(streaming, Deadline(CLEANUP_TIMEOUT), None)
        if DDL_LOG in self.facts.tables:
            try:
                self.ensure_reverse_ddl("publisher")
            except PgError as exc:
                self.warnings.append(str(exc))
        if self.facts.reverse_streaming:
            return
        self.warnings.append(
            f"the reverse subscription '{self.reverse_name}' on the source has not started streaming within {CLEANUP_TIMEOUT:g} s: "
            f"writes on the target are kept in slot '{self.reverse_name}' there; check the source's log"
        )

    def ensure_reverse_ddl(self, side: str) -> None:
        """DDL replicated with the data (pg_ddl_capture) also goes back: a deploy on the target after the
        switch reaches the source through the reverse replication, so a rollback survives it. The apply
        trigger on the source before the pause; the capture on the target after it, once the sequence
        sync has moved the target's log ids past the source's (the capture checks that too)."""
        if side == "subscriber":
            capture = DdlCapture(self.source, "subscriber")
        else:
            publication, user = self.params["reverse_publication"], self.params["reverse_publisher"]["user"]
            capture = DdlCapture(self.target, "publisher", publication=publication, replication_user=user)
        try:
            result = capture.ensure_side("present")
        except PgError as exc:
            raise PgError(
                f"DDL made on the target after the switch would not reach the source: pg_ddl_capture side {side} failed on "
                f"{capture.client.endpoint} ({exc}); run pg_ddl_capture with side: {side} there before any deploy"
            ) from None
        if result["changed"]:
            self.log(f"reverse DDL ({side}) on {capture.client.endpoint}: {result['diff']['after']}")

    # --- a run that ended without committing or undoing ------------------------------------------------
    def finish_commit(self) -> None:
        """A run that reached `committing`: writes to the target (every HAProxy, or every pool), every pool resumed."""
        if self.proxies:
            self.send_writes(True, Deadline(HAPROXY_UNDO_TIMEOUT))

        def finish(pooler: Pooler):
            wanted = pooler.after
            if not self.proxies:
                pgbouncer.repoint(pooler.undo_console(), pooler.pool, pooler.config_file, wanted["host"], wanted["port"], wanted["dbname"])
            return pgbouncer.resume(pooler.undo_console(), pooler.pool)

        each_pooler(self.poolers, finish, "finishing the switchover")

    def recover(self, record: dict, by: str, reason: str, every_step: bool) -> dict:
        """Finish (state committing) or undo (any other) the run `record` describes. `every_step`
        undoes every step, not only those recorded: the next run cannot trust that a journal
        not flushed before a crash lists them all, and every undo is harmless when not needed."""
        self.load(record)
        if record.get("state") == "committing":
            self.finish_commit()
            self.record(durable=True, state="committed", finished_by=by, reason=reason, committed_at=time.time())
            return {"action": "finished", "by": by, "reason": reason, "run_id": record.get("run_id"), **self.haproxy_told()}
        begun = [step.name for step in ALL_STEPS] if every_step else record.get("done") or []
        self.undo(begun)
        failed = [entry for entry in self.undone if not entry["ok"]]
        self.record(
            durable=True,
            state="undone" if not failed else "undoing",
            undo_by=by,
            reason=reason,
            undone=self.undone,
            undone_at=time.time(),
        )
        outcome = {"action": "undone", "by": by, "reason": reason, "run_id": record.get("run_id"), "undone": self.undone}
        return {**outcome, **self.haproxy_told()}

    def haproxy_told(self) -> dict:
        return {"haproxy_commands": self.haproxy_commands} if self.haproxy_commands else {}


class TakenOver(PgError):
    """The guardian took the run over before the module reached the commit point."""


def describe(endpoint: dict | None) -> str:
    if not endpoint:
        return "?"
    return f"{endpoint['host']}:{endpoint['port']}/{endpoint['dbname']}"


def journal_params(params: dict) -> dict:
    """What the journal keeps of the module's options: the names, no connection secret."""
    keep = ("subscription", "reverse_subscription", "reverse_publication", "timeout", "drop_forward_subscription", "terminate_writers")
    return {key: params[key] for key in keep}


def for_record(source: Client, target: Client, poolers: list[Pooler], record: dict, params: dict, journal: Journal) -> Switchover:
    """A Switchover that can undo or finish the run `record` describes, with these connections:
    `source` and `target` are matched to that run's by endpoint (a rollback repairs the cutover's
    leftovers, and the other way round)."""
    sides = {source.endpoint: source, target.endpoint: target}
    if set(sides) != {record.get("source"), record.get("target")}:
        raise PgError(
            f"the switchover journal {journal.path} describes a run between {record.get('source')} and {record.get('target')} "
            f"that neither committed nor was undone (state {record.get('state')}), not one between {source.endpoint} and "
            f"{target.endpoint}. Run pg_switchover with that run's source and target to repair it, or, after checking "
            f"both sides by hand, move the journal aside"
        )
    saved = [pooler.get("config_file") for pooler in (record.get("facts") or {}).get("poolers") or []]
    if saved != [pooler.config_file for pooler in poolers]:
        raise PgError(
            f"the switchover journal {journal.path} lists the PgBouncers {saved}, not {[pooler.config_file for pooler in poolers]}: "
            f"repair with the same pgbouncers list as the run that left it"
        )
    return Switchover(sides[record["source"]], sides[record["target"]], poolers, dict(params, **record["params"]), journal)


def repair(source: Client, target: Client, poolers: list[Pooler], params: dict, journal: Journal) -> dict | None:
    """The next run's first act: finish or undo a run left pending in the journal."""
    record = journal.read()
    if not pending(record):
        return None
    run = for_record(source, target, poolers, record, params, journal)
    if source.check_mode:
        action = "finish" if record.get("state") == "committing" else "undo"
        return {"action": f"would {action}", "run_id": record.get("run_id"), "state": record.get("state")}
    return run.recover(
        record, "next run", f"left {record.get('state')} by run {record.get('run_id')} (module pid {record.get('pid')})", True
    )


def take_over(journal: Journal, params: dict, run_id: str, reason: str) -> dict | None:
    """What the guardian does: with its own connections, finish or undo the run, unless it
    ended meanwhile or the module is undoing it."""
    with journal.exclusive():
        record = journal.read() or {}
        if record.get("run_id") != run_id or not pending(record):
            return None
        if record.get("state") != "committing":
            record.update(state="undoing", undo_by="guardian", reason=reason)
            journal.write(record)
    opened = open_connections(params)
    try:
        poolers = opened["poolers"]
        run = Switchover(opened["source"], opened["target"], poolers, dict(params, **record["params"]), journal)
        return run.recover(record, "guardian", reason, False)
    finally:
        for connection in [opened["source"], opened["target"], *(pooler.console for pooler in opened["poolers"])]:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()


def open_connections(params: dict) -> dict:
    """The guardian's own connections (short connect timeouts: it acts inside a pause)."""
    quick = {"connect_timeout": GUARDIAN_CONNECT_TIMEOUT}
    poolers = []
    for index, options in enumerate(params["pgbouncers"]):
        try:
            console = pgbouncer.AdminConsole(dict(options, **quick))
            poolers.append(Pooler(index, options, console))
        except PgError as exc:
            poolers.append(Pooler(index, options, None, str(exc)))
    opened = {"poolers": poolers}
    for side in ("source", "target"):
        try:
            opened[side] = Client(dict(params[side], **quick))
        except PgError:  # its undo steps fail and say so; the pools still resume
            opened[side] = None
    return opened


def view(status: str, pool: dict, forward: str, reverse: str, haproxy: dict | None = None) -> dict:
    shown = {"status": status, "pgbouncer_pool": pool, "forward_subscription": forward, "reverse_subscription": reverse}
    if haproxy:
        shown["haproxy_write_server"] = haproxy
    return shown


def host_port(client: Client) -> tuple[str, int]:
    """The host and port a client connects to, as HAProxy's servers and PgBouncer's pools name them."""
    return client.params.get("login_host"), int(client.params.get("login_port") or 5432)


def locate_proxies(params: dict, source: Client, target: Client) -> list[Proxy]:
    """The HAProxies of `haproxy`, each with the source's and the target's server in its backend."""
    try:
        return locate(params.get("haproxy") or [], host_port(source), host_port(target), "haproxy_pg_servers")
    except HAProxyError as exc:
        raise PgError(f"{exc}; nothing was changed") from None


def previous_run(record: dict | None) -> dict | None:
    """What the journal says of the last run, for the result."""
    if not record:
        return None
    keep = ("run_id", "state", "pid", "source", "target", "undo_by", "finished_by", "reason", "undone", "done")
    return {key: record.get(key) for key in keep if record.get(key) is not None}


def switchover(source: Client, target: Client, consoles: list, params: dict, log=None) -> dict:
    """What the pg_switchover module does. `consoles` are the admin consoles of params['pgbouncers']."""
    if not 0 < params["timeout"] <= 60:
        raise PgError(f"timeout must be more than 0 and at most 60 seconds (it bounds the write pause), not {params['timeout']}")
    if not 0 <= params["guardian_margin"] <= 30:
        raise PgError(f"guardian_margin must be between 0 and 30 seconds, not {params['guardian_margin']}")
    poolers = [Pooler(index, options, console) for index, (options, console) in enumerate(zip(params["pgbouncers"], consoles, strict=True))]
    for client in (source, target):
        client.require_logical_wal()
        statement_timeout(client, params["prepare_timeout"] * 1000)  # no statement before the pause waits longer
    journal = Journal(params["journal_dir"], poolers[0].pool)
    try:
        if not source.check_mode:
            journal.acquire()
        try:
            return run_switchover(source, target, poolers, params, journal, log)
        finally:
            journal.release()
    except JournalError as exc:
        raise PgError(str(exc)) from None


def run_switchover(source: Client, target: Client, poolers: list[Pooler], params: dict, journal: Journal, log) -> dict:
    check_mode = source.check_mode
    last = journal.read()
    repaired = repair(source, target, poolers, params, journal)
    if params["state"] == "repaired" or (repaired and check_mode):  # only the leftovers (check mode cannot see past them)
        warnings = [f"a switchover left pending was repaired: {repaired}"] if repaired else []
        return {
            "changed": bool(repaired) and not check_mode,
            "repaired": repaired,
            "previous_run": previous_run(last),
            "queries": audit(source, target, poolers, (repaired or {}).get("haproxy_commands", [])),
            "warnings": warnings,
            "journal": journal.path,
        }
    run = Switchover(source, target, poolers, params, None if check_mode else journal, log)
    run.proxies = locate_proxies(params, source, target)
    status = run.status()
    wanted, before_serving = run.serving(True), run.serving(status == "switched")
    before = view(status, run.facts.pool_before, run.forward.name, "absent", run.haproxy_before)
    result = {
        "changed": bool(repaired) and not check_mode,
        "switched": status == "switched",
        "steps": [],
        "write_pause_ms": None,
        "write_pause_started_at": None,
        "queries": [],
        "repaired": repaired,
        "previous_run": previous_run(last),
    }
    if repaired:
        run.warnings.append(f"a switchover left pending was repaired first: {repaired}")
    if status == "switched":
        dropped = run.drop_forward_subscription()  # a run finished by its guardian leaves it
        result.update(changed=result["changed"] or dropped, diff={"before": before, "after": before}, serving=wanted)
        result.update(queries=audit(source, target, poolers), warnings=run.warnings)
        return result
    run.check_ready()
    after = view(
        "switched",
        run.facts.pool_before if run.proxies else wanted,
        "absent" if params["drop_forward_subscription"] else "disabled",
        run.reverse_name,
        {proxy.describe(): proxy.target_server for proxy in run.proxies},
    )
    result.update(changed=True, diff={"before": before, "after": after}, serving=wanted)
    run_id = uuid.uuid4().hex
    if not check_mode:
        journal.write(
            {
                "run_id": run_id,
                "pid": os.getpid(),
                "state": "preparing",
                "started_at": time.time(),
                "source": source.endpoint,
                "target": target.endpoint,
                "params": journal_params(params),
                "facts": run.saved_facts(),
                "done": [],
            },
            durable=True,
        )
    try:
        run.failed_step = "prepare"
        run.prepare()
        if check_mode:  # what would run, and what would undo it; nothing is switched
            result["steps"] = [{"step": step.name, "undo": step.undo, "ms": None, "ok": None} for step in run.planned_steps()]
            result["would_switch"] = True
        else:
            run.guardian = pg_guardian.spawn(journal, guardian_config(params, poolers, run_id))
            journal.update(guardian_pid=run.guardian.pid)
            run.failed_step = None
            run.switch()
            result["switched"] = True
    except Exception as error:  # whatever broke, the undo has run: report it plainly
        exc = error if isinstance(error, PgError) else PgError(f"unexpected error: {error!r}")
        failed = run.failed_step or "prepare"
        if failed == "prepare" and not check_mode:  # a failure before the pause: undo prepare()
            run.undo_after(exc)
        exc.details.update(
            failed_step=failed,
            steps=run.steps,
            undone=run.undone,
            write_pause_ms=run.facts.write_pause_ms,
            write_pause_started_at=run.facts.write_pause_started_at,
            serving=before_serving,
            journal=journal.path,
            warnings=run.warnings,  # e.g. the guardian took over, what the module undid again
        )
        exc.args = (f"switchover aborted at step {failed}: {exc}; undone: {', '.join(u['step'] for u in run.undone) or 'nothing'}",)
        raise exc from None
    finally:
        if run.guardian is not None:
            run.guardian.finish()
    if not check_mode:
        try:
            run.cleanup()
        except PgError as exc:  # writes already go to the target: report, do not fail
            run.warnings.append(f"after the switchover: {exc}")
        result["steps"] = run.steps
    result.update(
        queries=audit(source, target, poolers, run.haproxy_commands),
        write_pause_ms=run.facts.write_pause_ms,
        write_pause_started_at=run.facts.write_pause_started_at,
        lag_before_pause=run.facts.lag_before_pause,
        sequences=run.facts.sequences,
        reverse_streaming=run.facts.reverse_streaming,
        ddl_released=run.facts.ddl_released,
        warnings=run.warnings,
        journal=journal.path,
    )
    return result


def audit(source: Client, target: Client, poolers: list[Pooler], haproxy_commands: list[str] = ()) -> list[str]:
    return source.queries + target.queries + [query for pooler in poolers for query in pooler.console.queries] + list(haproxy_commands)


def guardian_config(params: dict, poolers: list[Pooler], run_id: str) -> dict:
    """What the guardian needs to reconnect (secrets included: it goes through a pipe only)."""
    return {
        "journal_dir": params["journal_dir"],
        "name": poolers[0].pool,
        "run_id": run_id,
        "timeout": params["timeout"],
        "margin": params["guardian_margin"],
        "params": {"source": params["source"], "target": params["target"], "pgbouncers": params["pgbouncers"]},
    }
