# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table_compare module's run: tables of an SQLite file against the PostgreSQL or MariaDB
tables the copy wrote, through the comparison engine (compare/engine.py) with a canonical side per
engine: sqlite/compare.py, and the one the target adapter gives (postgres/compare.py's
CanonicalSide, mariadb/compare.py) - the same target adapters as the copy's (copy/run.py's target_adapter).

The column types come from the copy's own plan (copy/engine.py's plan_tables: the existing target
column's type, mapped to a logical type; the source's declared type otherwise), so a value is
compared in the form the copy writes it. Reads only: check mode runs the same comparison.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.canonical import KEY_TYPES, Canonical
from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.engine import (
    ENGINE_OPTIONS,
    RangeComparison,
    option_problem,
    summarise,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.engine import CopyError, plan_tables
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import TARGET_OPTIONS, target_adapter
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.compare import SqliteSide
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import TABLE_OPTIONS, SqliteSource

COMPARE_OPTIONS = dict(
    TABLE_OPTIONS,
    **TARGET_OPTIONS,
    column_types=dict(type="dict"),
    target_schema=dict(type="str", default="public"),
    chunk_rows=dict(type="int", default=20000),
    rechecks=dict(type="int", default=0),
    recheck_delay=dict(type="float", default=1.0),
    **ENGINE_OPTIONS,
)


class CompareError(CopyError):
    pass


def validate(params: dict) -> None:
    problem = option_problem(params)
    if problem:
        raise CompareError(problem)


def canonical_for(plan) -> Canonical:
    """The canonical form of a planned table's rows: the copy's logical types, a real's digits and
    a numeric's scale from the target column; refuses a key the engines order differently."""
    logicals = [kind.logical for kind in plan.types]
    for column, position in zip(plan.key, plan.key_positions, strict=True):
        if logicals[position] not in KEY_TYPES:
            raise CompareError(
                f"key column {plan.name}.{column} is {plan.types[position]} on the target: the engines order such keys differently, "
                f"so key ranges cannot be compared. Give key_columns for {plan.name!r} of integer or text columns that identify a row"
            )
    digits = [kind.real_digits for kind in plan.types]
    scales = [kind.scale for kind in plan.types]
    canonical = Canonical(logicals, plan.key_positions, digits, scales)
    return canonical


def sides(source: SqliteSource, target, plan) -> tuple:
    """The two canonical sides of one planned table; refuses what cannot be compared, naming the fix."""
    if plan.create:
        raise CompareError(
            f"table {target.qualified(plan.name)} does not exist on {target.where}, so there is nothing to compare {plan.name} of "
            f"{source.where} with: copy it first (zerodowntime.migration.table_copy), or fix tables / target_schema"
        )
    canonical = canonical_for(plan)
    sqlite_side = SqliteSide(source.client, "source", plan.name, plan.columns, plan.key, canonical)
    target_side = target.compare_side("target", plan.name, plan.columns, plan.key, canonical)
    return sqlite_side, target_side


def run_compare(sqlite_client, target_client, params: dict, log=None) -> dict:
    started = time.monotonic()
    validate(params)
    source = SqliteSource(sqlite_client, params["change_table"], params.get("key_columns"))
    target = target_adapter(target_client, params)
    plans = plan_tables(source, target, params.get("tables"), params.get("column_types") or {})
    target.prepare_compare()  # both sides print values alike (PostgreSQL: timestamptz in UTC, floats with every digit)
    pairs = [(plan, *sides(source, target, plan)) for plan in plans]  # every refusal before any reading
    results = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for plan, sqlite_side, target_side in pairs:
            results.append(RangeComparison(sqlite_side, target_side, plan.name, plan.key, params, pool, log).compare())
    result = summarise(results, started)
    result["path"] = sqlite_client.path
    result["queries"] = []  # reads only
    return result
