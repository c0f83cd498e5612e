"""zerodowntime.migration.pg_compare: blue against green in scratch databases (zdm_compare_test on
both), where green's copy is partitioned differently and has an extra column, and differences of
every kind are injected on purpose."""

from __future__ import annotations

import threading
import time

import pytest

from tests.lab import BLUE, GREEN, LAB_PASSWORD, connect, drop_database, recreate_database, run_module

MODULE = "zerodowntime.migration.pg_compare"
DB = "zdm_compare_test"
SOURCE = dict(BLUE, login_db=DB)
TARGET = dict(GREEN, login_db=DB)
HOSTILE = 'a"; DROP TABLE zdm_victim; --'
ROWS = 20000  # rows of items and pairs in DATA

BLUE_SCHEMA = """
CREATE TABLE zdm_victim (id int);
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, amount numeric, note text, created_at timestamptz NOT NULL);
CREATE TABLE pairs (tenant_id int, id bigint, label text, PRIMARY KEY (tenant_id, id));
CREATE TABLE codes (code text PRIMARY KEY, ref uuid NOT NULL, payload jsonb);
CREATE TABLE keyless (a int, b text);
"""
# Green: items hash-partitioned with an extra column, pairs range-partitioned, the others plain.
GREEN_SCHEMA = """
CREATE TABLE zdm_victim (id int);
CREATE TABLE items (id bigint, name text NOT NULL, amount numeric, note text, created_at timestamptz NOT NULL,
                    migrated boolean DEFAULT true, PRIMARY KEY (id)) PARTITION BY HASH (id);
CREATE TABLE items_0 PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER 0);
CREATE TABLE items_1 PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER 1);
CREATE TABLE items_2 PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER 2);
CREATE TABLE items_3 PARTITION OF items FOR VALUES WITH (MODULUS 4, REMAINDER 3);
CREATE TABLE pairs (tenant_id int, id bigint, label text, PRIMARY KEY (tenant_id, id)) PARTITION BY RANGE (tenant_id);
CREATE TABLE pairs_low PARTITION OF pairs FOR VALUES FROM (MINVALUE) TO (50);
CREATE TABLE pairs_high PARTITION OF pairs FOR VALUES FROM (50) TO (MAXVALUE);
CREATE TABLE codes (code text PRIMARY KEY, ref uuid NOT NULL, payload jsonb);
CREATE TABLE keyless (a int, b text);
"""
DATA = """
INSERT INTO items SELECT g, 'item ' || g, g * 1.25, CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
  FROM generate_series(1, 20000) g;
INSERT INTO pairs SELECT g % 100, g, 'p' || g FROM generate_series(1, 20000) g;
INSERT INTO codes SELECT 'code-' || lpad(g::text, 6, '0'), md5(g::text)::uuid, jsonb_build_object('g', g)
  FROM generate_series(1, 5000) g;
INSERT INTO keyless SELECT g, 'k' || g FROM generate_series(1, 1000) g;
"""
TABLES = ["items", "pairs", "codes", "keyless"]
SMALL_CHUNKS = dict(chunk_rows=1000, leaf_rows=20, rechecks=1, recheck_delay=0.1)
# "Replication in flight": rows reach green IN_FLIGHT_SECONDS after the module starts - after its
# first reading (the module starts and reads within a few seconds), before its last re-read.
IN_FLIGHT_SECONDS = 5.0
RECHECK_AFTER_ARRIVAL = dict(rechecks=4, recheck_delay=3.0)


@pytest.fixture(scope="module")
def databases(lab):
    for endpoint, schema in ((BLUE, BLUE_SCHEMA), (GREEN, GREEN_SCHEMA)):
        recreate_database(endpoint, DB)
        with connect(dict(endpoint, login_db=DB)) as conn:
            conn.execute(schema)
            conn.execute(DATA)
            conn.execute("ANALYZE")
    yield
    drop_database(BLUE, DB)
    drop_database(GREEN, DB)


@pytest.fixture()
def green_db(databases):
    """Green's scratch database; every test puts back what it changed."""
    with connect(TARGET) as conn:
        yield conn


def compare(check: bool = False, **args) -> dict:
    options = dict(source=dict(SOURCE, login_password=LAB_PASSWORD), target=dict(TARGET, login_password=LAB_PASSWORD))
    options.update(fail_on_difference=False, tables=TABLES)
    options.update(args)
    run, result = run_module(MODULE, options, check=check)
    assert run.status == "successful", run.stdout
    return result


def by_table(result: dict) -> dict:
    return {table["table"]: table for table in result["tables"]}


def test_equal_data_compares_equal_across_partitioned_and_plain_shapes(databases):
    result = compare(**SMALL_CHUNKS)
    assert result["equal"], result["msg"]
    assert not result["failed"] and not result["changed"]
    tables = by_table(result)
    assert tables["items"]["rows_source"] == tables["items"]["rows_target"] == ROWS
    assert tables["items"]["chunks"] >= 10  # really chunked
    assert tables["pairs"]["key"] == ["tenant_id", "id"]
    assert tables["codes"]["key"] == ["code"]
    assert result["rows_compared"] == 2 * ROWS + 5000 + 1000


def test_keyless_table_is_one_checksum_with_a_warning(databases):
    result = compare(tables=["keyless"])
    table = by_table(result)["keyless"]
    assert table["key"] == [] and table["chunks"] == 1
    assert any("no primary key" in warning for warning in result["warnings"])


@pytest.mark.parametrize(
    ("table", "damage", "repair", "kind", "key"),
    [
        (
            "items",
            "DELETE FROM items WHERE id = 4321",
            "INSERT INTO items SELECT 4321, 'item 4321', 4321 * 1.25, 'n4321', "
            "timestamptz '2026-01-01 00:00:00+00' + 4321 * interval '1 minute'",
            "missing",
            {"id": "4321"},
        ),
        (
            "items",
            "INSERT INTO items VALUES (999999, 'ghost', 1, 'x', now())",
            "DELETE FROM items WHERE id = 999999",
            "extra",
            {"id": "999999"},
        ),
        (
            "items",
            "UPDATE items SET name = 'renamed' WHERE id = 17",
            "UPDATE items SET name = 'item 17' WHERE id = 17",
            "changed",
            {"id": "17"},
        ),
        # NULL on blue, empty string on green.
        ("items", "UPDATE items SET note = '' WHERE id = 14", "UPDATE items SET note = NULL WHERE id = 14", "changed", {"id": "14"}),
        # Equal as numbers, different as text: 12.50 vs 12.5.
        ("items", "UPDATE items SET amount = 12.5 WHERE id = 10", "UPDATE items SET amount = 12.50 WHERE id = 10", "changed", {"id": "10"}),
        (
            "pairs",
            "UPDATE pairs SET label = 'x' WHERE tenant_id = 77 AND id = 15077",
            "UPDATE pairs SET label = 'p15077' WHERE tenant_id = 77 AND id = 15077",
            "changed",
            {"tenant_id": "77", "id": "15077"},
        ),
        # jsonb that differs in a nested value, under a text key.
        (
            "codes",
            "UPDATE codes SET payload = '{\"g\": \"2500\"}' WHERE code = 'code-002500'",
            "UPDATE codes SET payload = '{\"g\": 2500}' WHERE code = 'code-002500'",
            "changed",
            {"code": "code-002500"},
        ),
    ],
    ids=["missing-row", "extra-row", "changed-value", "null-vs-empty", "text-form-differs", "composite-key", "text-key"],
)
def test_each_kind_of_difference_is_found_with_its_key(green_db, table, damage, repair, kind, key):
    green_db.execute(damage)
    try:
        result = compare(tables=[table], **SMALL_CHUNKS)
    finally:
        green_db.execute(repair)
    found = by_table(result)[table]
    assert not result["equal"] and result["differing_tables"] == [table]
    assert found["differences"] == 1, found
    assert found["differing_keys"] == [{"key": key, "kind": kind}]
    assert found[kind] == 1
    assert compare(tables=[table], **SMALL_CHUNKS)["equal"]  # repaired: equal again


def test_a_difference_in_the_whole_table_checksum_is_found_without_a_key(green_db):
    green_db.execute("UPDATE keyless SET b = 'changed' WHERE a = 5")
    try:
        result = compare(tables=["keyless"])
    finally:
        green_db.execute("UPDATE keyless SET b = 'k5' WHERE a = 5")
    assert not result["equal"]
    assert by_table(result)["keyless"]["differences"] == 1


def test_many_differences_are_counted_and_the_first_keys_listed(green_db):
    green_db.execute("DELETE FROM items WHERE id BETWEEN 5001 AND 8000")
    green_db.execute("UPDATE items SET name = name || '!' WHERE id IN (1, 2, 3)")
    try:
        result = compare(tables=["items"], max_keys=5, **SMALL_CHUNKS)
    finally:
        restore_items(5001, 8000)
        green_db.execute("UPDATE items SET name = 'item ' || id WHERE id IN (1, 2, 3)")
    items = by_table(result)["items"]
    assert items["missing"] == 3000 and items["changed"] == 3 and items["extra"] == 0
    assert items["differences"] == 3003
    assert len(items["differing_keys"]) == 5
    assert items["rows_source"] - items["rows_target"] == 3000


def test_fail_on_difference_fails_naming_the_table(green_db):
    green_db.execute("UPDATE codes SET ref = gen_random_uuid() WHERE code = 'code-000001'")
    try:
        options = dict(source=dict(SOURCE, login_password=LAB_PASSWORD), target=dict(TARGET, login_password=LAB_PASSWORD), tables=["codes"])
        result = run_module(MODULE, options)[1]
    finally:
        green_db.execute("UPDATE codes SET ref = md5('1')::uuid WHERE code = 'code-000001'")
    assert result["failed"]
    assert "codes (0 missing, 0 extra, 1 changed)" in result["msg"]


def test_sample_mode_checks_a_fraction_of_the_chunks(databases):
    result = compare(tables=["items"], sample_percent=20, seed=7, chunk_rows=1000)
    items = by_table(result)["items"]
    assert items["chunks"] >= 10
    assert items["chunks_checked"] == -(-items["chunks"] * 20 // 100)
    assert 0 < items["rows_source"] < ROWS and items["rows_source"] == items["rows_target"]


def test_check_mode_returns_the_same_and_changes_nothing(databases):
    result = compare(check=True, **SMALL_CHUNKS)
    assert result["equal"] and not result["changed"]
    assert by_table(result)["items"]["rows_source"] == ROWS


def test_a_transient_difference_that_replication_fixes_is_not_reported(green_db):
    """Green lags: a row is missing at first reading and arrives before the re-read."""
    green_db.execute("DELETE FROM items WHERE id = 2222")
    restore = threading.Timer(IN_FLIGHT_SECONDS, lambda: restore_items(2222, 2222))
    restore.start()
    result = compare(tables=["items"], chunk_rows=1000, leaf_rows=20, **RECHECK_AFTER_ARRIVAL)
    restore.join()
    assert result["equal"], result
    assert any("re-reading 1 differing chunks, 1 keys" in line for line in result["progress"])


def test_a_block_of_rows_still_in_flight_is_not_reported(green_db):
    """Thousands of rows missing at first reading (counted, not listed) that arrive before the re-read."""
    green_db.execute("DELETE FROM items WHERE id BETWEEN 12001 AND 15000")
    restore = threading.Timer(IN_FLIGHT_SECONDS, lambda: restore_items(12001, 15000))
    restore.start()
    result = compare(tables=["items"], chunk_rows=1000, leaf_rows=20, max_keys=5, **RECHECK_AFTER_ARRIVAL)
    restore.join()
    assert result["equal"], result
    assert any("re-reading" in line for line in result["progress"])


def test_the_comparison_reports_its_progress_into_migration_state_while_it_runs(green_db):
    """The `progress` option: tables compared of total, and the chunks of the table being compared,
    in the phase's row of a migration_state table while the module runs (the last table held by a
    lock a few seconds, so the row is read mid-run), then done."""
    step = "phase 4 compare"
    green_db.execute("DROP TABLE IF EXISTS migration_progress")
    state = dict(TARGET, phase="phase4_validate", state="started", phases=["phase4_validate"])
    assert not run_module("zerodowntime.migration.migration_state", state)[1]["failed"]
    seen: list[dict] = []
    stop = threading.Event()

    def read_progress():
        with connect(TARGET) as conn:
            while not stop.is_set():
                value = conn.execute("SELECT progress -> %s FROM migration_progress WHERE phase = 'phase4_validate'", (step,)).fetchone()[0]
                if value and (not seen or seen[-1] != value):
                    seen.append(value)
                time.sleep(0.02)

    reader = threading.Thread(target=read_progress, daemon=True)
    release = threading.Event()

    def hold_last_table():
        with connect(TARGET) as conn, conn.transaction():
            conn.execute("LOCK TABLE keyless IN ACCESS EXCLUSIVE MODE")
            release.wait(4)

    holder = threading.Thread(target=hold_last_table, daemon=True)
    holder.start()
    reader.start()
    try:
        result = compare(progress=dict(TARGET, phase="phase4_validate", step=step, every=0), **SMALL_CHUNKS)
    finally:
        release.set()
        holder.join()
        stop.set()
        reader.join()
        green_db.execute("DROP TABLE IF EXISTS migration_progress")
    assert result["equal"], result
    assert not [warning for warning in result.get("warnings", []) if "progress" in warning], result["warnings"]  # every snapshot recorded
    running = [value for value in seen if value["state"] == "running"]
    assert running, seen
    assert {value["unit"] for value in running} == {"tables"} and {value["total"] for value in running} == {len(TABLES)}
    # the lock on keyless holds the run at 3 of 4 tables while the reader looks
    assert any(value["done"] == 3 and value["detail"]["table"] == "keyless" for value in running), running
    chunks = [figures for value in running for name, figures in value.get("items", {}).items() if name == "items"]
    assert chunks and chunks[-1]["unit"] == "chunks" and 0 < chunks[-1]["done"] <= chunks[-1]["total"], chunks
    last = seen[-1]
    assert last["state"] == "done" and last["done"] == last["total"] == len(TABLES) and last["detail"]["equal"] is True, last


def restore_items(first: int, last: int) -> None:
    with connect(TARGET) as conn:
        conn.execute(
            "INSERT INTO items SELECT g, 'item ' || g, g * 1.25, CASE WHEN g %% 7 = 0 THEN NULL ELSE 'n' || g END, "
            "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )


def test_hostile_table_name_is_a_missing_table_and_executes_nothing(databases):
    result = compare(tables=[HOSTILE])
    assert result["failed"]
    assert "does not exist on the source" in result["msg"]
    with connect(SOURCE) as conn:
        assert conn.execute("SELECT to_regclass('zdm_victim') IS NOT NULL").fetchone()[0]


@pytest.mark.parametrize(
    ("table", "on_source", "on_target", "message"),
    [
        pytest.param(
            "only_blue",
            "CREATE TABLE IF NOT EXISTS only_blue (id int PRIMARY KEY)",
            None,
            "table public.only_blue does not exist on the target",
            id="table",
        ),
        pytest.param(
            "narrow",
            "CREATE TABLE IF NOT EXISTS narrow (id int PRIMARY KEY, wide text)",
            "CREATE TABLE IF NOT EXISTS narrow (id int PRIMARY KEY)",
            "has no column wide",
            id="column",
        ),
    ],
)
def test_what_the_target_lacks_is_named(databases, table, on_source, on_target, message):
    for endpoint, statement in ((SOURCE, on_source), (TARGET, on_target)):
        if statement:
            with connect(endpoint) as conn:
                conn.execute(statement)
    result = compare(tables=[table])
    assert result["failed"]
    assert message in result["msg"]


def test_wrong_password_names_the_side_and_user_not_the_password(databases):
    result = compare(target=dict(TARGET, login_password="not-the-password"))
    assert result["failed"]
    assert "target" in result["msg"] and "authentication failed for user 'migrator'" in result["msg"]
    assert "not-the-password" not in str(result)


def test_live_replication_compares_equal_at_the_slot_position(phase2):
    """Writes keep landing on blue (and reach green through the phase 2 subscription) while the
    comparison runs; the re-reads after green confirms blue's position make it equal."""
    stop = threading.Event()
    written = []

    def writer():
        with connect(BLUE) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO audit_log (tenant_id, action, object_type) VALUES (1, 'compare-test', 'row')")
                written.append(1)
                time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        options = dict(
            source=dict(BLUE, login_password=LAB_PASSWORD),
            target=dict(GREEN, login_password=LAB_PASSWORD),
            tables=["audit_log", "users"],
            slot="novacron_blue_to_green",
            chunk_rows=20000,
        )
        run, result = run_module(MODULE, options)
    finally:
        stop.set()
        thread.join()
    assert run.status == "successful", run.stdout
    assert len(written) > 50  # the writer really ran during the comparison
    assert result["equal"], result["msg"]
