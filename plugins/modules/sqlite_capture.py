#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_capture
short_description: Record every change to an SQLite file's tables in a change table (triggers), or remove the capture
description:
  - O(state=present) creates the change table O(change_table) in the same file (if missing) and, on
    each table of O(tables), C(AFTER INSERT), C(AFTER UPDATE) and C(AFTER DELETE) triggers that add
    one row to it per changed row - C(seq) (C(INTEGER PRIMARY KEY AUTOINCREMENT) - monotonic, never
    reused, the order in which the changes committed), C(table_name), C(pk) (the row's key as a
    JSON array, in key column order; a BLOB value, which JSON cannot hold, as an object with the one
    member C(blob), its bytes in hex), C(old_pk) (the key before an C(UPDATE) that changed it, otherwise
    null), C(op) (C(I), C(U) or C(D)) and C(changed_at).
  - The triggers run inside the application's own transactions, so a change row exists exactly when
    the change committed; the capture adds no connection the application waits on.
  - Triggers of this change table on tables not in O(tables) are removed, so the captured tables are
    exactly O(tables). Triggers are compared by their SQL - a second run changes nothing.
  - O(state=present) switches the file to WAL mode (C(PRAGMA journal_mode=WAL)), which stays - readers
    and the writer no longer block each other, and the copy can read a snapshot while the application
    writes. The module does not switch it back with O(state=absent).
  - The capture records its identity when the change table is created - a random id, in the
    one-row view C(<change_table>__capture) - so that M(zerodowntime.migration.table_copy)'s
    checkpoints are resumed only from the data set they were recorded for - a capture removed and
    installed again, or another file's, has another id. A capture installed by an earlier version
    gets its id on the next run (that run reports a change once).
  - O(state=absent) removes the triggers, the change table and the identity view. A change table that holds rows is
    refused, and nothing is removed, unless O(force=true) - those rows are changes not yet replayed.
  - Every change runs in one short C(BEGIN IMMEDIATE) transaction that waits at most O(busy_timeout)
    for the write lock; a failed run leaves the file as it was.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.sqlite
options:
  tables:
    description:
      - The tables to capture. Left out - every table of the file (but the change table and
        SQLite's own C(sqlite_*) tables).
      - Each needs a primary key, or its key columns in O(key_columns); a table without either is
        refused by name.
    type: list
    elements: str
  key_columns:
    description:
      - Per table, the columns that identify a row, for a table without a declared primary key
        (C(rowid) is not used - C(VACUUM) may renumber it). Overrides a declared primary key too.
    type: dict
  change_table:
    description:
      - Name of the change table (and prefix of the triggers, C(<change_table>__<table>__insert|update|delete)).
    type: str
    default: zdm_changes
  state:
    description:
      - V(present) - the change table and the triggers exist; V(absent) - neither does.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=absent), drop the change table even though it holds change rows (they are lost).
    type: bool
    default: false
notes:
  - An C(INSERT OR REPLACE) that replaces a row records one C(I) row (SQLite fires no C(DELETE)
    trigger for a replaced row unless C(recursive_triggers) is on); a replay applies C(I) as an upsert.
  - C(ALTER TABLE ... RENAME) of a captured table keeps its triggers but their names no longer match;
    run the module again after a rename.
requirements:
  - Python's sqlite3 with SQLite 3.38 or later (JSON functions built in)
attributes:
  check_mode:
    support: full
    description: Reads the file (a deferred transaction, rolled back) and reports what would change; switches nothing to WAL.
  diff_mode:
    support: full
    description: Shows the change table, the journal mode and every trigger (name and SQL) before and after.
"""

EXAMPLES = r"""
- name: Capture the vMiner tables' changes
  zerodowntime.migration.sqlite_capture:
    path: /var/lib/vminer/vminer.db
    tables: [vcenters, hosts, datastores, virtual_machines]
    busy_timeout: 5

- name: Capture a table without a primary key by its natural key
  zerodowntime.migration.sqlite_capture:
    path: /var/lib/vminer/vminer.db
    tables: [vm_tags]
    key_columns:
      vm_tags: [vm_id, tag]

- name: Remove the capture once every change is replayed
  zerodowntime.migration.sqlite_capture:
    path: /var/lib/vminer/vminer.db
    state: absent
"""

RETURN = r"""
path:
  description: The file's absolute path.
  returned: success
  type: str
state:
  description: V(present) or V(absent) after the run.
  returned: success
  type: str
capture:
  description: The change table, the triggers (name to SQL) and the capture's id (C(capture_id)) after the run.
  returned: success
  type: dict
journal_mode:
  description: The file's journal mode after the run (V(wal) after O(state=present)).
  returned: success
  type: str
  sample: wal
pending_changes:
  description: Rows in the change table after the run.
  returned: success
  type: int
queries:
  description: Statements that changed something (in check mode, those that would have run).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.capture import ensure_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import CONNECTION_OPTIONS, Client


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_OPTIONS,
            tables=dict(type="list", elements="str"),
            key_columns=dict(type="dict", no_log=False),
            change_table=dict(type="str", default="zdm_changes"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_connection(module, lambda: Client(module.params, module.check_mode), lambda sqlite: ensure_capture(sqlite, module.params))


if __name__ == "__main__":
    main()
