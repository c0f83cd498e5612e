#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_replication_lag
short_description: Report the streaming replicas of a PostgreSQL primary and gate on their lag
description:
  - Connects to a primary and returns every standby it streams to (C(pg_stat_replication)),
    with its application name, replication slot, address, state, sync state, the sent, write, flush
    and replay positions, how many bytes of WAL it has yet to replay and its replay lag in ms.
  - With O(max_lag_bytes), O(max_lag_ms) or O(expected_replicas) it is a gate. It fails, naming
    each replica over a bound, not streaming, or missing, unless all of them hold. With
    O(timeout) it polls until they hold, for at most that many seconds, before failing.
  - With O(subscriber) (the server holding the subscriptions of the server's logical slots) a
    subscription whose apply or table synchronization worker fails ends the wait at once; the
    failure names the subscription, the table and the error (read from the subscriber's log when
    its login may, see notes), instead of waiting out O(timeout) for a lag that cannot drop.
    Without O(timeout) (a single look) a worker started again less than 5 s ago after counted
    errors is watched until it is 5 s old or fails again, so the look cannot fall between two
    runs of a failing worker.
  - Read-only; never reports a change, and check mode gives the same result.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  max_lag_bytes:
    description:
      - Largest replay lag allowed, in bytes of WAL between the primary's current position and
        what a replica has replayed. Not set, no bound.
    type: int
  max_lag_ms:
    description:
      - Largest replay lag allowed, in milliseconds (C(pg_stat_replication.replay_lag)). A replica
        that has caught up on an idle primary shows no lag time; with nothing left to replay that
        counts as 0 ms. A replica whose lag has not been measured yet does not pass.
    type: float
  expected_replicas:
    description:
      - A number of replicas that must be streaming, or a list of replica names (each an
        C(application_name) or a slot name as the primary sees it) that must all be streaming.
      - roles/postgresql replicas connect with their name as C(application_name) and stream
        through a slot of the same name.
    type: raw
  timeout:
    description:
      - Seconds to keep polling (every 0.2 s) while a bound does not hold; C(0) checks once.
    type: int
    default: 0
  subscriptions:
    description:
      - With O(subscriber), the subscriptions whose workers are watched; default every
        subscription of O(subscriber.login_db).
    type: list
    elements: str
extends_documentation_fragment:
  - zerodowntime.migration.postgres
  - zerodowntime.migration.postgres.subscriber
attributes:
  check_mode:
    support: full
    description: Runs the same read-only check and returns the same result.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
notes:
  - O(login_user) must be a superuser or a member of C(pg_monitor); other roles see no
    replication state, which is an error that names the grant.
  - Connect to the primary (or, for cascading replicas, to the standby they stream from).
  - The error text of a failing subscription worker is only in the subscriber's server log. It is
    read (the last 256 KiB of the current log file, or of the server's stderr when the logging
    collector is off) when O(subscriber.login_user) is a superuser or a member of C(pg_monitor) and
    C(pg_read_server_files); otherwise the failure names the subscription and points to the log.
"""

EXAMPLES = r"""
- name: Wait until both blue replicas replay within 100 ms of the primary
  zerodowntime.migration.pg_replication_lag:
    login_host: 127.0.0.11
    login_port: 5432
    expected_replicas: [blue_r1, blue_r2]
    max_lag_ms: 100
    timeout: 30

- name: Report the standbys without any bound
  zerodowntime.migration.pg_replication_lag:
    login_host: 127.0.0.11
    login_port: 5432
  register: lag

- name: Show the worst replay lag
  ansible.builtin.debug:
    msg: "{{ lag.replicas | length }} replicas, worst {{ lag.max_replay_lag_bytes }} bytes / {{ lag.max_replay_lag_ms }} ms"
"""

RETURN = r"""
replicas:
  description: Every standby streaming from the server, ordered by application name.
  returned: success and on a failed gate
  type: list
  elements: dict
  contains:
    application_name:
      description: C(application_name) of the standby's connection.
      type: str
      sample: blue_r1
    slot_name:
      description: Replication slot the standby streams through; null without a slot.
      type: str
      sample: blue_r1
    client_addr:
      description: Address the standby connects from; null over a unix socket.
      type: str
      sample: 127.0.0.1
    pid:
      description: Pid of the walsender.
      type: int
      sample: 4711
    state:
      description: C(startup), C(catchup), C(streaming), C(backup) or C(stopping).
      type: str
      sample: streaming
    sync_state:
      description: C(async), C(potential), C(sync) or C(quorum).
      type: str
      sample: async
    sent_lsn:
      description: Last WAL position sent.
      type: str
      sample: 0/3000148
    write_lsn:
      description: Last WAL position the standby has written.
      type: str
      sample: 0/3000148
    flush_lsn:
      description: Last WAL position the standby has flushed.
      type: str
      sample: 0/3000148
    replay_lsn:
      description: Last WAL position the standby has replayed.
      type: str
      sample: 0/3000148
    replay_lag_bytes:
      description: Bytes of WAL from the server's current position to RV(replicas[].replay_lsn).
      type: int
      sample: 0
    replay_lag_ms:
      description: Replay lag in ms; 0 for a caught-up standby of an idle server; null when not measured yet.
      type: float
      sample: 0.512
    write_lag_ms:
      description: Write lag in ms as PostgreSQL reports it (null when idle).
      type: float
      sample: 0.2
    flush_lag_ms:
      description: Flush lag in ms as PostgreSQL reports it (null when idle).
      type: float
      sample: 0.3
current_lsn:
  description: The server's current WAL position (what it has replayed, when it is itself a standby).
  returned: success and on a failed gate
  type: str
  sample: 0/3000148
in_recovery:
  description: Whether the server connected to is itself a standby.
  returned: success and on a failed gate
  type: bool
  sample: false
max_replay_lag_bytes:
  description: The largest RV(replicas[].replay_lag_bytes); null without replicas.
  returned: success and on a failed gate
  type: int
  sample: 0
max_replay_lag_ms:
  description: The largest known RV(replicas[].replay_lag_ms); null when none is known.
  returned: success and on a failed gate
  type: float
  sample: 0.512
waited_s:
  description: Seconds spent polling before the gate held (or the timeout ran out).
  returned: success and on a failed gate
  type: float
  sample: 0.0
apply_error:
  description: The failing subscription when O(subscriber) is set and one of its workers fails.
  returned: on a failing subscription worker
  type: dict
  sample: {"subscription": "novacron_blue_to_green", "apply_error_count": 3, "sync_error_count": 0,
           "seen": "its workers failed 1 time(s) during this wait", "log": null,
           "failures": [{"worker": "apply", "table": "public.audit_log", "current": true,
                         "error": "logical replication target relation \"public.audit_log\" is missing replicated column: \"note\"",
                         "notes": [], "logged_at": "2026-12-03 19:54:24.430 UTC [3414]"}]}
problems:
  description: Why the gate does not hold, one entry per replica and bound; empty on success.
  returned: success and on a failed gate
  type: list
  elements: str
  sample: ["replica blue_r2 is not connected (no walsender with that application_name or slot)"]
queries:
  description: Statements that changed something; always empty (the module only reads).
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import (
    PSYCOPG,
    connect_option,
    connection_option,
    pg_argument_spec,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.replication import replication_lag


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            max_lag_bytes=dict(type="int"),
            max_lag_ms=dict(type="float"),
            expected_replicas=dict(type="raw"),
            timeout=dict(type="int", default=0),
            subscriber=connection_option(),
            subscriptions=dict(type="list", elements="str"),
        ),
        supports_check_mode=True,
    )
    openers = {"client": lambda: Client(module.params, check_mode=module.check_mode)}
    if module.params["subscriber"]:
        openers["subscriber"] = lambda: connect_option(module.params["subscriber"], "subscriber", module.check_mode)
    run_module(
        module,
        lambda opened: replication_lag(opened["client"], module.params, subscriber=opened.get("subscriber")),
        openers,
        libraries=[PSYCOPG],
    )


if __name__ == "__main__":
    main()
