# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Schema drift between blue (the source) and green (the target) of logical replication.

Logical replication does not carry DDL: a column added on blue and not on green stops green's
apply worker at the first row that sets it. This compares the definitions of every replicated
table (a publication's tables, or a list) and classifies each difference:

* blocking - rows would fail to apply: a table or column blue sends that green lacks, a type
  green cannot take blue's text form in, NOT NULL on green where blue may send NULL (or sends
  nothing at all: a NOT NULL column only green has, without a default), a generated column on
  green that blue sends, a key green finds rows by that blue does not send (replica identity),
  a sequence the cutover's sequence sync needs that green lacks or holds in a narrower type.
* hazards - what logical replication carries for no table at all, found on blue: large objects
  green lacks (pg_largeobject is never replicated), unlogged tables (no publication can hold
  them: their rows never reach green), a replicated table without a replica identity (blue
  refuses its UPDATEs and DELETEs once published, green could not find the rows), a sequence
  green lacks (the cutover's sequence sync stops on it). Each is blocking and named with its
  fix; an unlogged table listed in allow_unlogged_tables is harmless (its rows are not migrated:
  the DBA said so).
* harmless - green has extra nullable or defaulted columns, a wider type, a different primary
  key that is still usable, or is partitioned where blue is not (or differently).

The rule for keys is the apply worker's own (PostgreSQL's logicalrep_rel_mark_updatable): green
finds a row by its replica identity index, else its primary key; every column of that key must
be in the key blue sends (its replica identity index or primary key; every column with REPLICA
IDENTITY FULL). Without either on green, blue must send FULL.

Reads only (Client.query), so check mode is the same run. Columns come from compare.COLUMNS_QUERY,
the catalogue read pg_compare uses; every name reaches SQL through psycopg.sql only, and the fixes
are rendered by psycopg too.
"""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident, sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.compare import COLUMNS_QUERY
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import (
    check_identifier,
    format_qualified_name,
    split_qualified_name,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sequences import create_statement, missing_sequences

BLOCKING = "blocking"
HARMLESS = "harmless"
FAIL_ON = ("blocking", "any", "none")

RELATION_QUERY = (
    "SELECT c.oid, c.relkind, c.relreplident, c.relispartition, c.relpersistence, "
    "CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END AS partition_key, "
    # The primary key's and the replica identity index's columns, in index order (key columns only).
    "(SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_catalog.pg_index i "
    "  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "  WHERE i.indrelid = c.oid AND i.indisprimary AND k.ord <= i.indnkeyatts) AS primary_key, "
    "(SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_catalog.pg_index i "
    "  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "  WHERE i.indrelid = c.oid AND i.indisreplident AND k.ord <= i.indnkeyatts) AS identity_index "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s"
)

# Sequences owned by a column of the table: serial (deptype a) and identity (deptype i).
OWNED_SEQUENCES_QUERY = (
    "SELECT a.attname AS column, sn.nspname AS schema, s.relname AS name, "
    "pg_catalog.format_type(q.seqtypid, NULL) AS type, d.deptype = 'i' AS identity "
    "FROM pg_catalog.pg_depend d "
    "JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
    "JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace "
    "JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass "
    "AND d.refobjid = %s AND d.deptype IN ('a', 'i') ORDER BY a.attnum"
)

# Unlogged tables (and partitioned parents) of every non-system schema: no publication can hold them.
UNLOGGED_TABLES_QUERY = (
    "SELECT n.nspname AS schema, c.relname AS name FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)' ORDER BY 1, 2"
)
# pg_largeobject_metadata is readable by every role (pg_largeobject, the data, is not).
# Blue's large objects a page at a time (after an OID, %s rows): millions are not read at once.
LARGE_OBJECTS_QUERY = "SELECT oid::bigint AS oid FROM pg_catalog.pg_largeobject_metadata WHERE oid::bigint > %s ORDER BY oid LIMIT %s"
LARGE_OBJECTS_PAGE = 10000
# Of blue's large objects (%s, their OIDs), those green has no large object of that OID for.
MISSING_LARGE_OBJECTS_QUERY = (
    "SELECT b.oid FROM unnest(%s::bigint[]) AS b(oid) WHERE NOT EXISTS "
    "(SELECT 1 FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = b.oid::oid) ORDER BY 1"
)
SHOWN = 10  # how many OIDs a message lists

PUBLICATION_QUERY = "SELECT p.oid, p.pubupdate OR p.pubdelete AS keyed FROM pg_catalog.pg_publication p WHERE p.pubname = %s"
# pg_publication_tables resolves FOR ALL TABLES, FOR TABLES IN SCHEMA and publish_via_partition_root.
PUBLICATION_TABLES_QUERY = "SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = %s ORDER BY 1, 2"

# Integer-like types ordered by range; a type may move right (a wider one) on green, never left.
INTEGER_RANK = {"int2": 1, "int4": 2, "int8": 3, "numeric": 4}
FLOAT_RANK = {"float4": 1, "float8": 2}
TEXT_TYPES = ("varchar", "text", "bpchar")
SEQUENCE_RANK = {"smallint": 1, "integer": 2, "bigint": 3}
WIDER = "green's type holds every value of blue's"
RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence"}


# Pure logic --------------------------------------------------------------------------------
def varchar_length(column: dict) -> int | None:
    """The n of varchar(n) / char(n); None when unbounded."""
    return column["typmod"] - 4 if column["typmod"] >= 4 else None


def numeric_shape(column: dict) -> tuple[int, int] | None:
    """(precision, scale) of numeric(p, s); None when unconstrained."""
    if column["typmod"] < 4:
        return None
    modifier = column["typmod"] - 4
    return (modifier >> 16) & 0xFFFF, modifier & 0xFFFF


def type_verdict(blue: dict, green: dict) -> str | None:
    """None when green's column takes every value of blue's as is; 'widened' when green's type
    is wider (harmless); 'incompatible' when a value of blue's could fail or change on green."""
    if blue["type"] == green["type"]:
        return None
    b, g = blue["type_name"], green["type_name"]
    if b in INTEGER_RANK and g in INTEGER_RANK:
        if g == "numeric" and b == "numeric":
            blue_shape, green_shape = numeric_shape(blue), numeric_shape(green)
            if green_shape is None:
                return "widened"
            if blue_shape is None:
                return "incompatible"
            (bp, bs), (gp, gs) = blue_shape, green_shape
            return "widened" if gs >= bs and gp - gs >= bp - bs else "incompatible"
        if g == "numeric" and numeric_shape(green) is not None:
            return "incompatible"  # numeric(p, s) may be too narrow for an integer
        return "widened" if INTEGER_RANK[g] > INTEGER_RANK[b] else "incompatible"
    if b in FLOAT_RANK and g in FLOAT_RANK:
        return "widened" if FLOAT_RANK[g] > FLOAT_RANK[b] else "incompatible"
    if b in ("varchar", "text") and g in ("varchar", "text"):
        green_length, blue_length = (None if g == "text" else varchar_length(green)), (None if b == "text" else varchar_length(blue))
        if green_length is None or (blue_length is not None and green_length >= blue_length):
            return "widened"
        return "incompatible"
    if b == "bpchar" and g in ("varchar", "text"):
        green_length = None if g == "text" else varchar_length(green)
        return "widened" if green_length is None or green_length >= (varchar_length(blue) or 1) else "incompatible"
    if b == "json" and g == "jsonb":
        return "widened"
    if b == "timestamp" and g == "timestamptz":
        return "widened"
    return "incompatible"


def key_columns(table: dict) -> list[str] | None:
    """The columns blue sends to identify a row (every column with FULL); None when it sends none."""
    if table["relreplident"] == "f":
        return list(table["columns"])
    if table["relreplident"] == "i" and table["identity_index"]:
        return list(table["identity_index"])
    if table["relreplident"] == "d" and table["primary_key"]:
        return list(table["primary_key"])
    return None


def lookup_key(table: dict) -> list[str] | None:
    """The columns green's apply worker finds a row by: its replica identity index, else its primary key."""
    if table["relreplident"] == "i" and table["identity_index"]:
        return list(table["identity_index"])
    return list(table["primary_key"]) if table["primary_key"] else None


def describe_identity(table: dict) -> str:
    identity = table["relreplident"]
    if identity == "f":
        return "FULL"
    if identity == "n":
        return "NOTHING"
    if identity == "i":
        return f"USING INDEX ({', '.join(table['identity_index'] or [])})"
    return f"DEFAULT (primary key {', '.join(table['primary_key'])})" if table["primary_key"] else "DEFAULT (no primary key)"


def describe_column(column: dict | None) -> str | None:
    if column is None:
        return None
    text = column["type"] + (" NOT NULL" if column["not_null"] else "")
    if column["identity"]:
        text += " (identity)"
    elif column["generated"]:
        text += " (generated)"
    elif column["has_default"]:
        text += " (default)"
    return text


def difference(kind: str, table: str | None, severity: str, blue, green, why: str, fix=None, column: str | None = None, **extra) -> dict:
    """One difference; `fix` is SQL (psycopg Composable) to run on `fix_on` (green unless said), rendered later."""
    entry = {
        "kind": kind,
        "table": table,
        "column": column,
        "object": f"{table}.{column}" if column is not None else table,
        "severity": severity,
        "blue": blue,
        "green": green,
        "why": why,
        "fix": fix,
        "fix_on": "green" if fix is not None else None,
    }
    entry.update(extra)
    return entry


def table_differences(name: str, blue: dict, green: dict) -> list[dict]:
    """Every difference between blue's and green's definition of one table (both read by read_table)."""
    found = []
    relation = ident(blue["schema"], blue["name"])
    green_columns, blue_columns = green["columns"], blue["columns"]
    for column_name, column in blue_columns.items():
        other = green_columns.get(column_name)
        quoted = ident(column_name)
        if other is None:
            if column["generated"]:
                found.append(
                    difference(
                        "missing_column", name, HARMLESS, describe_column(column), None,
                        "a generated column on blue, which logical replication does not send", column=column_name,
                    )
                )  # fmt: skip
                continue
            found.append(
                difference(
                    "missing_column", name, BLOCKING, describe_column(column), None,
                    "blue sends this column and green has no column to put it in",
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(relation, quoted, sql.SQL(column["type"])),
                    column_name,
                )
            )  # fmt: skip
            continue
        if other["generated"] and not column["generated"]:
            found.append(
                difference(
                    "generated_column", name, BLOCKING, describe_column(column), describe_column(other),
                    "green computes this column itself and refuses the value blue sends",
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP EXPRESSION").format(relation, quoted), column_name,
                )
            )  # fmt: skip
        verdict = type_verdict(column, other)
        if verdict == "incompatible":
            found.append(
                difference(
                    "type", name, BLOCKING, column["type"], other["type"],
                    f"green's {other['type']} may reject or alter values of blue's {column['type']}",
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(relation, quoted, sql.SQL(column["type"])),
                    column_name,
                )
            )  # fmt: skip
        elif verdict == "widened":
            found.append(difference("type", name, HARMLESS, column["type"], other["type"], WIDER, column=column_name))
        if other["not_null"] and not column["not_null"] and not column["generated"]:
            found.append(
                difference(
                    "not_null", name, BLOCKING, "NULL allowed", "NOT NULL",
                    "a row from blue with NULL in this column fails on green",
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(relation, quoted), column_name,
                )
            )  # fmt: skip
        elif column["not_null"] and not other["not_null"]:
            found.append(
                difference("not_null", name, HARMLESS, "NOT NULL", "NULL allowed", "green accepts more than blue sends", column=column_name)
            )
    for column_name, other in green_columns.items():
        if column_name in blue_columns:
            continue
        if other["not_null"] and not (other["has_default"] or other["identity"] or other["generated"]):
            found.append(
                difference(
                    "extra_column", name, BLOCKING, None, describe_column(other),
                    "only green has this NOT NULL column without a default: rows from blue leave it NULL and fail",
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(relation, ident(column_name)), column_name,
                )
            )  # fmt: skip
        else:
            found.append(
                difference(
                    "extra_column", name, HARMLESS, None, describe_column(other),
                    "only green has this column; rows from blue leave it NULL or at its default", column=column_name,
                )
            )  # fmt: skip
    found.extend(key_differences(name, blue, green, relation))
    found.extend(sequence_differences(name, blue, green))
    if blue["partition_key"] != green["partition_key"]:
        found.append(
            difference(
                "partitioning", name, HARMLESS, blue["partition_key"] or "not partitioned", green["partition_key"] or "not partitioned",
                "rows are routed to green's partitions (each row needs a partition that accepts it)",
            )
        )  # fmt: skip
    return found


def no_replica_identity(name: str, blue: dict) -> dict | None:
    """The hazard of a replicated table blue sends no key for (NOTHING, DEFAULT without a primary key,
    an index that is gone): blue itself refuses its UPDATEs and DELETEs once they are published, and
    green could not find the rows. Fixed on blue and green alike (the reverse replication after the
    cutover needs it on green)."""
    if key_columns(blue) is not None:
        return None
    relation = ident(blue["schema"], blue["name"])
    return difference(
        "no_replica_identity", name, BLOCKING, describe_identity(blue), None,
        "blue sends no key for this table's rows: PostgreSQL refuses its UPDATEs and DELETEs on blue once published "
        "(\"does not have a replica identity and publishes updates\"), green could not find the rows, and the cutover "
        "refuses it. Add a primary key on both sides (green then finds rows by index), or REPLICA IDENTITY FULL on both "
        "(every UPDATE and DELETE then scans the table on the receiving side)",
        sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(relation),
        fix_on="blue and green",
    )  # fmt: skip


def insert_only(differences: list[dict], publication: str) -> None:
    """A publication of inserts only (publish = 'insert', an append-only log): no UPDATE or DELETE is
    sent, so a table without a key replicates; its no_replica_identity finding becomes harmless."""
    for entry in differences:
        if entry["kind"] == "no_replica_identity":
            entry["severity"] = HARMLESS
            entry["why"] = (
                f"blue sends no key for this table's rows, and publication {publication} publishes neither updates nor "
                f"deletes, so none is needed; publishing them later needs a primary key or REPLICA IDENTITY FULL first"
            )


def key_differences(name: str, blue: dict, green: dict, relation) -> list[dict]:
    sent, lookup = key_columns(blue), lookup_key(green)
    found = []
    blue_key = ", ".join(blue["primary_key"] or []) or None
    green_key = ", ".join(green["primary_key"] or []) or None
    if blue_key != green_key:
        found.append(
            difference(
                "primary_key",
                name,
                HARMLESS,
                blue_key,
                green_key,
                "the primary keys differ (replica_identity says whether green's is usable)",
            )
        )
    hazard = no_replica_identity(name, blue)
    if hazard is not None:  # blue sends no key at all: the fix is on blue (and green), not green's key
        found.append(hazard)
        return found
    usable = set(lookup or []) <= set(sent or []) if lookup else blue["relreplident"] == "f"
    if not usable:
        if lookup:
            why = (
                f"green finds rows by ({', '.join(lookup)}) but blue's replica identity sends only "
                f"({', '.join(sent or []) or 'nothing'}): UPDATE and DELETE fail to apply"
            )
        else:
            why = (
                "green has neither a primary key nor a replica identity index and blue does not send "
                "REPLICA IDENTITY FULL: UPDATE and DELETE fail to apply"
            )
        fix = None
        if sent and all(column in green["columns"] for column in sent):
            fix = sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(relation, sql.SQL(", ").join(ident(column) for column in sent))
            if lookup:  # green already has a key: replace it by blue's
                why += "; on green make a unique index on blue's key columns its replica identity, or on blue send more columns"
                fix = None
        found.append(difference("replica_identity", name, BLOCKING, describe_identity(blue), describe_identity(green), why, fix))
    elif blue["relreplident"] != green["relreplident"] or blue["identity_index"] != green["identity_index"]:
        found.append(
            difference(
                "replica_identity", name, HARMLESS, describe_identity(blue), describe_identity(green),
                "green's key is among the columns blue sends",
            )
        )  # fmt: skip
    return found


def sequence_differences(name: str, blue: dict, green: dict) -> list[dict]:
    found = []
    for column_name, sequence in blue["sequences"].items():
        qualified = format_qualified_name(sequence["schema"], sequence["name"])
        other = green["sequences"].get(column_name)
        blue_text = f"{qualified} ({sequence['type']})"
        if other is None:
            found.append(
                difference(
                    "sequence", name, BLOCKING, blue_text, None,
                    "green's column owns no sequence: the cutover's sequence sync and the application's inserts on green need it",
                    sql.SQL("CREATE SEQUENCE {} AS {} OWNED BY {}").format(
                        ident(sequence["schema"], sequence["name"]),
                        sql.SQL(sequence["type"]),
                        ident(blue["schema"], blue["name"], column_name),
                    ),
                    column_name,
                )
            )  # fmt: skip
            continue
        green_text = f"{format_qualified_name(other['schema'], other['name'])} ({other['type']})"
        if (other["schema"], other["name"]) != (sequence["schema"], sequence["name"]):
            found.append(
                difference(
                    "sequence", name, BLOCKING, blue_text, green_text,
                    "the sequences are named differently: the cutover's sequence sync matches them by name",
                    sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(ident(other["schema"], other["name"]), ident(sequence["name"])),
                    column_name,
                )
            )  # fmt: skip
        elif SEQUENCE_RANK.get(other["type"], 0) < SEQUENCE_RANK.get(sequence["type"], 0):
            found.append(
                difference(
                    "sequence", name, BLOCKING, blue_text, green_text,
                    "green's sequence is narrower than blue's: the synced value may not fit",
                    sql.SQL("ALTER SEQUENCE {} AS {}").format(ident(other["schema"], other["name"]), sql.SQL(sequence["type"])),
                    column_name,
                )
            )  # fmt: skip
        elif other["type"] != sequence["type"] or other["identity"] != sequence["identity"]:
            found.append(difference("sequence", name, HARMLESS, blue_text, green_text, WIDER, column=column_name))
    return found


def missing_table(name: str, blue: dict) -> dict:
    """A table green lacks, with the CREATE TABLE that takes blue's rows (columns and key)."""
    parts = [
        sql.SQL("{} {}{}").format(ident(column_name), sql.SQL(column["type"]), sql.SQL(" NOT NULL" if column["not_null"] else ""))
        for column_name, column in blue["columns"].items()
        if not column["generated"]
    ]
    key = key_columns(blue) if blue["relreplident"] != "f" else blue["primary_key"]
    if key:
        parts.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(ident(column) for column in key)))
    fix = sql.SQL("CREATE TABLE {} ({})").format(ident(blue["schema"], blue["name"]), sql.SQL(", ").join(parts))
    why = "blue replicates this table and green has no table of that name (create it, then ALTER SUBSCRIPTION ... REFRESH PUBLICATION)"
    return difference("missing_table", name, BLOCKING, RELKINDS.get(blue["relkind"], blue["relkind"]), None, why, fix)


def failure_message(differences: list[dict], fail_on: str) -> str | None:
    """The error for fail_on; None when the differences found do not fail the run."""
    failing = [d for d in differences if fail_on == "any" or (fail_on == "blocking" and d["severity"] == BLOCKING)]
    if not failing:
        return None
    what = "blocking difference(s)" if fail_on == "blocking" else "difference(s)"
    lines = []
    for entry in failing:
        sides = f"blue {entry['blue'] or 'none'}, green {entry['green'] or 'none'}"
        text = f"{entry['object']} ({entry['kind']}, {entry['severity']}): {sides}: {entry['why']}"
        if entry["fix"]:
            text += f"; fix on {entry.get('fix_on') or 'green'}: {entry['fix']}"
        lines.append(text)
    return f"schema drift between blue and green: {len(failing)} {what} that would break replication or the cutover: " + "; ".join(lines)


# Talking to the servers --------------------------------------------------------------------
def read_table(client, schema: str, name: str) -> dict | None:
    """The definition of one table on one side; None when there is none of that name."""
    row = client.query_one(RELATION_QUERY, (schema, name))
    if row is None:
        return None
    row["schema"], row["name"] = schema, name
    row["columns"] = {column["name"]: column for column in client.query(COLUMNS_QUERY, (row["oid"],))}
    row["sequences"] = {sequence["column"]: sequence for sequence in client.query(OWNED_SEQUENCES_QUERY, (row["oid"],))}
    return row


def replicated_tables(blue, params: dict) -> list[tuple[str, str]]:
    """(schema, table) of the publication's tables on blue, or of `tables`."""
    where = f"{blue.endpoint}, database {blue.params.get('login_db')}"
    publication = params.get("publication")
    if publication:
        check_identifier(publication, "publication")
        if blue.query_one(PUBLICATION_QUERY, (publication,)) is None:
            raise PgError(
                f"publication {publication} does not exist on the source ({where}): create it (phase 1, pg_publication) "
                f"or fix `publication`, or list the tables in `tables`"
            )
        return [(row["schemaname"], row["tablename"]) for row in blue.query(PUBLICATION_TABLES_QUERY, (publication,))]
    found = []
    for text in params.get("tables") or []:
        pair = split_qualified_name(text)
        if pair not in found:
            found.append(pair)
    return found


def unlogged_tables(blue, params: dict, tables: list[tuple[str, str]]) -> list[dict]:
    """Blue's unlogged tables: every one in the database with a publication (none can be in it, so
    their rows never reach green), the listed ones with `tables`. Those in allow_unlogged_tables
    are harmless: the DBA chose not to migrate their rows."""
    allowed = {split_qualified_name(text) for text in params.get("allow_unlogged_tables") or []}
    found = []
    for row in blue.query(UNLOGGED_TABLES_QUERY):
        pair = (row["schema"], row["name"])
        if not params.get("publication") and pair not in tables:
            continue
        display = format_qualified_name(*pair)
        if pair in allowed:
            found.append(
                difference(
                    "unlogged_table", display, HARMLESS, "UNLOGGED", None,
                    "listed in allow_unlogged_tables: its rows are not migrated (green keeps what it has)",
                )
            )  # fmt: skip
            continue
        found.append(
            difference(
                "unlogged_table", display, BLOCKING, "UNLOGGED", None,
                "an unlogged table: no publication can hold it, so none of its rows reach green. On blue make it logged "
                "(SET LOGGED rewrites it under an ACCESS EXCLUSIVE lock), add it to the publication unless it is FOR ALL "
                "TABLES (ALTER PUBLICATION ... ADD TABLE), then ALTER SUBSCRIPTION ... REFRESH PUBLICATION on green; or, "
                "if its rows need not move (a cache), list it in allow_unlogged_tables",
                sql.SQL("ALTER TABLE {} SET LOGGED").format(ident(*pair)),
                fix_on="blue",
            )
        )  # fmt: skip
    return found


def large_objects(blue, green) -> tuple[int, int, list[int]]:
    """How many large objects blue has, how many of them green has none of, and the first SHOWN
    of those OIDs (a message names no more). Read a page at a time."""
    total, missing, missing_count, after = 0, [], 0, -1
    while True:
        oids = [row["oid"] for row in blue.query(LARGE_OBJECTS_QUERY, (after, LARGE_OBJECTS_PAGE))]
        if not oids:
            return total, missing_count, missing
        total += len(oids)
        absent = [row["oid"] for row in green.query(MISSING_LARGE_OBJECTS_QUERY, (oids,))]
        missing_count += len(absent)
        missing.extend(absent[: max(0, SHOWN - len(missing))])
        after = oids[-1]


def large_objects_difference(total: int, missing_count: int, missing: list[int]) -> dict:
    shown = ", ".join(str(oid) for oid in missing) + (f" and {missing_count - len(missing)} more" if missing_count > len(missing) else "")
    entry = difference(
        "large_objects", None, BLOCKING, f"{total} large object(s)", f"{total - missing_count} of them",
        f"logical replication does not carry large objects (pg_largeobject): {missing_count} of blue's are not on green "
        f"(OIDs {shown}), and whatever references them would point at nothing after the cutover. Copy them to green with "
        f"their OIDs before the cutover, during the write freeze if they still change: pg_dump -Fc --blobs --data-only "
        f"of blue, then pg_restore -L with only its BLOB entries (pg_restore -l lists them) into green, or per object "
        f"SELECT lo_from_bytea(<oid>, <lo_get(<oid>) read on blue>) on green",
    )  # fmt: skip
    entry["object"] = "large objects"
    return entry


def sequence_hazards(blue, green, covered: set) -> list[dict]:
    """Blue's sequences (every non-system schema: what the cutover's sequence sync moves) that green
    lacks, except those owned by the compared tables' columns (sequence_differences names them)."""
    found = []
    for row in missing_sequences(blue, green):
        if (row["schema"], row["name"]) in covered:
            continue
        entry = difference(
            "missing_sequence", None, BLOCKING, row["type"], None,
            "blue has this sequence and green has none (created after green's schema): the cutover's sequence sync "
            "refuses before the pause, and inserts on green that draw from it would fail",
            create_statement(row),
        )  # fmt: skip
        entry["object"] = format_qualified_name(row["schema"], row["name"])
        found.append(entry)
    return found


def check_drift(blue, green, params: dict) -> dict:
    """Compare every replicated table, then look for what replication carries for no table (large
    objects, unlogged tables, sequences); the module's result (fails through PgError per fail_on)."""
    fail_on = params.get("fail_on") or "blocking"
    differences, compared, pending = [], [], []
    covered = set()  # sequences owned by the columns of the tables compared
    tables = replicated_tables(blue, params)
    for schema, name in tables:
        display = format_qualified_name(schema, name)
        blue_table = read_table(blue, schema, name)
        if blue_table is None or blue_table["relkind"] not in ("r", "p"):
            kind = "does not exist" if blue_table is None else f"is a {RELKINDS.get(blue_table['relkind'], blue_table['relkind'])}"
            raise PgError(
                f"table {display} {kind} on the source ({blue.endpoint}, database {blue.params.get('login_db')}): "
                f"fix `tables` (a name without a schema means public.<name>)"
            )
        green_table = read_table(green, schema, name)
        # Its columns' sequences are the table's (named by sequence_differences once green has it,
        # with OWNED BY), not separate missing sequences whose fix would then collide with that one.
        covered.update((sequence["schema"], sequence["name"]) for sequence in blue_table["sequences"].values())
        if green_table is None or green_table["relkind"] not in ("r", "p"):
            hazard = no_replica_identity(display, blue_table)
            if hazard is not None:  # blue's own problem, whether green has the table or not
                differences.append(hazard)
            if green_table is None and params.get("allow_missing_tables"):
                pending.append(display)
                continue
            entry = missing_table(display, blue_table)
            if green_table is not None:
                entry["green"] = RELKINDS.get(green_table["relkind"], green_table["relkind"])
                entry["why"] = "green has no table of that name to apply blue's rows to"
                entry["fix"] = None
            differences.append(entry)
            compared.append(display)
            continue
        differences.extend(table_differences(display, blue_table, green_table))
        compared.append(display)
    if params.get("publication") and not blue.query_one(PUBLICATION_QUERY, (params["publication"],))["keyed"]:
        insert_only(differences, params["publication"])
    differences.extend(unlogged_tables(blue, params, tables))
    total, missing_count, missing_objects = large_objects(blue, green)
    pending_objects = 0
    if missing_count and params.get("allow_missing_tables"):
        pending_objects = missing_count
    elif missing_count:
        differences.append(large_objects_difference(total, missing_count, missing_objects))
    pending_sequences = []
    for entry in sequence_hazards(blue, green, covered):
        if params.get("allow_missing_tables"):
            pending_sequences.append(entry["object"])
        else:
            differences.append(entry)
    for entry in differences:
        entry["fix"] = green.render(entry["fix"]) if entry["fix"] is not None else None
    blocking = sum(1 for entry in differences if entry["severity"] == BLOCKING)
    result = {
        "changed": False,
        "identical": not differences,
        "differences": differences,
        "blocking": blocking,
        "harmless": len(differences) - blocking,
        "tables": compared,
        "pending_tables": pending,
        "pending_sequences": pending_sequences,
        "pending_large_objects": pending_objects,
    }
    message = failure_message(differences, fail_on)
    if message:
        raise PgError(message, **{key: value for key, value in result.items() if key != "changed"})
    not_yet = pending + pending_sequences + ([f"{pending_objects} large object(s)"] if pending_objects else [])
    result["msg"] = f"{len(compared)} table(s) compared: {blocking} blocking and {result['harmless']} harmless difference(s)" + (
        f"; not on green yet (needed there before the cutover): {', '.join(not_yet)}" if not_yet else ""
    )
    return result
