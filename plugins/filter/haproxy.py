# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for HAProxy's runtime API.

haproxy_servers_state(text)
    The servers of `show servers state [backend]`'s answer (format 1): one dict per server with
    every column under its header name (be_name, srv_name, srv_op_state, srv_admin_state, ...,
    numbers as int) and what srv_admin_state means:
      maint - in maintenance (forced, inherited or after a DNS failure): takes nothing
      drain - draining: takes no new connection (unless persistent), keeps its sessions
      ready - neither: takes new connections when UP (the configuration's `disabled` bit alone
              does not count: `set server ... state ready` leaves it set)
      up    - srv_op_state is RUNNING

haproxy_state_for_config(text, config)
    The `show servers state` answer without the servers whose address or port `config` (the
    haproxy.cfg the next process starts with) gives differently, or no longer has: loaded from the
    server-state file, their saved address would win over the configuration's.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.runtime import (
    RUNNING,
    SRV_ADMF_DRAIN,
    SRV_ADMF_MAINT,
    HAProxyError,
    parse_servers_state,
)


def haproxy_servers_state(text):
    """[{column: value, maint, drain, ready, up}] of a `show servers state` answer."""
    try:
        servers = parse_servers_state(text)
    except HAProxyError as exc:
        raise AnsibleFilterError(str(exc)) from None
    for server in servers:
        admin = int(server.get("srv_admin_state", 0))
        server["maint"] = bool(admin & SRV_ADMF_MAINT)
        server["drain"] = not server["maint"] and bool(admin & SRV_ADMF_DRAIN)
        server["ready"] = not server["maint"] and not server["drain"]
        server["up"] = int(server.get("srv_op_state", 0)) == RUNNING
    return servers


def _configured_servers(config: str) -> dict[tuple[str, str], str]:
    """{(backend, server): "address:port"} of haproxy.cfg's `server NAME ADDRESS:PORT` lines."""
    configured, backend = {}, None
    for line in (config or "").splitlines():
        words = line.split()
        if words and words[0] in ("backend", "frontend", "listen", "defaults", "global", "resolvers", "peers"):
            backend = words[1] if words[0] in ("backend", "listen") and len(words) > 1 else None
        elif backend and len(words) >= 3 and words[0] == "server":
            configured[(backend, words[1])] = words[2]
    return configured


def haproxy_state_for_config(text, config):
    """`show servers state` text with only the servers `config` still has at the same address and port."""
    try:
        servers = parse_servers_state(text)
    except HAProxyError as exc:
        raise AnsibleFilterError(str(exc)) from None
    configured = _configured_servers(config)
    lines = [line for line in text.splitlines() if line.strip()]
    kept = [
        line
        for line, server in zip(lines[2:], servers, strict=True)
        if configured.get((server["be_name"], server["srv_name"])) == f"{server['srv_addr']}:{server['srv_port']}"
    ]
    return "\n".join(lines[:2] + kept) + "\n"


class FilterModule:
    """zerodowntime.migration HAProxy filters."""

    def filters(self):
        return {"haproxy_servers_state": haproxy_servers_state, "haproxy_state_for_config": haproxy_state_for_config}
