#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_matview_refresh
short_description: Refresh PostgreSQL materialized views that differ from their query, concurrently
description:
  - Refreshes each materialized view of O(views) whose rows differ from what its defining query
    returns now (compared as a multiset, C(EXCEPT ALL) both ways); a view that already matches is
    left alone, so a second run reports C(changed=false). O(force=true) refreshes without comparing.
  - With O(concurrently=true) (the default) the refresh is C(REFRESH MATERIALIZED VIEW CONCURRENTLY), so
    readers are not blocked; it needs a unique index PostgreSQL accepts for it (btree, plain columns,
    no WHERE clause); a view without one is refused, naming the fix, before any view is refreshed.
    A view never populated is refreshed plainly (it cannot be read yet, and CONCURRENTLY refuses it).
  - Views are named C(schema.name), or C(name) for C(public); names are quoted by the server's
    driver (C(psycopg.sql)). A name that is not a materialized view is an error before anything runs.
  - community.postgresql has no module for this (its C(postgresql_query) takes SQL text, which the
    collection keeps out of playbooks).
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  views:
    description:
      - The materialized views to refresh, in that order.
    type: list
    elements: str
    required: true
  concurrently:
    description:
      - Refresh with C(CONCURRENTLY), so the view stays readable while it is rebuilt.
    type: bool
    default: true
  force:
    description:
      - Refresh every view of O(views) without comparing it with its query first.
    type: bool
    default: false
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description: The comparison runs (it reads); the refreshes are reported in RV(queries), not run.
  diff_mode:
    support: full
    description: Each view's differing rows before and after.
"""

EXAMPLES = r"""
- name: Refresh the usage view on green without blocking its readers
  zerodowntime.migration.pg_matview_refresh:
    login_host: green.db.internal
    views: [tenant_vm_usage]
"""

RETURN = r"""
views:
  description: One entry per view, in the order of O(views).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The view, C(schema.name).
      type: str
    populated:
      description: Whether the view held data before.
      type: bool
    stale_rows:
      description: Rows that differed from its query before (null when not compared - never populated, or O(force)).
      type: int
    refreshed:
      description: Whether it was refreshed (in check mode - would be).
      type: bool
    concurrently:
      description: Whether the refresh was concurrent.
      type: bool
    ms:
      description: How long the refresh took (null when not run).
      type: float
  sample:
    - {"name": "public.tenant_vm_usage", "populated": true, "stale_rows": 3, "refreshed": true, "concurrently": true, "ms": 41.7}
queries:
  description: The refreshes run (in check mode - that would run).
  returned: always
  type: list
  elements: str
  sample: ['REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."tenant_vm_usage"']
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.matview import refresh_matviews
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            views=dict(type="list", elements="str", required=True),
            concurrently=dict(type="bool", default=True),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run(module, lambda client: refresh_matviews(client, module.params))


if __name__ == "__main__":
    main()
