#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_schema_drift
short_description: Find schema drift between blue and green before it breaks logical replication
description:
  - Compares the source's (blue's) and the target's (green's) definitions of every replicated table - the
    tables of O(publication) on the source, or O(tables) - and reports each difference with its kind, the
    object, both sides' values and a severity.
  - Compared are columns, types, nullability, generated columns, primary keys and replica identities, the
    sequences owned by columns (serial and identity, their names and types) and partition keys.
  - C(blocking) differences make rows fail to apply, or the cutover fail - a table or a column blue sends that
    green lacks, a type green may reject blue's values in, NOT NULL on green where blue may send NULL (or a NOT
    NULL column without a default that only green has), a key green finds rows by that blue does not send, a
    sequence green lacks or holds in a narrower type. Each comes with the statement to run on green.
  - Beyond the tables, what logical replication carries for no table is looked for, each blocking and named with its
    fix - large objects blue has and green lacks (by OID; pg_largeobject is never replicated), unlogged tables on
    blue (no publication can hold them; with O(publication) every one of the database, with O(tables) the listed
    ones), replicated tables blue sends no key for (no primary key nor replica identity - blue refuses their UPDATEs
    and DELETEs once published; harmless when O(publication) publishes neither updates nor deletes), and
    sequences blue has and green lacks (the cutover's sequence sync moves every sequence of blue's non-system
    schemas; one created after green's schema stops it).
  - C(harmless) differences do not - green has extra nullable or defaulted columns, a wider type, another
    usable primary key, or is partitioned where blue is not (or differently).
  - Logical replication does not carry DDL; run this after a deploy changed blue's schema, and before the
    cutover (phase 1 and phase 5 of the playbooks do).
  - Reads only; C(changed) is always false and check mode runs the same comparison.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.postgres.pair
options:
  publication:
    description:
      - The publication on the source whose tables are compared (C(FOR ALL TABLES) and C(TABLES IN SCHEMA) included).
      - Mutually exclusive with O(tables).
    type: str
  tables:
    description:
      - The tables to compare, C(table) or C(schema.table) (names are taken literally; quote a part that contains a
        dot with double quotes). Mutually exclusive with O(publication).
    type: list
    elements: str
  fail_on:
    description:
      - C(blocking) fails when a blocking difference is found, C(any) when any difference is, C(none) never (the
        differences are returned either way). The error names each difference and the statement that fixes it.
    type: str
    choices: [blocking, any, none]
    default: blocking
  allow_missing_tables:
    description:
      - A table green does not have at all is listed in RV(pending_tables) instead of being a blocking difference -
        before phase 2 creates green's tables. A table of another kind (a view) is still a difference.
      - Likewise sequences green lacks are listed in RV(pending_sequences), and large objects green lacks are counted
        in RV(pending_large_objects), instead of being blocking.
    type: bool
    default: false
  allow_unlogged_tables:
    description:
      - Unlogged tables whose rows are not to be migrated (a cache the application refills), C(table) or
        C(schema.table). Each is reported as a C(harmless) C(unlogged_table) difference instead of a blocking one.
      - Any other unlogged table of blue is blocking - SET LOGGED on blue (and add it to the publication) to migrate it.
    type: list
    elements: str
    default: []
notes:
  - O(source) is blue (the publisher); O(target) is green (the subscriber). After the cutover, pass green as the
    source and blue as the target to check the reverse replication.
  - A type counts as compatible when green's is the same or wider (C(integer) to C(bigint), C(varchar(20)) to
    C(text), C(numeric(10,2)) to C(numeric(12,2)), C(json) to C(jsonb), ...); any other change is blocking.
  - Large objects are matched by OID only; their contents are not compared. Copy them again when they changed on
    blue after the copy (during the write freeze if they still change).
  - Indexes other than the primary key and the replica identity index are not compared (they never stop rows
    from applying, except a unique index only green has, which rows that violate it stop).
"""

EXAMPLES = r"""
- name: Check green's definitions of the published tables against blue's
  zerodowntime.migration.pg_schema_drift:
    source: "{{ migration_blue | combine({'login_password': migration_password}) }}"
    target: "{{ migration_green | combine({'login_password': migration_password}) }}"
    publication: novacron_migration
  register: drift

- name: Report every difference, fail on none
  zerodowntime.migration.pg_schema_drift:
    source: "{{ migration_blue | combine({'login_password': migration_password}) }}"
    target: "{{ migration_green | combine({'login_password': migration_password}) }}"
    tables: [audit_log, billing.invoices]
    fail_on: none
"""

RETURN = r"""
identical:
  description: Whether no difference was found.
  returned: always
  type: bool
blocking:
  description: How many blocking differences were found.
  returned: always
  type: int
harmless:
  description: How many harmless differences were found.
  returned: always
  type: int
tables:
  description: The tables compared, as C(schema.table).
  returned: always
  type: list
  elements: str
pending_tables:
  description: Tables green does not have yet, with O(allow_missing_tables).
  returned: always
  type: list
  elements: str
pending_sequences:
  description: Sequences of blue green does not have yet, with O(allow_missing_tables).
  returned: always
  type: list
  elements: str
pending_large_objects:
  description: How many of blue's large objects green does not have yet, with O(allow_missing_tables).
  returned: always
  type: int
differences:
  description: One entry per difference.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description:
        - C(missing_table), C(missing_column), C(extra_column), C(type), C(not_null), C(generated_column),
          C(primary_key), C(replica_identity), C(sequence) or C(partitioning) - the tables' definitions.
        - C(no_replica_identity) (blue sends no key for a replicated table), C(unlogged_table), C(large_objects) or
          C(missing_sequence) (a sequence that is no column's of a compared table) - what replication does not carry.
      type: str
    object:
      description: The table (C(schema.table)), column (C(schema.table.column)), sequence (C(schema.sequence)), or
        C(large objects).
      type: str
    table:
      description: The table, C(schema.table); null for a sequence and for large objects.
      type: str
    column:
      description: The column, or null for a table-level difference.
      type: str
    severity:
      description: C(blocking) or C(harmless).
      type: str
    blue:
      description: Blue's value (null when blue has nothing there).
      type: str
    green:
      description: Green's value (null when green has nothing there).
      type: str
    why:
      description: What the difference does to replication.
      type: str
    fix:
      description: The statement that fixes it (null when a DBA must choose; RV(differences[].why) then says what to do).
      type: str
    fix_on:
      description: Where to run RV(differences[].fix) - C(green), C(blue), or C(blue and green); null without a fix.
      type: str
  sample:
    - kind: missing_column
      object: public.audit_log.note
      table: public.audit_log
      column: note
      severity: blocking
      blue: text
      green: null
      why: blue sends this column and green has no column to put it in
      fix: ALTER TABLE "public"."audit_log" ADD COLUMN "note" text
      fix_on: green
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.drift import FAIL_ON, check_drift
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import PSYCOPG, pair_argument_spec, pair_openers


def main():
    module = AnsibleModule(
        argument_spec=pair_argument_spec(
            publication=dict(type="str"),
            tables=dict(type="list", elements="str"),
            fail_on=dict(type="str", choices=list(FAIL_ON), default="blocking"),
            allow_missing_tables=dict(type="bool", default=False),
            allow_unlogged_tables=dict(type="list", elements="str", default=[]),
        ),
        mutually_exclusive=[("publication", "tables")],
        required_one_of=[("publication", "tables")],
        supports_check_mode=True,
    )
    run_module(
        module,
        lambda opened: check_drift(opened["source"], opened["target"], module.params),
        pair_openers(module.params),
        libraries=[PSYCOPG],
    )


if __name__ == "__main__":
    main()
