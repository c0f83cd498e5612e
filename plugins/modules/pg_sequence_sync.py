#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_sequence_sync
short_description: Copy every sequence value from a source PostgreSQL database to a target, plus a margin
description:
  - Logical replication does not carry sequences. After the write freeze, this module moves every
    sequence of the target (the database the module connects to) past the highest value the
    O(source) may have handed out - column-owned (serial, identity) and standalone sequences alike.
  - The source's value is C(pg_sequences.last_value) (it covers values cached by sessions). The
    target gets C(setval(seq, value + margin, true)) (value - margin for a descending sequence),
    B(only when the target is behind that) - a sequence never moves backwards, because collisions
    are the danger and gaps are harmless.
  - A source sequence never used (last_value NULL and still at its START) leaves the target
    alone - nothing was numbered from it. One set with C(setval(seq, n, false)) and not used since
    counts as n minus its increment.
  - Fails, changing nothing, when a source sequence is missing on the target (naming it), when a
    new value would be beyond the target's MAXVALUE/MINVALUE, or when a sequence cannot be read.
    Sequences are not transactional in PostgreSQL (ROLLBACK does not undo C(setval)), so every
    check happens before the first C(setval); all C(setval)s are sent as one statement.
  - Idempotent - once the target is at source value + margin, a run with no new writes on the source changes nothing.
version_added: 0.1.0
notes:
  - O(source) is blue; the top-level connection options are the target (green).
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  margin:
    description: How far past the source's last value the target is set (0 or more).
    type: int
    default: 1000
  schemas:
    description: Schemas whose sequences are copied. Default - every schema but pg_catalog, information_schema, pg_toast and temporary ones.
    type: list
    elements: str
  sequences:
    description:
      - Only these sequences. Each entry is C(schema.name) or a bare name (matching that name in every schema searched).
      - An entry that matches no sequence on the source is an error.
    type: list
    elements: str
extends_documentation_fragment:
  - zerodowntime.migration.postgres.source
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description: Reads both sides and reports the values it would set and the statement; sets nothing.
  diff_mode:
    support: full
    description: Shows each sequence's target value before and after.
"""

EXAMPLES = r"""
- name: Move green's sequences past blue's (after the write freeze)
  zerodowntime.migration.pg_sequence_sync:
    login_host: 127.0.0.12
    login_port: 5432
    source:
      login_host: 127.0.0.11
      login_port: 5432
      login_user: migrator
      login_password: "{{ migration_password }}"
      login_db: novacron
    margin: 10000

- name: Only two sequences of the billing schema
  zerodowntime.migration.pg_sequence_sync:
    login_host: 127.0.0.12
    login_port: 5432
    source: {login_host: 127.0.0.11, login_port: 5432, login_user: migrator, login_password: "{{ migration_password }}", login_db: novacron}
    schemas: [billing]
    sequences: [billing.invoices_id_seq, credit_note_numbers]
"""

RETURN = r"""
sequences:
  description:
    - One entry per source sequence, schema-qualified (C(schema.name), unquoted).
    - C(source_value) is the last value the source handed out (null - never used, target left alone).
    - C(old_target_value) is the target's last value before (null - never used).
    - C(new_target_value) is the target's value after (in check mode - what it would be).
  returned: always
  type: list
  elements: dict
  sample:
    - name: public.orders_id_seq
      source_value: 5120
      old_target_value: 4100
      new_target_value: 6120
      changed: true
    - name: public.unused_seq
      source_value: null
      old_target_value: null
      new_target_value: null
      changed: false
queries:
  description: The statement run on the target (or, in check mode, that would run).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import (
    connect_option,
    connection_option,
    pg_argument_spec,
    run,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sequences import DEFAULT_MARGIN, sync_sequences


def manage(client: Client, params: dict) -> dict:
    with connect_option(params["source"], "source") as source:
        result = sync_sequences(source, client, params["margin"], params["schemas"], params["sequences"])
    result["diff"] = {
        "before": {entry["name"]: entry["old_target_value"] for entry in result["sequences"]},
        "after": {entry["name"]: entry["new_target_value"] for entry in result["sequences"]},
    }
    result["queries"] = list(client.queries)
    return result


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            source=connection_option(required=True),
            margin=dict(type="int", default=DEFAULT_MARGIN),
            schemas=dict(type="list", elements="str"),
            sequences=dict(type="list", elements="str"),
        ),
        supports_check_mode=True,
    )
    run(module, lambda client: manage(client, module.params))


if __name__ == "__main__":
    main()
