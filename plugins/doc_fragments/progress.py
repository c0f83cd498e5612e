# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `progress` option of the modules that wait long (pg_subscription, pg_index, pg_compare);
`.table`: the progress table's name, for migration_state.

Matches PROGRESS_SPEC in plugins/module_utils/postgres/progress.py.
"""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.doc_fragments.postgres import CONNECTION_OPTIONS
from ansible_collections.zerodowntime.migration.plugins.plugin_utils.doc_text import flat, nest, option

# The progress table's name, also an option of migration_state (which keeps the table).
TABLE_OPTION = r"""
table:
  description:
    - Name of the progress table.
  type: str
  default: migration_progress
"""

PROGRESS_OPTIONS = (
    CONNECTION_OPTIONS
    + r"""
phase:
  description:
    - The phase (a row of the progress table that zerodowntime.migration.migration_state keeps) the step belongs
      to; start it with migration_state (state started) first.
  type: str
  required: true
step:
  description:
    - Name of the step in the phase row's C(progress) (several steps of a phase each keep their own);
      by default the module's own name for what it waits for.
  type: str
schema:
  description:
    - Schema of the progress table.
  type: str
  default: public
"""
    + TABLE_OPTION
    + r"""
every:
  description:
    - Seconds between two progress writes at most (the first and the last are always written).
  type: float
  default: 5.0
"""
)

DESCRIPTION = [
    "Where to report the progress of the long wait while it runs, so C(playbooks/status.yml) (or anyone reading "
    "the progress table) sees it live. The suboptions are the connection to the database of the migration_state progress table "
    "(connection options as at the top level), the O(progress.phase) and the O(progress.step).",
    "The module writes done of total, unit, percent, rate (units per second over the last 30 seconds), "
    "ETA in seconds, per-part figures (C(items)), C(state) (running, done, failed) and the server's C(updated_at) "
    "into the C(progress) jsonb column of the phase's row, under the step's name, at most every O(progress.every) "
    "seconds, over a connection of its own in autocommit (never inside the work's transaction). A table without "
    "the C(progress) column gets it.",
    "A failing progress write (no such phase row, the database down, a lock held longer than 2 s) never fails the "
    "work; the module warns, once per problem. Check mode writes no progress. Omit the option to report nothing.",
]


class ModuleDocFragment:
    # Composed when Ansible imports the fragment (see plugins/doc_fragments/postgres.py).
    DOCUMENTATION: str = "options:\n" + option("progress", DESCRIPTION, nest(PROGRESS_OPTIONS, "progress"), required=False)

    # migration_state's own O(table) (the table it keeps).
    TABLE: str = "options:\n" + flat(TABLE_OPTION)
