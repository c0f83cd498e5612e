# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A logical replication subscription on the subscriber, and the wait for its initial copy.

The connection string is built from structured parameters (libpq quoting by psycopg), stored
with its password by PostgreSQL, and never shown: `queries`, the diff and the returned
attributes carry it with the password masked.
"""

from __future__ import annotations

import contextlib
import re

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.redact import MASK
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.apply_errors import ApplyWatch
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import SSL_MODES, Client, PgError, ident

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

# pg_subscription_rel.srsubstate
SYNC_STATES = {
    "i": "initializing",
    "d": "copying data",
    "f": "copy finished",
    "s": "synchronized",
    "r": "ready",
}

# Options ALTER SUBSCRIPTION ... SET (...) can change; the rest only apply at CREATE.
ALTERABLE_OPTIONS = ("binary", "streaming", "disable_on_error", "synchronous_commit", "slot_name")
CREATE_ONLY_OPTIONS = ("copy_data", "create_slot", "connect", "two_phase")

# The publisher's structured parameters, by libpq keyword.
# The publisher's connection as module options (pg_subscription, pg_switchover's reverse_publisher).
PUBLISHER_SPEC = dict(
    host=dict(type="str", required=True),
    port=dict(type="int", default=5432),
    dbname=dict(type="str", required=True),
    user=dict(type="str", required=True),
    password=dict(type="str", no_log=True),
    sslmode=dict(type="str", choices=SSL_MODES),
    sslrootcert=dict(type="str"),
    sslcert=dict(type="str"),
    sslkey=dict(type="str", no_log=False),
    connect_timeout=dict(type="int"),
)
PUBLISHER_KEYWORDS = ("host", "port", "dbname", "user", "password", "sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout")


def build_conninfo(publisher: dict) -> str:
    """A libpq connection string from structured parameters, every value quoted by psycopg."""
    return make_conninfo(**{key: publisher[key] for key in PUBLISHER_KEYWORDS if publisher.get(key) not in (None, "")})


def masked(conninfo: str) -> str:
    """The connection string as it may be shown: the password replaced by a mask."""
    params = conninfo_to_dict(conninfo)
    if "password" in params:
        params["password"] = MASK
    return make_conninfo(**params)


def publisher_client_params(publisher: dict) -> dict:
    """The publisher's parameters as connection options for Client (to read its WAL position)."""
    return {
        "login_host": publisher.get("host"),
        "login_port": publisher.get("port"),
        "login_user": publisher.get("user"),
        "login_password": publisher.get("password"),
        "login_db": publisher.get("dbname"),
        "ssl_mode": publisher.get("sslmode"),
        "ssl_rootcert": publisher.get("sslrootcert"),
        "ssl_cert": publisher.get("sslcert"),
        "ssl_key": publisher.get("sslkey"),
        "connect_timeout": publisher.get("connect_timeout") or 10,
        "application_name": "zerodowntime.migration",
    }


# libpq's words for a server that refused the user or the password (connection errors carry no SQLSTATE)
AUTH_REFUSED = ("password authentication failed", "authentication failed", "no password supplied")
# The subscriber's SQLSTATE when it could not connect to the publisher (CREATE, DROP, REFRESH)
CONNECTION_FAILURE = "08006"
QUERY_CANCELED = "57014"  # statement_timeout


def refused_authentication(text: str) -> bool:
    return any(words in text for words in AUTH_REFUSED)


def publisher_refused(publisher: dict, cause: str) -> str:
    """'the publisher at host:port refused authentication for user U (libpq's reason)', from the
    publisher's parameters (module options or the subscription's connection string)."""
    found = re.search(r"(?:FATAL|fe_sendauth):\s*([^\n]+)", cause)
    reason = found.group(1).strip() if found else "authentication failed"
    where = f"{publisher.get('host') or 'localhost'}:{publisher.get('port') or 5432}"
    return f"the publisher at {where} refused authentication for user '{publisher.get('user')}' ({reason})"


PUBLISHER_AUTH_FIX = (
    "this is the subscription's connection to the publisher (the options under publisher), not the module's own login "
    "(login_user, login_password): fix publisher.password (or publisher.user), or pg_hba.conf on the publisher for this user"
)


def open_publisher(publisher: dict) -> Client:
    """The module's own connection to the publisher (wal_level, lag, refresh); a refused password
    is named as the publisher's, not as the module's login."""
    try:
        return Client(publisher_client_params(publisher))
    except PgError as exc:
        if refused_authentication(exc.cause):
            raise PgError(f"{publisher_refused(publisher, exc.cause)} when the module connected to it: {PUBLISHER_AUTH_FIX}") from None
        raise


def slot_creation_held(publisher: dict, name: str, seconds: int) -> PgError:
    """CREATE SUBSCRIPTION ran out of time: the publisher builds the slot's snapshot only once every
    transaction that holds a transaction ID there has ended. Name those transactions."""
    with open_publisher(publisher) as publisher_client:
        rows = publisher_client.query(
            "SELECT pid, usename, datname, state, round(extract(epoch FROM now() - xact_start))::int AS seconds "
            "FROM pg_catalog.pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_catalog.pg_backend_pid() "
            "ORDER BY xact_start LIMIT 5"
        )
        where = publisher_client.endpoint
    # Without pg_read_all_stats the publisher's user sees other users' sessions but not their state.
    running = "; ".join(
        f"pid {row['pid']} (user {row['usename']}, database {row['datname']}"
        + (f", {row['state']}, for {row['seconds']} s)" if row["state"] is not None else ")")
        for row in rows
    )
    return PgError(
        f"subscription '{name}' was not created within timeout ({seconds} s): the publisher {where} creates its slot only once "
        f"every transaction running there with a transaction ID has ended"
        + (f", and these still run: {running}" if running else "")
        + ". Let them finish, or end them (pg_terminate_backend(pid) on the publisher), then run again; nothing was created",
        long_transactions=rows,
    )


def option_value(value) -> sql.Composable:
    """A WITH (...) option value: booleans as keywords, anything else as a quoted literal."""
    if isinstance(value, bool):
        return sql.SQL("true" if value else "false")
    return sql.Literal(value)


def with_options(options: dict) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.SQL(name), option_value(value)) for name, value in options.items())


class Subscription(ManagedObject):
    """One subscription, in the database the client is connected to."""

    kind = "subscription"

    def __init__(self, client: Client, name: str, publisher: dict | None = None, drop_slot: bool = True):
        super().__init__(client, name)
        self.publisher = publisher or {}
        self.drop_slot = drop_slot  # False: detach the slot and leave it on the publisher

    # --- reading -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.row() is not None

    def row(self) -> dict | None:
        return self.client.query_one(
            "SELECT s.oid, s.subenabled, s.subbinary, s.substream, s.subtwophasestate, s.subdisableonerr, "
            "s.subconninfo, s.subslotname, s.subsynccommit, s.subpublications "
            "FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d ON d.oid = s.subdbid "
            "WHERE s.subname = %s AND d.datname = current_database()",
            (self.name,),
        )

    def attrs(self) -> dict:
        row = self.row()
        return {
            "conninfo": row["subconninfo"],
            "publications": sorted(row["subpublications"]),
            "enabled": row["subenabled"],
            "binary": row["subbinary"],
            "streaming": row["substream"],
            "disable_on_error": row["subdisableonerr"],
            "synchronous_commit": row["subsynccommit"],
            "slot_name": row["subslotname"] or "none",
            "two_phase": row["subtwophasestate"] != "d",
        }

    def diff_view(self, attributes):
        view = super().diff_view(attributes)
        if view.get("conninfo"):
            view["conninfo"] = masked(view["conninfo"])
        return view

    def differences(self, current: dict, desired: dict) -> dict:
        wanted = {key: value for key, value in desired.items() if key not in CREATE_ONLY_OPTIONS}
        if wanted.get("publications") is not None:
            wanted["publications"] = sorted(wanted["publications"])
        changes = super().differences(current, wanted)
        if "conninfo" in changes and conninfo_to_dict(changes["conninfo"]) == conninfo_to_dict(current["conninfo"]):
            del changes["conninfo"]  # same parameters, spelled differently
        two_phase = desired.get("two_phase")
        if two_phase is not None and two_phase != current["two_phase"]:
            raise PgError(
                f"subscription '{self.name}' has two_phase={current['two_phase']}; PostgreSQL 15 cannot change it: "
                f"drop and re-create the subscription, or leave two_phase unset"
            )
        return changes

    # --- changing ------------------------------------------------------------------------
    def create(self, desired: dict) -> None:
        options = {key: desired[key] for key in (*ALTERABLE_OPTIONS, *CREATE_ONLY_OPTIONS) if desired.get(key) is not None}
        if desired.get("enabled") is not None:
            options["enabled"] = desired["enabled"]
        statement = sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
            ident(self.name), sql.Literal(desired["conninfo"]), sql.SQL(", ").join(map(ident, desired["publications"]))
        )
        audit = sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
            ident(self.name), sql.Literal(masked(desired["conninfo"])), sql.SQL(", ").join(map(ident, desired["publications"]))
        )
        if options:
            statement += sql.SQL(" WITH ({})").format(with_options(options))
            audit += sql.SQL(" WITH ({})").format(with_options(options))
        try:
            self.client.execute(statement, audit=self.client.render(audit))
        except PgError as exc:
            # The subscriber server connects to the publisher itself: its failure comes back as a statement error.
            if exc.sqlstate == CONNECTION_FAILURE and refused_authentication(exc.cause):
                raise PgError(
                    f"cannot create subscription '{self.name}': the subscriber {self.client.endpoint} could not connect to the "
                    f"publisher: {publisher_refused(conninfo_to_dict(desired['conninfo']), exc.cause)}; nothing was created: "
                    f"{PUBLISHER_AUTH_FIX} from the subscriber's address"
                ) from None
            raise

    def update(self, current: dict, changes: dict) -> None:
        name = ident(self.name)
        enabled = changes.get("enabled", current["enabled"])
        if changes.get("enabled") is False:
            self.client.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name))
        if "conninfo" in changes:
            self.client.execute(
                sql.SQL("ALTER SUBSCRIPTION {} CONNECTION {}").format(name, sql.Literal(changes["conninfo"])),
                audit=self.client.render(
                    sql.SQL("ALTER SUBSCRIPTION {} CONNECTION {}").format(name, sql.Literal(masked(changes["conninfo"])))
                ),
            )
        options = {key: changes[key] for key in ALTERABLE_OPTIONS if key in changes}
        if options:
            self.client.execute(sql.SQL("ALTER SUBSCRIPTION {} SET ({})").format(name, with_options(options)))
        if "publications" in changes:
            # A disabled subscription cannot refresh; it picks the tables up on its next REFRESH.
            self.client.execute(
                sql.SQL("ALTER SUBSCRIPTION {} SET PUBLICATION {} WITH (refresh = {})").format(
                    name, sql.SQL(", ").join(map(ident, changes["publications"])), option_value(bool(enabled))
                )
            )
        if changes.get("enabled") is True:
            self.client.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(name))

    def drop(self, current: dict) -> None:
        name = ident(self.name)
        if not self.drop_slot:
            # Detach the slot so DROP does not need the publisher; the slot stays there.
            if current["enabled"]:
                self.client.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name))
            if current["slot_name"] != "none":
                self.client.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(name))
        try:
            self.client.execute(sql.SQL("DROP SUBSCRIPTION {}").format(name))
        except PgError as exc:
            if self.drop_slot and exc.sqlstate == CONNECTION_FAILURE and refused_authentication(exc.cause):
                slot = current["slot_name"]
                raise PgError(
                    f"cannot drop subscription '{self.name}': {publisher_refused(conninfo_to_dict(current['conninfo']), exc.cause)}, "
                    f"and DROP SUBSCRIPTION must drop the slot '{slot}' there; nothing was changed. Either fix the password the "
                    f"subscription uses (this module with state: present and the right publisher.password runs ALTER SUBSCRIPTION "
                    f"... CONNECTION; or pg_hba.conf on the publisher) and drop again; or set drop_slot: false to disable the "
                    f"subscription, detach the slot (ALTER SUBSCRIPTION ... SET (slot_name = NONE)) and drop it, then drop the "
                    f"slot '{slot}' on the publisher (zerodowntime.migration.pg_replication_slot, state: absent)"
                ) from None
            if self.drop_slot and "could not connect to publisher" in str(exc):
                raise PgError(
                    f"cannot drop subscription '{self.name}': the publisher is unreachable, so its slot "
                    f"'{current['slot_name']}' cannot be dropped there ({exc}). Set drop_slot: false to disable the "
                    f"subscription, detach the slot and drop it; then drop the slot on the publisher "
                    f"(zerodowntime.migration.pg_replication_slot, state: absent) once it is reachable"
                ) from None
            raise

    def refresh_needed(self) -> tuple[list[str], list[str]]:
        """Tables the publisher publishes that the subscription does not know, and the reverse."""
        with open_publisher(self.publisher) as publisher:
            published = {
                f"{row['schemaname']}.{row['tablename']}"
                for row in publisher.query(
                    "SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = ANY(%s)",
                    (self.attrs()["publications"],),
                )
            }
        subscribed = {row["table_name"] for row in self.table_states()}
        return sorted(published - subscribed), sorted(subscribed - published)

    def refresh(self, copy_data: bool) -> None:
        self.client.execute(
            sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION WITH (copy_data = {})").format(ident(self.name), option_value(copy_data))
        )

    # --- progress ------------------------------------------------------------------------
    def table_states(self) -> list[dict]:
        rows = self.client.query(
            "SELECT n.nspname || '.' || c.relname AS table_name, r.srsubstate AS state "
            "FROM pg_catalog.pg_subscription_rel r JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid "
            "JOIN pg_catalog.pg_class c ON c.oid = r.srrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE s.subname = %s ORDER BY 1",
            (self.name,),
        )
        return [dict(row, state_name=SYNC_STATES.get(row["state"], row["state"])) for row in rows]

    def lag(self) -> dict:
        """How far the subscription is behind: bytes (publisher's WAL position minus what its
        slot has confirmed) and seconds (since the apply worker last reported a position)."""
        seconds_row = self.client.query_one(
            "SELECT extract(epoch FROM now() - max(latest_end_time))::float AS seconds "
            "FROM pg_catalog.pg_stat_subscription WHERE subname = %s AND relid IS NULL",
            (self.name,),
        )
        figures = {"lag_bytes": None, "lag_seconds": None}
        slot_name = self.attrs()["slot_name"]
        if self.publisher.get("host") and slot_name != "none":
            try:
                with open_publisher(self.publisher) as publisher:
                    row = publisher.query_one(
                        "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes "
                        "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                        (slot_name,),
                    )
                figures["lag_bytes"] = row["lag_bytes"] if row else None
            except PgError as exc:  # the lag is a figure, not a reason to fail
                figures["lag_error"] = f"cannot read the publisher's WAL position: {exc}"
        seconds = seconds_row["seconds"] if seconds_row else None
        if figures["lag_bytes"] == 0:
            seconds = 0.0
        figures["lag_seconds"] = round(seconds, 3) if seconds is not None else None
        return figures

    def progress(self) -> dict:
        tables = self.table_states()
        figures = {
            "tables": tables,
            "tables_ready": sum(1 for table in tables if table["state"] == "r"),
            "tables_total": len(tables),
        }
        figures.update(self.lag())
        return figures

    def copy_progress(self) -> list[dict]:
        """The tables the subscription's sync workers are copying now (pg_stat_progress_copy on
        the subscriber): table_name, bytes_processed, tuples_processed."""
        return self.client.query(
            "SELECT n.nspname || '.' || c.relname AS table_name, p.bytes_processed, p.bytes_total, p.tuples_processed "
            "FROM pg_catalog.pg_stat_progress_copy p JOIN pg_catalog.pg_class c ON c.oid = p.relid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_catalog.pg_subscription_rel r ON r.srrelid = p.relid "
            "JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid AND s.subname = %s "
            "WHERE p.datid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) ORDER BY 1",
            (self.name,),
        )

    def table_sizes(self, tables: list[str]) -> dict:
        """Each table's size on the publisher (bytes of its heap): what its copy's bytes are
        measured against, an estimate (COPY's text is not the heap). {} without a publisher."""
        if not tables or not self.publisher.get("host"):
            return {}
        with open_publisher(self.publisher) as publisher:
            rows = publisher.query(
                "SELECT n.nspname || '.' || c.relname AS table_name, pg_catalog.pg_relation_size(c.oid) AS size "
                "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname || '.' || c.relname = ANY(%s)",
                (tables,),
            )
        return {row["table_name"]: row["size"] for row in rows}

    def report_progress(self, reporter, figures: dict, sizes: dict) -> None:
        """Tables ready of total, and the bytes copied of each table being copied, into `reporter`."""
        copying = self.copy_progress()
        unknown = [row["table_name"] for row in copying if row["table_name"] not in sizes and not row["bytes_total"]]
        if unknown:
            try:
                sizes.update(self.table_sizes(unknown))
            except PgError as exc:  # a figure, not a reason to fail
                reporter.warn(f"the publisher's table sizes cannot be read for the copy's progress: {exc}")
            for name in unknown:
                sizes.setdefault(name, None)
        names = {row["table_name"] for row in copying}
        for name in [name for name in reporter.items if name not in names]:
            reporter.drop_item(name)
        for row in copying:
            total = row["bytes_total"] or sizes.get(row["table_name"])
            reporter.item(row["table_name"], row["bytes_processed"], total, unit="bytes", emit=False)
        detail = {"tables_ready": figures["tables_ready"], "tables_total": figures["tables_total"], "lag_bytes": figures["lag_bytes"]}
        detail["tables_copying"] = sorted(names)
        reporter.update(figures["tables_ready"], figures["tables_total"], unit="tables", detail=detail)

    def wait_for_sync(self, timeout: float, max_lag_bytes: int | None, interval: float = 1.0, log=None, reporter=None) -> dict:
        """Wait, at most `timeout` seconds, until every table is ready (and the lag is at most
        `max_lag_bytes` when given). Returns the last figures with a `history` of the wait; on
        timeout raises PgError naming the tables not ready, and as soon as a worker of the
        subscription fails (ApplyWatch) PgError naming the table and the error. A `reporter`
        (common.progress.Reporter) gets tables ready of total and each copy's bytes as it goes."""
        deadline = Deadline(timeout)
        history: list[dict] = []
        watch = ApplyWatch(self.client, [self.name])
        sizes: dict = {}

        def probe() -> dict:
            watch.check()
            figures = self.progress()
            if reporter is not None and reporter.enabled:
                try:
                    self.report_progress(reporter, figures, sizes)
                except PgError as exc:
                    reporter.warn(f"the initial copy's progress cannot be read: {exc}")
            figures["elapsed"] = round(deadline.elapsed(), 1)
            point = {key: figures[key] for key in ("elapsed", "tables_ready", "tables_total", "lag_bytes")}
            if not history or {k: v for k, v in point.items() if k != "elapsed"} != {
                k: v for k, v in history[-1].items() if k != "elapsed"
            }:
                history.append(point)
                if log:
                    ready = f"{point['tables_ready']}/{point['tables_total']} tables ready"
                    log(f"subscription {self.name}: {ready}, lag {point['lag_bytes']} bytes after {point['elapsed']} s")
            return figures

        def all_ready(figures: dict) -> bool:
            return figures["tables_ready"] == figures["tables_total"]

        def lag_ok(figures: dict) -> bool:
            return max_lag_bytes is None or (figures["lag_bytes"] is not None and figures["lag_bytes"] <= max_lag_bytes)

        def not_ready(figures: dict):
            elapsed = figures.pop("elapsed")
            raise PgError(self.timeout_message(figures, elapsed, all_ready(figures), max_lag_bytes), history=history, **figures)

        try:
            figures = poll(probe, deadline, not_ready, ready=lambda figures: all_ready(figures) and lag_ok(figures), interval=interval)
        except PgError as exc:
            if reporter is not None and reporter.enabled:
                reporter.finish("failed", {"error": str(exc)[:500]})
            raise
        if reporter is not None and reporter.enabled:
            for name in list(reporter.items):
                reporter.drop_item(name)
            reporter.progress.update(figures["tables_ready"], figures["tables_total"])
            reporter.finish("done", {"tables_copying": [], "lag_bytes": figures["lag_bytes"], "tables_ready": figures["tables_ready"]})
        waited = figures.pop("elapsed")
        return dict(figures, history=history, waited=waited)

    def error_counts(self) -> str:
        """The workers' error counters (pg_stat_subscription_stats), as a sentence part."""
        row = self.client.query_one(
            "SELECT apply_error_count, sync_error_count FROM pg_catalog.pg_stat_subscription_stats WHERE subname = %s", (self.name,)
        )
        if not row or not (row["apply_error_count"] or row["sync_error_count"]):
            return "no worker errors counted so far"
        return (
            f"the workers have failed {row['apply_error_count']} time(s) applying changes and {row['sync_error_count']} "
            f"time(s) copying tables: the subscriber's log says why"
        )

    def timeout_message(self, figures: dict, elapsed: float, all_ready: bool, max_lag_bytes: int | None) -> str:
        if not all_ready:
            waiting = [f"{t['table_name']} ({t['state_name']})" for t in figures["tables"] if t["state"] != "r"]
            shown = ", ".join(waiting[:20]) + (f" and {len(waiting) - 20} more" if len(waiting) > 20 else "")
            return (
                f"subscription '{self.name}': {len(waiting)} of {figures['tables_total']} tables not ready after {elapsed} s: "
                f"{shown}; {self.error_counts()}. Raise timeout for large tables; for errors look for missing columns, "
                f"duplicate keys, permissions, or a replica identity the target's key needs but the publisher does not send"
            )
        if figures.get("lag_error"):
            return f"subscription '{self.name}': every table is ready but the lag is unknown after {elapsed} s: {figures['lag_error']}"
        return (
            f"subscription '{self.name}': every table is ready but the lag is {figures['lag_bytes']} bytes after {elapsed} s "
            f"(max_lag_bytes {max_lag_bytes}): the apply worker is not keeping up; raise timeout or max_lag_bytes, "
            f"or reduce the write load"
        )
