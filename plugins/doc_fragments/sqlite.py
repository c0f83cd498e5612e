# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite file options: the database file and the busy timeout of every connection to it; and
(TABLES) the tables of the file a module works on (table_copy, table_compare, sqlite_cutover); (CHECKPOINTS)
where table_copy keeps its checkpoints (table_copy, sqlite_cutover); (TARGET) the file, its tables and the
PostgreSQL or MariaDB target's connection of the modules that go from the file to a target (table_copy,
sqlite_cutover, table_compare)."""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.doc_fragments import mariadb, postgres
from ansible_collections.zerodowntime.migration.plugins.plugin_utils.doc_text import flat

# Matches CONNECTION_OPTIONS in plugins/module_utils/sqlite/client.py.
CONNECTION_OPTIONS = r"""
path:
  description:
    - The SQLite database file, on the host that runs the module. It must exist - the module never
      creates one (a wrong path is an error, not a new empty database).
    - The module needs write access to the file and to its directory (WAL mode keeps C(-wal) and
      C(-shm) files beside it).
  type: path
  required: true
busy_timeout:
  description:
    - Seconds every connection of the module waits for another connection's lock (SQLite's busy
      timeout) before giving up with an error naming the lock (more than 0, at most 600).
    - The module holds the write lock only for a short transaction; the application's writers wait
      for it (up to their own busy timeout) instead of failing.
  type: float
  default: 5.0
"""

# Matches TABLE_OPTIONS in plugins/module_utils/sqlite/source.py.
TABLE_OPTIONS = r"""
tables:
  description:
    - The tables of the file, in this order. Left out - every table of the file but the change table.
  type: list
  elements: str
key_columns:
  description:
    - Per table, the columns that identify a row when it has no primary key (the same as given to
      M(zerodowntime.migration.sqlite_capture)). A table with neither is refused by name.
  type: dict
change_table:
  description:
    - The capture's change table in the SQLite file (M(zerodowntime.migration.sqlite_capture) O(change_table)).
  type: str
  default: zdm_changes
"""


# The checkpoints of table_copy, which sqlite_cutover reads (COPY_OPTIONS in plugins/module_utils/copy/run.py).
CHECKPOINT_OPTIONS = r"""
phase:
  description:
    - The migration_state phase row that holds table_copy's checkpoints and progress (one per copy).
  type: str
  default: table_copy
progress_schema:
  description:
    - Schema of the migration_state table in the target database (PostgreSQL only).
  type: str
  default: public
progress_table:
  description:
    - The migration_state table in the target database.
  type: str
  default: migration_progress
"""

# The requirements of both target engines, one list (a fragment has one requirements key), sorted as
# ansible-doc sorts the requirements of several fragments.
TARGET_REQUIREMENTS = "\nrequirements:\n" + "".join(
    sorted(line + "\n" for block in (postgres.REQUIREMENTS, mariadb.REQUIREMENTS) for line in block.strip().splitlines()[1:])
)


class ModuleDocFragment:
    # Composed when Ansible imports the fragment (see plugins/doc_fragments/redis.py).
    DOCUMENTATION: str = "options:\n" + flat(CONNECTION_OPTIONS)
    TABLES: str = "options:\n" + flat(TABLE_OPTIONS)
    CHECKPOINTS: str = "options:\n" + flat(CHECKPOINT_OPTIONS)
    # The file, its tables and the target (the PostgreSQL connection options, or the MariaDB ones with
    # target_engine=mariadb): what zerodowntime.migration.sqlite, .sqlite.tables, .postgres and .mariadb give together.
    TARGET: str = (
        "options:\n"
        + flat(CONNECTION_OPTIONS + TABLE_OPTIONS + postgres.CONNECTION_OPTIONS + mariadb.CONNECTION_OPTIONS)
        + TARGET_REQUIREMENTS
        + postgres.GROUP_NOTES
    )
