"""roles/monitoring on the lab's host monitor-1 (127.0.0.41, over SSH): Prometheus :9090, Alertmanager
:9093, PostgreSQL exporters for blue :9187 and green :9188, Redis exporters :9121/:9122 (Redis may not
run: the exporter answers anyway). Checked through Prometheus's HTTP API; an inactive logical slot on blue makes
PostgresReplicationSlotInactive fire (the lab sets monitoring_slot_inactive_for: 0s and 5 s
scrape and evaluation intervals)."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from tests.lab import (
    ALERTMANAGER_URL,
    BLUE,
    BLUE_ADDRESS,
    GREEN,
    LAB_PASSWORD,
    MONITOR_ADDRESS,
    MONITORING_HOST,
    MONITORING_PLAY,
    PG_PORT,
    PROMETHEUS_URL,
    connect,
    converged_again,
    drop_replication,
    kill_outright,
    run_playbook,
    scratch_database,
    wait_for,
)

PROMETHEUS = PROMETHEUS_URL
ALERTMANAGER = ALERTMANAGER_URL
EXPORTERS = {
    "prometheus-postgres-exporter-blue": f"{MONITOR_ADDRESS}:9187",
    "prometheus-postgres-exporter-green": f"{MONITOR_ADDRESS}:9188",
    "prometheus-redis-exporter-redis-blue": f"{MONITOR_ADDRESS}:9121",
    "prometheus-redis-exporter-redis-green": f"{MONITOR_ADDRESS}:9122",
}
SLOT = "zdm_monitoring_test"


def api(base: str, path: str, **params) -> dict | list:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a fixed loopback URL)
        return json.load(response)


def query(expr: str) -> list[dict]:
    """The series of an instant query: [{"metric": {...}, "value": [ts, "v"]}, ...]."""
    answer = api(PROMETHEUS, "/api/v1/query", query=expr)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_second_converge_changes_nothing(monitoring):
    again = converged_again(monitoring, MONITORING_PLAY)
    assert again.status == "successful", again.stdout
    assert again.changed(MONITORING_HOST) == 0, again.changed_tasks()


def test_every_daemon_listens_on_monitor_1_only(monitoring):
    """Each daemon on monitor-1's address alone: nothing left on lab-db's 127.0.0.1 from before the move."""
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.split("\n")
    local = {line.split()[3] for line in listening if line.strip()}
    for port in (9090, 9093, 9187, 9188, 9121, 9122):
        bound = {address for address in local if address.rsplit(":", 1)[1] == str(port)}
        assert bound == {f"{MONITOR_ADDRESS}:{port}"}, (port, bound)
    assert not {address for address in local if address.endswith(":9094")}, "Alertmanager's cluster port is open"


def test_installed_configuration_is_valid(monitoring):
    for argv in (
        ["promtool", "check", "config", "/etc/prometheus/prometheus.yml"],
        ["promtool", "check", "rules", "/etc/prometheus/rules/zerodowntime.yml"],
        ["amtool", "check-config", "/etc/prometheus/alertmanager.yml"],
    ):
        check = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert check.returncode == 0, (argv, check.stdout, check.stderr)
    rules = {rule["name"]: rule for group in api(PROMETHEUS, "/api/v1/rules")["data"]["groups"] for rule in group["rules"]}
    expected = {
        "PostgresReplicationLag",
        "PostgresReplicationSlotRetainedWal",
        "PostgresReplicationSlotInactive",
        "PostgresSubscriptionErrors",
        "RabbitMQQueueDepth",
    }
    assert expected <= set(rules)
    assert rules["PostgresReplicationSlotInactive"]["duration"] == 0  # the lab's for: 0s
    assert "rabbitmq_queue_messages_ready" in rules["RabbitMQQueueDepth"]["query"]


def test_exporter_secrets_stay_off_command_lines(monitoring):
    for service in EXPORTERS:
        env = Path(f"/etc/prometheus/exporters/{service}.env")
        stat = env.stat()
        assert stat.st_mode & 0o777 == 0o640, service
        assert env.group() == "prometheus" and env.owner() == "root"
    assert LAB_PASSWORD in Path("/etc/prometheus/exporters/prometheus-postgres-exporter-blue.env").read_text()
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
    exporters = [line for line in processes if "-exporter --web.listen-address=" in line]
    assert f"/usr/bin/prometheus-postgres-exporter --web.listen-address={MONITOR_ADDRESS}:9187" in " ".join(exporters)
    assert len(exporters) >= len(EXPORTERS)
    assert not [line for line in exporters if LAB_PASSWORD in line]


def test_postgres_exporter_targets_are_up(monitoring):
    def both_up():
        series = query('up{job="postgres"}')
        return {s["metric"]["pg_instance"]: s["value"][1] for s in series} == {"blue": "1", "green": "1"} and series

    series = wait_for("both PostgreSQL exporters up", both_up, timeout=30)
    assert {s["metric"]["instance"] for s in series} == {f"{MONITOR_ADDRESS}:9187", f"{MONITOR_ADDRESS}:9188"}
    redis = {s["metric"]["redis_instance"] for s in query('up{job="redis"}')}
    assert redis == {"redis-blue", "redis-green"}  # listed whether or not Redis runs


def test_inactive_slot_shows_up_and_fires_an_alert(monitoring):
    with scratch_database(BLUE, "zdm_monitoring_test") as scratch:
        try:
            with connect(scratch) as conn:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
            series = wait_for(
                "the slot's metrics",
                lambda: query(f'pg_replication_slots_retained_wal_bytes{{pg_instance="blue",slot_name="{SLOT}"}}'),
            )
            assert series[0]["metric"]["database"] == "zdm_monitoring_test"
            assert series[0]["metric"]["slot_type"] == "logical"
            assert float(series[0]["value"][1]) >= 0
            assert query(f'pg_replication_slots_active{{slot_name="{SLOT}"}}')[0]["value"][1] == "0"

            def firing():
                alerts = api(PROMETHEUS, "/api/v1/alerts")["data"]["alerts"]
                return [
                    a
                    for a in alerts
                    if a["labels"].get("alertname") == "PostgresReplicationSlotInactive"
                    and a["labels"].get("slot_name") == SLOT
                    and a["state"] == "firing"
                ]

            alert = wait_for("PostgresReplicationSlotInactive firing", firing)[0]
            assert alert["labels"]["pg_instance"] == "blue"
            assert alert["labels"]["severity"] == "warning"
            # Prometheus hands it to Alertmanager (the null receiver only lists it)
            wait_for(
                "the alert in Alertmanager",
                lambda: [a for a in api(ALERTMANAGER, "/api/v2/alerts") if a["labels"].get("slot_name") == SLOT],
                timeout=30,
            )
        finally:
            with connect(scratch) as conn:
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))
    with connect(BLUE, login_db="postgres") as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone()[0] == 0


def test_failing_subscription_fires_an_alert(monitoring):
    """A subscription whose apply worker fails (a column added on the publisher only) makes
    PostgresSubscriptionErrors fire on green; the subscription and its slot are dropped after."""
    db = subscription = "zdm_monitoring_suberr"
    with scratch_database(BLUE, db) as blue, scratch_database(GREEN, db) as green:
        try:
            with connect(blue) as conn:
                conn.execute("CREATE TABLE audit_log (id int PRIMARY KEY)")
                conn.execute("GRANT SELECT ON audit_log TO replicator")
                conn.execute(f"CREATE PUBLICATION {subscription} FOR TABLE audit_log")
            with connect(green) as conn:
                conn.execute("CREATE TABLE audit_log (id int PRIMARY KEY)")
                conn.execute(
                    f"CREATE SUBSCRIPTION {subscription} CONNECTION 'host={BLUE_ADDRESS} port={PG_PORT} dbname={db} user=replicator "
                    f"password={LAB_PASSWORD}' PUBLICATION {subscription} WITH (copy_data = false)"
                )
            with connect(blue) as conn:
                conn.execute("ALTER TABLE audit_log ADD COLUMN note text")
                conn.execute("INSERT INTO audit_log VALUES (1, 'set')")

            def firing():
                alerts = api(PROMETHEUS, "/api/v1/alerts")["data"]["alerts"]
                return [
                    a
                    for a in alerts
                    if a["labels"].get("alertname") == "PostgresSubscriptionErrors"
                    and a["labels"].get("subname") == subscription
                    and a["state"] == "firing"
                ]

            alert = wait_for("PostgresSubscriptionErrors firing", firing, timeout=90)[0]
            assert alert["labels"]["pg_instance"] == "green"
            assert alert["labels"]["severity"] == "critical"
        finally:
            with connect(green) as conn:  # DROP SUBSCRIPTION drops its slot on blue
                if conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (subscription,)).fetchone():
                    conn.execute(f"DROP SUBSCRIPTION {subscription}")
            drop_replication(db, GREEN, BLUE)
    with connect(BLUE, login_db="postgres") as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s", (db,)).fetchone()[0] == 0


def test_converge_starts_an_exporter_after_an_unclean_stop(monitoring):
    """A killed exporter leaves its pid file behind: the converge must start it again."""
    pidfile = Path("/run/prometheus/prometheus-postgres-exporter-blue.pid")
    pid = int(pidfile.read_text().split()[0])
    kill_outright("the exporter", [pid])
    assert pidfile.exists()
    run = run_playbook(MONITORING_PLAY)
    assert run.status == "successful", run.stdout
    assert "Start the exporters" in run.changed_tasks()
    wait_for("the blue exporter back up", lambda: query('up{pg_instance="blue"} == 1'), timeout=30)


def test_alertmanager_moved_and_reconfigured_in_one_converge(monitoring):
    """Its listen address (a restart) and alertmanager.yml (a reload) changed together: the reload
    must not call the new address before the restart has moved Alertmanager there."""
    moved = f"{MONITOR_ADDRESS}:19093"
    try:
        run = run_playbook(
            MONITORING_PLAY,
            extravars={"monitoring_alertmanager_listen": moved, "monitoring_alertmanager_repeat_interval": "3h"},
        )
        assert run.status == "successful", run.stdout
        status = api(f"http://{moved}", "/api/v2/status")
        assert "repeat_interval: 3h" in status["config"]["original"]
    finally:
        back = run_playbook(MONITORING_PLAY)
    assert back.status == "successful", back.stdout
    assert "repeat_interval: 4h" in api(ALERTMANAGER, "/api/v2/status")["config"]["original"]
