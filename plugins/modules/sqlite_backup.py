#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_backup
short_description: Back up a live SQLite file with SQLite's online backup API, verified, before a migration changes it
description:
  - Copies the SQLite file O(path) into O(dest) while the application keeps writing - SQLite's online
    backup API inside one read transaction of the source, so the copy is one consistent snapshot (in WAL
    mode the writers do not wait for it).
  - The copy is verified before it takes the name O(dest) - C(PRAGMA integrity_check), and the same tables
    with the same row counts as the snapshot read in the same transaction - and switched to rollback-journal
    mode, so O(dest) is one self-contained file. It is written beside O(dest) as C(<dest>.zdm-partial) and
    renamed - a run that is killed never leaves a half backup under the name O(dest); the next run removes
    what it left.
  - An existing O(dest) is a rollback point and is kept - a sound SQLite file there means nothing to do
    (C(changed=false)); anything else there is refused. O(force) replaces it with a new backup.
  - Python's C(sqlite3) module does the copy; no C(sqlite3) command-line tool is needed.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.sqlite
options:
  dest:
    description:
      - The backup file. Its directory must exist.
    type: path
    required: true
  force:
    description:
      - Replace an existing O(dest) (a backup taken earlier, or a file that is not one) with a new backup.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Says whether a backup would be written; writes nothing.
  diff_mode:
    support: full
    description: Shows O(dest) before and after.
"""

EXAMPLES = r"""
- name: Back up vMiner's database before the migration changes anything
  zerodowntime.migration.sqlite_backup:
    path: /var/lib/vminer/vminer.db
    dest: /var/backups/vminer/vminer-before-migration.db
"""

RETURN = r"""
dest:
  description: The backup file.
  returned: success
  type: str
integrity:
  description: C(ok) - the result of C(PRAGMA integrity_check) on the backup.
  returned: success, not in check mode
  type: str
tables:
  description: Row count per table in the backup (the source's snapshot).
  returned: success, not in check mode
  type: dict
  sample: {"vcenters": 1000, "virtual_machines": 100000}
rows:
  description: Rows in the backup, all tables.
  returned: success, not in check mode
  type: int
bytes:
  description: The backup's size.
  returned: success, not in check mode
  type: int
seconds:
  description: How long the copy and its verification took.
  returned: when a backup was written
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.backup import back_up
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import CONNECTION_OPTIONS, Client


def main():
    module = AnsibleModule(
        argument_spec=dict(CONNECTION_OPTIONS, dest=dict(type="path", required=True), force=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    run_connection(
        module,
        lambda: Client(module.params, module.check_mode),
        lambda sqlite: back_up(sqlite, module.params["dest"], module.params["force"]),
    )


if __name__ == "__main__":
    main()
