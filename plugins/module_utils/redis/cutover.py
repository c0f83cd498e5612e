# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis cutover in one module run (redis_switchover state=switched).

The old primary (source) holds writes with `CLIENT PAUSE <pause_ms> WRITE` - clients wait, and the
pause ends by itself should this process die. Inside the hold: wait for the replica (target) to
reach the source's offset; tell every HAProxy to send new connections to the target (target up,
source drained) and confirm it in `show servers state`; promote the target; then, in one MULTI on
the source, close its client connections and make it the target's replica (held writes are dropped
unacknowledged, their clients reconnect through HAProxy to the target - and no client can send the
source a write between the two and get READONLY); mark the source down on HAProxy and close its
sessions there; release the hold. Each step is timed, the hold is measured. After the hold, once
HAProxy's own checks hold the source down, its drain is lifted (`state ready`): the next cutover
back finds both servers ready.

A failure (or SIGTERM / SIGHUP) undoes what was done, newest first, and releases the hold: the
source is the primary again, the target its replica, HAProxy sends clients to the source. One
exception keeps data: once the target was promoted, clients may have written to it
(`rdb_changes_since_last_save` moved); making it a replica again would discard those writes, so
it stays the primary, the source becomes its replica, and the error says so.
"""

from __future__ import annotations

import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.failpoint import hold as failpoint
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.signals import signals_interrupt
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.proxy import Proxy, locate
from ansible_collections.zerodowntime.migration.plugins.module_utils.redis.client import (
    MAX_PAUSE_MS,
    RedisModuleError,
    call,
    check_can_promote,
    endpoint,
    is_replica_of,
    make_replica,
    pause_writes,
    persist_config,
    replication,
    role_of,
    unpause_writes,
    wait_caught_up,
)

STEPS = (
    "hold_writes",
    "wait_for_catch_up",
    "repoint_haproxy",
    "confirm_haproxy",
    "promote",
    "demote_source",
    "retire_source",
    "release_writes",
)
# Time the hold keeps in reserve after the catch-up for the steps that follow it.
HOLD_RESERVE_MS = 500
# After the hold the source stays drained at least this long: a health check of HAProxy's that read
# role:master before the demotion must not send new connections to it (rise 1 marks it up).
SETTLE_SECONDS = 0.5


def locate_proxies(params: dict) -> list[Proxy]:
    """Every HAProxy answers and has both servers (before anything changes)."""
    sides = [(params[side]["host"], params[side]["port"]) for side in ("source", "target")]
    return locate(params.get("haproxy") or [], *sides, "haproxy_redis_servers")


def check_cutover_params(params: dict) -> None:
    pause_ms = params["pause_ms"]
    if not 0 < pause_ms <= MAX_PAUSE_MS:
        raise RedisModuleError(f"pause_ms {pause_ms} is out of range: give 1 to {MAX_PAUSE_MS} milliseconds (the hold ends by itself then)")
    if params["timeout"] * 1000 + HOLD_RESERVE_MS > pause_ms:
        raise RedisModuleError(
            f"pause_ms {pause_ms} leaves no time after the catch-up (timeout {params['timeout']} s, plus {HOLD_RESERVE_MS} ms for the "
            f"promotion, HAProxy and the release): raise pause_ms or lower timeout. Nothing was changed"
        )
    for entry in params.get("haproxy") or []:
        if not entry.get("socket") or not entry.get("backend"):
            raise RedisModuleError(f"haproxy entry {entry!r} needs socket and backend: give HAProxy's stats socket and its Redis backend")


def switched(params: dict, source, target, check_mode: bool) -> dict:
    src_params, tgt_params = params["source"], params["target"]
    src_info, tgt_info = replication(source, src_params), replication(target, tgt_params)
    before = dict(source=role_of(src_info, src_params), target=role_of(tgt_info, tgt_params))
    proxies = locate_proxies(params)
    result = dict(changed=False, switched=False, commands=[], warnings=[], steps=[])

    def finish(after: dict, **extra) -> dict:
        result.update(extra, diff=dict(before=before, after=after), source_role=after["source"], target_role=after["target"])
        return result

    if tgt_info.get("role") != "slave":
        if not is_replica_of(src_info, tgt_info, tgt_params):
            raise RedisModuleError(
                f"target {endpoint(tgt_params)} is a primary but source {endpoint(src_params)} does not follow it: "
                f"nothing was changed; make the source its replica (state=retired) or give the sides the other way round"
            )
        # Switched before: only HAProxy may still need telling (the source refuses writes already) -
        # a run that ended inside its hold leaves the source drained, or HAProxy not told at all.
        stale = [proxy for proxy in proxies if not proxy.routes_to_target(settled=True)]
        if stale:
            result["changed"] = True
            result["repaired"] = [p.describe() for p in stale]
            if check_mode:
                result["commands"] = [p.command_text(server, what) for p in stale for server, what in settle_plan(p)]
            else:
                for p in stale:
                    for server, what in settle_plan(p):
                        p.tell(result["commands"], server, what)
                confirm(stale, Deadline(max(p.timeout for p in stale)), settled=True)
        return finish(before)

    check_can_promote(src_info, tgt_info, src_params, tgt_params, lambda: replication(target, tgt_params), params["timeout"])
    after = dict(source=f"replica of {endpoint(tgt_params)}", target="primary")
    result["changed"] = True
    if check_mode:
        steps = [dict(step=step) for step in STEPS]
        return finish(after, would_switch=True, steps=steps, commands=planned_commands(params, proxies))
    run_cutover(params, source, target, proxies, result)
    undrain(proxies, result)
    if params["persist"]:  # outside the hold: a restart keeps the new roles
        for client, side in ((target, tgt_params), (source, src_params)):
            persist_config(client, side, result["warnings"])
            result["commands"].append(f"CONFIG REWRITE (on {endpoint(side)})")
    return finish(after, switched=True)


def settle_plan(p: Proxy) -> list[tuple[str, str]]:
    """What tells one HAProxy, after a switch, to send clients to the target and nothing to the source."""
    return [
        (p.target_server, "state ready"),
        (p.target_server, "health up"),
        (p.source_server, "health down"),
        (p.source_server, "shutdown"),
        (p.source_server, "state ready"),
    ]


def planned_commands(params: dict, proxies: list[Proxy]) -> list[str]:
    src, tgt = params["source"], params["target"]
    src_at, tgt_at = f" (on {endpoint(src)})", f" (on {endpoint(tgt)})"
    commands = [f"CLIENT PAUSE {params['pause_ms']} WRITE{src_at}"]
    for p in proxies:
        commands += [p.command_text(p.target_server, "health up"), p.command_text(p.source_server, "state drain")]
    commands.append(f"REPLICAOF NO ONE{tgt_at}")
    commands.append(f"MULTI, CLIENT KILL TYPE normal SKIPME yes, REPLICAOF {tgt['host']} {tgt['port']}, EXEC{src_at}")
    for p in proxies:
        commands += [p.command_text(p.source_server, "health down"), p.command_text(p.source_server, "shutdown")]
    commands.append(f"CLIENT UNPAUSE{src_at}")
    return [*commands, *(p.command_text(p.source_server, "state ready") for p in proxies)]


def repoint(proxies: list[Proxy], result: dict) -> None:
    """New connections to the target; the source's sessions stay (held) until it is retired."""
    for p in proxies:
        if p.target_server in runtime.drained(p.rows()):  # left drained by a run that died: a primary must take connections
            p.tell(result["commands"], p.target_server, "state ready")
        p.tell(result["commands"], p.target_server, "health up")
        p.tell(result["commands"], p.source_server, "state drain")


def confirm(proxies: list[Proxy], deadline: Deadline, settled: bool = False) -> None:
    def wrong() -> list[str]:
        return [p.describe() for p in proxies if not p.routes_to_target(settled)]

    def not_confirmed(still_wrong: list[str]) -> None:
        raise RedisModuleError(
            f"HAProxy {', '.join(still_wrong)} does not show the target up and the source drained or down within "
            f"{deadline.seconds:.1f} s (show servers state): check that neither server is in maintenance there"
        )

    poll(wrong, deadline, not_confirmed, ready=lambda still_wrong: not still_wrong, interval=0.005)


def demote_and_retire(source, src: dict, tgt: dict) -> tuple[int, list[str]]:
    """One MULTI on the source: close its normal clients' connections and make it the target's
    replica, so that no client can send it a write in between (it would get READONLY). Returns the
    connections killed and the commands (no password)."""
    pipe = source.pipeline(transaction=True)
    commands = []
    if tgt.get("password"):
        pipe.execute_command("CONFIG", "SET", "masterauth", tgt["password"])
        commands.append("CONFIG SET masterauth ********")
    if tgt.get("username"):
        pipe.execute_command("CONFIG", "SET", "masteruser", tgt["username"])
        commands.append(f"CONFIG SET masteruser {tgt['username']}")
    pipe.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    pipe.execute_command("REPLICAOF", tgt["host"], str(tgt["port"]))
    try:
        answers = pipe.execute()
    except Exception as exc:  # redis.RedisError, without importing redis here
        raise RedisModuleError(f"MULTI (CLIENT KILL, REPLICAOF) on {endpoint(src)} failed: {exc}") from None
    killed = int(answers[-2])
    return killed, ["MULTI", *commands, "CLIENT KILL TYPE normal SKIPME yes", f"REPLICAOF {tgt['host']} {tgt['port']}", "EXEC"]


def check_source_still(source, src: dict, offset: int) -> None:
    moved = int(replication(source, src)["master_repl_offset"])
    if moved != offset:
        raise RedisModuleError(
            f"source {endpoint(src)} took writes after the target caught up (offset {offset} -> {moved}): "
            f"its hold did not hold them; look for clients exempt from CLIENT PAUSE"
        )


def undrain(proxies: list[Proxy], result: dict) -> None:
    """After the hold: lift the source's drain once HAProxy's checks hold it down (a replica fails them)."""
    time.sleep(SETTLE_SECONDS)
    for p in proxies:
        deadline = Deadline(p.timeout)
        while p.source_server in runtime.running(p.rows()) and not deadline.passed:
            time.sleep(0.02)
        if p.source_server in runtime.running(p.rows()):
            result["warnings"].append(
                f"HAProxy {p.describe()} still shows {p.source_server} (now a replica) up {p.timeout} s after the hold: it stays "
                f"drained there; check its health check (role:master), then `set server {p.backend}/{p.source_server} state ready`"
            )
            continue
        p.tell(result["commands"], p.source_server, "state ready")


def run_cutover(params: dict, source, target, proxies: list[Proxy], result: dict) -> None:
    """The critical section: everything between CLIENT PAUSE and CLIENT UNPAUSE on the source."""
    src, tgt = params["source"], params["target"]
    src_at, tgt_at = f" (on {endpoint(src)})", f" (on {endpoint(tgt)})"
    hold = Deadline(params["pause_ms"] / 1000.0)
    done: list[str] = []
    current = {"step": "hold_writes", "started": time.monotonic()}
    target_changes = None  # the target's write count right after its promotion

    def begin(step: str) -> None:
        failpoint(current["step"])  # tests only: sleep after the step that just ended
        now = time.monotonic()
        result["steps"].append(dict(step=current["step"], ms=round((now - current["started"]) * 1000, 1)))
        current.update(step=step, started=now)

    with signals_interrupt():
        try:
            result["hold_started"] = time.time()
            pause_writes(source, src, params["pause_ms"], "write")
            result["commands"].append(f"CLIENT PAUSE {params['pause_ms']} WRITE{src_at}")
            done.append("hold_writes")
            begin("wait_for_catch_up")
            result.update(wait_caught_up(source, src, target, tgt, params["timeout"]))
            begin("repoint_haproxy")
            done.append("repoint_haproxy")  # before the first command: a half-told HAProxy is undone too
            repoint(proxies, result)
            begin("confirm_haproxy")
            confirm(proxies, Deadline(min(max(p.timeout for p in proxies) if proxies else 0, hold.remaining())))
            begin("promote")
            call(target, tgt, "REPLICAOF", "NO", "ONE")
            done.append("promote")
            result["commands"].append(f"REPLICAOF NO ONE{tgt_at}")
            # Writes the target takes from here on are clients' writes (it follows nobody).
            target_changes = changes_since_save(target, tgt)
            check_source_still(source, src, result["source_offset"])
            begin("demote_source")
            killed, commands = demote_and_retire(source, src, tgt)
            done.append("demote_source")
            result["killed_clients"] = killed
            result["commands"].append(", ".join(commands) + src_at)
            begin("retire_source")
            for p in proxies:
                p.tell(result["commands"], p.source_server, "health down")
                p.tell(result["commands"], p.source_server, "shutdown")
            if hold.passed:  # the switch holds; clients only saw errors meanwhile
                result["warnings"].append(
                    f"the cutover took longer than pause_ms ({params['pause_ms']} ms): the hold ended before the clients moved, "
                    f"and the source refused or took their writes meanwhile; raise pause_ms"
                )
            begin("release_writes")
            unpause_writes(source, src)
            result["commands"].append(f"CLIENT UNPAUSE{src_at}")
            begin("done")  # closes release_writes' timing
            result["hold_ms"] = round(hold.elapsed() * 1000, 1)
        except Exception as exc:
            failed_step = current["step"]
            try:
                kept = undo(params, source, target, proxies, done, target_changes, result)
            except Exception as undo_exc:
                raise RedisModuleError(
                    f"the Redis cutover failed at {failed_step} ({exc}) and its undo failed too "
                    f"({undo_exc}); steps done: {', '.join(done)}. The hold ends by itself "
                    f"after pause_ms. Look at both servers' roles (INFO replication) and HAProxy's servers before anything else",
                    failed_step=failed_step,
                    steps=result["steps"],
                    changed=True,
                ) from None
            hold_ms = round(hold.elapsed() * 1000, 1)
            if kept:
                outcome = (
                    f"The target {endpoint(tgt)} stays the primary: clients wrote to it after the promotion, and making it a replica "
                    f"again would discard those writes; the source {endpoint(src)} follows it. Fix the cause and run again "
                    f"(the run tells the HAProxies that are left)"
                )
            else:
                undone = ", ".join(reversed(done)) or "nothing to undo"
                outcome = f"Undone ({undone}): {endpoint(src)} is the primary and serves writes again"
            message = str(exc) or type(exc).__name__
            raise RedisModuleError(
                f"the Redis cutover failed at {failed_step}: {message}. {outcome}.",
                failed_step=failed_step,
                undone=[] if kept else list(reversed(done)),
                target_kept_as_primary=kept,
                hold_ms=hold_ms,
                steps=result["steps"],
                changed=bool(done),
            ) from None


def changes_since_save(client, params: dict) -> int:
    return int(call(client, params, "INFO", "persistence").get("rdb_changes_since_last_save", 0))


def undo(params: dict, source, target, proxies: list[Proxy], done: list[str], target_changes, result: dict) -> bool:
    """Undo `done`, newest first; True when the target had to stay the primary (it took writes)."""
    src, tgt = params["source"], params["target"]
    kept = "promote" in done and target_changes is not None and changes_since_save(target, tgt) != target_changes
    try:
        if kept:  # finish the switch: the target holds the newest writes
            if "demote_source" not in done:
                demote_and_retire(source, src, tgt)
            for p in proxies:
                for server, what in settle_plan(p):
                    p.tell(result["commands"], server, what)
            return True
        if "demote_source" in done:
            call(source, src, "REPLICAOF", "NO", "ONE")
        if "promote" in done:
            make_replica(target, tgt, src)
        if "repoint_haproxy" in done:
            for p in proxies:
                p.tell(result["commands"], p.source_server, "state ready")
                p.tell(result["commands"], p.source_server, "health up")
                p.tell(result["commands"], p.target_server, "health down")
        return False
    finally:
        if "hold_writes" in done:
            unpause_writes(source, src)
