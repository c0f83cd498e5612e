#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_schema_apply
short_description: Apply ordered SQL files to a PostgreSQL database, each once, recorded with its checksum
description:
  - Applies the C(*.sql) files of a directory in name order (C(001_tables.sql), C(002_indexes.sql), ...),
    each at most once, and records each in a history table with its SHA-256 checksum.
  - A file already applied whose content has changed is an error naming the file; nothing runs.
  - 'A file runs in one transaction together with its history row, so a failing file leaves no
    trace. A file whose first line is C(-- zerodowntime: no-transaction) runs statement by statement
    in autocommit instead, for statements that cannot run in a transaction (C(CREATE INDEX CONCURRENTLY));
    write such files to be re-runnable (C(IF NOT EXISTS)).'
  - In check mode it reports the pending files and runs nothing, which makes it a pre-check
    ("no unapplied schema files").
  - Only files inside the directory are read. A C(*.sql) symlink whose real path leaves the directory
    (for example a link to C(/etc/passwd) or C(../other.sql)) is an error naming the link and where it
    resolves; a link to another file inside the directory is fine. A C(*.sql) entry that is not a regular
    file (a directory, a dangling link) is an error too. Every entry is checked before anything runs.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  path:
    description:
      - Directory holding the SQL files, on the host that runs the module.
      - A file given here is an error saying it is a file, not a directory (and naming its directory).
    type: path
    required: true
  history_table:
    description: Table (in schema C(public)) that records the applied files.
    type: str
    default: zerodowntime_schema_history
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description: Lists the pending files in RV(pending) and runs nothing.
  diff_mode:
    support: none
    description: The files are the diff; RV(pending) and RV(applied) name them.
"""

EXAMPLES = r"""
- name: Apply the target schema to green
  zerodowntime.migration.pg_schema_apply:
    login_host: 127.0.0.12
    login_port: 5432
    path: "{{ playbook_dir }}/files/schema/green"

- name: Pre-check that every schema file is applied
  zerodowntime.migration.pg_schema_apply:
    login_host: 127.0.0.12
    login_port: 5432
    path: "{{ playbook_dir }}/files/schema/green"
  check_mode: true
  register: schema_state
  failed_when: schema_state.pending | length > 0
"""

RETURN = r"""
applied:
  description: The files applied by this run, in order, with how long each took.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "001_tables.sql", "duration_ms": 42}]
pending:
  description: Files not applied yet (in check mode, those a run would apply; otherwise empty).
  returned: always
  type: list
  elements: str
already_applied:
  description: Files the history table recorded before this run.
  returned: always
  type: list
  elements: str
queries:
  description: Statements run (a transactional file is listed by name).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.schema import DEFAULT_HISTORY_TABLE, apply_files


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            path=dict(type="path", required=True),
            history_table=dict(type="str", default=DEFAULT_HISTORY_TABLE),
        ),
        supports_check_mode=True,
    )
    run(module, lambda client: apply_files(client, module.params["path"], module.params["history_table"]))


if __name__ == "__main__":
    main()
