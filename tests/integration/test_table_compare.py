"""table_compare: a vMiner-like SQLite file copied by table_copy into a throwaway database on the
suite's own PostgreSQL (SCRATCH_PG) compares equal with the right row counts (SQLite's text dates and loose
types against PostgreSQL's timestamptz, bigint, double precision); a row changed, one deleted and
one added on the PostgreSQL side are exactly the three keys reported; check mode reports the same
and changes nothing; the bad input (a table the target lacks, a table without a key, a target
column type without a mapping) fails naming the object and the fix."""

from __future__ import annotations

import sqlite3

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.run import COMPARE_OPTIONS, run_compare
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import COPY_OPTIONS, run_copy
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import ensure_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client as SqliteClient
from tests.lab import SCRATCH_PG, connect, run_module, scratch_database, vminer_sample

MODULE = "zerodowntime.migration.table_compare"
VMINER = ["vcenters", "hosts", "datastores", "virtual_machines"]
DATES = {
    "vcenters": {"created_at": "timestamptz", "last_sync_at": "timestamptz"},
    "virtual_machines": {"created_at": "timestamptz", "updated_at": "timestamptz"},
}
sample = vminer_sample()


@pytest.fixture()
def vminer(tmp_path):
    path = tmp_path / "vminer.db"
    sample.build(str(path), vms=20000, vcenters=100)
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as client:
        ensure_capture(client, {"change_table": "zdm_changes", "tables": VMINER, "key_columns": None, "state": "present", "force": False})
    return path


@pytest.fixture()
def target_db(scratch_postgres):
    with scratch_database(SCRATCH_PG, "zdm_table_compare_test") as target:
        yield target


def copy(path, target: dict, **options) -> dict:
    params = {name: spec.get("default") for name, spec in COPY_OPTIONS.items()}
    params.update(options)
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as source, Client(target) as client:
        return run_copy(source, client, params, False)


def compare(path, target: dict, **options) -> dict:
    """table_compare's work through its Python API (the module is this and an argument spec)."""
    params = {name: spec.get("default") for name, spec in COMPARE_OPTIONS.items()}
    params.update(options)
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as source, Client(target) as client:
        return run_compare(source, client, params)


def module(path, target: dict, check: bool = False, **options) -> dict:
    return run_module(MODULE, {"path": str(path), **target, **options}, check=check)[1]


def by_table(result: dict) -> dict:
    return {entry["table"]: entry for entry in result["tables"]}


def differing(result: dict, table: str = "virtual_machines") -> set:
    return {(entry["key"]["id"], entry["kind"]) for entry in by_table(result)[table]["differing_keys"]}


def test_a_copied_file_compares_equal_then_exactly_the_changed_keys_are_reported(vminer, target_db):
    done = copy(vminer, target_db, column_types=DATES)
    assert done["complete"] is True and done["errors"] == 0

    equal = module(vminer, target_db, column_types=DATES)
    assert equal.get("failed") is not True, equal
    assert equal["changed"] is False and equal["equal"] is True and equal["differing_tables"] == []
    tables = by_table(equal)
    assert {table: (entry["rows_source"], entry["rows_target"]) for table, entry in tables.items()} == {
        "vcenters": (100, 100),
        "hosts": (1000, 1000),
        "datastores": (500, 500),
        "virtual_machines": (20000, 20000),
    }
    assert equal["rows_compared"] == 100 + 1000 + 500 + 20000
    assert tables["virtual_machines"]["key"] == ["id"] and tables["virtual_machines"]["chunks"] >= 1

    with sqlite3.connect(vminer) as conn:
        last = conn.execute("SELECT max(id) FROM virtual_machines").fetchone()[0]
    with connect(target_db) as conn:
        conn.execute("UPDATE virtual_machines SET num_cpu = num_cpu + 1 WHERE id = 123")
        conn.execute("DELETE FROM virtual_machines WHERE id = 4567")
        conn.execute("CREATE TEMP TABLE one AS SELECT * FROM virtual_machines WHERE id = 10")
        conn.execute("UPDATE one SET id = %s, uuid = 'extra-' || uuid", (last + 1,))
        conn.execute("INSERT INTO virtual_machines SELECT * FROM one")
    expected = {(123, "changed"), (4567, "missing"), (last + 1, "extra")}

    # small chunks and leaves: the three keys are found by bisection, not by one big diff
    found = compare(vminer, target_db, column_types=DATES, chunk_rows=2000, leaf_rows=50)
    assert found["equal"] is False and found["differing_tables"] == ["virtual_machines"]
    assert differing(found) == expected
    entry = by_table(found)["virtual_machines"]
    assert (entry["missing"], entry["extra"], entry["changed"], entry["differences"]) == (1, 1, 1, 3)
    assert (entry["rows_source"], entry["rows_target"]) == (20000, 20000)
    assert entry["chunks"] >= 5 and 1 <= entry["chunks_differing"] <= 3

    checked = module(vminer, target_db, check=True, column_types=DATES, fail_on_difference=False)
    assert checked.get("failed") is not True, checked
    assert checked["changed"] is False and differing(checked) == expected

    failed = module(vminer, target_db, column_types=DATES)
    assert failed["failed"] is True and failed["changed"] is False
    assert "virtual_machines (1 missing, 1 extra, 1 changed)" in failed["msg"]


def test_bad_input_names_the_object_and_the_fix(vminer, target_db):
    copy(vminer, target_db, column_types={"vcenters": DATES["vcenters"]}, tables=["vcenters"])

    missing = module(vminer, target_db, tables=["vcenters", "hosts"], column_types={"vcenters": DATES["vcenters"]})
    assert missing["failed"] is True
    assert "public.hosts does not exist on" in missing["msg"] and "table_copy" in missing["msg"]

    with sqlite3.connect(vminer) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    keyless = module(vminer, target_db, tables=["notes"])
    assert keyless["failed"] is True and "'notes' has no primary key" in keyless["msg"] and "key_columns" in keyless["msg"]

    with connect(target_db) as conn:
        conn.execute("ALTER TABLE vcenters ALTER COLUMN url TYPE point USING point(0, 0)")
    unmapped = module(vminer, target_db, tables=["vcenters"], column_types={"vcenters": DATES["vcenters"]})
    assert unmapped["failed"] is True
    assert "column 'url' of target table public.vcenters" in unmapped["msg"] and "no mapping" in unmapped["msg"]
