# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of the comparison engine every comparison module has (pg_compare, table_compare).

Matches ENGINE_OPTIONS in plugins/module_utils/compare/engine.py.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  leaf_rows:
    description: Bisection stops at this many rows and diffs the rows' digests.
    type: int
    default: 1000
  sample_percent:
    description:
      - Compare only this percentage of each table's chunks, chosen at random (at least one). For a
        quick check of huge tables; C(100) compares everything.
    type: float
    default: 100
  seed:
    description: Seed of the chunk sampling, to repeat a sampled comparison exactly.
    type: int
  max_keys:
    description: How many differing keys to return per table (all are counted).
    type: int
    default: 20
  fail_on_difference:
    description:
      - Fail when a table differs. With C(false) the module succeeds and reports RV(equal=false), for
        playbooks that write a report either way.
    type: bool
    default: true
"""
