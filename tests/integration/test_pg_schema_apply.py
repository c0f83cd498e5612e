"""zerodowntime.migration.pg_schema_apply against a scratch database on the suite's own PostgreSQL (SCRATCH_PG)."""

from __future__ import annotations

import pytest

from tests.lab import SCRATCH_PG, connect, run_module, scratch_database

MODULE = "zerodowntime.migration.pg_schema_apply"
DB = "zdm_schema_test"
TARGET = dict(SCRATCH_PG, login_db=DB)


@pytest.fixture()
def database(scratch_postgres):
    with scratch_database(SCRATCH_PG, DB):
        yield


@pytest.fixture()
def schema_dir(tmp_path):
    (tmp_path / "001_tables.sql").write_text(
        "CREATE TABLE things (id int PRIMARY KEY, note text);\nINSERT INTO things VALUES (1, '100%; done');\n"
    )
    (tmp_path / "002_index.sql").write_text(
        "-- zerodowntime: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS things_note_idx ON things (note);\n"
    )
    (tmp_path / "README.txt").write_text("not SQL, ignored")
    return tmp_path


def tables(conn) -> set:
    return {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_check_mode_lists_pending_and_runs_nothing(database, schema_dir):
    result = run_module(MODULE, dict(TARGET, path=str(schema_dir)), check=True)[1]
    assert result["failed"] is False, result.get("msg")
    assert (result["changed"], result["pending"], result["applied"]) == (True, ["001_tables.sql", "002_index.sql"], [])
    with connect(TARGET) as conn:
        assert tables(conn) == set()


def test_applies_in_order_once_including_concurrent_index(database, schema_dir):
    first = run_module(MODULE, dict(TARGET, path=str(schema_dir)))[1]
    assert first["failed"] is False, first.get("msg")
    assert [f["name"] for f in first["applied"]] == ["001_tables.sql", "002_index.sql"]
    assert any(q.endswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS things_note_idx ON things (note)") for q in first["queries"])
    with connect(TARGET) as conn:
        assert conn.execute("SELECT note FROM things").fetchone()[0] == "100%; done"
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'things_note_idx'::regclass").fetchone()[0] is True
        history = conn.execute("SELECT filename, length(checksum) FROM zerodowntime_schema_history ORDER BY 1").fetchall()
        assert history == [("001_tables.sql", 64), ("002_index.sql", 64)]
    second = run_module(MODULE, dict(TARGET, path=str(schema_dir)))[1]
    assert (second["changed"], second["applied"], second["already_applied"]) == (False, [], ["001_tables.sql", "002_index.sql"])
    assert run_module(MODULE, dict(TARGET, path=str(schema_dir)), check=True)[1]["pending"] == []


def test_a_changed_applied_file_is_an_error_and_nothing_runs(database, schema_dir):
    run_module(MODULE, dict(TARGET, path=str(schema_dir)))
    (schema_dir / "001_tables.sql").write_text("CREATE TABLE things (id bigint PRIMARY KEY);\n")
    (schema_dir / "003_more.sql").write_text("CREATE TABLE more_things (id int);\n")
    result = run_module(MODULE, dict(TARGET, path=str(schema_dir)))[1]
    assert result["failed"] is True
    assert "changed after they were applied: 001_tables.sql" in result["msg"] and "new file" in result["msg"]
    with connect(TARGET) as conn:
        assert "more_things" not in tables(conn)


def test_a_failing_file_leaves_no_trace(database, schema_dir):
    (schema_dir / "003_broken.sql").write_text("CREATE TABLE half_done (id int);\nINSERT INTO no_such_table VALUES (1);\n")
    result = run_module(MODULE, dict(TARGET, path=str(schema_dir)))[1]
    assert result["failed"] is True
    assert "schema file 003_broken.sql failed and is not recorded" in result["msg"]
    assert 'relation "no_such_table" does not exist' in result["msg"]
    assert [f["name"] for f in result["applied"]] == ["001_tables.sql", "002_index.sql"]
    with connect(TARGET) as conn:
        assert "half_done" not in tables(conn)
        assert conn.execute("SELECT count(*) FROM zerodowntime_schema_history WHERE filename = '003_broken.sql'").fetchone()[0] == 0


def test_hostile_history_table_name_is_just_a_name(database, schema_dir):
    hostile = 'h"; DROP TABLE things; --'
    result = run_module(MODULE, dict(TARGET, path=str(schema_dir), history_table=hostile))[1]
    assert result["failed"] is False, result.get("msg")
    with connect(TARGET) as conn:
        assert {"things", hostile} <= tables(conn)


def test_missing_directory_and_wrong_password(database, tmp_path):
    missing = run_module(MODULE, dict(TARGET, path=str(tmp_path / "nope")))[1]
    assert missing["failed"] is True and "schema directory" in missing["msg"] and "does not exist" in missing["msg"]
    denied = run_module(MODULE, dict(TARGET, path=str(tmp_path), login_password="wrong"))[1]
    assert denied["failed"] is True and "authentication failed for user 'migrator'" in denied["msg"]


def history_exists(conn) -> bool:
    return conn.execute("SELECT to_regclass('public.zerodowntime_schema_history')").fetchone()[0] is not None


@pytest.mark.parametrize("check", [True, False])
def test_a_symlink_out_of_the_directory_is_refused_and_nothing_runs(database, schema_dir, check):
    """The exact input of issue 18: a link to /etc/passwd was read and sent to the server as SQL."""
    (schema_dir / "000_passwd.sql").symlink_to("/etc/passwd")
    result = run_module(MODULE, dict(TARGET, path=str(schema_dir)), check=check)[1]
    assert result["failed"] is True, result
    link, real = schema_dir / "000_passwd.sql", schema_dir.resolve()
    assert f"symlink '{link}' resolves to '/etc/passwd', outside the schema directory '{real}'" in result["msg"], result["msg"]
    assert "Copy the file into the directory" in result["msg"] and "Nothing was run" in result["msg"]
    assert "root:" not in str(result)
    with connect(TARGET) as conn:
        assert "things" not in tables(conn) and not history_exists(conn)


def test_a_relative_symlink_out_of_the_directory_is_refused_too(database, tmp_path):
    schema = tmp_path / "schema"
    schema.mkdir()
    (tmp_path / "outside.sql").write_text("CREATE TABLE escaped (id int);\n")
    (schema / "001_escape.sql").symlink_to("../outside.sql")
    result = run_module(MODULE, dict(TARGET, path=str(schema)))[1]
    assert result["failed"] is True
    assert f"resolves to '{(tmp_path / 'outside.sql').resolve()}', outside the schema directory" in result["msg"], result["msg"]
    with connect(TARGET) as conn:
        assert "escaped" not in tables(conn) and not history_exists(conn)


def test_a_symlink_to_a_file_inside_the_directory_is_applied(database, schema_dir):
    (schema_dir / "lib").mkdir()
    (schema_dir / "lib" / "linked.sql").write_text("CREATE TABLE linked (id int);\n")
    (schema_dir / "003_linked.sql").symlink_to("lib/linked.sql")
    result = run_module(MODULE, dict(TARGET, path=str(schema_dir)))[1]
    assert result["failed"] is False and [f["name"] for f in result["applied"]] == ["001_tables.sql", "002_index.sql", "003_linked.sql"]
    with connect(TARGET) as conn:
        assert {"things", "linked"} <= tables(conn)


def test_a_file_as_path_is_named_as_a_file_not_a_missing_directory(database, schema_dir):
    path = schema_dir / "001_tables.sql"
    result = run_module(MODULE, dict(TARGET, path=str(path)))[1]
    assert result["failed"] is True and "does not exist" not in result["msg"], result["msg"]
    assert f"path '{path}' is a file, not a directory" in result["msg"] and f"'{schema_dir}'" in result["msg"], result["msg"]
    with connect(TARGET) as conn:
        assert "things" not in tables(conn) and not history_exists(conn)


def test_a_directory_named_like_a_sql_file_is_named(database, schema_dir):
    (schema_dir / "000_dir.sql").mkdir()
    result = run_module(MODULE, dict(TARGET, path=str(schema_dir)))[1]
    assert result["failed"] is True and f"schema file '{schema_dir / '000_dir.sql'}' is a directory" in result["msg"], result["msg"]
    with connect(TARGET) as conn:
        assert "things" not in tables(conn)
