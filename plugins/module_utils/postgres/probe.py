# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a client sees through an endpoint (a PgBouncer, an HAProxy frontend, a server): the
server its session reaches, and optionally a marker row written through it and looked up on
other servers (the write probes of the cutover and of its verification).

Statements are built here from options, never taken as text: names go through
identifiers.check_identifier / parse_qualified_name and into statements through psycopg.sql
only; values are parameters. The write goes through Client.execute (recorded, skipped in check
mode); everything else is a read.
"""

from __future__ import annotations

import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import (
    check_identifier,
    format_qualified_name,
    parse_qualified_name,
)

try:
    from psycopg import sql
    from psycopg.types.json import Jsonb
except ImportError:  # reported by the module through missing_required_lib
    sql = Jsonb = None

# The facts of the server the session reached. Through PgBouncer in transaction pooling each
# transaction may use another server connection: a write probe reads them in its transaction.
SERVER_QUERY = (
    "SELECT pg_catalog.host(pg_catalog.inet_server_addr()) AS address, pg_catalog.inet_server_port() AS port, "
    "pg_catalog.pg_is_in_recovery() AS in_recovery, "
    "pg_catalog.current_setting('transaction_read_only') = 'on' AS read_only, "
    "pg_catalog.current_database() AS database, CURRENT_USER AS user, "
    "pg_catalog.current_setting('server_version') AS version, "
    "(SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS system_identifier"
)
TABLE_QUERY = (
    "SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s"
)
COLUMNS_QUERY = (
    "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped"
)
# system_identifier tells two servers apart where the port cannot (blue and green both on 5432
# on their own hosts): it is set by initdb, kept by a physical replica, new for every other server.
EXPECTED_FACTS = ("port", "address", "system_identifier", "in_recovery", "read_only")
POLL_INTERVAL = 0.2


def no_prepared_statements(client) -> None:
    """PgBouncer in transaction pooling may run the next statement on another server connection,
    where a statement psycopg prepared does not exist: never prepare."""
    client.conn.prepare_threshold = None


def server_facts(client) -> dict:
    return dict(client.query_one(SERVER_QUERY))


def mismatches(facts: dict, expect: dict | None) -> list[str]:
    """What the server has for each fact of `expect` (set, not None) it does not match, as
    "address '127.0.0.11', expected '127.0.0.12'"."""
    found = []
    for name in EXPECTED_FACTS:
        wanted = (expect or {}).get(name)
        if wanted is not None and facts.get(name) != wanted:
            found.append(f"{name} {facts.get(name)!r}, expected {wanted!r}")
    return found


def check_expected(client, facts: dict, expect: dict | None, writing: bool) -> None:
    wrong = mismatches(facts, expect)
    if wrong:
        raise PgError(
            f"through {client.endpoint} the session reached a server with {'; '.join(wrong)} "
            f"(server {facts.get('address')}:{facts.get('port')}, database {facts.get('database')}): the endpoint does not "
            f"lead where it should. Check where it points (PgBouncer pool, HAProxy primary) or fix expect"
            + ("; nothing was written" if writing else ""),
            server=facts,
        )


def parse_write(write: dict) -> dict:
    """The write option checked: schema, table, the columns of `values`, the key column."""
    schema, table = parse_qualified_name(write.get("table"))
    values = write.get("values") or {}
    if not isinstance(values, dict) or not values:
        raise PgError("write.values must map at least one column to its value: give the marker row to write")
    for column in values:
        check_identifier(column, "column of write.values")
    key = check_identifier(write.get("key") or "id", "write.key")
    return {"schema": schema, "table": table, "values": values, "key": key, "name": format_qualified_name(schema, table)}


def check_table(client, target: dict, columns, where: str) -> None:
    """Fail, naming the fix, unless the table exists on this server with these columns."""
    row = client.query_one(TABLE_QUERY, (target["schema"], target["table"]))
    if row is None or row["relkind"] not in ("r", "p"):
        what = "does not exist" if row is None else "is not a table"
        raise PgError(
            f"table {target['name']} {what} on {client.endpoint} ({where}): create it, or fix write.table "
            f"(schema.table, names as the catalog stores them); nothing was written"
        )
    present = {row["attname"] for row in client.query(COLUMNS_QUERY, (target["schema"], target["table"]))}
    unknown = sorted(set(columns) - present)
    if unknown:
        raise PgError(
            f"table {target['name']} on {client.endpoint} ({where}) has no column {', '.join(repr(c) for c in unknown)}: "
            f"fix write.values / write.key; nothing was written"
        )


def parameter(value):
    """A value as a statement parameter: a dict or a list is passed as jsonb."""
    return Jsonb(value) if isinstance(value, (dict, list)) else value


def find_row(client, target: dict):
    """The key of the newest row equal to write.values on every column, or None."""
    columns = list(target["values"])
    statement = sql.SQL("SELECT {key} AS key FROM {table} WHERE {conditions} ORDER BY {key} DESC LIMIT 1").format(
        key=sql.Identifier(target["key"]),
        table=sql.Identifier(target["schema"], target["table"]),
        conditions=sql.SQL(" AND ").join(sql.SQL("{} IS NOT DISTINCT FROM %s").format(sql.Identifier(column)) for column in columns),
    )
    row = client.query_one(statement, [parameter(target["values"][column]) for column in columns])
    return None if row is None else row["key"]


def insert_row(client, target: dict) -> None:
    columns = list(target["values"])
    statement = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({placeholders})").format(
        table=sql.Identifier(target["schema"], target["table"]),
        columns=sql.SQL(", ").join(sql.Identifier(column) for column in columns),
        placeholders=sql.SQL(", ").join(sql.Placeholder() for _column in columns),
    )
    client.execute(statement, [parameter(target["values"][column]) for column in columns])


def wait_visible(client, target: dict, key_value, deadline: Deadline, sleep) -> dict:
    """Poll this server until the row with key_value is there or the deadline passes."""
    statement = sql.SQL("SELECT 1 AS found FROM {table} WHERE {key} = %s").format(
        table=sql.Identifier(target["schema"], target["table"]), key=sql.Identifier(target["key"])
    )
    started = deadline.clock()
    found = poll(lambda: client.query_one(statement, (key_value,)) is not None, deadline, None, interval=POLL_INTERVAL, sleep=sleep)
    return {"server": client.endpoint, "found": found, "waited_s": round(deadline.clock() - started, 3)}


def probe(client, others: list, params: dict, clock=time.monotonic, sleep=time.sleep) -> dict:
    """What the pg_probe module does. `client` is the endpoint; `others` the servers of visible_on."""
    timeout = params.get("visible_timeout") or 0
    if timeout < 0:
        raise PgError(f"visible_timeout must be 0 or more, got {timeout}")
    for connection in [client, *others]:
        no_prepared_statements(connection)
    write = params.get("write")
    if not write:
        if others:
            raise PgError("visible_on needs write: only a row written by the probe can be looked up on other servers")
        facts = server_facts(client)
        check_expected(client, facts, params.get("expect"), writing=False)
        return {"changed": False, "endpoint": client.endpoint, "server": facts, "row": None, "visible_on": [], "queries": client.queries}

    target = parse_write(write)
    check_table(client, target, [*target["values"], target["key"]], "the endpoint")
    for index, other in enumerate(others):
        check_table(other, target, [target["key"]], f"visible_on[{index}]")
    with client.transaction():  # one server connection, also through PgBouncer: facts, lookup, write
        facts = server_facts(client)
        check_expected(client, facts, params.get("expect"), writing=True)
        key_value = find_row(client, target)
        written = key_value is None
        if written:
            insert_row(client, target)
            if not client.check_mode:
                key_value = find_row(client, target)
    result = {
        "changed": written,
        "endpoint": client.endpoint,
        "server": facts,
        "row": None if key_value is None else {target["key"]: key_value},
        "visible_on": [],
        "queries": client.queries,
    }
    if key_value is None:  # check mode, row not written: nothing to look for elsewhere
        return result
    deadline = Deadline(timeout, clock=clock)
    for other in others:
        result["visible_on"].append(wait_visible(other, target, key_value, deadline, sleep))
    missing = [entry["server"] for entry in result["visible_on"] if not entry["found"]]
    if missing:
        details = {key: value for key, value in result.items() if key != "queries"}
        raise PgError(
            f"the row {target['key']} = {key_value} of {target['name']} "
            f"{'written' if written else 'found'} through {client.endpoint} is not on {', '.join(missing)} after {timeout:g} s "
            f"(visible_timeout): check the replication to that server (subscription enabled and streaming, "
            f"apply errors in its log) or raise visible_timeout",
            **details,
        )
    return result
