# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy's runtime API (the stats socket at admin level) for a cutover run from a module.

community.general.haproxy drives one server per task; a cutover must tell every HAProxy which
server is the primary inside one bounded pause, so this speaks the socket's line protocol
directly: one connection per command (the socket's default, non-interactive mode), the answer
read to its end. A socket is a unix path or `host:port` (a `stats socket ipv4@...` line).
"""

from __future__ import annotations

import socket

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError

# srv_op_state in `show servers state`: 2 is SRV_ST_RUNNING (0 stopped, 1 starting, 3 stopping).
RUNNING = 2
# srv_admin_state bits (src/server.h, HAProxy 2.6: enum srv_admin): maintenance forced from the
# runtime API, inherited from a tracked server, after a DNS failure; drain forced or inherited.
SRV_ADMF_FMAINT = 0x01
SRV_ADMF_IMAINT = 0x02
SRV_ADMF_FDRAIN = 0x08
SRV_ADMF_IDRAIN = 0x10
SRV_ADMF_RMAINT = 0x20
SRV_ADMF_MAINT = SRV_ADMF_FMAINT | SRV_ADMF_IMAINT | SRV_ADMF_RMAINT
SRV_ADMF_DRAIN = SRV_ADMF_FDRAIN | SRV_ADMF_IDRAIN
FORCED_DRAIN = SRV_ADMF_FDRAIN
HEALTH_STATES = ("up", "down")
ADMIN_STATES = ("ready", "drain", "maint")


class HAProxyError(ModuleError):
    """A runtime API failure: which socket, which command, what to do."""


def _open(address: str, timeout: float) -> socket.socket:
    if address.startswith("/"):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address
    else:
        host, port = address.rsplit(":", 1) if ":" in address else ("", "")
        if not host or not port.isdigit():
            raise HAProxyError(f"HAProxy socket {address!r} is neither a unix socket path nor host:port: give one of them")
        conn = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        target = (host.strip("[]"), int(port))
    conn.settimeout(timeout)
    try:
        conn.connect(target)
    except OSError as exc:
        conn.close()
        raise HAProxyError(
            f"cannot reach HAProxy's runtime API at {address} ({exc}): check that HAProxy runs and that its "
            f"`stats socket` (haproxy_stats_socket) is this one, at level admin"
        ) from None
    return conn


def command(address: str, text: str, timeout: float = 2.0) -> str:
    """Send one runtime API command, return its answer (without the trailing blank line)."""
    if "\n" in text or ";" in text:
        raise HAProxyError(f"a runtime API command is one line without ';': {text!r}")
    conn = _open(address, timeout)
    try:
        conn.sendall(text.encode() + b"\n")
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise HAProxyError(f"HAProxy at {address} did not answer `{text}` ({exc}): check that it runs") from None
    finally:
        conn.close()
    answer = b"".join(chunks).decode(errors="replace").strip()
    # The runtime API answers errors in plain text, on success nothing (or the data asked for).
    if answer.startswith(("Unknown command", "Permission denied", "Can't find", "No such", "Require")):
        raise HAProxyError(
            f"HAProxy at {address} refused `{text}`: {answer.splitlines()[0] if answer else 'no answer'} "
            f"(the socket must be at level admin, the backend and server must exist)"
        )
    return answer


def parse_servers_state(text: str) -> list[dict]:
    """The servers of a `show servers state` answer (format 1): one dict per server, every column
    under its header name (numbers as int)."""
    lines = [line for line in (text if isinstance(text, str) else "").splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1":
        raise HAProxyError(f"not a 'show servers state' answer (format 1): {(lines[0] if lines else '(empty)').strip()!r}")
    if len(lines) < 2 or not lines[1].startswith("#"):
        raise HAProxyError("'show servers state' answer without its header line")
    columns = lines[1].lstrip("#").split()
    servers = []
    for line in lines[2:]:
        values = line.split()
        if len(values) < len(columns):
            raise HAProxyError(f"'show servers state' line with {len(values)} fields, {len(columns)} expected: {line!r}")
        servers.append({name: int(value) if value.lstrip("-").isdigit() else value for name, value in zip(columns, values, strict=False)})
    return servers


def servers_state(address: str, backend: str, timeout: float = 2.0) -> list[dict]:
    """The servers of `backend` as HAProxy at `address` sees them now."""
    rows = parse_servers_state(command(address, f"show servers state {backend}", timeout))
    if not rows:
        raise HAProxyError(f"HAProxy at {address}: backend {backend!r} has no servers: give the backend of the clients")
    return rows


def server_named_by_address(rows: list[dict], host: str, port: int, address: str, backend: str, servers_option: str) -> str:
    """The name of the backend's server at host:port (`servers_option`: where they are configured, for the error)."""
    for row in rows:
        if row.get("srv_addr") == host and row.get("srv_port") == port:
            return row["srv_name"]
    known = ", ".join(f"{row.get('srv_name')}={row.get('srv_addr')}:{row.get('srv_port')}" for row in rows)
    raise HAProxyError(
        f"HAProxy at {address}: backend {backend} has no server at {host}:{port} (it has {known}): "
        f"give the address HAProxy uses for that server ({servers_option})"
    )


def set_health(address: str, backend: str, server: str, health: str, timeout: float = 2.0) -> None:
    """Force a checked server's health (the next checks confirm or revise it)."""
    if health not in HEALTH_STATES:
        raise HAProxyError(f"health {health!r} is not one of {', '.join(HEALTH_STATES)}")
    command(address, f"set server {backend}/{server} health {health}", timeout)


def set_state(address: str, backend: str, server: str, state: str, timeout: float = 2.0) -> None:
    """Set a server's admin state: drain (no new connections, checks go on), ready, maint."""
    if state not in ADMIN_STATES:
        raise HAProxyError(f"state {state!r} is not one of {', '.join(ADMIN_STATES)}")
    command(address, f"set server {backend}/{server} state {state}", timeout)


def shutdown_sessions(address: str, backend: str, server: str, timeout: float = 2.0) -> None:
    command(address, f"shutdown sessions server {backend}/{server}", timeout)


def running(rows: list[dict]) -> set[str]:
    """The servers HAProxy sends new connections to (operational state running)."""
    return {row["srv_name"] for row in rows if row.get("srv_op_state") == RUNNING}


def drained(rows: list[dict]) -> set[str]:
    """The servers drained from the runtime API (`set server ... state drain`): no new connections."""
    return {row["srv_name"] for row in rows if isinstance(row.get("srv_admin_state"), int) and row["srv_admin_state"] & FORCED_DRAIN}


def in_maintenance(rows: list[dict]) -> set[str]:
    """The servers in maintenance (forced, inherited, or after a DNS failure): they take nothing."""
    return {row["srv_name"] for row in rows if isinstance(row.get("srv_admin_state"), int) and row["srv_admin_state"] & SRV_ADMF_MAINT}
