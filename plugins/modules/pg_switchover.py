#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_switchover
short_description: Move writes from one PostgreSQL database to its logical replica behind a bounded PgBouncer pause
description:
  - The cutover's critical section in one module run, so the write pause never spans Ansible tasks.
    Clients connected through PgBouncer wait (they get no error) and continue on O(target).
  - B(Before the pause), bounded by O(prepare_timeout) - checks that the forward subscription
    O(subscription) on the target is enabled with every table ready, that its slot exists on the
    source, that every table it receives (and every partition) has a replica identity on the target,
    and that no slot named O(reverse_subscription) exists there; creates the reverse publication
    O(reverse_publication) on the target (the same tables, C(publish_via_partition_root)); makes
    the forward subscription commit synchronously (so the source's slot confirms applied positions
    within milliseconds); waits until its lag is at most O(max_lag_bytes).
  - B(The pause), bounded by O(timeout) (every statement also by C(statement_timeout)) -
    C(PAUSE) the pool, freeze the source (C(default_transaction_read_only) for the instance), wait
    for sessions still in a read-write transaction (or terminate them with O(terminate_writers)),
    wait until the forward slot confirms the source's WAL position, copy every sequence (plus
    O(sequence_margin)), disable the forward subscription, create the reverse slot on the target and
    the reverse subscription on the source (C(copy_data false)) so every write made on the target
    reaches the source, unfreeze the target if an earlier switchover froze it, repoint the pool to
    the target (with O(haproxy), make the target HAProxy's write server instead) and C(RESUME).
  - B(On any error or when the deadline passes), every step done is undone, newest first - the
    reverse objects dropped, the forward subscription enabled, the source unfrozen, the pool pointed
    back at the source and resumed - and the module fails naming the step (RV(ignore:failed_step)) and
    what was undone.
  - B(After the pause) the disabled forward subscription is dropped with its slot on the source (an
    inactive slot retains WAL) unless O(drop_forward_subscription=false), and the reverse
    subscription is watched until it streams. Problems there are warnings - writes already go to the
    target.
  - The source stays read-only after a switchover. Switching back (playbooks/rollback.yml) is the
    same module with O(source) and O(target) swapped and the reverse subscription as O(subscription).
  - Idempotent - when the pool already points at the target and the reverse subscription exists, nothing is done.
  - Check mode runs every check and reports the steps and the change without pausing anything.
  - B(The guardian) - before the first C(PAUSE) the module starts a process of its own session and
    process group on the PgBouncer host, which SIGTERM (an AWX cancel), SIGHUP (a dropped SSH
    connection) or SIGKILL of the module or of ansible-playbook's process group do not reach. It
    receives the connection options through a pipe (never a command line or a file). When the module's
    process ends before the run committed or was undone, it undoes the run from the journal at once -
    pools resumed on the source, source unfrozen, forward subscription enabled, reverse subscription
    and slot dropped; after the deadline plus O(guardian_margin) it does the same for a hung module. A
    run that had begun resuming pools on the target is finished instead (clients may write there).
    It logs to O(journal_dir) and always exits.
  - B(A dropped SSH connection) - without pipelining Ansible gives the module a terminal, whose hangup
    (SIGHUP) kills it and the guardian undoes the run. With pipelining (this collection's C(ansible.cfg))
    the module has no terminal and no signal reaches it; it does not depend on the connection and ends its
    bounded run by itself (commits, or undoes on a failure or the deadline) while the controller reports the
    host failed. The journal (or O(state=repaired)) tells which.
  - B(Leftovers) - the module, and so C(playbooks/rollback.yml), first reads the journal. A run that
    neither committed nor was undone (its guardian died too, e.g. the host rebooted) is undone or
    finished before anything else happens (RV(repaired)). A paused pool or a frozen source that no
    journal accounts for stops the module with the statements to run.
  - The run lock keeps two switchovers of one pool apart; the guardian holds it until it exits.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.pgbouncer.poolers
  - zerodowntime.migration.postgres.pair
  - zerodowntime.migration.postgres.reverse_publisher
options:
  subscription:
    description: The forward subscription on the target (source to target).
    type: str
    required: true
  reverse_publication:
    description:
      - Publication on the target that sends the writes made there back to the source; created when
        missing with the tables the forward subscription receives.
      - When those include the DDL log of M(zerodowntime.migration.pg_ddl_capture) (C(zerodowntime.ddl_log)), DDL
        goes back too, so a rollback survives a deploy made after the switch - the apply trigger is installed on
        the source before the pause (inert until the reverse subscription brings DDL), the capture on the target
        into this publication after it. A failure there is a warning naming what to run; the switch stands.
      - The source stays frozen after the switch, and a frozen server's apply worker cannot run DDL (its
        transactions are read-only) - it stops on the first deploy's DDL. The switchover back (this module, the
        other way round) applies such commands on its target from its own writable session before the pause,
        one at a time, each once the worker has stopped on it (RV(ddl_released)).
    type: str
    required: true
  reverse_subscription:
    description:
      - Subscription created on the source (target to source); the logical slot on the target gets the
        same name. Neither may exist before.
    type: str
    required: true
  reverse_publisher:
    description:
      - How the source reaches the target to replicate (the reverse subscription's connection). The
        password is stored by PostgreSQL and never returned, logged or shown.
    type: dict
    required: true
  timeout:
    description:
      - Hard bound of the write pause in seconds (more than 0, at most 60). When it passes, the
        switchover is undone and the pool resumes on the source.
    type: float
    default: 5
  prepare_timeout:
    description: Seconds to wait before the pause for the forward lag to drop to O(max_lag_bytes).
    type: float
    default: 120
  max_lag_bytes:
    description: The forward lag (bytes of the source's WAL not yet confirmed) below which the pause starts.
    type: int
    default: 1048576
  sequence_margin:
    description: How far past the source's last value each target sequence is set.
    type: int
    default: 1000
  terminate_writers:
    description:
      - Terminate sessions on the source that are still in a read-write transaction once the freeze is
        on (they bypass PgBouncer). Without it such a session aborts the switchover.
    type: bool
    default: false
  drop_forward_subscription:
    description: After the pause, drop the disabled forward subscription and its slot on the source.
    type: bool
    default: true
  state:
    description:
      - C(switched) - repair what an earlier run left (see notes), then switch.
      - C(repaired) - only repair what an earlier run left, reading the journal; switch nothing
        (C(playbooks/rollback.yml) begins with it).
    type: str
    choices: [switched, repaired]
    default: switched
  journal_dir:
    description:
      - Directory on the PgBouncer host of the switchover's journal (C(<pool>.json)), run lock
        (C(<pool>.lock)) and guardian log (C(<pool>.guardian.log)); created with mode 0700.
      - The journal records each step before it runs, the facts its undo needs and who ended the run;
        it holds no password. The next run reads it first and repairs what a dead run left.
    type: path
    default: /var/lib/zerodowntime/switchover
  haproxy:
    description:
      - Every HAProxy whose write backend (balance first, one server taking connections) sends the pools - and
        HAProxy's own clients - to the source. With it the pools are not repointed - they point at HAProxy's write
        frontend and stay there, so the PgBouncers may run on hosts of their own (no C(config_file) is read).
      - Inside the pause, in place of repointing the pools (step C(switch_haproxy)) - the target's server C(state ready)
        and C(health up), the source's C(state maint) and its sessions shut down, then C(show servers state) must show
        the target alone taking new connections. C(PAUSE) has closed the pools' server connections, so C(RESUME) opens
        new ones, through HAProxy, to the target.
      - The undo (also the guardian's, and a repair from the journal) makes the source the write server again and puts
        the target back in maintenance if it was there before.
      - Each backend's servers are recognised by address and port (those of O(source) and O(target)); a pool that
        points at the source or the target itself is refused. Writes count as switched when every HAProxy sends them
        to the target.
      - This only changes HAProxy at runtime - haproxy.cfg still names the old primary until it is written
        (C(roles/haproxy) C(tasks_from=set_primary), phase 5). A reload in between sends writes back to the old,
        frozen side - errors for clients, no lost write.
    type: list
    elements: dict
    default: []
    suboptions:
      socket:
        description:
          - HAProxy's runtime API at level admin, reachable from the host that runs the module - C(host:port) of a
            C(stats socket ipv4@...) (C(haproxy_runtime_api_address)), or a unix socket path on that host.
        type: str
        required: true
      backend:
        description: The backend of PostgreSQL writes (C(haproxy_pg_write_backend)).
        type: str
        default: pg_write
      timeout:
        description: Seconds each runtime API command may take.
        type: float
        default: 2.0
  guardian_margin:
    description:
      - Seconds past the pause's deadline (O(timeout)) after which the guardian undoes a run that neither
        committed nor began its own undo (a hung module). A module that dies is undone at once.
    type: float
    default: 1
notes:
  - O(source) takes the writes now (blue, or green when rolling back) and O(target) afterwards, subscribed
    to the source by O(subscription). Both connect as a superuser - the freeze uses C(ALTER SYSTEM) and the
    reverse subscription is created on the source.
  - The write pause clients feel is RV(write_pause_ms) plus the wait of C(PAUSE) for transactions
    running on the pool when it starts (RV(steps)).
  - Sessions connected to the source directly are made read-only by the freeze; only PgBouncer's clients wait.
  - For failure tests only, the environment variable C(ZERODOWNTIME_SWITCHOVER_HOLD=step:seconds) holds
    the pause that long after the named step (a signal can then land inside the pause); it is read from
    the module's environment and unset in normal use. With C(ZERODOWNTIME_SWITCHOVER_HOLD_MARK=path) too,
    that file is created as the hold begins (a test signals as soon as it exists).
requirements:
  - psycopg >= 3.1 (Python library, on the host that runs the module)
"""

EXAMPLES = r"""
- name: Switch writes from blue to green
  zerodowntime.migration.pg_switchover:
    source: "{{ migration_blue | combine({'login_password': migration_password}) }}"
    target: "{{ migration_green | combine({'login_password': migration_password}) }}"
    subscription: novacron_blue_to_green
    reverse_publication: novacron_green_to_blue
    reverse_subscription: novacron_green_to_blue
    reverse_publisher:
      host: 127.0.0.12
      port: 5432
      dbname: novacron
      user: replicator
      password: "{{ migration_replication_password }}"
    pgbouncers:
      - login_host: 127.0.0.1
        login_port: 6432
        login_user: pgbouncer_admin
        login_password: "{{ pgbouncer_admin_password }}"
        database: novacron
      - login_host: 127.0.0.1
        login_port: 6433
        login_user: pgbouncer_admin
        login_password: "{{ pgbouncer_admin_password }}"
        database: novacron
        config_file: /etc/pgbouncer/pgbouncer2/pgbouncer.ini
    timeout: 2
  register: switchover

- name: The same behind HAProxy - the pools (on hosts of their own) point at its write frontend and stay there
  zerodowntime.migration.pg_switchover:
    source: "{{ blue_login }}"
    target: "{{ green_login }}"
    subscription: novacron_blue_to_green
    reverse_publication: novacron_green_to_blue
    reverse_subscription: novacron_green_to_blue
    reverse_publisher: "{{ green_replication_login }}"
    pgbouncers: "{{ pool_hosts_consoles }}"  # pool-1 and pool-2, each pool at lb-1:5000
    haproxy:
      - socket: 127.0.0.31:9999  # lb-1's haproxy_runtime_api_address
        backend: pg_write
    timeout: 2

- name: Show the write pause
  ansible.builtin.debug:
    msg: "write pause {{ switchover.write_pause_ms }} ms"
"""

RETURN = r"""
ddl_released:
  description:
    - The C(zerodowntime.ddl_log) ids of DDL that the frozen target's apply worker had stopped on, applied by this
      run before its pause.
  returned: when switched
  type: list
  elements: int
  sample: [41, 42]
switched:
  description: Whether writes go to the target. Always false in check mode, unless they already did.
  returned: success
  type: bool
would_switch:
  description: In check mode, true when a run would switch (every check before the pause passed).
  returned: in check mode, when not switched yet
  type: bool
write_pause_ms:
  description: Milliseconds from C(PAUSE) to C(RESUME) (also on failure, until the undo began). Null when nothing was paused.
  returned: always
  type: float
  sample: 84.2
write_pause_started_at:
  description:
    - When the pause began, in UTC epoch seconds (also on failure); null when nothing was paused. With
      RV(write_pause_ms) it places the pause on a clock - C(zerodowntime.migration.migration_report) marks it on its charts.
  returned: always
  type: float
  sample: 1764860310.25
steps:
  description:
    - Each step of the pause with its duration in milliseconds and whether it finished.
    - Some carry figures - C(source_lsn), C(waited_ms), C(sequences_changed), C(terminated).
    - In check mode, the steps a run would take, each with C(undo) (the step that undoes it, null when
      nothing needs undoing), C(ms) and C(ok) null.
  returned: always
  type: list
  elements: dict
  sample:
    - {"step": "pause_pgbouncer", "ms": 1.3, "ok": true}
    - {"step": "wait_for_catch_up", "ms": 4.1, "ok": true, "source_lsn": "0/3A5F2C8"}
failed_step:
  description: The step that failed or ran out of time (C(prepare) before the pause).
  returned: failure
  type: str
  sample: wait_for_catch_up
undone:
  description: The undo steps run after a failure, newest first, with their outcome.
  returned: failure
  type: list
  elements: dict
serving:
  description:
    - Host, port and database the pool points at when the module ends - with O(haproxy), those of the side HAProxy
      sends writes to.
  returned: always
  type: dict
lag_before_pause:
  description: Forward lag in bytes when the pause began.
  returned: success
  type: int
sequences:
  description: The sequences copied (see zerodowntime.migration.pg_sequence_sync).
  returned: success
  type: list
  elements: dict
reverse_streaming:
  description: Whether the reverse subscription's worker was streaming when the module ended.
  returned: success
  type: bool
repaired:
  description:
    - What the run did first about a switchover left pending in the journal - C(action) (undone, finished;
      in check mode would undo / would finish), C(by), C(reason), C(undone). Null when there was nothing.
  returned: always
  type: dict
previous_run:
  description:
    - The journal's record of the last run before this one - C(run_id), C(state), C(undo_by) or
      C(finished_by) (module, guardian, next run), C(reason), C(done), C(undone).
  returned: always
  type: dict
journal:
  description: Path of the journal.
  returned: always
  type: str
queries:
  description: Statements, console commands and HAProxy runtime API commands run (passwords masked).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.proxy import argument_spec as haproxy_argument_spec
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.console import ADMIN_CONNECTION_ARGUMENT_SPEC, AdminConsole
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import CONNECTION_ARGUMENT_SPEC
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.journal import DEFAULT_DIRECTORY
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import PSYCOPG, connect_option
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sequences import DEFAULT_MARGIN
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.subscription import PUBLISHER_SPEC
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.switchover import switchover

PGBOUNCER_SPEC = dict(
    ADMIN_CONNECTION_ARGUMENT_SPEC,
    database=dict(type="str", required=True),
    config_file=dict(type="path", default="/etc/pgbouncer/pgbouncer.ini"),
    target_host=dict(type="str"),
    target_port=dict(type="int"),
    target_dbname=dict(type="str"),
)


def manage(module, opened: dict) -> dict:
    consoles = [opened[f"pgbouncers[{index}]"] for index in range(len(module.params["pgbouncers"]))]
    return switchover(opened["source"], opened["target"], consoles, module.params, module.log)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type="dict", required=True, options=dict(CONNECTION_ARGUMENT_SPEC)),
            target=dict(type="dict", required=True, options=dict(CONNECTION_ARGUMENT_SPEC)),
            subscription=dict(type="str", required=True),
            reverse_publication=dict(type="str", required=True),
            reverse_subscription=dict(type="str", required=True),
            reverse_publisher=dict(type="dict", required=True, options=PUBLISHER_SPEC),
            pgbouncers=dict(type="list", elements="dict", options=PGBOUNCER_SPEC),
            pgbouncer=dict(type="dict", options=PGBOUNCER_SPEC),
            timeout=dict(type="float", default=5.0),
            prepare_timeout=dict(type="float", default=120.0),
            max_lag_bytes=dict(type="int", default=1048576),
            sequence_margin=dict(type="int", default=DEFAULT_MARGIN),
            terminate_writers=dict(type="bool", default=False),
            drop_forward_subscription=dict(type="bool", default=True),
            state=dict(type="str", choices=["switched", "repaired"], default="switched"),
            journal_dir=dict(type="path", default=DEFAULT_DIRECTORY),
            guardian_margin=dict(type="float", default=1.0),
            haproxy=haproxy_argument_spec("pg_write"),
        ),
        mutually_exclusive=[("pgbouncers", "pgbouncer")],
        required_one_of=[("pgbouncers", "pgbouncer")],
        supports_check_mode=True,
    )
    if module.params["pgbouncer"]:
        module.params["pgbouncers"] = [module.params["pgbouncer"]]
    if not module.params["pgbouncers"]:
        module.fail_json(msg="pgbouncers is empty: list at least one PgBouncer in front of the databases")
    openers = {
        "source": lambda: connect_option(module.params["source"], "source", module.check_mode),
        "target": lambda: connect_option(module.params["target"], "target", module.check_mode),
    }
    for index, options in enumerate(module.params["pgbouncers"]):
        name = f"pgbouncers[{index}]"
        openers[name] = lambda options=options, name=name: connect_option(options, name, module.check_mode, opener=AdminConsole)
    run_module(module, lambda opened: manage(module, opened), openers, libraries=[PSYCOPG])


if __name__ == "__main__":
    main()
