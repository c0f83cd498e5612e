#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_state
short_description: Record and read where a phased migration stands, and keep its phases in order
description:
  - Keeps one row per migration phase (status, start and end, attempts, details) in a progress table
    (by default C(public.migration_progress)) of the database the connection options point at,
    and creates the table when a state records something and the table is missing.
  - O(state=started) refuses to start a phase while the phase before it in O(phases) has not succeeded,
    naming that phase, its status and the fix; O(force=true) starts it anyway.
  - 'Phases resume: starting a phase that is still running (an interrupted run) changes nothing
    (beyond merging O(details));
    starting a failed phase runs it again (attempts + 1) and keeps the checkpoints it recorded, so the
    playbook can skip the steps that finished (RV(checkpoints)); starting a phase that succeeded changes
    nothing and returns RV(already_succeeded=true), unless O(force=true), which starts it over
    without checkpoints.'
  - O(state=checkpoint) records that a step of a running phase finished (in C(details.checkpoints)).
  - 'O(state=succeeded) and O(state=failed) close the phase and merge O(details) into its details,
    for example a verdict or C({"error": "..."}).'
  - O(state=query) only reads; every state returns the phase and all phases in order.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  phase:
    description:
      - Name of the phase, one of O(phases). Required unless O(state=query).
    type: str
  state:
    description:
      - V(started) starts (or resumes) the phase; V(checkpoint) records the finished O(step);
        V(succeeded) and V(failed) close the phase; V(query) reads and changes nothing.
    type: str
    choices: [started, succeeded, failed, checkpoint, query]
    default: query
  phases:
    description:
      - The migration's phases in the order they run. The order decides which phase must succeed
        before another may start; RV(phases) lists them in this order.
    type: list
    elements: str
    default: [phase1_infra, phase2_schema, phase3_optimize, phase4_validate, phase5_cutover, phase6_verify]
  force:
    description:
      - With O(state=started), start the phase even though the phase before it has not succeeded,
        and start a phase that already succeeded over again (attempts + 1, checkpoints cleared).
    type: bool
    default: false
  details:
    description:
      - 'Merged (key by key) into the phase''s C(details) JSON, for example C({"verdict": "0 differences"})
        with V(succeeded) or C({"error": "..."}) with V(failed).'
      - The key C(checkpoints) is the module's own; record steps with O(state=checkpoint).
      - When a failed phase is started again, its C(error) is kept as C(previous_error).
    type: dict
  step:
    description:
      - With O(state=checkpoint) (and only with it), the name of the step that finished.
    type: str
  schema:
    description:
      - Schema of the progress table; created when missing.
    type: str
    default: public
extends_documentation_fragment:
  - zerodowntime.migration.postgres
  - zerodowntime.migration.progress.table
attributes:
  check_mode:
    support: full
    description: Reports what would change (and the statements, RV(queries)) without creating the table or writing the row.
  diff_mode:
    support: full
    description: Shows the phase's row before and after.
notes:
  - 'The progress table has the columns C(phase) (text, primary key), C(status) (C(running), C(succeeded)
    or C(failed)), C(started_at) and C(completed_at) (timestamptz), C(attempts) (integer) and
    C(details) (jsonb). An existing table without these columns is an error.'
  - Times come from the server's clock. C(started_at) is the start of the latest attempt.
  - The module writes to its table even while the instance is frozen read-only (it sets
    C(default_transaction_read_only=off) for its own session), so phases after the cutover can record
    their status on the old primary.
  - Runs against the same table are serialised (a transaction-level advisory lock).
"""

EXAMPLES = r"""
- name: Start phase 2 (refused until phase 1 succeeded)
  zerodowntime.migration.migration_state:
    login_host: 127.0.0.11
    login_port: 5432
    login_db: zerodowntime_state
    phase: phase2_schema
    state: started
  register: progress

- name: Apply the schema unless an earlier attempt already did
  zerodowntime.migration.pg_schema_apply:
    login_host: 127.0.0.12
    login_port: 5432
    path: "{{ playbook_dir }}/files/schema/green"
  when: "'schema_applied' not in progress.checkpoints"

- name: Record the finished step
  zerodowntime.migration.migration_state:
    login_host: 127.0.0.11
    login_port: 5432
    login_db: zerodowntime_state
    phase: phase2_schema
    state: checkpoint
    step: schema_applied

- name: Close the phase with its verdict
  zerodowntime.migration.migration_state:
    login_host: 127.0.0.11
    login_port: 5432
    login_db: zerodowntime_state
    phase: phase2_schema
    state: succeeded
    details:
      verdict: all tables ready, lag 0 bytes

- name: Record a failure (in a rescue section)
  zerodowntime.migration.migration_state:
    login_host: 127.0.0.11
    login_port: 5432
    login_db: zerodowntime_state
    phase: phase2_schema
    state: failed
    details:
      error: "{{ ansible_failed_result.msg | default('unknown error') }}"

- name: Where does the migration stand?
  zerodowntime.migration.migration_state:
    login_host: 127.0.0.11
    login_port: 5432
    login_db: zerodowntime_state
    state: query
  register: status
"""

RETURN = r"""
phase:
  description:
    - The phase's row after the run (in check mode, as it would be); empty with O(state=query) and no O(phase).
    - A phase without a row has status C(pending).
  returned: success
  type: dict
  contains:
    phase:
      description: Name of the phase.
      type: str
      sample: phase2_schema
    status:
      description: C(running), C(succeeded), C(failed), or C(pending) when the phase has no row.
      type: str
      sample: succeeded
    started_at:
      description: When the latest attempt started (ISO 8601); null when pending.
      type: str
      sample: "2025-11-21T10:02:03.456789+00:00"
    completed_at:
      description: When the phase succeeded or failed (ISO 8601); null while running or pending.
      type: str
      sample: "2025-11-21T10:04:13.012345+00:00"
    attempts:
      description: How many times the phase was started (0 when pending).
      type: int
      sample: 1
    details:
      description: The phase's details JSON, with C(checkpoints) and what O(details) merged in.
      type: dict
      sample: {"checkpoints": ["schema_applied"], "verdict": "all tables ready"}
    duration_seconds:
      description: Seconds from C(started_at) to C(completed_at); null while running or pending.
      type: float
      sample: 129.556
checkpoints:
  description: The steps of the phase recorded as finished (C(details.checkpoints)), in order.
  returned: success
  type: list
  elements: str
  sample: [schema_applied, subscription_created]
phases:
  description:
    - Every phase of O(phases) in order, shaped like RV(phase), C(pending) for phases without a row,
      followed by rows of phases not in O(phases).
  returned: success
  type: list
  elements: dict
  sample: [{"phase": "phase1_infra", "status": "succeeded", "attempts": 1, "started_at": "2025-11-21T10:00:00+00:00",
            "completed_at": "2025-11-21T10:01:30+00:00", "duration_seconds": 90.0, "details": {}},
           {"phase": "phase2_schema", "status": "pending", "attempts": 0, "started_at": null,
            "completed_at": null, "duration_seconds": null, "details": {}}]
resumed:
  description: With O(state=started), whether the phase was running or had failed and carries on with its checkpoints.
  returned: success
  type: bool
  sample: true
already_succeeded:
  description: With O(state=started), whether the phase had already succeeded and was left alone (no O(force)).
  returned: success
  type: bool
  sample: false
predecessor:
  description: When O(state=started) is refused because of the order, the phase that has to succeed first.
  returned: failure
  type: str
  sample: phase1_infra
predecessor_status:
  description: When O(state=started) is refused because of the order, the status of RV(predecessor).
  returned: failure
  type: str
  sample: running
queries:
  description: Statements that changed something (in check mode, that would have).
  returned: always
  type: list
  elements: str
  sample: ["UPDATE \"public\".\"migration_progress\" SET \"status\" = 'succeeded', ... WHERE phase = 'phase2_schema'"]
diff:
  description: The phase's row before and after (not with O(state=query)).
  returned: success
  type: dict
  sample: {"before": {"status": "running"}, "after": {"status": "succeeded"}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.migration_state import (
    DEFAULT_PHASES,
    DEFAULT_TABLE,
    STATES,
    run_state,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            phase=dict(type="str"),
            state=dict(type="str", choices=STATES, default="query"),
            phases=dict(type="list", elements="str", default=DEFAULT_PHASES),
            force=dict(type="bool", default=False),
            details=dict(type="dict"),
            step=dict(type="str"),
            schema=dict(type="str", default="public"),
            table=dict(type="str", default=DEFAULT_TABLE),
        ),
        required_if=[
            ("state", "started", ["phase"]),
            ("state", "succeeded", ["phase"]),
            ("state", "failed", ["phase"]),
            ("state", "checkpoint", ["phase", "step"]),
        ],
        supports_check_mode=True,
    )
    run(module, lambda client: run_state(client, module.params))


if __name__ == "__main__":
    main()
