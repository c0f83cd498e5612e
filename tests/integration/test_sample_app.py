"""The lab's sample HTTP application (roles/sample_app: blue :18081, green :18082) behind the lab's real
HAProxy (HTTP :8080, backend app: app1 blue, app2 green) and playbooks/shift_app.yml moving its traffic
in gated steps with haproxy_shift, under a load of requests through HAProxy. Faults are injected through
the instances' fault files; the fixture puts the weights (app1 100, app2 0) and the faults back."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime
from tests.lab import (
    HAPROXY_ADDRESS,
    HAPROXY_HOST,
    HAPROXY_HTTP,
    HAPROXY_SOCKET,
    LAB_DB_ADDRESS,
    SHIFT_BACK,
    SHIFT_FORWARD,
    Clients,
    converged_again,
    gate_breached_told,
    run_playbook,
    webhook_receiver,
)

SOCKET = HAPROXY_SOCKET
BACKEND = "app"
FRONTEND = f"http://{HAPROXY_ADDRESS}:{HAPROXY_HTTP}"  # inventories/lab haproxy_http_bind (lb-1)
APP = f"http://{LAB_DB_ADDRESS}"  # the instances listen on lab-db's address, HAProxy reaches them over TCP
INSTANCES = {"blue": 18081, "green": 18082}  # inventories/lab group_vars/sample_app_servers.yml
FAULTS = Path("/var/lib/zerodowntime-sample-app")  # sample_app_fault_dir: <instance>.json
SAMPLE_APP_PLAY = [
    {
        "name": "Provision the sample application",
        "hosts": "sample_app_servers",
        "become": True,
        "roles": [{"role": "zerodowntime.migration.sample_app"}],
    }
]
# small holds so that a shift of five steps takes seconds (the inventory's: 60 s a step)
QUICK = {"shift_app_hold": 1.5, "shift_app_interval": 0.25, "shift_app_min_requests": 10}
SHIFT_FAILED = "Stop on the shift's failure"  # roles/haproxy tasks/shift_gated.yml, after the breach is told


def get(url: str) -> tuple[int, dict]:
    """One GET: the status and the JSON body (status 0 when no HTTP answer came)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - http:// URLs built here
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


class Load(Clients):
    """Clients sending GET / through HAProxy's HTTP frontend until stopped; counts the answers
    by (status, instance)."""

    def __init__(self, clients: int = 4):
        self.answers: Counter = Counter()
        super().__init__(clients, "load")

    def run(self):
        while not self.stop.is_set():
            status, body = get(f"{FRONTEND}/")
            with self.lock:
                self.answers[(status, body.get("instance"))] += 1
            time.sleep(0.005)

    def statuses(self) -> set[int]:
        return {status for status, _instance in self.answers}

    def instances(self) -> set[str]:
        return {instance for (status, instance) in self.answers if status == 200}


def weights() -> dict[str, int]:
    return {row["srv_name"]: row["srv_uweight"] for row in runtime.servers_state(SOCKET, BACKEND)}


def wait_up(*servers: str, timeout: float = 30) -> None:
    """Until HAProxy's /health checks see the servers up (rise 2, inter 2s)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {row["srv_name"]: row for row in runtime.servers_state(SOCKET, BACKEND)}
        if all(rows[name]["srv_op_state"] == runtime.RUNNING for name in servers):
            return
        assert time.monotonic() < deadline, {name: rows[name]["srv_op_state"] for name in servers}
        time.sleep(0.5)


def fault(instance: str, **settings) -> None:
    (FAULTS / f"{instance}.json").write_text(json.dumps(settings))


def clear_faults() -> None:
    for instance in INSTANCES:
        (FAULTS / f"{instance}.json").unlink(missing_ok=True)


def back_to_start() -> None:
    """No fault, app1 takes every new request (weights as haproxy.cfg says), both servers ready."""
    clear_faults()
    for command in (
        f"set server {BACKEND}/app1 state ready",
        f"set server {BACKEND}/app2 state ready",
        f"set weight {BACKEND}/app1 100",
        f"set weight {BACKEND}/app2 0",
    ):
        assert runtime.command(SOCKET, command, 5).strip() == "", command


def shift_app(percent: int, check: bool = False, **extravars):
    return run_playbook(
        "shift_app.yml", extravars={**QUICK, **extravars, "green_app_percent": percent}, cmdline="--check" if check else None
    )


@pytest.fixture(scope="module")
def sample_app(lab):
    """The role converged (both instances answer), HAProxy's app backend at its start; afterwards the
    weights and the faults go back, whatever a test left."""
    run = run_playbook(SAMPLE_APP_PLAY)
    assert run.status == "successful", run.stdout
    back_to_start()
    try:
        wait_up("app1", "app2")
        yield run
    finally:
        back_to_start()


@pytest.fixture()
def at_start(sample_app):
    back_to_start()
    wait_up("app1", "app2")
    yield
    back_to_start()


def test_instances_answer_with_their_name_and_a_second_converge_changes_nothing(sample_app):
    for instance, port in INSTANCES.items():
        assert get(f"{APP}:{port}/health") == (200, {"instance": instance, "status": "ok"})
        status, body = get(f"{APP}:{port}/")
        assert (status, body["instance"], body["path"]) == (200, instance, "/"), body
    again = converged_again(sample_app, SAMPLE_APP_PLAY)
    assert again.status == "successful", again.stdout
    assert again.changed() == 0, again.changes()


def test_site_with_the_sample_apps_tag_converges_it_alone(sample_app):
    """README: `ansible-playbook playbooks/site.yml --tags sample_app` provisions it alone. The tags are
    on the plays' roles: a play tagged otherwise gathered no facts under --tags, yet its role's
    argument check (tagged always) ran and read them, which stopped the run at the first play."""
    run = run_playbook("site.yml", cmdline="--tags sample_app")
    assert run.status == "successful", run.stdout
    assert run.changed() == 0, run.changes()
    roles_that_ran_tasks = {
        event["event_data"].get("role")
        for event in run.events
        if event.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_skipped")
        and event["event_data"].get("task_action") not in ("gather_facts", "ansible.builtin.validate_argument_spec")
    }
    assert roles_that_ran_tasks == {"sample_app"}, roles_that_ran_tasks


def test_a_fault_file_makes_an_instance_misbehave_until_it_is_removed(at_start):
    """green.json error_share 0.2: exactly every 5th request answers 500 (/health stays 200), delay_ms
    slows every request; without the file every answer is 200 again."""
    green = f"{APP}:{INSTANCES['green']}"
    fault("green", error_share=0.2, delay_ms=50)
    started = time.monotonic()
    statuses = Counter(get(f"{green}/")[0] for _request in range(20))
    took = time.monotonic() - started
    assert statuses == {200: 16, 500: 4}, statuses
    assert took >= 20 * 0.05, took
    assert get(f"{green}/health")[0] == 200
    assert get(f"{APP}:{INSTANCES['blue']}/")[0] == 200  # blue reads its own file

    clear_faults()
    assert Counter(get(f"{green}/")[0] for _request in range(10)) == {200: 10}


def test_healthy_shift_to_green_under_load_then_nothing_to_do(at_start):
    planned = shift_app(100, check=True)
    assert planned.status == "successful", planned.stdout
    [plan] = planned.task_results(SHIFT_FORWARD)
    assert plan["changed"] and plan["plan"] == [10, 25, 50, 75, 100], plan
    assert weights() == {"app1": 100, "app2": 0}  # check mode changed nothing

    with Load() as load:
        run = shift_app(100)
    assert run.status == "successful", run.stdout
    [moved] = run.task_results(SHIFT_FORWARD)
    assert [step["percent"] for step in moved["steps"]] == [10, 25, 50, 75, 100]
    assert all(step["breached"] is None for step in moved["steps"]), moved["steps"]
    assert all(step["new"]["requests"] >= QUICK["shift_app_min_requests"] for step in moved["steps"]), moved["steps"]
    assert moved["steps"][3]["new"]["requests"] > moved["steps"][3]["old"]["requests"]  # 75 %: green took most
    assert weights() == {"app1": 0, "app2": 100}
    assert load.statuses() == {200}, load.answers
    assert load.instances() == {"blue", "green"}, load.answers
    assert {get(f"{FRONTEND}/")[1]["instance"] for _request in range(10)} == {"green"}

    again = shift_app(100)
    assert again.status == "successful", again.stdout
    assert again.changed(HAPROXY_HOST) == 0, again.changes()
    unchanged = shift_app(0, check=True, shift_app_steps=[])
    assert unchanged.status == "successful", unchanged.stdout
    assert weights() == {"app1": 0, "app2": 100}

    # back in one step (shift_app_steps: []), gated on blue alone
    back = shift_app(0, shift_app_steps=[])
    assert back.status == "successful", back.stdout
    [moved] = back.task_results(SHIFT_BACK)
    assert moved["plan"] == [100] and moved["weights"] == {"app1": 100, "app2": 0}, moved
    assert weights() == {"app1": 100, "app2": 0}


def test_green_answering_500s_stops_the_shift_at_the_breach_and_rolls_back(at_start):
    """Green at 10 % and healthy; then 20 % of its answers are 500: the shift toward 100 % breaches
    max_5xx_share at its first step (25 %), within the hold, and the weights go back to 10 %. The
    breach reaches the webhook configured (migration_notify_webhooks) as one gate_breached event,
    Slack-compatible, naming the backend, the step, the metric, its value and the gate; the healthy
    first shift told it nothing. The play fails with the shift's message."""
    with Load() as load, webhook_receiver() as (url, taken):
        hooks = {"migration_name": "zdm-shift", "migration_notify_webhooks": [{"name": "oncall", "url": url}]}
        first = shift_app(10, shift_app_steps=[10], **hooks)
        assert first.status == "successful", first.stdout
        assert weights() == {"app1": 90, "app2": 10}
        assert taken == []
        fault("green", error_share=0.2)
        started = time.monotonic()
        run = shift_app(100, shift_app_steps=[10, 25, 50, 100], shift_app_hold=20, shift_app_gates={"max_5xx_share": 0.05}, **hooks)
        took = time.monotonic() - started
    assert run.status == "failed", run.stdout
    [result] = run.task_results(SHIFT_FORWARD)
    assert result["failed"] and result["plan"] == [25, 50, 100] and result["start_percent"] == 10, result
    breached = result["breached"]
    assert (breached["metric"], breached["gate"], breached["limit"], breached["step"]) == ("hrsp_5xx_share", "max_5xx_share", 0.05, 25)
    assert 0.1 <= breached["value"] <= 0.3, breached
    assert "hrsp_5xx_share" in result["msg"] and "max_5xx_share 0.05" in result["msg"] and str(breached["value"]) in result["msg"]
    assert result["rolled_back_to"] == 10 and weights() == {"app1": 90, "app2": 10}
    assert took < 20, f"the breach was not caught before the hold ended ({took:.1f} s)"
    # the clients saw green's 500s, only green's
    assert {instance for (status, instance) in load.answers if status == 500} == {"green"}, load.answers
    # the play failed with the shift's message, after telling the webhook once
    [stopped] = run.task_results(SHIFT_FAILED)
    assert stopped["failed"] and stopped["msg"] == result["msg"], stopped
    event, fields = gate_breached_told(taken, "zdm-shift", "traffic_shift")
    details = event["details"]
    assert details == dict(breached, backend=BACKEND, rolled_back_to=10), details  # step 25, metric, value, gate, limit, server
    assert "hrsp_5xx_share" in event["summary"] and "max_5xx_share" in event["summary"] and "25 %" in event["summary"], event
    assert event["summary"].endswith("new requests back to 10 %"), event
    # the attachment's fields carry the figures
    assert {key: fields[key] for key in ("metric", "gate", "step", "backend")} == {
        "metric": "hrsp_5xx_share",
        "gate": "max_5xx_share",
        "step": "25",
        "backend": BACKEND,
    }, fields
