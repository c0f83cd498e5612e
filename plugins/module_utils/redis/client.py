# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis for the collection's modules: connect and fail clearly, pause and unpause writes, find
out whether writes are paused, wait for a replica to catch up, promote and demote.

Redis (>= 6.2) holds write commands during `CLIENT PAUSE <ms> WRITE` (they run when the pause
ends, they are not refused) and has no command that says whether a pause is in effect. So
`write_pause_active` asks with a probe: a DEL of a random key that does not exist, on a connection
of its own with a short read timeout. A DEL is a write command, so a pause holds it; a DEL of an
absent key changes nothing and is not replicated. No answer within the probe timeout = writes are
paused (the held DEL runs later and still does nothing).

Messages name the server as host:port and never contain the password. Every connection is made
without redis-py's retries (a retried command could wait out a pause unnoticed).
"""

from __future__ import annotations

import re
import uuid

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import Library

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # reported by the modules with missing_required_lib
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = exc
else:
    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None

MIN_VERSION = (6, 2)
MAX_PAUSE_MS = 600_000  # 10 minutes: a freeze longer than that is a mistake, not a cutover
PAUSE_MODES = ("write", "all")

# The connection options every Redis module takes (as a dict's suboptions or at the top level).
CONNECTION_OPTIONS = dict(
    host=dict(type="str", default="127.0.0.1"),
    port=dict(type="int", default=6379),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    tls=dict(type="bool", default=False),
    tls_ca_cert=dict(type="path"),
    connect_timeout=dict(type="float", default=5.0),
)


REDIS = Library(HAS_REDIS, "redis", REDIS_IMPORT_ERROR)


class RedisModuleError(ModuleError):
    """A failure to report with fail_json: a message naming the problem and the fix, and details."""


def endpoint(params: dict) -> str:
    return f"{params['host']}:{params['port']}"


def check_connection_params(params: dict, what: str = "Redis") -> None:
    port = params.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise RedisModuleError(f"{what}: port {port!r} is not a TCP port: give a port from 1 to 65535")
    timeout = params.get("connect_timeout")
    if timeout is None or not 0 < timeout <= 300:
        raise RedisModuleError(f"{what}: connect_timeout {timeout!r} is out of range: give seconds, more than 0 and at most 300")


def open_client(params: dict, read_timeout: float | None = None):
    """A redis.Redis for the connection options (not yet connected)."""
    kwargs = dict(
        host=params["host"],
        port=params["port"],
        username=params.get("username"),
        password=params.get("password"),
        socket_connect_timeout=params["connect_timeout"],
        socket_timeout=read_timeout if read_timeout is not None else max(params["connect_timeout"], 5.0),
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    if params.get("tls"):
        kwargs.update(ssl=True, ssl_ca_certs=params.get("tls_ca_cert"))
    return redis.Redis(**kwargs)


def explain(exc: Exception, params: dict) -> str:
    """What went wrong with the server at host:port, and what to do (never the password)."""
    where = f"Redis at {endpoint(params)}"
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
        if not params.get("password"):
            return f"{where} requires a password (authentication failed: {exc}): set the password option"
        return f"{where} refused the password (authentication failed: {exc}): check the password (and username) options"
    if isinstance(exc, redis.TimeoutError):
        return (
            f"{where} did not answer in time ({exc}): check that it runs and that host, port and tls are right "
            f"(a CLIENT PAUSE ALL holds every command, AUTH included, until its own timeout ends it)"
        )
    if isinstance(exc, redis.ConnectionError):
        return f"cannot connect to {where} ({exc}): check that Redis runs there and that host, port and tls are right"
    return f"{where} failed: {exc}"


def connect(params: dict, read_timeout: float | None = None):
    """A connected, authenticated client; a RedisModuleError naming host:port otherwise."""
    client = open_client(params, read_timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise RedisModuleError(explain(exc, params)) from None
    return client


def call(client, params: dict, *command):
    """execute_command with errors turned into RedisModuleError naming the server."""
    try:
        return client.execute_command(*command)
    except redis.RedisError as exc:
        raise RedisModuleError(f"{command[0]} {' '.join(map(str, command[1:2]))} failed: {explain(exc, params)}") from None


def parse_version(text: str) -> tuple[int, ...]:
    """(7, 0, 15) from "7.0.15"; each part's leading digits ("2-rc1" -> 2)."""
    parts = []
    for part in str(text).split("."):
        digits = re.match(r"\d*", part).group()
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def require_version(client, params: dict) -> str:
    """Redis's version (INFO server redis_version); fails below 6.2 (no CLIENT PAUSE WRITE / UNPAUSE)."""
    return check_version(str(call(client, params, "INFO", "server").get("redis_version", "0")), params)


def check_version(version: str, params: dict) -> str:
    if parse_version(version) < MIN_VERSION:
        raise RedisModuleError(
            f"Redis at {endpoint(params)} is version {version}; pausing writes needs Redis 6.2 or later "
            f"(CLIENT PAUSE ... WRITE and CLIENT UNPAUSE): upgrade Redis to 6.2+ before the cutover",
            redis_version=version,
        )
    return version


def replication(client, params: dict) -> dict:
    return call(client, params, "INFO", "replication")


def write_pause_active(params: dict, probe_timeout_ms: int) -> bool:
    """Whether the server holds write commands now (see the module docstring: a DEL probe)."""
    probe = open_client(params, read_timeout=probe_timeout_ms / 1000.0)
    try:
        # The handshake (AUTH/HELLO) runs under the same read timeout: CLIENT PAUSE ALL holds it too.
        probe.execute_command("DEL", f"zerodowntime.migration:pause-probe:{uuid.uuid4().hex}")
    except redis.TimeoutError:
        return True
    except redis.ResponseError:
        return False  # answered (e.g. READONLY on a replica): not held
    except redis.RedisError as exc:
        raise RedisModuleError(explain(exc, params)) from None
    finally:
        probe.close()
    return False


def pause_writes(client, params: dict, duration_ms: int, mode: str) -> None:
    call(client, params, "CLIENT", "PAUSE", int(duration_ms), mode.upper())


def unpause_writes(client, params: dict) -> None:
    call(client, params, "CLIENT", "UNPAUSE")


def check_pause_params(state: str, duration_ms, mode: str, probe_timeout_ms) -> None:
    if state == "paused":
        if duration_ms is None:
            raise RedisModuleError("duration_ms is required with state=paused: give how long the pause may last at most (ms)")
        if not 0 < duration_ms <= MAX_PAUSE_MS:
            raise RedisModuleError(
                f"duration_ms {duration_ms} is out of range: give 1 to {MAX_PAUSE_MS} milliseconds (the pause ends by itself then)"
            )
    if mode not in PAUSE_MODES:
        raise RedisModuleError(f"mode {mode!r} is not one of {', '.join(PAUSE_MODES)}")
    if not 10 <= probe_timeout_ms <= 10_000:
        raise RedisModuleError(f"probe_timeout_ms {probe_timeout_ms} is out of range: give 10 to 10000 milliseconds")


def ensure_write_pause(params: dict, check_mode: bool) -> dict:
    """state=paused: CLIENT PAUSE (always changed: it sets or extends the deadline).
    state=unpaused: CLIENT UNPAUSE when the probe finds writes held (else changed=false)."""
    check_connection_params(params)
    state, mode = params["state"], params["mode"]
    check_pause_params(state, params.get("duration_ms"), mode, params["probe_timeout_ms"])
    client = connect(params)
    try:
        version = require_version(client, params)
        was_paused = write_pause_active(params, params["probe_timeout_ms"])
        result = dict(changed=False, redis_version=version, was_paused=was_paused, commands=[])
        if state == "paused":
            command = f"CLIENT PAUSE {params['duration_ms']} {mode.upper()}"
            result.update(changed=True, paused=True, commands=[command], duration_ms=params["duration_ms"], mode=mode)
            if not check_mode:
                pause_writes(client, params, params["duration_ms"], mode)
        else:
            result["paused"] = False
            if was_paused:
                result.update(changed=True, commands=["CLIENT UNPAUSE"])
                if not check_mode:
                    unpause_writes(client, params)
        result["diff"] = dict(
            before=dict(endpoint=endpoint(params), paused=was_paused),
            after=dict(endpoint=endpoint(params), paused=result["paused"]),
        )
        if state == "paused":
            result["diff"]["after"].update(duration_ms=params["duration_ms"], mode=mode)
        return result
    finally:
        client.close()


# Switchover: wait for the replica, promote it, retire the old primary, roll back -----------------


def wait_caught_up(source, source_params: dict, target, target_params: dict, timeout: float, poll_ms: float = 5) -> dict:
    """Wait until the target (a replica) has applied the source's master_repl_offset read now."""
    source_offset = int(replication(source, source_params)["master_repl_offset"])
    deadline = Deadline(timeout)

    def target_offset(info: dict) -> int:
        return int(info.get("slave_repl_offset", info.get("master_repl_offset", -1)))

    def not_caught_up(info: dict):
        raise RedisModuleError(
            f"{endpoint(target_params)} did not catch up with {endpoint(source_params)} within {timeout} s "
            f"(replica offset {target_offset(info)}, primary offset {source_offset}, link {info.get('master_link_status')}); "
            f"nothing was promoted: unpause the source and look at the replication link, or raise timeout",
            source_offset=source_offset,
            target_offset=target_offset(info),
        )

    info = poll(
        lambda: replication(target, target_params),
        deadline,
        not_caught_up,
        ready=lambda info: target_offset(info) >= source_offset,
        interval=poll_ms / 1000.0,
    )
    return dict(source_offset=source_offset, target_offset=target_offset(info), waited_ms=round(deadline.elapsed() * 1000, 1))


def is_replica_of(replica_info: dict, primary_info: dict, primary_params: dict) -> bool:
    """The replica follows this primary: same replication id, or its master is host:port."""
    if replica_info.get("role") != "slave":
        return False
    if replica_info.get("master_replid") and replica_info.get("master_replid") == primary_info.get("master_replid"):
        return True
    return str(replica_info.get("master_host")) == str(primary_params["host"]) and int(replica_info.get("master_port", 0)) == int(
        primary_params["port"]
    )


def make_replica(client, params: dict, primary_params: dict) -> list[str]:
    """REPLICAOF primary (masterauth from the primary's password first); returns the commands (no password)."""
    commands = []
    if primary_params.get("password"):
        call(client, params, "CONFIG", "SET", "masterauth", primary_params["password"])
        commands.append("CONFIG SET masterauth ********")
    if primary_params.get("username"):
        call(client, params, "CONFIG", "SET", "masteruser", primary_params["username"])
        commands.append(f"CONFIG SET masteruser {primary_params['username']}")
    call(client, params, "REPLICAOF", primary_params["host"], str(primary_params["port"]))
    commands.append(f"REPLICAOF {primary_params['host']} {primary_params['port']}")
    return commands


def persist_config(client, params: dict, warnings: list) -> None:
    """CONFIG REWRITE, so a restart keeps the new role; a failure is a warning (the change holds until restart)."""
    try:
        client.execute_command("CONFIG", "REWRITE")
    except redis.RedisError as exc:
        warnings.append(
            f"CONFIG REWRITE on {endpoint(params)} failed ({exc}): the new role holds until Redis restarts; "
            f"write it into the instance's configuration (roles/redis variables) before a restart"
        )


SWITCHOVER_STATES = ("promoted", "retired", "replica", "switched")

# Redis Sentinel names its two connections to every server it watches (the primary and each of its
# replicas) `sentinel-<first 8 characters of its run id>-cmd` / `-pubsub`, and every 2 s publishes a
# hello on the server's __sentinel__:hello channel: "ip,port,runid,epoch,master name,master ip,...".
SENTINEL_CLIENT_NAME = re.compile(r"^sentinel-([0-9a-f]{8})-(?:cmd|pubsub)$")
SENTINEL_HELLO_CHANNEL = "__sentinel__:hello"
SENTINEL_HELLO_WAIT = 2.5  # seconds: one hello period of Sentinel's, and some


def sentinel_ids(client, params: dict) -> dict[str, str]:
    """The Sentinels connected to this server: {run id prefix: the address they connect from}.
    Without CLIENT LIST (an ACL refuses it), PUBSUB NUMSUB of the hello channel still shows them."""
    try:
        clients = client.execute_command("CLIENT", "LIST")
    except redis.ResponseError:
        clients = None
    if clients is not None:
        if not isinstance(clients, list):  # redis-py parses CLIENT LIST into dicts; older ones may not
            clients = [dict(f.split("=", 1) for f in line.split(" ") if "=" in f) for line in clients.splitlines()]
        found = {}
        for row in clients:
            match = SENTINEL_CLIENT_NAME.match(str(row.get("name") or ""))
            if match:
                found.setdefault(match.group(1), str(row.get("addr")))
        if found:
            return found
    try:
        count = sum(int(number) for _channel, number in client.pubsub_numsub(SENTINEL_HELLO_CHANNEL))
    except redis.RedisError as exc:
        raise RedisModuleError(f"PUBSUB NUMSUB {SENTINEL_HELLO_CHANNEL} failed: {explain(exc, params)}") from None
    return {f"unnamed-{number}": "unknown" for number in range(1, count + 1)}


def sentinel_hellos(client, wanted: set[str], wait: float) -> dict[str, dict]:
    """The hellos Sentinels publish on this server, at most `wait` seconds or until every run id
    prefix in `wanted` was heard: {run id prefix: {address, master, watches}}."""
    heard: dict[str, dict] = {}
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(SENTINEL_HELLO_CHANNEL)
        deadline = Deadline(wait)
        while not deadline.passed and not wanted <= set(heard):
            message = pubsub.get_message(timeout=min(0.2, max(deadline.remaining(), 0.01)))
            if not message or message.get("type") != "message":
                continue
            fields = str(message["data"]).split(",")
            if len(fields) >= 7:
                heard[fields[2][:8]] = dict(address=f"{fields[0]}:{fields[1]}", master=fields[4], watches=f"{fields[5]}:{fields[6]}")
    except redis.RedisError:
        pass  # the addresses are a courtesy: the Sentinels were found already
    finally:
        pubsub.close()
    return heard


def watching_sentinels(servers: list[tuple]) -> list[dict]:
    """Every Sentinel connected to one of `servers` ((client, params) pairs): its address and the
    name it monitors the primary by (from its hello), else its run id prefix and where it connects
    from. Sentinel connects to the primary and to each replica it learnt of, so either side shows it."""
    found: dict[str, dict] = {}
    for client, params in servers:
        for run_id, peer in sentinel_ids(client, params).items():
            found.setdefault(run_id, dict(id=run_id, connected_from=peer, seen_on=endpoint(params)))
    if not found:
        return []
    wanted = {run_id for run_id in found if not run_id.startswith("unnamed-")}
    for client, _params in servers:
        missing = wanted - {run_id for run_id, entry in found.items() if "address" in entry}
        if not missing:
            break
        for run_id, hello in sentinel_hellos(client, missing, SENTINEL_HELLO_WAIT).items():
            if run_id in found:
                found[run_id].update(hello)
    return sorted(found.values(), key=lambda entry: (entry.get("address", ""), entry["id"]))


def refuse_if_sentinel_watches(source, src_params: dict, target, tgt_params: dict) -> None:
    """Refuse (changing nothing) when a Redis Sentinel watches the pair: two controllers of one
    primary fight - Sentinel would see the promoted target as a rogue primary, or the source it
    still monitors go away, and fail over or reconfigure the servers behind this module's back."""
    sentinels = watching_sentinels([(source, src_params), (target, tgt_params)])
    if not sentinels:
        return
    names = sorted({entry["master"] for entry in sentinels if entry.get("master")}) or ["<master-name>"]
    listed = ", ".join(
        f"{entry['address']} (monitors {entry['master']} at {entry['watches']})"
        if "address" in entry
        else f"sentinel-{entry['id']} (connected from {entry['connected_from']})"
        for entry in sentinels
    )
    name = names[0] if len(names) == 1 else "<master-name>"
    raise RedisModuleError(
        f"{len(sentinels)} Redis Sentinel(s) watch source {endpoint(src_params)} / target {endpoint(tgt_params)}: {listed}. "
        f"Nothing was changed: a switchover by this module would fight Sentinel's own failover. Either let Sentinel switch "
        f"(`SENTINEL FAILOVER {name}` on one of them; clients that ask Sentinel for the primary follow it), or "
        f"remove the monitor first (`SENTINEL REMOVE {name}` on every one of them) and run this module again",
        sentinels=[entry.get("address", f"sentinel-{entry['id']}") for entry in sentinels],
        sentinel_masters=sorted({entry["master"] for entry in sentinels if entry.get("master")}),
    )


def role_of(info: dict, params: dict) -> str:
    if info.get("role") == "slave":
        return f"replica of {info.get('master_host')}:{info.get('master_port')}"
    return "primary"


def check_switchover_params(params: dict) -> None:
    for side in ("source", "target"):
        check_connection_params(params[side], what=side)
    if (params["source"]["host"], params["source"]["port"]) == (params["target"]["host"], params["target"]["port"]):
        raise RedisModuleError("source and target are the same server: give the old primary as source and its replica as target")
    if not 0 < params["timeout"] <= 300:
        raise RedisModuleError(f"timeout {params['timeout']} is out of range: give seconds, more than 0 and at most 300")
    if not 10 <= params["probe_timeout_ms"] <= 10_000:
        raise RedisModuleError(f"probe_timeout_ms {params['probe_timeout_ms']} is out of range: give 10 to 10000 milliseconds")


def ensure_switchover(params: dict, check_mode: bool, step=None) -> dict:
    """Bring source (old primary) and target (its replica, the new primary) to params['state'];
    `step(params, source, target, check_mode)` does it once both are connected (switchover_step
    by default; redis/cutover.py's for state=switched)."""
    check_switchover_params(params)
    src_params, tgt_params = params["source"], params["target"]
    source = connect(src_params)
    try:
        target = connect(tgt_params)
        try:
            for client, side in ((source, src_params), (target, tgt_params)):
                require_version(client, side)
            refuse_if_sentinel_watches(source, src_params, target, tgt_params)
            return (step or switchover_step)(params, source, target, check_mode)
        finally:
            target.close()
    finally:
        source.close()


def switchover_step(params: dict, source, target, check_mode: bool) -> dict:
    src_params, tgt_params, state = params["source"], params["target"], params["state"]
    src_info, tgt_info = replication(source, src_params), replication(target, tgt_params)
    before = dict(source=role_of(src_info, src_params), target=role_of(tgt_info, tgt_params))
    result = dict(changed=False, commands=[], warnings=[])
    src_at, tgt_at = f" (on {endpoint(src_params)})", f" (on {endpoint(tgt_params)})"

    def finish(after: dict) -> dict:
        result["diff"] = dict(before=before, after=after)
        result.update(source_role=after["source"], target_role=after["target"])
        return result

    if state == "promoted":
        return promote(params, source, target, src_info, tgt_info, result, finish, check_mode)

    if state == "retired":
        if tgt_info.get("role") == "slave":
            raise RedisModuleError(
                f"target {endpoint(tgt_params)} is still a replica: nothing was changed; promote it first (state=promoted)"
            )
        follows = is_replica_of(src_info, tgt_info, tgt_params)
        # Clients are killed while the source still holds writes (the held ones are dropped): once
        # it follows the target and holds nothing, it is retired and a run changes nothing.
        kill = params["kill_clients"] and write_pause_active(src_params, params["probe_timeout_ms"])
        if follows and not kill:
            return finish(before)
        result["changed"] = True
        after = dict(before, source=f"replica of {endpoint(tgt_params)}")
        if check_mode:
            result["commands"] = ([] if follows else [f"REPLICAOF {tgt_params['host']} {tgt_params['port']}{src_at}"]) + (
                [f"CLIENT KILL TYPE normal SKIPME yes{src_at}"] if kill else []
            )
            return finish(after)
        if not follows:
            result["commands"] = [command + src_at for command in make_replica(source, src_params, tgt_params)]
            if params["persist"]:
                persist_config(source, src_params, result["warnings"])
                result["commands"].append("CONFIG REWRITE" + src_at)
        if kill:
            # Writes still held by the pause are dropped with their connections (never acknowledged):
            # their clients reconnect (through the proxy) to the new primary.
            result["killed_clients"] = int(call(source, src_params, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
            result["commands"].append("CLIENT KILL TYPE normal SKIPME yes" + src_at)
        return finish(after)

    # state == "replica": undo a promotion, the target follows the source again
    src_follows_target = is_replica_of(src_info, tgt_info, tgt_params)
    if src_info.get("role") == "slave" and not src_follows_target:
        raise RedisModuleError(
            f"source {endpoint(src_params)} is a replica of {src_info.get('master_host')}:{src_info.get('master_port')}, not of "
            f"the target: nothing was changed; give the serving primary as source"
        )
    if not src_follows_target and is_replica_of(tgt_info, src_info, src_params):
        return finish(before)
    result["changed"] = True
    after = dict(source="primary", target=f"replica of {endpoint(src_params)}")
    result["commands"] = ([f"REPLICAOF NO ONE{src_at}"] if src_follows_target else []) + [
        f"REPLICAOF {src_params['host']} {src_params['port']}{tgt_at}"
    ]
    if check_mode:
        return finish(after)
    if src_follows_target:
        call(source, src_params, "REPLICAOF", "NO", "ONE")
        if params["persist"]:
            persist_config(source, src_params, result["warnings"])
    result["commands"] = result["commands"][:1] if src_follows_target else []
    result["commands"] += [command + tgt_at for command in make_replica(target, tgt_params, src_params)]
    if params["persist"]:
        persist_config(target, tgt_params, result["warnings"])
        result["commands"].append("CONFIG REWRITE" + tgt_at)
    return finish(after)


def check_can_promote(src_info: dict, tgt_info: dict, src_params: dict, tgt_params: dict, reread=None, timeout: float = 0.0) -> dict:
    """The target (a replica) follows the source over a live link: promoting it loses nothing.
    A link still coming up (a replica just re-pointed, syncing) is waited for, at most `timeout`
    seconds, re-reading the target's replication section with `reread`; returns the last one."""
    if not is_replica_of(tgt_info, src_info, src_params):
        raise RedisModuleError(
            f"target {endpoint(tgt_params)} is a replica of {tgt_info.get('master_host')}:{tgt_info.get('master_port')}, "
            f"not of source {endpoint(src_params)}: nothing was changed; give the target's primary as source"
        )
    if tgt_info.get("master_link_status") != "up" and reread is not None:
        tgt_info = poll(reread, Deadline(timeout), None, ready=lambda info: info.get("master_link_status") == "up", interval=0.1)
    if tgt_info.get("master_link_status") != "up":
        raise RedisModuleError(
            f"target {endpoint(tgt_params)}'s replication link to {endpoint(src_params)} is "
            f"{tgt_info.get('master_link_status')} (waited {timeout:g} s for it): nothing was changed; "
            f"fix replication (masterauth, network) first, or raise timeout if the replica is still syncing"
        )
    return tgt_info


def promote(params: dict, source, target, src_info: dict, tgt_info: dict, result: dict, finish, check_mode: bool) -> dict:
    """Wait for the target, promote it, and (demote_source) make the source its replica at once: from
    then on the source refuses writes (READONLY) even if its pause ends before the clients move."""
    src_params, tgt_params = params["source"], params["target"]
    src_at, tgt_at = f" (on {endpoint(src_params)})", f" (on {endpoint(tgt_params)})"
    before = dict(source=role_of(src_info, src_params), target=role_of(tgt_info, tgt_params))
    if tgt_info.get("role") != "slave":
        return finish(before)  # already primary: nothing to do
    check_can_promote(src_info, tgt_info, src_params, tgt_params, lambda: replication(target, tgt_params), params["timeout"])
    if params["require_source_paused"] and not write_pause_active(src_params, params["probe_timeout_ms"]):
        raise RedisModuleError(
            f"source {endpoint(src_params)} does not hold writes: a write after the catch-up would be lost. Nothing was "
            f"changed; pause it first (zerodowntime.migration.redis_write_pause state=paused)"
        )
    result["changed"] = True
    result["commands"] = ["REPLICAOF NO ONE" + tgt_at]
    after = dict(before, target="primary")
    if params["demote_source"]:
        result["commands"].append(f"REPLICAOF {tgt_params['host']} {tgt_params['port']}{src_at}")
        after["source"] = f"replica of {endpoint(tgt_params)}"
    if check_mode:
        return finish(after)
    result.update(wait_caught_up(source, src_params, target, tgt_params, params["timeout"]))
    call(target, tgt_params, "REPLICAOF", "NO", "ONE")
    result["commands"] = ["REPLICAOF NO ONE" + tgt_at]
    # The source's offset must not have moved: else a write reached it after the catch-up (the
    # pause ended too early) and is not on the target.
    moved = int(replication(source, src_params)["master_repl_offset"])
    if moved != result["source_offset"]:
        raise RedisModuleError(
            f"source {endpoint(src_params)} took writes after the target caught up (offset {result['source_offset']} -> "
            f"{moved}; did the pause end?): the target {endpoint(tgt_params)} was promoted without them. "
            f"Make the target a replica again (state=replica), unpause the source, and retry with a longer duration_ms",
            promoted=True,
            changed=True,
            source_offset=result["source_offset"],
            source_offset_now=moved,
        )
    if params["demote_source"]:
        result["commands"] += [command + src_at for command in make_replica(source, src_params, tgt_params)]
    if params["persist"]:
        persist_config(target, tgt_params, result["warnings"])
        result["commands"].append("CONFIG REWRITE" + tgt_at)
        if params["demote_source"]:
            persist_config(source, src_params, result["warnings"])
            result["commands"].append("CONFIG REWRITE" + src_at)
    return finish(after)
