#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_readonly
short_description: Freeze or unfreeze writes on a PostgreSQL instance or database (default_transaction_read_only)
description:
  - The write freeze used at cutover and by rollback. With O(readonly=true) new transactions are
    read-only; with O(readonly=false) the freeze is undone.
  - O(scope=instance) runs C(ALTER SYSTEM SET default_transaction_read_only = on) and
    C(pg_reload_conf()). It covers every database of the instance. Each backend re-reads the
    configuration before its next command, so existing sessions are read-only from their next
    transaction; a transaction already open stays read-write until it ends (see O(terminate_writers)).
    The freeze is "postgresql.auto.conf says on" - that is what the module reads back, and
    O(readonly=false) runs C(ALTER SYSTEM RESET default_transaction_read_only) and reloads. A value
    someone put in postgresql.auto.conf before the freeze is therefore not restored by the module
    (the module_utils function C(unfreeze) can restore it when given the value read before).
  - O(scope=database) runs C(ALTER DATABASE ... SET default_transaction_read_only = on) on the
    database the module connects to (O(login_db), alias C(database)). PostgreSQL applies it to
    B(new sessions only) - sessions already connected keep writing until they reconnect, unless
    O(terminate_writers) ends them. O(readonly=false) runs C(ALTER DATABASE ... RESET).
  - A role-level or database-and-role-level setting of C(default_transaction_read_only) wins over
    the freeze, and a client may override it in its own session. The module returns the catalog
    settings that defeat the freeze in RV(overrides) and warns about them.
  - Idempotent - it reads the current state back (C(pg_file_settings) for the instance, also
    noticing a value written but not yet reloaded; C(pg_db_role_setting) for a database) and
    changes nothing when it is already as asked.
  - O(scope=instance) needs a superuser (or, on PostgreSQL 15+, C(ALTER SYSTEM) privilege on the
    parameter, C(EXECUTE) on C(pg_reload_conf()) and C(pg_read_all_settings));
    O(scope=database) needs the database's owner or a superuser.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  readonly:
    description: C(true) freezes writes; C(false) undoes the freeze.
    type: bool
    required: true
  scope:
    description:
      - C(instance) freezes every database of the server, existing sessions included (from their next transaction).
      - C(database) freezes the database the module connects to (O(login_db)), for new sessions only.
    type: str
    choices: [instance, database]
    default: instance
  terminate_writers:
    description:
      - With O(readonly=true), after freezing (and after O(wait_for_sessions)), terminate with
        C(pg_terminate_backend) the sessions that can still write, and wait (at most 5 s) until they are gone.
      - With O(scope=instance) a session can still write when its open transaction has written
        (C(backend_xid) is set), is C(idle in transaction), or began before the freeze (it started
        read-write). With O(scope=database) every session connected before the freeze can still write.
      - Never terminated - this module's own session, walsenders, logical replication workers,
        autovacuum, parallel workers and other non-client backends. Sessions of superusers are
        terminated only when the module connects as a superuser (PostgreSQL allows nothing else);
        otherwise they are listed in RV(not_terminated).
      - Ignored with O(readonly=false). Needs a superuser or a member of C(pg_signal_backend).
    type: bool
    default: false
  wait_for_sessions:
    description:
      - With O(terminate_writers), seconds (0 to 3600) to let the sessions that can still write finish
        their transactions (or, for a database, disconnect) before the rest are terminated. The
        wait ends as soon as none is left.
      - C(0) terminates right after the freeze.
    type: float
    default: 0
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description:
      - Reads the state and the sessions, reports what would change and which sessions would be terminated.
      - Changes nothing and does not wait.
  diff_mode:
    support: full
    description: Shows readonly and scope (and the database) before and after.
notes:
  - The freeze is a guard, not a queue - clients see C(cannot execute ... in a read-only transaction)
    errors while it is in place. Read-only transactions also refuse C(nextval()).
  - The module's own session sets C(default_transaction_read_only = off) for itself so that it can
    unfreeze a database it is connected to.
"""

EXAMPLES = r"""
- name: Freeze writes on blue at cutover, giving open transactions 2 s before terminating them
  zerodowntime.migration.pg_readonly:
    login_host: 127.0.0.11
    login_port: 5432
    readonly: true
    scope: instance
    terminate_writers: true
    wait_for_sessions: 2

- name: Rollback - let blue take writes again
  zerodowntime.migration.pg_readonly:
    login_host: 127.0.0.11
    login_port: 5432
    readonly: false
    scope: instance

- name: Make new sessions of one database read-only (existing sessions are not affected)
  zerodowntime.migration.pg_readonly:
    login_host: 127.0.0.12
    login_port: 5432
    database: novacron
    scope: database
    readonly: true
"""

RETURN = r"""
readonly:
  description: The state asked for.
  returned: always
  type: bool
scope:
  description: C(instance) or C(database).
  returned: always
  type: str
database:
  description: The database frozen or unfrozen.
  returned: with scope database
  type: str
already_frozen:
  description: Whether the freeze was in place when the module started (with O(readonly=true) and C(changed=false), it already was).
  returned: always
  type: bool
applies_to:
  description: Which sessions the state reaches, in words (for O(scope=database) - new sessions only).
  returned: always
  type: str
sessions_affected:
  description:
    - The client sessions the freeze concerns (other than the module's own) - every client session of
      the instance, or those connected to the database. Taken after the freeze and the wait.
    - C(can_write) (with O(readonly=true)) says whether the session can still write (see O(terminate_writers)).
  returned: always
  type: list
  elements: dict
  sample:
    - pid: 4242
      usename: app
      datname: novacron
      application_name: api
      state: idle in transaction
      xact_start: "2024-05-01T10:00:00.123456+00:00"
      backend_xid: "1234"
      can_write: true
terminated:
  description: PIDs terminated (in check mode - that would be terminated).
  returned: always
  type: list
  elements: int
not_terminated:
  description: Sessions that can still write but were not terminated, with the reason.
  returned: always
  type: list
  elements: dict
waited:
  description: Seconds spent in O(wait_for_sessions).
  returned: always
  type: float
overrides:
  description: Role, database or database-and-role settings of default_transaction_read_only that are not C(on) and win over the freeze.
  returned: with readonly true
  type: list
  elements: dict
  sample: [{"database": null, "role": "batch", "value": "off"}]
queries:
  description: Statements run (or, in check mode, that would run).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.readonly import apply


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            readonly=dict(type="bool", required=True),
            scope=dict(type="str", choices=["instance", "database"], default="instance"),
            terminate_writers=dict(type="bool", default=False),
            wait_for_sessions=dict(type="float", default=0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    run(
        module,
        lambda client: apply(
            client,
            readonly=params["readonly"],
            scope=params["scope"],
            database=params["login_db"] if params["scope"] == "database" else None,
            terminate_writers=params["terminate_writers"],
            wait_for_sessions=params["wait_for_sessions"],
            warn=module.warn,
        ),
    )


if __name__ == "__main__":
    main()
