"""zerodowntime.migration.pg_schema_drift: blue against green in scratch databases (zdm_drift_test on
both). Each test creates its own tables on each side, drifts them on purpose, and drops them; the
lab's migration tables are never touched."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests.integration.test_migration_notify import ALERTMANAGER, alerts
from tests.lab import BLUE, GREEN, LAB_PASSWORD, connect, drop_database, recreate_database, run_module, run_playbook

MODULE = "zerodowntime.migration.pg_schema_drift"
DB = "zdm_drift_test"
SOURCE = dict(BLUE, login_db=DB)
TARGET = dict(GREEN, login_db=DB)
HOSTILE_SCHEMA = 'we"ird; DROP TABLE zdm_victim; --'
HOSTILE_TABLE = "Order.Items"
HOSTILE_COLUMN = 'no"te'

BASE = "CREATE TABLE {name} (id bigserial PRIMARY KEY, tenant_id int NOT NULL, label text, amount numeric(10,2), created_at timestamptz)"


@pytest.fixture(scope="module")
def databases(lab):
    for endpoint in (BLUE, GREEN):
        recreate_database(endpoint, DB)
        with connect(dict(endpoint, login_db=DB)) as conn:
            conn.execute("CREATE TABLE zdm_victim (id int)")
    yield
    drop_database(BLUE, DB)
    drop_database(GREEN, DB)


@pytest.fixture()
def sides(databases):
    """(blue, green) connections to the scratch databases; every test drops what it created."""
    with connect(SOURCE) as blue, connect(TARGET) as green:
        yield blue, green
        for conn in (blue, green):
            conn.execute("DROP PUBLICATION IF EXISTS zdm_drift_pub")
            schemas = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'"
            ).fetchall()
            for (schema,) in schemas:
                conn.execute(f'DROP SCHEMA "{schema.replace(chr(34), chr(34) * 2)}" CASCADE')
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'zdm_victim'").fetchall()
            for (table,) in tables:
                conn.execute(f'DROP TABLE IF EXISTS public."{table}" CASCADE')
            for (sequence,) in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'").fetchall():
                conn.execute(f'DROP SEQUENCE IF EXISTS public."{sequence}" CASCADE')
            conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")


def drift(check: bool = False, **args) -> dict:
    params = {"source": SOURCE, "target": TARGET, **args}
    return run_module(MODULE, params, check=check)[1]


def both(blue, green, statement: str) -> None:
    blue.execute(statement)
    green.execute(statement)


def kinds(result: dict) -> set[tuple]:
    return {(entry["kind"], entry["object"], entry["severity"]) for entry in result["differences"]}


def test_identical_definitions_have_no_difference(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="orders"))
    both(blue, green, "CREATE TABLE events (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body jsonb NOT NULL)")
    for check in (False, True):
        result = drift(check=check, tables=["orders", "public.events"])
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is False
        assert result["identical"] is True
        assert result["differences"] == []
        assert result["tables"] == ["public.orders", "public.events"]


def test_column_added_on_blue_only_is_blocking_and_named_with_its_fix(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="audit"))
    blue.execute("ALTER TABLE audit ADD COLUMN note text")
    result = drift(tables=["audit"])
    assert result["failed"] is True
    assert result["changed"] is False
    assert "public.audit.note" in result["msg"]
    assert 'ALTER TABLE "public"."audit" ADD COLUMN "note" text' in result["msg"]
    assert ("missing_column", "public.audit.note", "blocking") in kinds(result)
    assert result["blocking"] == 1
    # the same verdict in check mode, and with fail_on none the module succeeds and reports it
    assert drift(check=True, tables=["audit"])["failed"] is True
    reported = drift(tables=["audit"], fail_on="none")
    assert not reported.get("failed") and reported["blocking"] == 1
    # The fix it names is what a DBA runs on green: afterwards nothing differs.
    green.execute(reported["differences"][0]["fix"])
    assert drift(tables=["audit"])["identical"] is True


def test_extra_nullable_column_on_green_is_harmless(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="items"))
    green.execute("ALTER TABLE items ADD COLUMN migrated_at timestamptz, ADD COLUMN source text NOT NULL DEFAULT 'blue'")
    result = drift(tables=["items"])
    assert not result.get("failed"), result.get("msg")
    assert kinds(result) == {
        ("extra_column", "public.items.migrated_at", "harmless"),
        ("extra_column", "public.items.source", "harmless"),
    }
    assert (result["blocking"], result["harmless"]) == (0, 2)
    # fail_on any fails on harmless differences too
    strict = drift(tables=["items"], fail_on="any")
    assert strict["failed"] is True and "public.items.migrated_at" in strict["msg"]


def test_type_mismatch_is_blocking_and_a_wider_type_is_harmless(sides):
    blue, green = sides
    blue.execute("CREATE TABLE measures (id bigint PRIMARY KEY, reading bigint, code varchar(20), price numeric(10,2))")
    green.execute("CREATE TABLE measures (id bigint PRIMARY KEY, reading integer, code text, price numeric(12,2))")
    result = drift(tables=["measures"], fail_on="none")
    assert kinds(result) == {
        ("type", "public.measures.reading", "blocking"),
        ("type", "public.measures.code", "harmless"),
        ("type", "public.measures.price", "harmless"),
    }
    reading = next(entry for entry in result["differences"] if entry["object"] == "public.measures.reading")
    assert (reading["blue"], reading["green"]) == ("bigint", "integer")
    assert reading["fix"] == 'ALTER TABLE "public"."measures" ALTER COLUMN "reading" TYPE bigint'
    failed = drift(tables=["measures"])
    assert failed["failed"] is True and "public.measures.reading" in failed["msg"] and "public.measures.code" not in failed["msg"]


def test_not_null_on_green_is_blocking(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="tickets"))
    green.execute("ALTER TABLE tickets ALTER COLUMN label SET NOT NULL, ADD COLUMN priority int NOT NULL")
    result = drift(tables=["tickets"])
    assert result["failed"] is True
    assert kinds(result) == {
        ("not_null", "public.tickets.label", "blocking"),
        ("extra_column", "public.tickets.priority", "blocking"),
    }
    assert 'ALTER TABLE "public"."tickets" ALTER COLUMN "label" DROP NOT NULL' in result["msg"]
    assert 'ALTER TABLE "public"."tickets" ALTER COLUMN "priority" DROP NOT NULL' in result["msg"]


def test_replica_identity_green_cannot_use_is_blocking(sides):
    blue, green = sides
    # Blue sends id only; green (partitioned by tenant) finds rows by (tenant_id, id): UPDATE/DELETE cannot apply.
    blue.execute("CREATE TABLE vms (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text)")
    green.execute("CREATE TABLE vms (id bigint, tenant_id int NOT NULL, name text, PRIMARY KEY (tenant_id, id))")
    result = drift(tables=["vms"])
    assert result["failed"] is True
    assert ("replica_identity", "public.vms", "blocking") in kinds(result)
    assert "public.vms" in result["msg"] and "tenant_id" in result["msg"]
    # What phase 1 does on blue: send (tenant_id, id) - green's key is then among the columns blue sends.
    blue.execute("CREATE UNIQUE INDEX vms_tenant_id_id_key ON vms (tenant_id, id)")
    blue.execute("ALTER TABLE vms REPLICA IDENTITY USING INDEX vms_tenant_id_id_key")
    fixed = drift(tables=["vms"])
    assert not fixed.get("failed"), fixed.get("msg")
    assert ("replica_identity", "public.vms", "harmless") in kinds(fixed)
    # Green without any key while blue sends only its key: blocking, with the primary key to add.
    green.execute("DROP TABLE vms")
    green.execute("CREATE TABLE vms (id bigint NOT NULL, tenant_id int NOT NULL, name text)")
    keyless = drift(tables=["vms"])
    assert keyless["failed"] is True
    assert 'ALTER TABLE "public"."vms" ADD PRIMARY KEY ("tenant_id", "id")' in keyless["msg"]


def test_partitioned_green_parent_is_harmless(sides):
    blue, green = sides
    blue.execute("CREATE TABLE metrics (id bigint, collected_at timestamptz NOT NULL, value float8, PRIMARY KEY (collected_at, id))")
    green.execute(
        "CREATE TABLE metrics (id bigint, collected_at timestamptz NOT NULL, value float8, PRIMARY KEY (collected_at, id)) "
        "PARTITION BY RANGE (collected_at)"
    )
    green.execute("CREATE TABLE metrics_default PARTITION OF metrics DEFAULT")
    result = drift(tables=["metrics"])
    assert not result.get("failed"), result.get("msg")
    assert kinds(result) == {("partitioning", "public.metrics", "harmless")}
    entry = result["differences"][0]
    assert (entry["blue"], entry["green"]) == ("not partitioned", "RANGE (collected_at)")


def test_sequences_owned_by_columns_are_compared(sides):
    blue, green = sides
    blue.execute("CREATE TABLE counters (id bigserial PRIMARY KEY, n int)")
    green.execute("CREATE TABLE counters (id bigint PRIMARY KEY, n int)")
    result = drift(tables=["counters"])
    assert result["failed"] is True
    assert ("sequence", "public.counters.id", "blocking") in kinds(result)
    green.execute(next(entry["fix"] for entry in result["differences"] if entry["kind"] == "sequence"))
    green.execute("ALTER TABLE counters ALTER COLUMN id SET DEFAULT nextval('counters_id_seq')")
    assert drift(tables=["counters"])["identical"] is True


def test_hostile_identifiers_are_quoted_by_the_driver(sides):
    blue, green = sides
    for conn in (blue, green):
        conn.execute('CREATE SCHEMA "we""ird; DROP TABLE zdm_victim; --"')
        conn.execute('CREATE TABLE "we""ird; DROP TABLE zdm_victim; --"."Order.Items" (id int PRIMARY KEY)')
    blue.execute('ALTER TABLE "we""ird; DROP TABLE zdm_victim; --"."Order.Items" ADD COLUMN "no""te" text')
    qualified = '"we""ird; DROP TABLE zdm_victim; --"."Order.Items"'
    result = drift(tables=[qualified])
    assert result["failed"] is True
    (entry,) = result["differences"]
    assert entry["kind"] == "missing_column" and entry["column"] == HOSTILE_COLUMN
    assert entry["fix"] == 'ALTER TABLE "we""ird; DROP TABLE zdm_victim; --"."Order.Items" ADD COLUMN "no""te" text'
    green.execute(entry["fix"])
    assert drift(tables=[qualified])["identical"] is True
    for conn in (blue, green):
        assert conn.execute("SELECT to_regclass('public.zdm_victim')").fetchone()[0] is not None


def test_publication_tables_and_missing_tables(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="kept"))
    blue.execute(BASE.format(name="added_later"))
    blue.execute("CREATE PUBLICATION zdm_drift_pub FOR TABLE kept, added_later")
    result = drift(publication="zdm_drift_pub")
    assert result["failed"] is True
    # its column's sequence is the table's: named once green has the table, not as a separate one
    assert kinds(result) == {("missing_table", "public.added_later", "blocking")}
    assert 'CREATE TABLE "public"."added_later" ("id" bigint NOT NULL' in result["msg"]
    # The fixes, applied in the order given, compose: the table, then its sequence OWNED BY its column.
    green.execute(entry_of(result, "missing_table")["fix"])
    table_made = drift(publication="zdm_drift_pub")
    assert kinds(table_made) == {("sequence", "public.added_later.id", "blocking")}, table_made["msg"]
    green.execute(entry_of(table_made, "sequence")["fix"])
    sequence_made = drift(publication="zdm_drift_pub")
    assert not sequence_made.get("failed") and sequence_made["blocking"] == 0, sequence_made.get("msg")
    green.execute("DROP TABLE added_later")
    # Before phase 2 builds green: the tables green does not have yet are pending, not blocking.
    pending = drift(publication="zdm_drift_pub", allow_missing_tables=True)
    assert not pending.get("failed"), pending.get("msg")
    assert pending["pending_tables"] == ["public.added_later"] and pending["tables"] == ["public.kept"]


def entry_of(result: dict, kind: str) -> dict:
    (entry,) = [entry for entry in result["differences"] if entry["kind"] == kind]
    return entry


def test_what_replication_does_not_carry_is_refused_by_name_with_the_fix(sides):
    """Issue 15 item 4 on real databases: a replicated table without a replica identity, an unlogged
    table, a large object and a sequence created on blue only are each named with the fix; once the
    fixes are applied (each as the message says) nothing is left."""
    blue, green = sides
    both(blue, green, "CREATE TABLE keyless (code text NOT NULL, body text)")
    both(blue, green, BASE.format(name="kept"))
    blue.execute("CREATE UNLOGGED TABLE sessions_cache (id int PRIMARY KEY, payload text)")
    green.execute("CREATE TABLE sessions_cache (id int PRIMARY KEY, payload text)")
    oid = blue.execute("SELECT lo_from_bytea(0, 'scanned contract')").fetchone()[0]
    blue.execute("CREATE SEQUENCE invoice_no AS integer INCREMENT BY 5 START WITH 1000")
    blue.execute("CREATE PUBLICATION zdm_drift_pub FOR TABLE keyless, kept")
    blue.execute("INSERT INTO keyless VALUES ('a', 'x')")
    # the hazard is real: blue itself refuses an UPDATE of the published keyless table
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="replica identity"):
        blue.execute("UPDATE keyless SET body = 'y'")
    for check in (False, True):
        result = drift(check=check, publication="zdm_drift_pub")
        assert result["failed"] is True and result["changed"] is False
        assert kinds(result) == {
            ("no_replica_identity", "public.keyless", "blocking"),
            ("unlogged_table", "public.sessions_cache", "blocking"),
            ("large_objects", "large objects", "blocking"),
            ("missing_sequence", "public.invoice_no", "blocking"),
        }
        assert result["blocking"] == 4
        message = result["msg"]
        assert "public.keyless (no_replica_identity, blocking)" in message
        assert 'fix on blue and green: ALTER TABLE "public"."keyless" REPLICA IDENTITY FULL' in message
        assert 'fix on blue: ALTER TABLE "public"."sessions_cache" SET LOGGED' in message and "allow_unlogged_tables" in message
        assert f"1 of blue's are not on green (OIDs {oid})" in message and "pg_dump" in message
        sequence_fix = 'CREATE SEQUENCE "public"."invoice_no" AS integer INCREMENT BY 5 MINVALUE 1 MAXVALUE 2147483647 START WITH 1000'
        assert f"fix on green: {sequence_fix}" in message
    # The fixes, each where the message says.
    fixes = drift(publication="zdm_drift_pub", fail_on="none")
    keyless = entry_of(fixes, "no_replica_identity")
    both(blue, green, keyless["fix"])
    blue.execute("UPDATE keyless SET body = 'y'")  # blue takes it now
    green.execute(entry_of(fixes, "missing_sequence")["fix"])
    data = blue.execute("SELECT lo_get(%s)", (oid,)).fetchone()[0]
    green.execute("SELECT lo_from_bytea(%s, %s)", (oid, data))
    # the unlogged table: a cache the DBA chose not to migrate
    allowed = drift(publication="zdm_drift_pub", allow_unlogged_tables=["public.sessions_cache"])
    assert not allowed.get("failed"), allowed.get("msg")
    assert kinds(allowed) == {("unlogged_table", "public.sessions_cache", "harmless")}
    # or migrated: logged on blue (and published), then nothing differs at all
    blue.execute(entry_of(fixes, "unlogged_table")["fix"])
    blue.execute("ALTER PUBLICATION zdm_drift_pub ADD TABLE sessions_cache")
    clean = drift(publication="zdm_drift_pub")
    assert not clean.get("failed"), clean.get("msg")
    assert clean["identical"] is True and clean["differences"] == []
    assert clean["tables"] == ["public.kept", "public.keyless", "public.sessions_cache"]


def test_before_green_is_built_missing_sequences_and_large_objects_are_pending(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="kept"))
    blue.execute(BASE.format(name="later"))
    blue.execute("CREATE SEQUENCE invoice_no")
    blue.execute("SELECT lo_from_bytea(0, 'a'), lo_from_bytea(0, 'b')")
    blue.execute("CREATE PUBLICATION zdm_drift_pub FOR TABLE kept, later")
    pending = drift(publication="zdm_drift_pub", allow_missing_tables=True)
    assert not pending.get("failed"), pending.get("msg")
    assert pending["pending_tables"] == ["public.later"]
    assert pending["pending_sequences"] == ["public.invoice_no"]  # later_id_seq comes with its table
    assert pending["pending_large_objects"] == 2 and pending["differences"] == []
    assert "public.invoice_no" in pending["msg"] and "2 large object(s)" in pending["msg"]
    # a keyless table is blue's own problem: blocking even before green has it
    blue.execute("CREATE TABLE keyless (code text)")
    blue.execute("ALTER PUBLICATION zdm_drift_pub ADD TABLE keyless")
    refused = drift(publication="zdm_drift_pub", allow_missing_tables=True)
    assert refused["failed"] is True and kinds(refused) == {("no_replica_identity", "public.keyless", "blocking")}


def test_a_keyless_table_in_an_insert_only_publication_is_harmless(sides):
    """publish = 'insert' (an append-only log): no UPDATE or DELETE is sent, so blue sends no key and
    needs none; publishing updates again makes the same table blocking."""
    blue, green = sides
    both(blue, green, "CREATE TABLE event_log (at timestamptz, message text)")
    blue.execute("CREATE PUBLICATION zdm_drift_pub FOR TABLE event_log WITH (publish = 'insert')")
    result = drift(publication="zdm_drift_pub")
    assert not result.get("failed"), result.get("msg")
    assert kinds(result) == {("no_replica_identity", "public.event_log", "harmless")}
    blue.execute("ALTER PUBLICATION zdm_drift_pub SET (publish = 'insert, update')")
    refused = drift(publication="zdm_drift_pub")
    assert refused["failed"] is True and kinds(refused) == {("no_replica_identity", "public.event_log", "blocking")}


def test_with_tables_only_the_listed_unlogged_tables_are_hazards(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="kept"))
    for conn in (blue, green):
        conn.execute("CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)")
        conn.execute("CREATE UNLOGGED TABLE other_cache (id int PRIMARY KEY)")
    assert drift(tables=["kept"])["identical"] is True
    result = drift(tables=["kept", "scratch"], fail_on="none")
    assert kinds(result) == {("unlogged_table", "public.scratch", "blocking")}


def test_missing_publication_and_table_are_named(sides):
    result = drift(publication="no_such_pub")
    assert result["failed"] is True
    assert "publication no_such_pub does not exist on the source" in result["msg"]
    result = drift(tables=["no_such_table"])
    assert result["failed"] is True
    assert "table public.no_such_table does not exist on the source" in result["msg"]


def test_wrong_password_names_the_side_and_not_the_password(sides):
    wrong = "not-the-lab-password"
    result = drift(tables=["zdm_victim"], target=dict(TARGET, login_password=wrong))
    assert result["failed"] is True
    assert "cannot connect to the target" in result["msg"]
    assert "authentication failed" in result["msg"]
    assert wrong not in result["msg"] and LAB_PASSWORD not in result["msg"]


def role_play(**variables) -> tuple[list[dict], object]:
    """roles/migration tasks_from schema_drift (what phases 1 and 5 run) against the scratch databases."""
    scratch = {
        "migration_blue": {key: value for key, value in SOURCE.items() if key != "login_password"},
        "migration_green": {key: value for key, value in TARGET.items() if key != "login_password"},
        "migration_publication": "zdm_drift_pub",
    }
    play = [
        {
            "name": "drift check as the phases run it",
            "hosts": "migration_controller",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "under test",
                    "ansible.builtin.include_role": {"name": "zerodowntime.migration.migration", "tasks_from": "schema_drift"},
                    "vars": {"drift_label": "test", **variables},
                }
            ],
        }
    ]
    run = run_playbook(play, extravars=scratch)
    return [
        event["event_data"]["res"]
        for event in run.events
        if event.get("event") in ("runner_on_ok", "runner_on_failed") and event["event_data"].get("task") == "Schema drift check - test"
    ], run


def test_the_phases_check_fails_on_blocking_drift_and_passes_pending_tables(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="kept"))
    blue.execute(BASE.format(name="later"))
    blue.execute("CREATE PUBLICATION zdm_drift_pub FOR TABLE kept, later")
    # phase 1: green's missing tables are pending
    (result,), run = role_play(drift_allow_missing_tables=True)
    assert run.status == "successful", run.stdout
    assert result["pending_tables"] == ["public.later"] and result["blocking"] == 0
    # phase 5: a column deployed on blue only stops the cutover, named with its fix
    green.execute(BASE.format(name="later"))
    blue.execute("ALTER TABLE kept ADD COLUMN note text")
    (result,), run = role_play()
    assert run.status == "failed"
    assert "public.kept.note" in result["msg"] and 'ADD COLUMN "note" text' in result["msg"]


def test_blocking_drift_is_an_alert(sides, monitoring):
    """The phases' check told to Alertmanager: a gate_breached alert of schema_drift, critical,
    naming the column; the play still fails."""
    blue, green = sides
    both(blue, green, BASE.format(name="watched"))
    blue.execute("CREATE PUBLICATION zdm_drift_pub FOR TABLE watched")
    blue.execute("ALTER TABLE watched ADD COLUMN deployed_on_blue text")
    migration = f"drift-{uuid.uuid4().hex[:8]}"
    (result,), run = role_play(migration_name=migration, migration_notify_alertmanagers=[{"name": "lab", "url": ALERTMANAGER}])
    assert run.status == "failed" and "public.watched.deployed_on_blue" in result["msg"], run.stdout
    failed_tasks = [event["event_data"].get("task") for event in run.events if event.get("event") == "runner_on_failed"]
    assert "Stop on the schema drift - test" in failed_tasks
    (alert,) = alerts(migration)
    assert alert["labels"]["phase"] == "schema_drift" and alert["labels"]["event"] == "gate_breached"
    assert alert["labels"]["severity"] == "critical"
    assert "public.watched.deployed_on_blue" in json.dumps(alert["annotations"])


def test_the_phases_check_refuses_an_unlogged_table_unless_the_inventory_lists_it(sides):
    blue, green = sides
    both(blue, green, BASE.format(name="kept"))
    blue.execute("CREATE PUBLICATION zdm_drift_pub FOR TABLE kept")
    blue.execute("CREATE UNLOGGED TABLE rate_limits (key text PRIMARY KEY, hits int)")
    (result,), run = role_play()
    assert run.status == "failed"
    assert "public.rate_limits (unlogged_table, blocking)" in result["msg"] and "SET LOGGED" in result["msg"]
    (result,), run = role_play(migration_allow_unlogged_tables=["rate_limits"])
    assert run.status == "successful", run.stdout
    assert result["blocking"] == 0 and result["harmless"] == 1
