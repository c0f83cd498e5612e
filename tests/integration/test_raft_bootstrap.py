"""zerodowntime.migration.raft_bootstrap and raft_snapshot against real etcd 3.4 members, and
playbooks/cluster.yml on the lab's cluster (etcd1-3 on 127.0.0.2-4, ports 2379/2380, reached over
SSH; tests/integration/test_raft_hosts.py has the per-host runs on throwaway members).

Everything but the playbook test runs on throwaway members of the test's own, all on this host
(the modules without `member:`, every init script local): roles/cluster_node
converged from a temporary inventory (zt1..zt5 and zforeign on ports 12379, 12479, ... 12879,
data dirs in a temporary directory), so the lab's cluster is not touched. Their init scripts,
settings, logs and data go afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.lab import etcd_api, etcd_get, etcd_put, run_module, run_playbook

BOOTSTRAP = "zerodowntime.migration.raft_bootstrap"
SNAPSHOT = "zerodowntime.migration.raft_snapshot"
TOKEN = "zdm-test-etcd"
NAMES = ["zt1", "zt2", "zt3", "zt4", "zt5", "zforeign"]
LAB = ["etcd1", "etcd2", "etcd3"]


def client_port(name: str) -> int:
    # below Linux's ephemeral range (32768-60999): a port there can be taken by any client
    # connection on the machine in the moment before a member binds it ("address already in use")
    return 12379 + 100 * NAMES.index(name)


def init_script(name: str) -> str:
    return f"/etc/init.d/etcd-{name}"


def service(name: str, action: str) -> subprocess.CompletedProcess:
    return subprocess.run([init_script(name), action], capture_output=True, text=True, check=False)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def api(name: str, path: str, body: dict) -> dict:
    return etcd_api(f"http://127.0.0.1:{client_port(name)}", path, body)


def put(name: str, key: str, value: str) -> None:
    etcd_put(f"http://127.0.0.1:{client_port(name)}", key, value)


def get(name: str, key: str) -> str | None:
    return etcd_get(f"http://127.0.0.1:{client_port(name)}", key)


@pytest.fixture(scope="module")
def members():
    """Throwaway members made by roles/cluster_node (not started: none has joined a cluster)."""
    root = Path(tempfile.mkdtemp(prefix="zdm-etcd-"))
    root.chmod(0o755)  # etcd runs as etcd and needs to reach its data dir
    hosts = {
        name: {
            "cluster_node_client_port": client_port(name),
            "cluster_node_peer_port": client_port(name) + 1,
            "cluster_node_data_dir": str(root / name),
        }
        for name in NAMES
    }
    inventory = root / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                    "hosts": hosts,
                }
            }
        )
    )
    play = [{"name": "throwaway etcd members", "hosts": "all", "roles": [{"role": "zerodowntime.migration.cluster_node"}]}]
    try:
        run = run_playbook(play, inventory=str(inventory))
        assert run.status == "successful", run.stdout
        yield {
            name: {
                "name": name,
                "client_url": f"http://127.0.0.1:{client_port(name)}",
                "peer_url": f"http://127.0.0.1:{client_port(name) + 1}",
                "data_dir": str(root / name),
            }
            for name in NAMES
        }
    finally:
        for name in NAMES:
            service(name, "stop")
            subprocess.run(["update-rc.d", "-f", f"etcd-{name}", "remove"], capture_output=True, check=False)
            for path in (init_script(name), f"/etc/etcd/{name}.env", f"/var/log/etcd/{name}.log"):
                Path(path).unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def bootstrap(member_list: list[dict], check: bool = False, diff: bool = False, **options) -> dict:
    args = dict({"members": member_list, "cluster_token": TOKEN, "timeout": 120}, **options)
    return run_module(BOOTSTRAP, args, check=check, diff=diff, host="localhost")[1]


def snapshot(member_list: list[dict], check: bool = False, **options) -> dict:
    args = dict({"members": member_list, "cluster_token": TOKEN, "timeout": 120}, **options)
    return run_module(SNAPSHOT, args, check=check, host="localhost")[1]


def names(result: dict) -> list[str]:
    return [member["name"] for member in result["members"]]


@pytest.fixture(scope="module")
def trio(members):
    """zt1 bootstrapped alone, zt2 and zt3 added; check mode first. Returns the three results."""
    three = [members[name] for name in ("zt1", "zt2", "zt3")]
    checked = bootstrap(three, check=True)
    assert not checked["failed"], checked["msg"]
    assert not listening(client_port("zt1"))
    assert not Path(members["zt1"]["data_dir"], "member").exists()
    first = bootstrap(three)
    assert not first["failed"], first["msg"]
    second = bootstrap(three, diff=True)
    return {"members": three, "check": checked, "first": first, "second": second}


def test_fresh_bootstrap_of_three_from_the_first_member(trio):
    checked, first = trio["check"], trio["first"]
    assert checked["changed"] and checked["actions"] == ["bootstrap zt1", "add zt2", "add zt3"]
    assert first["changed"]
    assert first["actions"] == ["bootstrap zt1", "add zt2", "add zt3"]
    assert names(first) == ["zt1", "zt2", "zt3"]
    assert first["leader"] in ("zt1", "zt2", "zt3")
    assert sorted(member["role"] for member in first["members"]) == ["follower", "follower", "leader"]
    assert all(member["healthy"] for member in first["members"])
    assert first["raft_term"] >= 1 and first["raft_index"] > 0
    # one cluster, the one bootstrapped from zt1 with the token: every member reports its ID
    for name in ("zt1", "zt2", "zt3"):
        header = api(name, "/v3/maintenance/status", {})["header"]
        assert format(int(header["cluster_id"]), "x") == first["cluster_id"]


def test_second_run_changes_nothing_and_diff_shows_the_members(trio):
    second = trio["second"]
    assert not second["failed"], second["msg"]
    assert second["changed"] is False
    assert second["actions"] == []
    assert second["diff"]["before"] == second["diff"]["after"] == {"members": ["zt1", "zt2", "zt3"]}


def test_grow_to_five_as_learners_then_shrink_back_to_three(trio, members):
    five = trio["members"] + [members["zt4"], members["zt5"]]
    try:
        checked = bootstrap(five, check=True, learners=True)
        assert checked["changed"] and checked["actions"] == ["add zt4 as learner", "add zt5 as learner"]
        assert not listening(client_port("zt4"))
        assert bootstrap(trio["members"], check=True)["changed"] is False  # the three alone: nothing to do

        grown = bootstrap(five, learners=True, diff=True)
        assert not grown["failed"], grown["msg"]
        assert grown["actions"] == ["add zt4 as learner", "promote zt4", "add zt5 as learner", "promote zt5"]
        assert names(grown) == ["zt1", "zt2", "zt3", "zt4", "zt5"]
        assert not any(member["is_learner"] for member in grown["members"])
        assert all(member["healthy"] for member in grown["members"])
        assert grown["diff"]["before"]["members"] == ["zt1", "zt2", "zt3"]
        assert grown["diff"]["after"]["members"] == ["zt1", "zt2", "zt3", "zt4", "zt5"]
        assert bootstrap(five)["changed"] is False

        checked = bootstrap(trio["members"], check=True, prune=True)
        assert checked["actions"] == ["remove zt4", "remove zt5"]
        assert len(bootstrap(trio["members"], state="status")["members"]) == 5  # check mode removed nothing

        shrunk = bootstrap(trio["members"], prune=True)
        assert not shrunk["failed"], shrunk["msg"]
        assert shrunk["actions"] == ["remove zt4", "remove zt5"]
        assert names(shrunk) == ["zt1", "zt2", "zt3"]
        assert shrunk["leader"] in ("zt1", "zt2", "zt3")
        assert service("zt4", "status").returncode != 0 and service("zt5", "status").returncode != 0
        assert bootstrap(trio["members"], prune=True)["changed"] is False
    finally:
        for name in ("zt4", "zt5"):
            service(name, "stop")
            shutil.rmtree(Path(members[name]["data_dir"], "member"), ignore_errors=True)


def test_one_member_down_keeps_a_leader_and_takes_writes(trio):
    assert service("zt3", "stop").returncode == 0
    try:
        status = bootstrap(trio["members"], state="status")
        assert not status["failed"], status["msg"]
        assert status["quorum"] is True and status["leader"] in ("zt1", "zt2")
        assert {member["name"]: member["role"] for member in status["members"]}["zt3"] == "down"
        put("zt1", "zdm/one-down", "written")
        assert get("zt2", "zdm/one-down") == "written"
    finally:
        restarted = bootstrap(trio["members"])
    assert restarted["actions"] == ["start zt3"]
    assert all(member["healthy"] for member in restarted["members"])
    assert get("zt3", "zdm/one-down") == "written"


def test_two_members_down_is_a_clear_no_quorum_report_not_a_hang(trio):
    for name in ("zt2", "zt3"):
        assert service(name, "stop").returncode == 0
    try:
        started = time.monotonic()
        status = bootstrap(trio["members"], state="status", request_timeout=2)
        took = time.monotonic() - started
        assert status["failed"]
        assert status["msg"].startswith("no quorum: 1 of 3 voting members answer (zt1), a leader needs 2; down: zt2, zt3"), status["msg"]
        assert status["changed"] is False and status["quorum"] is False
        assert took < 60
    finally:
        restarted = bootstrap(trio["members"])
    assert restarted["actions"] == ["start zt2", "start zt3"]
    assert restarted["leader"] in ("zt1", "zt2", "zt3")


def test_a_member_of_another_cluster_is_refused_and_nothing_changes(trio, members):
    foreign = members["zforeign"]
    alone = bootstrap([foreign])
    try:
        assert alone["actions"] == ["bootstrap zforeign"]

        refused = bootstrap(trio["members"] + [foreign])
        assert refused["failed"] and refused["changed"] is False
        assert "member zforeign (http://127.0.0.1:12879) belongs to another cluster" in refused["msg"]
        assert "move its data dir" in refused["msg"] and refused["foreign_member"] == "zforeign"

        # a second bootstrap of the same nodes under another token: they belong to another cluster
        other = bootstrap(trio["members"], cluster_token="another-token")
        assert other["failed"] and other["changed"] is False
        assert "member zt1 (http://127.0.0.1:12379) belongs to another cluster" in other["msg"]

        # stopped, its data dir still says what it was: refused before any member add
        assert service("zforeign", "stop").returncode == 0
        stale = bootstrap(trio["members"] + [foreign])
        assert stale["failed"] and stale["changed"] is False
        assert f"its data dir {foreign['data_dir']} holds state" in stale["msg"]
        assert "move" in stale["msg"] and "aside" in stale["msg"]

        status = bootstrap(trio["members"], state="status")
        assert names(status) == ["zt1", "zt2", "zt3"]

        # everything stopped, zforeign listed first: the members with data are started, zt1 is
        # recognised as another cluster's than the one bootstrapped from zforeign, and every
        # member started is stopped again
        for name in ("zt1", "zt2", "zt3"):
            assert service(name, "stop").returncode == 0
        swapped = bootstrap([foreign, *trio["members"]], timeout=60)
        assert swapped["failed"] and swapped["changed"] is False
        assert "member zt1 (http://127.0.0.1:12379) belongs to another cluster" in swapped["msg"]
        assert all(service(name, "status").returncode != 0 for name in ("zforeign", "zt1", "zt2", "zt3"))
    finally:
        restarted = bootstrap(trio["members"])
        assert restarted["leader"], restarted.get("msg")
        service("zforeign", "stop")
        shutil.rmtree(Path(foreign["data_dir"], "member"), ignore_errors=True)


def test_bad_input_is_named_with_the_fix_and_changes_nothing(trio):
    nowhere = {"name": "nowhere", "client_url": "http://127.0.0.1:1", "peer_url": "http://127.0.0.1:2"}
    unreachable = bootstrap([nowhere], state="status", request_timeout=2)
    assert unreachable["failed"] and unreachable["changed"] is False
    assert "no member answers (nowhere http://127.0.0.1:1)" in unreachable["msg"]

    no_script = bootstrap([nowhere])
    assert no_script["failed"] and no_script["changed"] is False
    assert "no init script /etc/init.d/etcd-nowhere" in no_script["msg"] and "roles/cluster_node" in no_script["msg"]

    missing = bootstrap([{"name": "zt1", "client_url": "http://127.0.0.1:12379"}])
    assert missing["failed"] and "peer_url" in missing["msg"]

    scheme = bootstrap([dict(trio["members"][0], peer_url="127.0.0.1:12380")])
    assert scheme["failed"] and "peer_url '127.0.0.1:12380' is not a URL etcd can use" in scheme["msg"]

    twice = bootstrap([trio["members"][0], dict(trio["members"][1], name="zt1")])
    assert twice["failed"] and "members zt1 and zt1 have the same name" in twice["msg"]

    renamed = bootstrap([trio["members"][0], dict(trio["members"][1], name="zt2b", service="etcd-zt2")])
    assert renamed["failed"] and renamed["changed"] is False
    assert "the cluster knows peer URL http://127.0.0.1:12480 as member zt2, the list calls it zt2b" in renamed["msg"]
    assert names(bootstrap(trio["members"], state="status")) == ["zt1", "zt2", "zt3"]


def test_a_wrong_client_url_of_a_healthy_member_is_named_not_reported_down(trio):
    """zt2's client_url in the task points where nothing listens (12399); the cluster lists zt2
    healthy at 12479. Neither status nor present may call it down or start it."""
    wrong = [trio["members"][0], dict(trio["members"][1], client_url="http://127.0.0.1:12399"), trio["members"][2]]
    assert not listening(12399)
    expected = (
        "member zt2 is listed at http://127.0.0.1:12399 (its client_url in the task), where nothing answers, but the cluster lists it (ID "
    )
    told = (
        "at client URL http://127.0.0.1:12479, and it is reachable there and healthy: it is not down, the client_url in the task "
        "is wrong. Set member zt2's client_url to http://127.0.0.1:12479; nothing was changed."
    )
    before = api("zt1", "/v3/cluster/member/list", {})["members"]
    pid = Path("/run/etcd/etcd-zt2.pid").read_text()
    for state in ("status", "present"):
        refused = bootstrap(wrong, state=state)
        assert refused["failed"] and refused["changed"] is False, refused
        assert refused["msg"].startswith(expected) and told in refused["msg"], refused["msg"]
        assert "peer URLs http://127.0.0.1:12480" in refused["msg"]
        assert refused["reachable_client_url"] == "http://127.0.0.1:12479"
        assert refused.get("actions", []) == [], refused.get("actions")
    checked = bootstrap(wrong, check=True)
    assert checked["failed"] and checked["changed"] is False and "the client_url in the task is wrong" in checked["msg"]
    assert api("zt1", "/v3/cluster/member/list", {})["members"] == before
    assert Path("/run/etcd/etcd-zt2.pid").read_text() == pid  # not restarted
    status = bootstrap(trio["members"], state="status")
    assert not status["failed"], status["msg"]
    assert all(member["healthy"] for member in status["members"]) and names(status) == ["zt1", "zt2", "zt3"]


def test_snapshot_save_verify_restore_gives_back_the_keys(trio, tmp_path):
    path = str(tmp_path / "cluster.db")
    put("zt1", "zdm/before-snapshot", "kept")
    checked = snapshot(trio["members"], check=True, path=path)
    assert checked["changed"] and not Path(path).exists()

    saved = snapshot(trio["members"], path=path)
    assert not saved["failed"], saved["msg"]
    assert saved["changed"] and Path(path).stat().st_size == saved["snapshot"]["size_bytes"] > 0
    assert saved["snapshot"]["total_keys"] >= 1 and saved["snapshot"]["revision"] >= 1
    again = snapshot(trio["members"], path=path)
    assert again["changed"] is False and again["snapshot"]["sha256"] == saved["snapshot"]["sha256"]

    verified = snapshot(trio["members"], path=path, state="verified")
    assert verified["changed"] is False and verified["snapshot"]["sha256"] == saved["snapshot"]["sha256"]

    put("zt2", "zdm/after-snapshot", "gone after the restore")
    checked = snapshot(trio["members"], check=True, path=path, state="restored")
    assert checked["changed"] and checked["actions"][:4] == ["stop zt1", "stop zt2", "stop zt3", f"restore zt1 from {path}"]
    assert get("zt1", "zdm/after-snapshot") == "gone after the restore"  # check mode restored nothing

    restored = snapshot(trio["members"], path=path, state="restored")
    assert not restored["failed"], restored["msg"]
    assert restored["actions"] == ["stop zt1", "stop zt2", "stop zt3", f"restore zt1 from {path}", "start zt1", "add zt2", "add zt3"]
    assert names(restored) == ["zt1", "zt2", "zt3"] and restored["leader"]
    assert restored["cluster_id"] == trio["first"]["cluster_id"]
    for name in ("zt1", "zt2", "zt3"):
        assert get(name, "zdm/before-snapshot") == "kept"
        assert get(name, "zdm/after-snapshot") is None
    assert all(Path(moved).is_dir() for moved in restored["moved_aside"])
    for moved in restored["moved_aside"]:
        shutil.rmtree(moved)
    assert snapshot(trio["members"], path=path, state="restored")["changed"] is False
    assert bootstrap(trio["members"])["changed"] is False

    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(Path(path).read_bytes()[:4096])
    broken = snapshot(trio["members"], path=str(damaged), state="verified")
    assert broken["failed"] and "is not a usable etcd snapshot" in broken["msg"]
    missing = snapshot(trio["members"], path=str(tmp_path / "none.db"), state="verified")
    assert missing["failed"] and "no snapshot file" in missing["msg"]


def test_cluster_playbook_bootstraps_the_lab_and_a_second_run_changes_nothing(lab, lab_ssh):
    first = run_playbook("cluster.yml")
    assert first.status == "successful", first.stdout
    second = run_playbook("cluster.yml")
    assert second.status == "successful", second.stdout
    assert [second.changed(host) for host in LAB] == [0, 0, 0], second.changed_tasks()
    (status,) = second.task_results("Read each member's role and health")
    assert [member["name"] for member in status["members"]] == LAB
    # each member on its own host's address, on the standard ports
    assert [member["client_urls"] for member in status["members"]] == [[f"http://127.0.0.{n}:2379"] for n in (2, 3, 4)]
    assert [member["peer_urls"] for member in status["members"]] == [[f"http://127.0.0.{n}:2380"] for n in (2, 3, 4)]
    assert status["leader"] in LAB and all(member["healthy"] for member in status["members"])
    assert sorted(member["role"] for member in status["members"]) == ["follower", "follower", "leader"]
    (printed,) = second.task_results("Print each member's role and health")
    assert any("leader, healthy" in line for line in printed["msg"])
