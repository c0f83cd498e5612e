# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical streaming replicas as their primary sees them (pg_stat_replication), and a lag gate.

Read-only: one SELECT per poll. The pure helpers (turning a row into a replica, finding what
breaks a bound) carry the logic; `replication_lag` only polls until the gate passes or the
timeout runs out.
"""

from __future__ import annotations

import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.apply_errors import ApplyWatch
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.lsn import lsn_diff

# Every walsender of the server with the slot it streams through. On a standby (cascading
# replication) the reference position is what it has replayed itself.
STANDBYS_QUERY = (
    "SELECT r.pid, r.application_name, pg_catalog.host(r.client_addr) AS client_addr, r.state, r.sync_state, "
    "r.sent_lsn::text AS sent_lsn, r.write_lsn::text AS write_lsn, r.flush_lsn::text AS flush_lsn, "
    "r.replay_lsn::text AS replay_lsn, "
    "(EXTRACT(epoch FROM r.write_lag) * 1000)::float8 AS write_lag_ms, "
    "(EXTRACT(epoch FROM r.flush_lag) * 1000)::float8 AS flush_lag_ms, "
    "(EXTRACT(epoch FROM r.replay_lag) * 1000)::float8 AS replay_lag_ms, "
    "s.slot_name, "
    "(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() "
    "ELSE pg_catalog.pg_current_wal_lsn() END)::text AS current_lsn "
    "FROM pg_catalog.pg_stat_replication r "
    "LEFT JOIN pg_catalog.pg_replication_slots s ON s.active_pid = r.pid "
    "ORDER BY r.application_name, r.pid"
)
SERVER_QUERY = (
    "SELECT pg_catalog.pg_is_in_recovery() AS in_recovery, "
    "(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() "
    "ELSE pg_catalog.pg_current_wal_lsn() END)::text AS current_lsn"
)
POLL_INTERVAL = 0.2


def round_ms(value) -> float | None:
    return None if value is None else round(float(value), 3)


def standby_from_row(row: dict) -> dict:
    """A pg_stat_replication row (plus slot_name and the server's current_lsn) as returned.

    replay_lag_bytes is the distance from the server's current position to what the standby
    has replayed. PostgreSQL shows replay_lag as NULL once a standby has caught up and the
    server is idle; with nothing left to replay that is 0 ms, otherwise it stays unknown (None).
    """
    current, replay = row.get("current_lsn"), row.get("replay_lsn")
    lag_bytes = max(lsn_diff(current, replay), 0) if current and replay else None
    lag_ms = round_ms(row.get("replay_lag_ms"))
    if lag_ms is None and lag_bytes == 0:
        lag_ms = 0.0
    return {
        "application_name": row.get("application_name"),
        "slot_name": row.get("slot_name"),
        "client_addr": row.get("client_addr"),
        "pid": row.get("pid"),
        "state": row.get("state"),
        "sync_state": row.get("sync_state"),
        "sent_lsn": row.get("sent_lsn"),
        "write_lsn": row.get("write_lsn"),
        "flush_lsn": row.get("flush_lsn"),
        "replay_lsn": replay,
        "replay_lag_bytes": lag_bytes,
        "replay_lag_ms": lag_ms,
        "write_lag_ms": round_ms(row.get("write_lag_ms")),
        "flush_lag_ms": round_ms(row.get("flush_lag_ms")),
    }


def standby_label(standby: dict) -> str:
    """How a message names a standby: application_name, its slot, its address."""
    name = standby.get("application_name") or "(no application_name)"
    extras = [f"slot {standby['slot_name']}"] if standby.get("slot_name") else []
    if standby.get("client_addr"):
        extras.append(f"from {standby['client_addr']}")
    return f"{name} ({', '.join(extras)})" if extras else name


def standby_matches(standby: dict, name: str) -> bool:
    """An expected replica name matches a standby's application_name or slot name."""
    return name in (standby.get("application_name"), standby.get("slot_name"))


def validate_expected(expected):
    """expected_replicas: None, a count >= 0, or a list of names. Returns int, list or None."""
    if expected is None or expected == "":
        return None
    if isinstance(expected, bool):
        raise PgError("expected_replicas must be a number of replicas or a list of their names, not a boolean")
    if isinstance(expected, (list, tuple)):
        names = [str(name) for name in expected]
        if not all(names):
            raise PgError("expected_replicas lists an empty name: give each replica's application_name or slot name")
        return names
    try:
        count = int(str(expected).strip())
    except ValueError:
        raise PgError(
            f"expected_replicas must be a number of replicas or a list of their names (application_name or slot), got {expected!r}"
        ) from None
    if count < 0:
        raise PgError(f"expected_replicas must be 0 or more, got {count}")
    return count


def lag_problems(standbys: list[dict], max_lag_bytes=None, max_lag_ms=None, expected=None) -> list[str]:
    """Every reason the gate does not pass, one sentence per replica (empty: it passes).

    With any bound set, a standby that is not streaming (startup, catchup, backup) is a problem
    too. `expected` is a count of streaming standbys or a list of names that must be streaming.
    """
    gated = any(bound is not None for bound in (max_lag_bytes, max_lag_ms, expected))
    problems = []
    if isinstance(expected, list):
        for name in expected:
            if not any(standby_matches(standby, name) for standby in standbys):
                problems.append(f"replica {name} is not connected (no walsender with that application_name or slot)")
    for standby in standbys:
        label = standby_label(standby)
        if gated and standby.get("state") != "streaming":
            problems.append(f"replica {label} is in state {standby.get('state')!r}, not streaming")
            continue
        lag_bytes, lag_ms = standby.get("replay_lag_bytes"), standby.get("replay_lag_ms")
        if max_lag_bytes is not None and (lag_bytes is None or lag_bytes > max_lag_bytes):
            shown = "unknown" if lag_bytes is None else f"{lag_bytes} bytes"
            problems.append(f"replica {label} replay lag {shown} is over max_lag_bytes {max_lag_bytes}")
        if max_lag_ms is not None and (lag_ms is None or lag_ms > max_lag_ms):
            shown = "unknown (no replay_lag measured yet)" if lag_ms is None else f"{lag_ms:g} ms"
            problems.append(f"replica {label} replay lag {shown} is over max_lag_ms {max_lag_ms:g}")
    if isinstance(expected, int):
        streaming = [standby_label(standby) for standby in standbys if standby.get("state") == "streaming"]
        if len(streaming) < expected:
            found = ", ".join(streaming) if streaming else "none"
            problems.append(f"{expected} streaming replicas expected, {len(streaming)} found ({found})")
    return problems


def gate_message(endpoint: str, problems: list[str], waited: float, in_recovery: bool, standbys: list[dict]) -> str:
    """The failure message: what is wrong, and where to look."""
    if not standbys:
        hint = (
            f"no standby is connected to {endpoint} (pg_stat_replication is empty): check that the replicas run, "
            f"that their primary_conninfo points at this server and that its pg_hba.conf allows their replication connections"
        )
        if in_recovery:
            hint += f"; {endpoint} is itself a standby: connect to the primary (or to the standby the replicas cascade from)"
    else:
        hint = (
            "check the replicas' logs and pg_stat_replication; raise timeout to wait longer for them to catch up, "
            "or the bound if it is stricter than the workload allows"
        )
    return f"replication lag gate failed on {endpoint} after {waited:.1f} s: {'; '.join(problems)}. {hint}"


def read_standbys(client) -> tuple[list[dict], bool, str | None]:
    """The standbys, whether the server is itself in recovery, and its current position."""
    rows = client.query(STANDBYS_QUERY)
    server = client.query_one(SERVER_QUERY)
    if rows and all(row.get("state") is None and row.get("sent_lsn") is None for row in rows):
        raise PgError(
            f"login_user '{client.params.get('login_user')}' may not see the replication state on {client.endpoint} "
            f"(pg_stat_replication shows it only to superusers and members of pg_monitor): "
            f"GRANT pg_monitor TO {client.params.get('login_user')}, or connect as a superuser"
        )
    return [standby_from_row(row) for row in rows], bool(server["in_recovery"]), server["current_lsn"]


def replication_lag(client, params: dict, clock=time.monotonic, sleep=time.sleep, subscriber=None) -> dict:
    """What the pg_replication_lag module does: report every standby, and with bounds set wait
    (at most `timeout` seconds) until they all hold; fail naming each replica that does not.
    With a `subscriber` connection, each poll also watches the workers of its subscriptions
    (`subscriptions`, default all of its database) and fails as soon as one fails."""
    expected = validate_expected(params.get("expected_replicas"))
    max_lag_bytes, max_lag_ms = params.get("max_lag_bytes"), params.get("max_lag_ms")
    for option, value in (("max_lag_bytes", max_lag_bytes), ("max_lag_ms", max_lag_ms), ("timeout", params.get("timeout"))):
        if value is not None and value < 0:
            raise PgError(f"{option} must be 0 or more, got {value}")
    timeout = float(params.get("timeout") or 0)
    if params.get("subscriptions") and subscriber is None:
        raise PgError("subscriptions needs subscriber: the connection to the server the subscriptions are on (green)")
    watch = None
    if subscriber is not None:
        watch = ApplyWatch(subscriber, params.get("subscriptions") or None, clock=clock, single_look=not timeout, sleep=sleep)

    def read():
        if watch is not None:
            watch.check()
        standbys, in_recovery, current_lsn = read_standbys(client)
        return standbys, in_recovery, current_lsn, lag_problems(standbys, max_lag_bytes, max_lag_ms, expected)

    deadline = Deadline(timeout, clock=clock)
    seen = poll(read, deadline, None, ready=lambda seen: not seen[3], interval=POLL_INTERVAL, sleep=sleep)
    standbys, in_recovery, current_lsn, problems = seen
    waited = deadline.elapsed()
    result = {
        "changed": False,
        "replicas": standbys,
        "current_lsn": current_lsn,
        "in_recovery": in_recovery,
        "max_replay_lag_bytes": max((s["replay_lag_bytes"] for s in standbys if s["replay_lag_bytes"] is not None), default=None),
        "max_replay_lag_ms": max((s["replay_lag_ms"] for s in standbys if s["replay_lag_ms"] is not None), default=None),
        "waited_s": round(waited, 3),
        "problems": problems,
        "queries": [],
    }
    if problems:
        details = {key: value for key, value in result.items() if key not in ("changed", "queries")}
        raise PgError(gate_message(client.endpoint, problems, waited, in_recovery, standbys), **details)
    return result
