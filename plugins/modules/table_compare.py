#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: table_compare
short_description: Prove an SQLite file's tables and a PostgreSQL or MariaDB database's hold the same rows, and find the keys that differ
description:
  - For each table of O(tables), compares row counts and checksums over key-range chunks of the
    SQLite file O(path) (the source) and of the PostgreSQL database of the C(login_*) options,
    schema O(target_schema) - or, with O(target_engine=mariadb), the MariaDB database of the
    C(mariadb_*) options - (the target), the tables M(zerodowntime.migration.table_copy)
    wrote. A chunk that differs is bisected at its median key down to O(leaf_rows) rows, whose
    keys are then diffed - the result names the keys that are missing on the target, extra on the
    target, or changed. It is the comparison engine of M(zerodowntime.migration.pg_compare), with a
    side per engine.
  - The engines type values differently (SQLite stores what it is given - an integer as text, a
    date as text or Unix seconds, a boolean as 0 or 1), so each side reads the rows of a range in
    key order and digests them in Python over one canonical form per type - integers as digits,
    reals to 15 significant digits (6 for a C(real) column), numerics without trailing zeros,
    booleans, dates and timestamps in ISO 8601 (C(timestamptz) in UTC), JSON with sorted keys,
    blobs in hex, NULL apart from every value. A value is converted as the copy converts it
    before writing, so the types are the copy's - the existing target column's type decides, or
    O(column_types).
  - Each table must exist on the target (in O(target_schema), or O(mariadb_database)) with every column of the source.
  - The key is the SQLite table's primary key, or O(key_columns). Integer and text keys (also
    composite); text keys are ordered by code point on both sides (PostgreSQL C(COLLATE "C"),
    MariaDB C(COLLATE utf8mb4_nopad_bin) - the collation of a table the copy created, so its index serves).
  - MariaDB keeps no time zone; its session runs in UTC, so a C(datetime) holding what the copy
    wrote compares with the SQLite text (a time with an offset is compared in UTC).
  - Reads only, through one connection per side; the result is the same in check mode and
    C(changed) is always false. While the application writes, rows in flight can differ - compare
    after the copy's replay, or give O(rechecks).
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.sqlite.target
  - zerodowntime.migration.compare
options:
  column_types:
    description:
      - Per table, per column, the target type (as given to M(zerodowntime.migration.table_copy)).
        The existing target column's type decides; an override that differs from it is an error.
    type: dict
  target_schema:
    description: The PostgreSQL schema holding the tables (PostgreSQL only).
    type: str
    default: public
  chunk_rows:
    description: About how many rows each checksummed chunk holds (read into memory on each side at once).
    type: int
    default: 20000
  rechecks:
    description:
      - How many times differing chunks are compared again, after O(recheck_delay) seconds, before
        their keys are reported; C(0) reports the first reading.
    type: int
    default: 0
  recheck_delay:
    description: Seconds to wait before a re-read.
    type: float
    default: 1.0
notes:
  - The SQLite file is the source - its tables, columns and key define the comparison; columns only
    the target has are ignored, and the target may be partitioned (only the rows matter).
  - A MariaDB target is one more side adapter of the same engine (the copy's target adapter gives it).
"""

EXAMPLES = r"""
- name: Compare the vMiner tables after the copy's replay
  zerodowntime.migration.table_compare:
    path: /var/lib/vminer/vminer.db
    login_host: 127.0.0.20
    login_user: migration
    login_password: "{{ migration_password }}"
    login_db: vminer
    tables: [vcenters, hosts, datastores, virtual_machines]
    fail_on_difference: false
  register: compared

- name: Compare the same tables copied into MariaDB
  zerodowntime.migration.table_compare:
    path: /var/lib/vminer/vminer.db
    target_engine: mariadb
    mariadb_host: 127.0.0.14
    mariadb_user: validator
    mariadb_password: "{{ mariadb_validator_password }}"
    mariadb_database: appdb
    tables: [vcenters, hosts, datastores, virtual_machines]
"""

RETURN = r"""
equal:
  description: Whether every table holds the same rows in the SQLite file and on the target.
  returned: always
  type: bool
differing_tables:
  description: The tables that differ (their keys are in RV(tables[].differing_keys)).
  returned: always
  type: list
  elements: str
rows_compared:
  description: Rows read in the SQLite file, over every table.
  returned: always
  type: int
duration_seconds:
  description: How long the comparison of all the tables took.
  returned: always
  type: float
tables:
  description:
    - One entry per table, the comparison engine's - its keys mean what they mean in
      RV(zerodowntime.migration.pg_compare#module:tables), which documents each - C(table), C(key),
      C(rows_source), C(rows_target), C(chunks),
      C(chunks_checked), C(chunks_differing), C(differences), C(missing), C(extra), C(changed),
      C(differing_keys), C(equal) and C(duration_seconds). What differs here is below.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The key columns used (the SQLite table's primary key, or O(key_columns)).
      type: list
    differing_keys:
      description:
        - The first O(max_keys) differing keys, each C({key, kind}); a key value keeps the type it
          has in the SQLite file (an integer key as a number).
      type: list
      sample: [{"key": {"id": 42}, "kind": "changed"}]
path:
  description: The SQLite file.
  returned: always
  type: str
queries:
  description: Statements that changed something - none, the module only reads.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.run import COMPARE_OPTIONS, run_compare
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import TARGET_REQUIRED_IF, run_sqlite_to_target
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import CONNECTION_OPTIONS


def compare(module, sqlite_client, target_client) -> dict:
    result = run_compare(sqlite_client, target_client, module.params, module.log)
    if not result["equal"] and module.params["fail_on_difference"]:
        module.fail_json(**result)
    return result


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(**CONNECTION_OPTIONS, **COMPARE_OPTIONS), required_if=TARGET_REQUIRED_IF, supports_check_mode=True
    )
    # reads only: the clients run every statement, in check mode too
    run_sqlite_to_target(module, lambda sqlite, target: compare(module, sqlite, target), writes=False)


if __name__ == "__main__":
    main()
