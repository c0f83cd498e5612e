# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of an etcd cluster: save (through the API), verify, restore.

- save: the leader's backend streamed from POST /v3/maintenance/snapshot (the gateway sends JSON
  lines of base64 blobs) into a temporary file next to `path`, verified, then renamed: a
  snapshot file is complete or absent.
- verify: `etcdctl snapshot status -w json` (the API cannot read a file) - revision, keys, size,
  hash - plus the file's SHA-256.
- restore (offline by nature): every listed member stopped and its data dir moved aside
  (`<data_dir>.before-restore-<UTC time>`, never deleted), the snapshot restored into the *first*
  member's data dir with `etcdctl snapshot restore` as a one-member cluster with the cluster
  token (so the cluster ID is the one raft_bootstrap expects), that member started, then the
  others added one at a time by RaftCluster.ensure - the same path as a bootstrap.
- the record of a restore, next to the first data dir (`<data_dir>.restored.json`): the
  snapshot's SHA-256 and revision, the restore's id and time, the inode of the data dir it made
  (a data dir replaced since makes the record stale), and the cluster's revision once it is up.
  It is written as soon as the snapshot is in the data dir, so a run that fails after that point
  is seen by the next one. With the same snapshot recorded (`restore_due`): the cluster at its
  restored revision, or still missing members (a run that failed part-way), is not restored again
  - the first member changes nothing, the others join; a whole cluster that has moved on since
  (a higher revision: writes after the restore), or none answering, is refused without `force`,
  naming the revisions, the snapshot and the option.
- restore_member (members on several hosts, run on each member's host): on the first member's
  host, the same restore into its data dir - refused while another member answers (they are
  stopped first, each on its host: playbooks/cluster_restore.yml); on another member's host,
  that member leaves the old cluster (stopped, its data dir moved aside) and joins the restored
  one through RaftCluster.ensure_member.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid

from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.client import EtcdError, hex_id
from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.cluster import RaftCluster


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def restore_due(record: dict, figures: dict, seen: dict | None, force: bool) -> bool:
    """Whether the snapshot in `figures` must be restored (again) into the first member.

    `record` is what the last restore wrote (empty when none, or stale: its data dir replaced since),
    `seen` the cluster now - None when no member answers, else {"revision": the highest revision a
    member reports, "whole": every member answers, in the cluster, with a leader}. Raises EtcdError
    when the cluster restored from this very snapshot would lose what it took since, without force."""
    if force or record.get("sha256") != figures["sha256"]:
        return True
    path = record.get("path") or figures.get("path")
    what = (
        f"the cluster was restored from {path} (sha256 {figures['sha256'][:12]}, revision {figures.get('revision')}) "
        f"by restore {record.get('restore_id', '?')} at {record.get('restored_at', '?')}"
    )
    fix = "To restore the snapshot again anyway, set force: true (playbooks/cluster_restore.yml: -e cluster_snapshot_force=true)."
    if seen is None:
        raise EtcdError(
            f"{what}, and no member answers now: start its members (restoring again would discard whatever the cluster took "
            f"since that restore); nothing was changed. {fix}",
            restore_id=record.get("restore_id"),
        )
    restored = record.get("restored_revision", figures.get("revision"))
    if seen["whole"] and restored is not None and seen["revision"] > restored:
        raise EtcdError(
            f"{what} and has moved on since: it is at revision {seen['revision']}, past {restored} right after the restore - "
            f"restoring again would discard the writes since; nothing was changed. {fix}",
            revision=seen["revision"],
            restored_revision=restored,
            restore_id=record.get("restore_id"),
        )
    return False


class Snapshot:
    """One snapshot file and the cluster it is taken from or restored into."""

    def __init__(self, cluster: RaftCluster, path: str, run_command, etcdctl: str = "etcdctl"):
        self.cluster = cluster
        self.path = path
        self.run_command = run_command
        self.etcdctl = etcdctl

    # verify -------------------------------------------------------------------------------
    def inspect(self, path: str | None = None) -> dict:
        path = path or self.path
        if not os.path.isfile(path):
            raise EtcdError(f"no snapshot file {path}: save one first (state=saved), or give the path of an existing one.")
        rc, out, err = self.run_command([self.etcdctl, "snapshot", "status", path, "-w", "json"], environ_update={"ETCDCTL_API": "3"})
        if rc != 0:
            raise EtcdError(
                f"{path} is not a usable etcd snapshot: etcdctl snapshot status says {(err or out).strip()}. "
                "Take a new one (state=saved, force=true)."
            )
        try:
            figures = json.loads(out)
        except ValueError:
            raise EtcdError(f"etcdctl snapshot status printed no JSON for {path}: {out[:200]}") from None
        return {
            "path": path,
            "sha256": sha256_of(path),
            "size_bytes": os.path.getsize(path),
            "revision": figures.get("revision"),
            "total_keys": figures.get("totalKey"),
            "hash": figures.get("hash"),
        }

    # save ---------------------------------------------------------------------------------
    def save(self, force: bool) -> dict:
        if os.path.exists(self.path) and not force:
            return {"changed": False, "snapshot": self.inspect(), "actions": []}
        source = self.source_member()
        if self.cluster.check_mode:
            return {"changed": True, "snapshot": {"path": self.path}, "actions": [f"save from {source['name']}"]}
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise EtcdError(f"the directory of {self.path} does not exist; create {directory} first.")
        partial = self.path + ".partial"
        try:
            # 0600 whatever the umask (or a partial file a killed run left): it holds every key of the cluster
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "wb") as out:
                written = self.cluster.client(source).snapshot(out, timeout=max(self.cluster.deadline.remaining(), 1))
            if written == 0:
                raise EtcdError(f"{source['name']} sent an empty snapshot")
            figures = self.inspect(partial)
            os.replace(partial, self.path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        figures["path"] = self.path
        return {"changed": True, "snapshot": figures, "actions": [f"save from {source['name']}"], "source": source["name"]}

    def source_member(self) -> dict:
        """The leader when one answers (its backend is the most recent), else refuse."""
        statuses = self.cluster.probe_all()
        if not any(statuses.values()):
            raise EtcdError("no member of the list answers: nothing to take a snapshot of. Start the cluster first.")
        listed, leader = self.cluster.leader(statuses)
        for member in self.cluster.members:
            entry = next((e for e in listed if member["peer_url"] in e.get("peerURLs", [])), None)
            if entry and entry["ID"] == leader:
                return member
        raise EtcdError(
            "no leader among the listed members (no quorum?): a snapshot now could miss acknowledged writes. Restore quorum first."
        )

    # restore ------------------------------------------------------------------------------
    def record_path(self) -> str:
        return self.cluster.first["data_dir"].rstrip("/") + ".restored.json"

    def restore(self, force: bool) -> dict:
        missing = [member["name"] for member in self.cluster.members if not member["data_dir"]]
        if missing:
            raise EtcdError(f"restore needs every member's data_dir (missing for {', '.join(missing)}): their data dirs are moved aside.")
        figures = self.inspect()
        record = self._read_record()
        seen = self._seen() if record.get("sha256") == figures["sha256"] else None
        if not restore_due(record, figures, seen, force):
            # restored from this snapshot already: only the members not yet in the cluster are added
            result = self.cluster.ensure() if not seen["whole"] else {"changed": False, "actions": []}
            result.update(snapshot=figures, restored_at=record.get("restored_at"), restore_id=record.get("restore_id"))
            return result
        actions = [f"stop {m['name']}" for m in self.cluster.members]
        actions.append(f"restore {self.cluster.first['name']} from {self.path}")
        if self.cluster.check_mode:
            actions += [f"add {m['name']}" for m in self.cluster.members[1:]]
            return {"changed": True, "snapshot": figures, "actions": actions, "moved_aside": []}
        self.cluster.done = True
        for member in self.cluster.members:
            if self.cluster.service.exists(member):
                self.cluster.service.stop(member)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = self._move_aside(self.cluster.members, stamp)
        self._restore_into(self.cluster.first, moved)
        record = self._write_record(figures, stamp)
        for member in self.cluster.members[1:]:
            os.makedirs(member["data_dir"], mode=0o700)
            shutil.chown(member["data_dir"], "etcd", "etcd")
        self.cluster.actions.extend(actions)
        result = self.cluster.ensure()
        self._record_revision(record)
        result.update(snapshot=figures, moved_aside=moved, restored_at=stamp, restore_id=record["restore_id"])
        return result

    def restore_member(self, name: str, force: bool) -> dict:
        """The restore for one member, on its own host (see the module docstring)."""
        cluster = self.cluster
        me = cluster.member_named(name)
        if not me["data_dir"]:
            raise EtcdError(f"restore needs member {name}'s data_dir: it is moved aside before the restore.")
        if me is not cluster.first:
            return self._rejoin(me)
        figures = self.inspect()
        record = self._read_record()
        seen = self._seen() if record.get("sha256") == figures["sha256"] else None
        if not restore_due(record, figures, seen, force):
            # restored from this snapshot already (the other members, on their hosts, join if not yet done)
            return {
                "changed": False,
                "snapshot": figures,
                "actions": [],
                "restored_at": record.get("restored_at"),
                "restore_id": record.get("restore_id"),
            }
        statuses = cluster.probe_all()
        running = [m["name"] for m in cluster.members[1:] if statuses.get(m["name"])]
        if running and not cluster.check_mode:
            raise EtcdError(
                f"{', '.join(running)} still {'answers' if len(running) == 1 else 'answer'}: the snapshot is restored into "
                f"{me['name']} while every member is stopped (a member of the old cluster would talk to the restored one). "
                "Stop every member first, each on its host (playbooks/cluster_restore.yml does), then run again; nothing was changed."
            )
        actions = [f"stop {me['name']}", f"restore {me['name']} from {self.path}", f"start {me['name']}"]
        if cluster.check_mode:  # the members still answering would have to be stopped first, each on its host
            actions = [f"stop {name}" for name in running] + actions
            return {"changed": True, "snapshot": figures, "actions": actions, "moved_aside": []}
        cluster.done = True
        if cluster.service.exists(me):
            cluster.service.stop(me)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = self._move_aside([me], stamp)
        self._restore_into(me, moved)
        record = self._write_record(figures, stamp)
        cluster.actions.extend(actions)
        cluster.service.start(me)
        cluster.wait_member_up(me)
        result = cluster.result(cluster.wait_leader())
        self._record_revision(record)
        result.update(snapshot=figures, moved_aside=moved, restored_at=stamp, restore_id=record["restore_id"])
        return result

    def _rejoin(self, me: dict) -> dict:
        """A member other than the first: out of the old cluster, into the restored one."""
        cluster = self.cluster
        statuses = cluster.probe_all()
        if not any(statuses.values()):
            if cluster.check_mode:
                return {"changed": True, "actions": [f"add {me['name']}"], "moved_aside": []}
            raise EtcdError(
                f"no member answers: restore the snapshot into the first member, {cluster.first['name']}, first (on its host), "
                f"then run for {me['name']}; nothing was changed."
            )
        listed = cluster.any_client(statuses).member_list().get("members", [])
        moved = []
        if not any(me["peer_url"] in entry.get("peerURLs", []) for entry in listed) and (cluster.has_data(me) or statuses[me["name"]]):
            # its state is the old cluster's: it goes aside (kept), the member joins afresh
            if cluster.act(f"stop {me['name']}"):
                cluster.done = True
                if cluster.service.exists(me):
                    cluster.service.stop(me)
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                moved = self._move_aside([me], stamp)
                os.makedirs(me["data_dir"], mode=0o700)
                shutil.chown(me["data_dir"], "etcd", "etcd")
            elif cluster.has_data(me):  # check mode: the add refuses a data dir with state, which would be moved
                cluster.actions.append(f"add {me['name']}")
                return {"changed": True, "actions": cluster.actions, "moved_aside": []}
        result = cluster.ensure_member(me["name"])
        result["moved_aside"] = moved
        return result

    def _move_aside(self, members: list, stamp: str) -> list:
        moved = []
        for member in members:
            if os.path.exists(member["data_dir"]):
                aside = f"{member['data_dir'].rstrip('/')}.before-restore-{stamp}"
                os.rename(member["data_dir"], aside)
                moved.append(aside)
        return moved

    def _restore_into(self, first: dict, moved: list) -> None:
        """etcdctl snapshot restore into the first member's data dir, as a one-member cluster with the token."""
        rc, out, err = self.run_command(
            [
                self.etcdctl,
                "snapshot",
                "restore",
                self.path,
                "--name",
                first["name"],
                "--initial-cluster",
                f"{first['name']}={first['peer_url']}",
                "--initial-advertise-peer-urls",
                first["peer_url"],
                "--initial-cluster-token",
                self.cluster.token,
                "--data-dir",
                first["data_dir"],
            ],
            environ_update={"ETCDCTL_API": "3"},
        )
        if rc != 0:
            raise EtcdError(
                f"etcdctl snapshot restore into {first['data_dir']} failed: {(err or out).strip()}. The old data dirs are "
                f"kept: {', '.join(moved)} (move them back to undo).",
                moved_aside=moved,
            )
        for root, dirs, files in os.walk(first["data_dir"]):
            for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
                shutil.chown(name, "etcd", "etcd")
        os.chmod(first["data_dir"], 0o700)

    def _write_record(self, figures: dict, stamp: str) -> dict:
        """Record the restore as soon as the snapshot is in the first data dir (before it starts)."""
        record = {
            "sha256": figures["sha256"],
            "revision": figures.get("revision"),
            "path": self.path,
            "restored_at": stamp,
            "restore_id": f"{stamp}-{uuid.uuid4().hex[:8]}",
            "cluster_id": hex_id(self.cluster.expected),
            "data_dir_inode": os.stat(self.cluster.first["data_dir"]).st_ino,
        }
        self._save_record(record)
        return record

    def _record_revision(self, record: dict) -> None:
        """Add the revision the cluster is at once restored and up (the reference of `moved on`)."""
        seen = self._seen()
        if seen is not None:
            self._save_record(dict(record, restored_revision=seen["revision"]))

    def _save_record(self, record: dict) -> None:
        partial = self.record_path() + ".partial"
        with open(partial, "w") as handle:
            json.dump(record, handle)
        os.replace(partial, self.record_path())

    def _read_record(self) -> dict:
        """The last restore's record; empty when there is none, or when the first data dir is no
        longer the one that restore made (moved aside or rebuilt since)."""
        try:
            with open(self.record_path()) as handle:
                record = json.load(handle)
            inode = os.stat(self.cluster.first["data_dir"]).st_ino
        except (OSError, ValueError):
            return {}
        if not isinstance(record, dict) or record.get("data_dir_inode", inode) != inode:
            return {}
        return record

    def _seen(self) -> dict | None:
        """The cluster now, for restore_due: None when no member answers, else the highest revision a
        member reports and whether the cluster is whole (every listed member answers, in the cluster,
        and there is a leader)."""
        statuses = self.cluster.probe_all()
        answering = [status for status in statuses.values() if status]
        if not answering:
            return None
        revision = max(int(status.get("header", {}).get("revision") or 0) for status in answering)
        try:
            listed, leader = self.cluster.leader(statuses)
        except EtcdError:
            return {"revision": revision, "whole": False}
        whole = all(statuses.values()) and leader is not None and len(listed) == len(self.cluster.members)
        return {"revision": revision, "whole": whole}
