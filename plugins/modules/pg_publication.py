#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_publication
short_description: Create, change or drop a PostgreSQL logical replication publication
description:
  - Makes sure a publication exists (or does not) in the database the module connects to
    (O(login_db)), with the tables, schemas, actions, partition setting and owner asked for.
  - Every option is read back from the catalogs and only what differs is altered (C(ADD TABLE),
    C(DROP TABLE), C(ADD/DROP TABLES IN SCHEMA), C(SET publish = ...),
    C(SET publish_via_partition_root = ...), C(OWNER TO)); a second run changes nothing.
  - All changes of one run happen in one transaction, so a failure leaves nothing half-done.
  - Switching between C(FOR ALL TABLES) and a table/schema list cannot be done with
    C(ALTER PUBLICATION); it is an error unless O(recreate=true), which drops and re-creates the
    publication in one transaction (subscribers must then C(REFRESH PUBLICATION)).
  - Creating a publication needs C(wal_level=logical) on the server; without it the module fails
    and names the fix.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  name:
    description:
      - Name of the publication, taken literally (no case folding), at most 63 bytes.
    type: str
    required: true
  state:
    description:
      - V(present) creates or alters the publication; V(absent) drops it when it exists.
    type: str
    choices: [present, absent]
    default: present
  all_tables:
    description:
      - V(true) publishes every table of the database, now and future (C(FOR ALL TABLES)); it
        cannot be combined with O(tables) or O(schemas).
      - When not set, it is V(false) if O(tables) or O(schemas) is given, and left as it is otherwise.
    type: bool
  tables:
    description:
      - The tables to publish, exactly; listed tables missing from the publication are added,
        tables in the publication but not listed are dropped from it. When not set, the
        publication's tables are left as they are; V([]) removes them all.
      - Each entry is C(table) (in schema C(public)) or C(schema.table). Names are taken
        literally; write a part that contains a dot in double quotes (C("my.schema".orders)).
      - A table is added with C(ONLY), so an inheritance child is published only when it is listed.
      - A listed table that does not exist is an error, and nothing is changed.
    type: list
    elements: str
  schemas:
    description:
      - Schemas whose tables are all published (C(FOR TABLES IN SCHEMA), PostgreSQL 15 or later),
        exactly as listed. When not set, left as they are; V([]) removes them all.
    type: list
    elements: str
  publish:
    description:
      - The actions the publication replicates.
    type: list
    elements: str
    choices: [insert, update, delete, truncate]
    default: [insert, update, delete, truncate]
  publish_via_partition_root:
    description:
      - Publish changes to partitions as changes to their partitioned table (the root), so the
        subscriber may partition differently or not at all.
    type: bool
    default: false
  owner:
    description:
      - Role that owns the publication. When not set, a new publication belongs to O(login_user)
        and an existing one keeps its owner.
      - PostgreSQL requires the owner of a C(FOR ALL TABLES) or C(TABLES IN SCHEMA) publication to be a superuser.
    type: str
  recreate:
    description:
      - Allow a change that ALTER cannot make (between C(FOR ALL TABLES) and a table/schema
        list) by dropping and re-creating the publication in one transaction. Subscribers must
        then run C(ALTER SUBSCRIPTION ... REFRESH PUBLICATION).
      - Has no effect on changes ALTER can make.
    type: bool
    default: false
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description: Checks the tables, schemas and owner and reports the statements it would run, changing nothing.
  diff_mode:
    support: full
    description: Shows the publication's attributes before and after.
notes:
  - Row filters and column lists on a published table are not managed; a table that has them
    counts as published.
"""

EXAMPLES = r"""
- name: Publish the application's tables from blue
  zerodowntime.migration.pg_publication:
    login_host: 127.0.0.11
    login_port: 5432
    name: novacron_pub
    tables:
      - customers
      - public.orders
      - billing.invoices

- name: Publish everything, replacing a table list if there was one
  zerodowntime.migration.pg_publication:
    login_host: 127.0.0.11
    login_port: 5432
    name: novacron_pub
    all_tables: true
    publish_via_partition_root: true
    recreate: true

- name: Publish every table of two schemas, inserts and updates only
  zerodowntime.migration.pg_publication:
    login_host: 127.0.0.11
    login_port: 5432
    name: reporting_pub
    schemas: [sales, billing]
    publish: [insert, update]

- name: Drop the publication after cutover
  zerodowntime.migration.pg_publication:
    login_host: 127.0.0.11
    login_port: 5432
    name: novacron_pub
    state: absent
"""

RETURN = r"""
state:
  description:
    - V(present) when the publication O(name) exists after the run, V(absent) when it does not; in check
      mode, what the run would leave. RV(publication) describes it.
  returned: success
  type: str
  sample: present
publication:
  description:
    - The publication as the catalogs describe it; empty when it does not exist.
    - In check mode, a publication that would be created shows the attributes asked for.
  returned: success
  type: dict
  contains:
    all_tables:
      description: Whether it is C(FOR ALL TABLES).
      type: bool
      sample: false
    tables:
      description: Published tables as C(schema.table), sorted.
      type: list
      elements: str
      sample: [public.customers, public.orders]
    schemas:
      description: Schemas published with C(TABLES IN SCHEMA), sorted.
      type: list
      elements: str
      sample: [sales]
    publish:
      description: Actions published, in PostgreSQL's order.
      type: list
      elements: str
      sample: [insert, update, delete, truncate]
    publish_via_partition_root:
      description: Whether partitions publish as their root table.
      type: bool
      sample: false
    owner:
      description: Role that owns the publication.
      type: str
      sample: migrator
queries:
  description: Statements that changed something (in check mode, that would have).
  returned: always
  type: list
  elements: str
  sample: ['ALTER PUBLICATION "novacron_pub" ADD TABLE ONLY "public"."orders"']
diff:
  description: The publication's attributes before and after.
  returned: success
  type: dict
  sample: {"before": {"tables": ["public.customers"]}, "after": {"tables": ["public.customers", "public.orders"]}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.publication import PUBLISH_ACTIONS, ensure_publication


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            all_tables=dict(type="bool"),
            tables=dict(type="list", elements="str"),
            schemas=dict(type="list", elements="str"),
            publish=dict(type="list", elements="str", choices=list(PUBLISH_ACTIONS), default=list(PUBLISH_ACTIONS)),
            publish_via_partition_root=dict(type="bool", default=False),
            owner=dict(type="str"),
            recreate=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run(module, lambda client: ensure_publication(client, module.params))


if __name__ == "__main__":
    main()
