"""playbooks/phase1_infra.yml and playbooks/redis_switchover.yml on the lab: every service
provisioned and checked, blue's publication and slot made, and Redis switched over through
HAProxy's Redis frontend (lb-1 127.0.0.31:6389) with a client writing throughout."""

from __future__ import annotations

import time

import pytest
import redis
import yaml

from tests.lab import (
    BLUE,
    HAPROXY_ADDRESS,
    HAPROXY_REDIS,
    HAPROXY_RUNTIME_API,
    LAB_PASSWORD,
    PHASE1_FROM_CLUSTER,
    REDIS_BLUE_ADDRESS,
    REDIS_GREEN_ADDRESS,
    REDIS_PORT,
    ROOT,
    RedisWriter,
    connect,
    run_playbook,
    scratch_database,
)

REDIS_BLUE, REDIS_GREEN = REDIS_BLUE_ADDRESS, REDIS_GREEN_ADDRESS  # both on REDIS_PORT: told apart by address


def test_phase1_publishes_blue_and_checks_every_service(phase1, blue):
    [lag] = phase1.task_results("Wait until green's read replicas stream and replay within phase1_max_replica_lag_ms")
    [replica] = lag["replicas"]
    assert (replica["application_name"], replica["state"]) == ("green_r1", "streaming")
    assert replica["replay_lag_ms"] is None or replica["replay_lag_ms"] <= 100
    [redis_check] = phase1.task_results("Check that Redis answers and green replicates blue with its link up")
    assert redis_check["diff"]["before"] == {"source": "primary", "target": f"replica of {REDIS_BLUE_ADDRESS}:{REDIS_PORT}"}
    [rabbitmq] = phase1.task_results("Check RabbitMQ's alarms, virtual hosts and aliveness")
    assert [item["json"]["status"] for item in rabbitmq["results"]] == ["ok", "ok", "ok"]
    [queues] = phase1.task_results("Check that RabbitMQ's queues are declared")
    declared = {item["json"]["name"]: item["json"]["arguments"] for item in queues["results"]}
    assert declared["vcenter_sync"]["x-dead-letter-routing-key"] == "vcenter_sync_dlq"
    [targets] = phase1.task_results("Wait until Prometheus scrapes every target")
    jobs = {target["labels"]["job"] for target in targets["json"]["data"]["activeTargets"]}
    assert {"postgres", "redis", "rabbitmq"} <= jobs, jobs
    assert all(target["health"] == "up" for target in targets["json"]["data"]["activeTargets"])
    publication = blue.execute(
        "SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'novacron_migration'"
    ).fetchone()[0]
    assert publication == sorted(["tenants", "users", "compute_nodes", "vms", "vm_metrics", "audit_log"])
    assert blue.execute("SELECT plugin FROM pg_replication_slots WHERE slot_name = 'novacron_blue_to_green'").fetchone() == ("pgoutput",)
    with connect(dict(BLUE, login_db="zerodowntime_state")) as state:
        status = state.execute("SELECT status, details FROM migration_progress WHERE phase = 'phase1_infra'").fetchone()
    assert status[0] == "succeeded" and status[1]["green_replicas"] == ["green_r1"]
    assert status[1]["redis"] == {"source": "primary", "target": f"replica of {REDIS_BLUE_ADDRESS}:{REDIS_PORT}"}
    assert status[1]["raft_leader"] in ("etcd1", "etcd2", "etcd3")
    assert LAB_PASSWORD not in phase1.stdout


# The plays of site.yml, which phase1_infra.yml imports first.
SITE_PLAYS = {play["name"] for play in yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text())}


def test_phase1_second_run_changes_nothing(phase1):
    """A second run of phase 1 (from cluster.yml on, as the fixture ran it: the site.yml plays
    before it are every role's converge, each role's test asserts its second converge) changes
    nothing, neither the Raft members nor phase 1's own tasks."""
    again = run_playbook("phase1_infra.yml", cmdline=PHASE1_FROM_CLUSTER)
    assert again.status == "successful", again.stdout
    ran = {event["event_data"].get("play") for event in again.events if event.get("event") == "runner_on_ok"}
    assert not ran & SITE_PLAYS and again.task_results("Bootstrap the first member, add and start each other one on its host"), ran
    assert again.task_results("Create the replication slot"), again.stdout
    assert again.changes() == []


def test_phase1_fails_naming_the_unhealthy_service_and_records_it(phase1):
    """A replica the inventory expects but that does not stream fails the gate by name; the failure
    is recorded (in a progress database of the test's own, so the lab's phase order is kept). The
    provisioning the fixture ran is not run again (--start-at-task): the gate is what is tested."""
    with scratch_database(BLUE, "zdm_phase1_state") as state_db:
        run = run_playbook(
            "phase1_infra.yml",
            cmdline="--start-at-task 'Start phase 1'",
            extravars={
                "migration_green_replicas": ["green_r1", "green_r9"],
                "phase1_health_timeout": 2,
                "migration_state_db": {key: value for key, value in state_db.items() if key != "login_password"},
            },
        )
        assert run.status == "failed"
        assert "green_r9" in run.stdout and "phase 1 failed at Wait until green's read replicas" in run.stdout
        with connect(state_db) as conn:
            status, details = conn.execute("SELECT status, details FROM migration_progress WHERE phase = 'phase1_infra'").fetchone()
    assert status == "failed" and "green_r9" in details["error"], details


def role(address: str) -> str:
    return redis.Redis(host=address, port=REDIS_PORT, password=LAB_PASSWORD).info("replication")["role"]


def switch_redis_to(side: str):
    run = run_playbook("redis_switchover.yml", extravars={"redis_switchover_to": side})
    assert run.status == "successful", run.stdout
    assert LAB_PASSWORD not in run.stdout
    return run


@pytest.fixture()
def redis_on_blue(phase1):
    assert role(REDIS_BLUE) == "master" and role(REDIS_GREEN) == "slave"
    try:
        yield
    finally:
        switch_redis_to("blue")
        assert role(REDIS_BLUE) == "master" and role(REDIS_GREEN) == "slave"


def test_redis_switchover_through_haproxy_loses_no_write(redis_on_blue):
    with RedisWriter(HAPROXY_REDIS, prefix=f"phase1:{time.time_ns()}:", host=HAPROXY_ADDRESS) as writer:
        switched = switch_redis_to("green")
        acked_at_switch = len(writer.acked)
        time.sleep(0.5)
    assert role(REDIS_GREEN) == "master" and role(REDIS_BLUE) == "slave"
    # lb-1 was told over its TCP runtime API: the one run is on the controller, not on lb-1
    [cutover] = switched.task_results("Redis switchover | hold, catch up, promote, repoint, retire, release")
    told = [command for command in cutover["commands"] if command.startswith(("set server", "shutdown sessions"))]
    assert told and all(command.endswith(f"(on {HAPROXY_RUNTIME_API})") for command in told), cutover["commands"]
    # blue is a read-only replica from the promotion on: writes acknowledged since went to green
    assert len(writer.acked) > acked_at_switch > 0, (acked_at_switch, len(writer.acked), writer.errors[:5])
    on_green = redis.Redis(host=REDIS_GREEN, port=REDIS_PORT, password=LAB_PASSWORD)
    values = on_green.mget(writer.acked)
    missing = [key for key, value in zip(writer.acked, values, strict=True) if value is None]
    assert missing == [], f"{len(missing)} of {len(writer.acked)} acknowledged writes missing on green; errors {writer.errors[:5]}"
    assert len(on_green.keys(f"{writer.prefix}*")) == len(writer.acked)
    # through HAProxy a new connection reaches green, the primary (the same server: its run_id)
    via_haproxy = redis.Redis(host=HAPROXY_ADDRESS, port=HAPROXY_REDIS, password=LAB_PASSWORD)
    assert via_haproxy.info("server")["run_id"] == on_green.info("server")["run_id"]
    # a second run changes nothing
    again = switch_redis_to("green")
    assert again.changed("localhost") == 0, again.changed_tasks()
    on_green.delete(*writer.acked)


def test_redis_switchover_refuses_an_haproxy_it_cannot_reach(phase1):
    """lb-1 is another host (SSH): without its TCP runtime API the one run, on the controller, could
    only open a unix socket path there - the play stops naming the host before anything changes."""
    run = run_playbook("redis_switchover.yml", extravars={"redis_switchover_to": "green", "haproxy_runtime_api_address": ""})
    assert run.status == "failed"
    assert "HAProxy host lb-1 is reached over ssh and has no haproxy_runtime_api_address" in run.stdout
    assert "Nothing was changed." in run.stdout
    assert role(REDIS_BLUE) == "master" and role(REDIS_GREEN) == "slave"


def test_redis_switchover_refuses_an_unknown_side(phase1):
    run = run_playbook("redis_switchover.yml", extravars={"redis_switchover_to": "purple"})
    assert run.status == "failed"
    assert "redis_switchover_to is purple: give green (blue -> green) or blue (back). Nothing was changed." in run.stdout
    assert role(REDIS_BLUE) == "master"
