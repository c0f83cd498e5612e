#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_readonly
short_description: Make a live SQLite file read-only for the cutover (triggers that refuse writes), or writable again
description:
  - SQLite has no server to freeze. O(state=present) creates, on each table of O(tables), C(BEFORE INSERT),
    C(BEFORE UPDATE) and C(BEFORE DELETE) triggers that abort the write (C(RAISE) with C(ABORT)) with a message naming the
    migration and where the application moves to (RV(message)). The application's write fails with that
    message (Python's sqlite3 raises C(IntegrityError)); no row changes.
  - O(state=absent) drops those triggers - the file is writable again (the rollback, or the end of the cutover).
  - Every trigger is created (or dropped) in one C(BEGIN IMMEDIATE) transaction that waits at most
    O(busy_timeout) for the write lock - no write commits between two tables. The application's writers wait
    for it (up to their own busy timeout) instead of failing; a failed run leaves the file as it was.
  - A write that committed before the toggle is recorded by M(zerodowntime.migration.sqlite_capture)'s
    C(AFTER) triggers as always; a refused write is aborted before any row changes, so it records nothing.
    The capture's change table is never made read-only.
  - The triggers are named C(zdm_readonly__<table>__insert|update|delete) and found by that prefix; the time
    the toggle was switched on is kept in the one-row view C(zdm_readonly__state). Triggers are compared by
    their SQL - a second run changes nothing; triggers on tables no longer in O(tables) are removed.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.sqlite
options:
  state:
    description:
      - V(present) - the file is read-only (the triggers exist); V(absent) - writable (no trigger of the toggle).
    type: str
    choices: [present, absent]
    default: present
  migration:
    description:
      - The migration's name, in the message of every refused write (so the application's log says why).
      - Required with O(state=present).
    type: str
  target_description:
    description:
      - Where the application moves to (a database, a URL - no password), added to the message.
    type: str
  tables:
    description:
      - The tables to make read-only. Left out - every table of the file but the capture's change table
        and SQLite's own C(sqlite_*) tables. A view or a virtual table is refused by name.
    type: list
    elements: str
  change_table:
    description:
      - The capture's change table (M(zerodowntime.migration.sqlite_capture) O(change_table)), which stays writable.
    type: str
    default: zdm_changes
notes:
  - Triggers refuse C(INSERT), C(UPDATE) and C(DELETE) (C(REPLACE) and upserts included). They do not refuse
    DDL (C(CREATE), C(ALTER), C(DROP TABLE)), writes to a table created after the toggle (run the module
    again), or writes to a virtual table (SQLite cannot put a trigger on one - the module warns about each).
requirements:
  - Python's sqlite3 with SQLite 3.37 or later (pragma_table_list)
attributes:
  check_mode:
    support: full
    description: Reads the file (a deferred transaction, rolled back) and reports what would change.
  diff_mode:
    support: full
    description: Shows every trigger (name and SQL) and the time the file became read-only, before and after.
"""

EXAMPLES = r"""
- name: Refuse the application's writes for the cutover
  zerodowntime.migration.sqlite_readonly:
    path: /var/lib/vminer/vminer.db
    migration: vminer-to-postgresql
    target_description: PostgreSQL vminer on green
    busy_timeout: 5

- name: Writable again (the rollback)
  zerodowntime.migration.sqlite_readonly:
    path: /var/lib/vminer/vminer.db
    state: absent
"""

RETURN = r"""
path:
  description: The file's absolute path.
  returned: success
  type: str
state:
  description: V(present) (read-only) or V(absent) (writable) after the run.
  returned: success
  type: str
readonly_since:
  description: When the toggle was switched on (UTC, ISO 8601); null when the file is writable.
  returned: success
  type: str
  sample: "2026-12-05T04:30:00.123+00:00"
tables:
  description: The tables whose writes are refused after the run.
  returned: success
  type: list
  elements: str
triggers:
  description: The toggle's triggers after the run, name to SQL.
  returned: success
  type: dict
message:
  description: The message a refused write fails with (null with O(state=absent)).
  returned: success
  type: str
  sample: "zerodowntime.migration m1: this database is read-only during the cutover; the application moves to green"
lock_wait_ms:
  description: How long the module waited for the write lock.
  returned: success
  type: float
lock_held_ms:
  description: How long the module held the write lock (the application's writes waited, not refused, meanwhile).
  returned: success
  type: float
queries:
  description: Statements that changed something (in check mode, those that would have run).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import CONNECTION_OPTIONS, Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.readonly import ensure_readonly


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_OPTIONS,
            state=dict(type="str", default="present", choices=["present", "absent"]),
            migration=dict(type="str"),
            target_description=dict(type="str"),
            tables=dict(type="list", elements="str"),
            change_table=dict(type="str", default="zdm_changes"),
        ),
        required_if=[("state", "present", ["migration"])],
        supports_check_mode=True,
    )
    run_connection(module, lambda: Client(module.params, module.check_mode), lambda sqlite: ensure_readonly(sqlite, module.params))


if __name__ == "__main__":
    main()
