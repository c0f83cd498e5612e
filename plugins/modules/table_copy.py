#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: table_copy
short_description: Copy tables from an SQLite file into PostgreSQL or MariaDB in resumable batches, then replay the captured changes
description:
  - Copies the tables O(tables) of the SQLite file O(path) into the PostgreSQL database of the
    C(login_*) options (schema O(target_schema)) - or, with O(target_engine=mariadb), into the
    MariaDB database of the C(mariadb_*) options - then replays the changes that
    M(zerodowntime.migration.sqlite_capture) recorded since the copy's snapshot, so the target
    catches up with an application that keeps writing.
  - The bulk copy reads one consistent snapshot of the file (one read transaction; the capture's
    sequence number is read in the same transaction), table by table in key order, O(batch_size)
    rows at a time, with C(COPY) (MariaDB - multi-row C(INSERT)s). Every few seconds
    (O(progress_interval)) the batches written and a checkpoint - per table the last key copied,
    and the snapshot's sequence number - commit together in one target transaction, in the phase
    row O(phase) of the M(zerodowntime.migration.migration_state) table
    O(progress_schema).O(progress_table) of the target database (MariaDB - a table O(progress_table)
    of the same shape in O(mariadb_database), created before the first batch's transaction because
    DDL commits implicitly there). A run that is killed, fails or stops at O(max_rows) is resumed
    by the next run exactly after its last checkpoint - no row twice, none missed.
  - The checkpoints record which data set they belong to - the file's path and the id its capture
    (M(zerodowntime.migration.sqlite_capture)) recorded when it was installed - and a run resumes
    them only from that same source. Another file, the same file with its capture removed and
    installed again, or a file restored from an older copy (its capture's change numbers behind
    the checkpoints') is refused, naming the tables, the recorded and the current source, and
    nothing is written; O(restart) discards such checkpoints and copies every table again.
  - The replay reads the change rows after the snapshot a chunk at a time, with the rows they name
    as they are now (in one snapshot), deletes those keys from the target and inserts the rows
    that still exist - idempotent, so repeating it is harmless. Again until at most
    O(replay_until) changes are left, or O(replay_timeout) passes (the backlog is returned).
  - Types are mapped explicitly. A table the target lacks is created with the SQLite declared
    type mapped (C(INTEGER)... to C(bigint), C(REAL)/C(DOUBLE)/C(FLOAT) to C(double precision),
    C(NUMERIC)/C(DECIMAL) to C(numeric), C(TEXT)/C(VARCHAR)/C(CHAR)/C(CLOB) to C(text), C(BLOB) or
    no type to C(bytea), C(BOOLEAN) to C(boolean), C(DATE) to C(date), C(DATETIME)/C(TIMESTAMP) to
    C(timestamp), C(JSON) to C(jsonb), C(UUID) to C(uuid)) or with O(column_types), and the
    source's primary key. A declared type not listed is refused by name - give it in
    O(column_types). An existing target table (plain or partitioned, for example by
    M(zerodowntime.migration.pg_partition)) is used as it is; its column types decide.
  - A MariaDB target is one more adapter of the same engine. A created table is InnoDB, C(utf8mb4)
    with the binary no-pad collation (C(utf8mb4_nopad_bin)), so text keys are unique and ordered
    by code point as in SQLite; the mapping there is integers to C(bigint), reals to C(double),
    numerics to C(decimal(65,30)), text to C(longtext) (a text key column C(varchar(255))), blobs
    to C(longblob) (a key C(varbinary(255))), booleans to C(tinyint(1)), dates to C(date),
    date-times to C(datetime(6)), JSON to C(json), UUIDs to C(char(36)). MariaDB keeps no time
    zone - a C(timestamptz) value is written in UTC into C(datetime(6)) (the session runs in UTC,
    so an existing C(timestamp) column is read and written in UTC). An existing column's type
    decides as for PostgreSQL (C(varchar(5)) refuses a longer value by name before writing);
    unsigned and zerofill integer columns are refused by name.
  - SQLite's text dates (ISO 8601, C(T) or a space, optional fraction and zone; or Unix seconds)
    become C(date), C(timestamp) or C(timestamptz) values (a time without a zone is UTC).
  - Every value is checked before it is written. One that does not fit its target column is an
    error naming the table, key, column and value; up to O(max_errors) such rows are skipped (not
    copied) and listed in RV(error_samples), one more fails the run.
  - While it runs, the phase row's C(details.progress) shows the table, rows done and total, rows
    per second and the ETA (C(playbooks/status.yml) shows it); the result has the totals.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.sqlite.target
  - zerodowntime.migration.sqlite.checkpoints
options:
  column_types:
    description:
      - Per table, per column, the target type to create the column with (a PostgreSQL or MariaDB type name, by
        O(target_engine)), overriding the mapping of its declared type (for example C(created_at) of
        C(virtual_machines) as C(timestamptz)) - also for a declared type that has no mapping. For an existing
        target table it must match the column's type.
    type: dict
  target_schema:
    description:
      - The target schema (created when missing, together with a missing table). PostgreSQL only - a
        MariaDB target's tables are in O(mariadb_database).
    type: str
    default: public
  batch_size:
    description:
      - Rows per read and C(COPY) (or C(INSERT)s) in the bulk copy; change rows per chunk in the replay.
    type: int
    default: 10000
  max_rows:
    description:
      - Stop after copying this many rows in this run (the checkpoint is kept; the next run goes on).
        No replay in a run that stops so. Left out - no limit.
    type: int
  max_errors:
    description:
      - How many values that do not fit their target column are skipped (their rows are not copied)
        before the run fails. Counted over every run of the phase.
    type: int
    default: 0
  overwrite:
    description:
      - Empty (C(TRUNCATE); MariaDB - C(DELETE), which stays in the batch's transaction) a target table that
        already holds rows this copy did not write. Without
        it such a table is refused and nothing is written.
    type: bool
    default: false
  restart:
    description:
      - When the phase's checkpoints were recorded for another source (see above), discard them and
        copy every table again from the start; the target tables they name are emptied (C(TRUNCATE))
        first, in the transaction of their first batch. Without it such a run is refused and nothing
        is written.
      - Checkpoints of this same source are always resumed, with or without it (so a second run
        still changes nothing); to copy a finished phase again, use another O(phase).
    type: bool
    default: false
  replay_until:
    description:
      - Replay until at most this many captured changes are left.
    type: int
    default: 0
  replay_timeout:
    description:
      - Seconds the replay goes on at most while the application keeps the backlog above O(replay_until).
    type: float
    default: 300
  progress_interval:
    description:
      - Seconds between checkpoints (and progress writes) at most; also how much work a killed run
        repeats at most.
    type: float
    default: 5
notes:
  - The progress table lives in the target database so that a batch and its checkpoint commit together.
  - Change rows are not removed from the change table; M(zerodowntime.migration.sqlite_capture)
    C(state=absent) removes it once the cutover is done.
requirements:
  - psycopg >= 3.1 (a PostgreSQL target) or PyMySQL (a MariaDB target)
  - Python's sqlite3 with SQLite 3.38 or later
attributes:
  check_mode:
    support: full
    description:
      - Reads both sides and returns the plan (per table its key, column types, whether it is
        created, rows) and the pending changes; writes nothing.
  diff_mode:
    support: full
    description: Per table the rows copied and whether it is done, and the last change replayed, before and after the run.
"""

EXAMPLES = r"""
- name: Copy vMiner's SQLite file into green and replay what changed meanwhile
  zerodowntime.migration.table_copy:
    path: /var/lib/vminer/vminer.db
    tables: [vcenters, hosts, datastores, virtual_machines]
    column_types:
      virtual_machines: {created_at: timestamptz, updated_at: timestamptz}
      vcenters: {created_at: timestamptz, last_sync_at: timestamptz}
    login_host: 127.0.0.12
    login_port: 5432
    login_user: migrator
    login_password: "{{ migration_password }}"
    login_db: vminer
    batch_size: 20000

- name: Copy the same file into MariaDB instead (checkpoints in appdb.migration_progress)
  zerodowntime.migration.table_copy:
    path: /var/lib/vminer/vminer.db
    target_engine: mariadb
    mariadb_host: 127.0.0.14
    mariadb_user: app
    mariadb_password: "{{ mariadb_app_password }}"
    mariadb_database: appdb
    column_types:
      virtual_machines: {created_at: timestamptz, updated_at: timestamptz}

- name: The file was replaced since the copy began - copy it again from the start
  zerodowntime.migration.table_copy:
    path: /var/lib/vminer/vminer.db
    login_host: 127.0.0.12
    login_port: 5432
    login_user: migrator
    login_password: "{{ migration_password }}"
    login_db: vminer
    restart: true
"""

RETURN = r"""
plan:
  description: Per table - key, columns (declared type -> target type), whether the table is created (and how), rows, done.
  returned: always
  type: list
  elements: dict
tables:
  description: Per table - rows_total, rows_copied (this run), rows (copied over every run), last_key, done.
  returned: success, not in check mode
  type: dict
rows_copied:
  description: Rows copied by this run.
  returned: success, not in check mode
  type: int
rows_per_second:
  description: Rows copied per second over this run.
  returned: success, not in check mode
  type: float
seconds:
  description: Duration of this run.
  returned: success, not in check mode
  type: float
replayed_changes:
  description: Change rows replayed by this run.
  returned: success, not in check mode
  type: int
backlog:
  description: Change rows left after the replay (null when the run stopped at max_rows).
  returned: success, not in check mode
  type: int
pending_changes:
  description: In check mode, change rows the replay would apply.
  returned: check mode
  type: int
errors:
  description: Values that did not fit their target column, over every run of the phase.
  returned: success, not in check mode
  type: int
error_samples:
  description: The first of them - table, key, column, value, error.
  returned: success, not in check mode
  type: list
  elements: dict
complete:
  description: Whether every table is copied and the replay ran (false after O(max_rows)).
  returned: always
  type: bool
snapshot_seq:
  description: The capture's sequence number of the copy's snapshot.
  returned: always
  type: int
replayed_seq:
  description: The last change row replayed.
  returned: success, not in check mode
  type: int
source:
  description: The source the checkpoints belong to - path, change_table, capture_id.
  returned: always
  type: dict
restarted:
  description: The tables whose checkpoints (recorded for another source) O(restart) discarded.
  returned: always
  type: list
  elements: str
queries:
  description: Statements that changed something (in check mode, none are run).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import (
    COPY_OPTIONS,
    TARGET_REQUIRED_IF,
    run_copy,
    run_sqlite_to_target,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import CONNECTION_OPTIONS


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(**CONNECTION_OPTIONS, **COPY_OPTIONS), required_if=TARGET_REQUIRED_IF, supports_check_mode=True
    )
    run_sqlite_to_target(module, lambda sqlite, target: run_copy(sqlite, target, module.params, module.check_mode))


if __name__ == "__main__":
    main()
