#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: raft_bootstrap
short_description: Bootstrap an etcd (Raft) cluster from exactly one member, add the others one at a time, report roles
description:
  - Makes the running etcd 3.4 cluster match O(members), talking to the members' HTTP/JSON API
    (C(/v3/cluster/member/*), C(/v3/maintenance/status), C(/health)).
  - When no member answers and none has data, only the B(first) member bootstraps
    (C(--initial-cluster-state new)). Every other member is then added one at a time -
    C(member add), started with C(--initial-cluster-state existing) and the member list the add
    returned, waited for until it answers healthy - before the next one. etcd refuses an add
    shortly after a member started ("unhealthy cluster") or while an added member has not started;
    both are retried until O(timeout).
  - With O(learners=true) members join as learners and are promoted once they caught up.
  - A member of the cluster that does not answer is started again; one that was added but never
    started (an interrupted run) is started with the cluster's member list.
  - A member that does not answer at its O(members[].client_url) while the cluster lists it (by
    peer URL, else by name) answering at another client URL is not reported down; the module fails
    naming both URLs and saying that the task's client_url is wrong, before anything changes (also
    with O(state=status)).
  - A healthy cluster of exactly these members changes nothing. A member missing from the cluster
    is the only one added. With O(prune=true) members not in O(members) are removed (one at a time)
    and their init script C(etcd-<name>), if any, stopped.
  - A cluster bootstrapped from the first member with O(cluster_token) has a known cluster ID. A
    member answering with another ID was bootstrapped separately; the module refuses, names it,
    says what to do and changes nothing. A member to be added whose O(members[].data_dir) already
    holds state is refused the same way.
  - O(state=status) changes nothing and reports each member's role (leader, follower, learner,
    down) and health; without a leader it fails with a "no quorum" report naming the members that
    are down, after at most O(request_timeout) per member.
  - Members are started through their init scripts (C(/etc/init.d/etcd-<name>), written by the
    C(zerodowntime.migration.cluster_node) role), which receive the initial-cluster settings as
    C(ETCD_INITIAL_CLUSTER), C(ETCD_INITIAL_CLUSTER_STATE) and C(ETCD_INITIAL_CLUSTER_TOKEN).
  - With O(member), the module handles that one member and runs on B(its) host (members on several
    hosts; run it over the members' hosts one at a time, first member first - with throttle 1, as
    C(playbooks/cluster.yml) does). When no member answers, the first member bootstraps (another
    member fails, naming the first); a member with state is started, and waited for once the members
    before it in the list and itself make a quorum. When the cluster answers, the member is added through
    its API and started with the cluster's member list, or started again when the cluster knows it, and
    waited for until healthy. A member the cluster lists whose O(members[].data_dir) is empty (moved
    aside to rebuild it) is removed and added afresh. Only this member's init script and data dir are
    used; the other members are reached through their client URLs. O(prune) removes the members not
    listed after this member is in.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  state:
    description:
      - V(present) bootstraps, joins, starts and (with O(prune)) removes members as described.
      - V(status) only reads.
    type: str
    choices: [present, status]
    default: present
  learners:
    description: Add new members as learners (non-voting) and promote each once it is in sync with the leader.
    type: bool
    default: false
  prune:
    description: Remove members the cluster has that O(members) does not list.
    type: bool
    default: false
  member:
    description:
      - Name of one member of O(members), whose host the task runs on; only it is bootstrapped, added
        or started (see the description). Without it the module handles every member from where it
        runs, which needs every member's init script there (all members on one host).
      - Ignored with O(state=status).
    type: str
extends_documentation_fragment:
  - zerodowntime.migration.etcd
attributes:
  check_mode:
    support: full
    description: Lists the actions (bootstrap, add, start, remove) it would take; nothing is started, added or removed.
  diff_mode:
    support: full
    description: Shows the cluster's member names before and after.
notes:
  - etcd 3.4 ignores the C(--initial-*) settings once a data dir exists; to rebuild a member, stop it and move its data dir aside.
  - Without O(member) the module runs on the host of every init script it starts; with O(member),
    on that member's host, which must reach the other members' client URLs.
"""

EXAMPLES = r"""
# Over the members' hosts (hosts: cluster_nodes), one at a time, the first first: etcd1
# bootstraps on its host, then etcd2 and etcd3 are added and started each on its own host.
- name: Bootstrap or join this host's member
  zerodowntime.migration.raft_bootstrap:
    member: "{{ inventory_hostname }}"
    members:
      - {name: etcd1, client_url: "http://10.0.0.11:2379", peer_url: "http://10.0.0.11:2380", data_dir: /var/lib/etcd/etcd1}
      - {name: etcd2, client_url: "http://10.0.0.12:2379", peer_url: "http://10.0.0.12:2380", data_dir: /var/lib/etcd/etcd2}
      - {name: etcd3, client_url: "http://10.0.0.13:2379", peer_url: "http://10.0.0.13:2380", data_dir: /var/lib/etcd/etcd3}
  throttle: 1

# Every member on this host (their init scripts all here): one task does it all.
- name: Bootstrap the cluster from etcd1, then add etcd2 and etcd3
  zerodowntime.migration.raft_bootstrap:
    members:
      - {name: etcd1, client_url: "http://127.0.0.1:2379", peer_url: "http://127.0.0.1:2380", data_dir: /var/lib/etcd/etcd1}
      - {name: etcd2, client_url: "http://127.0.0.1:2479", peer_url: "http://127.0.0.1:2480", data_dir: /var/lib/etcd/etcd2}
      - {name: etcd3, client_url: "http://127.0.0.1:2579", peer_url: "http://127.0.0.1:2580", data_dir: /var/lib/etcd/etcd3}
  register: cluster

- name: Each member's role
  ansible.builtin.debug:
    msg: "{{ cluster.members | map(attribute='name') | zip(cluster.members | map(attribute='role')) }}"

- name: Shrink to three members (removes the others), over TLS
  zerodowntime.migration.raft_bootstrap:
    members: "{{ etcd_members[:3] }}"
    prune: true
    ca_cert: /etc/etcd/pki/ca.crt
    client_cert: /etc/etcd/pki/etcd1.crt
    client_key: /etc/etcd/pki/etcd1.key

- name: Report roles and health, failing with a 'no quorum' report when there is no leader
  zerodowntime.migration.raft_bootstrap:
    members: "{{ etcd_members }}"
    state: status
"""

RETURN = r"""
members:
  description: The cluster's members after the run (empty in check mode when something would change).
  returned: success and on a 'no quorum' failure
  type: list
  elements: dict
  contains:
    name: {description: Member name, type: str}
    id: {description: Member ID in hex (as etcdctl prints it), type: str}
    peer_urls: {description: Peer URLs, type: list, elements: str}
    client_urls: {description: Client URLs, type: list, elements: str}
    is_learner: {description: Whether it is a learner, type: bool}
    role: {description: "V(leader), V(follower), V(learner) or V(down) (no answer)", type: str}
    healthy: {description: Whether its C(/health) says true, type: bool}
    raft_index: {description: Its raft index; null when down, type: int}
  sample: [{"name": "etcd1", "id": "2f1a9e3c1d5b7a10", "role": "leader", "healthy": true, "is_learner": false}]
leader:
  description: Name of the leader.
  returned: success
  type: str
  sample: etcd1
raft_term:
  description: The leader's raft term.
  returned: success
  type: int
  sample: 2
raft_index:
  description: The leader's raft index.
  returned: success
  type: int
  sample: 12
cluster_id:
  description: The cluster ID (hex) the first member and O(cluster_token) give.
  returned: always
  type: str
  sample: 7020c2a4b8f2a3b0
actions:
  description: What was done (in check mode, what would be), in order - C(bootstrap X), C(add X), C(start X), C(promote X), C(remove X).
  returned: always
  type: list
  elements: str
  sample: ["bootstrap etcd1", "add etcd2", "add etcd3"]
progress:
  description: Steps seen while waiting (retried adds, members up), for the log.
  returned: always
  type: list
  elements: str
quorum:
  description: With O(state=status), whether a leader was found (false on the 'no quorum' failure).
  returned: state=status
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.cluster import run_module, spec


def main():
    module = AnsibleModule(
        argument_spec=spec(
            state=dict(type="str", choices=["present", "status"], default="present"),
            learners=dict(type="bool", default=False),
            prune=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params

    def work(cluster):
        if params["state"] == "status":
            return cluster.status()
        if params["member"]:
            return cluster.ensure_member(params["member"], learners=params["learners"], prune=params["prune"])
        return cluster.ensure(learners=params["learners"], prune=params["prune"])

    run_module(module, work)


if __name__ == "__main__":
    main()
