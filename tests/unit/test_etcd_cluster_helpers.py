"""Pure helpers of plugins/module_utils/etcd/client.py and etcd_cluster.py: etcd's ID scheme,
the member list's validation, --initial-cluster, quorum and each member's role."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.client import EtcdError, cluster_id, hex_id, member_id
from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.cluster import (
    RaftCluster,
    expected_cluster_id,
    initial_cluster,
    member_roles,
    quorum,
    validate_members,
)


def member(name, port):
    return {"name": name, "client_url": f"http://127.0.0.1:{port}", "peer_url": f"http://127.0.0.1:{port + 1}"}


def test_member_and_cluster_ids_are_etcds():
    # read from a real etcd 3.4.23 bootstrapped alone: --initial-cluster t1=http://127.0.0.1:39380
    # --initial-cluster-token tok1 (member_id / cluster_id in /v3/maintenance/status's header)
    ident = member_id(["http://127.0.0.1:39380"], "tok1")
    assert ident == 3394636051700691351
    assert cluster_id([ident]) == 8079791376391069508
    assert expected_cluster_id({"peer_url": "http://127.0.0.1:39380"}, "tok1") == 8079791376391069508


def test_another_token_or_first_member_gives_another_cluster():
    first = {"peer_url": "http://127.0.0.1:2380"}
    assert expected_cluster_id(first, "a") != expected_cluster_id(first, "b")
    assert expected_cluster_id(first, "a") != expected_cluster_id({"peer_url": "http://127.0.0.1:2480"}, "a")


def test_ids_print_in_hex_like_etcdctl():
    assert hex_id("8079791376391069508") == "70212f72c10ddf44"


def test_members_are_normalised_with_default_service():
    checked = validate_members([member("etcd1", 2379), dict(member("etcd2", 2479), service="custom", data_dir="/d")])
    assert checked[0] == {
        "name": "etcd1",
        "client_url": "http://127.0.0.1:2379",
        "peer_url": "http://127.0.0.1:2380",
        "service": "etcd-etcd1",
        "data_dir": None,
    }
    assert checked[1]["service"] == "custom" and checked[1]["data_dir"] == "/d"


def test_a_trailing_slash_is_dropped():
    checked = validate_members([dict(member("etcd1", 2379), peer_url="https://10.0.0.1:2380/")])
    assert checked[0]["peer_url"] == "https://10.0.0.1:2380"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([], "non-empty list"),
        ("etcd1", "non-empty list"),
        (["etcd1"], r"member 1 of members \(counting from 1\) is 'etcd1', not a dict"),
        (
            [member("etcd1", 2379), dict(member("etcd2", 2479), role="x")],
            r"member 2 of members \(counting from 1, name 'etcd2'\) has unknown keys role",
        ),
        (
            [member("etcd1", 2379), dict(member("etcd2", 2479), name="bad name")],
            r"member 2 of members \(counting from 1\): name 'bad name'",
        ),
        ([{"name": "etcd1", "client_url": "http://127.0.0.1:2379"}], "member etcd1: peer_url is required"),
        ([dict(member("etcd1", 2379), peer_url="127.0.0.1:2380")], "member etcd1: peer_url '127.0.0.1:2380' is not a URL etcd can use"),
        ([dict(member("etcd1", 2379), client_url="ftp://127.0.0.1:2379")], "client_url 'ftp://127.0.0.1:2379' is not a URL"),
        ([dict(member("etcd1", 2379), client_url="http://127.0.0.1")], "needs http:// or https://, a host and a port"),
        ([dict(member("etcd1", 2379), client_url="http://127.0.0.1:2379/v3")], "and no path"),
        ([dict(member("etcd1", 2379), name="bad name")], r"name 'bad name' is not a member name"),
        ([dict(member("etcd1", 2379), role="leader")], "unknown keys role"),
        ([member("etcd1", 2379), member("etcd1", 2479)], "members etcd1 and etcd1 have the same name"),
        ([member("etcd1", 2379), dict(member("etcd2", 2479), peer_url="http://127.0.0.1:2380")], "same peer_url"),
        ([dict(member("etcd1", 2379), service="../x")], "not an init script name"),
    ],
)
def test_malformed_member_lists_are_refused_with_the_fix(members, message):
    with pytest.raises(EtcdError, match=message):
        validate_members(members)


def test_initial_cluster_keeps_the_order():
    assert initial_cluster([("b", "http://h:2"), ("a", "http://h:1")]) == "b=http://h:2,a=http://h:1"


@pytest.mark.parametrize(("voters", "needed"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_quorum(voters, needed):
    assert quorum(voters) == needed


def status(own, leader):
    return {"header": {"member_id": own}, "leader": leader}


def test_roles_leader_follower_learner_down():
    listed = [{"ID": "1", "name": "a"}, {"ID": "2", "name": "b"}, {"ID": "3", "name": "c", "isLearner": True}, {"ID": "4", "name": "d"}]
    leader, roles = member_roles(listed, {"1": status("1", "2"), "2": status("2", "2"), "3": status("3", "2"), "4": None})
    assert leader == "2"
    assert roles == {"1": "follower", "2": "leader", "3": "learner", "4": "down"}


def test_a_follower_names_the_leader_when_the_leader_is_not_asked():
    leader, roles = member_roles([{"ID": "1"}, {"ID": "2"}], {"1": status("1", "2"), "2": None})
    assert leader == "2" and roles == {"1": "follower", "2": "down"}


def test_no_leader_without_quorum():
    leader, roles = member_roles([{"ID": "1"}, {"ID": "2"}, {"ID": "3"}], {"1": status("1", "0"), "2": None, "3": None})
    assert leader is None
    assert roles["1"] == "follower"


def test_the_member_of_a_per_host_run_must_be_in_the_list():
    cluster = RaftCluster({"members": [member("e1", 2379), member("e2", 2479)], "cluster_token": "t"}, run_command=None)
    assert cluster.member_named("e2")["peer_url"] == "http://127.0.0.1:2480"
    with pytest.raises(EtcdError, match=r"member 'e9' is not in members \(e1, e2\); give the name of the member whose host this runs on"):
        cluster.member_named("e9")
