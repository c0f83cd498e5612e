# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sequence values from a source (blue) to a target (green), plus a margin.

Logical replication does not carry sequences, so after the write freeze every sequence of the
target must be moved past the highest value the source may have handed out. Column-owned
(serial, identity) and standalone sequences are treated alike.

Rules:

* The source's value is the last value it handed out: pg_sequences.last_value (which covers
  values cached by sessions). A sequence whose last_value is NULL and whose next value is still
  its START was never used: the target is left alone. One set with setval(seq, n, false) and not
  used since counts as n - increment (n is the next value it would hand out).
* new = source value + margin (minus for a descending sequence). It must stay within the
  target's MINVALUE/MAXVALUE: otherwise the run fails, naming the sequence, before any change.
* The target only moves forward: setval(seq, new, true) runs when the target's own position is
  behind `new`; a target already ahead is left alone (gaps are harmless, collisions are not).
* A source sequence missing on the target is an error naming it, before any change.

Sequences are not transactional in PostgreSQL: a setval is not undone by ROLLBACK. So every
check happens before the first setval, and all setvals go to the server as one statement (one
round trip, inside one transaction block).
"""

from __future__ import annotations

import contextlib

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, ident

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql

DEFAULT_MARGIN = 1000

# Catalog facts and the value of every sequence in the schemas asked for (all non-system schemas
# when %(schemas)s is NULL). last_value is NULL when the sequence is not "called" (never used, or
# set with is_called = false): such rows get a second look at the sequence itself.
SEQUENCES_QUERY = (
    "SELECT c.oid, n.nspname AS schema, c.relname AS name, s.seqincrement AS increment, s.seqmin AS min_value, "
    "s.seqmax AS max_value, s.seqstart AS start_value, s.seqcycle AS cycle, pg_catalog.format_type(s.seqtypid, NULL) AS type, "
    "pg_catalog.has_sequence_privilege(c.oid, 'SELECT') OR pg_catalog.has_sequence_privilege(c.oid, 'USAGE') AS readable, "
    "CASE WHEN pg_catalog.has_sequence_privilege(c.oid, 'SELECT') OR pg_catalog.has_sequence_privilege(c.oid, 'USAGE') "
    "THEN pg_catalog.pg_sequence_last_value(c.oid) END AS last_value "
    "FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid "
    "WHERE c.relkind = 'S' AND NOT pg_catalog.pg_is_other_temp_schema(n.oid) AND ("
    "  (%(schemas)s::text[] IS NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)') "
    "  OR n.nspname = ANY(%(schemas)s::text[])) "
    "AND (%(names)s::text[] IS NULL OR (n.nspname::text, c.relname::text) IN "
    "  (SELECT u.schema, u.name FROM unnest(%(names)s::text[], %(relnames)s::text[]) AS u(schema, name))) "
    "ORDER BY n.nspname, c.relname"
)


def qualified(schema: str, name: str) -> str:
    """How results name a sequence: schema.name, unquoted (as pg_sequences shows it)."""
    return f"{schema}.{name}"


def selected(rows: list[dict], wanted: list[str] | None) -> list[dict]:
    """The rows the `sequences` option asks for: each entry matches a sequence by its
    schema-qualified name (schema.name) or by its bare name (in any selected schema). An entry
    that matches nothing is an error."""
    if not wanted:
        return rows
    unmatched = [entry for entry in wanted if not any(entry in (qualified(r["schema"], r["name"]), r["name"]) for r in rows)]
    if unmatched:
        raise PgError(
            f"sequence(s) not found on the source: {', '.join(unmatched)}: give schema.name or the bare name of a sequence "
            f"in the schemas searched"
        )
    return [row for row in rows if qualified(row["schema"], row["name"]) in wanted or row["name"] in wanted]


def position(row: dict, source: bool) -> int | None:
    """The last value the sequence handed out (or the value just before the next one).

    Called sequences: last_value. Not called: the value stored is the next one to hand out, so
    the position is that minus the increment; on the source, a not-called sequence still at its
    START was never used, which is None (there is nothing the target could collide with)."""
    if row["last_value"] is not None:
        return row["last_value"]
    if source and row["next_value"] == row["start_value"]:
        return None
    return row["next_value"] - row["increment"]


def plan(source_rows: list[dict], target_rows: list[dict], margin: int) -> list[dict]:
    """What to do to each sequence of the source; raises PgError (listing every problem) when
    a sequence is missing on the target or its new value would leave the target's bounds.

    Rows carry schema, name, increment, min_value, max_value, start_value, last_value (NULL when
    not called) and next_value (the stored value, needed when not called)."""
    if margin is None or margin < 0:
        raise PgError(f"margin must be 0 or more, not {margin}")
    targets = {(row["schema"], row["name"]): row for row in target_rows}
    missing = [qualified(row["schema"], row["name"]) for row in missing_on_target(source_rows, target_rows)]
    if missing:
        raise PgError(
            f"{len(missing)} sequence(s) of the source are missing on the target: {', '.join(missing)}. "
            f"Create them on the target (apply the schema) or leave them out with schemas/sequences; nothing was changed"
        )
    entries, problems = [], []
    for row in source_rows:
        target = targets[(row["schema"], row["name"])]
        name = qualified(row["schema"], row["name"])
        source_value = position(row, source=True)
        old = target["last_value"]
        entry = {"name": name, "source_value": source_value, "old_target_value": old, "new_target_value": old, "changed": False}
        entries.append(entry)
        if source_value is None:
            continue  # never used on the source: nothing to collide with
        direction = 1 if row["increment"] > 0 else -1
        if (target["increment"] > 0) != (direction > 0):
            problems.append(
                f"{name} ascends on one side and descends on the other (increment {row['increment']} on the source, "
                f"{target['increment']} on the target)"
            )
            continue
        new = source_value + direction * margin
        if new > target["max_value"] or new < target["min_value"]:
            bound = "MAXVALUE" if new > target["max_value"] else "MINVALUE"
            limit = target["max_value"] if new > target["max_value"] else target["min_value"]
            problems.append(f"{name}: {source_value} {'+' if direction > 0 else '-'} margin {margin} = {new} is beyond its {bound} {limit}")
            continue
        if direction * position(target, source=False) < direction * new:
            entry.update(new_target_value=new, changed=True)
    if problems:
        raise PgError(
            f"cannot move {len(problems)} sequence(s) on the target: {'; '.join(problems)}. "
            f"Lower margin, or ALTER SEQUENCE ... on the target; nothing was changed"
        )
    return entries


def missing_on_target(source_rows: list[dict], target_rows: list[dict]) -> list[dict]:
    """The source's rows whose sequence (same schema and name) the target lacks."""
    targets = {(row["schema"], row["name"]) for row in target_rows}
    return [row for row in source_rows if (row["schema"], row["name"]) not in targets]


def list_sequences(client: Client, schemas: list[str] | None = None, names: list[tuple[str, str]] | None = None) -> list[dict]:
    """The catalog facts of every sequence in `schemas` (all non-system schemas when None), or of
    exactly `names` ((schema, name) pairs): one query; last_value only where the role may read it."""
    return client.query(
        SEQUENCES_QUERY,
        {
            "schemas": schemas,
            "names": [pair[0] for pair in names] if names is not None else None,
            "relnames": [pair[1] for pair in names] if names is not None else None,
        },
    )


def missing_sequences(source_client: Client, target_client: Client) -> list[dict]:
    """Every sequence the source has (all non-system schemas: what sync_sequences moves) that the
    target lacks, with the source's definition (type, increment, bounds, start, cycle)."""
    source_rows = list_sequences(source_client)
    if not source_rows:
        return []
    target_rows = list_sequences(target_client, names=[(row["schema"], row["name"]) for row in source_rows])
    return missing_on_target(source_rows, target_rows)


def create_statement(row: dict):
    """CREATE SEQUENCE with the source's definition (a psycopg Composable; the name is quoted by psycopg,
    the numbers are int()s: psycopg's Literal would write a negative one with a leading space)."""
    numbers = [sql.SQL(str(int(row[key]))) for key in ("increment", "min_value", "max_value", "start_value")]
    return sql.SQL("CREATE SEQUENCE {} AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {}{}").format(
        ident(row["schema"], row["name"]), sql.SQL(row["type"]), *numbers, sql.SQL(" CYCLE" if row.get("cycle") else "")
    )


def read_sequences(client: Client, schemas: list[str] | None = None, names: list[tuple[str, str]] | None = None) -> list[dict]:
    """Every sequence in `schemas` (all non-system schemas when None), or exactly `names`
    ((schema, name) pairs), with its value. One query, plus one for the not-called ones."""
    rows = list_sequences(client, schemas, names)
    unreadable = [qualified(row["schema"], row["name"]) for row in rows if not row["readable"]]
    if unreadable:
        raise PgError(
            f"role '{client.params.get('login_user')}' on {client.endpoint} may not read sequence(s) {', '.join(unreadable)}: "
            f"GRANT SELECT ON SEQUENCE ... to it, or connect as their owner or a superuser"
        )
    not_called = [row for row in rows if row["last_value"] is None]
    stored = {}
    if not_called:
        statement = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::oid AS oid, last_value FROM {}").format(sql.Literal(row["oid"]), ident(row["schema"], row["name"]))
            for row in not_called
        )
        stored = {row["oid"]: row["last_value"] for row in client.query(statement)}
    for row in rows:
        row["next_value"] = stored.get(row["oid"]) if row["last_value"] is None else None
    return rows


def check_schemas(client: Client, schemas: list[str] | None, rows: list[dict]) -> None:
    """A schema asked for that does not exist on the source is a typo worth failing on."""
    if not schemas:
        return
    empty = sorted(set(schemas) - {row["schema"] for row in rows})
    if not empty:
        return
    found = {row["nspname"] for row in client.query("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(%s)", (empty,))}
    absent = [schema for schema in empty if schema not in found]
    if absent:
        raise PgError(f"schema(s) {', '.join(absent)} do not exist on the source {client.endpoint}: fix schemas")


def set_values(client: Client, changes: list[tuple[str, str, int]]) -> None:
    """setval(seq, value, true) for every (schema, name, value): one statement, one round trip.
    The sequence is named by its quoted identifier, parsed by the server as a regclass."""
    if not changes:
        return
    values = sql.SQL(", ").join(
        sql.SQL("({}, {})").format(sql.Literal(client.render(ident(schema, name))), sql.Literal(value)) for schema, name, value in changes
    )
    statement = sql.SQL("SELECT pg_catalog.setval(v.seq::regclass, v.value::bigint, true) FROM (VALUES {}) AS v(seq, value)").format(values)
    if client.check_mode:
        client.execute(statement)  # recorded, not run
        return
    with client.transaction():
        client.execute(statement)


def sync_sequences(
    source_client: Client,
    target_client: Client,
    margin: int = DEFAULT_MARGIN,
    schemas: list[str] | None = None,
    sequences: list[str] | None = None,
) -> dict:
    """Copy the source's sequence values to the target plus `margin`; the target never moves
    backwards. One query on each side (two when some sequences were never called) and one
    statement of setvals. Returns changed and the per-sequence figures; check mode (the target
    client's) computes and reports without setting anything."""
    source_rows = read_sequences(source_client, schemas)
    check_schemas(source_client, schemas, source_rows)
    source_rows = selected(source_rows, sequences)
    target_rows = read_sequences(target_client, names=[(row["schema"], row["name"]) for row in source_rows]) if source_rows else []
    entries = plan(source_rows, target_rows, margin)
    # plan() returns one entry per source row, in the same order
    changes = [
        (row["schema"], row["name"], entries[index]["new_target_value"])
        for index, row in enumerate(source_rows)
        if entries[index]["changed"]
    ]
    set_values(target_client, changes)
    return {"changed": bool(changes), "sequences": entries}
