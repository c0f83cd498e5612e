"""roles/postgresql against the lab's database hosts, reached over SSH: db-blue (instance blue), db-green
(green) and db-green-r1 (green's replica green_r1), each on its own address on port 5432."""

from __future__ import annotations

import pytest
import yaml

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.tuning import memory_settings
from tests.lab import BLUE, GREEN, GREEN_R1_ADDRESS, LAB_PASSWORD, PG_PORT, ROOT, connect, run_playbook

# inventories/lab/hosts.yml: each database host's postgresql_instances (its address is its ansible_host)
LAB_INSTANCES = {
    "db-blue": [{"name": "blue", "port": PG_PORT}],
    "db-green": [{"name": "green", "port": PG_PORT, "settings": {"maintenance_work_mem": "1GB", "random_page_cost": 1.1}}],
}
DATABASE_HOSTS = {"db-blue": BLUE["login_host"], "db-green": GREEN["login_host"], "db-green-r1": GREEN_R1_ADDRESS}


def test_lab_instances_mirror_the_inventory():
    """LAB_INSTANCES is what the restart test converges with: it must be the lab's own description."""
    inventory = yaml.safe_load((ROOT / "inventories" / "lab" / "hosts.yml").read_text())
    groups = inventory["all"]["children"]["postgresql_servers"]["children"]
    hosts = {name: settings for group in groups.values() for name, settings in group["hosts"].items()}
    assert {name: settings["ansible_host"] for name, settings in hosts.items()} == DATABASE_HOSTS
    instances = {name: settings["postgresql_instances"] for name, settings in hosts.items() if "postgresql_instances" in settings}
    assert instances == LAB_INSTANCES


def host_memory_mb() -> int:
    """MemTotal as Ansible's memtotal_mb fact reads it."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def size_bytes(conn, value: str) -> int:
    return conn.execute("SELECT pg_size_bytes(%s)", (value,)).fetchone()[0]


def setting_bytes(conn, name: str) -> int:
    return conn.execute("SELECT pg_size_bytes(current_setting(%s))", (name,)).fetchone()[0]


def converge_postgresql(extravars: dict | None = None, limit: str = "postgresql_servers"):
    """site.yml's PostgreSQL play alone, over SSH: the role under test, not the whole lab (--tags;
    --limit: the other plays, which gather facts under any tag, reach no host of their own)."""
    run = run_playbook("site.yml", extravars=extravars, cmdline=f"--tags postgresql --limit {limit}")
    assert run.status == "successful", run.stdout
    return run


def started_at(endpoint: dict):
    with connect(endpoint) as conn:
        return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def test_second_converge_changes_nothing(lab):
    again = converge_postgresql()
    assert set(again.stats["ok"]) == set(DATABASE_HOSTS), again.stats  # the role ran on every database host
    assert again.changes() == []


@pytest.mark.parametrize(("endpoint", "name"), [(BLUE, "blue"), (GREEN, "green")], ids=["blue", "green"])
def test_each_instance_listens_on_its_address_and_socket_with_logical_wal(lab, endpoint, name):
    """Blue and green share port 5432: each on its own address and in its own socket directory."""
    with connect(endpoint) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == endpoint["login_host"]
        assert conn.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone() == (endpoint["login_host"], PG_PORT)
        assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == f"/var/run/postgresql/{name}"
        assert conn.execute("SHOW wal_level").fetchone()[0] == "logical"
        assert conn.execute("SHOW max_slot_wal_keep_size").fetchone()[0] == "10GB"


def test_memory_settings_follow_the_host_memory(blue):
    expected = memory_settings(host_memory_mb() // 3, 100)  # blue, green and green_r1 (a read replica) share the host
    for name in ("shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem"):
        assert setting_bytes(blue, name) == size_bytes(blue, expected[name]), name


def test_instance_overrides_win_over_derived_settings(green, blue):
    assert setting_bytes(green, "maintenance_work_mem") == 1024**3
    assert green.execute("SHOW random_page_cost").fetchone()[0] == "1.1"
    assert setting_bytes(blue, "maintenance_work_mem") != 1024**3
    assert blue.execute("SHOW random_page_cost").fetchone()[0] == "4"


def test_reload_for_reloadable_settings_restart_only_where_needed(lab):
    blue_started, green_started = started_at(BLUE), started_at(GREEN)
    try:
        # A reload-only setting on blue and green (their hosts alone: green's read replica is not
        # part of the claim, and each host converged costs the suite's two cores ~36 tasks): applied,
        # nobody restarts.
        converge_postgresql({"postgresql_settings": {"log_min_duration_statement": "250ms"}}, limit=",".join(LAB_INSTANCES))
        for endpoint in (BLUE, GREEN):
            with connect(endpoint) as conn:
                assert conn.execute("SHOW log_min_duration_statement").fetchone()[0] == "250ms"
        assert (started_at(BLUE), started_at(GREEN)) == (blue_started, green_started)

        # A restart-only setting on green alone: green restarts, blue keeps running. (Not one a
        # standby checks against its primary, such as max_wal_senders: green's read replica would
        # pause its recovery.)
        [green] = LAB_INSTANCES["db-green"]
        restarting = dict(green, settings=dict(green["settings"], max_files_per_process=1100))
        converge_postgresql({"postgresql_instances": [restarting]}, limit="db-green")
        with connect(GREEN) as conn:
            assert conn.execute("SHOW max_files_per_process").fetchone()[0] == "1100"
        assert started_at(GREEN) > green_started
        assert started_at(BLUE) == blue_started
    finally:
        converge_postgresql(limit=",".join(LAB_INSTANCES))  # the hosts changed above, back as the inventory says
    with connect(GREEN) as conn:
        assert conn.execute("SHOW max_files_per_process").fetchone()[0] == "1000"


def test_roles_and_databases_exist_on_both(lab):
    for endpoint in (BLUE, GREEN):
        with connect(endpoint) as conn:
            roles = dict(
                conn.execute(
                    "SELECT rolname, rolreplication FROM pg_roles WHERE rolname IN ('replicator', 'migrator', 'novacron')"
                ).fetchall()
            )
            assert roles == {"replicator": True, "migrator": False, "novacron": False}
            owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'novacron'").fetchone()[0]
            assert owner == "novacron"


@pytest.mark.parametrize("endpoint", [BLUE, GREEN], ids=["blue", "green"])
def test_pg_stat_statements_is_loaded_created_and_keeps_no_utility_text(lab, endpoint):
    """Phase 5's watch reads it; utility statements (a subscription's password=, ALTER ROLE ... PASSWORD)
    are not tracked, so their text is not kept."""
    with connect(dict(endpoint, login_db="postgres")) as conn:
        assert "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        assert conn.execute("SHOW pg_stat_statements.track_utility").fetchone()[0] == "off"
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()[0] == 1
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute(f"ALTER ROLE migrator PASSWORD '{LAB_PASSWORD}'")  # the lab's own password, set again
        kept = conn.execute("SELECT count(*) FROM pg_stat_statements WHERE query ILIKE %s", ("%password%",)).fetchone()[0]
    assert kept == 0
