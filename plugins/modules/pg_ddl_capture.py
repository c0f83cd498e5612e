#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_ddl_capture
short_description: Replicate DDL with the data - capture it on the publisher, apply it on the subscriber
description:
  - Logical replication carries rows, not DDL. This module installs (or removes) the two halves that carry DDL
    with the data, in the database it connects to (O(login_db)). All objects are in the schema C(zerodowntime).
  - V(publisher) (blue; green after the cutover) - the table C(zerodowntime.ddl_log) and two event triggers
    (C(ddl_command_end), C(sql_drop)) that insert one row per DDL command - its command tag, object, the statement
    text and the object's definition after the command, read from the catalogs - and the log table added to
    O(publication), so the subscriber receives each DDL command in commit order with the rows.
  - V(subscriber) (green; blue after the cutover) - the same log table with a C(BEFORE INSERT) trigger,
    C(ENABLE ALWAYS) so the apply worker fires it, which applies the command inside the apply transaction,
    before the rows that need it, mapped onto the subscriber's own table (a partitioned table takes it on its
    parent) - C(ADD COLUMN) (a stable default fills the existing rows as on the publisher), column default and
    C(NOT NULL) changes, C(CREATE TABLE), C(CREATE/ALTER SEQUENCE), C(DROP COLUMN), C(DROP CONSTRAINT),
    C(DROP TABLE), C(DROP INDEX), C(DROP SEQUENCE) (in commit order no later row needs a dropped object).
    C(CREATE INDEX) (built CONCURRENTLY) and a new table's publication and copy are left in
    C(zerodowntime.ddl_pending) for M(zerodowntime.migration.pg_ddl_apply).
  - Anything else (a type change, a rename, a constraint, a view, a function, a grant, a volatile default ...) is
    not guessed at - the trigger raises an error naming the command, the object, the C(ddl_log) id and what a
    DBA must do. The apply worker stops there (pg_subscription, pg_replication_lag name the error) and retries by
    itself once the DBA has made the change on the subscriber and run
    C(INSERT INTO zerodowntime.ddl_resolved (id) VALUES (<id>)) there.
  - DDL run by the apply worker itself is never captured, so both halves on both servers do not loop.
  - No secret is kept in the log. A command whose tag can carry credentials - C(CREATE/ALTER ROLE), C(USER),
    C(GROUP), C(USER MAPPING), C(SERVER), C(FOREIGN DATA WRAPPER), C(SUBSCRIPTION) - is logged with its tag
    and object only; its text is withheld. Every other statement text is stored, and shown in errors, with the
    value after a password-like word (C(PASSWORD 'x'), C(password=x) in a connection string) masked - also a
    password in another statement of the same query string.
  - A withheld command reaching the subscriber stops the apply worker like an unsupported one, naming its tag
    and object and saying that its text was withheld for secrecy - it cannot be applied from a text that is not
    there, and the credentials the subscriber needs are the DBA's to give. Skipping it would leave the
    subscriber without the server or user mapping the publisher has, unnoticed until after the cutover. The
    DBA runs it there by hand and records its C(ddl_log) id in C(zerodowntime.ddl_resolved).
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  side:
    description:
      - V(publisher) installs the capture, V(subscriber) the apply trigger.
    type: str
    choices: [publisher, subscriber]
    required: true
  state:
    description:
      - V(present) installs (or brings up to date) the side's objects; V(absent) drops them, the log included
        (the schema C(zerodowntime) stays).
    type: str
    choices: [present, absent]
    default: present
  publication:
    description:
      - With O(side=publisher), the publication that carries the DDL log (added with C(ADD TABLE ONLY); a
        C(FOR ALL TABLES) publication has it already). It must exist.
    type: str
  replication_user:
    description:
      - With O(side=publisher), the role the subscription connects as; it is granted C(SELECT) on the log so the
        subscription can copy it.
    type: str
  subscription:
    description:
      - With O(side=subscriber), an existing subscription to refresh (C(REFRESH PUBLICATION)) so that it receives
        the log; install the publisher side first. Leave it out when the subscription is created afterwards.
    type: str
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description: Reports the statements it would run, changing nothing.
  diff_mode:
    support: full
    description: Shows the installed pieces before and after.
notes:
  - Event triggers need a superuser (O(login_user)).
  - Reverse replication after the cutover (green -> blue) takes the same two halves the other way round - C(side=publisher)
    on green with the reverse publication, C(side=subscriber) on blue - and
    M(zerodowntime.migration.pg_switchover) installs them when the DDL log is among the tables it switches.
  - A frozen subscriber (C(default_transaction_read_only), blue after the cutover) cannot run DDL in its apply
    worker's read-only transactions - the worker stops on the first DDL, naming it, and WAL waits in the
    publisher's slot. The switchover back applies those commands from its own writable session, one at a
    time and only once the worker stopped on each, before its pause (RV(zerodowntime.migration.pg_switchover#module:ddl_released)).
  - The publisher's log ids continue past every id its log holds (the log of a former subscriber holds the other
    side's rows with their ids) - an install moves the log's identity sequence on when it is behind.
  - C(ALTER TABLE) subcommands that change neither columns nor constraints (storage parameters, tablespace,
    triggers, replica identity) reach the subscriber as C(nothing to change) in the log's C(outcome) column.
"""

EXAMPLES = r"""
- name: Capture DDL on blue into the migration's publication
  zerodowntime.migration.pg_ddl_capture:
    login_host: 127.0.0.11
    login_port: 5432
    side: publisher
    publication: novacron_migration
    replication_user: replicator

- name: Apply it on green, and refresh the running subscription
  zerodowntime.migration.pg_ddl_capture:
    login_host: 127.0.0.12
    login_port: 5432
    side: subscriber
    subscription: novacron_blue_to_green

- name: Remove the capture from blue
  zerodowntime.migration.pg_ddl_capture:
    login_host: 127.0.0.11
    login_port: 5432
    side: publisher
    state: absent
"""

RETURN = r"""
state:
  description: Whether the side's objects are installed after the run.
  returned: success
  type: str
  sample: present
ddl_capture:
  description: The installed pieces (empty when absent).
  returned: success
  type: dict
  sample: {"side": "publisher", "log_table": true, "functions": "current",
           "event_triggers": ["zerodowntime_ddl_capture", "zerodowntime_ddl_capture_drops"], "published_in": ["novacron_migration"]}
queries:
  description: Statements that changed something (in check mode, that would have).
  returned: always
  type: list
  elements: str
  sample: ['ALTER PUBLICATION "novacron_migration" ADD TABLE ONLY "zerodowntime"."ddl_log"']
diff:
  description: The installed pieces before and after.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.ddl import ensure_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            side=dict(type="str", required=True, choices=["publisher", "subscriber"]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            publication=dict(type="str"),
            replication_user=dict(type="str"),
            subscription=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    run(module, lambda client: ensure_capture(client, module.params))


if __name__ == "__main__":
    main()
