# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The watch after a cutover: is green serving as well as blue did?

`take_baseline` samples blue's statement latency (pg_stat_statements) and transactions over a
window before the cutover. `watch` then samples green every `interval` seconds for
`watch_seconds` and gates each interval's figures:

* transactions rolled back (pg_stat_database): their share of the interval, and a total count
  (rollbacks, deadlocks, sessions ended by a fatal error) over the whole watch (`max_errors`);
* statement latency: green's mean time per call against what blue's baseline means per call for
  the same statements (matched by user and normalised text: query ids differ between clusters);
* PgBouncer's client wait (SHOW POOLS maxwait): the time the application waits for a server
  connection, the pause it feels;
* the reverse replication (green's slot for blue's subscription): bytes blue has yet to confirm,
  and the time its walsender has been gone. Past these a switch back would no longer be lossless
  within the cutover's bound, so they are triggers too;
* the reverse backlog (optional): rows of a change table past a position - on the SQLite path the
  target's writes recorded by the reverse capture (postgres/change_capture.py) that a rollback has
  yet to replay into the file within its hold.

The first gate breached ends the watch with a `WatchBreach` naming the signal, its value and
the gate; the caller (roles/migration, phase 5) switches back to blue. Everything here reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import check_identifier

with contextlib.suppress(ImportError):  # a missing psycopg is reported by the module
    from psycopg import sql

EXTENSION_QUERY = (
    "SELECT n.nspname AS schema FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
    "WHERE e.extname = 'pg_stat_statements'"
)
# toplevel: a statement run inside a function is counted in its caller's time already.
STATEMENTS_QUERY = (
    'SELECT r.rolname AS "user", s.query, s.calls, s.total_exec_time FROM {}.pg_stat_statements s '
    "JOIN pg_catalog.pg_roles r ON r.oid = s.userid "
    "WHERE s.toplevel AND s.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = %s)"
)
DATABASE_QUERY = (
    "SELECT xact_commit, xact_rollback, deadlocks, sessions_fatal FROM pg_catalog.pg_stat_database "
    "WHERE datname = pg_catalog.current_database()"
)
# Logical decoding ends each decoded transaction with an abort, counted in the database's
# xact_rollback, and a walsender (PostgreSQL 15) reports its counters when it exits: a reverse
# walsender that ends adds a burst of "rollbacks" no client saw. An interval in which a walsender
# of the database ended is not judged on rollbacks (the slot gates judge the replication).
WALSENDERS_QUERY = (
    "SELECT pid FROM pg_catalog.pg_stat_activity WHERE backend_type = 'walsender' AND datname = pg_catalog.current_database()"
)
SLOT_QUERY = (
    "SELECT active, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes "
    "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s"
)
BACKLOG_QUERY = "SELECT count(*) AS n FROM {} WHERE seq > %s"
PRIVILEGE_QUERY = (
    "SELECT r.rolsuper OR pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS reads_all "
    "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
)
# Only statements the planner runs are normalised by pg_stat_statements ($1 for constants);
# utility statements keep their text (an ALTER ROLE ... PASSWORD would), so they are left out.
PLANNABLE = re.compile(r"\s*(select|insert|update|delete|with|merge|values|table)\b", re.IGNORECASE)
QUERY_SHOWN = 120  # characters of a statement's normalised text in results


class WatchBreach(PgError):
    """A gate breached: `details['breach']` names the signal, its value and the gate."""


def statement_key(user: str, query: str) -> str:
    return hashlib.sha256(f"{user}\0{query}".encode()).hexdigest()[:16]


class Signals:
    """Reads one server's figures: statements, transactions, a slot, PgBouncer pools, a change table's backlog.

    backlog: None, or (schema, change table, position): the table's rows whose `seq` is above the position."""

    def __init__(self, client, statements_client, database: str, consoles=(), slot: str | None = None, backlog=None):
        self.client = client
        self.statements_client = statements_client
        self.database = database
        self.consoles = list(consoles)
        self.slot = slot
        self.backlog = backlog
        self.statements_schema = None

    def check_prerequisites(self) -> None:
        """Everything the watch reads is there, or an error names what is missing and the fix."""
        found = self.statements_client.query_one(EXTENSION_QUERY)
        where = f"database '{self.statements_client.params.get('login_db')}' on {self.statements_client.endpoint}"
        if found is None:
            raise PgError(
                f"pg_stat_statements is not installed in {where}: add pg_stat_statements to shared_preload_libraries "
                f"(a restart) and run CREATE EXTENSION pg_stat_statements there (roles/postgresql does both, "
                f"postgresql_preload_libraries), or point statements_db at the database that has it. Nothing was read."
            )
        self.statements_schema = found["schema"]
        privilege = self.statements_client.query_one(PRIVILEGE_QUERY)
        if not (privilege and privilege["reads_all"]):
            raise PgError(
                f"{self.statements_client.params.get('login_user')} on {self.statements_client.endpoint} cannot read other "
                f"users' statements: GRANT pg_read_all_stats TO {self.statements_client.params.get('login_user')}, "
                f"or connect as a superuser"
            )
        try:
            self.statements()
        except PgError as exc:
            raise PgError(
                f"pg_stat_statements in {where} cannot be read ({exc}): add pg_stat_statements to "
                f"shared_preload_libraries and restart the server (roles/postgresql: postgresql_preload_libraries)"
            ) from None
        if self.slot is not None:
            check_identifier(self.slot, "reverse_slot")
            if self.slot_state() is None:
                raise PgError(
                    f"there is no replication slot '{self.slot}' on {self.client.endpoint}: reverse_slot names the slot of "
                    f"the reverse replication on the server watched (pg_switchover creates it with the reverse "
                    f"subscription's name); check the name, or run the cutover first"
                )
        if self.backlog is not None:
            schema, table, _after = self.backlog
            check_identifier(schema, "reverse_backlog_schema")
            check_identifier(table, "reverse_backlog_table")
            try:
                self.reverse_backlog()
            except PgError as exc:
                raise PgError(
                    f"the change table {schema}.{table} cannot be counted on {self.client.endpoint} ({exc}): "
                    f"reverse_backlog_table names the reverse capture's change table (a bigint column seq) in login_db; "
                    f"check the name, or run the cutover first"
                ) from None

    def statements(self) -> dict:
        """{key: (calls, total_ms, user, query)} of the plannable statements of the database."""
        statement = sql.SQL(STATEMENTS_QUERY).format(ident(self.statements_schema or "public"))
        figures = {}
        for row in self.statements_client.query(statement, (self.database,)):
            if not PLANNABLE.match(row["query"] or ""):
                continue
            key = statement_key(row["user"], row["query"])
            calls, total = figures.get(key, (0, 0.0, None, None))[:2]
            figures[key] = (calls + int(row["calls"]), total + float(row["total_exec_time"]), row["user"], row["query"])
        return figures

    def transactions(self) -> dict:
        return {name: int(value or 0) for name, value in (self.client.query_one(DATABASE_QUERY) or {}).items()}

    def slot_state(self) -> dict | None:
        return self.client.query_one(SLOT_QUERY, (self.slot,))

    def reverse_backlog(self) -> int:
        schema, table, after = self.backlog
        return int(self.client.query_one(sql.SQL(BACKLOG_QUERY).format(ident(schema, table)), (int(after),))["n"])

    def client_wait_ms(self) -> float:
        """The longest wait of a client for a server connection now, over every pooler."""
        waits = [console.pools(database)["maxwait"] for console, database in self.consoles]
        return round(max(waits, default=0.0) * 1000, 1)

    def sample(self) -> dict:
        return {
            "statements": self.statements(),
            "transactions": self.transactions(),
            "walsenders": {row["pid"] for row in self.client.query(WALSENDERS_QUERY)},
            "slot": self.slot_state() if self.slot is not None else None,
            "client_wait_ms": self.client_wait_ms() if self.consoles else None,
            "reverse_backlog": self.reverse_backlog() if self.backlog is not None else None,
        }


def statement_deltas(before: dict, after: dict) -> dict:
    """{key: (calls, total_ms)} of the statements run between two samples (a reset shows as new)."""
    deltas = {}
    for key, (calls, total, _user, _query) in after.items():
        old_calls, old_total = before.get(key, (0, 0.0, None, None))[:2]
        if calls < old_calls:  # pg_stat_statements_reset() or an evicted entry
            old_calls, old_total = 0, 0.0
        if calls > old_calls:
            deltas[key] = (calls - old_calls, total - old_total)
    return deltas


def timed_sample(signals, clock) -> dict:
    return dict(signals.sample(), at=clock())


def take_baseline(signals: Signals, seconds: float, sleep=time.sleep, clock=time.monotonic) -> dict:
    """Blue's statements and transactions over `seconds`: what green is compared with."""
    first = timed_sample(signals, clock)
    sleep(seconds)
    last = timed_sample(signals, clock)
    deltas = statement_deltas(first["statements"], last["statements"])
    statements = []
    for key, (calls, total) in sorted(deltas.items(), key=lambda item: -item[1][0]):
        _calls, _total, user, query = last["statements"][key]
        statements.append({"key": key, "user": user, "query": query[:QUERY_SHOWN], "calls": calls, "mean_ms": round(total / calls, 4)})
    calls = sum(entry["calls"] for entry in statements)
    total = sum(total for _calls, total in deltas.values())
    committed = last["transactions"]["xact_commit"] - first["transactions"]["xact_commit"]
    rolled_back = last["transactions"]["xact_rollback"] - first["transactions"]["xact_rollback"]
    return {
        "seconds": round(last["at"] - first["at"], 3),
        "server": signals.client.endpoint,
        "calls": calls,
        "mean_ms": round(total / calls, 4) if calls else None,
        "transactions": committed + rolled_back,
        "rollback_rate": round(rolled_back / (committed + rolled_back), 4) if committed + rolled_back else None,
        "statements": statements,
    }


def latency(deltas: dict, baseline: dict, min_calls: int, floor_ms: float = 0.0) -> dict | None:
    """Green's mean ms per call over the statements the baseline knows and what blue's means give for
    the same calls; `worst`, the statement of at least `min_calls` calls and a mean above `floor_ms`
    furthest above its own baseline (one hot statement slowed is diluted in the mean of all). None
    when too few calls."""
    known = {entry["key"]: entry for entry in baseline.get("statements") or []}
    calls = total = wanted = 0.0
    worst = None
    for key, (key_calls, key_total) in deltas.items():
        entry = known.get(key)
        if entry is None or entry["mean_ms"] <= 0:
            continue
        calls += key_calls
        total += key_total
        wanted += key_calls * entry["mean_ms"]
        ratio = key_total / (key_calls * entry["mean_ms"])
        judged = key_calls >= max(min_calls, 1) and key_total / key_calls > floor_ms
        if judged and (worst is None or ratio > worst["ratio"]):
            worst = {
                "query": entry["query"],
                "calls": key_calls,
                "mean_ms": round(key_total / key_calls, 3),
                "baseline_ms": entry["mean_ms"],
            }
            worst["ratio"] = round(ratio, 2)
    if calls < max(min_calls, 1) or wanted <= 0:
        return None
    return {
        "calls": int(calls),
        "mean_ms": round(total / calls, 3),
        "baseline_ms": round(wanted / calls, 3),
        "ratio": round(total / wanted, 2),
        "worst": worst,
    }


def judge(interval: dict, params: dict, totals: dict, inactive_since, now: float) -> list[tuple[str, float, float, str]]:
    """The gates one interval breaches: (signal, value, gate, what it means)."""
    breaches = []

    def gate(signal, value, bound, meaning, judged=True, zero_is_off=True):
        # a bound of 0 ms, bytes or seconds would breach always: it turns those gates off
        off = bound is None or (zero_is_off and bound == 0)
        if judged and not off and value is not None and value > bound:
            breaches.append((signal, value, bound, meaning))

    transactions = interval["transactions"]
    # an application whose pool rolls back on every return does so on blue too: the gate is above blue's share
    allowed = (
        None
        if params.get("max_rollback_rate") is None
        else round(params["max_rollback_rate"] + (params.get("baseline_rollback_rate") or 0), 4)
    )
    gate(
        "rollback_rate",
        transactions["rollback_rate"],
        allowed,
        f"{transactions['rolled_back']} of {transactions['total']} transactions rolled back",
        judged="rollback_rate" in judged_signals(interval, params),
        zero_is_off=False,
    )
    gate(
        "errors",
        totals["errors"],
        params.get("max_errors"),
        "rollbacks (a deadlock's victim among them) and sessions ended by a fatal error since the watch began",
        zero_is_off=False,
    )
    measured = interval.get("latency")
    if measured:
        gate(
            "latency_ratio",
            measured["ratio"],
            params.get("max_latency_ratio"),
            f"{measured['mean_ms']} ms per call over {measured['calls']} calls, blue's baseline {measured['baseline_ms']} ms",
            judged=measured["mean_ms"] > params["latency_floor_ms"],
        )
        worst = measured.get("worst")
        if worst and not any(signal == "latency_ratio" for signal, *_rest in breaches):
            gate(
                "latency_ratio",
                worst["ratio"],
                params.get("max_latency_ratio"),
                f"{worst['mean_ms']} ms per call over {worst['calls']} calls of {worst['query']!r}, "
                f"blue's baseline {worst['baseline_ms']} ms",
                judged=worst["mean_ms"] > params["latency_floor_ms"],
            )
    gate("client_wait_ms", interval.get("client_wait_ms"), params.get("max_client_wait_ms"), "a client waited this long in PgBouncer")
    reverse = interval.get("reverse")
    if reverse is not None and reverse.get("missing"):
        breaches.append(("reverse_slot_missing", 1, 0, "the reverse slot was dropped: blue no longer receives green's writes"))
    if reverse is not None:
        gate("reverse_lag_bytes", reverse["lag_bytes"], params.get("max_reverse_lag_bytes"), "WAL bytes the reverse slot has not confirmed")
        gone = None if inactive_since is None else round(now - inactive_since, 1)
        gate("reverse_inactive_seconds", gone, params.get("max_reverse_inactive_seconds"), "seconds the reverse slot had no walsender")
    gate(
        "reverse_backlog",
        interval.get("reverse_backlog"),
        params.get("max_reverse_backlog"),
        "changes on the server watched that a switch back has yet to replay (the reverse capture's rows past the position replayed)",
    )
    return breaches


# Gates read from one interval's rates: one loaded second of a shared machine is not a slow green, so these
# breach only when crossed in `breach_samples` samples in a row. Errors add up over the whole watch, the
# reverse slot's gates are already durations, a dropped slot is final, and the reverse backlog only grows
# while nothing replays it: those breach at once.
SUSTAINED_SIGNALS = frozenset(("rollback_rate", "latency_ratio", "client_wait_ms"))


def sustained(crossed: list, streaks: dict, samples_in_a_row: int, judged: set) -> list:
    """The gates of `crossed` that count as breaches, with `streaks` (signal -> samples in a row it was
    crossed in) brought up to date: a gate of SUSTAINED_SIGNALS counts once crossed in `samples_in_a_row`
    samples in a row, any other at once. A sample that could not judge a gate (too few calls or
    transactions) neither extends nor ends its streak: a green slow enough to serve few calls stays caught."""
    crossed_now = {signal for signal, *_rest in crossed}
    for signal in SUSTAINED_SIGNALS:
        if signal in crossed_now:
            streaks[signal] = streaks.get(signal, 0) + 1
        elif signal in judged:
            streaks[signal] = 0
    return [entry for entry in crossed if entry[0] not in SUSTAINED_SIGNALS or streaks[entry[0]] >= samples_in_a_row]


def judged_signals(interval: dict, params: dict) -> set:
    """The gates of SUSTAINED_SIGNALS that this interval had enough figures to judge."""
    judged = {"client_wait_ms"} if interval.get("client_wait_ms") is not None else set()
    transactions = interval["transactions"]
    if transactions["total"] >= params["min_transactions"] and transactions.get("judged", True):
        judged.add("rollback_rate")
    if interval.get("latency"):
        judged.add("latency_ratio")
    return judged


def summarise(before: dict, after: dict, baseline: dict, min_calls: int, started: float, floor_ms: float = 0.0) -> dict:
    old, new = before["transactions"], after["transactions"]
    committed = new["xact_commit"] - old["xact_commit"]
    rolled_back = new["xact_rollback"] - old["xact_rollback"]
    total = committed + rolled_back
    judged = not (before.get("walsenders", set()) - after.get("walsenders", set()))  # see WALSENDERS_QUERY
    transactions = {"total": total, "rolled_back": rolled_back, "rollback_rate": round(rolled_back / total, 4) if total else 0.0}
    interval = {
        "at_s": round(after["at"] - started, 1),
        "transactions": dict(transactions, judged=judged),
        "errors": (rolled_back if judged else 0) + (new["sessions_fatal"] - old["sessions_fatal"]),
        "deadlocks": new["deadlocks"] - old["deadlocks"],
        "latency": latency(statement_deltas(before["statements"], after["statements"]), baseline, min_calls, floor_ms),
        "client_wait_ms": after["client_wait_ms"],
    }
    if after.get("reverse_backlog") is not None:
        interval["reverse_backlog"] = after["reverse_backlog"]
    if after["slot"] is not None:
        interval["reverse"] = {"active": after["slot"]["active"], "lag_bytes": after["slot"]["lag_bytes"]}
    elif before["slot"] is not None:  # dropped during the watch: nothing streams green's writes to blue any more
        interval["reverse"] = {"active": False, "lag_bytes": None, "missing": True}
    return interval


def watch(
    signals: Signals, params: dict, baseline: dict, log=lambda message: None, reporter=None, sleep=time.sleep, clock=time.monotonic
) -> dict:
    """Sample every `interval` s for `watch_seconds`; raise WatchBreach at the first gate breached."""
    params = dict(params, baseline_rollback_rate=baseline.get("rollback_rate") or 0)
    deadline = Deadline(params["watch_seconds"], clock=clock)
    samples = []
    totals = {"errors": 0}
    inactive_since = None
    streaks: dict = {}  # signal -> consecutive samples it was crossed in
    before = timed_sample(signals, clock)
    started = before["at"]
    while not deadline.passed:
        sleep(min(params["interval"], max(deadline.remaining(), 0.001)))
        try:
            after = timed_sample(signals, clock)
        except PgError as exc:  # green (or a pooler) did not answer within the statement bound: as bad as any gate
            at_s = round(clock() - started, 1)
            raise WatchBreach(
                f"{signals.client.endpoint} could not be read {at_s} s into the watch: {exc}",
                healthy=False,
                breach={"signal": "unreadable", "value": str(exc)[:300], "gate": None, "meaning": "a sample failed", "at_s": at_s},
                breaches=1,
                samples=samples,
            ) from None
        interval = summarise(before, after, baseline, params["min_calls"], started, params["latency_floor_ms"])
        totals["errors"] += interval["errors"]
        reverse = interval.get("reverse")
        if reverse is not None:
            inactive_since = None if reverse["active"] else (inactive_since if inactive_since is not None else before["at"])
        samples.append(interval)
        crossed = judge(interval, params, totals, inactive_since, after["at"])
        breaches = sustained(crossed, streaks, params.get("breach_samples") or 1, judged_signals(interval, params))
        if breaches:
            signal, value, gate, meaning = breaches[0]
            breach = {"signal": signal, "value": value, "gate": gate, "meaning": meaning, "at_s": interval["at_s"]}
            if signal in SUSTAINED_SIGNALS:
                breach["samples_in_a_row"] = streaks[signal]
                meaning = f"{meaning}; crossed in {streaks[signal]} samples in a row"
            others = "; ".join(f"{name} {got} (gate {bound})" for name, got, bound, _meaning in breaches[1:])
            raise WatchBreach(
                f"{signals.client.endpoint} breached {signal}: {value} over the gate {gate} ({meaning}) "
                f"{interval['at_s']} s into the watch" + (f"; also {others}" if others else ""),
                healthy=False,
                breach=breach,
                breaches=len(breaches),
                samples=samples,
            )
        log(f"watch {interval['at_s']} s of {params['watch_seconds']} s: healthy")
        if reporter is not None:
            reporter.update(round(deadline.elapsed()), total=params["watch_seconds"])
        before = after
    result = {"healthy": True, "watched_seconds": round(deadline.elapsed(), 1), "samples": samples, "errors": totals["errors"]}
    unfinished = {signal: count for signal, count in streaks.items() if count}
    if unfinished:  # crossed in the last samples, too few to count: said, not judged
        result["unfinished_streaks"] = unfinished
        result["warnings"] = [
            f"{signal} was crossed in the last {count} sample(s) when the watch ended, fewer than breach_samples: "
            f"look at green before phase 6"
            for signal, count in sorted(unfinished.items())
        ]
    return result
