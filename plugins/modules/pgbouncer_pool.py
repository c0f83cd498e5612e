#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pgbouncer_pool
short_description: Pause, resume or repoint one PgBouncer pool through the admin console
description:
  - Talks to PgBouncer's admin console (the virtual database C(pgbouncer)) over the simple query
    protocol and brings one pool (a C([databases]) entry) to the state asked for.
  - O(state=paused) runs C(PAUSE db) - PgBouncer waits for the transactions running on the pool's
    server connections to end and queues new queries meanwhile (clients wait, they get no error).
    The wait is bounded by O(timeout) - if C(PAUSE) has not returned by then it is aborted with
    C(RESUME db) from a second admin connection, the pool serves again, and the module fails
    naming the pool, the wait and the server connections that held it.
  - O(state=resumed) runs C(RESUME db).
  - With O(host), O(port) or O(dbname) the pool is repointed - its line in O(config_file) gets the
    new values in place (every other byte of the file stays as it was), then C(RELOAD). Server
    connections move to the new server when next released. With O(state=paused) the pool is
    paused first, with O(state=resumed) it is repointed first and then resumed.
  - Idempotent - the current state is read from C(SHOW DATABASES) (host, port, paused), and the
    file is only written when it differs.
  - Pool names and other names that go into console commands cannot be parameterised, so they must
    match C([A-Za-z0-9_.-]+).
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.pgbouncer
options:
  database:
    description:
      - The pool, as named in PgBouncer's C([databases]) section (letters, digits, C(_), C(.), C(-)).
    type: str
    required: true
  state:
    description:
      - V(paused) - the pool is paused (new queries wait); V(resumed) - it serves; V(present) - it exists
        (and, with O(host), O(port) or O(dbname), points there) without changing whether it is paused.
    type: str
    choices: [paused, resumed, present]
    default: present
  host:
    description:
      - PostgreSQL host the pool should point at (written as C(host=) in its C([databases]) line).
    type: str
  port:
    description:
      - PostgreSQL port the pool should point at.
    type: int
  dbname:
    description:
      - Database on the PostgreSQL server the pool should use.
    type: str
  config_file:
    description:
      - The pgbouncer.ini PgBouncer runs with, rewritten when the pool is repointed (on the host that
        runs the module).
    type: path
    default: /etc/pgbouncer/pgbouncer.ini
  backup:
    description:
      - Keep a copy of O(config_file) (same owner and mode) before rewriting it.
    type: bool
    default: false
  timeout:
    description:
      - Seconds C(PAUSE) may take before it is aborted (clients wait this long at most, plus the
        abort). Also how long O(state=paused) waits for a pause issued elsewhere to drain.
    type: float
    default: 5.0
notes:
  - The connection options are those of the collection's PostgreSQL modules without their short
    aliases (O(host), O(port) and O(database) mean the pool here) and with PgBouncer's defaults, so
    the module is not in the C(zerodowntime.migration.postgres) action group.
  - PAUSE in transaction pooling waits for open transactions; a client that keeps a transaction open
    longer than O(timeout) makes the pause fail (and be undone), never hang.
requirements:
  - psycopg >= 3.1 (Python library, on the host that runs the module)
attributes:
  check_mode:
    support: full
    description: Reads C(SHOW DATABASES) and the config file and reports what would change; runs no PAUSE, RESUME or RELOAD.
  diff_mode:
    support: full
    description: Shows the pool's host, port, dbname and paused before and after.
"""

EXAMPLES = r"""
- name: Pause the application pool (clients wait), at most 2 seconds
  zerodowntime.migration.pgbouncer_pool:
    login_host: 127.0.0.1
    login_user: pgbouncer_admin
    login_password: "{{ pgbouncer_admin_password }}"
    database: novacron
    state: paused
    timeout: 2

- name: Point the pool at green and resume it
  zerodowntime.migration.pgbouncer_pool:
    login_host: 127.0.0.1
    login_user: pgbouncer_admin
    login_password: "{{ pgbouncer_admin_password }}"
    database: novacron
    host: 127.0.0.12
    port: 5432
    state: resumed
    backup: true
"""

RETURN = r"""
database:
  description: The pool.
  returned: success
  type: str
  sample: novacron
host:
  description: Host the pool points at (after the change; what it would point at in check mode).
  returned: success
  type: str
  sample: 127.0.0.12
port:
  description: Port the pool points at.
  returned: success
  type: int
  sample: 5432
dbname:
  description: Database on the server the pool uses.
  returned: success
  type: str
  sample: novacron
paused:
  description: Whether the pool is paused.
  returned: success
  type: bool
pause_ms:
  description: How long C(PAUSE) took to return, in milliseconds; null when no PAUSE ran.
  returned: success
  type: float
  sample: 3.2
pools:
  description:
    - SHOW POOLS figures of the pool summed over its users - clients active and waiting, server
      connections active, idle and used, the longest client wait in seconds.
  returned: success
  type: dict
  sample: {"cl_active": 4, "cl_waiting": 0, "sv_active": 0, "sv_idle": 2, "sv_used": 0, "maxwait": 0.0}
backup_file:
  description: The copy of config_file made before rewriting it.
  returned: when backup is true and the file changed
  type: str
holders:
  description: The active server connections that kept PAUSE from finishing (backend pid, server, user, client, application_name, since).
  returned: when PAUSE was aborted
  type: list
  elements: dict
waited_ms:
  description: How long the aborted PAUSE was waited for, in milliseconds.
  returned: when PAUSE was aborted
  type: float
queries:
  description: Admin console commands that changed something (in check mode, those that would have run).
  returned: always
  type: list
  elements: str
  sample: ["PAUSE novacron"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.console import (
    ADMIN_CONNECTION_ARGUMENT_SPEC,
    AdminConsole,
    check_params,
    ensure_pool,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import PSYCOPG


def open_console(module) -> AdminConsole:
    check_params(module.params)  # names and values are refused before anything connects
    return AdminConsole(module.params, check_mode=module.check_mode)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ADMIN_CONNECTION_ARGUMENT_SPEC,
            database=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["paused", "resumed", "present"]),
            host=dict(type="str"),
            port=dict(type="int"),
            dbname=dict(type="str"),
            config_file=dict(type="path", default="/etc/pgbouncer/pgbouncer.ini"),
            backup=dict(type="bool", default=False),
            timeout=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    run_module(
        module, lambda opened: ensure_pool(opened["console"], module.params), {"console": lambda: open_console(module)}, libraries=[PSYCOPG]
    )


if __name__ == "__main__":
    main()
