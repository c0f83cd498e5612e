"""playbooks/sample_data.yml: the NovaCron-like schema in blue, loaded once."""

from tests.lab import run_playbook

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
    assert again.changed() == 0
    assert counts(blue) == before


def test_sequences_continue_after_the_generated_ids(sample_data, blue):
    next_id = blue.execute("SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))").fetchone()[0]
    assert next_id > blue.execute("SELECT max(id) FROM audit_log").fetchone()[0]
