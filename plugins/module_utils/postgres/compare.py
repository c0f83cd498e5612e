# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compare a table on two servers: row counts and checksums over key-range chunks.

The chunking, bisection and rechecks are compare/engine.py's (RangeComparison); this file has the
PostgreSQL sides: `Side` digests rows in SQL when PostgreSQL is on both sides (pg_compare), and
`CanonicalSide` reads rows for Python's canonical digests when the other side is another engine
(table_compare: compare/canonical.py).

How it works, per table (PostgreSQL on both sides):
- The key is the source's replica identity index, else its primary key (or the `key` asked for).
  Chunk bounds are key values sampled from the source (TABLESAMPLE), so chunks hold about
  `chunk_rows` rows whatever the key's type (integer, text, uuid, composite...).
- Each chunk is summarised on both sides at once (one thread per side): count(*) and the XOR of a
  64-bit digest per row, hash_record_extended over the source's columns. Columns are hashed
  natively when equal values of that type always print the same; otherwise (numeric, float,
  json, arrays, ... or a type that differs between the sides) their text form is hashed, so
  1.0 vs 1.00 is a difference. Columns only the target has are ignored.
- A chunk that differs is split at its median key and both halves compared again, down to
  `leaf_rows` rows, whose keys and digests are fetched and diffed: missing (on the target),
  extra (only on the target), changed.
- Consistency with live replication: the sides are read at nearly the same moment, not at one
  snapshot, so rows in flight can differ. Every differing chunk is compared again up to
  `rechecks` times, each time after the target has confirmed the source's current WAL position
  (when `slot`, the slot feeding the target, is given; else after `recheck_delay` seconds), and
  its keys located again. Only what still differs is reported.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.engine import RangeComparison, summarise
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident, sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import (
    format_qualified_name,
    split_qualified_name,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.lsn import parse_lsn

# Types whose equal values always have the same text form: hashed natively (cheaper than text).
NATIVE_HASH_TYPES = frozenset(
    [
        "int2",
        "int4",
        "int8",
        "bool",
        "text",
        "varchar",
        "bpchar",
        "bytea",
        "uuid",
        "date",
        "timestamp",
        "timestamptz",
        "jsonb",
        "oid",
        "name",
        "char",
    ]
)

# Session settings that make both sides print values the same way.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "jit": "off",  # JIT compilation costs more than it saves on these scans
}

# Also read by drift.py (schema drift): nullability, default, identity and generated columns.
COLUMNS_QUERY = """
SELECT a.attname AS name, t.typname AS type_name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       a.atttypmod AS typmod, a.attnotnull AS not_null, a.atthasdef AS has_default,
       a.attidentity <> '' AS identity, a.attgenerated <> '' AS generated
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

# The key: the replica identity index first (what the target's key is built on), else the primary key.
KEY_QUERY = """
SELECT array_agg(a.attname ORDER BY k.ord) AS columns
  FROM pg_catalog.pg_index i
  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = %s AND (i.indisreplident OR i.indisprimary) AND k.ord <= i.indnkeyatts
 GROUP BY i.indexrelid, i.indisreplident
 ORDER BY i.indisreplident DESC
 LIMIT 1
"""

# reltuples of the table, or of its leaf partitions (a partitioned parent has none of its own).
ESTIMATE_QUERY = """
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS rows, bool_or(c.reltuples < 0) AS never_analyzed
  FROM pg_catalog.pg_partition_tree(%s) p JOIN pg_catalog.pg_class c ON c.oid = p.relid
 WHERE p.isleaf
"""


def natively_hashable(column: dict) -> bool:
    """Whether equal values of this column always print the same, so the type's own hash will do.
    numeric(p,s) qualifies: its typmod fixes the scale, so 1.0 vs 1.00 cannot happen there."""
    return column["type_name"] in NATIVE_HASH_TYPES or (column["type_name"] == "numeric" and "(" in column["type"])


def prepare_session(client) -> None:
    """Same output formats on both sides; reads only, so it runs in check mode too."""
    for name, value in SESSION_SETTINGS.items():
        client.query("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))


class Side:
    """One table on one server, and the queries the comparison runs there."""

    def __init__(self, client, role: str, table: str, readers: list | None = None):
        self.client = client
        self.readers = readers or [client]  # connections that read chunks at the same time
        self.role = role  # "source" or "target", for messages
        self.schema, self.name = split_qualified_name(table)
        row = client.query_one(
            "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (self.schema, self.name),
        )
        if row is None:
            raise PgError(
                f"table {format_qualified_name(self.schema, self.name)} does not exist on the {role} "
                f"({client.endpoint}, database {client.params.get('login_db')}): check the name in `tables`"
            )
        self.oid = row["oid"]
        self.columns = {column["name"]: column for column in client.query(COLUMNS_QUERY, (self.oid,))}
        self.relation = ident(self.schema, self.name)
        self.digest = None  # set by TableComparison once both sides' columns are known
        self.key = []
        self.key_types = []

    def estimate_rows(self) -> int:
        """reltuples (of the leaf partitions), or count(*) when never analyzed or empty."""
        estimate = self.client.query_one(ESTIMATE_QUERY, (self.oid,))
        if estimate["never_analyzed"] or estimate["rows"] == 0:
            return self.client.query_one(sql.SQL("SELECT count(*) AS rows FROM {}").format(self.relation))["rows"]
        return estimate["rows"]

    def text_columns(self) -> sql.Composable:
        """The key columns as text, aliased: ORDER BY the key must not sort by the text form."""
        return sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(ident(column), ident(f"zdm_key_{index}")) for index, column in enumerate(self.key)
        )

    def key_row(self):
        return sql.SQL(", ").join(ident(column) for column in self.key)

    def bound(self, values) -> sql.Composable:
        """A key value as SQL: text parameters cast to the source's key types (catalog names)."""
        casts = [
            sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(key_type)) for value, key_type in zip(values, self.key_types, strict=True)
        ]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(casts)) if len(casts) > 1 else casts[0]

    def where(self, lower, upper) -> sql.Composable:
        """lower <= key < upper (None: unbounded), as a row comparison for composite keys."""
        key = sql.SQL("ROW({})").format(self.key_row()) if len(self.key) > 1 else self.key_row()
        conditions = [sql.SQL("TRUE")]
        if lower is not None:
            conditions.append(sql.SQL("{} >= {}").format(key, self.bound(lower)))
        if upper is not None:
            conditions.append(sql.SQL("{} < {}").format(key, self.bound(upper)))
        return sql.SQL(" AND ").join(conditions)

    def summary(self, lower=None, upper=None, keyless: bool = False, client=None) -> tuple[int, str]:
        """(rows, checksum) of the rows in [lower, upper), read through `client` (default the side's own)."""
        # XOR is cheap and order-free; without a unique key duplicates would cancel out, so a keyless table sums.
        aggregate = sql.SQL("sum({}::numeric)") if keyless else sql.SQL("bit_xor({})")
        statement = sql.SQL("SELECT count(*) AS rows, ({})::text AS checksum FROM {} WHERE {}").format(
            aggregate.format(self.digest), self.relation, self.where(lower, upper) if self.key else sql.SQL("TRUE")
        )
        row = (client or self.client).query_one(statement)
        return row["rows"], row["checksum"]

    def keys(self, lower=None, upper=None, limit: int | None = None, offset: int = 0, sample_percent: float | None = None) -> list[tuple]:
        """Keys (as text tuples, in key order) within [lower, upper); from a TABLESAMPLE with `sample_percent`."""
        sample = sql.SQL("TABLESAMPLE SYSTEM ({})").format(sql.Literal(sample_percent)) if sample_percent else sql.SQL("")
        limited = sql.SQL("LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL("")
        statement = sql.SQL("SELECT {} FROM {} {} WHERE {} ORDER BY {} OFFSET {} {}").format(
            self.text_columns(), self.relation, sample, self.where(lower, upper), self.key_row(), sql.Literal(offset), limited
        )
        return [self.key_of(row) for row in self.client.query(statement)]

    @staticmethod
    def key_of(row: dict) -> tuple:
        return tuple(row.values())

    def digests(self, lower, upper) -> dict[tuple, int]:
        """{key: row digest} of the rows in [lower, upper)."""
        statement = sql.SQL("SELECT {} , {} AS zdm_digest FROM {} WHERE {}").format(
            self.text_columns(), self.digest, self.relation, self.where(lower, upper)
        )
        result = {}
        for row in self.client.query(statement):
            values = list(row.values())
            result[tuple(values[:-1])] = values[-1]
        return result


class CanonicalSide(Side):
    """One table on one server in canonical mode, for a comparison with another engine: the rows of
    a key range read in key order and digested in Python over canonical values (compare/canonical.py),
    the same way the other engine's side digests its own. Text key columns are ordered COLLATE "C"
    (by code point, as SQLite's BINARY collation); json/jsonb is read as text and canonicalised."""

    def __init__(self, client, role: str, table: str, columns: list[str], key: list[str], canonical, readers: list | None = None):
        super().__init__(client, role, table, readers)
        missing = [column for column in columns if column not in self.columns]
        if missing:
            raise PgError(
                f"table {format_qualified_name(self.schema, self.name)} on the {role} ({client.endpoint}) has no column "
                f"{', '.join(missing)}: add it, or compare only tables whose columns match"
            )
        self.key = list(key)
        self.canonical = canonical
        self.selected = sql.SQL(", ").join(
            sql.SQL("{}::text").format(ident(column)) if self.columns[column]["type_name"] in ("json", "jsonb") else ident(column)
            for column in columns
        )

    def ordered(self, column: str) -> sql.Composable:
        text = self.columns[column]["type_name"] in ("text", "varchar", "bpchar")
        return sql.SQL('{} COLLATE "C"').format(ident(column)) if text else ident(column)

    def key_row(self):
        return sql.SQL(", ").join(self.ordered(column) for column in self.key)

    def bound(self, values) -> sql.Composable:
        literals = [sql.Literal(value) for value in values]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(literals)) if len(literals) > 1 else literals[0]

    def text_columns(self) -> sql.Composable:
        """The key columns as they are (the canonical key is made in Python)."""
        return sql.SQL(", ").join(ident(column) for column in self.key)

    def key_of(self, row: dict) -> tuple:
        return self.canonical.bare_key(tuple(row.values()))

    def rows(self, lower, upper, client=None) -> list[tuple]:
        statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
            self.selected, self.relation, self.where(lower, upper), self.key_row()
        )
        return [tuple(row.values()) for row in (client or self.client).query(statement)]

    def rows_for_keys(self, keys: list, values: int = 900) -> list[tuple]:
        """The rows of these keys (each a tuple of key values; a missing one is simply not there), at most
        `values` key values a statement (SQLite before 3.32 takes 999 parameters at most)."""
        columns = sql.SQL(", ").join(ident(column) for column in self.key)
        row = sql.SQL("ROW({})").format(columns) if len(self.key) > 1 else columns
        found: list[tuple] = []
        chunk = max(1, values // len(self.key))
        for start in range(0, len(keys), chunk):
            listed = sql.SQL(", ").join(self.bound(key) for key in keys[start : start + chunk])
            statement = sql.SQL("SELECT {} FROM {} WHERE {} IN ({})").format(self.selected, self.relation, row, listed)
            found.extend(tuple(values.values()) for values in self.client.query(statement))
        return found

    def summary(self, lower=None, upper=None, keyless: bool = False, client=None) -> tuple[int, str]:
        return self.canonical.summary(self.rows(lower, upper, client), keyless)

    def digests(self, lower, upper) -> dict[tuple, int]:
        return self.canonical.digests(self.rows(lower, upper))


class TableComparison(RangeComparison):
    """Compare one table between two PostgreSQL servers, digests computed in SQL (compare/engine.py runs it)."""

    def __init__(self, source, target, table: str, params: dict, pool: ThreadPoolExecutor, log=None, readers=None, reporter=None):
        readers = readers or {}
        source_side = Side(source, "source", table, readers.get("source"))
        target_side = Side(target, "target", table, readers.get("target"))
        super().__init__(source_side, target_side, table, [], params, pool, log, reporter)
        missing_columns = [name for name in self.source.columns if name not in self.target.columns]
        if missing_columns:
            raise PgError(
                f"table {table} on the target has no column {', '.join(missing_columns)} that the source has: "
                f"add the columns on the target (or compare a view that leaves them out)"
            )
        self.choose_key()
        for side in (self.source, self.target):
            side.digest = self.digest_expression()
            side.key = self.key
            side.key_types = [self.source.columns[column]["type"] for column in self.key]

    def choose_key(self) -> None:
        asked = (self.params.get("key") or {}).get(self.table)
        if asked:
            unknown = [column for column in asked if column not in self.source.columns or column not in self.target.columns]
            if unknown:
                raise PgError(f"key column {', '.join(unknown)} of {self.table} is not on both sides: fix `key` for {self.table}")
            self.key = list(asked)
            return
        row = self.source.client.query_one(KEY_QUERY, (self.source.oid,))
        self.key = list(row["columns"]) if row else []
        if not self.key:
            self.warnings.append(
                f"{self.table} has no primary key or replica identity index on the source: compared as one whole-table "
                f"checksum, so differences are not located (give `key` to locate them)"
            )

    def digest_expression(self) -> sql.Composable:
        parts = []
        for name, column in self.source.columns.items():
            native = natively_hashable(column) and self.target.columns[name]["type"] == column["type"]
            parts.append(ident(name) if native else sql.SQL("{}::text").format(ident(name)))
        return sql.SQL("pg_catalog.hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(parts))

    def wait_for_target(self) -> None:
        slot = self.params.get("slot")
        if not slot:
            time.sleep(self.params["recheck_delay"])
            return
        client = self.source.client
        wanted = client.query_one("SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn")["lsn"]

        def confirmed():
            row = client.query_one(
                "SELECT confirmed_flush_lsn::text AS lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (slot,)
            )
            if row is None:
                raise PgError(f"replication slot {slot} does not exist on the source: fix `slot` (the slot that feeds the target)")
            return row["lsn"]

        def behind(lsn):
            raise PgError(
                f"the target did not confirm the source's WAL position {wanted} through slot {slot} within "
                f"{self.params['timeout']} s (confirmed {lsn}): is the subscription running? Raise `timeout` "
                f"or compare without `slot`"
            )

        poll(confirmed, Deadline(self.params["timeout"]), behind, ready=lambda lsn: bool(lsn) and parse_lsn(lsn) >= parse_lsn(wanted))


def compare_tables(source, target, params: dict, log=None, open_reader=None, reporter=None) -> dict:
    """Compare every table of params['tables']; the module's result.

    `open_reader(client)` opens one more connection like `client`; with params['parallel'] > 1
    each side reads chunks through that many connections at once (closed at the end). A
    `reporter` (common.progress.Reporter) gets tables compared of total, and the chunks compared
    of the table being compared."""
    started = time.monotonic()
    parallel = max(1, params.get("parallel") or 1) if open_reader else 1
    readers = {"source": [source], "target": [target]}
    for role, client in (("source", source), ("target", target)):
        readers[role] += [open_reader(client) for extra in range(parallel - 1)]
    results = []
    try:
        for client in readers["source"] + readers["target"]:
            prepare_session(client)
        with ThreadPoolExecutor(max_workers=2 * parallel) as pool:
            comparisons = [TableComparison(source, target, table, params, pool, log, readers, reporter) for table in params["tables"]]
            for comparison in comparisons:
                if reporter is not None:
                    reporter.update(len(results), len(comparisons), unit="tables", detail={"table": comparison.table}, force=not results)
                results.append(comparison.compare())
                if reporter is not None:
                    reporter.drop_item(comparison.table)
    finally:
        for client in readers["source"][1:] + readers["target"][1:]:
            client.close()
    return summarise(results, started)
