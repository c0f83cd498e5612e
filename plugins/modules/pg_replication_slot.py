#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_replication_slot
short_description: Create, check or drop a PostgreSQL replication slot and report its health
description:
  - Makes sure a logical or physical replication slot exists (or does not) on one PostgreSQL server,
    and reports how much WAL it holds back, whether it is active and where its consumer is.
  - A logical slot belongs to the database the module connects to (O(login_db)) and needs
    C(wal_level=logical) on the server; without it the module fails and names the fix.
  - A slot cannot be changed in place. A slot with the same name but another type, output plugin
    or database is an error that names what differs; drop it or choose another name.
  - Dropping a slot that a walsender is using fails and names the walsender's pid, unless
    O(force=true), which terminates that walsender, waits (at most 10 seconds) for the slot to be
    released, then drops it.
  - The health figures are returned on every run, also when nothing changes.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  name:
    description:
      - Name of the slot. PostgreSQL allows lower-case letters, digits and underscores, at most
        63 characters; any other name is refused before anything runs.
    type: str
    required: true
  state:
    description:
      - V(present) creates the slot when it is missing; V(absent) drops it when it exists.
    type: str
    choices: [present, absent]
    default: present
  slot_type:
    description:
      - V(logical) for a logical replication subscriber (the migration's case); V(physical) for
        a streaming standby.
    type: str
    choices: [logical, physical]
    default: logical
  plugin:
    description:
      - Output plugin of a logical slot. When not set, C(pgoutput) (what logical replication
        subscriptions use).
      - Only for O(slot_type=logical); setting it for a physical slot is an error.
    type: str
  immediately_reserve:
    description:
      - Physical slots only; reserve WAL from the moment the slot is created instead of from
        when a standby first connects. Setting it for a logical slot is an error.
      - Used only when the slot is created.
    type: bool
    default: false
  force:
    description:
      - With O(state=absent), terminate the walsender using the slot (C(pg_terminate_backend))
        and drop the slot once it is released. Without it, dropping an active slot is an error.
    type: bool
    default: false
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description: Reports what would change (and the statements) without creating, terminating or dropping anything.
  diff_mode:
    support: full
    description: Shows the slot's type, plugin and database before and after.
notes:
  - Only a superuser or a role with the C(REPLICATION) attribute can create or drop slots;
    O(force=true) also needs the right to terminate the walsender (superuser or C(pg_signal_backend)).
  - An inactive slot keeps WAL until the disk fills; watch RV(slot.retained_wal_bytes) and
    RV(slot.wal_status), and cap it with C(max_slot_wal_keep_size).
"""

EXAMPLES = r"""
- name: Create the logical slot green will subscribe through
  zerodowntime.migration.pg_replication_slot:
    login_host: 127.0.0.11
    login_port: 5432
    name: green_sub
  register: slot

- name: Show how much WAL the slot holds back
  ansible.builtin.debug:
    msg: "{{ slot.slot.retained_wal_bytes }} bytes retained, wal_status {{ slot.slot.wal_status }}"

- name: Drop the slot after cutover, even if a subscriber is still attached
  zerodowntime.migration.pg_replication_slot:
    login_host: 127.0.0.11
    login_port: 5432
    name: green_sub
    state: absent
    force: true

- name: A physical slot for a streaming standby, reserving WAL now
  zerodowntime.migration.pg_replication_slot:
    login_host: 127.0.0.11
    login_port: 5432
    name: standby_1
    slot_type: physical
    immediately_reserve: true
"""

RETURN = r"""
state:
  description:
    - V(present) or V(absent) - whether the slot O(name) exists after the run (in check mode, whether
      it would); RV(slot) is what the server reports about it.
  returned: success
  type: str
  sample: present
slot:
  description:
    - The slot as the server reports it; empty when it does not exist.
    - In check mode, a slot that would be created shows only its type, plugin and database.
  returned: success
  type: dict
  contains:
    slot_type:
      description: V(logical) or V(physical).
      type: str
      sample: logical
    plugin:
      description: Output plugin of a logical slot; null for a physical slot.
      type: str
      sample: pgoutput
    database:
      description: Database of a logical slot; null for a physical slot.
      type: str
      sample: novacron
    active:
      description: Whether a walsender is using the slot now.
      type: bool
      sample: false
    active_pid:
      description: Pid of the walsender using the slot; null when inactive.
      type: int
      sample: 4711
    restart_lsn:
      description: Oldest WAL position the slot still needs; null for a physical slot that has not reserved WAL.
      type: str
      sample: 0/3000148
    confirmed_flush_lsn:
      description: Position the logical consumer has confirmed; null for a physical slot.
      type: str
      sample: 0/3000180
    wal_status:
      description: C(reserved), C(extended), C(unreserved) or C(lost), as in C(pg_replication_slots).
      type: str
      sample: reserved
    retained_wal_bytes:
      description: Bytes of WAL between the server's current position and RV(slot.restart_lsn); null when there is no restart_lsn.
      type: int
      sample: 16816
queries:
  description: Statements that changed something (in check mode, that would have).
  returned: always
  type: list
  elements: str
  sample: ["SELECT pg_catalog.pg_create_logical_replication_slot('green_sub', 'pgoutput')"]
diff:
  description: The slot's type, plugin and database before and after.
  returned: success
  type: dict
  sample: {"before": {}, "after": {"slot_type": "logical", "plugin": "pgoutput", "database": "novacron"}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.slot import ensure_slot


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            slot_type=dict(type="str", choices=["logical", "physical"], default="logical"),
            plugin=dict(type="str"),
            immediately_reserve=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run(module, lambda client: ensure_slot(client, module.params))


if __name__ == "__main__":
    main()
