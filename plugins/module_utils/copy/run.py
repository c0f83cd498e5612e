# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table_copy module's work: the adapters for its source and target, the checkpoints, the
progress callable, the engine. A further source or target is one more adapter chosen here
(`target_adapter`, `checkpoint_store`): PostgreSQL or MariaDB, each with its checkpoint store in the target database."""

from __future__ import annotations

import datetime

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.engine import (
    Copier,
    CopyError,
    plan_tables,
    reconcile_source,
    validate_options,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.state import StateStore
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb import migration_state as mariadb_state
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import CONNECTION_OPTIONS as MARIADB_OPTIONS
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import PYMYSQL
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import Client as MariaDBClient
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.copy_target import MariaDBTarget
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client as PgClient
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.copy_target import PgTarget
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import check_identifier
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import PSYCOPG
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client as SqliteClient
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import TABLE_OPTIONS, SqliteSource, check_source

TARGET_ENGINES = ["postgresql", "mariadb"]
# What a module whose target may be MariaDB adds to its argument spec (docs: the mariadb doc fragment).
TARGET_OPTIONS = dict(MARIADB_OPTIONS, target_engine=dict(type="str", default="postgresql", choices=TARGET_ENGINES))
TARGET_REQUIRED_IF = [("target_engine", "mariadb", ("mariadb_user", "mariadb_database"))]

COPY_OPTIONS = dict(
    TABLE_OPTIONS,
    **TARGET_OPTIONS,
    column_types=dict(type="dict"),
    target_schema=dict(type="str", default="public"),
    batch_size=dict(type="int", default=10000),
    max_rows=dict(type="int"),
    max_errors=dict(type="int", default=0),
    overwrite=dict(type="bool", default=False),
    restart=dict(type="bool", default=False),
    replay_until=dict(type="int", default=0),
    replay_timeout=dict(type="float", default=300.0),
    phase=dict(type="str", default="table_copy"),
    progress_schema=dict(type="str", default="public"),
    progress_table=dict(type="str", default="migration_progress"),
    progress_interval=dict(type="float", default=5.0),
)


def progress_writer(store: StateStore):
    """The on_progress callable: the latest figures, written into the phase row's details.progress
    with the next checkpoint (at most every progress_interval seconds)."""

    def on_progress(table: str, rows_done: int, rows_total: int, rate, eta) -> None:
        store.progress = {
            "table": table,
            "rows_done": rows_done,
            "rows_total": rows_total,
            "rows_per_second": rate,
            "eta_seconds": eta,
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (modules run on 3.9)
        }

    return on_progress


def check_names(target, plans) -> None:
    """Every name the target will be given, by the target's own rules (before anything is written)."""
    for plan in plans:
        target.check_name(plan.name, "table")
        for column in plan.columns:
            target.check_name(column, f"column of table {plan.name!r}")


def target_connection(params: dict, check_mode: bool = False) -> tuple:
    """(opener of the target's connection, the Library it needs) for params['target_engine']."""
    if params.get("target_engine") == "mariadb":
        return (lambda: MariaDBClient(params, check_mode)), PYMYSQL
    return (lambda: PgClient(params, check_mode=check_mode)), PSYCOPG


def run_sqlite_to_target(module, work, writes: bool = True) -> None:
    """The rest of main() of a module from an SQLite file to a target (table_copy, table_compare,
    sqlite_cutover): both connections opened, `work(sqlite_client, target_client)` run by the one
    runner. writes=False: a module that only reads runs every statement, in check mode too."""
    check_mode = module.check_mode and writes
    open_target, library = target_connection(module.params, check_mode)
    run_module(
        module,
        lambda opened: work(opened["sqlite"], opened["target"]),
        openers={"sqlite": lambda: SqliteClient(module.params, check_mode), "target": open_target},
        libraries=[library],
    )


def target_adapter(client, params: dict):
    """The target adapter of params['target_engine'] (table_copy's and table_compare's)."""
    if params.get("target_engine") == "mariadb":
        return MariaDBTarget(client)
    check_identifier(params["target_schema"], "target_schema")
    return PgTarget(client, params["target_schema"])


def checkpoint_store(client, params: dict) -> StateStore:
    """The checkpoints in the target database, so a batch and its checkpoint commit together."""
    if params.get("target_engine") == "mariadb":
        table, interval = params["progress_table"], params["progress_interval"]
        return StateStore(client, params["phase"], client.database, table, interval, run_state=mariadb_state.run_state)
    return StateStore(client, params["phase"], params["progress_schema"], params["progress_table"], params["progress_interval"])


def state_view(copy_state: dict, plans) -> dict:
    """What --diff shows: per table whether it exists in the target, rows copied and done; the last change replayed."""
    tables = copy_state.get("tables") or {}
    return {
        "tables": {
            plan.name: {"rows": (tables.get(plan.name) or {}).get("rows", 0), "done": bool((tables.get(plan.name) or {}).get("done"))}
            for plan in plans
        },
        "replayed_seq": copy_state.get("replayed_seq"),
    }


def run_copy(sqlite_client, target_client, params: dict, check_mode: bool) -> dict:
    validate_options(params)
    if params["progress_interval"] < 0:
        raise CopyError(f"progress_interval={params['progress_interval']} is out of range: give seconds, 0 or more")
    source = SqliteSource(sqlite_client, params["change_table"], params.get("key_columns"))
    check_source(source)
    target = target_adapter(target_client, params)
    store = checkpoint_store(target_client, params)
    store.load()
    plans = plan_tables(source, target, params.get("tables"), params.get("column_types") or {})
    check_names(target, plans)
    before = state_view(store.copy, plans)
    source_check = reconcile_source(store, source.identity(), source.high_seq(), params["restart"])
    if params["target_engine"] == "mariadb" and not check_mode:
        # DDL commits implicitly in MariaDB: the checkpoint table is made before any batch's transaction
        mariadb_state.PhaseTable(target_client, params["progress_table"]).ensure()
    copier = Copier(source, target, store, params, on_progress=progress_writer(store))
    try:
        result = copier.run(plans, check_mode)
    except ModuleError as exc:
        if not check_mode:
            store.fail(str(exc))
        raise
    if check_mode:
        after = {"tables": {plan.name: {"rows": plan.total, "done": True} for plan in plans}, "replayed_seq": "(every change captured)"}
    else:
        after = state_view(store.copy, plans)
    result["diff"] = {"before": before, "after": after}
    result["phase"] = params["phase"]
    result["source"] = source_check["source"]
    result["restarted"] = source_check["restarted"]
    if source_check["warnings"]:
        result["warnings"] = source_check["warnings"]
    result["path"] = sqlite_client.path
    result["queries"] = list(sqlite_client.queries) + list(target_client.queries)
    return result
