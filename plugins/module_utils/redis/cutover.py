# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis cutover in one module run (redis_switchover state=switched).

The old primary (source) holds writes with `CLIENT PAUSE <pause_ms> WRITE` - clients wait, and the
pause ends by itself should this process die. Inside the hold: wait for the replica (target) to
reach the source's offset, promote it, make the source its replica at once (from then on it
refuses writes with READONLY instead of acknowledging them), tell every HAProxy that the target is
up and the source down and confirm it in `show servers state`, close the source's client
sessions (held writes are dropped unacknowledged; their clients reconnect through HAProxy to the
target), release the hold. Each step is timed, the hold is measured.

A failure (or SIGTERM / SIGHUP) undoes what was done, newest first, and releases the hold: the
source is the primary again, the target its replica, HAProxy sends clients to the source. One
exception keeps data: once HAProxy was told, clients may have written to the promoted target
(`rdb_changes_since_last_save` moved); making it a replica again would discard those writes, so
it stays the primary, the source stays its replica, and the error says so.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime
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
    "promote",
    "demote_source",
    "repoint_haproxy",
    "confirm_haproxy",
    "retire_source",
    "release_writes",
)
# Time the hold keeps in reserve after the catch-up for the steps that follow it.
HOLD_RESERVE_MS = 500


class Interrupted(Exception):
    """SIGTERM or SIGHUP during the hold: treated as a failure, so the undo runs."""


@contextmanager
def signals_interrupt():
    def interrupt(signum, _frame):
        raise Interrupted(f"the module received {signal.Signals(signum).name}")

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class Proxy:
    """One HAProxy in front of the Redis servers, and which of its servers are source and target."""

    address: str
    backend: str
    source_server: str
    target_server: str
    timeout: float

    def view(self) -> set[str]:
        return runtime.running(runtime.servers_state(self.address, self.backend, self.timeout))

    def points_at_target(self) -> bool:
        up = self.view()
        return self.target_server in up and self.source_server not in up

    def describe(self) -> str:
        return f"{self.address} {self.backend}"

    def health(self, up: str, down: str) -> list[str]:
        """Mark server `up` up and `down` down; returns the commands, as reported."""
        commands = []
        for server, health in ((up, "up"), (down, "down")):
            runtime.set_health(self.address, self.backend, server, health, self.timeout)
            commands.append(self.health_command(server, health))
        return commands

    def health_command(self, server: str, health: str) -> str:
        return f"set server {self.backend}/{server} health {health} (on {self.address})"


def locate_proxies(params: dict) -> list[Proxy]:
    """Every HAProxy answers and has both servers (before anything changes)."""
    proxies = []
    for entry in params.get("haproxy") or []:
        address, backend, timeout = entry["socket"], entry["backend"], entry["timeout"]
        rows = runtime.servers_state(address, backend, timeout)
        source, target = (
            runtime.server_named_by_address(rows, side["host"], side["port"], address, backend)
            for side in (params["source"], params["target"])
        )
        proxies.append(Proxy(address, backend, source, target, timeout))
    return proxies


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
        # Switched before: only HAProxy may still need telling (the source refuses writes already).
        stale = [proxy for proxy in proxies if not proxy.points_at_target()]
        if stale:
            result["changed"] = True
            result["commands"] = [p.health_command(p.target_server, "up") for p in stale]
            if not check_mode:
                repoint(stale, result)
                confirm(stale, Deadline(max(p.timeout for p in stale)))
        return finish(before)

    check_can_promote(src_info, tgt_info, src_params, tgt_params)
    after = dict(source=f"replica of {endpoint(tgt_params)}", target="primary")
    result["changed"] = True
    if check_mode:
        steps = [dict(step=step) for step in STEPS]
        return finish(after, would_switch=True, steps=steps, commands=planned_commands(params, proxies))
    run_cutover(params, source, target, proxies, result)
    if params["persist"]:  # outside the hold: a restart keeps the new roles
        for client, side in ((target, tgt_params), (source, src_params)):
            persist_config(client, side, result["warnings"])
            result["commands"].append(f"CONFIG REWRITE (on {endpoint(side)})")
    return finish(after, switched=True)


def planned_commands(params: dict, proxies: list[Proxy]) -> list[str]:
    src, tgt = params["source"], params["target"]
    src_at, tgt_at = f" (on {endpoint(src)})", f" (on {endpoint(tgt)})"
    commands = [f"CLIENT PAUSE {params['pause_ms']} WRITE{src_at}", f"REPLICAOF NO ONE{tgt_at}"]
    commands.append(f"REPLICAOF {tgt['host']} {tgt['port']}{src_at}")
    for p in proxies:
        commands += [p.health_command(p.target_server, "up"), p.health_command(p.source_server, "down")]
    commands += [f"shutdown sessions server {p.backend}/{p.source_server} (on {p.address})" for p in proxies]
    return [*commands, f"CLIENT KILL TYPE normal SKIPME yes{src_at}", f"CLIENT UNPAUSE{src_at}"]


def repoint(proxies: list[Proxy], result: dict) -> None:
    for p in proxies:
        result["commands"] += p.health(up=p.target_server, down=p.source_server)


def confirm(proxies: list[Proxy], deadline: Deadline) -> None:
    def wrong() -> list[str]:
        return [p.describe() for p in proxies if not p.points_at_target()]

    def not_confirmed(still_wrong: list[str]) -> None:
        raise RedisModuleError(
            f"HAProxy {', '.join(still_wrong)} does not show the target up and the source down within "
            f"{deadline.seconds:.1f} s (show servers state): check that neither server is in maintenance there"
        )

    poll(wrong, deadline, not_confirmed, ready=lambda still_wrong: not still_wrong, interval=0.005)


def run_cutover(params: dict, source, target, proxies: list[Proxy], result: dict) -> None:
    """The critical section: everything between CLIENT PAUSE and CLIENT UNPAUSE on the source."""
    src, tgt = params["source"], params["target"]
    src_at, tgt_at = f" (on {endpoint(src)})", f" (on {endpoint(tgt)})"
    hold = Deadline(params["pause_ms"] / 1000.0)
    done: list[str] = []
    current = {"step": "hold_writes", "started": time.monotonic()}
    target_changes = None  # the target's write count right after its promotion

    def begin(step: str) -> None:
        now = time.monotonic()
        result["steps"].append(dict(step=current["step"], ms=round((now - current["started"]) * 1000, 1)))
        current.update(step=step, started=now)

    with signals_interrupt():
        try:
            pause_writes(source, src, params["pause_ms"], "write")
            result["commands"].append(f"CLIENT PAUSE {params['pause_ms']} WRITE{src_at}")
            done.append("hold_writes")
            begin("wait_for_catch_up")
            result.update(wait_caught_up(source, src, target, tgt, params["timeout"]))
            begin("promote")
            call(target, tgt, "REPLICAOF", "NO", "ONE")
            done.append("promote")
            result["commands"].append(f"REPLICAOF NO ONE{tgt_at}")
            # Writes the target takes from here on are clients' writes (it follows nobody).
            target_changes = changes_since_save(target, tgt)
            moved = int(replication(source, src)["master_repl_offset"])
            if moved != result["source_offset"]:
                raise RedisModuleError(
                    f"source {endpoint(src)} took writes after the target caught up (offset {result['source_offset']} -> {moved}): "
                    f"its hold did not hold them; look for clients exempt from CLIENT PAUSE"
                )
            begin("demote_source")
            result["commands"] += [command + src_at for command in make_replica(source, src, tgt)]
            done.append("demote_source")
            begin("repoint_haproxy")
            done.append("repoint_haproxy")  # before the first command: a half-told HAProxy is undone too
            repoint(proxies, result)
            begin("confirm_haproxy")
            confirm(proxies, Deadline(min(max(p.timeout for p in proxies) if proxies else 0, hold.remaining())))
            begin("retire_source")
            for p in proxies:
                runtime.shutdown_sessions(p.address, p.backend, p.source_server, p.timeout)
                result["commands"].append(f"shutdown sessions server {p.backend}/{p.source_server} (on {p.address})")
            result["killed_clients"] = int(call(source, src, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
            result["commands"].append(f"CLIENT KILL TYPE normal SKIPME yes{src_at}")
            if hold.passed:  # the switch holds; clients only saw errors meanwhile
                result["warnings"].append(
                    f"the cutover took longer than pause_ms ({params['pause_ms']} ms): the hold ended before the clients moved, "
                    f"and the source, already a replica, refused their writes with READONLY meanwhile (none was lost); raise pause_ms"
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
    kept = "repoint_haproxy" in done and target_changes is not None and changes_since_save(target, tgt) != target_changes
    try:
        if kept:
            repoint(proxies, result)  # finish telling every HAProxy: the target holds the newest writes
            return True
        if "repoint_haproxy" in done:
            for p in proxies:
                p.health(up=p.source_server, down=p.target_server)
        if "demote_source" in done:
            call(source, src, "REPLICAOF", "NO", "ONE")
        if "promote" in done:
            make_replica(target, tgt, src)
        return False
    finally:
        if "hold_writes" in done:
            unpause_writes(source, src)
