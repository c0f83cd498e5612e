"""zerodowntime.migration.pg_validate run against the suite's own PostgreSQL (SCRATCH_PG), in a scratch
database of its own (zdm_validate_test) with a role of its own (zdm_validate_reader, dropped
afterwards). Every test starts from the same sound schema (tenants, vms, vm_events, a partitioned
metrics table, a materialized view), damages it in one way, and shows the check that should catch it
does."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.lab import SCRATCH_PG, connect, drop_database, recreate_database, run_module, where

MODULE = "zerodowntime.migration.pg_validate"
DB = "zdm_validate_test"
ARGS = dict(SCRATCH_PG, login_db=DB)
ROLE = "zdm_validate_reader"
HOSTILE = 'a"; DROP TABLE zdm_victim; --'
REFERENCE = {"table": "vm_events", "columns": ["tenant_id", "vm_id"], "ref_table": "vms", "ref_columns": ["tenant_id", "id"]}
RLS = {"role": ROLE, "tables": ["vms", "vm_events"]}
RESULT_KEYS = ("changed", "passed", "failures", "foreign_keys", "rls", "matviews", "queries")

SCHEMA = [
    "DROP TABLE IF EXISTS zdm_victim, metrics, vm_events, vms, tenants CASCADE",
    "DROP MATERIALIZED VIEW IF EXISTS tenant_names",
    "CREATE TABLE zdm_victim (id int)",
    "CREATE TABLE tenants (id bigint PRIMARY KEY, name text NOT NULL)",
    "CREATE TABLE vms (id bigint PRIMARY KEY, tenant_id bigint NOT NULL REFERENCES tenants (id), name text NOT NULL, "
    "UNIQUE (tenant_id, id))",
    # vm_events -> vms is a relationship nobody declared (as on green's partitioned tables).
    "CREATE TABLE vm_events (id bigint PRIMARY KEY, tenant_id bigint NOT NULL, vm_id bigint, kind text NOT NULL)",
    "CREATE TABLE metrics (tenant_id bigint NOT NULL, vm_id bigint NOT NULL REFERENCES vms (id), value int) PARTITION BY LIST (tenant_id)",
    "CREATE TABLE metrics_a PARTITION OF metrics FOR VALUES IN (1, 2)",
    "CREATE TABLE metrics_rest PARTITION OF metrics DEFAULT",
    "INSERT INTO tenants VALUES (1, 'acme'), (2, 'globex'), (3, 'initech'), (4, 'umbrella')",
    "INSERT INTO vms VALUES (1, 1, 'web'), (2, 1, 'db'), (3, 2, 'web'), (4, 2, 'db'), (5, 2, 'cache'), (6, 3, 'web'), "
    "(7, 4, 'web'), (8, 4, 'db')",
    "INSERT INTO vm_events SELECT v.id * 10 + k, v.tenant_id, v.id, kinds.kind FROM vms v, "
    "(VALUES (1, 'created'), (2, 'started')) AS kinds(k, kind)",
    "INSERT INTO vm_events VALUES (1000, 1, NULL, 'quota')",  # a NULL key references nothing: not an orphan
    "INSERT INTO metrics VALUES (1, 1, 10), (2, 3, 20), (3, 6, 30), (4, 7, 40)",
    "ALTER TABLE vms ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE vm_events ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY tenant_isolation ON vms USING (tenant_id = current_setting('app.tenant_id')::bigint)",
    "CREATE POLICY tenant_isolation ON vm_events USING (tenant_id = current_setting('app.tenant_id')::bigint)",
    "CREATE MATERIALIZED VIEW tenant_vm_counts AS SELECT t.id AS tenant_id, count(v.id) AS vms "
    "FROM tenants t LEFT JOIN vms v ON v.tenant_id = t.id GROUP BY t.id",
    "CREATE UNIQUE INDEX ON tenant_vm_counts (tenant_id)",
    f"GRANT SELECT ON tenants, vms, vm_events, metrics TO {ROLE}",
]


@pytest.fixture(scope="module")
def scratch(scratch_postgres):
    recreate_database(SCRATCH_PG, DB)
    with connect(SCRATCH_PG, login_db="postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(ROLE)))
    yield
    drop_database(SCRATCH_PG, DB)
    with connect(SCRATCH_PG, login_db="postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


@pytest.fixture()
def db(scratch):
    """A connection to the scratch database, its schema and data rebuilt sound."""
    with connect(ARGS) as conn:
        with conn.transaction():
            for statement in SCHEMA:
                conn.execute(statement)
        yield conn


def validate(check=False, **args):
    run, result = run_module(MODULE, dict(ARGS, **args), check=check)
    return run, result


def orphan(conn, statement):
    """Insert a row that breaks a declared foreign key (triggers, so FK checks, are off in replica mode)."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(statement)


def fingerprint(conn):
    """Every row of every table and view, the role's attributes and the RLS setup: what a read-only run must leave alone."""
    tables = ["tenants", "vms", "vm_events", "metrics", "tenant_vm_counts", "zdm_victim"]
    rows = {
        name: conn.execute(sql.SQL("SELECT string_agg(t::text, ';' ORDER BY t::text) FROM {} t").format(sql.Identifier(name))).fetchone()[0]
        for name in tables
    }
    rows["role"] = conn.execute("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
    rows["rls"] = conn.execute(
        "SELECT string_agg(relname || relrowsecurity::text || relowner::text, ',' ORDER BY relname) FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace"
    ).fetchone()[0]
    rows["policies"] = conn.execute(
        "SELECT string_agg(polname || pg_get_expr(polqual, polrelid), ',' ORDER BY polname, polrelid) FROM pg_policy"
    ).fetchone()[0]
    return rows


def by_constraint(result):
    return {entry["constraint"] or f"{entry['table']}->{entry['ref_table']}": entry for entry in result["foreign_keys"]}


def test_sound_data_passes(db):
    run, result = validate(references=[REFERENCE], rls=RLS)
    assert result["failed"] is False, run.stdout
    assert (result["passed"], result["failures"], result["changed"], result["queries"]) == (True, [], False, [])

    # The partitioned table's FK is checked once (not again per partition); the reference after the constraints.
    assert [(e["constraint"], e["table"], e["ref_table"], e["declared"], e["orphans"], e["sample"]) for e in result["foreign_keys"]] == [
        ("metrics_vm_id_fkey", "public.metrics", "public.vms", True, 0, []),
        ("vms_tenant_id_fkey", "public.vms", "public.tenants", True, 0, []),
        (None, "public.vm_events", "public.vms", False, 0, []),
    ]
    assert result["foreign_keys"][2]["columns"] == ["tenant_id", "vm_id"]
    assert result["foreign_keys"][2]["ref_columns"] == ["tenant_id", "id"]

    # No tenants given: three are picked from the first table; each sees exactly its own rows.
    assert sorted({e["tenant"] for e in result["rls"]}) == ["1", "2", "3"]
    assert len(result["rls"]) == 6
    expected = {("public.vms", "1"): 2, ("public.vms", "2"): 3, ("public.vms", "3"): 1, ("public.vm_events", "1"): 5}
    for entry in result["rls"]:
        assert entry["foreign_visible"] == 0 and entry["visible"] == entry["expected"] > 0 and entry["passed"], entry
        assert entry["rls_enabled"] is True
        assert expected.get((entry["table"], entry["tenant"]), entry["expected"]) == entry["expected"]

    assert result["matviews"] == [
        {"name": "public.tenant_vm_counts", "populated": True, "unique_index": True, "stale_rows": 0, "fresh": True}
    ]


def test_orphans_are_found_with_their_keys(db):
    orphan(db, "INSERT INTO vms VALUES (99, 99, 'ghost'), (98, 97, 'ghost'), (97, 97, 'ghost'), (96, 95, 'ghost')")
    orphan(db, "INSERT INTO metrics VALUES (2, 555, 1), (7, 444, 1)")  # one in each partition
    db.execute("INSERT INTO vm_events VALUES (2000, 1, 3, 'moved'), (2001, 2, 12345, 'lost'), (2002, 2, NULL, 'quota')")
    db.execute("INSERT INTO vm_events VALUES (2003, 77, 1, 'foreign')")
    db.execute("ALTER TABLE vm_events ADD CONSTRAINT vm_events_tenant_fk FOREIGN KEY (tenant_id) REFERENCES tenants (id) NOT VALID")

    run, result = validate(references=[REFERENCE], sample_size=3, matviews=False)
    assert result["failed"] is False, run.stdout
    assert result["passed"] is False
    found = by_constraint(result)
    assert (found["vms_tenant_id_fkey"]["orphans"], found["vms_tenant_id_fkey"]["sample"]) == (
        4,
        ["95", "97", "99"],
    )  # distinct, in key order
    assert (found["metrics_vm_id_fkey"]["orphans"], found["metrics_vm_id_fkey"]["sample"]) == (2, ["444", "555"])
    assert (found["vm_events_tenant_fk"]["orphans"], found["vm_events_tenant_fk"]["sample"]) == (1, ["77"])
    assert found["vm_events_tenant_fk"]["validated"] is False
    # Multi-column reference: (1, 3) is a vm of tenant 2, (2, 12345) does not exist, (77, 1) is a vm of tenant 1; NULLs are skipped.
    reference = found["public.vm_events->public.vms"]
    assert (reference["orphans"], reference["sample"], reference["declared"]) == (3, ["(1,3)", "(2,12345)", "(77,1)"], False)

    failures = result["failures"]
    assert len(failures) == 4
    assert any(
        f.startswith("foreign key vms_tenant_id_fkey on public.vms (tenant_id) -> public.tenants (id): 4 orphaned row(s)") for f in failures
    )
    assert any("vm_events_tenant_fk" in f and "VALIDATE CONSTRAINT" in f for f in failures)
    assert any(f.startswith("reference public.vm_events (tenant_id, vm_id) -> public.vms (tenant_id, id) (not declared") for f in failures)
    assert result["matviews"] == []


def test_a_leaking_policy_is_caught(db):
    db.execute("CREATE POLICY everything ON vm_events USING (true)")  # permissive policies are OR-ed: this opens every row
    run, result = validate(rls=dict(RLS, tenants=[1, "2"]), foreign_keys=False, matviews=False)
    assert result["failed"] is False, run.stdout
    assert result["passed"] is False
    entries = {(e["table"], e["tenant"]): e for e in result["rls"]}
    assert set(entries) == {("public.vms", "1"), ("public.vms", "2"), ("public.vm_events", "1"), ("public.vm_events", "2")}
    assert entries[("public.vms", "1")]["passed"] is True
    assert (entries[("public.vm_events", "1")]["visible"], entries[("public.vm_events", "1")]["foreign_visible"]) == (17, 12)
    assert entries[("public.vm_events", "1")]["expected"] == 5
    assert entries[("public.vm_events", "2")]["passed"] is False
    assert len(result["failures"]) == 2
    assert all(f.startswith("row level security on public.vm_events leaks: role 'zdm_validate_reader'") for f in result["failures"])
    assert "USING (true)" in result["failures"][0]


def test_a_table_without_rls_and_a_policy_that_hides_rows_are_reported(db):
    db.execute("ALTER TABLE vm_events DISABLE ROW LEVEL SECURITY")
    db.execute("DROP POLICY tenant_isolation ON vms")  # RLS on, no policy: the tenant sees nothing
    run, result = validate(rls=dict(RLS, tenants=["2"]), foreign_keys=False, matviews=False)
    assert result["failed"] is False, run.stdout
    assert result["passed"] is False
    entries = {e["table"]: e for e in result["rls"]}
    assert (entries["public.vm_events"]["rls_enabled"], entries["public.vm_events"]["foreign_visible"]) == (False, 11)
    assert (entries["public.vms"]["visible"], entries["public.vms"]["expected"]) == (0, 3)
    assert len(result["failures"]) == 2  # the table without RLS is reported once, not again as a leak
    disabled = [f for f in result["failures"] if f.startswith("row level security is not enabled on public.vm_events")]
    assert len(disabled) == 1
    assert 'ALTER TABLE "public"."vm_events" ENABLE ROW LEVEL SECURITY' in disabled[0]
    assert "CREATE POLICY" in disabled[0] and "current_setting('app.tenant_id')::bigint" in disabled[0]
    assert any("sees 0 of the tenant's 3 row(s) in public.vms" in f and "no policy" in f for f in result["failures"])


def test_a_role_that_would_prove_nothing_is_refused(db):
    missing = validate(rls=dict(RLS, role="zdm_validate_nobody"))[1]
    assert missing["failed"] is True
    assert "role 'zdm_validate_nobody' (rls.role) does not exist" in missing["msg"]

    superuser = validate(rls=dict(RLS, role="migrator"))[1]
    assert superuser["failed"] is True
    assert "is a superuser" in superuser["msg"] and "would prove nothing" in superuser["msg"]

    db.execute(sql.SQL("ALTER TABLE vm_events OWNER TO {}").format(sql.Identifier(ROLE)))
    owner = validate(rls=RLS)[1]
    assert owner["failed"] is True
    assert f"role '{ROLE}' (rls.role) owns table public.vm_events" in owner["msg"] and "FORCE ROW LEVEL SECURITY" in owner["msg"]
    db.execute("ALTER TABLE vm_events OWNER TO migrator")

    try:
        db.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(ROLE)))
        bypass = validate(rls=RLS)[1]
    finally:
        db.execute(sql.SQL("ALTER ROLE {} NOBYPASSRLS").format(sql.Identifier(ROLE)))
    assert bypass["failed"] is True
    assert "has BYPASSRLS" in bypass["msg"]
    assert all(result["queries"] == [] for result in (missing, superuser, owner, bypass))


def test_stale_matview_is_reported_until_refreshed(db):
    db.execute("INSERT INTO vms VALUES (9, 1, 'new')")  # after the view was filled: tenant 1 now has 3, the view says 2
    db.execute("CREATE MATERIALIZED VIEW tenant_names AS SELECT name FROM tenants WITH NO DATA")
    run, result = validate(foreign_keys=False)
    assert result["failed"] is False, run.stdout
    views = {view["name"]: view for view in result["matviews"]}
    assert views["public.tenant_vm_counts"] == {
        "name": "public.tenant_vm_counts",
        "populated": True,
        "unique_index": True,
        "stale_rows": 2,  # (1, 2) only in the view, (1, 3) only in the query
        "fresh": False,
    }
    assert views["public.tenant_names"] == {
        "name": "public.tenant_names",
        "populated": False,
        "unique_index": False,
        "stale_rows": None,
        "fresh": False,
    }
    failures = result["failures"]
    assert any(f.startswith("materialized view public.tenant_vm_counts is stale: 2 row(s) differ") for f in failures)
    assert any('REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."tenant_vm_counts"' in f for f in failures)
    assert any(f.startswith("materialized view public.tenant_names is not populated") for f in failures)
    assert any(f.startswith("materialized view public.tenant_names has no unique index") for f in failures)
    assert len(failures) == 3

    db.execute("DROP MATERIALIZED VIEW tenant_names")
    tolerant = validate(foreign_keys=False, max_stale_rows=2)[1]  # still replicating: a little staleness allowed
    assert (tolerant["passed"], tolerant["matviews"][0]["stale_rows"], tolerant["matviews"][0]["fresh"]) == (True, 2, True)

    db.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY tenant_vm_counts")
    refreshed = validate(foreign_keys=False)[1]
    assert (refreshed["passed"], refreshed["matviews"][0]["stale_rows"], refreshed["matviews"][0]["fresh"]) == (True, 0, True)


def test_check_mode_returns_the_same_and_changes_nothing(db):
    orphan(db, "INSERT INTO vms VALUES (99, 99, 'ghost')")
    db.execute("INSERT INTO vms VALUES (9, 1, 'new')")  # the view is stale now
    db.execute("CREATE POLICY everything ON vm_events USING (true)")
    before = fingerprint(db)
    args = dict(references=[REFERENCE], rls=RLS)
    checked = validate(check=True, **args)[1]
    assert checked["failed"] is False
    assert fingerprint(db) == before
    real = validate(**args)[1]
    assert fingerprint(db) == before
    assert {key: checked[key] for key in RESULT_KEYS} == {key: real[key] for key in RESULT_KEYS}
    assert (checked["changed"], checked["queries"], checked["passed"]) == (False, [], False)
    assert len(checked["failures"]) == 1 + 3 + 1  # the orphan, tenant 1, 2, 3 leaking in vm_events, the stale view


def test_hostile_names_execute_nothing_and_are_reported_missing(db):
    for reference, expected in (
        (dict(REFERENCE, table=HOSTILE), f"table public.{HOSTILE} (in references (table)) does not exist in database '{DB}'"),
        (dict(REFERENCE, columns=["tenant_id", HOSTILE]), f"table public.vm_events has no column(s) {HOSTILE} (in references (columns))"),
    ):
        result = validate(references=[reference])[1]
        assert result["failed"] is True
        assert expected in result["msg"]
        assert result["queries"] == []
        assert db.execute("SELECT to_regclass('public.zdm_victim') IS NOT NULL").fetchone()[0] is True

    unknown_schema = validate(schemas=["public", "zdm_no_such_schema"])[1]
    assert unknown_schema["failed"] is True
    assert "schema(s) not found in database 'zdm_validate_test'" in unknown_schema["msg"] and "zdm_no_such_schema" in unknown_schema["msg"]


def test_wrong_password_names_the_user_not_the_password(db):
    run, result = validate(login_password="Wrong-Secret-9")
    assert result["failed"] is True
    assert "authentication failed for user 'migrator'" in result["msg"]
    assert "Wrong-Secret-9" not in run.stdout


def test_fail_on_error_fails_with_the_failures_listed(db):
    orphan(db, "INSERT INTO vms VALUES (99, 99, 'ghost')")
    result = validate(fail_on_error=True)[1]
    assert result["failed"] is True
    assert result["msg"].startswith(f"1 integrity check(s) failed in database '{DB}' on {where(SCRATCH_PG)}: ")
    assert (
        "foreign key vms_tenant_id_fkey on public.vms (tenant_id) -> public.tenants (id): 1 orphaned row(s), e.g. key(s) 99"
        in result["msg"]
    )
    assert result["passed"] is False and len(result["failures"]) == 1
    assert result["queries"] == []

    db.execute("DELETE FROM vms WHERE id = 99")
    sound = validate(fail_on_error=True)[1]
    assert (sound["failed"], sound["passed"]) == (False, True)
