"""The ManagedObject base class with a small real object (a schema with owner and comment):
check mode, diff, idempotence and a hostile identifier, against blue."""

from __future__ import annotations

import pytest
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, ident
from tests.lab import BLUE

HOSTILE = 'a"; DROP TABLE zdm_victim; --'


class Schema(ManagedObject):
    kind = "schema"

    def exists(self):
        return self.client.query_one("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.name,)) is not None

    def attrs(self):
        return self.client.query_one(
            "SELECT pg_get_userbyid(nspowner) AS owner, obj_description(oid, 'pg_namespace') AS comment "
            "FROM pg_namespace WHERE nspname = %s",
            (self.name,),
        )

    def create(self, desired):
        self.client.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident(self.name), ident(desired["owner"])))
        if desired.get("comment") is not None:
            self.set_comment(desired["comment"])

    def update(self, current, changes):
        if "owner" in changes:
            self.client.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(ident(self.name), ident(changes["owner"])))
        if "comment" in changes:
            self.set_comment(changes["comment"])

    def set_comment(self, comment):
        self.client.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(ident(self.name), sql.Literal(comment)))

    def drop(self, current):
        self.client.execute(sql.SQL("DROP SCHEMA {}").format(ident(self.name)))


def ensure(name, state="present", check_mode=False, **desired):
    with Client(dict(BLUE), check_mode=check_mode) as client:
        return Schema(client, name).ensure(state, desired)


@pytest.fixture()
def victim(blue):
    blue.execute("CREATE TABLE IF NOT EXISTS zdm_victim (id int)")
    yield
    blue.execute(sql.SQL("DROP SCHEMA IF EXISTS {}").format(ident(HOSTILE)))
    blue.execute("DROP SCHEMA IF EXISTS zdm_probe")
    blue.execute("DROP TABLE IF EXISTS zdm_victim")


def schema_names(conn):
    return {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}


def test_hostile_identifier_round_trips_and_executes_nothing(blue, victim):
    result = ensure(HOSTILE, owner="novacron")
    assert result["changed"] is True
    assert HOSTILE in schema_names(blue)  # the exact string is the schema's name
    assert blue.execute("SELECT to_regclass('zdm_victim')").fetchone()[0] is not None
    assert result["queries"][0] == 'CREATE SCHEMA "a""; DROP TABLE zdm_victim; --" AUTHORIZATION "novacron"'
    assert ensure(HOSTILE, owner="novacron")["changed"] is False


def test_check_mode_reports_the_change_and_makes_none(blue, victim):
    result = ensure("zdm_probe", check_mode=True, owner="novacron", comment="probe")
    assert result["changed"] is True
    assert result["diff"] == {"before": {}, "after": {"owner": "novacron", "comment": "probe"}}
    assert len(result["queries"]) == 2
    assert "zdm_probe" not in schema_names(blue)


def test_create_update_idempotence_and_drop(blue, victim):
    created = ensure("zdm_probe", owner="novacron", comment="first")
    assert created["changed"] is True
    assert created["schema"] == {"owner": "novacron", "comment": "first"}

    same = ensure("zdm_probe", owner="novacron", comment="first")
    assert (same["changed"], same["queries"]) == (False, [])

    changed = ensure("zdm_probe", comment="second")  # owner not given: left as it is
    assert changed["changed"] is True
    assert changed["diff"] == {"before": {"owner": "novacron", "comment": "first"}, "after": {"owner": "novacron", "comment": "second"}}
    assert changed["queries"] == ["COMMENT ON SCHEMA \"zdm_probe\" IS 'second'"]

    check_drop = ensure("zdm_probe", state="absent", check_mode=True)
    assert check_drop["changed"] is True and "zdm_probe" in schema_names(blue)
    dropped = ensure("zdm_probe", state="absent")
    assert dropped["changed"] is True and "zdm_probe" not in schema_names(blue)
    assert ensure("zdm_probe", state="absent")["changed"] is False


def test_failure_in_the_middle_reports_the_statement(blue, victim):
    with pytest.raises(Exception, match='role "no_such_owner" does not exist'):
        ensure("zdm_probe", owner="no_such_owner")
    assert "zdm_probe" not in schema_names(blue)
