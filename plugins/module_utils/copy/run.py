# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table_copy module's work: the adapters for its source and target, the checkpoints, the
progress callable, the engine. A further source or target is one more adapter chosen here."""

from __future__ import annotations

import datetime

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.engine import (
    Copier,
    CopyError,
    plan_tables,
    reconcile_source,
    validate_options,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.state import StateStore
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.copy_target import PgTarget
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import check_identifier
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import TABLE_OPTIONS, SqliteSource, check_source

COPY_OPTIONS = dict(
    TABLE_OPTIONS,
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


def check_names(params: dict, plans) -> None:
    check_identifier(params["target_schema"], "target_schema")
    for plan in plans:
        check_identifier(plan.name, "table")
        for column in plan.columns:
            check_identifier(column, f"column of table {plan.name!r}")


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


def run_copy(sqlite_client, pg_client, params: dict, check_mode: bool) -> dict:
    validate_options(params)
    if params["progress_interval"] < 0:
        raise CopyError(f"progress_interval={params['progress_interval']} is out of range: give seconds, 0 or more")
    source = SqliteSource(sqlite_client, params["change_table"], params.get("key_columns"))
    check_source(source)
    target = PgTarget(pg_client, params["target_schema"])
    store = StateStore(pg_client, params["phase"], params["progress_schema"], params["progress_table"], params["progress_interval"])
    store.load()
    plans = plan_tables(source, target, params.get("tables"), params.get("column_types") or {})
    check_names(params, plans)
    before = state_view(store.copy, plans)
    source_check = reconcile_source(store, source.identity(), source.high_seq(), params["restart"])
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
    result["queries"] = list(sqlite_client.queries) + list(pg_client.queries)
    return result
