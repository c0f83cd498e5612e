#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_write_pause
short_description: Hold a Redis server's writes for a bounded time (CLIENT PAUSE), or release them
description:
  - O(state=paused) runs C(CLIENT PAUSE <duration_ms> WRITE) - write commands from clients are held
    (they wait, they are not refused) and run when the pause ends; reads go on. The pause ends by
    itself after O(duration_ms) even if nobody releases it - a safe freeze (the module's run, a lost
    controller or a failed play cannot leave the server frozen).
  - O(state=unpaused) runs C(CLIENT UNPAUSE) - held writes run now.
  - Redis has no command that says whether a pause is in effect. The module finds out with a probe -
    a C(DEL) of a random key that does not exist, on a connection of its own with a read timeout of
    O(probe_timeout_ms). A pause holds it (no answer in time = paused); otherwise it answers at once
    and changes nothing (an absent key is not deleted, nothing is replicated).
  - Idempotence - O(state=unpaused) is changed only when the probe finds writes held, so a second run
    reports no change. O(state=paused) always reports a change - every C(CLIENT PAUSE) sets or extends
    the deadline (Redis keeps the later deadline and the stricter mode of overlapping pauses).
  - Needs Redis 6.2 or later (C(CLIENT PAUSE ... WRITE), C(CLIENT UNPAUSE)); an older server is refused
    with its version, before anything is sent that changes state.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.redis
options:
  state:
    description:
      - V(paused) - writes are held for O(duration_ms) at most; V(unpaused) - they are not held.
    type: str
    choices: [paused, unpaused]
    default: paused
  duration_ms:
    description:
      - How long the pause lasts at most, in milliseconds (1 to 600000). Required with O(state=paused).
      - Clients whose writes are held wait up to this long; keep it below their command timeout.
    type: int
  mode:
    description:
      - V(write) - only write commands are held (reads go on); V(all) - every command is held.
      - With V(all) a new connection cannot even authenticate until the pause ends, so only the pause's
        own timeout ends it on a server with a password - prefer V(write).
    type: str
    choices: [write, all]
    default: write
  probe_timeout_ms:
    description:
      - How long the probe waits for its C(DEL) to answer before taking writes as held (10 to 10000).
    type: int
    default: 200
notes:
  - A C(CLIENT PAUSE) on a replica holds nothing useful (replicas refuse client writes anyway); pause
    the primary.
  - Writes held on a server that is no longer the primary when the pause ends still run there. A
    switchover therefore kills the old primary's client connections before unpausing it (see
    C(zerodowntime.migration.redis_switchover) O(zerodowntime.migration.redis_switchover#module:state=retired)).
requirements:
  - redis (Python library, 4.0 or later, on the host that runs the module)
attributes:
  check_mode:
    support: full
    description: Connects, checks the version and probes whether writes are held; sends no PAUSE or UNPAUSE.
  diff_mode:
    support: full
    description: Shows whether writes were held before and are held after (with the duration and mode of a pause).
"""

EXAMPLES = r"""
- name: Hold blue's writes for 5 seconds at most
  zerodowntime.migration.redis_write_pause:
    host: 127.0.0.21
    port: 6379
    password: "{{ redis_password }}"
    state: paused
    duration_ms: 5000

- name: Release them
  zerodowntime.migration.redis_write_pause:
    host: 127.0.0.21
    port: 6379
    password: "{{ redis_password }}"
    state: unpaused
"""

RETURN = r"""
paused:
  description: Whether writes are held after the module ran (what would be, in check mode).
  returned: success
  type: bool
was_paused:
  description: Whether the probe found writes held before the module did anything.
  returned: success
  type: bool
redis_version:
  description: The server's version (INFO server redis_version).
  returned: success
  type: str
  sample: 7.0.15
duration_ms:
  description: The pause's timeout.
  returned: with state=paused
  type: int
mode:
  description: The pause's mode.
  returned: with state=paused
  type: str
commands:
  description: Commands that changed something (in check mode, those that would have run).
  returned: always
  type: list
  elements: str
  sample: ["CLIENT PAUSE 5000 WRITE"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.redis.client import (
    CONNECTION_OPTIONS,
    REDIS,
    ensure_write_pause,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_OPTIONS,
            state=dict(type="str", default="paused", choices=["paused", "unpaused"]),
            duration_ms=dict(type="int"),
            mode=dict(type="str", default="write", choices=["write", "all"]),
            probe_timeout_ms=dict(type="int", default=200),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda opened: ensure_write_pause(module.params, module.check_mode), libraries=[REDIS])


if __name__ == "__main__":
    main()
