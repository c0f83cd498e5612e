"""playbooks/sample_data.yml: the NovaCron-like schema in blue, loaded once."""

import pytest
from psycopg import sql

from tests.lab import BLUE, connect, run_playbook, scratch_database

TABLES = ["tenants", "users", "compute_nodes", "vms", "vm_metrics", "audit_log"]


def counts(conn) -> dict:
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}  # noqa: S608 (fixed names)


def test_sample_data_is_loaded_with_about_the_requested_rows(sample_data, blue):
    loaded = counts(blue)
    assert all(loaded[table] > 0 for table in TABLES), loaded
    assert sum(loaded.values()) >= 300000
    # every vm references an existing tenant and node; metrics span about six months
    assert blue.execute("SELECT count(*) FROM vms v LEFT JOIN tenants t ON t.id = v.tenant_id WHERE t.id IS NULL").fetchone()[0] == 0
    months = blue.execute("SELECT count(DISTINCT date_trunc('month', collected_at)) FROM vm_metrics").fetchone()[0]
    assert months >= 6


def test_second_load_changes_nothing(sample_data, blue):
    before = counts(blue)
    again = run_playbook("sample_data.yml")
    assert again.status == "successful", again.stdout
    assert again.changed("localhost") == 0
    assert counts(blue) == before


def test_sequences_continue_after_the_generated_ids(sample_data, blue):
    next_id = blue.execute("SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))").fetchone()[0]
    assert next_id > blue.execute("SELECT max(id) FROM audit_log").fetchone()[0]


def test_check_mode_changes_nothing(sample_data, blue):
    before = counts(blue)
    checked = run_playbook("sample_data.yml", cmdline="--check")
    assert checked.status == "successful", checked.stdout
    assert checked.changed("localhost") == 0
    assert counts(blue) == before


SCRATCH = "zdm_sample_data_scratch"
# every column but the load's timestamps (now() differs between loads)
AUDIT_LOG_WITHOUT_TIMES = (
    "SELECT md5(string_agg(row(id, tenant_id, user_id, action, object_type, object_id, details)::text, ',' ORDER BY id)) FROM audit_log"
)
ROWS_1000 = {"tenants": 10, "users": 33, "compute_nodes": 10, "vms": 166, "vm_metrics": 500, "audit_log": 281}


@pytest.fixture()
def scratch(lab):
    """An empty database on blue's server owned by the sample data's owner, as a new lab has."""
    with scratch_database(BLUE, SCRATCH) as endpoint:
        with connect(BLUE, login_db="postgres") as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO novacron").format(sql.Identifier(SCRATCH)))
        yield endpoint


def test_loads_an_empty_database_once_and_again_on_reset(scratch):
    target = {"migration_blue": {key: scratch[key] for key in ("login_host", "login_port", "login_db")}, "sample_data_rows": 1000}
    checked = run_playbook("sample_data.yml", extravars=target, cmdline="--check")
    assert checked.status == "successful", checked.stdout
    assert checked.changed("localhost") == 0
    with connect(scratch) as conn:
        assert conn.execute("SELECT to_regclass('tenants')").fetchone()[0] is None

    first = run_playbook("sample_data.yml", extravars=target)
    assert first.status == "successful", first.stdout
    assert first.changed("localhost") == 1
    with connect(scratch) as conn:
        assert counts(conn) == ROWS_1000
        loaded = conn.execute(AUDIT_LOG_WITHOUT_TIMES).fetchone()[0]

    again = run_playbook("sample_data.yml", extravars=target)
    assert again.status == "successful", again.stdout
    assert again.changed("localhost") == 0

    reset = run_playbook("sample_data.yml", extravars=dict(target, sample_data_reset=True))
    assert reset.status == "successful", reset.stdout
    assert reset.changed("localhost") == 1
    with connect(scratch) as conn:
        assert counts(conn) == ROWS_1000
        # the same rows again, ids from 1, sequences past them
        assert conn.execute("SELECT min(id), max(id) FROM audit_log").fetchone() == (1, 281)
        assert conn.execute("SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))").fetchone()[0] == 282
        assert conn.execute(AUDIT_LOG_WITHOUT_TIMES).fetchone()[0] == loaded
