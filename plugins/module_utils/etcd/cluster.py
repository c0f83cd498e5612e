# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Raft cluster of etcd 3.4 members, bootstrapped from exactly one of them.

`RaftCluster.ensure` makes the running cluster match an ordered member list:

- nothing answers and no member has data: the *first* member bootstraps alone
  (`--initial-cluster-state new`, the cluster token), every other member joins;
- a member of the list that the cluster does not know: `member add`, then started with
  `--initial-cluster-state existing` and the member list the add returned, then waited for
  (answering, healthy, in the cluster) before the next one - one at a time, as etcd 3.4 wants
  (it refuses an add while a member started less than 5 s ago, "unhealthy cluster", or while
  another added member has not started, "not enough started members": both are retried until
  the deadline);
- optionally as a learner, promoted once it has caught up with the leader;
- a known member that does not answer: started again (its data dir has its state);
- `prune`: members the list does not name are removed, one at a time.

A cluster bootstrapped from member M with token T has a cluster ID computable from M's peer URL
and T (`expected_cluster_id`). A member answering with another cluster ID was bootstrapped
separately: it is refused by name, with what to do, before anything changes. A member to be
added whose data dir already holds state is refused too (it would start as what it was).

`RaftCluster.ensure_member` does the same for one member, on that member's own host (a play over
the members' hosts, one at a time, first member first): bootstrap it if it is the first and no
cluster answers, else add it through the cluster's API (a member the cluster lists but whose data
dir is empty is removed and added again: a rebuild), start it, wait until it answers healthy.
Only its own init script and data dir are touched; the others are reached over the API.

Members are started and stopped through their init scripts (/etc/init.d/<service>, written by
roles/cluster_node); the initial-cluster settings go to the script as ETCD_INITIAL_* variables
(etcd ignores them once its data dir exists). Pure helpers: `validate_members`,
`initial_cluster`, `quorum`, `expected_cluster_id`, `member_roles`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from ansible_collections.zerodowntime.migration.plugins.module_utils.common import runner
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.etcd.client import (
    ARGUMENT_SPEC,
    EtcdClient,
    EtcdError,
    cluster_id,
    hex_id,
    member_id,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RETRIED_ADD_ERRORS = ("unhealthy cluster", "not enough started members", "too many requests", "leader changed", "no leader")
RETRIED_PROMOTE_ERRORS = ("not in sync", "unhealthy cluster", "leader changed", "no leader", "too many requests")


MEMBER_SPEC = dict(
    name=dict(type="str", required=True),
    client_url=dict(type="str", required=True),
    peer_url=dict(type="str", required=True),
    service=dict(type="str"),
    data_dir=dict(type="path"),
)


def spec(**module_options) -> dict:
    """The options every etcd module shares (doc fragment zerodowntime.migration.etcd) plus its own."""
    options = dict(ARGUMENT_SPEC)
    options.update(
        members=dict(type="list", elements="dict", required=True, options=MEMBER_SPEC),
        cluster_token=dict(type="str", default="zerodowntime-etcd", no_log=False),
        timeout=dict(type="float", default=120.0),
        member=dict(type="str"),
    )
    options.update(module_options)
    return options


def run_module(module, work) -> None:
    """Build the RaftCluster from the module's options, call work(cluster) -> result, exit; an
    EtcdError fails with its message, changed=false unless something was already done."""

    def already_done(opened, exc):
        cluster = opened.get("cluster")
        return {"changed": bool(cluster and cluster.done), "actions": cluster.actions if cluster else []}

    runner.run_module(
        module,
        lambda opened: work(opened["cluster"]),
        openers={"cluster": lambda: RaftCluster(module.params, module.run_command, check_mode=module.check_mode)},
        on_failure=already_done,
    )


def _check_url(member: str, key: str, url) -> str:
    if not isinstance(url, str) or not url:
        raise EtcdError(f"member {member}: {key} is required (for example http://127.0.0.1:2379); fix the members list.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
        raise EtcdError(
            f"member {member}: {key} {url!r} is not a URL etcd can use: it needs http:// or https://, a host and a port, "
            "and no path (for example https://10.0.0.1:2380); fix the members list."
        )
    return url.rstrip("/")


def validate_members(members) -> list[dict]:
    """The ordered member list, checked: each member a dict with `name`, `client_url`,
    `peer_url`, optional `service` (init script, default etcd-<name>) and `data_dir`; names and
    URLs unique. Raises EtcdError naming the member and the fix; returns normalised copies."""
    if not isinstance(members, list) or not members:
        raise EtcdError("members must be a non-empty list of {name, client_url, peer_url}; the first one bootstraps the cluster.")
    checked, seen = [], {}
    for position, member in enumerate(members, 1):
        if not isinstance(member, dict):
            raise EtcdError(
                f"member {position} of members (counting from 1) is {member!r}, "
                "not a dict with name, client_url and peer_url; fix the members list."
            )
        unknown = sorted(set(member) - {"name", "client_url", "peer_url", "service", "data_dir"})
        if unknown:
            raise EtcdError(
                f"member {position} of members (counting from 1, name {member.get('name')!r}) has unknown keys "
                f"{', '.join(unknown)}; a member takes name, client_url, peer_url, service, data_dir."
            )
        name = member.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise EtcdError(
                f"member {position} of members (counting from 1): name {name!r} is not a member name: "
                "1 to 63 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit; fix the members list."
            )
        entry = {
            "name": name,
            "client_url": _check_url(name, "client_url", member.get("client_url")),
            "peer_url": _check_url(name, "peer_url", member.get("peer_url")),
            "service": member.get("service") or f"etcd-{name}",
            "data_dir": member.get("data_dir") or None,
        }
        if not NAME_PATTERN.match(entry["service"]):
            raise EtcdError(f"member {name}: service {entry['service']!r} is not an init script name (letters, digits, '_', '.', '-').")
        for key in ("name", "client_url", "peer_url"):
            previous = seen.get((key, entry[key]))
            if previous:
                raise EtcdError(f"members {previous} and {name} have the same {key} {entry[key]!r}; each member needs its own.")
            seen[(key, entry[key])] = name
        checked.append(entry)
    return checked


def initial_cluster(pairs) -> str:
    """--initial-cluster: name=peer_url,... in the given order."""
    return ",".join(f"{name}={url}" for name, url in pairs)


def quorum(voters: int) -> int:
    return voters // 2 + 1


def expected_cluster_id(first: dict, cluster_token: str) -> int:
    """The ID of the cluster bootstrapped from `first` alone with this token."""
    return cluster_id([member_id([first["peer_url"]], cluster_token)])


def member_roles(listed: list[dict], statuses: dict) -> tuple[str | None, dict]:
    """From the cluster's member list (gateway form) and {member ID (decimal str): status or
    None}: the leader's ID, and each member's role - leader (its status.leader equals its own
    header.member_id), learner, follower, or down (no answer)."""
    leader = None
    for ident, status in statuses.items():
        if status and status.get("leader") not in (None, "0") and status.get("leader") == status.get("header", {}).get("member_id"):
            leader = ident
    if leader is None:  # no member says it leads; a follower may still name the leader it follows
        named = {status.get("leader") for status in statuses.values() if status and status.get("leader") not in (None, "0")}
        known = {member["ID"] for member in listed}
        leader = next(iter(named & known), None) if len(named) == 1 else None
    roles = {}
    for member in listed:
        ident = member["ID"]
        if statuses.get(ident) is None:
            roles[ident] = "down"
        elif member.get("isLearner"):
            roles[ident] = "learner"
        elif ident == leader:
            roles[ident] = "leader"
        else:
            roles[ident] = "follower"
    return leader, roles


class MemberService:
    """Starts and stops one member through its init script, /etc/init.d/<service>."""

    def __init__(self, run_command, init_dir: str = "/etc/init.d"):
        self.run_command = run_command
        self.init_dir = init_dir

    def script(self, member: dict) -> str:
        return os.path.join(self.init_dir, member["service"])

    def exists(self, member: dict) -> bool:
        return os.access(self.script(member), os.X_OK)

    def _run(self, member: dict, action: str, env: dict | None = None) -> None:
        script = self.script(member)
        if not self.exists(member):
            raise EtcdError(
                f"member {member['name']}: no init script {script}; converge roles/cluster_node on its host first "
                "(it writes /etc/init.d/etcd-<name>), or set the member's service to its init script's name."
            )
        rc, out, err = self.run_command([script, action], environ_update=env or {})
        if rc != 0:
            raise EtcdError(f"member {member['name']}: {script} {action} failed (exit {rc}): {(err or out).strip()}")

    def start(self, member: dict, env: dict | None = None) -> None:
        self._run(member, "start", env)

    def stop(self, member: dict) -> None:
        self._run(member, "stop")


class RaftCluster:
    """The cluster the ordered member list describes; see the module docstring."""

    def __init__(self, params: dict, run_command, check_mode: bool = False, service: MemberService | None = None):
        self.params = params
        self.members = validate_members(params.get("members"))
        self.first = self.members[0]
        self.token = params.get("cluster_token") or "zerodowntime-etcd"
        self.expected = expected_cluster_id(self.first, self.token)
        self.check_mode = check_mode
        self.service = service or MemberService(run_command)
        self.deadline = Deadline(float(params.get("timeout") or 120))
        self.actions: list[str] = []
        self.progress: list[str] = []
        self.before: list[str] = []
        self.done = False  # something was changed (a failure then reports changed=true)

    # Reading ------------------------------------------------------------------------------
    def client(self, member: dict) -> EtcdClient:
        return EtcdClient(member["client_url"], self.params)

    def probe(self, member: dict) -> dict | None:
        """The member's status, or None when it does not answer."""
        try:
            return self.client(member).status()
        except EtcdError as exc:
            if exc.details.get("unreachable"):
                return None
            raise

    def has_data(self, member: dict) -> bool:
        return bool(member["data_dir"]) and os.path.isdir(os.path.join(member["data_dir"], "member"))

    def refuse_foreign(self, member: dict, status: dict) -> None:
        found = status.get("header", {}).get("cluster_id")
        if found is not None and int(found) != self.expected:
            where = f" its data dir {member['data_dir']}" if member["data_dir"] else " its data dir"
            raise EtcdError(
                f"member {member['name']} ({member['client_url']}) belongs to another cluster: cluster ID {hex_id(found)}, "
                f"while the cluster bootstrapped from {self.first['name']} ({self.first['peer_url']}) with cluster_token "
                f"{self.token!r} has ID {hex_id(self.expected)}. It was bootstrapped separately and cannot join; nothing was "
                f"changed. If it is not needed: stop it (/etc/init.d/{member['service']} stop), move{where} aside, and run again. "
                "If it is the cluster you mean, give the members and cluster_token it was bootstrapped with (its first member first).",
                foreign_member=member["name"],
                foreign_cluster_id=hex_id(found),
                expected_cluster_id=hex_id(self.expected),
            )

    def probe_all(self) -> dict:
        statuses = {member["name"]: self.probe(member) for member in self.members}
        for member in self.members:
            if statuses[member["name"]]:
                self.refuse_foreign(member, statuses[member["name"]])
        return statuses

    def refuse_wrong_client_url(self, listed: list[dict], statuses: dict) -> None:
        """A member that does not answer at its client_url while the cluster lists it (by peer URL,
        else by name) at another client URL where it answers as that member: not down, the task's
        client_url is wrong. Raised before anything is started or changed."""
        for member in self.members:
            if statuses.get(member["name"]):
                continue
            entry = next((e for e in listed if member["peer_url"] in e.get("peerURLs", [])), None)
            entry = entry or next((e for e in listed if e.get("name") == member["name"]), None)
            if entry is None:
                continue
            for url in (url.rstrip("/") for url in entry.get("clientURLs", [])):
                if url == member["client_url"]:
                    continue
                try:
                    client = EtcdClient(url, self.params)
                    answered = client.status().get("header", {}).get("member_id")
                    healthy = client.health()
                except EtcdError:
                    continue
                if answered is None or int(answered) != int(entry["ID"]):
                    continue
                raise EtcdError(
                    f"member {member['name']} is listed at {member['client_url']} (its client_url in the task), where nothing "
                    f"answers, but the cluster lists it (ID {hex_id(entry['ID'])}, peer URLs {', '.join(entry.get('peerURLs', []))}) "
                    f"at client URL {url}, and it is reachable there{' and healthy' if healthy else ' (not healthy)'}: it is not "
                    f"down, the client_url in the task is wrong. Set member {member['name']}'s client_url to {url}; nothing was changed.",
                    member=member["name"],
                    listed_client_url=member["client_url"],
                    reachable_client_url=url,
                )

    def any_client(self, statuses: dict) -> EtcdClient:
        for member in self.members:
            if statuses.get(member["name"]):
                return self.client(member)
        raise EtcdError("no member of the list answers")

    def wait(self, what: str, check, interval: float = 0.1):
        """Call check() until it returns something true or the deadline passes (then EtcdError)."""
        last_error = None

        def attempt():
            nonlocal last_error
            try:
                return check()
            except EtcdError as exc:
                if exc.details.get("foreign_member"):
                    raise
                last_error = str(exc)
                return None

        def timed_out(_last):
            raise EtcdError(
                f"timed out waiting for {what} (timeout {self.params.get('timeout')} s)"
                + (f"; last error: {last_error}" if last_error else ""),
                progress=self.progress,
            )

        return poll(attempt, self.deadline, timed_out, interval=interval)

    def wait_member_up(self, member: dict) -> dict:
        """Until the member answers, in this cluster, healthy; returns its status."""

        def up():
            status = self.probe(member)
            if status is None:
                return None
            self.refuse_foreign(member, status)
            return status if self.client(member).health() else None

        status = self.wait(f"member {member['name']} to start and report healthy (log: /var/log/etcd/{member['name']}.log)", up)
        self.progress.append(f"{member['name']} up")
        return status

    def wait_leader(self) -> dict:
        def leader():
            statuses = self.probe_all()
            if not any(statuses.values()):
                return None
            listed = self.any_client(statuses).member_list().get("members", [])
            ident, roles = member_roles(listed, self.statuses_by_id(listed, statuses))
            return {"listed": listed, "statuses": statuses, "leader": ident, "roles": roles} if ident else None

        return self.wait("a leader to be elected", leader)

    def leader(self, statuses: dict) -> tuple[list, str | None]:
        """The cluster's member list (gateway form) and its leader's ID (None without one)."""
        listed = self.any_client(statuses).member_list().get("members", [])
        return listed, member_roles(listed, self.statuses_by_id(listed, statuses))[0]

    def statuses_by_id(self, listed: list[dict], statuses: dict) -> dict:
        by_peer = {member["peer_url"]: member for member in self.members}
        result = {}
        for entry in listed:
            member = next((by_peer[url] for url in entry.get("peerURLs", []) if url in by_peer), None)
            if member is not None:
                result[entry["ID"]] = statuses.get(member["name"])
            else:  # not in the list (grown by someone else, or to be pruned): ask it directly
                result[entry["ID"]] = self._probe_url(entry)
        return result

    def _probe_url(self, entry: dict) -> dict | None:
        for url in entry.get("clientURLs", []):
            try:
                return EtcdClient(url, self.params).status()
            except EtcdError:
                continue
        return None

    # Changing -----------------------------------------------------------------------------
    def act(self, action: str) -> bool:
        """Record an action; True when it is to be carried out (not in check mode)."""
        self.actions.append(action)
        return not self.check_mode

    def _start(self, member: dict, env: dict | None = None) -> None:
        self.service.start(member, env)
        self.done = True

    def _look(self) -> dict:
        """Probe every member; when one answers, refuse a wrong client_url and note the members before."""
        statuses = self.probe_all()
        if any(statuses.values()):
            listed = self.any_client(statuses).member_list().get("members", [])
            self.refuse_wrong_client_url(listed, statuses)
            self.before = sorted(entry.get("name") or hex_id(entry["ID"]) for entry in listed)
        return statuses

    def _refuse_renamed(self, by_peer: dict) -> None:
        for member in self.members:
            entry = by_peer.get(member["peer_url"])
            if entry and entry.get("name") and entry["name"] != member["name"]:
                raise EtcdError(
                    f"the cluster knows peer URL {member['peer_url']} as member {entry['name']}, the list calls it "
                    f"{member['name']}; nothing was changed. Use the cluster's name, or remove that member first."
                )

    def _prune(self, listed: list, client: EtcdClient) -> None:
        wanted = {member["peer_url"] for member in self.members}
        extra = [entry for entry in listed if not wanted & set(entry.get("peerURLs", []))]
        for entry in sorted(extra, key=lambda entry: (entry.get("name", ""), entry["ID"])):
            self._remove(entry, client)

    def ensure(self, learners: bool = False, prune: bool = False) -> dict:
        statuses = self._look()
        if not any(statuses.values()):
            statuses = self._start_from_nothing()
            if statuses is None:  # check mode: nothing runs that could be asked further
                return self.result(None)
        client = self.any_client(statuses)
        listed = client.member_list().get("members", [])
        by_peer = {url: entry for entry in listed for url in entry.get("peerURLs", [])}
        self._refuse_renamed(by_peer)
        # Known members that do not answer: start them again (their data dir has their state).
        for member in self.members:
            entry = by_peer.get(member["peer_url"])
            if entry and entry.get("name") and not statuses[member["name"]] and self.act(f"start {member['name']}"):
                self._start(member)
                self.wait_member_up(member)
        # Added earlier but never started (a run that stopped half-way): start with existing state.
        for member in self.members:
            entry = by_peer.get(member["peer_url"])
            if entry and not entry.get("name") and not statuses[member["name"]]:
                self._start_joining(member, listed, learner=bool(entry.get("isLearner")), ident=entry["ID"])
        # Members the cluster does not know, one at a time, in list order.
        for member in self.members:
            if member["peer_url"] not in by_peer:
                listed = self._add(member, client, learners) or listed
        if prune:
            self._prune(listed, client)
        if self.check_mode and self.actions:
            return self.result(None)
        return self.result(self.wait_leader())

    # One member, on its own host ----------------------------------------------------------
    def member_named(self, name: str) -> dict:
        for member in self.members:
            if member["name"] == name:
                return member
        raise EtcdError(
            f"member {name!r} is not in members ({', '.join(m['name'] for m in self.members)}); give the name of the member "
            "whose host this runs on (roles/cluster_node's cluster_node_member.name), or add it to the members list."
        )

    def ensure_member(self, name: str, learners: bool = False, prune: bool = False) -> dict:
        """Make one member, on its own host, a running member of the cluster (see the module
        docstring). Its init script and data dir are this host's; the others are only asked."""
        me = self.member_named(name)
        statuses = self._look()
        if not any(statuses.values()):
            if not self._start_alone(me):  # check mode, or it waits for members after it in the list
                return self.result(None)
            statuses = self.probe_all()
        client = self.any_client(statuses)
        listed = client.member_list().get("members", [])
        by_peer = {url: entry for entry in listed for url in entry.get("peerURLs", [])}
        self._refuse_renamed(by_peer)
        entry = by_peer.get(me["peer_url"])
        if entry and not statuses[me["name"]]:
            if entry.get("name") and me["data_dir"] and not self.has_data(me):
                # listed and started once, but its data dir is empty now (moved aside to rebuild it):
                # etcd would not start it again; it is removed and added afresh
                self._remove(entry, client, stop=False)
                listed = self._add(me, client, learners) or listed
            elif entry.get("name"):
                if self.act(f"start {me['name']}"):
                    self._start(me)
                    self.wait_member_up(me)
            else:  # added before, never started (a run that stopped half-way)
                self._start_joining(me, listed, learner=bool(entry.get("isLearner")), ident=entry["ID"])
        elif entry is None:
            listed = self._add(me, client, learners) or listed
        if prune:
            self._prune(listed, client)
        if self.check_mode and self.actions:
            return self.result(None)
        return self.result(self.wait_leader())

    def _start_alone(self, me: dict) -> bool:
        """No member answers. True when `me` now answers (bootstrapped, or started and in a quorum);
        False in check mode, or when it was started but needs members later in the list for a quorum."""
        if self.has_data(me):
            if not self.act(f"start {me['name']}"):
                return False
            self._start(me)
            position = self.members.index(me) + 1
            if position < quorum(len(self.members)):
                # a member with state answers once a quorum runs: the members after it in the list
                # (started after it, on their hosts) make one
                self.progress.append(f"{me['name']} started; it answers once {quorum(len(self.members))} members run")
                return False
            try:
                self.wait_member_up(me)
            except EtcdError as exc:
                if exc.details.get("foreign_member"):  # its data is another cluster's: leave it as it was
                    self.service.stop(me)
                    self.done = False
                raise
            return True
        if me is not self.first:
            if self.check_mode:  # the first member's run would have bootstrapped the cluster
                self.act(f"add {me['name']}")
                return False
            raise EtcdError(
                f"no member answers and member {me['name']} has no data: there is no cluster to join yet. The first member, "
                f"{self.first['name']}, bootstraps it: run for {self.first['name']} first (playbooks/cluster.yml runs the members "
                "in list order, one at a time). If the cluster exists, start its members; nothing was changed."
            )
        if not self.act(f"bootstrap {me['name']}"):
            return False
        env = {
            "ETCD_INITIAL_CLUSTER": initial_cluster([(me["name"], me["peer_url"])]),
            "ETCD_INITIAL_CLUSTER_STATE": "new",
            "ETCD_INITIAL_CLUSTER_TOKEN": self.token,
        }
        self._start(me, env)
        self.wait_member_up(me)
        return True

    def _start_from_nothing(self) -> dict | None:
        """No member answers: start the members that have state, or bootstrap the first."""
        with_data = [member for member in self.members if self.has_data(member)]
        if with_data and self.first not in with_data:
            names = ", ".join(member["name"] for member in with_data)
            raise EtcdError(
                f"no member answers and the first member {self.first['name']} has no data, but {names} "
                f"{'has' if len(with_data) == 1 else 'have'} data in {', '.join(m['data_dir'] for m in with_data)}. "
                f"Bootstrapping {self.first['name']} would make a second cluster those cannot rejoin; nothing was changed. "
                "If that data is this cluster's, start those members first; "
                "if not, stop them and move their data dirs aside, then run again."
            )
        if with_data:
            for member in with_data:
                if self.act(f"start {member['name']}"):
                    self._start(member)
            if self.check_mode:
                return None
            try:
                for member in with_data:
                    self.wait_member_up(member)
            except EtcdError as exc:
                if exc.details.get("foreign_member"):  # their data is another cluster's: leave them as they were
                    for member in with_data:
                        self.service.stop(member)
                    self.done = False
                raise
            return self.probe_all()
        if self.act(f"bootstrap {self.first['name']}"):
            env = {
                "ETCD_INITIAL_CLUSTER": initial_cluster([(self.first["name"], self.first["peer_url"])]),
                "ETCD_INITIAL_CLUSTER_STATE": "new",
                "ETCD_INITIAL_CLUSTER_TOKEN": self.token,
            }
            self._start(self.first, env)
            self.wait_member_up(self.first)
            return self.probe_all()
        for member in self.members[1:]:
            self.act(f"add {member['name']}")
        return None

    def _add(self, member: dict, client: EtcdClient, learners: bool) -> list | None:
        if self.has_data(member):
            raise EtcdError(
                f"member {member['name']} is not in the cluster, but its data dir {member['data_dir']} holds state "
                "(another cluster's, or this member's before it was removed): started, it would not join. "
                f"Stop it (/etc/init.d/{member['service']} stop), move {member['data_dir']} aside, and run again.",
                actions=self.actions,
            )
        if not self.act(f"add {member['name']}" + (" as learner" if learners else "")):
            return None

        def add():
            try:
                return client.member_add([member["peer_url"]], learner=learners)
            except EtcdError as exc:
                if any(text in str(exc) for text in RETRIED_ADD_ERRORS):
                    self.progress.append(f"add {member['name']} retried: {exc.details.get('etcd_error', exc)}")
                    return None
                raise

        added = self.wait(f"the cluster to accept member {member['name']} (etcd refuses adds until the last member ran 5 s)", add, 0.5)
        self.done = True
        listed = added.get("members", [])
        self.progress.append(f"{member['name']} added as {hex_id(added['member']['ID'])}")
        self._start_joining(member, listed, learner=learners, ident=added["member"]["ID"], counted=False)
        return self.any_client(self.probe_all()).member_list().get("members", listed)

    def _start_joining(self, member: dict, listed: list, learner: bool, ident: str, counted: bool = True) -> None:
        if counted and not self.act(f"start {member['name']} (added before, never started)"):
            return
        names = {m["peer_url"]: m["name"] for m in self.members}
        pairs = []
        for entry in listed:
            for url in entry.get("peerURLs", []):
                pairs.append((entry.get("name") or names.get(url) or member["name"], url))
        env = {
            "ETCD_INITIAL_CLUSTER": initial_cluster(pairs),
            "ETCD_INITIAL_CLUSTER_STATE": "existing",
            "ETCD_INITIAL_CLUSTER_TOKEN": self.token,
        }
        self._start(member, env)
        self.wait_member_up(member)
        if learner:
            self._promote(member, ident)

    def _promote(self, member: dict, ident: str) -> None:
        def promote():
            client = self.any_client(self.probe_all())
            try:
                client.member_promote(ident)
                return True
            except EtcdError as exc:
                if any(text in str(exc) for text in RETRIED_PROMOTE_ERRORS):
                    return None
                raise

        self.wait(f"learner {member['name']} to catch up with the leader and be promoted", promote, 0.25)
        self.done = True
        self.actions.append(f"promote {member['name']}")
        self.progress.append(f"{member['name']} promoted")

    def _remove(self, entry: dict, client: EtcdClient, stop: bool = True) -> None:
        name = entry.get("name") or hex_id(entry["ID"])
        if not self.act(f"remove {name}"):
            return
        self.wait(f"the cluster to remove member {name}", lambda: client.member_remove(entry["ID"]) or True, 0.25)
        self.done = True
        self.progress.append(f"{name} removed")
        self.wait_leader()  # a removed leader steps down: the next change waits for the new one
        extra = {"name": name, "service": f"etcd-{name}", "data_dir": None}
        if stop and entry.get("name") and NAME_PATTERN.match(name) and self.service.exists(extra):
            self.service.stop(extra)

    # Reporting ----------------------------------------------------------------------------
    def result(self, seen: dict | None) -> dict:
        result = {"changed": bool(self.actions), "actions": self.actions, "progress": self.progress, "cluster_id": hex_id(self.expected)}
        if seen is None:
            result.update(members=[], leader=None, raft_term=None, raft_index=None)
            after = set(self.before)
            for action in self.actions:
                verb, name = action.split()[:2]
                if verb in ("bootstrap", "add"):
                    after.add(name)
                elif verb == "remove":
                    after.discard(name)
            result["diff"] = {"before": {"members": self.before}, "after": {"members": sorted(after)}}
            return result
        result.update(self.describe(seen))
        result["diff"] = {"before": {"members": self.before}, "after": {"members": sorted(m["name"] or m["id"] for m in result["members"])}}
        return result

    def describe(self, seen: dict) -> dict:
        statuses_by_id = self.statuses_by_id(seen["listed"], seen["statuses"])
        health = {}
        members = []
        for entry in seen["listed"]:
            status = statuses_by_id.get(entry["ID"])
            if status is not None:
                try:
                    health[entry["ID"]] = EtcdClient(entry["clientURLs"][0], self.params).health() if entry.get("clientURLs") else False
                except EtcdError:
                    health[entry["ID"]] = False
            members.append(
                {
                    "name": entry.get("name", ""),
                    "id": hex_id(entry["ID"]),
                    "peer_urls": entry.get("peerURLs", []),
                    "client_urls": entry.get("clientURLs", []),
                    "is_learner": bool(entry.get("isLearner")),
                    "role": seen["roles"][entry["ID"]],
                    "healthy": health.get(entry["ID"], False),
                    "raft_index": int(status["raftIndex"]) if status and "raftIndex" in status else None,
                }
            )
        order = {member["name"]: position for position, member in enumerate(self.members)}
        members.sort(key=lambda member: order.get(member["name"], len(order)))
        leader_status = statuses_by_id.get(seen["leader"]) if seen["leader"] else None
        any_status = leader_status or next((s for s in statuses_by_id.values() if s), {})
        leader_name = next((m["name"] for m in members if seen["leader"] and m["id"] == hex_id(seen["leader"])), None)
        return {
            "members": members,
            "leader": leader_name,
            "raft_term": int(any_status.get("raftTerm", 0)) if any_status else None,
            "raft_index": int(any_status.get("raftIndex", 0)) if any_status else None,
        }

    def status(self) -> dict:
        """Read-only: each member's role and health; fails with a 'no quorum' report when no
        member leads."""
        statuses = self.probe_all()
        if not any(statuses.values()):
            raise EtcdError(
                f"no member answers ({', '.join(m['name'] + ' ' + m['client_url'] for m in self.members)}): the cluster is down "
                "or not bootstrapped yet. Start the members (or run raft_bootstrap with state=present).",
                members=[],
            )
        listed = self.any_client(statuses).member_list().get("members", [])
        self.refuse_wrong_client_url(listed, statuses)
        leader, roles = member_roles(listed, self.statuses_by_id(listed, statuses))
        seen = {"listed": listed, "statuses": statuses, "leader": leader, "roles": roles}
        report = self.describe(seen)
        if leader is None:
            order = {member["name"]: position for position, member in enumerate(self.members)}
            voters = sorted((entry for entry in listed if not entry.get("isLearner")), key=lambda e: order.get(e.get("name"), len(order)))
            up = [entry.get("name", hex_id(entry["ID"])) for entry in voters if roles[entry["ID"]] != "down"]
            down = [entry.get("name", hex_id(entry["ID"])) for entry in voters if roles[entry["ID"]] == "down"]
            need = quorum(len(voters))
            missing = max(need - len(up), 1)
            raise EtcdError(
                f"no quorum: {len(up)} of {len(voters)} voting members answer ({', '.join(up) or 'none'}), a leader needs {need}; "
                f"down: {', '.join(down) or 'none'}. The cluster takes no writes until {missing} more "
                f"{'is' if missing == 1 else 'are'} started (raft_bootstrap with state=present starts stopped members).",
                quorum=False,
                **report,
            )
        return dict(report, changed=False, quorum=True, actions=[], cluster_id=hex_id(self.expected))
