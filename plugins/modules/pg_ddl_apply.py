#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_ddl_apply
short_description: Do the replicated DDL that cannot run inside the apply worker
description:
  - The subscriber's DDL apply trigger (M(zerodowntime.migration.pg_ddl_capture)) leaves in
    C(zerodowntime.ddl_pending) what cannot run inside the apply transaction. This module, run on the
    subscriber, does it, oldest first, and marks each item done, so a second run does nothing and a run after a
    failure goes on where it stopped.
  - C(CREATE INDEX) - the index is built with C(CREATE INDEX CONCURRENTLY) on the subscriber's table (writes
    go on); a partitioned table gets it on its parent and each partition, as M(zerodowntime.migration.pg_index)
    builds it.
  - C(CREATE TABLE) - the table (created on the subscriber by the trigger) is added to the publication(s) of
    O(subscription) that carry the DDL log, on O(publisher), the subscription is refreshed, and the module waits
    (at most O(timeout)) until the table is copied.
  - On a frozen subscriber (C(default_transaction_read_only), blue after the cutover, receiving green's deploys
    through the reverse replication) with O(publisher) and O(subscription) - its apply worker cannot run DDL in
    its read-only transactions and stops on the first. The module applies each such command from its own
    writable session, in the publisher's log order and only once the worker stopped on it, and records it in
    C(zerodowntime.ddl_resolved) (RV(released)); the worker goes on by itself. M(zerodowntime.migration.pg_switchover)
    does the same before its pause when it switches back.
  - Error messages that quote a statement or a server's error text have password-like values masked
    (C(PASSWORD 'x'), C(password=x)); commands whose text can carry credentials never reach the log (see
    M(zerodowntime.migration.pg_ddl_capture)).
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  subscription:
    description:
      - The subscription that receives the DDL log; needed when a new table is to be published.
    type: str
  publisher:
    description:
      - How the module reaches the publisher, to add new tables to its publication (needed with new tables), and to
        read the DDL a frozen subscriber's apply worker stopped on.
    type: dict
  timeout:
    description:
      - Seconds each index build, and the wait for the copy of new tables, may take (0 = no bound for a build).
    type: int
    default: 600
  lock_timeout:
    description:
      - Seconds an index build may wait for a lock (0 = no bound).
    type: int
    default: 30
extends_documentation_fragment:
  - zerodowntime.migration.postgres
  - zerodowntime.migration.postgres.publisher
attributes:
  check_mode:
    support: full
    description: Reports what it would do, changing nothing.
  diff_mode:
    support: full
    description: Shows the pending work before and after.
"""

EXAMPLES = r"""
- name: Build green's replicated indexes and publish new tables
  zerodowntime.migration.pg_ddl_apply:
    login_host: 127.0.0.12
    login_port: 5432
    subscription: novacron_blue_to_green
    publisher:
      host: 127.0.0.11
      port: 5432
      dbname: novacron
      user: migrator
      password: "{{ migration_password }}"
"""

RETURN = r"""
applied:
  description: The pending items done by this run.
  returned: success
  type: list
  elements: dict
  sample: [{"id": 12, "kind": "index", "object": "public.vms_host_idx", "action": "build the index concurrently"}]
released:
  description:
    - The C(zerodowntime.ddl_log) ids of DDL a frozen subscriber's apply worker had stopped on, applied by this run
      (check mode - the ids it would wait for and apply).
  returned: success
  type: list
  elements: int
  sample: [41]
pending:
  description: The items still pending after the run.
  returned: success
  type: list
  elements: dict
queries:
  description: Statements that changed something (in check mode, that would have); the publisher's are prefixed.
  returned: always
  type: list
  elements: str
diff:
  description: The pending items before and after.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.ddl import apply_pending
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import PSYCOPG, pg_argument_spec
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.subscription import PUBLISHER_SPEC, open_publisher


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            subscription=dict(type="str"),
            publisher=dict(type="dict", options=PUBLISHER_SPEC),
            timeout=dict(type="int", default=600),
            lock_timeout=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    openers = {"client": lambda: Client(module.params, check_mode=module.check_mode)}
    if module.params["publisher"]:
        openers["publisher"] = lambda: open_publisher(module.params["publisher"])
    run_module(
        module,
        lambda opened: apply_pending(opened["client"], opened.get("publisher"), module.params),
        openers,
        libraries=[PSYCOPG],
    )


if __name__ == "__main__":
    main()
