# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The partitions of an existing partitioned table: hash, range (with premake and retention), list.

The pure parts are beside it: partition_spec (options, naming, interval arithmetic) and
partition_bounds (typed bounds, read back from pg_get_expr). Here is the database part:
`PartitionSet`, "the partition set of one table" as a ManagedObject, so changed/diff/queries and check
mode work as for every other object in the collection. All changes run in one transaction.

Bounds are compared as typed values (the key column's type, loaded by psycopg), never as text;
the text shown in results and messages is what pg_get_expr prints (for ISO DateStyle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

try:
    from psycopg import sql
    from psycopg.pq import Format
except ImportError:  # pg_client reports the missing library before anything here runs
    pass

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.partition_bounds import (
    DefaultBound,
    HashBound,
    ListBound,
    RangeBound,
    bound_sql,
    bound_text,
    norm,
    overlaps,
    parse_bound,
    pg_text,
    same_bound,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.partition_spec import (
    INTEGER_TYPES,
    RELKINDS,
    TIME_TYPES,
    Spec,
    integer_ranges,
    parse_integer,
    parse_time,
    render_name,
    shift,
    time_ranges,
)


# The database side ---------------------------------------------------------------------------
@dataclass
class Partition:
    schema: str
    name: str
    bound: object
    text: str  # as pg_get_expr prints it

    def label(self, parent_schema: str) -> str:
        return self.name if self.schema == parent_schema else f"{self.schema}.{self.name}"


def sort_key(partition: Partition):
    bound = partition.bound
    if isinstance(bound, DefaultBound):
        return (1, (), partition.name)
    if isinstance(bound, HashBound):
        return (0, (bound.remainder, bound.modulus), partition.name)
    if isinstance(bound, RangeBound):
        return (0, (0,) if bound.lower is None else (1, norm(bound.lower)), partition.name)
    return (0, (), partition.name)


@dataclass
class Plan:
    existing: list
    create: list = field(default_factory=list)
    detach: list = field(default_factory=list)
    conflicts: list = field(default_factory=list)

    def after(self) -> list:
        gone = {(p.schema, p.name) for p in self.detach}
        return sorted([p for p in self.existing if (p.schema, p.name) not in gone] + self.create, key=sort_key)


class PartitionSet(ManagedObject):
    """The partitions of one partitioned table; attrs() is {"partitions": {name: bound}}."""

    kind = "partition_set"

    def __init__(self, client, spec: Spec):
        self.spec = spec
        self.plan: Plan | None = None
        super().__init__(client, spec.table)
        self.read_table()

    # The parent ---------------------------------------------------------------------------
    def read_table(self) -> None:
        spec = self.spec
        given = f"{spec.schema}.{spec.table}" if spec.schema else spec.table
        qualified = ident(spec.schema, spec.table) if spec.schema else ident(spec.table)
        row = self.client.query_one("SELECT pg_catalog.to_regclass(%s)::oid AS oid", (self.client.render(qualified),))
        if row["oid"] is None:
            hint = "" if spec.schema else " (looked up in the search_path: write schema.table if it lives elsewhere)"
            raise PgError(
                f"table {given} does not exist in database '{self.client.params.get('login_db')}' on {self.client.endpoint}{hint}: "
                f"create it first as a partitioned table (CREATE TABLE ... PARTITION BY {spec.strategy.upper()} (column)), or fix 'table'"
            )
        self.oid = row["oid"]
        info = self.client.query_one(
            "SELECT n.nspname AS schema, c.relname AS name, c.relkind, p.partstrat, p.partnatts, "
            "pg_catalog.pg_get_partkeydef(c.oid) AS keydef, a.attname AS key_column, t.oid AS key_oid, t.typname AS key_type "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_catalog.pg_partitioned_table p ON p.partrelid = c.oid "
            "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0] AND a.attnum > 0 "
            "LEFT JOIN pg_catalog.pg_opclass o ON o.oid = p.partclass[0] "
            "LEFT JOIN pg_catalog.pg_type t ON t.oid = COALESCE(a.atttypid, o.opcintype) "
            "WHERE c.oid = %s",
            (self.oid,),
        )
        self.schema, self.table = info["schema"], info["name"]
        self.display = f"{self.schema}.{self.table}"
        self.parent = ident(self.schema, self.table)
        where = f"on {self.client.endpoint}"
        if info["relkind"] != "p":
            if info["relkind"] == "r":
                raise PgError(
                    f"table {self.display} {where} is not partitioned: PostgreSQL cannot partition an existing table in place; "
                    f"create it with PARTITION BY {spec.strategy.upper()} (column) (on green: before the initial sync) "
                    f"and run this task again"
                )
            kind = RELKINDS.get(info["relkind"], f"relation of kind {info['relkind']!r}")
            raise PgError(f"{self.display} {where} is a {kind}, not a partitioned table: fix 'table'")
        actual = {"h": "hash", "r": "range", "l": "list"}[info["partstrat"]]
        if actual != spec.strategy:
            raise PgError(
                f"table {self.display} {where} is partitioned by {info['keydef']}, not by {spec.strategy}: "
                f"set strategy: {actual}, or recreate the table with PARTITION BY {spec.strategy.upper()} (...)"
            )
        self.keydef, self.key_column, self.key_type, self.key_oid = info["keydef"], info["key_column"], info["key_type"], info["key_oid"]
        self.tz = self.client.conn.info.timezone
        if spec.strategy == "range":
            if info["partnatts"] != 1 or self.key_column is None:
                raise PgError(
                    f"table {self.display} is partitioned by {self.keydef}: range partitions are managed for a single key column only"
                )
            if spec.interval and self.key_type not in TIME_TYPES:
                raise PgError(
                    f"table {self.display} is partitioned by {self.keydef} of type {self.key_type}: "
                    f"interval needs a date/timestamp key; use step"
                )
            if spec.step and self.key_type not in INTEGER_TYPES:
                raise PgError(
                    f"table {self.display} is partitioned by {self.keydef} of type {self.key_type}: step needs an integer key; use interval"
                )
            retention_is_count = isinstance(spec.retention, int)
            if spec.retention is not None and retention_is_count != bool(spec.step):
                wanted = "a number (of key units)" if spec.step else "an age such as '6 months'"
                raise PgError(f"retention for {self.display} (key type {self.key_type}) must be {wanted}")
        loader_class = self.client.conn.adapters.get_loader(self.key_oid, Format.TEXT) if self.key_oid else None
        self._loader = loader_class(self.key_oid, self.client.conn) if loader_class else None

    def load(self, raw: str):
        """A value printed by PostgreSQL (or given by the user) in the key column's type."""
        if self.key_type == "bool":
            return raw.strip().lower() in ("t", "true", "yes", "on", "1")
        if self._loader is None:
            return raw
        try:
            return self._loader.load(raw.encode("utf-8"))
        except Exception as exc:  # psycopg raises DataError and friends
            raise PgError(f"{raw!r} is not a valid {self.key_type} for the key {self.keydef} of {self.display}: {exc}") from None

    def typed(self, value):
        if value is None:
            return None
        if self.key_type in INTEGER_TYPES and isinstance(value, int) and not isinstance(value, bool):
            return value
        if self.key_type == "bool" and isinstance(value, bool):
            return value
        return self.load(str(value))

    # What is there ------------------------------------------------------------------------
    def read_partitions(self) -> list:
        rows = self.client.query(
            "SELECT n.nspname AS schema, c.relname AS name, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound "
            "FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = %s",
            (self.oid,),
        )
        partitions = []
        for row in rows:
            try:
                bound = parse_bound(row["bound"], self.load)
            except ValueError as exc:
                raise PgError(f"partition {row['schema']}.{row['name']} of {self.display}: {exc}") from None
            partitions.append(Partition(row["schema"], row["name"], bound, row["bound"]))
        return sorted(partitions, key=sort_key)

    def exists(self) -> bool:
        return True  # read_table() failed already if the table is not there

    def attrs(self) -> dict:
        return {"partitions": {p.label(self.schema): p.text for p in self.read_partitions()}}

    # What should be there -----------------------------------------------------------------
    def now(self):
        return self.client.query_one("SELECT pg_catalog.now() AS now")["now"]

    def current_max(self):
        statement = sql.SQL("SELECT max({}) AS value FROM {}").format(ident(self.key_column), self.parent)
        return self.client.query_one(statement)["value"]

    def partition_name(self, fields: dict) -> str:
        try:
            return render_name(self.spec.name_template, dict(fields, table=self.table, schema=self.schema))
        except ValueError as exc:
            raise PgError(str(exc)) from None

    def expected(self) -> tuple[list, object]:
        """(the partitions this task wants, the retention cutoff or None)."""
        spec = self.spec
        cutoff = None
        if spec.strategy == "hash":
            wanted = [
                (self.partition_name({"modulus": spec.modulus, "remainder": r}), HashBound(spec.modulus, r)) for r in range(spec.modulus)
            ]
        elif spec.strategy == "range":
            try:
                if spec.interval:
                    now = self.now().astimezone(self.tz)
                    now = {"date": now.date(), "timestamp": now.replace(tzinfo=None)}.get(self.key_type, now)
                    start = None if spec.start is None else parse_time(spec.start, self.key_type, self.tz)
                    ranges = time_ranges(spec.interval, now, start, spec.lookback or 0, spec.premake)
                    if spec.retention is not None:
                        cutoff = shift(now, -spec.retention[0], -spec.retention[1])
                else:
                    start = None if spec.start is None else parse_integer(spec.start, "start")
                    current_max = self.current_max()
                    ranges = integer_ranges(spec.step, start, current_max, spec.lookback or 0, spec.premake)
                    anchor = current_max if current_max is not None else start
                    if spec.retention is not None and anchor is not None:
                        cutoff = anchor - spec.retention
            except ValueError as exc:
                raise PgError(f"{self.display}: {exc}") from None
            if cutoff is not None:
                ranges = [(lower, upper) for lower, upper in ranges if norm(upper) > norm(cutoff)]
            wanted = [(self.partition_name({"start": lower, "end": upper}), RangeBound(lower, upper)) for lower, upper in ranges]
        else:
            wanted, seen = [], {}
            for suffix, items in spec.values:
                values = tuple(self.typed(value) for value in items)
                for value in values:
                    if norm(value) in seen:
                        raise PgError(
                            f"values: {pg_text(value)} is listed for both {seen[norm(value)]!r} and {suffix!r}: "
                            f"a value goes in one partition"
                        )
                    seen[norm(value)] = suffix
                wanted.append((self.partition_name({"suffix": suffix}), ListBound(values)))
        if spec.default_partition:
            wanted.append((f"{self.table}_default", DefaultBound()))
        names = [pair[0] for pair in wanted]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise PgError(
                f"name_template {spec.name_template!r} gives the same name to several partitions ({', '.join(duplicates[:5])}): "
                f"include {{start}} with a finer format, or {{remainder}}/{{suffix}}"
            )
        return [Partition(self.schema, name, bound, bound_text(bound, self.key_type)) for name, bound in wanted], cutoff

    def make_plan(self) -> Plan:
        existing = self.read_partitions()
        wanted, cutoff = self.expected()
        plan = Plan(existing=existing)
        if cutoff is not None:
            plan.detach = [
                p for p in existing if isinstance(p.bound, RangeBound) and p.bound.upper is not None and norm(p.bound.upper) <= norm(cutoff)
            ]
        gone = {(p.schema, p.name) for p in plan.detach}
        staying = [p for p in existing if (p.schema, p.name) not in gone]
        by_name = {(p.schema, p.name): p for p in staying}
        for want in wanted:
            if isinstance(want.bound, DefaultBound):
                if any(isinstance(p.bound, DefaultBound) for p in staying):
                    continue  # one DEFAULT partition per table, whatever its name
            elif any(same_bound(p.bound, want.bound) for p in staying):
                continue  # there already, possibly under another name
            clash = by_name.get((want.schema, want.name))
            if clash is not None:
                plan.conflicts.append(f"partition {clash.label(self.schema)} exists with bounds {clash.text}; expected {want.text}")
                continue
            for other in staying:
                if overlaps(other.bound, want.bound):
                    plan.conflicts.append(
                        f"partition {other.label(self.schema)} ({other.text}) overlaps {want.name} ({want.text}) "
                        f"that this task would create"
                    )
                    break
            else:
                plan.create.append(want)
        if plan.create:
            taken = self.client.query(
                "SELECT c.relname AS name, c.relkind, c.relispartition FROM pg_catalog.pg_class c "
                "WHERE c.relnamespace = (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = %s) AND c.relname = ANY(%s)",
                (self.oid, [p.name for p in plan.create]),
            )
            for row in taken:
                kind = RELKINDS.get(row["relkind"], "relation")
                what = f"a {kind}" + (" that is a partition of another table" if row["relispartition"] else "")
                plan.conflicts.append(
                    f"{self.schema}.{row['name']} already exists and is not a partition of {self.display} ({what}): "
                    f"rename or drop it, or set name_template"
                )
        return plan

    def check(self, plan: Plan) -> None:
        if plan.conflicts:
            shown = "; ".join(plan.conflicts[:5]) + (f"; and {len(plan.conflicts) - 5} more" if len(plan.conflicts) > 5 else "")
            raise PgError(
                f"table {self.display} on {self.client.endpoint}: existing partitions conflict with this task, "
                f"nothing was changed: {shown}. Detach or rename the conflicting partitions, "
                f"or change the task (modulus, interval, start, values, name_template) to match them"
            )

    # ManagedObject ----------------------------------------------------------------------------
    def create(self, desired: dict) -> None:  # the set always exists; changes go through update
        self.update({}, desired)

    def update(self, current: dict, changes: dict) -> None:
        with self.client.transaction():
            if not self.client.check_mode:
                if self.spec.lock_timeout:
                    self.client.query("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (self.spec.lock_timeout,))
                # One run at a time; rows keep flowing (SHARE UPDATE EXCLUSIVE blocks only DDL/VACUUM).
                self.client.query(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(self.parent))
                self.plan = self.make_plan()  # again, under the lock
                self.check(self.plan)
            for partition in self.plan.detach:
                child = ident(partition.schema, partition.name)
                self.client.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(self.parent, child))
                if self.spec.retention_drop:
                    self.client.execute(sql.SQL("DROP TABLE {}").format(child))
            for partition in self.plan.create:
                self.client.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} {}").format(
                        ident(partition.schema, partition.name), self.parent, bound_sql(partition.bound)
                    )
                )

    def drop(self, current: dict) -> None:
        raise NotImplementedError("pg_partition does not drop partition sets")


def manage_partitions(client, spec: Spec) -> dict:
    """The module's work: plan, fail on conflicts, apply in one transaction, report."""
    partition_set = PartitionSet(client, spec)
    partition_set.plan = partition_set.make_plan()
    partition_set.check(partition_set.plan)
    desired = {"partitions": {p.label(partition_set.schema): p.text for p in partition_set.plan.after()}}
    try:
        result = partition_set.ensure("present", desired)
    except PgError as exc:
        if "lock timeout" in str(exc):
            raise PgError(f"{exc}: another session holds a lock on {partition_set.display}; retry, or raise lock_timeout") from None
        raise
    after = result.pop(PartitionSet.kind)
    result.pop("state", None)  # always "present": the table exists or the task failed
    plan = partition_set.plan
    detached = [p.label(partition_set.schema) for p in plan.detach]
    result.update(
        table=partition_set.display,
        strategy=spec.strategy,
        partitions=[{"name": name, "bound": bound} for name, bound in after.get("partitions", {}).items()],
        created=[p.label(partition_set.schema) for p in plan.create],
        detached=detached,
        dropped=detached if spec.retention_drop else [],
    )
    return result
