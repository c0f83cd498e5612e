"""testinfra checks of roles/monitoring after molecule's converge (the lab's variables)."""

import json

import pytest

# python3, not curl: the machine need not have curl
FETCH = "python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())'"
# the lab's monitor-1 (molecule.yml's ansible_host): every daemon binds it
ADDRESS = "127.0.0.41"
EXPORTERS = {
    "prometheus-postgres-exporter-blue": 9187,
    "prometheus-postgres-exporter-green": 9188,
    "prometheus-redis-exporter-redis-blue": 9121,
    "prometheus-redis-exporter-redis-green": 9122,
}


@pytest.mark.parametrize("port", [9090, 9093, *EXPORTERS.values()])
def test_listens_on_loopback(host, port):
    assert host.socket(f"tcp://{ADDRESS}:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{port}").is_listening  # nothing left from before the move to monitor-1


def test_configuration_is_valid(host):
    host.run_expect([0], "promtool check config /etc/prometheus/prometheus.yml")
    host.run_expect([0], "promtool check rules /etc/prometheus/rules/zerodowntime.yml")
    host.run_expect([0], "amtool check-config /etc/prometheus/alertmanager.yml")


@pytest.mark.parametrize("service", EXPORTERS)
def test_exporter_init_script_and_secrets(host, service):
    script = host.file(f"/etc/init.d/{service}")
    assert script.mode == 0o755
    env = host.file(f"/etc/prometheus/exporters/{service}.env")
    assert env.mode == 0o640
    assert env.user == "root" and env.group == "prometheus"
    assert host.run_expect([0], f"/etc/init.d/{service} status")


def test_packages_single_instance_exporters_are_off(host):
    for service in ("prometheus-postgres-exporter", "prometheus-redis-exporter"):
        assert host.run(f"/etc/init.d/{service} status").rc != 0


def test_prometheus_scrapes_the_postgres_exporters(host):
    answer = json.loads(host.check_output(f"{FETCH} 'http://{ADDRESS}:9090/api/v1/targets?state=active'"))
    postgres = [t for t in answer["data"]["activeTargets"] if t["labels"]["job"] == "postgres"]
    assert sorted(t["labels"]["pg_instance"] for t in postgres) == ["blue", "green"]
    assert sorted(t["scrapeUrl"] for t in postgres) == [f"http://{ADDRESS}:9187/metrics", f"http://{ADDRESS}:9188/metrics"]


@pytest.mark.parametrize("port", [9187, 9188])
def test_postgres_exporter_loads_the_slot_queries(host, port):
    metrics = host.check_output(f"{FETCH} http://{ADDRESS}:{port}/metrics").splitlines()
    assert "pg_up 1" in metrics
    assert "pg_exporter_last_scrape_error 0" in metrics
    loaded = [
        line
        for line in metrics
        if line.startswith('pg_exporter_user_queries_load_error{filename="/etc/prometheus/exporters/postgres-queries.yaml"')
    ]
    assert loaded and loaded[0].endswith(" 0")
