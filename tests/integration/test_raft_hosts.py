"""The Raft cluster across hosts: throwaway etcd members zs1, zs2, zs3, each on its own lab SSH
host (roles/lab_ssh: 127.0.0.2, 127.0.0.3, 127.0.0.4), reached over SSH like the lab's etcd1-3 and
converged by the real playbooks (cluster.yml, cluster_snapshot.yml, cluster_restore.yml) from a temporary inventory.
raft_bootstrap and raft_snapshot run with `member:` on each member's own host, one host at a time.

The members listen on the hosts' own addresses on one port pair (13379/13380: the same port on
every host, as on separate machines); data dirs in a temporary directory. The lab's etcd1-3 are
not touched; the members' init scripts, settings, logs and data go afterwards."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.lab import LAB_SSH_INVENTORY, etcd_api, etcd_get, etcd_put, run_module, run_playbook

BOOTSTRAP = "zerodowntime.migration.raft_bootstrap"
TOKEN = "zdm-test-etcd-hosts"
CLIENT_PORT, PEER_PORT = 13379, 13380
HOSTS = {"zs1": "127.0.0.2", "zs2": "127.0.0.3", "zs3": "127.0.0.4"}
NAMES = list(HOSTS)
SSH_SETTINGS = yaml.safe_load((Path(LAB_SSH_INVENTORY) / "hosts.yml").read_text())["all"]["vars"]
LAB_SSH_DIR = yaml.safe_load((Path(LAB_SSH_INVENTORY) / "group_vars" / "all.yml").read_text())["lab_ssh_dir"]


def url(name: str, port: int = CLIENT_PORT) -> str:
    return f"http://{HOSTS[name]}:{port}"


def service(name: str, action: str) -> subprocess.CompletedProcess:
    return subprocess.run([f"/etc/init.d/etcd-{name}", action], capture_output=True, text=True, check=False)


def api(name: str, path: str, body: dict) -> dict:
    return etcd_api(url(name), path, body)


def put(name: str, key: str, value: str) -> None:
    etcd_put(url(name), key, value)


def get(name: str, key: str) -> str | None:
    return etcd_get(url(name), key)


def by_host(run, task: str) -> dict[str, dict]:
    """The task's result on each host (event_data.res by event_data.host)."""
    return {
        event["event_data"]["host"]: dict(event["event_data"]["res"], failed=event["event"] == "runner_on_failed")
        for event in run.events
        if event.get("event") in ("runner_on_ok", "runner_on_failed") and event.get("event_data", {}).get("task") == task
    }


@pytest.fixture(scope="module")
def cluster(lab_ssh):
    """The temporary inventory (group cluster_nodes: zs1-3 over SSH) and the members' list."""
    root = Path(tempfile.mkdtemp(prefix="zdm-etcd-hosts-"))
    root.chmod(0o755)  # etcd runs as etcd and needs to reach its data dir
    ssh = {key: value.replace("{{ lab_ssh_dir }}", LAB_SSH_DIR) if isinstance(value, str) else value for key, value in SSH_SETTINGS.items()}
    inventory = root / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "cluster_nodes": {
                            "vars": dict(
                                ssh,
                                ansible_become=False,  # root already, as in the lab
                                cluster_node_listen_address="{{ ansible_host }}",
                                cluster_node_client_port=CLIENT_PORT,
                                cluster_node_peer_port=PEER_PORT,
                                cluster_node_data_dir=f"{root}/{{{{ inventory_hostname }}}}",
                                cluster_node_cluster_token=TOKEN,
                            ),
                            "hosts": {name: {"ansible_host": address} for name, address in HOSTS.items()},
                        }
                    }
                }
            }
        )
    )
    members = [
        {"name": name, "client_url": url(name), "peer_url": url(name, PEER_PORT), "data_dir": str(root / name), "service": f"etcd-{name}"}
        for name in NAMES
    ]
    try:
        yield {"inventory": str(inventory), "root": root, "members": members}
    finally:
        for name in NAMES:
            service(name, "stop")
            subprocess.run(["update-rc.d", "-f", f"etcd-{name}", "remove"], capture_output=True, check=False)
            for path in (f"/etc/init.d/etcd-{name}", f"/etc/etcd/{name}.env", f"/var/log/etcd/{name}.log"):
                Path(path).unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def bootstrapped(cluster):
    """playbooks/cluster.yml from nothing, then again."""
    first = run_playbook("cluster.yml", inventory=cluster["inventory"])
    assert first.status == "successful", first.stdout
    second = run_playbook("cluster.yml", inventory=cluster["inventory"])
    assert second.status == "successful", second.stdout
    return {"first": first, "second": second}


def members_play(cluster: dict, **options) -> list[dict]:
    """raft_bootstrap with member: over the members' hosts, one at a time, each printing the SSH
    connection it runs in first (SSH_CONNECTION: client address, port, server address, port)."""
    return [
        {
            "name": "each member on its own host",
            "hosts": "cluster_nodes",
            "gather_facts": False,
            "tasks": [
                {"name": "where", "ansible.builtin.command": "printenv SSH_CONNECTION", "changed_when": False},
                {
                    "name": "under test",
                    BOOTSTRAP: dict(
                        {"member": "{{ inventory_hostname }}", "members": cluster["members"], "cluster_token": TOKEN, "timeout": 120},
                        **options,
                    ),
                    "throttle": 1,
                    "ignore_errors": True,
                },
            ],
        }
    ]


def test_cluster_playbook_bootstraps_the_first_member_and_adds_each_other_on_its_own_host(bootstrapped):
    first, second = bootstrapped["first"], bootstrapped["second"]
    done = by_host(first, "Bootstrap the first member, add and start each other one on its host")
    assert {host: result["actions"] for host, result in done.items()} == {"zs1": ["bootstrap zs1"], "zs2": ["add zs2"], "zs3": ["add zs3"]}
    (status,) = second.task_results("Read each member's role and health")
    assert [member["name"] for member in status["members"]] == NAMES
    assert [member["client_urls"] for member in status["members"]] == [[url(name)] for name in NAMES]
    assert all(member["healthy"] for member in status["members"])
    assert sorted(member["role"] for member in status["members"]) == ["follower", "follower", "leader"]
    for name in NAMES:  # each answers on its own host's address, as a member of the one cluster
        assert format(int(api(name, "/v3/maintenance/status", {})["header"]["cluster_id"]), "x") == status["cluster_id"]
    assert [second.changed(host) for host in NAMES] == [0, 0, 0], second.changed_tasks()
    again = by_host(second, "Bootstrap the first member, add and start each other one on its host")
    assert all(result["actions"] == [] and not result["changed"] for result in again.values())


def test_a_stopped_member_is_started_again_on_its_own_host_over_ssh(bootstrapped, cluster):
    assert service("zs2", "stop").returncode == 0
    checked = run_playbook(members_play(cluster), inventory=cluster["inventory"], cmdline="--check")
    planned = {host: result["actions"] for host, result in by_host(checked, "under test").items()}
    assert planned == {"zs1": [], "zs2": ["start zs2"], "zs3": []}
    assert service("zs2", "status").returncode != 0  # check mode started nothing

    run = run_playbook(members_play(cluster), inventory=cluster["inventory"])
    assert run.status == "successful", run.stdout
    where = {host: result["stdout"].split()[2] for host, result in by_host(run, "where").items()}
    assert where == HOSTS  # every member's task ran over SSH on that member's own address
    results = by_host(run, "under test")
    assert not any(result["failed"] for result in results.values()), results
    assert {host: result["actions"] for host, result in results.items()} == {"zs1": [], "zs2": ["start zs2"], "zs3": []}
    assert all(member["healthy"] for member in results["zs3"]["members"])
    assert api("zs2", "/v3/maintenance/status", {})["header"]["member_id"]  # answers on 127.0.0.3 again


def test_a_member_whose_data_dir_was_moved_aside_is_rebuilt_on_its_host(bootstrapped, cluster):
    put("zs1", "zdm/before-rebuild", "replicated")
    assert service("zs3", "stop").returncode == 0
    data_dir = cluster["root"] / "zs3"
    data_dir.rename(cluster["root"] / "zs3.aside")
    run = run_playbook("cluster.yml", inventory=cluster["inventory"])
    assert run.status == "successful", run.stdout
    results = by_host(run, "Bootstrap the first member, add and start each other one on its host")
    assert {host: result["actions"] for host, result in results.items()} == {"zs1": [], "zs2": [], "zs3": ["remove zs3", "add zs3"]}
    assert get("zs3", "zdm/before-rebuild") == "replicated"  # a member again, with the cluster's data
    (status,) = run.task_results("Read each member's role and health")
    assert [member["name"] for member in status["members"]] == NAMES and all(member["healthy"] for member in status["members"])


def test_member_mode_refuses_a_name_not_in_the_list_and_a_join_before_the_first(cluster):
    unknown = run_module(BOOTSTRAP, {"member": "zs9", "members": cluster["members"], "cluster_token": TOKEN}, host="localhost")[1]
    assert unknown["failed"] and unknown["changed"] is False
    assert "member 'zs9' is not in members (zs1, zs2, zs3)" in unknown["msg"]
    nowhere = str(cluster["root"] / "empty")
    nothing = [
        dict(member, client_url=f"http://127.0.0.1:{13990 + n}", peer_url=f"http://127.0.0.1:{13995 + n}", data_dir=nowhere, service="none")
        for n, member in enumerate(cluster["members"])
    ]
    early = run_module(BOOTSTRAP, {"member": "zs2", "members": nothing, "cluster_token": TOKEN, "request_timeout": 2}, host="localhost")[1]
    assert early["failed"] and early["changed"] is False
    assert "no member answers and member zs2 has no data: there is no cluster to join yet" in early["msg"]
    assert "run for zs1 first" in early["msg"]


def save_snapshot(cluster: dict, path, cmdline: str | None = None):
    """playbooks/cluster_snapshot.yml on the throwaway members, saving to `path`."""
    return run_playbook("cluster_snapshot.yml", inventory=cluster["inventory"], extravars={"cluster_snapshot": str(path)}, cmdline=cmdline)


def test_the_snapshot_playbook_checks_creates_a_missing_directory_alone_and_needs_every_member(bootstrapped, cluster, tmp_path):
    shared = tmp_path / "shared"  # a directory there already (/tmp-like) keeps its mode
    shared.mkdir()
    shared.chmod(0o1777)
    run = save_snapshot(cluster, shared / "cluster.db")
    assert run.status == "successful", run.stdout
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and (shared / "cluster.db").is_file()

    missing = tmp_path / "backups" / "etcd"
    checked = save_snapshot(cluster, missing / "cluster.db", cmdline="--check")
    assert checked.status == "successful", checked.stdout
    assert not (tmp_path / "backups").exists()  # check mode made nothing
    run = save_snapshot(cluster, missing / "cluster.db")
    assert run.status == "successful", run.stdout
    assert stat.S_IMODE(missing.stat().st_mode) == 0o700 and (missing / "cluster.db").is_file()

    limited = save_snapshot(cluster, tmp_path / "limited.db", cmdline="--limit zs2")
    assert limited.status == "failed"
    assert "needs every host of cluster_nodes (zs1, zs2, zs3); this run has zs2" in limited.stdout
    assert not (tmp_path / "limited.db").exists()


SAVE = "Save the snapshot from the leader and verify it"  # playbooks/cluster_snapshot.yml
CHECK = "Check the snapshot and whether it must be restored (check mode, on the first member's host)"
RESTORE = "Restore into the first member, then add each other one on its host (first member first)"


@pytest.fixture(scope="module")
def restored(bootstrapped, cluster, tmp_path_factory):
    """A snapshot holding zdm/in-snapshot, saved by cluster_snapshot.yml (before zdm/after-snapshot
    was written), restored across the hosts by cluster_restore.yml, with what the cluster answered
    right after the restore. The re-run tests start from this restore: each leaves the cluster
    restored from this snapshot, as a restore across the hosts leaves it (one restore run for the
    module, not one per test)."""
    path = str(tmp_path_factory.mktemp("snapshot") / "cluster.db")
    put("zs1", "zdm/in-snapshot", "kept")
    saved = save_snapshot(cluster, path)
    assert saved.status == "successful", saved.stdout
    assert saved.changes_by_host() == {"zs1": 1}, saved.changes()  # the file, on the first member's host; no member touched
    [result] = saved.task_results(SAVE)
    assert result["source"] in NAMES and result["snapshot"]["revision"] > 0, result
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it holds every key of the cluster
    again = save_snapshot(cluster, path)
    assert again.status == "successful" and again.changed() == 0, again.changes()  # kept: no force
    put("zs2", "zdm/after-snapshot", "gone after the restore")

    run = run_playbook("cluster_restore.yml", inventory=cluster["inventory"], extravars={"cluster_snapshot": path})
    assert run.status == "successful", run.stdout
    assert by_host(run, RESTORE)["zs1"]["changed"]
    seen = {  # read at once, before any other run
        "cluster_id": format(int(api("zs3", "/v3/maintenance/status", {})["header"]["cluster_id"]), "x"),
        "keys": {name: (get(name, "zdm/in-snapshot"), get(name, "zdm/after-snapshot")) for name in NAMES},
    }
    moved = [aside for result in by_host(run, RESTORE).values() for aside in result["moved_aside"]]
    seen["moved_aside"] = {aside: Path(aside).is_dir() for aside in moved}
    return {"path": path, "run": run, "seen": seen}


def test_snapshot_restored_across_hosts_and_a_second_run_changes_nothing(restored, cluster):
    path, run, seen = restored["path"], restored["run"], restored["seen"]
    (plan,) = run.task_results(CHECK)
    assert plan["changed"] and plan["actions"][:2] == ["stop zs2", "stop zs3"]
    results = by_host(run, RESTORE)
    assert {host: result["actions"] for host, result in results.items()} == {
        "zs1": ["stop zs1", f"restore zs1 from {path}", "start zs1"],
        "zs2": ["stop zs2", "add zs2"],
        "zs3": ["stop zs3", "add zs3"],
    }
    assert [member["name"] for member in results["zs3"]["members"]] == NAMES
    assert all(member["healthy"] for member in results["zs3"]["members"]) and results["zs3"]["leader"]
    assert results["zs1"]["cluster_id"] == seen["cluster_id"]
    assert seen["keys"] == {name: ("kept", None) for name in NAMES}  # in the snapshot: kept; written after it: gone
    moved = [aside for result in results.values() for aside in result["moved_aside"]]
    assert len(moved) == 3 and all(seen["moved_aside"][aside] and Path(aside).parent == cluster["root"] for aside in moved)

    again = run_playbook("cluster_restore.yml", inventory=cluster["inventory"], extravars={"cluster_snapshot": path})
    assert again.status == "successful", again.stdout
    assert [again.changed(host) for host in NAMES] == [0, 0, 0], again.changed_tasks()
    unchanged = by_host(again, RESTORE)
    assert {host: result["actions"] for host, result in unchanged.items()} == {name: [] for name in NAMES}
    assert all(member["healthy"] for member in unchanged["zs3"]["members"])


def test_a_rerun_over_writes_made_since_the_restore_is_refused_and_force_restores(restored, cluster):
    path = restored["path"]
    put("zs2", "zdm/written-after-restore", "must survive a re-run")

    again = run_playbook("cluster_restore.yml", inventory=cluster["inventory"], extravars={"cluster_snapshot": path})
    assert again.status == "failed", again.stdout
    refused = by_host(again, CHECK)["zs1"]
    assert refused["failed"], refused
    assert "moved on since" in refused["msg"] and "revision" in refused["msg"] and path in refused["msg"], refused["msg"]
    assert "force: true" in refused["msg"] and "cluster_snapshot_force=true" in refused["msg"], refused["msg"]
    assert by_host(again, RESTORE) == {}  # nothing stopped, nothing restored
    for name in NAMES:
        assert get(name, "zdm/written-after-restore") == "must survive a re-run"

    forced = run_playbook(
        "cluster_restore.yml", inventory=cluster["inventory"], extravars={"cluster_snapshot": path, "cluster_snapshot_force": True}
    )
    assert forced.status == "successful", forced.stdout
    results = by_host(forced, RESTORE)
    assert f"restore zs1 from {path}" in results["zs1"]["actions"]
    assert all(member["healthy"] for member in results["zs3"]["members"]) and results["zs3"]["leader"]
    for name in NAMES:
        assert get(name, "zdm/in-snapshot") == "kept"
        assert get(name, "zdm/written-after-restore") is None


def test_a_rerun_after_a_member_was_left_out_completes_it_without_restoring_again(restored, cluster):
    """As after a run that failed once the cluster served writes again: zs3 is not in it (stopped,
    its data dir gone). The re-run restores nothing (zs1 changed: false), only zs3 joins, and the
    writes made since the restore stay."""
    path = restored["path"]  # restored from it (the fixture's restore, or the forced one of the test before)
    assert service("zs3", "stop").returncode == 0
    Path(cluster["root"] / "zs3").rename(cluster["root"] / "zs3.left-out")
    put("zs1", "zdm/written-while-zs3-out", "kept")

    again = run_playbook("cluster_restore.yml", inventory=cluster["inventory"], extravars={"cluster_snapshot": path})
    assert again.status == "successful", again.stdout
    (plan,) = again.task_results(CHECK)
    assert not plan["changed"] and plan["actions"] == [], plan
    results = by_host(again, RESTORE)
    assert not results["zs1"]["changed"] and results["zs1"]["actions"] == [], results["zs1"]
    assert not results["zs2"]["changed"] and results["zs3"]["changed"], results
    assert [member["name"] for member in results["zs3"]["members"]] == NAMES
    assert all(member["healthy"] for member in results["zs3"]["members"]) and results["zs3"]["leader"]
    for name in NAMES:
        assert get(name, "zdm/written-while-zs3-out") == "kept"
        assert get(name, "zdm/in-snapshot") == "kept"


def test_the_role_refuses_to_move_a_member_with_state_to_another_peer_url(bootstrapped, cluster):
    """As on a machine whose members were made on other addresses: the data dirs hold the old
    peer URLs. The role refuses before writing or restarting anything, naming the rebuild."""
    settings = {name: Path(f"/etc/etcd/{name}.env").read_text() for name in NAMES}
    run = run_playbook("cluster.yml", inventory=cluster["inventory"], extravars={"cluster_node_peer_port": PEER_PORT + 2})
    assert run.status == "failed"
    refused = by_host_prefix(run, "Refuse to move a member with state to another peer URL")
    assert sorted(refused) == NAMES and all(result["failed"] for result in refused.values())
    message = refused["zs2"]["msg"]
    assert f"holds the state of a cluster it joined with peer URL {url('zs2', PEER_PORT)}" in message
    assert f"while the inventory now gives {url('zs2', PEER_PORT + 2)}" in message
    assert "move each data dir aside" in message and "playbooks/cluster.yml" in message
    assert {name: Path(f"/etc/etcd/{name}.env").read_text() for name in NAMES} == settings
    assert all(api(name, "/v3/maintenance/status", {})["header"]["member_id"] for name in NAMES)  # not restarted away


def by_host_prefix(run, prefix: str) -> dict[str, dict]:
    """by_host() of the task whose name starts with `prefix`."""
    return {
        event["event_data"]["host"]: dict(event["event_data"]["res"], failed=event["event"] == "runner_on_failed")
        for event in run.events
        if event.get("event") in ("runner_on_ok", "runner_on_failed") and event.get("event_data", {}).get("task", "").startswith(prefix)
    }
