#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_cutover
short_description: Move an application from its SQLite file to the target table_copy filled, in seconds, and back
description:
  - The cutover of the SQLite path, one bounded operation that completes or leaves the file as it was. With
    O(state=switched) - the file frozen (M(zerodowntime.migration.sqlite_readonly)'s triggers, which refuse writes
    with a message naming O(migration)), the last captured changes replayed (M(zerodowntime.migration.table_copy)'s
    replay, down to none), the rows of the keys changed last compared on both sides (the comparison engine of
    M(zerodowntime.migration.table_compare)), the target's own change capture installed (the rollback's record of
    the writes it takes), and the application switched - the next configuration file O(app_config_next), which the
    playbook templates, renamed onto O(app_config) (the old one kept as C(<app_config>.previous)). Then the freeze
    is made permanent, so a writer still holding the old configuration is refused.
  - The freeze ends by itself. Each of its triggers refuses writes only until the deadline, O(window_timeout) seconds
    after it began - so when the module's process dies (SIGKILL, a lost SSH connection, a lost host) the file takes
    writes again at the deadline with no process left to end it. SIGTERM and SIGHUP, any failure before the
    switch, and a deadline that would pass before the switch remove the freeze at once. A failure after the switch
    leaves the freeze to lapse. Either way the next run finds the leftovers (the file's C(zdm_cutover__state) view)
    and repairs them - a switch that happened is committed, a freeze that did not lead to one is removed (not before
    its deadline - it may belong to a run still going). A commit that finds writes made in the file after the freeze
    lapsed refuses and names them (the target lacks them).
  - The write window (RV(write_window_ms)) is the time from the freeze to the switch. The application's writes in
    it are refused with the freeze's message - one that retries (as the lab's sample application does) is held,
    not failed.
  - With O(state=rolled_back) (PostgreSQL targets) - the target's tables held (statement triggers that refuse
    writes with SQLSTATE 25006 until the deadline, so that hold ends by itself too), every write the target took
    since the cutover replayed into the file, the file's freeze removed, the old configuration renamed back, the
    hold removed. A replay that does not finish within the hold switches nothing back (what it brought back is
    recorded - run it again, it goes on from there). The file's marker stays until the configuration names the file
    again, so a rollback that ends part-way is finished by the next run. A MariaDB target has no reverse capture -
    the rollback refuses, since the target's writes would be lost.
  - Refused before anything changes, with the fix named - an incomplete copy (run M(zerodowntime.migration.table_copy)
    until it reports complete), more than O(max_backlog) changes not yet replayed, a missing next configuration or
    one equal to the current.
  - Written here, not taken from a collection - no collection knows an SQLite write freeze or an application's
    configuration switch.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.sqlite.target
  - zerodowntime.migration.sqlite.checkpoints
options:
  state:
    description:
      - V(switched) moves the application to the target; V(rolled_back) brings it and the target's writes back.
    type: str
    choices: [switched, rolled_back]
    default: switched
  migration:
    description:
      - The migration's name, which the refused writes' message names.
    type: str
    required: true
  app_config:
    description:
      - The application's configuration file, which names its database (the lab's sample application reads it again
        when it changes).
    type: path
    required: true
  app_config_next:
    description:
      - The configuration naming the target, templated by the playbook before the cutover. Default C(<app_config>.next).
    type: path
  window_timeout:
    description:
      - Seconds the freeze (or the rollback's hold on the target) lasts at most; it lapses by itself after them. At
        least 3 (one second is kept for the switch and the commit).
    type: float
    default: 30.0
  max_backlog:
    description:
      - Captured changes not yet replayed above which the cutover refuses to start (they would lengthen the window).
    type: int
    default: 10000
  validate:
    description:
      - V(tail) compares the rows of the keys changed last (in the final replay and the O(tail_changes) changes before it)
        on both sides before the switch; a difference undoes the cutover. V(none) skips it.
    type: str
    choices: [tail, none]
    default: tail
  tail_changes:
    description:
      - How many changes before the final replay the tail validation also covers.
    type: int
    default: 1000
  reverse_change_table:
    description:
      - The target's change table (in O(target_schema)) that records its writes for a rollback.
    type: str
    default: zdm_reverse_changes
  target_schema:
    description:
      - The PostgreSQL schema of the target tables (PostgreSQL only).
    type: str
    default: public
attributes:
  check_mode:
    support: full
    description: Checks everything and lists the steps it would take; the file, the target and the configuration stay as they are.
  diff_mode:
    support: full
    description: The application's configuration and the cutover's status before and after.
"""

EXAMPLES = r"""
- name: Template the application's next configuration (the target)
  ansible.builtin.template:
    src: sqlite_app_config.json.j2
    dest: /etc/vminer/database.json.next
    mode: "0600"

- name: Move vMiner from its SQLite file to PostgreSQL
  zerodowntime.migration.sqlite_cutover:
    path: /var/lib/vminer/vminer.db
    migration: vminer-to-postgresql
    app_config: /etc/vminer/database.json
    login_host: 127.0.0.12
    login_port: 5432
    login_user: postgres
    login_password: "{{ vault_postgres_password }}"
    login_db: vminer
    window_timeout: 20
  register: cutover

- name: Back to the SQLite file, with the writes PostgreSQL took
  zerodowntime.migration.sqlite_cutover:
    path: /var/lib/vminer/vminer.db
    migration: vminer-to-postgresql
    app_config: /etc/vminer/database.json
    state: rolled_back
    login_host: 127.0.0.12
    login_port: 5432
    login_user: postgres
    login_password: "{{ vault_postgres_password }}"
    login_db: vminer
"""

RETURN = r"""
write_window_ms:
  description:
    - Milliseconds from the freeze to the switch (the rollback - from the target's hold to the switch back); null when nothing moved.
  returned: success
  type: float
steps:
  description: Each step that ran and its milliseconds.
  returned: always
  type: list
  elements: dict
planned_steps:
  description: The steps a real run would take.
  returned: check mode
  type: list
  elements: str
replayed_changes:
  description: Changes the final replay applied.
  returned: when switched by this run
  type: int
validated_keys:
  description: Keys whose rows the tail validation compared.
  returned: when switched by this run
  type: int
reverse_capture:
  description:
    - The reverse capture installed on a PostgreSQL target - its C(pending_changes) (rows in the change table) and
      C(replayed_seq), the position a rollback replays from (rows past it are what it would bring back; the watch's
      O(zerodowntime.migration.pg_cutover_watch#module:reverse_backlog_after)).
  returned: when switched by this run to a PostgreSQL target
  type: dict
replayed_back:
  description: The target's changes the rollback brought into the file.
  returned: when rolled back by this run
  type: int
marker:
  description: The file's cutover record - status, deadline, replay position, target.
  returned: always
  type: dict
readonly_tables:
  description: The tables of the file that refuse writes now.
  returned: always
  type: list
  elements: str
queries:
  description: Statements that changed something, on the file and on the target.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import TARGET_REQUIRED_IF, run_sqlite_to_target
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import CONNECTION_OPTIONS
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.cutover import CUTOVER_OPTIONS, run_cutover


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(**CONNECTION_OPTIONS, **CUTOVER_OPTIONS), required_if=TARGET_REQUIRED_IF, supports_check_mode=True
    )
    run_sqlite_to_target(module, lambda sqlite, target: run_cutover(sqlite, target, module.params, module.check_mode))


if __name__ == "__main__":
    main()
