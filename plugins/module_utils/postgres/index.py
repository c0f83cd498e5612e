# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An index built on a live table without blocking writes, as a ManagedObject.

Building: CREATE INDEX CONCURRENTLY (the Client is autocommit, so it runs outside a transaction
block). PostgreSQL cannot build an index concurrently on a partitioned table, so there the
documented way is followed: CREATE INDEX ... ON ONLY the parent (invalid until every partition
has its index attached), then per partition CREATE INDEX CONCURRENTLY and ALTER INDEX ... ATTACH
PARTITION; the parent becomes valid when the last one is attached. A run that was interrupted
resumes where it stopped.

Comparing: the wanted definition is normalised by the server, not guessed in Python: the index
is created on an empty temporary copy of the table (CREATE TEMPORARY TABLE ... (LIKE table)) in a
transaction that is always rolled back, and read back the same way as the real index (key
columns and INCLUDE columns with pg_get_indexdef per column, operator classes, collations and
sort options, access method, uniqueness, predicate with pg_get_expr). So `lower(email)` matches
what the server prints as `lower(email::text)`, and a bad column or expression fails before
anything is changed, in check mode too. An index of the same name with another definition, or
on another table, is an error naming both definitions: it is never replaced silently.

An INVALID index (left by an interrupted CREATE INDEX CONCURRENTLY) with the wanted definition is
dropped concurrently and built again. A build that fails drops the invalid index it left behind.
"""

from __future__ import annotations

import contextlib
import hashlib

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.progress import Sampler
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import (
    MAX_IDENTIFIER_BYTES,
    check_identifier,
    format_qualified_name,
    split_qualified_name,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.progress import open_reporter
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sql_text import check_fragment, parse_only

try:
    from psycopg import sql
except ImportError:  # pg_module.run reports the missing library before anything here runs
    sql = None

METHODS = ("btree", "hash", "gin", "gist", "brin")
# What decides whether two indexes are the same index (besides the table they are on).
COMPARED = ("columns", "include", "unique", "method", "where", "key_details")
# What the result and the diff show.
SHOWN = ("name", "table", "columns", "unique", "method", "include", "where", "valid", "definition")
HASH_CHARS = 8  # hex digits of the hash that keeps a derived name unique once truncated
PROBE_TABLE = "zdm_index_probe"
PROBE_INDEX = "zdm_index_probe_idx"
TABLE_KINDS = ("r", "p", "m")
RELKIND_NAMES = {
    "r": "table",
    "p": "partitioned table",
    "m": "materialized view",
    "v": "view",
    "S": "sequence",
    "f": "foreign table",
    "c": "composite type",
    "t": "TOAST table",
    "i": "index",
    "I": "partitioned index",
}

# One index as the catalogs describe it: key and INCLUDE columns as pg_get_indexdef prints them
# one by one, and what the columns do not show (operator classes, collations, sort options,
# NULLS NOT DISTINCT) as `key_details`. Non-index relations come back with only oid and relkind.
READ_INDEX = (
    "SELECT i.oid, i.relname AS name, i.relkind, x.indrelid AS table_oid, tn.nspname AS table_schema, "
    "t.relname AS table_name, t.relkind AS table_relkind, x.indisunique AS unique, "
    "(x.indisvalid AND x.indisready AND x.indislive) AS valid, am.amname AS method, "
    "ARRAY(SELECT pg_catalog.pg_get_indexdef(i.oid, k, true) FROM pg_catalog.generate_series(1, x.indnkeyatts) AS k "
    "ORDER BY k) AS columns, "
    "ARRAY(SELECT pg_catalog.pg_get_indexdef(i.oid, k, true) "
    "FROM pg_catalog.generate_series(x.indnkeyatts + 1, x.indnatts) AS k ORDER BY k) AS include, "
    "pg_catalog.pg_get_expr(x.indpred, x.indrelid, true) AS where, "
    "pg_catalog.concat_ws(' / ', x.indclass::text, x.indcollation::text, x.indoption::text, "
    "pg_catalog.to_jsonb(x) ->> 'indnullsnotdistinct') AS key_details, "
    "CASE WHEN x.indexrelid IS NOT NULL THEN pg_catalog.pg_get_indexdef(i.oid) END AS definition, "
    "(SELECT h.inhparent FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.oid) AS parent_index "
    "FROM pg_catalog.pg_class i JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace "
    "LEFT JOIN pg_catalog.pg_index x ON x.indexrelid = i.oid "
    "LEFT JOIN pg_catalog.pg_class t ON t.oid = x.indrelid "
    "LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace "
    "LEFT JOIN pg_catalog.pg_am am ON am.oid = i.relam "
)


# Pure helpers --------------------------------------------------------------------------------
def is_expression(column: str) -> bool:
    """An entry containing '(' is an expression (passed as SQL); anything else is a column name."""
    return "(" in column


def index_spec(params: dict) -> dict:
    """The definition the module asks for, validated; raises PgError saying what to fix."""
    method = params.get("method") or "btree"
    if method not in METHODS:
        raise PgError(f"unknown index method {method!r}: choose from {', '.join(METHODS)}")
    for option in ("timeout", "lock_timeout"):
        value = params.get(option)
        if value is not None and value < 0:
            raise PgError(f"{option} must be 0 (no bound) or a positive number of seconds, not {value!r}")
    columns = list(params.get("columns") or [])
    if params.get("state", "present") == "present" and not columns:
        raise PgError("columns must list at least one column or expression to index (state: present)")
    for column in columns:
        if not isinstance(column, str) or not column.strip():
            raise PgError(f"invalid entry {column!r} in columns: give a column name or an expression")
        if is_expression(column):
            check_fragment(column, "the columns entry", "index expression", "CREATE INDEX")
        else:
            check_identifier(column, "column")
    include = list(params.get("include") or [])
    for column in include:
        if isinstance(column, str) and is_expression(column):
            raise PgError(f"include takes column names only, not expressions: {column!r}")
        check_identifier(column, "include column")
    where = params.get("where")
    where = where.strip() if isinstance(where, str) and where.strip() else None
    if where is not None:
        check_fragment(where, "where", "predicate (boolean expression)", "CREATE INDEX ... WHERE")
    return {"columns": columns, "include": include, "unique": bool(params.get("unique")), "method": method, "where": where}


def truncate_bytes(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never in the middle of a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def partition_index_name(partition: str, index: str) -> str:
    """The name of `index`'s index on `partition`: '<partition>_<index>', or, when that is longer
    than PostgreSQL keeps (63 bytes), its start and a short hash of the whole, so two long names
    that share their first 54 bytes still differ."""
    full = f"{partition}_{index}"
    if len(full.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return full
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:HASH_CHARS]
    return f"{truncate_bytes(full, MAX_IDENTIFIER_BYTES - HASH_CHARS - 1)}_{digest}"


def definition_differences(current: dict, wanted: dict) -> list[str]:
    """What differs between two index definitions (as read back from the catalogs), in words."""
    found = []
    for key in COMPARED:
        have, want = current.get(key), wanted.get(key)
        if key in ("columns", "include"):
            have, want = list(have or []), list(want or [])
        if have == want:
            continue
        if key == "key_details":
            found.append("operator classes, collations or sort order differ")
        else:
            found.append(f"{key} is {have!r}, not {want!r}")
    return found


def seconds_setting(seconds) -> str:
    """Seconds as a PostgreSQL duration setting: 0 -> '0' (no bound), 2.5 -> '2500ms'."""
    seconds = float(seconds or 0)
    return "0" if seconds <= 0 else f"{max(1, round(seconds * 1000))}ms"


def build_failure_hint(message: str) -> str:
    """What to do about a build that failed with `message`."""
    if "statement timeout" in message:
        return "the build did not finish within timeout: raise timeout (0 = no bound) or build when the table is quieter"
    if "lock timeout" in message:
        return (
            "a transaction that was open on the table (or an old snapshot) did not end within lock_timeout: "
            "find it in pg_stat_activity, or raise lock_timeout and run again"
        )
    if "could not create unique index" in message:
        return "the table has duplicate values for a unique index: remove them, or set unique: false"
    return "fix the cause and run again"


def create_statement(index_name: str, table: tuple, spec: dict, concurrently: bool, only: bool = False):
    """CREATE [UNIQUE] INDEX [CONCURRENTLY] name ON [ONLY] table USING method (...) [INCLUDE (...)] [WHERE ...].

    Names are identifiers quoted by psycopg. Entries of `columns` that contain '(' and `where` are
    SQL the playbook author wrote (documented as trusted); `method` is one of METHODS."""
    if spec["method"] not in METHODS:
        raise PgError(f"unknown index method {spec['method']!r}")
    parts = [sql.SQL("CREATE UNIQUE INDEX " if spec["unique"] else "CREATE INDEX ")]
    if concurrently:
        parts.append(sql.SQL("CONCURRENTLY "))
    parts += [ident(index_name), sql.SQL(" ON ONLY " if only else " ON "), ident(*table), sql.SQL(" USING " + spec["method"] + " (")]
    parts.append(sql.SQL(", ").join(sql.SQL(column) if is_expression(column) else ident(column) for column in spec["columns"]))
    parts.append(sql.SQL(")"))
    if spec["include"]:
        parts += [sql.SQL(" INCLUDE ("), sql.SQL(", ").join(ident(column) for column in spec["include"]), sql.SQL(")")]
    if spec["where"]:
        parts += [sql.SQL(" WHERE "), sql.SQL(spec["where"])]
    return sql.Composed(parts)


def relation_label(row: dict | None) -> str:
    if row is None:
        return "nothing"
    return RELKIND_NAMES.get(row["relkind"], f"relation of kind {row['relkind']!r}")


# The index -----------------------------------------------------------------------------------
class Index(ManagedObject):
    kind = "index"

    def __init__(self, client, name: str, table: str, concurrently: bool = True):
        super().__init__(client, check_identifier(name, "index name"))
        self.schema, self.table = split_qualified_name(table)
        self.table_label = format_qualified_name(self.schema, self.table)
        self.concurrently = concurrently
        self.spec: dict = {}
        self.wanted: dict = {}
        self.tail = ""
        self.rebuilt = False
        self.partitions: list[dict] = []
        self.reporter = None  # a common.progress.Reporter: each build's progress while it runs
        self.sample_interval = 1.0

    @property
    def database(self) -> str:
        return self.client.conn.info.dbname

    # Reading ------------------------------------------------------------------------------
    def read(self, schema: str, name: str) -> dict | None:
        """The relation called `name` in `schema` (an index, or whatever else holds the name)."""
        return self.client.query_one(READ_INDEX + "WHERE n.nspname = %s AND i.relname = %s", (schema, name))

    def read_oid(self, oid) -> dict | None:
        return self.client.query_one(READ_INDEX + "WHERE i.oid = %s", (oid,))

    def row(self) -> dict | None:
        found = self.read(self.schema, self.name)
        if found is not None and found["relkind"] not in ("i", "I"):
            raise PgError(
                f"'{format_qualified_name(self.schema, self.name)}' in database '{self.database}' on {self.client.endpoint} "
                f"is a {relation_label(found)}, not an index: choose another index name"
            )
        return found

    def exists(self) -> bool:
        return self.row() is not None

    def attrs(self) -> dict | None:
        return self.view(self.row())

    @staticmethod
    def view(found: dict | None) -> dict | None:
        if found is None:
            return None
        return {
            "name": found["name"],
            "table": format_qualified_name(found["table_schema"], found["table_name"]),
            "columns": list(found["columns"]),
            "unique": found["unique"],
            "method": found["method"],
            "include": list(found["include"]),
            "where": found["where"],
            "valid": found["valid"],
            "definition": found["definition"],
            "key_details": found["key_details"],
        }

    def diff_view(self, attributes: dict | None) -> dict:
        if attributes is None:
            return {}
        return {key: attributes.get(key) for key in SHOWN}

    def find_table(self, schema: str | None = None, table: str | None = None) -> dict | None:
        return self.client.query_one(
            "SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (schema or self.schema, table or self.table),
        )

    def require_table(self) -> dict:
        found = self.find_table()
        if found is None:
            raise PgError(
                f"table {self.table_label} not found in database '{self.database}' on {self.client.endpoint}: "
                f"create it first or fix 'table' (a name without a schema means public.<name>)"
            )
        if found["relkind"] not in TABLE_KINDS:
            raise PgError(
                f"{self.table_label} in database '{self.database}' on {self.client.endpoint} is a {relation_label(found)}: "
                f"indexes can be built on tables, partitioned tables and materialized views only"
            )
        return found

    def partitions_of(self, table_oid) -> list[dict]:
        return self.client.query(
            "SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind FROM pg_catalog.pg_inherits h "
            "JOIN pg_catalog.pg_class c ON c.oid = h.inhrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE h.inhparent = %s ORDER BY n.nspname, c.relname",
            (table_oid,),
        )

    def attached_children(self, parent_index_oid) -> dict:
        """{partition oid: its index attached to the partitioned index `parent_index_oid`}."""
        if parent_index_oid is None:
            return {}
        children = [
            row["inhrelid"]
            for row in self.client.query("SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = %s", (parent_index_oid,))
        ]
        rows = self.client.query(READ_INDEX + "WHERE i.oid = ANY(%s::pg_catalog.oid[])", (children,)) if children else []
        return {row["table_oid"]: row for row in rows}

    # The wanted definition, normalised by the server ---------------------------------------
    def desired(self, spec: dict, table: dict) -> dict:
        """The attributes of the index asked for, as the server would report them (see probe)."""
        self.spec = spec
        probed = self.probe(spec)
        # The probe's own names contain no ' USING ': what follows it is the definition proper.
        self.tail = probed["definition"].split(" USING ", 1)[1]
        self.wanted = dict(self.view(probed), name=self.name, table=self.table_label, valid=True)
        self.wanted["definition"] = self.definition_text(self.name, self.schema, self.table, only=table["relkind"] == "p")
        return dict(self.wanted)

    def probe(self, spec: dict) -> dict:
        """The index as asked, created on an empty temporary copy of the table in a transaction
        that is always rolled back, and read back. Takes only an ACCESS SHARE lock on the table and
        leaves nothing behind; runs in check mode too (it changes nothing), so it is a read."""
        statement = create_statement(PROBE_INDEX, (PROBE_TABLE,), spec, concurrently=False)
        # Parsed by the server first, not run: one command only, whatever the fields hold.
        parse_only(self.client, statement, "columns and where")
        try:
            with self.client.conn.transaction(force_rollback=True):
                self.client.query(sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {})").format(ident(PROBE_TABLE), ident(self.schema, self.table)))
                self.client.query(statement)
                probed = self.client.query_one(
                    READ_INDEX + "WHERE i.relnamespace = pg_catalog.pg_my_temp_schema() AND i.relname = %s", (PROBE_INDEX,)
                )
        except PgError as exc:
            hint = build_failure_hint(str(exc)) if "timeout" in str(exc) else "fix columns, include, where, unique or method"
            raise PgError(
                f"index {self.name!r} cannot be built on {self.table_label} in database '{self.database}' as asked "
                f"(tried on an empty copy of the table): {exc}: {hint}"
            ) from None
        return probed

    def definition_text(self, name: str, schema: str, table: str, only: bool) -> str:
        """What pg_get_indexdef prints for the wanted definition as index `name` on schema.table."""
        quoted = self.client.query_one(
            "SELECT pg_catalog.quote_ident(%s) AS name, pg_catalog.quote_ident(%s) AS schema, pg_catalog.quote_ident(%s) AS tbl",
            (name, schema, table),
        )
        return (
            f"CREATE {'UNIQUE ' if self.spec['unique'] else ''}INDEX {quoted['name']} ON {'ONLY ' if only else ''}"
            f"{quoted['schema']}.{quoted['tbl']} USING {self.tail}"
        )

    # Comparing ----------------------------------------------------------------------------
    def check_same(self, found: dict, table: dict, qualified_name: str) -> None:
        """`found` (an index called like the one wanted) is on `table` with the wanted definition;
        otherwise an error naming both definitions and the fix."""
        on_table = format_qualified_name(table["schema"], table["name"])
        if found["table_oid"] != table["oid"]:
            wanted = self.definition_text(found["name"], table["schema"], table["name"], only=table["relkind"] == "p")
            raise PgError(
                f"index {qualified_name} in database '{self.database}' on {self.client.endpoint} already exists on another table "
                f"({format_qualified_name(found['table_schema'], found['table_name'])}, not {on_table}): found: {found['definition']}; "
                f"asked for: {wanted}: drop it (state: absent with its table) or choose another name"
            )
        differences = definition_differences(found, self.wanted)
        if differences:
            wanted = self.definition_text(found["name"], table["schema"], table["name"], only=table["relkind"] == "p")
            raise PgError(
                f"index {qualified_name} in database '{self.database}' on {self.client.endpoint} already exists with another "
                f"definition ({'; '.join(differences)}): found: {found['definition']}; asked for: {wanted}: an index cannot be "
                f"changed in place: drop it (state: absent) and run again, or choose another name"
            )

    def differences(self, current: dict, desired: dict) -> dict:
        """An existing index must be the one asked for; an invalid one is to be (re)built."""
        table = self.require_table()
        found = self.row()
        self.check_same(found, table, format_qualified_name(self.schema, self.name))
        return {} if current["valid"] else {"valid": True}

    # Changing -----------------------------------------------------------------------------
    def create(self, desired: dict) -> None:
        table = self.require_table()
        if table["relkind"] == "p":
            self.build_partitioned(table, self.name, None)
        else:
            self.build(table, self.name)

    def update(self, current: dict, changes: dict) -> None:
        """Only `valid` can differ: resume a partitioned index, or rebuild an invalid one."""
        table = self.require_table()
        found = self.row()
        if found["relkind"] == "I":
            self.build_partitioned(table, self.name, found)
        else:
            self.rebuild(table, self.name)
            self.rebuilt = True

    def drop(self, current: dict) -> None:
        if current["table"] != self.table_label:
            raise PgError(
                f"index {format_qualified_name(self.schema, self.name)} in database '{self.database}' on {self.client.endpoint} "
                f"is on {current['table']}, not {self.table_label} ({current['definition']}): nothing was dropped: fix 'table' "
                f"if that index is the one to drop"
            )
        found = self.row()
        if found["relkind"] == "I":
            # PostgreSQL cannot drop a partitioned index concurrently, and the partitions' indexes
            # cannot be dropped while attached: a plain DROP, bounded by lock_timeout.
            self.client.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(ident(self.schema, self.name)))
        else:
            self.drop_index(self.schema, self.name)

    def drop_index(self, schema: str, name: str) -> None:
        concurrently = "CONCURRENTLY " if self.concurrently else ""
        self.client.execute(sql.SQL("DROP INDEX " + concurrently + "IF EXISTS {}").format(ident(schema, name)))

    def build(self, table: dict, name: str) -> None:
        """CREATE INDEX [CONCURRENTLY] on a table that is not partitioned. When it fails, the
        invalid index a concurrent build leaves behind is dropped, so no half-built index stays
        (it would slow every write and never serve a read)."""
        statement = create_statement(name, (table["schema"], table["name"]), self.spec, self.concurrently)
        try:
            with self.watch(format_qualified_name(table["schema"], name)):
                self.client.execute(statement)
        except PgError as exc:
            message = f"building index {format_qualified_name(table['schema'], name)} in database '{self.database}' failed: {exc}"
            left = self.read(table["schema"], name)
            if left is not None and left.get("table_oid") == table["oid"] and not left["valid"]:
                try:
                    self.drop_index(table["schema"], name)
                    message += "; the invalid index the failed build left behind was dropped"
                except PgError as cleanup:
                    message += f"; dropping the invalid index it left behind failed too ({cleanup}): the next run rebuilds it"
            raise PgError(f"{message}: {build_failure_hint(str(exc))}") from None

    def watch(self, index: str):
        """While a build runs: pg_stat_progress_create_index of the building session, read over a
        connection of its own every sample_interval seconds, into the reporter (when it has sinks)."""
        if self.reporter is None or not self.reporter.enabled or self.client.check_mode:
            return contextlib.nullcontext()
        try:
            watcher = Client(self.client.params)
        except PgError as exc:
            self.reporter.warn(f"progress of building {index} cannot be read: {exc}")
            return contextlib.nullcontext()
        pid = self.client.conn.info.backend_pid
        self.reporter.update(0, unit="blocks", detail={"index": index, "phase": "starting"}, force=True)
        stack = contextlib.ExitStack()
        stack.callback(watcher.close)
        stack.enter_context(Sampler(self.reporter, lambda: build_progress(watcher, pid, index), self.sample_interval))
        return stack

    def rebuild(self, table: dict, name: str) -> None:
        """An invalid index: DROP INDEX CONCURRENTLY, then build it again."""
        self.drop_index(table["schema"], name)
        self.build(table, name)

    def attach(self, parent: tuple, child: tuple) -> None:
        self.client.execute(sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(ident(*parent), ident(*child)))

    def build_partitioned(self, table: dict, name: str, found: dict | None) -> None:
        """The index `name` on the partitioned `table`: the parent ON ONLY (when missing), then
        for each partition an index built concurrently (or found, or resumed) and attached.
        `found` is the parent index when it exists already (then this resumes or only reports)."""
        parent = (table["schema"], name)
        if found is None:
            self.client.execute(create_statement(name, (table["schema"], table["name"]), self.spec, concurrently=False, only=True))
            found = None if self.client.check_mode else self.read(*parent)
        attached = self.attached_children(found["oid"] if found else None)
        for partition in self.partitions_of(table["oid"]):
            on = format_qualified_name(partition["schema"], partition["name"])
            if partition["relkind"] not in ("r", "p"):
                raise PgError(
                    f"partition {on} of {format_qualified_name(table['schema'], table['name'])} is a {relation_label(partition)}: "
                    f"PostgreSQL cannot index it, so index {format_qualified_name(*parent)} could never become valid"
                )
            child = attached.get(partition["oid"])
            entry = {
                "partition": on,
                "index": child["name"] if child else partition_index_name(partition["name"], name),
                "parent_index": format_qualified_name(*parent),
                "created": False,
                "attached": False,
                "rebuilt": False,
            }
            self.partitions.append(entry)
            qualified = format_qualified_name(partition["schema"], entry["index"])
            if child is not None:
                self.check_same(child, partition, qualified)
                if partition["relkind"] == "p":
                    self.build_partitioned(partition, child["name"], child)
                elif not child["valid"]:
                    raise PgError(
                        f"index {qualified} is attached to {format_qualified_name(*parent)} but invalid, and PostgreSQL does not "
                        f"validate a parent index again once a partition's index is attached: drop "
                        f"{format_qualified_name(*parent)} (state: absent) and run again"
                    )
                continue
            existing = self.read(partition["schema"], entry["index"])
            if existing is not None and existing["relkind"] not in ("i", "I"):
                raise PgError(
                    f"'{qualified}' in database '{self.database}' is a {relation_label(existing)}, not an index: the index of "
                    f"partition {on} is named '<partition>_<index>': rename that {relation_label(existing)} or choose another index name"
                )
            if existing is not None:
                self.check_same(existing, partition, qualified)
                if existing["parent_index"] is not None:
                    other = self.read_oid(existing["parent_index"])
                    raise PgError(
                        f"index {qualified} is already attached to another index "
                        f"({format_qualified_name(other['table_schema'], other['name'])}): choose another index name"
                    )
                if partition["relkind"] == "p":
                    self.build_partitioned(partition, entry["index"], existing)
                elif not existing["valid"]:
                    self.rebuild(partition, entry["index"])
                    entry["rebuilt"] = self.rebuilt = True
            elif partition["relkind"] == "p":
                self.build_partitioned(partition, entry["index"], None)
                entry["created"] = True
            else:
                self.build(partition, entry["index"])
                entry["created"] = True
            self.attach(parent, (partition["schema"], entry["index"]))
            entry["attached"] = True

    def report_partitions(self) -> None:
        """The partitions' indexes of a valid partitioned index that needed no change. A valid
        parent has every partition's index attached and valid, so this walk only reads."""
        found = self.row()
        if found is not None and found["relkind"] == "I" and found["valid"]:
            self.build_partitioned(self.require_table(), self.name, found)


def build_progress(watcher, pid: int, index: str) -> dict | None:
    """Reporter.update's figures from pg_stat_progress_create_index for the session `pid`:
    blocks while the table is scanned, tuples while they are sorted and loaded, lockers while the
    build waits for older transactions; None before the build shows up."""
    row = watcher.query_one(
        "SELECT phase, lockers_total, lockers_done, current_locker_pid, blocks_total, blocks_done, tuples_total, tuples_done, "
        "partitions_total, partitions_done FROM pg_catalog.pg_stat_progress_create_index WHERE pid = %s",
        (pid,),
    )
    if row is None:
        return None
    detail = {"index": index, "phase": row["phase"]}
    if row["partitions_total"]:
        detail.update(partitions_done=row["partitions_done"], partitions_total=row["partitions_total"])
    if row["current_locker_pid"]:
        detail["waiting_for_pid"] = row["current_locker_pid"]
    for unit in ("blocks", "tuples", "lockers"):
        if row[f"{unit}_total"]:
            return {"done": row[f"{unit}_done"], "total": row[f"{unit}_total"], "unit": unit, "detail": detail}
    return {"done": 0, "total": None, "unit": "blocks", "detail": detail}


def set_timeouts(client, timeout, lock_timeout) -> None:
    """statement_timeout bounds each statement (each build); lock_timeout each wait for a lock,
    which includes CREATE/DROP INDEX CONCURRENTLY waiting for older transactions. Session
    settings only, so they run in check mode too and are not in `queries`."""
    client.query(
        "SELECT pg_catalog.set_config('statement_timeout', %s, false), pg_catalog.set_config('lock_timeout', %s, false)",
        (seconds_setting(timeout), seconds_setting(lock_timeout)),
    )


def ensure_index(client, params: dict) -> dict:
    """What the pg_index module does, given its parameters."""
    state = params.get("state", "present")
    spec = index_spec(params)
    index = Index(client, params["name"], params["table"], concurrently=params.get("concurrently", True))
    set_timeouts(client, params.get("timeout"), params.get("lock_timeout"))
    desired = index.desired(spec, index.require_table()) if state == "present" else {}
    index.reporter = open_reporter(params.get("progress"), f"index {index.table_label}.{params['name']}", client.check_mode, unit="blocks")
    index.sample_interval = min(1.0, max(0.1, index.reporter.every))
    try:
        result = index.ensure(state, desired)
        if result["state"] == "present" and not index.partitions:
            index.report_partitions()
    except PgError as exc:
        # A failure part-way through a partitioned build: say which partitions were done.
        exc.details.setdefault("rebuilt", index.rebuilt)
        exc.details.setdefault("partitions", index.partitions)
        if index.reporter.emitted:
            index.reporter.finish("failed", {"error": str(exc)})
        exc.details.setdefault("warnings", index.reporter.warnings)
        index.reporter.close()
        raise
    if index.reporter.emitted:  # a build reported: say that it finished
        index.reporter.finish("done")
    index.reporter.close()
    result["rebuilt"] = index.rebuilt
    result["partitions"] = index.partitions
    if index.reporter.warnings:
        result["warnings"] = list(index.reporter.warnings)
    return result
