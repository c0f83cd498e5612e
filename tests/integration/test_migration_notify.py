"""zerodowntime.migration.migration_notify against a webhook receiver the test runs on loopback and
the lab's Alertmanager (monitor-1 127.0.0.41:9093, started by the monitoring role); and the migration role's phase_state,
which tells the watchers only of a recorded change."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.lab import ALERTMANAGER_URL, BLUE, LAB_PASSWORD, free_port, run_module, run_playbook, scratch_database
from tests.lab import WEBHOOK_TOKEN as TOKEN
from tests.lab import webhook_receiver as receiver

MODULE = "zerodowntime.migration.migration_notify"
ALERTMANAGER = ALERTMANAGER_URL


def alerts(migration: str) -> list[dict]:
    query = urllib.parse.urlencode({"filter": f'migration="{migration}"'})
    with urllib.request.urlopen(f"{ALERTMANAGER}/api/v2/alerts?{query}", timeout=5) as response:  # noqa: S310 (loopback)
        return json.load(response)


def args(**extra) -> dict:
    return dict({"migration": "zdm-notify-" + uuid.uuid4().hex[:8], "phase": "phase5_cutover", "event": "failed"}, **extra)


def test_an_event_reaches_a_webhook_and_alertmanager(monitoring):
    with receiver() as (url, taken):
        given = args(details={"error": "lag 12 MB above the bound"}, alert_labels={"team": "dba"})
        given.update(webhooks=[{"name": "oncall", "url": url, "headers": {"X-Team": "dba"}}])
        given.update(alertmanagers=[{"name": "lab-alertmanager", "url": ALERTMANAGER}])
        run, result = run_module(MODULE, given)
    assert result["failed"] is False, result.get("msg")
    assert result["changed"] is True
    assert [(d["kind"], d["name"]) for d in result["delivered"]] == [("webhook", "oncall"), ("alertmanager", "lab-alertmanager")]
    assert result["undelivered"] == []
    assert len(taken) == 1 and taken[0]["path"] == f"/services/{TOKEN}" and taken[0]["headers"]["X-Team"] == "dba"
    body = taken[0]["body"]
    assert body["text"] == f"[{given['migration']}] phase5_cutover failed"
    assert body["attachments"][0]["color"] == "#a30200"
    assert body["attachments"][0]["fields"] == [{"title": "error", "value": "lag 12 MB above the bound", "short": True}]
    assert body["event"]["severity"] == "critical" and body["event"]["details"] == {"error": "lag 12 MB above the bound"}
    active = alerts(given["migration"])
    assert len(active) == 1, active
    assert active[0]["labels"] == {
        "alertname": "ZerodowntimeMigrationEvent",
        "migration": given["migration"],
        "phase": "phase5_cutover",
        "event": "failed",
        "severity": "critical",
        "team": "dba",
    }
    assert active[0]["annotations"]["summary"] == "phase5_cutover failed"
    # The URL's token is a secret: nowhere in the output.
    assert TOKEN not in run.stdout and TOKEN not in json.dumps(result)


def test_check_mode_posts_nothing_and_diff_names_the_targets(monitoring):
    with receiver() as (url, taken):
        given = args(event="succeeded", webhooks=[{"name": "oncall", "url": url}])
        given["alertmanagers"] = [{"name": "lab-alertmanager", "url": ALERTMANAGER}]
        result = run_module(MODULE, given, check=True, diff=True)[1]
    assert result["failed"] is False, result.get("msg")
    assert taken == []
    assert alerts(given["migration"]) == []
    assert result["would_deliver"] == ["oncall", "lab-alertmanager"] and result["delivered"] == []
    assert result["diff"]["after"] == "webhook oncall: phase5_cutover succeeded\nalertmanager lab-alertmanager: phase5_cutover succeeded\n"
    assert result["alerts"][0]["labels"]["severity"] == "info"


def test_a_receiver_that_answers_503_is_tried_again():
    with receiver(statuses=(503, 503)) as (url, taken):
        result = run_module(MODULE, args(webhooks=[{"name": "flaky", "url": url}]))[1]
    assert result["failed"] is False, result.get("msg")
    assert len(taken) == 3
    assert result["delivered"] == [{"kind": "webhook", "name": "flaky", "status": 200, "attempts": 3}]


def test_a_404_fails_at_once_naming_the_target_not_its_url():
    with receiver(statuses=(404,)) as (url, taken):
        run, result = run_module(MODULE, args(webhooks=[{"name": "moved", "url": url}]))
    assert result["failed"] is True
    assert len(taken) == 1
    assert "webhook 'moved': HTTP 404 after 1 attempt(s): check its url and headers" in result["msg"]
    assert result["changed"] is False
    assert TOKEN not in run.stdout and TOKEN not in json.dumps(result)


def test_an_unreachable_receiver_fails_within_the_timeout_or_warns_when_told():
    url = f"http://127.0.0.1:{free_port()}/hook"
    started = time.monotonic()
    result = run_module(MODULE, args(webhooks=[{"name": "down", "url": url}], timeout=1.5))[1]
    assert result["failed"] is True
    assert "webhook 'down'" in result["msg"] and "check that the receiver runs" in result["msg"]
    assert result["undelivered"][0]["attempts"] > 1
    warned = run_module(MODULE, args(webhooks=[{"name": "down", "url": url}], timeout=0.5, fail_on_error=False))[1]
    assert warned["failed"] is False and warned["changed"] is False
    assert any("not delivered to webhook 'down'" in warning for warning in warned["warnings"])
    assert time.monotonic() - started < 30  # two module runs, each bounded by its timeout


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"webhooks": [{"name": "x", "url": "ftp://127.0.0.1/hook"}]}, "webhook 'x': its url must start with http:// or https://"),
        (
            {"webhooks": [{"name": "x", "url": "http://127.0.0.1:9/a"}], "alertmanagers": [{"name": "x", "url": ALERTMANAGER}]},
            "notification targets must have distinct names",
        ),
        ({}, "nothing to notify: give at least one of webhooks or alertmanagers"),
        ({"event": "exploded", "webhooks": [{"name": "x", "url": "http://127.0.0.1:9/a"}]}, "value of event must be one of"),
    ],
)
def test_bad_input_is_named_and_nothing_is_sent(given, message):
    result = run_module(MODULE, dict(args(), **given))[1]
    assert result["failed"] is True
    assert message in result["msg"]


def phase_state_vars(db: str, migration: str, webhook_url: str) -> dict:
    """The role's phase_state on scratch database `db` of blue, telling one webhook."""
    return {
        "migration_state_db": {k: v for k, v in dict(BLUE, login_db=db).items() if k != "login_password"},
        "migration_password": LAB_PASSWORD,
        "migration_phases": ["phase1_infra"],
        "migration_name": migration,
        "migration_notify_webhooks": [{"name": "oncall", "url": webhook_url}],
    }


def test_phase_state_tells_only_a_recorded_change(lab):
    """The role's phase_state notifies when migration_state changed something: starting a phase
    tells the watchers, starting it again while it runs (nothing recorded) tells nobody."""
    db = "zdm_notify_test"
    with scratch_database(BLUE, db), receiver() as (url, taken):
        extravars = phase_state_vars(db, "zdm-notify-role", url)
        play = [
            {
                "name": "phase_state under test",
                "hosts": "lab-db",
                "gather_facts": False,
                "tasks": [
                    {
                        "ansible.builtin.include_role": {"name": "zerodowntime.migration.migration", "tasks_from": "phase_state"},
                        "vars": {"phase_name": "phase1_infra", "phase_event": "started"},
                    }
                ],
            }
        ]
        first = run_playbook(play, extravars=extravars)
        assert first.status == "successful", first.stdout
        assert [request["body"]["event"]["event"] for request in taken] == ["started"]
        assert taken[0]["body"]["text"] == "[zdm-notify-role] phase1_infra started"
        again = run_playbook(play, extravars=extravars)
        assert again.status == "successful", again.stdout
        assert len(taken) == 1, taken
        # rollback.yml records the phases it undid as failed with rolled_back: told as rolled_back.
        play[0]["tasks"][0]["vars"] = {"phase_name": "phase1_infra", "phase_event": "failed", "phase_details": {"rolled_back": True}}
        rolled_back = run_playbook(play, extravars=extravars)
        assert rolled_back.status == "successful", rolled_back.stdout
        assert [request["body"]["event"]["event"] for request in taken] == ["started", "rolled_back"]
        assert taken[1]["body"]["event"]["details"] == {"rolled_back": True}


def test_phase_state_rerun_of_a_succeeded_phase_keeps_its_figures(lab):
    """A phase re-run after it succeeded records nothing: the row keeps the figures of the run that
    did the work (phase 2's initial copy seconds, phase 5's write pause), and nobody is told."""
    db = "zdm_notify_rerun"
    with scratch_database(BLUE, db), receiver() as (url, taken):
        extravars = phase_state_vars(db, "zdm-notify-rerun", url)

        def run(seconds: float):
            tasks = [
                {
                    "ansible.builtin.include_role": {"name": "zerodowntime.migration.migration", "tasks_from": "phase_state"},
                    "vars": {"phase_name": "phase1_infra", "phase_event": event, "phase_details": details},
                }
                for event, details in (("started", {}), ("succeeded", {"initial_copy_seconds": seconds}))
            ]
            return run_playbook([{"name": "a phase run", "hosts": "lab-db", "gather_facts": False, "tasks": tasks}], extravars=extravars)

        first = run(12.5)
        assert first.status == "successful", first.stdout
        assert [task for task in first.changed_tasks() if task.startswith("Record")] == [
            "Record phase1_infra started",
            "Record phase1_infra succeeded",
        ]
        again = run(0.0)
        assert again.status == "successful", again.stdout
        assert again.changed("lab-db") == 0, again.changed_tasks()
        record = run_module(
            "zerodowntime.migration.migration_state", dict(BLUE, login_db=db, phases=["phase1_infra"], phase="phase1_infra", state="query")
        )[1]
        assert record["phase"]["status"] == "succeeded"
        assert record["phase"]["details"]["initial_copy_seconds"] == 12.5
        assert [request["body"]["event"]["event"] for request in taken] == ["started", "succeeded"]
