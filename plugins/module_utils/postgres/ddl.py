# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DDL replicated with the data (issue 15): the capture on the publisher, the apply trigger on the
subscriber (pg_ddl_capture), and the work the trigger leaves for later (pg_ddl_apply).

The SQL objects and what they do are described in ddl_sql. Here: `DdlCapture`, the installed set of
one side as a ManagedObject (check mode, diff, a second run changes nothing), and
`apply_pending`, which does what cannot run inside the apply worker's transaction - an index built
CONCURRENTLY on green's table (its partitioned parent included, through pg_index's Index), a new
table added to the publication(s) that carry the DDL log and copied (REFRESH PUBLICATION).
"""

from __future__ import annotations

import re

try:
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.types.json import Jsonb
except ImportError:  # reported by the module through missing_required_lib
    conninfo_to_dict = Jsonb = None

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import readonly as pg_readonly
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.apply_errors import ApplyWatch
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident, sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.ddl_sql import (
    APPLY_TRIGGER,
    EVENT_TRIGGERS,
    FUNCTION_NAMES,
    LOG_TABLE,
    LOG_TABLE_SQL,
    PENDING_TABLE,
    PUBLISHER_FUNCTIONS,
    RESOLVED_TABLE,
    SCHEMA,
    SUBSCRIBER_FUNCTIONS,
    SUBSCRIBER_TABLES_SQL,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import check_identifier, format_qualified_name
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.index import ensure_index

SIDES = ("publisher", "subscriber")
BODY = re.compile(r"\$fn\$(.*)\$fn\$", re.S)
LOG_NAME = f"{SCHEMA}.{LOG_TABLE}"


def function_bodies(side: str) -> dict[str, str]:
    """Each function of the side by name, with the body PostgreSQL keeps in pg_proc.prosrc."""
    sources = PUBLISHER_FUNCTIONS if side == "publisher" else SUBSCRIBER_FUNCTIONS
    return {name: BODY.search(source).group(1) for name, source in zip(FUNCTION_NAMES[side], sources, strict=True)}


def log_table_ident():
    return ident(SCHEMA, LOG_TABLE)


class DdlCapture(ManagedObject):
    """The DDL capture (publisher) or apply trigger (subscriber) of one database."""

    kind = "ddl_capture"
    attrs_cache: dict | None = None

    def __init__(self, client, side: str, publication=None, subscription=None, replication_user=None):
        if side not in SIDES:
            raise PgError(f"side must be publisher or subscriber, not {side!r}")
        super().__init__(client, f"{side} ddl capture")
        self.side = side
        self.publication = check_identifier(publication, "publication") if publication else None
        self.subscription = check_identifier(subscription, "subscription") if subscription else None
        self.replication_user = check_identifier(replication_user, "replication_user") if replication_user else None
        if side == "publisher" and subscription:
            raise PgError("subscription is an option of side: subscriber; on the publisher give publication")
        if side == "subscriber" and (publication or replication_user):
            raise PgError("publication and replication_user are options of side: publisher; on the subscriber give subscription")

    # Reading ------------------------------------------------------------------------------
    def relation_exists(self, name: str) -> bool:
        row = self.client.query_one("SELECT pg_catalog.to_regclass(%s) IS NOT NULL AS found", (format_qualified_name(SCHEMA, name),))
        return bool(row["found"])

    def functions_state(self) -> str:
        wanted = function_bodies(self.side)
        rows = self.client.query(
            "SELECT p.proname, p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = ANY(%s)",
            (SCHEMA, list(wanted)),
        )
        have = {row["proname"]: row["prosrc"] for row in rows}
        if not have:
            return "missing"
        return "current" if have == wanted else "outdated"

    def event_triggers(self) -> list[str]:
        rows = self.client.query(
            "SELECT evtname FROM pg_catalog.pg_event_trigger WHERE evtname = ANY(%s) AND evtenabled <> 'D'", (list(EVENT_TRIGGERS),)
        )
        return sorted(row["evtname"] for row in rows)

    def apply_trigger(self) -> str:
        row = self.client.query_one(
            "SELECT t.tgenabled FROM pg_catalog.pg_trigger t WHERE t.tgname = %s AND t.tgrelid = pg_catalog.to_regclass(%s)",
            (APPLY_TRIGGER, LOG_NAME),
        )
        return {"A": "always", "O": "origin", "R": "replica", "D": "disabled"}.get(row["tgenabled"], "?") if row else "missing"

    def published_in(self) -> list[str]:
        rows = self.client.query(
            "SELECT pubname FROM pg_catalog.pg_publication_tables WHERE schemaname = %s AND tablename = %s", (SCHEMA, LOG_TABLE)
        )
        return sorted(row["pubname"] for row in rows)

    def subscribed(self) -> bool:
        row = self.client.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid "
            "WHERE s.subname = %s AND r.srrelid = pg_catalog.to_regclass(%s)) AS found",
            (self.subscription, LOG_NAME),
        )
        return bool(row["found"])

    def granted(self) -> bool:
        row = self.client.query_one(
            "SELECT pg_catalog.has_schema_privilege(%(u)s, %(s)s, 'USAGE') "
            "AND pg_catalog.has_table_privilege(%(u)s, %(t)s, 'SELECT') AS ok",
            {"u": self.replication_user, "s": SCHEMA, "t": LOG_NAME},
        )
        return bool(row["ok"])

    def log_sequence(self):
        """The log's identity sequence, as an identifier."""
        row = self.client.query_one(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = pg_catalog.pg_get_serial_sequence(%s, 'id')::regclass",
            (LOG_NAME,),
        )
        return ident(row["nspname"], row["relname"])

    def next_log_id_free(self) -> bool:
        """Whether the log's next id is above every id it holds. The log of a server that was a subscriber
        holds the other side's rows with their ids; its own captures must not collide with them."""
        row = self.client.query_one(
            sql.SQL(
                "SELECT coalesce((SELECT max(id) FROM {}), 0) < CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END "
                "AS free FROM {} s"
            ).format(log_table_ident(), self.log_sequence())
        )
        return bool(row["free"])

    def exists(self) -> bool:
        if self.relation_exists(LOG_TABLE) or self.functions_state() != "missing":
            return True
        return bool(self.event_triggers()) if self.side == "publisher" else False

    def attrs(self) -> dict:
        log = self.relation_exists(LOG_TABLE)
        current = {"side": self.side, "log_table": log, "functions": self.functions_state()}
        if self.side == "publisher":
            current["event_triggers"] = self.event_triggers()
            current["next_log_id_free"] = self.next_log_id_free() if log else False
            current["published_in"] = self.published_in() if log else []
            if self.replication_user:
                current["readable_by"] = self.replication_user if log and self.granted() else None
        else:
            current["work_tables"] = self.relation_exists(PENDING_TABLE) and self.relation_exists(RESOLVED_TABLE)
            current["apply_trigger"] = self.apply_trigger() if log else "missing"
            if self.subscription:
                current["subscribed"] = self.subscribed() if log else False
        return current

    def desired(self) -> dict:
        wanted = {"side": self.side, "log_table": True, "functions": "current"}
        if self.side == "publisher":
            wanted["event_triggers"] = sorted(EVENT_TRIGGERS)
            wanted["next_log_id_free"] = True
            if self.publication:
                wanted["published_in"] = sorted(set((self.attrs_cache or {}).get("published_in", [])) | {self.publication})
            if self.replication_user:
                wanted["readable_by"] = self.replication_user
        else:
            wanted["work_tables"] = True
            wanted["apply_trigger"] = "always"
            if self.subscription:
                wanted["subscribed"] = True
        return wanted

    # Changing -----------------------------------------------------------------------------
    def create(self, desired: dict) -> None:
        self.update({}, desired)

    def update(self, current: dict, changes: dict) -> None:
        run = self.client.execute
        if not current.get("log_table"):
            run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(SCHEMA)))
            run(LOG_TABLE_SQL.strip())
        if self.side == "subscriber" and "work_tables" in changes:
            for statement in SUBSCRIBER_TABLES_SQL:
                run(statement.strip())
        if "functions" in changes:
            for source in PUBLISHER_FUNCTIONS if self.side == "publisher" else SUBSCRIBER_FUNCTIONS:
                run(source.strip())
        if self.side == "publisher":
            self.update_publisher(current, changes)
        else:
            self.update_subscriber(current, changes)

    def update_publisher(self, current: dict, changes: dict) -> None:
        run = self.client.execute
        for name, event, function in (
            (EVENT_TRIGGERS[0], "ddl_command_end", "ddl_capture"),
            (EVENT_TRIGGERS[1], "sql_drop", "ddl_capture_drops"),
        ):
            if name not in current.get("event_triggers", []):
                run(sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(ident(name)))
                run(
                    sql.SQL("CREATE EVENT TRIGGER {} ON {} EXECUTE FUNCTION {}()").format(
                        ident(name), sql.SQL(event), ident(SCHEMA, function)
                    )
                )
        if "next_log_id_free" in changes and current.get("log_table"):
            # only ever forward: next_log_id_free said the next id is at or below the highest held
            statement = sql.SQL(
                "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence({}, 'id'), max(id)) FROM {} HAVING max(id) IS NOT NULL"
            )
            run(statement.format(sql.Literal(LOG_NAME), log_table_ident()))
        if "readable_by" in changes:
            run(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident(SCHEMA), ident(self.replication_user)))
            run(sql.SQL("GRANT SELECT ON {} TO {}").format(log_table_ident(), ident(self.replication_user)))
        if "published_in" in changes and self.publication not in current.get("published_in", []):
            row = self.client.query_one("SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = %s", (self.publication,))
            if row is None:
                raise PgError(
                    f"publication '{self.publication}' does not exist on {self.client.endpoint}: create it first (pg_publication), "
                    f"or fix the publication option"
                )
            if not row["puballtables"]:
                run(sql.SQL("ALTER PUBLICATION {} ADD TABLE ONLY {}").format(ident(self.publication), log_table_ident()))

    def update_subscriber(self, current: dict, changes: dict) -> None:
        run = self.client.execute
        if "apply_trigger" in changes:
            run(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(ident(APPLY_TRIGGER), log_table_ident()))
            run(
                sql.SQL("CREATE TRIGGER {} BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
                    ident(APPLY_TRIGGER), log_table_ident(), ident(SCHEMA, "ddl_apply")
                )
            )
            run(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(log_table_ident(), ident(APPLY_TRIGGER)))
        if "subscribed" in changes:
            if not self.client.query_one("SELECT 1 AS found FROM pg_catalog.pg_subscription WHERE subname = %s", (self.subscription,)):
                raise PgError(
                    f"subscription '{self.subscription}' does not exist on {self.client.endpoint}: create it (pg_subscription) "
                    f"after this module, or leave the subscription option out (a new subscription copies the DDL log itself)"
                )
            run(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(ident(self.subscription)))
            if not self.client.check_mode and not self.subscribed():
                raise PgError(
                    f"subscription '{self.subscription}' on {self.client.endpoint} does not receive {LOG_NAME}: its publication does not "
                    f"publish it. Run pg_ddl_capture with side: publisher and publication: <its publication> on the publisher first"
                )

    def drop(self, current: dict) -> None:
        run = self.client.execute
        if self.side == "publisher":
            for name in EVENT_TRIGGERS:
                run(sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(ident(name)))
        elif current.get("log_table"):
            run(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(ident(APPLY_TRIGGER), log_table_ident()))
        for name in reversed(FUNCTION_NAMES[self.side]):  # ddl_unsupported takes the log's row type: before the table
            run(sql.SQL("DROP FUNCTION IF EXISTS {}").format(ident(SCHEMA, name)))
        tables = (LOG_TABLE,) if self.side == "publisher" else (LOG_TABLE, PENDING_TABLE, RESOLVED_TABLE)
        for table in tables:  # a dropped table leaves its publications and subscriptions by itself
            run(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(SCHEMA, table)))

    def ensure_side(self, state: str) -> dict:
        # This session's own DDL (the log table, grants) is not captured (a session setting: a read, also in check mode).
        self.client.query("SELECT pg_catalog.set_config('zerodowntime.ddl_capture_skip', 'on', false)")
        if state == "present":
            self.attrs_cache = self.attrs() if self.exists() else None
            return self.ensure("present", self.desired())
        return self.ensure("absent")


def ensure_capture(client, params: dict) -> dict:
    """What the pg_ddl_capture module does."""
    if params["state"] == "present" and params["side"] == "publisher":
        client.require_logical_wal()
    capture = DdlCapture(
        client,
        params["side"],
        publication=params.get("publication"),
        subscription=params.get("subscription"),
        replication_user=params.get("replication_user"),
    )
    return capture.ensure_side(params["state"])


# pg_ddl_apply -----------------------------------------------------------------------------------
def pending_rows(client) -> list[dict]:
    if not client.query_one("SELECT pg_catalog.to_regclass(%s) IS NOT NULL AS found", (f"{SCHEMA}.{PENDING_TABLE}",))["found"]:
        raise PgError(
            f"{SCHEMA}.{PENDING_TABLE} does not exist on {client.endpoint}: install the apply trigger first "
            f"(pg_ddl_capture with side: subscriber)"
        )
    return client.query(
        sql.SQL("SELECT id, kind, object_identity, definition FROM {} WHERE done_at IS NULL ORDER BY id").format(
            ident(SCHEMA, PENDING_TABLE)
        )
    )


def describe(row: dict) -> dict:
    action = "build the index concurrently" if row["kind"] == "index" else "publish the table and copy it"
    return {"id": row["id"], "kind": row["kind"], "object": row["object_identity"], "action": action}


def mark_done(client, row: dict) -> None:
    client.execute(sql.SQL("UPDATE {} SET done_at = pg_catalog.now() WHERE id = %s").format(ident(SCHEMA, PENDING_TABLE)), (row["id"],))


def build_index(client, row: dict, params: dict) -> dict:
    d = row["definition"]
    result = ensure_index(
        client,
        {
            "name": d["name"],
            "table": format_qualified_name(d["table_schema"], d["table"]),
            "columns": d["columns"],
            "include": d.get("include") or [],
            "unique": d["unique"],
            "method": d["method"],
            "where": d.get("where"),
            "concurrently": True,
            "state": "present",
            "timeout": params.get("timeout"),
            "lock_timeout": params.get("lock_timeout"),
        },
    )
    return {"changed": result["changed"], "partitions": len(result.get("partitions") or [])}


def subscription_publications(client, subscription: str) -> tuple[list[str], str | None]:
    """The subscription's publications and the role it connects to the publisher as."""
    row = client.query_one("SELECT subpublications, subconninfo FROM pg_catalog.pg_subscription WHERE subname = %s", (subscription,))
    if row is None:
        raise PgError(f"subscription '{subscription}' does not exist on {client.endpoint}: fix the subscription option")
    return list(row["subpublications"]), conninfo_to_dict(row["subconninfo"]).get("user")


def publish_tables(client, publisher, rows: list[dict], params: dict) -> None:
    """Add the new tables to the publications that carry the DDL log, refresh the subscription,
    wait (bounded) until the tables are copied."""
    subscription = params.get("subscription")
    if not subscription or publisher is None:
        raise PgError(
            f"new table(s) {', '.join(row['object_identity'] for row in rows)} must be published and copied: "
            f"give subscription and publisher (the blue side's connection)"
        )
    check_identifier(subscription, "subscription")
    publications, replication_user = subscription_publications(client, subscription)
    publisher.check_mode = client.check_mode
    publisher.query("SELECT pg_catalog.set_config('zerodowntime.ddl_capture_skip', 'on', false)")
    carrying = publisher.query(
        "SELECT p.pubname, p.puballtables FROM pg_catalog.pg_publication p WHERE p.pubname = ANY(%s) AND (p.puballtables OR EXISTS "
        "(SELECT 1 FROM pg_catalog.pg_publication_tables t WHERE t.pubname = p.pubname AND t.schemaname = %s AND t.tablename = %s))",
        (publications, SCHEMA, LOG_TABLE),
    )
    if not carrying:
        raise PgError(
            f"none of subscription '{subscription}''s publications ({', '.join(publications)}) publishes {LOG_NAME} on "
            f"{publisher.endpoint}: run pg_ddl_capture with side: publisher there"
        )
    for row in rows:
        schema, table = row["definition"]["schema"], row["definition"]["name"]
        exists = publisher.query_one("SELECT pg_catalog.to_regclass(%s) IS NOT NULL AS found", (format_qualified_name(schema, table),))
        if not exists["found"]:
            continue  # dropped on the publisher since; its DROP reaches the subscriber too
        for publication in carrying:
            if publication["puballtables"]:
                continue
            published = publisher.query_one(
                "SELECT 1 AS found FROM pg_catalog.pg_publication_tables WHERE pubname = %s AND schemaname = %s AND tablename = %s",
                (publication["pubname"], schema, table),
            )
            if not published:
                statement = sql.SQL("ALTER PUBLICATION {} ADD TABLE ONLY {}")
                publisher.execute(statement.format(ident(publication["pubname"]), ident(schema, table)))
                client.queries.append(f"on the publisher: {publisher.queries[-1]}")
        if replication_user:  # the subscription's initial copy reads the table as this role
            readable = publisher.query_one(
                "SELECT pg_catalog.has_table_privilege(%s, %s, 'SELECT') AS ok", (replication_user, format_qualified_name(schema, table))
            )
            if not readable["ok"]:
                publisher.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(ident(schema, table), ident(replication_user)))
                client.queries.append(f"on the publisher: {publisher.queries[-1]}")
    client.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(ident(subscription)))
    if client.check_mode:
        return
    names = [format_qualified_name(row["definition"]["schema"], row["definition"]["name"]) for row in rows]

    def not_ready():
        return client.query(
            "SELECT t.name FROM unnest(%s::text[]) t(name) WHERE pg_catalog.to_regclass(t.name) IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM pg_catalog.pg_subscription_rel r JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid "
            "WHERE s.subname = %s AND r.srrelid = pg_catalog.to_regclass(t.name) AND r.srsubstate IN ('r', 's'))",
            (names, subscription),
        )

    def timed_out(last):
        raise PgError(
            f"the copy of {', '.join(row['name'] for row in last)} by subscription '{subscription}' did not finish within "
            f"{params['timeout']} s: raise timeout, or look at pg_subscription_rel and the subscriber's log"
        )

    poll(not_ready, Deadline(params["timeout"] or 600), timed_out, ready=lambda last: not last, interval=0.2)


def apply_pending(client, publisher, params: dict) -> dict:
    """What the pg_ddl_apply module does: the pending work, oldest first; each done item is marked
    done, so a second run (or a run after a failure) does only what is left."""
    released = release_if_frozen(client, publisher, params)
    rows = pending_rows(client)
    before = [describe(row) for row in rows]
    done = []
    for row in rows:
        if row["kind"] == "index":
            table = format_qualified_name(row["definition"]["table_schema"], row["definition"]["table"])
            if client.query_one("SELECT pg_catalog.to_regclass(%s) IS NULL AS gone", (table,))["gone"]:
                mark_done(client, row)  # its table was dropped since
                continue
            build_index(client, row, params)
            mark_done(client, row)
            done.append(describe(row))
    publishing = [row for row in rows if row["kind"] == "publish"]
    if publishing:
        publish_tables(client, publisher, publishing, params)
        for row in publishing:
            mark_done(client, row)
            done.append(describe(row))
    after = [item for item in before if item not in done] if client.check_mode else [describe(row) for row in pending_rows(client)]
    return {
        "changed": bool(done) or bool(released),
        "applied": done,
        "released": released,
        "pending": after,
        "queries": list(client.queries),
        "diff": {"before": {"pending": before}, "after": {"pending": after}},
    }


# DDL a frozen subscriber's apply worker cannot run -------------------------------------------------
def received_log_id(client) -> int:
    return client.query_one(sql.SQL("SELECT coalesce(max(id), 0) AS id FROM {}").format(log_table_ident()))["id"]


def release_if_frozen(client, publisher, params: dict) -> list[int]:
    """pg_ddl_apply on a frozen subscriber (blue after the cutover) with publisher and subscription:
    the DDL its apply worker stopped on, released (check mode: the ids it would wait for and release)."""
    if publisher is None or not params.get("subscription") or not pg_readonly.read_state(client, "instance")["readonly"]:
        return []
    subscription = check_identifier(params["subscription"], "subscription")
    if client.check_mode:
        rows = publisher.query(sql.SQL("SELECT id FROM {} WHERE id > %s ORDER BY id").format(log_table_ident()), (received_log_id(client),))
        return [row["id"] for row in rows]
    pg_readonly.keep_session_writable(client)
    return release_frozen_ddl(client, publisher, subscription, Deadline(params.get("timeout") or 600))


FROZEN_REASON = "frozen read-only"  # in ddl_sql's message for DDL the apply worker cannot run on a frozen server


def stopped_on(subscriber, subscription: str, entry_id: int):
    """A probe: whether the subscription's apply worker is now failing on the frozen-server error for
    ddl_log id `entry_id` (the server log names it: the error text is nowhere else)."""
    watch = ApplyWatch(subscriber, [subscription])

    def probe() -> bool:
        try:
            watch.check()
        except PgError as exc:
            return FROZEN_REASON in str(exc) and f"(ddl_log id {entry_id})" in str(exc)
        return False

    return probe


def release_frozen_ddl(subscriber, publisher, subscription: str, deadline: Deadline, log=lambda message: None) -> list[int]:
    """Apply, from this writable session, the DDL that the apply worker of a frozen subscriber stopped on
    - the old primary after a switchover receiving the new primary's deploys: its worker's transactions
    are read-only, so rows apply but DDL cannot. One command at a time, in the publisher's log order,
    and only once the worker's error names that very command (a drop applied ahead of the rows before
    it would break them). The row is inserted as the apply worker would insert it
    (session_replication_role replica: the apply trigger translates it onto this server's tables),
    removed again and its id recorded in ddl_resolved, so the worker's own insert, when it retries,
    changes nothing more. Commands of one transaction of the publisher are released one after the
    other as the worker's retries reach each. Returns the ids released by this call."""
    released: list[int] = []
    pending_query = sql.SQL("SELECT pg_catalog.to_jsonb(l) AS entry FROM {} l WHERE l.id > %s ORDER BY l.id LIMIT 100").format(
        log_table_ident()
    )
    resolved_query = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(ident(SCHEMA, RESOLVED_TABLE))
    while True:
        received = received_log_id(subscriber)
        pending = [row["entry"] for row in publisher.query(pending_query, (received,))]
        if not pending:
            return released
        resolved = {row["id"] for row in subscriber.query(resolved_query, ([entry["id"] for entry in pending],))}
        unresolved = [entry for entry in pending if entry["id"] not in resolved]
        if not unresolved:  # all released: the worker's retry brings them
            last = pending[-1]["id"]
            poll(lambda last=last: received_log_id(subscriber) >= last, deadline, not_applied(subscriber, subscription, pending[-1]))
            continue
        entry = unresolved[0]

        stopped = stopped_on(subscriber, subscription, entry["id"])

        def stopped_or_received(stopped=stopped, received=received):
            return received_log_id(subscriber) > received or stopped()

        poll(stopped_or_received, deadline, not_applied(subscriber, subscription, entry), interval=0.2)
        if received_log_id(subscriber) > received:
            continue  # the worker moved on by itself: look again
        release(subscriber, entry, deadline)
        released.append(entry["id"])
        log(f"DDL ddl_log id {entry['id']} ({entry['command_tag']} {entry.get('object_identity')}) applied on frozen {subscriber.endpoint}")


def not_applied(subscriber, subscription: str, entry: dict):
    def timed_out(_last):
        raise PgError(
            f"subscription '{subscription}' on {subscriber.endpoint} has not applied DDL ddl_log id {entry['id']} "
            f"({entry['command_tag']} {entry.get('object_identity')}) from the publisher within the deadline, and its apply "
            f"worker was not seen stopped on it as a frozen server (its error is read from the server log: the login needs "
            f"pg_read_server_files or superuser): see the apply worker's error in the subscriber's log"
        )

    return timed_out


def release(subscriber, entry: dict, deadline: Deadline) -> None:
    """One command applied on the frozen subscriber as its apply worker would apply it, in one transaction."""
    bound_ms = max(int(deadline.remaining() * 1000), 1)
    with subscriber.transaction():
        # the trigger's ALTER TABLE waits for readers of the table: never past the caller's deadline
        subscriber.query(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(bound_ms)))
        subscriber.query(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(bound_ms)))
        subscriber.execute("SET LOCAL session_replication_role = replica")
        subscriber.execute(
            sql.SQL("INSERT INTO {} SELECT * FROM pg_catalog.jsonb_populate_record(NULL::{}, %s)").format(
                log_table_ident(), log_table_ident()
            ),
            (Jsonb(entry),),
        )
        subscriber.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(log_table_ident()), (entry["id"],))
        subscriber.execute(
            sql.SQL("INSERT INTO {} (id) VALUES (%s) ON CONFLICT (id) DO NOTHING").format(ident(SCHEMA, RESOLVED_TABLE)),
            (entry["id"],),
        )
