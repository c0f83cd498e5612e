#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_compare
short_description: Prove two PostgreSQL databases hold the same rows, and find the keys that differ
description:
  - For each table of O(tables), compares row counts and checksums over key-range chunks, computed
    on the source and the target at the same time. A chunk that differs is bisected at its median
    key down to O(leaf_rows) rows, whose keys are then diffed - the result names the keys that are
    missing on the target, extra on the target, or changed.
  - The key is the source's replica identity index, else its primary key, or O(key). Integer,
    text, uuid, timestamp and composite keys all work; chunk bounds are key values sampled from the
    source, so chunks hold about O(chunk_rows) rows whatever the key's distribution.
  - Rows are compared by a 64-bit digest of the source's columns. Columns whose equal values always
    print the same (integers, text, uuid, timestamps, jsonb, ...) are hashed natively; the others
    (numeric, float, json, arrays, ...) and any column whose type differs between the sides are
    hashed in their text form, so C(1.0) vs C(1.00) is a difference. Columns only the target has
    are ignored, and the target may be partitioned differently - only the rows matter.
  - A table with neither a primary key nor a replica identity index is compared as one
    whole-table checksum, with a warning - a difference is then found but not located.
  - B(Consistency while replication is live) - the sides are read at nearly the same moment, not
    in one snapshot, so rows still in flight can differ. Every differing chunk is compared again
    up to O(rechecks) times, each time after the target has confirmed the source's current WAL
    position through O(slot) (else after O(recheck_delay) seconds), and its keys located again;
    only what still differs is reported.
  - Reads only; the result is the same in check mode.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.postgres.pair
  - zerodowntime.migration.progress
  - zerodowntime.migration.compare
options:
  tables:
    description:
      - Tables to compare, C(table) or C(schema.table) (names are taken literally; quote a part that
        contains a dot with double quotes).
    type: list
    elements: str
    required: true
  key:
    description:
      - "Key columns to use per table, for example C({vms: [tenant_id, id]}), instead of the source's
        replica identity or primary key. The columns must identify a row on both sides."
    type: dict
    default: {}
  chunk_rows:
    description: About how many rows each checksummed chunk holds.
    type: int
    default: 100000
  rechecks:
    description: How many times differing chunks are compared again before their keys are reported; C(0) reports the first reading.
    type: int
    default: 3
  recheck_delay:
    description: Seconds to wait before a re-read when O(slot) is not given.
    type: float
    default: 1.0
  slot:
    description:
      - The replication slot on the source that feeds the target. Before each re-read the module
        waits (up to O(timeout)) until the slot confirms the source's current WAL position.
    type: str
  timeout:
    description: Seconds to wait for the target to catch up before a re-read.
    type: float
    default: 60
  parallel:
    description:
      - Connections per side that read chunks at the same time in the first pass (bisection and
        re-reads use one). More than the server's cores buys nothing.
    type: int
    default: 2
notes:
  - O(source) is blue - its columns, key and chunk bounds define the comparison; O(target) is green.
  - Session settings are made equal on both sides (C(TimeZone=UTC), C(DateStyle=ISO), ...), so text
    forms depend on the data only.
  - Partitioned tables are compared through their parent. C(hash_record_extended) needs PostgreSQL 14.
"""

EXAMPLES = r"""
- name: Compare every replicated table, blue against green
  zerodowntime.migration.pg_compare:
    source: "{{ migration_blue | combine({'login_password': migration_password}) }}"
    target: "{{ migration_green | combine({'login_password': migration_password}) }}"
    tables: [tenants, users, vms, vm_metrics]
    slot: novacron_blue_to_green
    fail_on_difference: false
  register: compared

- name: Spot-check a huge table (5 % of its chunks)
  zerodowntime.migration.pg_compare:
    source: "{{ migration_blue | combine({'login_password': migration_password}) }}"
    target: "{{ migration_green | combine({'login_password': migration_password}) }}"
    tables: [vm_metrics]
    sample_percent: 5
"""

RETURN = r"""
equal:
  description: Whether every table holds the same rows on both sides.
  returned: always
  type: bool
differing_tables:
  description: The tables that differ.
  returned: always
  type: list
  elements: str
rows_compared:
  description: Rows read on the source, over every table.
  returned: always
  type: int
duration_seconds:
  description: How long the comparison took.
  returned: always
  type: float
tables:
  description: One entry per table.
  returned: always
  type: list
  elements: dict
  contains:
    table:
      description: The table.
      type: str
    key:
      description: The key columns used (empty for a whole-table checksum).
      type: list
    rows_source:
      description: Rows on the source (in the chunks checked).
      type: int
    rows_target:
      description: Rows on the target (in the chunks checked).
      type: int
    chunks:
      description: Chunks the table was divided into.
      type: int
    chunks_checked:
      description: Chunks compared (fewer than RV(tables[].chunks) with O(sample_percent)).
      type: int
    chunks_differing:
      description: Chunks whose count or checksum differed at first reading.
      type: int
    differences:
      description: Keys that differ, after the re-reads.
      type: int
    missing:
      description: Keys on the source that the target lacks.
      type: int
    extra:
      description: Keys only the target has.
      type: int
    changed:
      description: Keys on both sides whose rows differ.
      type: int
    differing_keys:
      description: The first O(max_keys) differing keys, each C({key, kind}).
      type: list
      sample: [{"key": {"id": "42"}, "kind": "changed"}]
    equal:
      description: Whether this table is the same on both sides.
      type: bool
    duration_seconds:
      description: How long this table took.
      type: float
progress:
  description: What the comparison reported while it ran (chunks compared, re-reads).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.engine import ENGINE_OPTIONS, option_problem
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.compare import compare_tables
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import PSYCOPG, pair_argument_spec, pair_openers
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.progress import PROGRESS_SPEC, open_reporter


def compare(module, opened) -> dict:
    progress = []

    def log(message):
        progress.append(message)
        module.log(message)

    tables = module.params["tables"]
    reporter = open_reporter(module.params["progress"], f"compare {', '.join(tables)}", module.check_mode, unit="tables", total=len(tables))
    try:
        result = compare_tables(
            opened["source"], opened["target"], module.params, log, open_reader=lambda client: Client(client.params), reporter=reporter
        )
    except PgError as exc:
        if reporter.emitted:
            reporter.finish("failed", {"error": str(exc)[:500]})
        exc.details.setdefault("warnings", reporter.warnings)
        reporter.close()
        raise
    if reporter.emitted:
        reporter.progress.update(len(tables))
        reporter.finish("done", {"table": None, "equal": result["equal"], "differing_tables": result["differing_tables"]})
    reporter.close()
    result["warnings"] = result.get("warnings", []) + reporter.warnings
    result["progress"] = progress
    if not result["equal"] and module.params["fail_on_difference"]:
        module.fail_json(**result)
    return result


def main():
    module = AnsibleModule(
        argument_spec=pair_argument_spec(
            tables=dict(type="list", elements="str", required=True),
            key=dict(type="dict", default={}, no_log=False),
            chunk_rows=dict(type="int", default=100000),
            rechecks=dict(type="int", default=3),
            recheck_delay=dict(type="float", default=1.0),
            slot=dict(type="str"),
            timeout=dict(type="float", default=60.0),
            parallel=dict(type="int", default=2),
            progress=PROGRESS_SPEC,
            **ENGINE_OPTIONS,
        ),
        supports_check_mode=True,
    )
    problem = option_problem(module.params) or ("parallel must be at least 1" if module.params["parallel"] < 1 else None)
    if problem:
        module.fail_json(msg=problem)
    run_module(module, lambda opened: compare(module, opened), pair_openers(module.params), libraries=[PSYCOPG])


if __name__ == "__main__":
    main()
