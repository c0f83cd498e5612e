#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_partition
short_description: Ensure the hash, range or list partitions of an existing partitioned table
description:
  - For a table that already exists and is partitioned (C(CREATE TABLE ... PARTITION BY ...)), creates the
    partitions it should have; hash partitions for every remainder, range partitions from a start to some
    intervals ahead of now, list partitions for given values, and optionally a C(DEFAULT) partition.
  - Range partitions can be retired, C(ALTER TABLE ... DETACH PARTITION) (and C(DROP TABLE) only with
    O(retention_drop=true)) once their upper bound is older than O(retention).
  - All changes run in one transaction, under a C(SHARE UPDATE EXCLUSIVE) lock on the table (reads and
    writes continue; C(CREATE TABLE ... PARTITION OF) and C(DETACH PARTITION) take a short
    C(ACCESS EXCLUSIVE) lock when they run). Nothing is changed when nothing is missing.
  - Existing partitions are matched by their bounds (read with C(pg_get_expr(relpartbound, oid))), whatever
    their names. A partition with the expected name but other bounds, or one whose bounds overlap a partition
    this task would create, is an error naming it, its bounds and the expected ones; then nothing is changed.
  - The table's partition strategy must be O(strategy); its key column decides what O(start), O(values) and
    O(retention) mean.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  table:
    description:
      - The partitioned table, C(name) or C(schema.name); an unqualified name is looked up in the C(search_path).
      - Names are taken literally (no case folding). Double-quote a part that contains a dot, or use O(schema).
    type: str
    required: true
  schema:
    description:
      - Schema of O(table). When set, O(table) is the bare table name, taken verbatim.
    type: str
  strategy:
    description:
      - How the table is partitioned; must match its C(PARTITION BY) clause.
    type: str
    required: true
    choices: [hash, range, list]
  modulus:
    description:
      - O(strategy=hash) only; the number of partitions. Ensures C(FOR VALUES WITH (MODULUS modulus, REMAINDER r))
        for every r from 0 to O(modulus) - 1.
    type: int
  interval:
    description:
      - O(strategy=range) with a C(date), C(timestamp) or C(timestamptz) key; the length of one partition.
      - Partitions start on calendar boundaries (midnight, Monday, the 1st of the month, January 1st) in the
        session's C(TimeZone).
    type: str
    choices: [day, week, month, year]
  step:
    description:
      - O(strategy=range) with an integer key (C(smallint), C(integer), C(bigint)); the width of one partition.
      - Partitions start at O(start) + k * O(step) (at multiples of O(step) when O(start) is not given).
    type: int
  start:
    description:
      - O(strategy=range); the lower bound of the first partition. A date or timestamp (C(YYYY-MM-DD) or
        C(YYYY-MM-DD HH:MM:SS[+HH:MM]), rounded down to the start of its O(interval)) for time keys, an integer
        for integer keys.
      - Without O(start) (and without O(lookback)) the first partition is the current one.
    type: raw
  lookback:
    description:
      - O(strategy=range), instead of O(start); how many intervals (or steps) before the current one to cover.
    type: int
  premake:
    description:
      - O(strategy=range); how many partitions to have after the current one. The current one holds now (time
        keys) or the larger of the key column's current maximum and O(start) (integer keys).
      - Partitions then cover [O(start), now + O(premake) intervals).
      - Defaults to V(3).
    type: int
  values:
    description:
      - O(strategy=list); the partitions and their values, as a dict (name suffix to a list of values) or a list
        of lists (the suffix is then made of the values, lower case, non-alphanumerics as C(_)).
      - Values are given as text or numbers and read as the key column's type. A value may appear in one
        partition only.
    type: raw
  default_partition:
    description:
      - Also ensure a C(DEFAULT) partition, named C({table}_default), for rows no other partition takes
        (range and list only). Any existing C(DEFAULT) partition counts, whatever its name.
    type: bool
    default: false
  name_template:
    description:
      - Python format string for the names of new partitions, created in the table's schema; at most 63 bytes.
      - Placeholders; C({table}) and C({schema}) (the parent's) always; hash C({modulus}) and C({remainder});
        range C({start}) and C({end}) (the bounds as dates, timestamps or integers, so C({start:%Y%m}) works);
        list C({suffix}).
      - Defaults; hash C({table}_p{remainder}); range C({table}_p{start:%Y%m%d}) for O(interval=day) and
        O(interval=week), C({table}_p{start:%Y%m}) for O(interval=month), C({table}_p{start:%Y}) for
        O(interval=year), C({table}_p{start}) for O(step); list C({table}_{suffix}).
    type: str
  retention:
    description:
      - O(strategy=range); detach partitions whose upper bound is at or before now minus this age, and do not
        create them. An age as a dict with keys C(value) and C(unit) (a number, and day, week, month or year) or a
        string such as C(6 months), C(30 days),
        C(1 year 2 weeks) (units day, week, month, year); for integer keys a number, counted back from the key
        column's current maximum.
      - Detaching keeps the data in a standalone table; see O(retention_drop).
    type: raw
  retention_drop:
    description:
      - Also C(DROP TABLE) the partitions O(retention) detaches. The data is gone.
    type: bool
    default: false
  lock_timeout:
    description:
      - C(lock_timeout) for the transaction (for example V(5s)), so a long-running query on the table makes the
        task fail instead of queueing all traffic behind the partition change. Unset, the server's applies.
    type: str
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description: Reads the table and its partitions, reports what would be created or detached; changes nothing.
  diff_mode:
    support: full
    description: The partitions (name to bound) before and after.
notes:
  - A partitioned table's primary key and unique constraints must include the partition key; this module does
    not change the parent table.
  - For integer keys the current maximum is read with C(SELECT max(key)); index the key column on large tables.
"""

EXAMPLES = r"""
- name: Hash-partition green's vms by tenant_id into 100 partitions
  zerodowntime.migration.pg_partition:
    login_host: 127.0.0.12
    login_port: 5432
    table: public.vms
    strategy: hash
    modulus: 100

- name: Monthly vm_metrics partitions, six months back and three ahead, older ones detached
  zerodowntime.migration.pg_partition:
    login_host: 127.0.0.12
    login_port: 5432
    table: vm_metrics
    strategy: range
    interval: month
    lookback: 6
    premake: 3
    default_partition: true
    retention: {value: 12, unit: month}
    lock_timeout: 5s

- name: Integer ranges of a million ids
  zerodowntime.migration.pg_partition:
    table: audit_archive
    strategy: range
    step: 1000000
    start: 0
    premake: 2

- name: One partition per region, and a default partition
  zerodowntime.migration.pg_partition:
    table: tenants_by_region
    strategy: list
    values:
      eu: [de, fr, nl]
      us: [us-east, us-west]
    default_partition: true
"""

RETURN = r"""
table:
  description: The partitioned table, schema-qualified.
  returned: success
  type: str
  sample: public.vms
strategy:
  description: The partition strategy.
  returned: success
  type: str
  sample: hash
partitions:
  description:
    - Every partition of the table after the task (in check mode, as it would be), with its bound as
      C(pg_get_expr) prints it; existing and created.
    - Names are schema-qualified only when the partition lives in another schema than the table.
  returned: success
  type: list
  elements: dict
  sample: [{"name": "vms_p0", "bound": "FOR VALUES WITH (modulus 100, remainder 0)"}]
created:
  description: Names of the partitions created (in check mode, that would be created).
  returned: success
  type: list
  elements: str
  sample: [vm_metrics_p202604]
detached:
  description: Names of the partitions detached by O(retention).
  returned: success
  type: list
  elements: str
dropped:
  description: Names of the partitions dropped (O(retention_drop=true)).
  returned: success
  type: list
  elements: str
queries:
  description: The statements that changed something (in check mode, that would have run), in order.
  returned: always
  type: list
  elements: str
  sample: ['CREATE TABLE "public"."vms_p0" PARTITION OF "public"."vms" FOR VALUES WITH (MODULUS 100, REMAINDER 0)']
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.partition import manage_partitions
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.partition_spec import build_spec


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            table=dict(type="str", required=True),
            schema=dict(type="str"),
            strategy=dict(type="str", required=True, choices=["hash", "range", "list"]),
            modulus=dict(type="int"),
            interval=dict(type="str", choices=["day", "week", "month", "year"]),
            step=dict(type="int"),
            start=dict(type="raw"),
            lookback=dict(type="int"),
            premake=dict(type="int"),
            values=dict(type="raw"),
            default_partition=dict(type="bool", default=False),
            name_template=dict(type="str"),
            retention=dict(type="raw"),
            retention_drop=dict(type="bool", default=False),
            lock_timeout=dict(type="str"),
        ),
        required_if=[("strategy", "hash", ["modulus"]), ("strategy", "range", ["interval", "step"], True)],
        mutually_exclusive=[("interval", "step"), ("start", "lookback")],
        supports_check_mode=True,
    )
    try:
        spec = build_spec(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc), changed=False, queries=[])
    run(module, lambda client: manage_partitions(client, spec))


if __name__ == "__main__":
    main()
