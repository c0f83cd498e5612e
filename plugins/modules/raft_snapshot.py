#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: raft_snapshot
short_description: Save, verify and restore a snapshot of an etcd (Raft) cluster
description:
  - V(saved) streams the leader's data from the HTTP/JSON API (C(/v3/maintenance/snapshot)) into
    O(path) through a temporary file, verifies it and only then renames it, so the file is complete
    or absent, mode 0600 (it holds every key). An existing O(path) is kept (changed false) unless O(force=true). Without a leader it
    refuses (a snapshot then could miss acknowledged writes).
  - V(verified) reads the file with C(etcdctl snapshot status) (revision, keys, hash) and returns its
    SHA-256; a damaged file is an error. Changes nothing.
  - V(restored) is offline by nature. Every member in O(members) is stopped and its data dir moved
    aside (C(<data_dir>.before-restore-<UTC time>); nothing is deleted), the snapshot restored into the
    B(first) member's data dir as a one-member cluster with O(cluster_token)
    (C(etcdctl snapshot restore)), that member started, and the others added one at a time, exactly
    as M(zerodowntime.migration.raft_bootstrap) adds members. The cluster keeps its cluster ID.
    The restore is recorded in C(<first data_dir>.restored.json) as soon as the snapshot is in the first data dir
    (the snapshot's SHA-256 and revision, the restore's id and time, that data dir, and the cluster's revision once
    it is up). A run with the same snapshot after that restores nothing again - the cluster at its restored
    revision, or still missing members (a run that failed part-way), changes nothing and only the members not yet
    in the cluster are added; a whole cluster that has moved on since (a higher revision - writes after the
    restore), or one of which no member answers, is refused without O(force=true), naming the revisions, the
    snapshot and the option. O(force=true) restores again.
  - V(restored) with O(member), for members on several hosts, runs on that member's host (the play
    goes over the members' hosts, first member first, one at a time; C(playbooks/cluster_restore.yml)).
    On the B(first) member's host it is refused while another member answers (stop every member first, each
    on its host); else that member is stopped, its data dir moved aside, the snapshot restored into it and
    it started - a one-member cluster; the same re-run rules apply (it changes nothing while members are
    missing, and the other members, on their hosts, join). On another member's host, a
    member the restored cluster does not list is stopped, its data dir moved aside (its state is the
    old cluster's), and it is added and started as M(zerodowntime.migration.raft_bootstrap) with
    O(member) does; one the cluster lists and that answers is left alone.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  state:
    description: What to do with the snapshot file.
    type: str
    choices: [saved, verified, restored]
    default: saved
  path:
    description: The snapshot file.
    type: path
    required: true
  force:
    description:
      - V(saved) - overwrite an existing file.
      - V(restored) - restore even when this snapshot was restored already, discarding what the cluster took since (the
        restore refused without it names the revision).
    type: bool
    default: false
  member:
    description:
      - V(restored) only - the member whose host the task runs on (see the description). Without it every
        member is stopped, restored and started from where the module runs, which needs every member's
        init script and data dir there (all members on one host).
    type: str
extends_documentation_fragment:
  - zerodowntime.migration.etcd
attributes:
  check_mode:
    support: full
    description: Reports what it would do; writes, stops and restores nothing.
  diff_mode:
    support: none
    description: A snapshot file has no diff to show; the actions say what was done.
notes:
  - Needs C(etcdctl) (Debian's etcd-client package) on the host for V(verified) and V(restored).
  - V(restored) needs the O(members[].data_dir) of the members it handles, and runs on the host of their
    init scripts (with O(member), that member's host; O(path) is read there on the first member's host).
"""

EXAMPLES = r"""
- name: Snapshot the cluster before migrating
  zerodowntime.migration.raft_snapshot:
    members: "{{ etcd_members }}"
    path: /var/backups/etcd/before-migration.db
  register: etcd_snapshot

- name: Check the snapshot file
  zerodowntime.migration.raft_snapshot:
    members: "{{ etcd_members }}"
    path: /var/backups/etcd/before-migration.db
    state: verified

- name: Restore it (every member stopped, the first restored, the others re-added)
  zerodowntime.migration.raft_snapshot:
    members: "{{ etcd_members }}"
    path: /var/backups/etcd/before-migration.db
    state: restored

# Members on several hosts: every member stopped on its host, then, over the members' hosts one at a
# time, first member first - see playbooks/cluster_restore.yml.
- name: Restore into the first member, re-add the others, each on its own host
  zerodowntime.migration.raft_snapshot:
    members: "{{ etcd_members }}"
    member: "{{ inventory_hostname }}"
    path: /var/backups/etcd/before-migration.db
    state: restored
  throttle: 1
"""

RETURN = r"""
snapshot:
  description: The snapshot file as C(etcdctl snapshot status) reads it (in check mode of V(saved), only the path).
  returned: success
  type: dict
  contains:
    path: {description: The file, type: str}
    sha256: {description: SHA-256 of the file, type: str}
    size_bytes: {description: Its size, type: int}
    revision: {description: The store's revision in it, type: int}
    total_keys: {description: Keys in it, type: int}
    hash: {description: etcd's hash of its contents, type: int}
actions:
  description: What was done (in check mode, what would be).
  returned: always
  type: list
  elements: str
  sample: ["stop etcd1", "stop etcd2", "stop etcd3", "restore etcd1 from /var/backups/etcd/before-migration.db", "add etcd2", "add etcd3"]
source:
  description: V(saved) - the member the snapshot was taken from (the leader).
  returned: when a snapshot was saved
  type: str
restore_id:
  description: V(restored) - the id of the restore this cluster comes from (made now, or the recorded one when nothing was restored again).
  returned: when restored, or restored already
  type: str
  sample: 20261204T150000Z-1a2b3c4d
restored_at:
  description: V(restored) - the UTC time of that restore.
  returned: when restored, or restored already
  type: str
moved_aside:
  description: V(restored) - where the members' old data dirs were moved.
  returned: when restored
  type: list
  elements: str
members:
  description: V(restored) - the cluster's members afterwards, as raft_bootstrap returns them.
  returned: when restored
  type: list
  elements: dict
leader:
  description: V(restored) - the leader afterwards.
  returned: when restored
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.cluster import run_module, spec
from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.snapshot import Snapshot


def main():
    module = AnsibleModule(
        argument_spec=spec(
            state=dict(type="str", choices=["saved", "verified", "restored"], default="saved"),
            path=dict(type="path", required=True),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params

    def work(cluster):
        snapshot = Snapshot(cluster, params["path"], module.run_command)
        if params["state"] == "verified":
            return {"changed": False, "snapshot": snapshot.inspect(), "actions": []}
        if params["state"] == "restored":
            if params["member"]:
                return snapshot.restore_member(params["member"], params["force"])
            return snapshot.restore(params["force"])
        return snapshot.save(params["force"])

    run_module(module, work)


if __name__ == "__main__":
    main()
