"""table_copy and table_compare with MariaDB as the target: a real SQLite file (integers, reals,
numerics, text, text dates, blobs, booleans, NULLs, unicode) copied into the lab's MariaDB
(instance lab on its own host db-mariadb, 127.0.0.14:3306, database appdb) compares equal; a change
made after the capture is replayed; a second run changes nothing; check mode writes nothing; a
hostile table name is one name on both sides; wrong credentials are named and nothing is written; a
value too long for an existing VARCHAR(5) column is named with table, key, column and value; a row
changed on the MariaDB side is found by its key. Every table and phase row the tests make is
removed afterwards (the lab is shared)."""

from __future__ import annotations

import datetime
import decimal
import importlib.util
import sqlite3
import uuid

import pymysql
import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.run import COMPARE_OPTIONS, run_compare
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import COPY_OPTIONS, run_copy
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import Client as MariaDBClient
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import quote_ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import ensure_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client as SqliteClient
from tests.lab import LAB_PASSWORD, MARIADB_ADDRESS, MARIADB_PORT, ROOT, run_module

MARIADB = {
    "target_engine": "mariadb",
    "mariadb_host": MARIADB_ADDRESS,
    "mariadb_port": MARIADB_PORT,
    "mariadb_user": "app",
    "mariadb_password": LAB_PASSWORD,
    "mariadb_database": "appdb",
}
HOSTILE = 'zdm it `we"ird` 5%s %; DROP TABLE x; --'
SCHEMA = """
CREATE TABLE zdm_it_items (
    id INTEGER PRIMARY KEY, qty INTEGER, price REAL, amount NUMERIC, name TEXT, label VARCHAR(40),
    born DATE, seen DATETIME, data BLOB, active BOOLEAN
)
"""
ROWS = [
    (1, 3, 9.99, "12.50", "plain", "short", "2026-01-02", "2026-01-02 03:04:05", b"\x00\x01\xff", 1),
    (2, -(2**62), 1e-300, "0.001", "Zürich ☃ 日本 🙂", "ünï", "1999-12-31", "2026-03-04T05:06:07.123456", b"", 0),
    (3, None, None, None, None, None, None, None, None, None),
    (4, 2**62, -2.5, "-7", 'it\'s "quoted" `tick`', "", "2026-02-28", "2026-02-28 23:59:59+02:00", bytes(range(256)), 1),
    (5, 0, 0.0, "100", "trailing space ", "x", "2000-01-01", "1970-01-01 00:00:01", b"blob", 0),
]


def sqlite_file(path, tables: list[str]) -> str:
    """The SQLite file with the test's tables (each the schema above, renamed) and their capture."""
    with sqlite3.connect(path) as conn:
        for table in tables:
            conn.execute(SCHEMA.replace("zdm_it_items", '"' + table.replace('"', '""') + '"'))
            conn.executemany(f'INSERT INTO "{table.replace(chr(34), chr(34) * 2)}" VALUES (?,?,?,?,?,?,?,?,?,?)', ROWS)  # noqa: S608
    with SqliteClient({"path": str(path), "busy_timeout": 5.0}) as client:
        ensure_capture(client, {"change_table": "zdm_changes", "tables": tables, "key_columns": None, "state": "present", "force": False})
    return str(path)


def maria() -> pymysql.Connection:
    utc = "SET time_zone = '+00:00'"
    return pymysql.connect(
        host=MARIADB_ADDRESS, port=MARIADB_PORT, user="app", password=LAB_PASSWORD, database="appdb", autocommit=True, init_command=utc
    )


def maria_rows(table: str) -> list[tuple]:
    with maria() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {quote_ident(table)} ORDER BY 1", ())  # noqa: S608 (formatted: quote_ident doubles a %)
        return list(cur.fetchall())


def table_exists(table: str) -> bool:
    with maria() as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'appdb' AND table_name = %s", (table,))
        return any(row[0] == table for row in cur.fetchall())


def phase_row(phase: str):
    if not table_exists("migration_progress"):
        return None
    with maria() as conn, conn.cursor() as cur:
        cur.execute("SELECT status, details FROM migration_progress WHERE phase = %s", (phase,))
        return cur.fetchone()


def copy(path, check: bool = False, **options) -> dict:
    """table_copy's work through its Python API (the module is this and an argument spec)."""
    params = {name: spec.get("default") for name, spec in COPY_OPTIONS.items()}
    params.update(MARIADB, **options)
    with SqliteClient({"path": path, "busy_timeout": 5.0}, check) as source, MariaDBClient(params, check) as client:
        return run_copy(source, client, params, check)


def compare(path, **options) -> dict:
    params = {name: spec.get("default") for name, spec in COMPARE_OPTIONS.items()}
    params.update(MARIADB, **options)
    with SqliteClient({"path": path, "busy_timeout": 5.0}) as source, MariaDBClient(params) as client:
        return run_compare(source, client, params)


def module(name: str, path, check: bool = False, diff: bool = False, **options) -> dict:
    return run_module(f"zerodowntime.migration.{name}", {"path": path, **MARIADB, **options}, check=check, diff=diff)[1]


@pytest.fixture()
def cleanup(lab):
    """Tables and phases the test names; dropped (and their phase rows deleted) before and after, and
    the phase table when no other phase is left in it."""
    made = {"tables": [], "phases": []}

    def clean():
        with maria() as conn, conn.cursor() as cur:
            for table in made["tables"]:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(table)}", ())
            if table_exists("migration_progress") and made["phases"]:
                cur.execute("DELETE FROM migration_progress WHERE phase IN %s", (made["phases"],))
                cur.execute("SELECT count(*) FROM migration_progress")
                if cur.fetchone()[0] == 0:  # the copy made it for the tests' phases: leave appdb as it was
                    cur.execute("DROP TABLE migration_progress")

    def names(tables: list[str], phase: str):
        made["tables"] += tables
        made["phases"].append(phase)
        clean()

    yield names
    clean()


def test_a_file_of_every_type_is_copied_equal_changes_replayed_and_a_second_run_changes_nothing(tmp_path, cleanup):
    cleanup(["zdm_it_items"], "zdm_it_types")
    path = sqlite_file(tmp_path / "app.db", ["zdm_it_items"])
    options = {"tables": ["zdm_it_items"], "phase": "zdm_it_types"}

    done = copy(path, **options)
    assert done["changed"] is True and done["complete"] is True and done["errors"] == 0
    assert done["rows_copied"] == len(ROWS)
    plan = done["plan"][0]
    assert plan["create"] is True
    assert plan["columns"]["id"] == "INTEGER -> bigint" and plan["columns"]["seen"] == "DATETIME -> datetime(6)"
    assert plan["columns"]["active"] == "BOOLEAN -> tinyint(1)" and plan["columns"]["amount"] == "NUMERIC -> decimal(65,30)"
    assert "`zdm_it_items`" in plan["create_statement"] and "utf8mb4_nopad_bin" in plan["create_statement"]
    rows = {row[0]: row for row in maria_rows("zdm_it_items")}
    assert rows[1] == (1, 3, 9.99, decimal.Decimal("12.5"), "plain", "short",
                       datetime.date(2026, 1, 2), datetime.datetime(2026, 1, 2, 3, 4, 5), b"\x00\x01\xff", 1)  # fmt: skip
    assert rows[2][4] == "Zürich ☃ 日本 🙂" and rows[2][1] == -(2**62) and rows[2][7] == datetime.datetime(2026, 3, 4, 5, 6, 7, 123456)
    assert rows[3] == (3, *[None] * 9)
    assert rows[4][7] == datetime.datetime(2026, 2, 28, 21, 59, 59)  # +02:00 written in UTC
    assert rows[4][8] == bytes(range(256)) and rows[5][4] == "trailing space "
    status, details = phase_row("zdm_it_types")
    assert status == "succeeded" and '"done": true' in details

    equal = module("table_compare", path, tables=["zdm_it_items"])
    assert equal.get("failed") is not True, equal
    assert equal["equal"] is True and equal["changed"] is False and equal["tables"][0]["rows_target"] == len(ROWS)

    # changes after the capture: the replay deletes and inserts them by key
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE zdm_it_items SET name = 'changed ✓', qty = qty + 1 WHERE id = 1")
        conn.execute("DELETE FROM zdm_it_items WHERE id = 3")
        conn.execute("INSERT INTO zdm_it_items (id, name, active, born) VALUES (6, 'new', 1, '2026-06-01')")
    replayed = copy(path, **options)
    assert replayed["changed"] is True and replayed["replayed_changes"] == 3 and replayed["backlog"] == 0
    rows = {row[0]: row for row in maria_rows("zdm_it_items")}
    assert sorted(rows) == [1, 2, 4, 5, 6] and rows[1][4] == "changed ✓" and rows[1][1] == 4
    assert compare(path, tables=["zdm_it_items"])["equal"] is True

    again = module("table_copy", path, diff=True, **options)
    assert again.get("failed") is not True, again
    assert again["changed"] is False and again["rows_copied"] == 0 and again["replayed_changes"] == 0
    assert again["diff"]["before"] == again["diff"]["after"]


def test_check_mode_writes_nothing_and_diff_shows_the_copy(tmp_path, cleanup):
    cleanup(["zdm_it_check"], "zdm_it_check")
    path = sqlite_file(tmp_path / "app.db", ["zdm_it_check"])
    checked = module("table_copy", path, check=True, diff=True, tables=["zdm_it_check"], phase="zdm_it_check")
    assert checked.get("failed") is not True, checked
    assert checked["changed"] is True and checked["plan"][0]["create"] is True and checked["plan"][0]["rows"] == len(ROWS)
    assert checked["diff"]["before"]["tables"]["zdm_it_check"] == {"rows": 0, "done": False}
    assert checked["diff"]["after"]["tables"]["zdm_it_check"] == {"rows": len(ROWS), "done": True}
    assert not table_exists("zdm_it_check") and phase_row("zdm_it_check") is None


def test_a_hostile_table_name_is_one_name_on_both_sides(tmp_path, cleanup):
    cleanup([HOSTILE], "zdm_it_hostile")
    path = sqlite_file(tmp_path / "app.db", [HOSTILE])
    done = module("table_copy", path, tables=[HOSTILE], phase="zdm_it_hostile")
    assert done.get("failed") is not True, done
    assert done["rows_copied"] == len(ROWS) and table_exists(HOSTILE)
    assert len(maria_rows(HOSTILE)) == len(ROWS)
    assert compare(path, tables=[HOSTILE])["equal"] is True
    too_long = "t" * 65
    with pytest.raises(ModuleError, match="more than MariaDB's 64"):
        quote_ident(too_long)
    with pytest.raises(ModuleError, match="NUL"):
        quote_ident("a\x00b")


def test_wrong_credentials_are_named_and_nothing_is_written(tmp_path, cleanup):
    cleanup(["zdm_it_creds"], "zdm_it_creds")
    path = sqlite_file(tmp_path / "app.db", ["zdm_it_creds"])
    secret = "not-the-password-4711"
    failed = module("table_copy", path, tables=["zdm_it_creds"], phase="zdm_it_creds", mariadb_password=secret)
    assert failed.get("failed") is True and failed["changed"] is False
    assert f"authentication failed for user 'app' on MariaDB {MARIADB_ADDRESS}:{MARIADB_PORT}" in failed["msg"]
    assert "check mariadb_user and mariadb_password" in failed["msg"]
    assert secret not in str(failed)
    assert not table_exists("zdm_it_creds") and phase_row("zdm_it_creds") is None
    missing = module("table_copy", path, tables=["zdm_it_creds"], mariadb_database=None)
    assert missing.get("failed") is True and "mariadb_database" in missing["msg"]


def test_a_value_too_long_for_an_existing_column_is_named_and_nothing_is_written(tmp_path, cleanup):
    cleanup(["zdm_it_narrow"], "zdm_it_narrow")
    path = sqlite_file(tmp_path / "app.db", ["zdm_it_narrow"])
    with maria() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE zdm_it_narrow (id BIGINT PRIMARY KEY, qty BIGINT, price DOUBLE, amount DECIMAL(20,4), name VARCHAR(5), "
            "label TEXT, born DATE, seen DATETIME(6), data BLOB, active BOOLEAN)"
        )
    with pytest.raises(ModuleError) as failed:
        copy(path, tables=["zdm_it_narrow"], phase="zdm_it_narrow")
    message = str(failed.value)
    assert "table 'zdm_it_narrow', key [2], column 'name'" in message
    assert "'Zürich ☃ 日本 🙂'" in message and "longer than the column's 5" in message
    assert "column_types" in message and "max_errors" in message
    assert maria_rows("zdm_it_narrow") == []  # the batch rolled back with its checkpoint


def test_table_compare_names_the_key_of_a_row_that_differs(tmp_path, cleanup):
    cleanup(["zdm_it_differ"], "zdm_it_differ")
    path = sqlite_file(tmp_path / "app.db", ["zdm_it_differ"])
    assert copy(path, tables=["zdm_it_differ"], phase="zdm_it_differ")["complete"] is True
    with maria() as conn, conn.cursor() as cur:
        cur.execute("UPDATE zdm_it_differ SET price = price + 1 WHERE id = 4")
        cur.execute("DELETE FROM zdm_it_differ WHERE id = 5")
        cur.execute("INSERT INTO zdm_it_differ (id, name) VALUES (%s, 'only here')", (uuid.uuid4().int % 1000 + 100,))
    found = module("table_compare", path, check=True, tables=["zdm_it_differ"], fail_on_difference=False)
    assert found.get("failed") is not True, found
    table = found["tables"][0]
    assert found["equal"] is False and found["differing_tables"] == ["zdm_it_differ"]
    kinds = {entry["kind"]: entry["key"] for entry in table["differing_keys"]}
    assert kinds["changed"] == {"id": 4} and kinds["missing"] == {"id": 5} and kinds["extra"]["id"] >= 100
    failing = module("table_compare", path, tables=["zdm_it_differ"])
    assert failing.get("failed") is True and "zdm_it_differ (1 missing, 1 extra, 1 changed)" in failing["msg"]


def test_the_cutover_to_mariadb_switches_and_its_rollback_refuses_naming_the_loss(tmp_path, cleanup):
    cleanup(["zdm_it_cut"], "zdm_it_cut")
    path = sqlite_file(tmp_path / "app.db", ["zdm_it_cut"])
    copy(path, tables=["zdm_it_cut"], phase="zdm_it_cut")
    config = tmp_path / "database.json"
    config.write_text('{"engine": "sqlite"}')
    (tmp_path / "database.json.next").write_text('{"engine": "mariadb"}')
    options = {"tables": ["zdm_it_cut"], "phase": "zdm_it_cut", "migration": "to-mariadb", "app_config": str(config)}
    switched = module("sqlite_cutover", path, **options)
    assert not switched.get("failed"), switched.get("msg")
    assert switched["marker"]["status"] == "switched" and config.read_text() == '{"engine": "mariadb"}'
    assert any("no reverse capture" in warning for warning in switched["warnings"]), switched.get("warnings")
    refused = module("sqlite_cutover", path, state="rolled_back", **options)
    assert refused.get("failed") and refused["changed"] is False
    assert "would be lost" in refused["msg"] and "MariaDB" in refused["msg"], refused["msg"]
    assert config.read_text() == '{"engine": "mariadb"}'  # the application stays where its writes are
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="to-mariadb"):
        conn.execute("UPDATE zdm_it_cut SET qty = 1 WHERE id = 1")


def test_a_django_like_application_is_copied_equal_and_a_second_run_changes_nothing(tmp_path, cleanup):
    """playbooks/files/app_sample.py: Django's own tables and a shop app as `manage.py migrate` makes
    them on SQLite (bool, datetime, decimal, varchar(n), integer unsigned, nullable foreign keys)."""
    app_sample = load_app_sample()
    tables = list(app_sample.TABLES)
    cleanup(tables, "zdm_it_django")
    path = str(tmp_path / "django.db")
    built = app_sample.build(path, users=300, orders=1000)
    with SqliteClient({"path": path, "busy_timeout": 5.0}) as client:
        ensure_capture(client, {"change_table": "zdm_changes", "tables": tables, "key_columns": None, "state": "present", "force": False})
    options = {"tables": tables, "phase": "zdm_it_django"}
    done = copy(path, **options)
    assert done["complete"] is True and done["errors"] == 0
    assert done["rows_copied"] == sum(built["rows"].values())
    assert compare(path, **options)["equal"] is True
    assert maria_rows("auth_user")[10][3] in (0, 1)  # bool as tinyint(1)
    again = copy(path, **options)
    assert again["changed"] is False and again["rows_copied"] == 0


def load_app_sample():
    spec = importlib.util.spec_from_file_location("app_sample", ROOT / "playbooks" / "files" / "app_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
