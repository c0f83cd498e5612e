"""The lab's first hosts reached over SSH (issue 14): roles/lab_ssh's sshd on 127.0.0.2-4, the
lab's key, host keys checked (inventories/lab-ssh). Modules run there over SSH; a host that
cannot be reached, refuses the key or has no Python stops the play before anything changes on
the others; the switchover's guardian undoes a pause whose SSH connection was cut."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.test_pg_switchover import (  # pylint: disable=unused-import
    FORWARD,
    Writers,
    lab_pair,  # pylint: disable=unused-import # noqa: F401 - the fixture `pair` builds on
    readonly,
    rows_missing,
    subscriptions,
)
from tests.integration.test_pg_switchover_guardian import (  # pylint: disable=unused-import
    MARGIN,
    TIMEOUT,
    guardian_log,
    interrupt,
    pair,  # pylint: disable=unused-import # noqa: F401 - a fixture
)
from tests.lab import (  # pylint: disable=unused-import
    BLUE,
    LAB_SSH_INVENTORY,
    connect,
    quick_worker_starts,  # pylint: disable=unused-import # noqa: F401 - the fixture `pair` builds on
    run_module,
    run_playbook,
)

INVENTORY = yaml.safe_load((Path(LAB_SSH_INVENTORY) / "hosts.yml").read_text())
SETTINGS = yaml.safe_load((Path(LAB_SSH_INVENTORY) / "group_vars" / "all.yml").read_text())
HOSTS = INVENTORY["all"]["hosts"]
CLOSED = "127.0.0.250"  # a loopback address where nothing listens on port 22


def servers_seen(run, task: str) -> list[str]:
    """The server address of SSH_CONNECTION (client address, client port, server address, server
    port) printed by each result of `task`."""
    return [
        e["event_data"]["res"]["stdout"].split()[2]
        for e in run.events
        if e.get("event") == "runner_on_ok" and e["event_data"].get("task") == task
    ]


def test_every_ssh_lab_host_is_served_by_the_lab_sshd():
    assert {host["ansible_host"] for host in HOSTS.values()} <= set(SETTINGS["lab_ssh_addresses"])


def test_a_module_runs_over_ssh_and_delegates_to_another_ssh_host(lab_ssh):
    with connect(BLUE, login_db="postgres") as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    play = [
        {
            "name": "over SSH",
            "hosts": "lab-ssh-1",
            "gather_facts": False,
            "tasks": [
                {"name": "where", "ansible.builtin.command": "printenv SSH_CONNECTION", "changed_when": False},
                {
                    "name": "server info",
                    "zerodowntime.migration.pg_server_info": {k: v for k, v in BLUE.items() if k != "login_db"},
                    "delegate_to": "lab-ssh-2",
                    "register": "info",
                },
                {"name": "where", "ansible.builtin.command": "printenv SSH_CONNECTION", "delegate_to": "lab-ssh-3", "changed_when": False},
            ],
        }
    ]
    run = run_playbook(play, inventory=LAB_SSH_INVENTORY)
    assert run.status == "successful", run.stdout
    assert servers_seen(run, "where") == ["127.0.0.2", "127.0.0.4"], run.stdout  # each host's own address
    (info,) = run.task_results("server info")
    assert not info["failed"], info
    assert str(info["server_version_num"]) == version and info["in_recovery"] is False, info

    command = {"cmd": "printenv SSH_CONNECTION"}
    module_run, result = run_module("ansible.builtin.command", command, host="lab-ssh-3", inventory=LAB_SSH_INVENTORY)
    assert result["stdout"].split()[2:] == ["127.0.0.4", "22"], module_run.stdout

    # roles/lab_ssh's SetEnv SHLVL=1: the login shell sshd starts counts as nested, so Debian's bash
    # skips root's ~/.bashrc (without it a module sees SHLVL 0: bash counted 1, sh -c counted down)
    module_run, result = run_module("ansible.builtin.command", {"cmd": "printenv SHLVL"}, host="lab-ssh-3", inventory=LAB_SSH_INVENTORY)
    assert int(result["stdout"]) >= 1, module_run.stdout


BAD_HOSTS = {
    "unreachable": ({"ansible_host": CLOSED}, "Connection refused"),
    # ansible_ssh_args without ControlMaster/ControlPersist: a master connection still open to
    # 127.0.0.4 (ansible's ControlPersist keeps one 60 s) would carry this run without any key.
    "wrong key": (
        {"ansible_host": "127.0.0.4", "ansible_ssh_private_key_file": "{{ wrong_key }}", "ansible_ssh_args": "-C -o ControlMaster=no"},
        "Permission denied (publickey)",
    ),
    "no python": (
        {"ansible_host": "127.0.0.4", "ansible_python_interpreter": "/nonexistent/bin/python3"},
        "/nonexistent/bin/python3: not found",
    ),
}


@pytest.mark.parametrize("case", BAD_HOSTS)
def test_a_bad_host_stops_the_play_at_its_first_task_and_nothing_changes_on_the_others(lab_ssh, case, tmp_path):
    variables, cause = BAD_HOSTS[case]
    if case == "unreachable":
        assert subprocess.run(["ssh-keyscan", "-T", "2", CLOSED], capture_output=True, check=False).stdout == b"", "port 22 answers"
    wrong_key = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    inventory = yaml.safe_load(yaml.safe_dump(INVENTORY))
    inventory["all"]["vars"]["wrong_key"] = str(wrong_key)
    inventory["all"]["hosts"] = {"lab-ssh-1": HOSTS["lab-ssh-1"], "lab-ssh-2": HOSTS["lab-ssh-2"], "lab-bad": variables}
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "inventory" / "group_vars").mkdir()
    (tmp_path / "inventory" / "group_vars" / "all.yml").write_text(yaml.safe_dump(SETTINGS))
    markers = tmp_path / "markers"
    markers.mkdir()
    play = [
        {
            "name": "a phase on three hosts",
            "hosts": "all",
            "gather_facts": False,
            "any_errors_fatal": True,
            "tasks": [
                {"name": "reach every host", "ansible.builtin.ping": {}},
                {
                    "name": "change something",
                    "ansible.builtin.file": {"path": f"{markers}/{{{{ inventory_hostname }}}}", "state": "touch", "mode": "0644"},
                },
            ],
        }
    ]
    run = run_playbook(play, inventory=str(tmp_path / "inventory"))
    assert run.status == "failed", run.stdout
    stops = [
        event["event_data"]
        for event in run.events
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable") and not event["event_data"].get("ignore_errors")
    ]
    assert [(stop["host"], stop["task"]) for stop in stops] == [("lab-bad", "reach every host")], run.stdout
    res = stops[0]["res"]
    assert cause in str(res.get("msg", "")) + str(res.get("module_stderr", "")), res
    assert "lab-bad" in run.stdout and cause in run.stdout, run.stdout
    reached_hosts = [
        e["event_data"]["host"]
        for e in run.events
        if e.get("event") == "runner_on_ok" and e["event_data"].get("task") == "reach every host"
    ]
    assert sorted(reached_hosts) == ["lab-ssh-1", "lab-ssh-2"], run.stdout
    assert list(markers.iterdir()) == [], "a task after the failure ran"
    assert "change something" not in run.stdout


@pytest.mark.parametrize("pipelining", [False, True], ids=["tty", "pipelining"])
@pytest.mark.parametrize("step", ["freeze_source", "wait_for_catch_up"])
def test_the_ssh_connection_cut_inside_the_pause_ends_the_run_on_the_host(lab_ssh, pair, step, pipelining, tmp_path, monkeypatch):  # noqa: F811 # pylint: disable=redefined-outer-name
    """pg_switchover runs on lab-ssh-1 over SSH (the pooler's host in production); the SSH
    connection is cut (its sshd processes killed) while the write pause is held after `step`.
    Either way the run ends on the host, bounded, never half-way, and no write is lost:
    - without pipelining ansible gives the module a terminal (ssh -tt), whose hangup kills it: the
      guardian undoes the run (the pools resume on blue);
    - with pipelining (the collection's ansible.cfg) the module has no terminal and gets no SIGHUP:
      it does not depend on the connection and completes the switchover (the pools resume on green)."""
    monkeypatch.setenv("ANSIBLE_PIPELINING", str(pipelining))
    with Writers(pair["bouncers"][1]["port"], count=2, first=70) as writers:
        outcome = interrupt(pair, "blue_to_green", step, "ssh", tmp_path, host="lab-ssh-1", inventory=LAB_SSH_INVENTORY)
    final, servers, flowing_after, returncode = (outcome[key] for key in ("journal", "servers", "flowing_after", "returncode"))
    context = f"connection cut after {step}: {final}, guardian log {guardian_log(pair)}"
    assert returncode != 0, context  # the controller saw the host fail
    assert writers.errors == [], context
    if not pipelining:
        assert final["state"] == "undone" and final["undo_by"] == "guardian", context
        assert "process ended" in final["reason"], context
        assert servers == ["blue", "blue"] and flowing_after < TIMEOUT + MARGIN, (servers, flowing_after, context)
        assert readonly(pair["blue"]) == "off" and subscriptions(pair["green"]) == {FORWARD: True}, context
        assert rows_missing(pair["blue"], writers.committed) == set()
    else:
        assert final["state"] == "committed" and "undo_by" not in final, context
        assert servers == ["green", "green"] and flowing_after < TIMEOUT + MARGIN, (servers, flowing_after, context)
        assert readonly(pair["green"]) == "off", context
        assert rows_missing(pair["green"], writers.committed) == set()
