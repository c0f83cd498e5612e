# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One HAProxy in front of a pair of servers, as a cutover sees it: which server of its backend is
the source and which the target, what it does with new connections now, and the runtime API
commands that move them. The Redis cutover (redis_switchover) and the PostgreSQL switchover
(pg_switchover's `haproxy`) both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime


def argument_spec(backend: str) -> dict:
    """A module's `haproxy` option: its HAProxies, each by runtime API and backend (default `backend`)."""
    return dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            socket=dict(type="str", required=True),
            backend=dict(type="str", default=backend),
            timeout=dict(type="float", default=2.0),
        ),
    )


@dataclass
class Proxy:
    """One HAProxy (`address`: its runtime API) and the source's and target's servers in `backend`.
    `target_in_maintenance`: the target's state before a switch to it, which its undo puts back."""

    address: str
    backend: str
    source_server: str
    target_server: str
    timeout: float
    target_in_maintenance: bool = False

    def rows(self) -> list[dict]:
        return runtime.servers_state(self.address, self.backend, self.timeout)

    def routes_to_target(self, settled: bool = False) -> bool:
        """New connections go to the target only: it runs and is not drained, the source is drained or
        down. `settled`: the source is down and no longer drained (the state a cutover leaves)."""
        rows = self.rows()
        up, drained = runtime.running(rows), runtime.drained(rows)
        if settled:
            return self.target_server in up and not drained & {self.target_server, self.source_server} and self.source_server not in up
        source_closed = self.source_server in drained or self.source_server not in up
        return self.target_server in up and self.target_server not in drained and source_closed

    def write_server(self) -> str | None:
        """Which of the two a backend of one primary (balance first) sends new connections to: the
        source while it runs and is neither in maintenance nor drained, else the target on the same
        terms; None when neither takes them (writes would go nowhere)."""
        rows = self.rows()
        up, closed = runtime.running(rows), runtime.in_maintenance(rows) | runtime.drained(rows)
        taking = [server for server in (self.source_server, self.target_server) if server in up and server not in closed]
        return taking[0] if taking else None

    def describe(self) -> str:
        return f"{self.address} {self.backend}"

    def tell(self, commands: list[str], server: str, what: str) -> None:
        """`what`: health up/down, state ready/drain/maint, or shutdown; appended to `commands`."""
        kind, value = [*what.split(" ", 1), ""][:2]
        if kind == "health":
            runtime.set_health(self.address, self.backend, server, value, self.timeout)
        elif kind == "state":
            runtime.set_state(self.address, self.backend, server, value, self.timeout)
        else:
            runtime.shutdown_sessions(self.address, self.backend, server, self.timeout)
        commands.append(self.command_text(server, what))

    def command_text(self, server: str, what: str) -> str:
        if what == "shutdown":
            return f"shutdown sessions server {self.backend}/{server} (on {self.address})"
        return f"set server {self.backend}/{server} {what} (on {self.address})"

    # --- a backend of one primary (PostgreSQL writes) ----------------------------------------------
    def primary_plan(self, to_target: bool) -> list[tuple[str, str]]:
        """What makes the target (or, undoing, the source) the one server taking new connections. The
        new one first (ready, forced up: no wait for its checks' rise), then the old one out with its
        sessions shut down. Undoing puts the target back in maintenance only if it was there before."""
        new, old = (self.target_server, self.source_server) if to_target else (self.source_server, self.target_server)
        old_state = [(old, "state maint")] if to_target or self.target_in_maintenance else []
        return [(new, "state ready"), (new, "health up"), *old_state, (old, "shutdown")]

    def send_writes(self, to_target: bool, commands: list[str], deadline: Deadline) -> None:
        """Carry out primary_plan, then confirm in `show servers state` before `deadline`."""
        for server, what in self.primary_plan(to_target):
            self.tell(commands, server, what)
        wanted = self.target_server if to_target else self.source_server

        def not_confirmed(seen) -> None:
            raise runtime.HAProxyError(
                f"HAProxy {self.describe()} does not send new connections to {wanted} alone within {deadline.seconds:g} s "
                f"(it sends them to {seen or 'no server'}): look at `show servers state {self.backend}` there"
            )

        poll(self.write_server, deadline, not_confirmed, ready=lambda seen: seen == wanted, interval=0.005)

    def journaled(self) -> dict:
        keep = ("address", "backend", "source_server", "target_server", "target_in_maintenance")
        return {key: getattr(self, key) for key in keep}


def locate(entries: list[dict], source: tuple[str, int], target: tuple[str, int], servers_option: str) -> list[Proxy]:
    """Every HAProxy of `entries` ({socket, backend, timeout}) answers and has a server at the
    source's and at the target's host:port (read before anything changes). `servers_option` names
    where HAProxy's servers are configured, for the error."""
    proxies = []
    for entry in entries or []:
        address, backend, timeout = entry["socket"], entry["backend"], entry["timeout"]
        rows = runtime.servers_state(address, backend, timeout)
        source_server, target_server = (
            runtime.server_named_by_address(rows, host, port, address, backend, servers_option) for host, port in (source, target)
        )
        target_in_maintenance = target_server in runtime.in_maintenance(rows)
        proxies.append(Proxy(address, backend, source_server, target_server, timeout, target_in_maintenance))
    return proxies
