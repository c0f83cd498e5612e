#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_cutover_watch
short_description: Watch green after a cutover against blue's baseline, and fail at the first signal past its gate
description:
  - O(mode=baseline), before the cutover, on blue - samples the statement latency of O(login_db)
    (C(pg_stat_statements)) and its transactions over O(baseline_seconds) and returns them as RV(baseline).
  - O(mode=watch), after the cutover, on green - samples every O(interval) seconds for O(watch_seconds) and gates
    each interval - the share of transactions rolled back (C(pg_stat_database)) and the count of rollbacks,
    deadlocks and fatal session errors since the watch began (O(max_errors)); green's mean time per call against
    blue's baseline for the same statements (matched by user and normalised text); the longest wait of a client
    for a server connection in each PgBouncer of O(pgbouncers); the reverse replication's slot on green
    (O(reverse_slot)) - bytes blue has not confirmed, and seconds without a walsender. Past those a switch back to
    blue would no longer be lossless within the cutover's bound.
  - On the SQLite path (playbooks/sqlite_migration.yml, post_cutover_validation) there is no reverse slot - the way back
    is the reverse capture's change table, which O(zerodowntime.migration.sqlite_cutover#module:state=rolled_back)
    replays into the file within its hold. O(reverse_backlog_table) counts its rows past the position replayed so far
    (O(reverse_backlog_after)), gated by O(max_reverse_backlog).
  - A sample that fails (green not answering within O(interval), its statement bound) is a breach too, C(unreadable);
    so is the reverse slot dropped during the watch, C(reverse_slot_missing).
  - The first gate breached ends the watch at once; the module fails naming the signal, its value, the gate and what
    it means (RV(breach)). It changes nothing itself - roles/migration (C(tasks_from=cutover_watch)) and phase 5
    switch back to blue through zerodowntime.migration.pg_switchover reversed.
  - The runbooks' rollback triggers map onto it - C(max_errors) is O(max_errors); a lag limit is
    O(max_reverse_lag_bytes) (O(max_reverse_backlog) on the SQLite path); a downtime limit is O(max_client_wait_ms)
    (the pause the application feels) with pg_switchover's own bounded pause; C(max_time) is O(watch_seconds) with every wait bounded.
  - Written for this collection - community.postgresql has no module that compares a server's statistics over time.
version_added: 0.2.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  mode:
    description:
      - V(baseline) samples the server (blue, before the cutover) and returns RV(baseline); V(watch) watches the
        server (green, after the cutover) against O(baseline).
    type: str
    choices: [baseline, watch]
    default: watch
  statements_db:
    description:
      - The database where the extension C(pg_stat_statements) is created (roles/postgresql creates it in
        C(postgres)); its statistics cover every database, and only O(login_db)'s are read.
    type: str
    default: postgres
  baseline_seconds:
    description: Seconds blue is sampled over in O(mode=baseline).
    type: float
    default: 10
  baseline:
    description:
      - RV(baseline) of a O(mode=baseline) run on blue (register it). Required with O(mode=watch).
    type: dict
  watch_seconds:
    description: Seconds green is watched.
    type: float
    default: 300
  interval:
    description: Seconds between two samples; each gate is judged on every interval.
    type: float
    default: 5
  max_rollback_rate:
    description:
      - Largest share (0 to 1) of an interval's transactions that may roll back above blue's own share in the
        baseline (an application whose pool rolls back on every return does so on blue too), judged on intervals of
        at least O(min_transactions) transactions. V(1) turns the gate off.
    type: float
    default: 0.05
  min_transactions:
    description: Fewest transactions in an interval for O(max_rollback_rate) to judge it.
    type: int
    default: 20
  max_errors:
    description:
      - Most rollbacks (a deadlock's victim among them) and sessions ended by a fatal error (C(pg_stat_database))
        allowed over the whole watch. Not set, no bound.
    type: int
  max_latency_ratio:
    description:
      - Largest ratio of green's mean time per call to blue's baseline for the same calls, judged on intervals of
        at least O(min_calls) calls of statements the baseline knows. V(0) turns the gate off.
    type: float
    default: 3.0
  latency_floor_ms:
    description: A mean time per call under this many ms never breaches O(max_latency_ratio) (sub-millisecond noise).
    type: float
    default: 5.0
  min_calls:
    description: Fewest calls of known statements in an interval for O(max_latency_ratio) to judge it.
    type: int
    default: 20
  breach_samples:
    description:
      - Samples in a row in which the rollback share, latency or client wait gate must be crossed before it counts
        as a breach - one loaded interval is not a slow green. A sample with too few calls or transactions to judge
        a gate neither extends nor ends its streak. The error count and the reverse slot's gates breach at once.
        V(1) judges each sample alone. O(watch_seconds) must hold at least this many samples.
    type: int
    default: 2
  max_client_wait_ms:
    description:
      - Longest wait allowed, in ms, of a client for a server connection in any PgBouncer of O(pgbouncers).
        V(0) turns the gate off.
    type: float
    default: 1000
  reverse_slot:
    description:
      - The slot on the server watched that streams the reverse replication (green -> blue; pg_switchover names it
        after its O(zerodowntime.migration.pg_switchover#module:reverse_subscription)). Not set, the reverse
        replication is not watched.
    type: str
  max_reverse_lag_bytes:
    description:
      - Most bytes of the server's WAL the reverse slot may have left unconfirmed (pg_switchover's own
        C(max_lag_bytes) is what its pause can catch up on). V(0) turns the gate off.
    type: int
    default: 1048576
  max_reverse_inactive_seconds:
    description:
      - Longest time, in seconds, the reverse slot may go without a walsender (a subscriber's worker reconnects
        within C(wal_retrieve_retry_interval), 5 s by default). V(0) turns the gate off.
    type: float
    default: 10
  reverse_backlog_table:
    description:
      - A change table in O(login_db) (a C(bigint) column C(seq)) whose rows past O(reverse_backlog_after) are the changes
        a switch back has yet to replay - on the SQLite path, the reverse capture's table
        (O(zerodowntime.migration.sqlite_cutover#module:reverse_change_table)). Counted in every sample (RV(samples),
        C(reverse_backlog)).
        Not set, no backlog is read.
    type: str
  reverse_backlog_schema:
    description: The schema of O(reverse_backlog_table).
    type: str
    default: public
  reverse_backlog_after:
    description:
      - The position replayed so far - rows with a C(seq) at or below it are not counted (sqlite_cutover's
        RV(zerodowntime.migration.sqlite_cutover#module:reverse_capture.replayed_seq) at the switch).
    type: int
    default: 0
  max_reverse_backlog:
    description:
      - Most rows of O(reverse_backlog_table) past O(reverse_backlog_after) allowed; more breach at once (the backlog only
        grows while nothing replays it), signal C(reverse_backlog). Not set or V(0), no gate.
    type: int
extends_documentation_fragment:
  - zerodowntime.migration.postgres
  - zerodowntime.migration.pgbouncer.watched_pools
  - zerodowntime.migration.progress
attributes:
  check_mode:
    support: full
    description: Only reads; check mode watches and gates the same way.
  diff_mode:
    support: none
    description: Nothing changes.
notes:
  - O(login_user) must be a superuser or a member of C(pg_read_all_stats) (other users' statements), and read
    C(pg_replication_slots); the error names the grant.
  - Statement latency is compared per statement, so a workload that runs different statements after the cutover
    is judged only on the ones blue ran during the baseline. A statement counts when it completes - a lock that
    holds every writer shows as O(max_client_wait_ms) once PgBouncer's pool is used up, not as latency.
  - Logical decoding ends every transaction it decodes with an abort, counted in C(pg_stat_database.xact_rollback), and a
    walsender reports its counters when it ends - an interval in which a walsender of the database ended is not judged on
    rollbacks (its samples say C(judged=false)); the slot gates judge the replication.
  - Only plannable statements (C(SELECT), C(INSERT), C(UPDATE), C(DELETE), C(WITH), C(MERGE), C(VALUES), C(TABLE)) are read -
    pg_stat_statements normalises their constants, not those of utility statements.
"""

EXAMPLES = r"""
- name: Blue's baseline, before the cutover
  zerodowntime.migration.pg_cutover_watch:
    login_host: 127.0.0.11
    login_port: 5432
    mode: baseline
    baseline_seconds: 10
  register: baseline

- name: Watch green for 5 minutes after the cutover
  zerodowntime.migration.pg_cutover_watch:
    login_host: 127.0.0.12
    login_port: 5432
    baseline: "{{ baseline.baseline }}"
    watch_seconds: 300
    interval: 5
    max_latency_ratio: 3
    reverse_slot: novacron_green_to_blue
    pgbouncers:
      - login_host: 127.0.0.61  # the lab's pool-1
        login_port: 6432
        login_user: pgbouncer_admin
        login_password: "{{ pgbouncer_admin_password }}"
        database: novacron
"""

RETURN = r"""
baseline:
  description: Blue's figures over O(baseline_seconds) - pass it as O(baseline) to the watch.
  returned: mode baseline
  type: dict
  contains:
    seconds:
      description: Seconds sampled.
      type: float
    server:
      description: The server sampled.
      type: str
    calls:
      description: Calls of plannable statements.
      type: int
    mean_ms:
      description: Mean time per call.
      type: float
    transactions:
      description: Transactions committed or rolled back.
      type: int
    rollback_rate:
      description: Share of them rolled back.
      type: float
    statements:
      description: Each statement called - C(key), C(user), C(query) (normalised, first 120 characters), C(calls), C(mean_ms).
      type: list
      elements: dict
healthy:
  description: Whether every interval passed every gate.
  returned: mode watch
  type: bool
watched_seconds:
  description: Seconds watched.
  returned: mode watch, success
  type: float
errors:
  description: Rollbacks, deadlocks and fatal session errors during the watch.
  returned: mode watch, success
  type: int
samples:
  description:
    - One entry per interval - C(at_s), C(transactions) (C(total), C(rolled_back), C(rollback_rate)), C(errors),
      C(transactions.judged) (false when a walsender ended in the interval), C(deadlocks), C(latency) (C(calls),
      C(mean_ms), C(baseline_ms), C(ratio), and C(worst) - the statement above O(latency_floor_ms) furthest over its
      own baseline; null when too few calls), C(client_wait_ms), C(reverse) (C(active), C(lag_bytes), C(missing)),
      C(reverse_backlog) (with O(reverse_backlog_table)).
  returned: mode watch
  type: list
  elements: dict
breach:
  description:
    - The first gate breached - C(signal), C(value), C(gate), C(meaning), C(at_s), and for the rollback share, latency
      and client wait gates C(samples_in_a_row) (see O(breach_samples)).
  returned: mode watch, on a breach
  type: dict
  sample: {"signal": "latency_ratio", "value": 212.4, "gate": 3.0, "meaning": "52.1 ms per call ...", "at_s": 2.0}
unfinished_streaks:
  description:
    - Gates crossed in the last samples of a healthy watch, fewer times in a row than O(breach_samples) - signal ->
      samples; each is also a warning.
  returned: mode watch, when a gate was crossed in the last sample
  type: dict
  sample: {"latency_ratio": 1}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.redact import redact
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.console import ADMIN_CONNECTION_ARGUMENT_SPEC, AdminConsole
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, statement_timeout
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import PSYCOPG, connect_option, pg_argument_spec
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.progress import PROGRESS_SPEC, open_reporter
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.watch import Signals, take_baseline, watch

WATCHED_POOL_SPEC = dict(ADMIN_CONNECTION_ARGUMENT_SPEC, database=dict(type="str", required=True))
POSITIVE = ("baseline_seconds", "interval")
NOT_NEGATIVE = (
    "watch_seconds",
    "max_rollback_rate",
    "min_transactions",
    "max_errors",
    "max_latency_ratio",
    "latency_floor_ms",
    "min_calls",
    "max_client_wait_ms",
    "max_reverse_lag_bytes",
    "max_reverse_inactive_seconds",
    "reverse_backlog_after",
    "max_reverse_backlog",
)


def option_problem(params: dict) -> str | None:
    for name in POSITIVE:
        if params[name] <= 0:
            return f"{name} must be above 0 (seconds), not {params[name]}"
    for name in NOT_NEGATIVE:
        if params[name] is not None and params[name] < 0:
            return f"{name} must not be negative, not {params[name]}"
    if params["breach_samples"] < 1:
        return f"breach_samples is a count of samples in a row, at least 1, not {params['breach_samples']}"
    if params["mode"] == "watch" and 0 < params["watch_seconds"] < params["breach_samples"] * params["interval"]:
        return (
            f"watch_seconds {params['watch_seconds']:g} holds fewer than breach_samples ({params['breach_samples']}) samples of "
            f"{params['interval']:g} s: the rollback, latency and client wait gates could never breach; raise watch_seconds"
        )
    if params["max_rollback_rate"] is not None and params["max_rollback_rate"] > 1:
        return f"max_rollback_rate is a share of the transactions, 0 to 1, not {params['max_rollback_rate']}"
    if params["mode"] == "watch" and not params["baseline"]:
        return "mode watch needs baseline: register a mode baseline run on blue before the cutover and pass its baseline"
    if params["mode"] == "watch" and not isinstance(params["baseline"].get("statements"), list):
        return "baseline is not a pg_cutover_watch baseline (no statements list): pass the registered result's baseline"
    return None


def run(module, opened: dict) -> dict:
    params = module.params
    consoles = [(opened[f"pgbouncers[{index}]"], pool["database"]) for index, pool in enumerate(params["pgbouncers"] or [])]
    slot = params["reverse_slot"] if params["mode"] == "watch" else None
    backlog = None
    if params["mode"] == "watch" and params["reverse_backlog_table"]:
        backlog = (params["reverse_backlog_schema"], params["reverse_backlog_table"], params["reverse_backlog_after"])
    signals = Signals(opened["server"], opened["statements"], params["login_db"], consoles, slot, backlog)
    signals.check_prerequisites()
    if params["mode"] == "baseline":
        return {"changed": False, "baseline": take_baseline(signals, params["baseline_seconds"])}
    # a green that stops answering must not hold the watch past its interval: a read over it fails the sample
    for client in (opened["server"], opened["statements"]):
        statement_timeout(client, max(params["interval"], 1.0) * 1000)
    reporter = open_reporter(params["progress"], "cutover watch", module.check_mode, unit="seconds", total=params["watch_seconds"])
    try:
        result = watch(signals, params, params["baseline"], log=module.log, reporter=reporter)
    except Exception as exc:
        if reporter.emitted:
            reporter.finish("failed", {"error": redact(str(exc))[:500]})
        reporter.close()
        raise
    if reporter.emitted:
        reporter.finish("done", {"healthy": True})
    reporter.close()
    result["warnings"] = reporter.warnings
    return dict(result, changed=False)


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            mode=dict(type="str", choices=["baseline", "watch"], default="watch"),
            statements_db=dict(type="str", default="postgres"),
            baseline_seconds=dict(type="float", default=10.0),
            baseline=dict(type="dict"),
            watch_seconds=dict(type="float", default=300.0),
            interval=dict(type="float", default=5.0),
            max_rollback_rate=dict(type="float", default=0.05),
            min_transactions=dict(type="int", default=20),
            max_errors=dict(type="int"),
            max_latency_ratio=dict(type="float", default=3.0),
            latency_floor_ms=dict(type="float", default=5.0),
            min_calls=dict(type="int", default=20),
            breach_samples=dict(type="int", default=2),
            max_client_wait_ms=dict(type="float", default=1000.0),
            pgbouncers=dict(type="list", elements="dict", options=WATCHED_POOL_SPEC),
            reverse_slot=dict(type="str"),
            max_reverse_lag_bytes=dict(type="int", default=1048576),
            max_reverse_inactive_seconds=dict(type="float", default=10.0),
            reverse_backlog_table=dict(type="str"),
            reverse_backlog_schema=dict(type="str", default="public"),
            reverse_backlog_after=dict(type="int", default=0),
            max_reverse_backlog=dict(type="int"),
            progress=PROGRESS_SPEC,
        ),
        supports_check_mode=True,
    )
    problem = option_problem(module.params)
    if problem:
        module.fail_json(msg=problem)
    params = module.params
    openers = {
        "server": lambda: Client(params, check_mode=module.check_mode),
        "statements": lambda: connect_option(dict(params, login_db=params["statements_db"]), "statements_db", module.check_mode),
    }
    for index, options in enumerate(params["pgbouncers"] or []):
        name = f"pgbouncers[{index}]"
        openers[name] = lambda options=options, name=name: connect_option(options, name, module.check_mode, opener=AdminConsole)
    run_module(module, lambda opened: run(module, opened), openers, libraries=[PSYCOPG])


if __name__ == "__main__":
    main()
