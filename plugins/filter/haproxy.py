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
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.runtime import RUNNING, HAProxyError, parse_servers_state

# src/server.h (HAProxy 2.6): enum srv_admin
SRV_ADMF_FMAINT = 0x01
SRV_ADMF_IMAINT = 0x02
SRV_ADMF_FDRAIN = 0x08
SRV_ADMF_IDRAIN = 0x10
SRV_ADMF_RMAINT = 0x20
SRV_ADMF_MAINT = SRV_ADMF_FMAINT | SRV_ADMF_IMAINT | SRV_ADMF_RMAINT
SRV_ADMF_DRAIN = SRV_ADMF_FDRAIN | SRV_ADMF_IDRAIN


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


class FilterModule:
    """zerodowntime.migration HAProxy filters."""

    def filters(self):
        return {"haproxy_servers_state": haproxy_servers_state}
