#!/usr/bin/env bash
# `make integration`: tests/integration in parts, so the suite fits CI's time on two cores, with
# the roles' molecule scenarios (`make molecule` runs them alone).
#
# 1. First, without the lanes: the tests that converge every service of the lab (the lab fixture's
#    site.yml, then phase1_infra.yml from cluster.yml on) or check them all at once (monitoring), and the
#    SSH tests (they cut SSH connections other tests would share). test_collection.py runs first,
#    alone: its lab fixture converges the lab (site.yml: every service's packages except etcd's, which
#    phase 1's cluster.yml installs; the roles' apt tasks wait for each other's lock). Then, beside
#    the rest of part 1 (which leaves a core mostly idle: one playbook at a time), one after
#    another: the roles' molecule scenarios on instances of their own (own ports, instance names,
#    local connections), their lines prefixed [molecule], then lane own: the tests that use no
#    service of the lab (SQLite files, a throwaway HAProxy, the PostgreSQL servers of
#    test_pg_replicas, test_pg_cutover_watch, test_sqlite_phases and test_sqlite_cutover). Nothing
#    waits for them before part 2 (the two lanes keep both cores busy: whatever runs beside part 1
#    is work they do not do; what outlasts part 1 runs on beside them), only before the end.
# 2. Then two lanes at once, on services they do not share:
#    - side: RabbitMQ, etcd (over SSH), Redis, MariaDB - their roles and modules -,
#      test_role_postgresql_addresses (PostgreSQL servers of its own, converged by the role) and the
#      module tests that need a PostgreSQL but none of the lab's (SCRATCH_PG, the session's own);
#    - main: everything else (PostgreSQL, PgBouncer, HAProxy, the phases), in
#      which phase 1 is not run again (ZERODOWNTIME_PHASE1_DONE=1: part 1 ran it; the phase1
#      fixture checks it is recorded as succeeded).
#    A test file not listed below runs in main. Each lane's lines are prefixed with its name.
#    Once main is done, beside what is left of side: the monitoring scenario (it converges the
#    lab's own Prometheus and Alertmanager, which main's alert tests read; side reads neither).
# Every part always runs; the exit status is the first failure's. `pytest tests/integration` still
# runs the whole suite in one process (slower, nothing else needed).
set -uo pipefail
cd "$(dirname "$0")/.."
# Everything is also kept in a log, so the failures of every part can be named again at the end:
# CI shows the end of the output, which the last part fills. Beside it, each pytest run's JUnit
# report (<log>.<part>.xml): every test's duration, to balance the lanes by.
log=$(mktemp /tmp/zdm-integration.XXXXXX.log)
exec > >(tee -a "$log") 2>&1
tee_pid=$!

first=(test_collection.py test_lab_ssh.py test_phase1_infra.py test_lab_state.py test_monitoring.py test_tls.py)
# own runs on into part 2 when it outlasts part 1: first the tests that make what part 2's tests do
# too (test_pg_replicas converges PostgreSQL clusters with the role, as test_role_postgresql_addresses
# in side does; test_haproxy_shift runs an HAProxy), then those whose servers are theirs alone
own=(test_pg_replicas.py test_haproxy_shift.py test_sqlite_sample_data.py test_sqlite_capture.py test_sqlite_backup.py
    test_sqlite_readonly.py test_sqlite_phases.py test_sqlite_cutover.py test_pg_cutover_watch.py)
side=(test_role_mariadb.py test_table_copy_mariadb.py test_role_postgresql_addresses.py
    test_rabbitmq.py test_rabbitmq_cluster.py test_raft_bootstrap.py test_raft_hosts.py test_redis.py
    test_pg_index.py test_pg_partition.py test_pg_schema_apply.py test_pg_validate.py test_table_copy.py test_table_compare.py)

main=()
for path in tests/integration/test_*.py; do
    name=$(basename "$path")
    [[ " ${first[*]} ${own[*]} ${side[*]} " == *" $name "* ]] || main+=("$path")
done

# the first non-zero status of those given, else 0: every part, scenario and lane runs whatever failed before it
first_failure() {
    local status
    for status in "$@"; do
        if [[ $status -ne 0 ]]; then return "$status"; fi
    done
    return 0
}
# molecule scenarios one after another
scenarios() {
    local statuses=() scenario
    for scenario in "$@"; do
        local started=$SECONDS rc
        molecule test -s "$scenario"
        rc=$?
        echo "molecule $scenario took $((SECONDS - started)) s: exit $rc"
        statuses+=("$rc")
    done
    first_failure "${statuses[@]}"
}
# -u: each lane's lines as they come; PYTHONUNBUFFERED so pytest's do not wait in a pipe buffer
prefixed() {
    local name=$1
    shift
    PYTHONUNBUFFERED=1 "$@" 2>&1 | sed -u "s/^/[$name] /"
    return "${PIPESTATUS[0]}"
}
# a pytest run named `name`: its 15 slowest tests at its end, its JUnit report <log>.<name>.xml
run_pytest() {
    local name=$1
    shift
    pytest "$@" --durations=15 --junitxml="${log%.log}.$name.xml"
}
lane() {
    local name=$1
    shift
    ZERODOWNTIME_LAB_CONVERGED=1 ZERODOWNTIME_PHASE1_DONE=1 prefixed "$name" run_pytest "$name" "$@"
}
# beside parts 1 and 2: the molecule scenarios, then lane own
beside() {
    prefixed molecule scenarios postgresql redis rabbitmq cluster_node mariadb
    local molecule_status=$?
    lane own "${own[@]/#/tests/integration/}"
    local own_status=$?
    echo "lane own (after molecule, beside parts 1 and 2): exit $own_status"
    first_failure "$molecule_status" "$own_status"
}

started=$SECONDS
run_pytest converge "tests/integration/${first[0]}"
converge_status=$?
beside &
beside_pid=$!
# unbuffered: its lines whole beside molecule's and lane own's (the failure summary at the end greps them)
rest_of_first=("${first[@]:1}")
ZERODOWNTIME_LAB_CONVERGED=1 PYTHONUNBUFFERED=1 run_pytest first "${rest_of_first[@]/#/tests/integration/}"
first_status=$?
echo "integration part 1 (without the lanes) took $((SECONDS - started)) s"

# lane main, then the monitoring scenario: the exit status of each in a file, as a background job has one
main_then_monitoring() {
    lane main "${main[@]}"
    echo $? >"$statuses/main"
    echo "lane main took $((SECONDS - started)) s"
    prefixed molecule scenarios monitoring
    echo $? >"$statuses/monitoring"
}

started=$SECONDS
statuses=$(mktemp -d /tmp/zdm-integration-status.XXXXXX)
main_then_monitoring &
main_pid=$!
lane side "${side[@]/#/tests/integration/}" &
side_pid=$!
wait "$side_pid"
side_status=$?
echo "lane side took $((SECONDS - started)) s"
wait "$main_pid"
main_status=$(cat "$statuses/main" 2>/dev/null || echo 1)
monitoring_status=$(cat "$statuses/monitoring" 2>/dev/null || echo 1)
rm -rf "$statuses"
wait "$beside_pid"
beside_status=$?
echo "integration part 2 (lanes main, then molecule monitoring, and side at once) took $((SECONDS - started)) s: main exit $main_status, monitoring exit $monitoring_status, side exit $side_status; beside them, exit $beside_status"
first_failure "$converge_status" "$first_status" "$beside_status" "$main_status" "$side_status" "$monitoring_status"
status=$?
if [[ $status -ne 0 ]]; then
    echo "integration failed (exit $status); what failed, in every part (the full output: $log):"
    grep -aE '^(\[(main|side|own|molecule)\] )?(FAILED|ERROR) |: exit [1-9]' "$log" || echo "no test failed: a part itself failed (see its output above)"
fi
exec >&- 2>&-  # tee ends with the output: wait for it, so the last lines come before make's
wait "$tee_pid"
exit "$status"
