#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_switchover
short_description: Promote a Redis replica once it has caught up, retire the old primary, or undo
description:
  - The steps of a Redis cutover between an old primary (O(source), blue) and its replica (O(target), green)
    that need both servers. Writes are paused and released with C(zerodowntime.migration.redis_write_pause);
    the role C(zerodowntime.migration.migration) (C(tasks_from=redis_switchover)) runs the whole sequence.
  - O(state=promoted) - the source must hold writes (checked with a probe, see O(require_source_paused)).
    Reads the source's C(master_repl_offset), waits (at most O(timeout) seconds) until the target's
    C(slave_repl_offset) has reached it, then runs C(REPLICAOF NO ONE) on the target. A wait that runs out
    fails and promotes nothing. After the promotion the source's offset is read again - if it moved (the
    pause ended early), the module fails with C(promoted=true) so the caller can undo it (O(state=replica)).
    Then the source becomes a replica of the target (O(demote_source)), so it can no longer acknowledge a
    write the target does not get, whenever its pause ends.
  - O(state=retired) - the source becomes a replica of the (promoted) target if it is not yet, and while it
    still holds writes its normal client connections are killed (O(kill_clients)).
    Writes still held by a pause on the source are dropped with
    their connections - never acknowledged, never applied to the old primary - and their clients reconnect
    (through the proxy) to the new primary. The old primary follows the new one from then on (a rollback
    path).
  - O(state=switched) - the whole cutover in one run, so the hold lasts milliseconds, not several
    tasks. C(CLIENT PAUSE <pause_ms> WRITE) on the source (it ends by itself should the run die),
    wait (at most O(timeout)) for the target, tell every HAProxy of O(haproxy) through its runtime API
    to send new connections to the target (C(health up)) and none to the source (C(state drain)) and
    confirm it in C(show servers state), promote the target, then in one C(MULTI) on the source close
    its client connections and make it the target's replica (held writes are dropped unacknowledged,
    their clients reconnect through HAProxy to the target; no client can reach the source between the
    two and get C(READONLY)), mark the source down and close its sessions on HAProxy, release the hold.
    Every step is timed (RV(steps)), the hold measured (RV(hold_ms)). After the hold, once HAProxy's
    checks hold the source down, its drain is lifted (C(state ready)), so the cutover back (in one run
    or task by task) finds both servers ready. Every HAProxy must answer and know both servers before
    anything changes.
  - With O(state=switched) a failure, SIGTERM or SIGHUP undoes what was done, newest first, and
    releases the hold - the source is the primary again, the target its replica, HAProxy sends
    clients to the source - except when the promoted target already took writes from clients
    (C(rdb_changes_since_last_save) moved after its promotion) - those writes would be
    discarded, so the target stays the primary, the source becomes its replica, and the error says so
    (RV(target_kept_as_primary)). A run after a switch only tells the HAProxies that do not route to
    the target alone yet, or still drain a server (what a run killed inside its hold leaves), RV(repaired).
  - C(community.general.haproxy) drives one server per task; the cutover needs several servers
    on several HAProxies inside one hold, so this module speaks the runtime API itself
    (C(plugins/module_utils/haproxy/runtime.py)).
  - O(state=replica) - undo - the source becomes a primary again if it followed the target, and the target
    becomes a replica of the source again (replacing its data with the source's).
  - Idempotent - a target that is already a primary is not promoted again, a source already replicating
    the target and holding no writes is not retired again, a target already replicating the source is left alone (changed=false).
  - Refuses - before anything changes, in check mode too - a pair that Redis Sentinel watches (Sentinel's
    C(sentinel-<id>-cmd) / C(-pubsub) connections in C(CLIENT LIST) of the source or the target, else subscribers
    of C(__sentinel__:hello)). Two controllers of one primary fight - Sentinel would see the target this module
    promoted as a second primary, or the source it monitors turn replica, and reconfigure the servers behind the
    module's back (or fail over again). It does not drive Sentinel's failover either - Sentinel moves its clients
    itself, and this module's hold and HAProxy steps do not apply. The error names every Sentinel (its address
    and the name it monitors the primary by, from its hello) and the fix - C(SENTINEL FAILOVER <name>) on one
    of them to let Sentinel switch, or C(SENTINEL REMOVE <name>) on every one of them before a switchover by
    this module (RV(sentinels)).
  - The new role is written to each changed server's configuration file with C(CONFIG REWRITE) (O(persist)),
    so a restart keeps it. C(roles/redis) refuses to write back an instance's C(replicaof) once that happened.
version_added: 0.1.0
notes:
  - O(source) and O(target) know each other by their O(source.host) and O(source.port) - the replica must know
    its primary by the same address (or share its replication id). When one side becomes a replica it connects
    to the other at that address, with its O(source.username) as C(masteruser) and its O(source.password) as
    C(masterauth).
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.redis.pair
options:
  state:
    description:
      - V(promoted) - the target caught up and is the primary; V(retired) - the source is a replica of the
        target and its clients were disconnected; V(replica) - the target is a replica of the source (undo);
        V(switched) - all of the cutover in one run (see the description).
    type: str
    choices: [promoted, retired, replica, switched]
    default: promoted
  timeout:
    description:
      - Seconds O(state=promoted) and O(state=switched) wait for the target to catch up (more than 0, at most
        300). Keep it well below the pause's C(duration_ms).
      - Before anything changes, also how long a replication link still coming up (a replica just re-pointed,
        syncing) is waited for; a link still down then is refused, nothing changed.
    type: float
    default: 5.0
  require_source_paused:
    description:
      - With O(state=promoted), refuse to promote unless the source holds writes (a write after the catch-up
        would be lost). Turn off only when clients cannot write to the source some other way.
    type: bool
    default: true
  probe_timeout_ms:
    description:
      - How long the probe for held writes waits (see C(zerodowntime.migration.redis_write_pause)), 10 to 10000.
    type: int
    default: 200
  kill_clients:
    description:
      - With O(state=retired), kill the source's normal client connections while it still holds writes (the
        held writes are dropped, unacknowledged) so clients reconnect to the new primary.
    type: bool
    default: true
  demote_source:
    description:
      - With O(state=promoted), make the source a replica of the target right after the promotion. The source
        then refuses writes (C(READONLY)) should its pause end before the clients were moved, instead of
        acknowledging writes the new primary never gets. Its clients keep waiting while the pause lasts.
    type: bool
    default: true
  pause_ms:
    description:
      - With O(state=switched), the bound of the source's write hold in milliseconds (C(CLIENT PAUSE ... WRITE)),
        at most 600000. It must exceed O(timeout) by 500 ms at least, for the steps after the catch-up.
    type: int
    default: 5000
  haproxy:
    description:
      - With O(state=switched), every HAProxy in front of the Redis servers, told together inside the hold. Its
        backend's servers are recognised by address and port (those of O(source) and O(target)).
    type: list
    elements: dict
    default: []
    suboptions:
      socket:
        description:
          - HAProxy's stats socket at level admin, reachable from the host that runs the module - a unix socket
            path, or C(host:port) for a C(stats socket ipv4@...).
        type: str
        required: true
      backend:
        description:
          - The backend that sends clients to the Redis primary.
        type: str
        default: redis_write
      timeout:
        description:
          - Seconds each runtime API command, and the confirmation of HAProxy's view, may take.
        type: float
        default: 2.0
  persist:
    description:
      - Run C(CONFIG REWRITE) on each server whose role changed. A failure there is a warning.
    type: bool
    default: true
requirements:
  - redis (Python library, 4.0 or later, on the host that runs the module)
attributes:
  check_mode:
    support: full
    description: Connects, checks versions, roles, the link, the pause and every HAProxy; sends no REPLICAOF, CLIENT PAUSE, CLIENT KILL,
      CONFIG REWRITE or HAProxy command.
  diff_mode:
    support: full
    description: Shows both servers' roles before and after.
"""

EXAMPLES = r"""
- name: Promote green once it has blue's last write (blue's writes are paused)
  zerodowntime.migration.redis_switchover:
    source: {host: 127.0.0.21, port: 6379, password: "{{ redis_password }}"}
    target: {host: 127.0.0.22, port: 6379, password: "{{ redis_password }}"}
    state: promoted
    timeout: 2

- name: The whole cutover in one run, HAProxy told inside the hold
  zerodowntime.migration.redis_switchover:
    source: {host: 127.0.0.21, port: 6379, password: "{{ redis_password }}"}
    target: {host: 127.0.0.22, port: 6379, password: "{{ redis_password }}"}
    state: switched
    pause_ms: 3000
    timeout: 1
    haproxy:
      - socket: /run/haproxy/admin.sock
        backend: redis_write

- name: Blue follows green, its clients reconnect
  zerodowntime.migration.redis_switchover:
    source: {host: 127.0.0.21, port: 6379, password: "{{ redis_password }}"}
    target: {host: 127.0.0.22, port: 6379, password: "{{ redis_password }}"}
    state: retired
"""

RETURN = r"""
source_role:
  description: The source's role after the module ran (C(primary) or C(replica of host:port)).
  returned: success
  type: str
target_role:
  description: The target's role after the module ran.
  returned: success
  type: str
source_offset:
  description: The source's master_repl_offset the target had to reach.
  returned: when the target was promoted
  type: int
target_offset:
  description: The target's replication offset when it had caught up.
  returned: when the target was promoted
  type: int
waited_ms:
  description: How long the catch-up took, in milliseconds.
  returned: when the target was promoted
  type: float
killed_clients:
  description: Client connections killed on the source.
  returned: when the source was retired with kill_clients
  type: int
promoted:
  description: On failure, true when the target had been promoted before the failure (undo with state=replica).
  returned: on failure after the promotion
  type: bool
hold_ms:
  description: With O(state=switched), how long the source held writes, from CLIENT PAUSE to CLIENT UNPAUSE.
  returned: when the cutover ran (also on failure)
  type: float
repaired:
  description: With O(state=switched) after a switch, the HAProxies (socket and backend) this run told again.
  returned: when a switched pair's HAProxy needed telling
  type: list
  elements: str
hold_started:
  description: With O(state=switched), when the hold began (seconds since the epoch, this host's clock), to relate clients' errors to it.
  returned: when the cutover ran
  type: float
steps:
  description:
    - With O(state=switched), each step of the cutover and its duration in milliseconds (C(step), C(ms)); in
      check mode the steps it would run.
  returned: with state=switched
  type: list
  elements: dict
switched:
  description: With O(state=switched), whether this run switched the primary.
  returned: with state=switched
  type: bool
would_switch:
  description: In check mode with O(state=switched), true when a run would switch.
  returned: in check mode, when a switch is due
  type: bool
failed_step:
  description: On a failure of O(state=switched), the step that failed.
  returned: on failure
  type: str
undone:
  description: On a failure of O(state=switched), the steps undone, newest first.
  returned: on failure
  type: list
  elements: str
target_kept_as_primary:
  description: On a failure of O(state=switched), true when the target stays the primary because it took writes.
  returned: on failure
  type: bool
sentinels:
  description: On a refusal because Redis Sentinel watches the pair, each Sentinel's address (C(host:port)), or C(sentinel-<id>)
    when its hello was not heard.
  returned: on failure, when Sentinels watch the pair
  type: list
  elements: str
sentinel_masters:
  description: On a refusal because Redis Sentinel watches the pair, the names the Sentinels monitor the primary by.
  returned: on failure, when Sentinels watch the pair
  type: list
  elements: str
commands:
  description: Commands that changed something, with the server they ran on (passwords masked).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.proxy import argument_spec as haproxy_argument_spec
from ansible_collections.zerodowntime.migration.plugins.module_utils.redis import cutover
from ansible_collections.zerodowntime.migration.plugins.module_utils.redis.client import (
    CONNECTION_OPTIONS,
    REDIS,
    SWITCHOVER_STATES,
    ensure_switchover,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type="dict", required=True, options=CONNECTION_OPTIONS),
            target=dict(type="dict", required=True, options=CONNECTION_OPTIONS),
            state=dict(type="str", default="promoted", choices=list(SWITCHOVER_STATES)),
            timeout=dict(type="float", default=5.0),
            require_source_paused=dict(type="bool", default=True),
            probe_timeout_ms=dict(type="int", default=200),
            kill_clients=dict(type="bool", default=True),
            demote_source=dict(type="bool", default=True),
            persist=dict(type="bool", default=True),
            pause_ms=dict(type="int", default=5000),
            haproxy=haproxy_argument_spec("redis_write"),
        ),
        supports_check_mode=True,
    )

    def work(opened):
        if module.params["state"] != "switched":
            return ensure_switchover(module.params, module.check_mode)
        cutover.check_cutover_params(module.params)
        return ensure_switchover(module.params, module.check_mode, step=cutover.switched)

    run_module(module, work, libraries=[REDIS])


if __name__ == "__main__":
    main()
