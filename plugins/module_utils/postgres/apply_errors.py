# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failing subscription workers, found while a wait is running (the one copy of this check).

A subscription whose apply or table synchronization worker fails on a row (a missing column, a
duplicate key, a permission) retries every wal_retrieve_retry_interval and never gets further;
a wait on its lag or its tables would only end at its timeout. `ApplyWatch.check()`, called by
each poll of such a wait, raises as soon as one of the watched subscriptions fails, naming it,
the table and the error:

- detected by PostgreSQL 15's pg_stat_subscription_stats: apply_error_count or sync_error_count
  rising during the wait; or a counted error whose worker the server log shows died on it and
  has not started again; or an enabled subscription without an apply worker for ABSENT_GRACE
  seconds; or a subscription that disable_on_error disabled after an error. The first look
  takes the counters as its baseline; a caller that looks only once (`single_look`) has no
  second look to see them rise, so there a worker started again less than RESTART_SETTLE seconds
  ago, after counted errors, is watched until it is that old: it may be about to fail on the
  same change, and the look would otherwise fall between two of its runs;
- explained from the subscriber's server log (the error text is nowhere else): the last
  LOG_TAIL_BYTES of the current log file (pg_current_logfile(), or the server's stderr when the
  logging collector is off), read with pg_read_binary_file when the login may (a superuser, or
  pg_monitor plus pg_read_server_files). Without that right the message names the subscription
  and points to the log.
"""

from __future__ import annotations

import re
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.redact import redact
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError

LOG_TAIL_BYTES = 256 * 1024  # never more of the log per look
LOG_EVERY = 0.5  # seconds between two looks at the counters (the polls may be faster)
ABSENT_GRACE = 10.0  # a failed worker is restarted after wal_retrieve_retry_interval (5 s by default)
RESTART_SETTLE = 5.0  # seconds a worker started again after counted errors has to live before a first look trusts it
TEXT_LIMIT = 500  # characters kept of one log line

STATE_QUERY = (
    "SELECT s.oid, s.subname, s.subenabled, s.subdisableonerr, "
    "COALESCE(st.apply_error_count, 0)::bigint AS apply_errors, COALESCE(st.sync_error_count, 0)::bigint AS sync_errors, "
    "EXISTS (SELECT 1 FROM pg_catalog.pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL "
    "AND w.pid IS NOT NULL) AS apply_worker, "
    # NULL without pg_read_all_stats: the age is then unknown and the worker trusted at once
    "(SELECT EXTRACT(epoch FROM pg_catalog.clock_timestamp() - a.backend_start)::float8 FROM pg_catalog.pg_stat_subscription w "
    "JOIN pg_catalog.pg_stat_activity a ON a.pid = w.pid WHERE w.subid = s.oid AND w.relid IS NULL LIMIT 1) AS apply_worker_age_s "
    "FROM pg_catalog.pg_subscription s "
    "JOIN pg_catalog.pg_database d ON d.oid = s.subdbid AND d.datname = pg_catalog.current_database() "
    "LEFT JOIN pg_catalog.pg_stat_subscription_stats st ON st.subid = s.oid "
    "WHERE %(all)s OR s.subname = ANY(%(names)s) ORDER BY s.subname"
)
# The current log file: the logging collector's, else the server's stderr when it is a file.
LOG_FILE_QUERY = "SELECT COALESCE(pg_catalog.pg_current_logfile('stderr'), pg_catalog.pg_current_logfile(), '/proc/self/fd/2') AS path"
LOG_SIZE_QUERY = "SELECT size, isdir FROM pg_catalog.pg_stat_file(%s, true)"
LOG_READ_QUERY = "SELECT pg_catalog.pg_read_binary_file(%s, %s, %s, true) AS tail"

STARTED = re.compile(
    r'logical replication (?P<kind>apply|table synchronization) worker for subscription "(?P<name>.*?)"'
    r'(?:, table "(?P<table>[^"]*)")? has started'
)
PID = re.compile(r"\[(\d+)\]|pid=(\d+)")
RELATION = re.compile(r'relation "([^"]+)"')
SEVERITY = re.compile(r"\b(ERROR|FATAL|DETAIL|CONTEXT|HINT):  ")


def line_pid(prefix: str) -> str | None:
    """The process id in a log line's prefix (log_line_prefix with %p as [%p] or pid=%p)."""
    match = PID.search(prefix)
    return next(group for group in match.groups() if group) if match else None


def split_line(line: str) -> tuple[str, str, str] | None:
    """(prefix, severity, message) of a log line, or None for a continuation line."""
    match = SEVERITY.search(line) or re.search(r"\b(LOG|WARNING|STATEMENT):  ", line)
    if not match:
        return None
    return line[: match.start()], match.group(1), line[match.end() :]


def last_failures(log_text: str, name: str) -> list[dict]:
    """The latest failed run of each of the subscription's workers (the apply worker, each
    table's synchronization worker) in the log: the worker, the table, the error (with its
    DETAIL and CONTEXT), when it was logged, and `current` - whether that is the worker's latest
    run (it has not started again since). Empty when the log shows no failed run, or does not
    name the process ids (log_line_prefix without %p)."""
    lines = log_text.splitlines()[1:]  # the first line is cut by the offset
    last_run: dict[tuple, dict] = {}
    last_failed: dict[tuple, dict] = {}
    by_pid: dict[str, dict] = {}
    for line in lines:
        parts = split_line(line)
        if parts is None:
            continue
        prefix, severity, message = parts
        pid = line_pid(prefix)
        started = STARTED.search(message) if severity == "LOG" else None
        if started and started.group("name") == name:
            if pid is None:
                continue
            key = (started.group("kind"), started.group("table"))
            run = {"worker": key[0], "table": key[1], "error": None, "logged_at": None, "notes": []}
            last_run[key] = by_pid[pid] = run
            continue
        run = by_pid.get(pid) if pid else None
        if run is None:
            continue
        if severity in ("ERROR", "FATAL") and run["error"] is None:
            if "terminating logical replication worker due to administrator command" in message:
                continue  # stopped by ALTER/DROP SUBSCRIPTION or a shutdown, not a failure
            run["error"] = redact(message)[:TEXT_LIMIT]  # masked before it is cut: a cut value is still masked
            run["logged_at"] = prefix.strip()[:64]
            last_failed[(run["worker"], run["table"])] = run
        elif severity in ("DETAIL", "CONTEXT") and run["error"] is not None and len(run["notes"]) < 2:
            run["notes"].append(redact(message)[:TEXT_LIMIT])  # a DETAIL may quote a statement
    failures = []
    for key, run in last_failed.items():
        relations = RELATION.findall(" ".join([run["error"], *run["notes"]]))
        failures.append(
            {
                "worker": run["worker"],
                "table": relations[0] if relations else run["table"],
                "error": run["error"],
                "notes": run["notes"],
                "logged_at": run["logged_at"],
                "current": last_run.get(key) is run,
            }
        )
    return failures


class ApplyWatch:
    """The workers of some subscriptions (all of the database with `names` None) during a wait."""

    def __init__(
        self,
        client,
        names: list[str] | None = None,
        clock=time.monotonic,
        absent_grace: float = ABSENT_GRACE,
        single_look: bool = False,
        sleep=time.sleep,
    ):
        self.client = client
        self.single_look = single_look
        self.names = names
        self.clock = clock
        self.sleep = sleep
        self.absent_grace = absent_grace
        self.baseline: dict[str, int] | None = None
        self.absent_since: dict[str, float] = {}
        self.looked_at: float | None = None
        self.log_error: str | None = None  # why the log cannot be read, once known
        self.seen_in_log: dict[str, list[dict] | None] = {}  # this check's reading of the log

    # --- the log -------------------------------------------------------------------------------
    def read_log_tail(self) -> str | None:
        """The last LOG_TAIL_BYTES of the current log file, or None (the reason in log_error)."""
        if self.log_error:
            return None
        try:
            path = self.client.query_one(LOG_FILE_QUERY)["path"]
            stat = self.client.query_one(LOG_SIZE_QUERY, (path,))
            if not stat or stat["isdir"] or not stat["size"]:
                self.log_error = f"the server logs to {path}, which is not a file the server can read back"
                return None
            offset = max(int(stat["size"]) - LOG_TAIL_BYTES, 0)
            row = self.client.query_one(LOG_READ_QUERY, (path, offset, LOG_TAIL_BYTES))
        except PgError as exc:
            self.log_error = (
                f"login_user '{self.client.params.get('login_user')}' may not read the server log ({str(exc).splitlines()[0]}); "
                f"a superuser, or a member of pg_monitor and pg_read_server_files, may"
            )
            return None
        tail = row["tail"] if row else None
        return bytes(tail).decode("utf-8", errors="replace") if tail is not None else None

    def failures_in_log(self, name: str) -> list[dict] | None:
        """last_failures() of the subscription, or None when the log cannot be read (the log
        is read at most once per check)."""
        if name not in self.seen_in_log:
            text = self.read_log_tail()
            self.seen_in_log[name] = None if text is None else last_failures(text, name)
        return self.seen_in_log[name]

    # --- the check -----------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        return self.client.query(STATE_QUERY, {"all": self.names is None, "names": list(self.names or [])})

    def check(self) -> None:
        """Raise PgError naming the first failing subscription; else return (at most one look
        at the server per LOG_EVERY seconds)."""
        now = self.clock()
        if self.looked_at is not None and now - self.looked_at < LOG_EVERY:
            return
        first_look = self.baseline is None
        rows = self.look(now)
        if first_look and self.single_look:
            self.watch_restarted(rows)

    def look(self, now: float) -> list[dict]:
        """One look at the counters and workers: raise for a failing subscription, else return the rows."""
        self.looked_at = now
        self.seen_in_log = {}
        rows = self.rows()
        counts = {row["subname"]: int(row["apply_errors"]) + int(row["sync_errors"]) for row in rows}
        if self.baseline is None:
            self.baseline = dict(counts)
        for row in rows:
            name = row["subname"]
            failing = self.why_failing(row, counts[name] - self.baseline.get(name, 0), now)
            if failing:
                raise PgError(self.message(row, failing), apply_error=self.details(row, failing))
        return rows

    def watch_restarted(self, rows: list[dict]) -> None:
        """Look again until every worker started after counted errors is RESTART_SETTLE seconds
        old or has failed again (raising): the baseline took those errors as the past."""

        def unsettled(rows: list[dict]) -> float:
            ages = [
                row.get("apply_worker_age_s")
                for row in rows
                if row["apply_worker"] and int(row["apply_errors"]) + int(row["sync_errors"]) and row.get("apply_worker_age_s") is not None
            ]
            return max((RESTART_SETTLE - float(age) for age in ages), default=0.0)

        wait = unsettled(rows)
        deadline = Deadline(wait, clock=self.clock)
        while wait > 0 and not deadline.passed:
            self.sleep(min(LOG_EVERY, max(deadline.remaining(), 0.001)))
            wait = unsettled(self.look(self.clock()))

    def why_failing(self, row: dict, new_errors: int, now: float) -> str | None:
        """A sentence part saying how the subscription is seen to fail, or None."""
        name, errors = row["subname"], int(row["apply_errors"]) + int(row["sync_errors"])
        if row["subenabled"] and not row["apply_worker"]:
            self.absent_since.setdefault(name, now)
        else:
            self.absent_since.pop(name, None)
        if new_errors > 0:
            return f"its workers failed {new_errors} time(s) during this wait"
        if not row["subenabled"]:
            if row["subdisableonerr"] and errors:
                return "disable_on_error disabled it after an error"
            return None
        if errors and not row["apply_worker"] and any(f["worker"] == "apply" and f["current"] for f in self.failures_in_log(name) or []):
            return "its apply worker died on an error and has not started again"
        absent = now - self.absent_since[name] if name in self.absent_since else 0.0
        if absent >= self.absent_grace:
            return f"it is enabled but has had no apply worker for {absent:.0f} s"
        return None

    def details(self, row: dict, failing: str) -> dict:
        failures = self.failures_in_log(row["subname"]) or []
        return {
            "subscription": row["subname"],
            "apply_error_count": int(row["apply_errors"]),
            "sync_error_count": int(row["sync_errors"]),
            "seen": failing,
            "failures": failures,
            "log": None if self.log_error is None else self.log_error,
        }

    def message(self, row: dict, failing: str) -> str:
        name = row["subname"]
        counts = f"apply_error_count {row['apply_errors']}, sync_error_count {row['sync_errors']}"
        failures = self.failures_in_log(name) or []
        failures = [f for f in failures if f["current"]] or failures[-1:]
        where = f"the subscriber {self.client.endpoint}"
        if failures:
            named = "; ".join(
                f"its {f['worker']} worker fails on table {f['table'] or '(unknown)'}: {f['error']}"
                + "".join(f" ({note})" for note in f["notes"])
                + (f" [logged {f['logged_at']}]" if f["logged_at"] else "")
                for f in failures
            )
            return (
                f"subscription '{name}' on {where} is failing ({failing}; {counts}): {named}. Replication from the "
                f"publisher stops there until it is fixed: add the missing column or table on the subscriber, remove the "
                f"conflicting row, or grant what is missing; the worker retries by itself"
            )
        reason = self.log_error or "the log does not name the error (log_line_prefix without %p, or the lines are older than its tail)"
        return (
            f"subscription '{name}' on {where} is failing ({failing}; {counts}), but the error is only in that server's log: "
            f"{reason}. Look there for 'logical replication' errors (a missing column, a duplicate key, a permission)"
        )
