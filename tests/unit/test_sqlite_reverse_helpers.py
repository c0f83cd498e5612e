"""Pure parts of the way back (sqlite/reverse.py, sqlite/copy_target.py, postgres/change_capture.py):
PostgreSQL values in the neutral form, values stored as the SQLite application wrote them, and the
recorded position kept in a view of a real SQLite file, used only for the change table it names."""

from __future__ import annotations

import datetime
import decimal
import sqlite3
import uuid

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.types import converter, moment_text
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.change_capture import plain
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.copy_target import SqliteTarget, stored
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.reverse import PositionStore, read_position, start_position

UTC = datetime.timezone.utc  # noqa: UP017
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))


def test_moment_text_is_utc_with_a_fraction_only_when_there_is_one():
    assert moment_text(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02 03:04:05"
    assert moment_text(datetime.datetime(2026, 1, 2, 5, 4, 5, 250000, tzinfo=PLUS_TWO)) == "2026-01-02 03:04:05.25"
    assert moment_text(datetime.datetime(2026, 1, 2, 3, 4, 5, 1)) == "2026-01-02 03:04:05.000001"


def test_postgres_values_in_the_neutral_form():
    assert plain(datetime.date(2026, 1, 2)) == "2026-01-02"
    assert plain({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert plain(memoryview(b"\x00\xff")) == b"\x00\xff"
    assert plain(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert plain(decimal.Decimal("1.50")) == decimal.Decimal("1.50") and plain(True) is True and plain(None) is None


def test_values_stored_as_the_application_wrote_them():
    moment = converter("timestamp")(plain(datetime.datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)))
    assert stored(moment, "timestamp") == "2026-01-02 03:04:05.5"
    assert stored(converter("date")("2026-01-02"), "date") == "2026-01-02"
    assert stored(converter("boolean")(True), "boolean") == 1 and stored(False, "boolean") == 0
    assert stored(converter("numeric")(decimal.Decimal("12.50")), "numeric") == "12.50"
    assert stored(converter("json")(plain([])), "json") == "[]"
    assert stored(None, "boolean") is None


def test_numeric_text_takes_the_column_affinity(tmp_path):
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, amount NUMERIC, note TEXT, flag BOOLEAN)")
    conn.close()
    with Client({"path": str(path), "busy_timeout": 1.0}) as client:
        target = SqliteTarget(client)
        assert target.columns("t") == {"id": "INTEGER", "amount": "NUMERIC", "note": "TEXT", "flag": "BOOLEAN"}
        with target.transaction():
            target.write("t", ["id", "amount", "note", "flag"], [[1, decimal.Decimal("12.50"), "12.50", True]])
        assert client.query("SELECT amount, typeof(amount), note, flag FROM t") == [(12.5, "real", "12.50", 1)]
        assert target.counts == {"t": {"deleted": 0, "inserted": 1}}


def test_the_position_is_kept_in_a_view_and_used_only_for_its_change_table(tmp_path):
    path = tmp_path / "p.db"
    sqlite3.connect(path).close()
    identity = {"change_table": "public.zdm_reverse_changes", "oid": 16400, "system": "1"}
    with Client({"path": str(path), "busy_timeout": 1.0}) as client:
        assert read_position(client) is None
        store = PositionStore(client, identity, 0, ["t"])
        assert store.save() is False  # nothing replayed: nothing written
        store.copy["replayed_seq"] = 42
        assert store.save() is True
        recorded = read_position(client)
        assert recorded["replayed_seq"] == 42 and recorded["source"] == identity
        assert client.query("SELECT type FROM sqlite_master WHERE name = 'zdm_reverse__state'") == [("view",)]
    assert start_position(recorded, identity, high_seq=50) == 42
    assert start_position(recorded, dict(identity, oid=16500), high_seq=50) == 0  # the capture installed again
    assert start_position(recorded, identity, high_seq=10) == 0  # its numbers started over
    assert start_position(None, identity, high_seq=10) == 0
