# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A gated traffic shift between two servers of one HAProxy backend (haproxy_shift).

The new side's weight goes up step by step (`steps`, percents of new connections); each step is
held `hold` seconds, during which HAProxy's own statistics (`show stat`) are read every
`interval`: the new side's connection/response errors and HTTP 5xx share over the step (deltas of
counters since the step began, not lifetime totals), and its response and queue times (HAProxy's
moving averages). They are compared with gates, absolute and relative to the old side. A gate
breached sends the weights back to the last good step and fails, naming the metric, its value
and the gate. Where the weights stand is read first, so a second run continues (or does nothing).
"""

from __future__ import annotations

import csv
import io
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.runtime import HAProxyError

# The weights of the two servers always add up to TOTAL: the new side gets the step's percent,
# the old side the rest, so a weight is a percent of the backend's new connections (HAProxy's
# weights go 0..256; 0 takes no new connection).
TOTAL = 100
HRSP = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
# srv_admin_state bits the runtime API sets and `set server ... state ready` clears
# (SRV_ADMF_FMAINT, SRV_ADMF_FDRAIN); any other bit (maintenance from the configuration, a tracked
# server, a DNS resolution) the module does not lift.
FORCED = 0x01 | runtime.FORCED_DRAIN
GATES = {
    "max_error_rate": "error_rate",
    "max_5xx_share": "hrsp_5xx_share",
    "max_5xx_ratio": "hrsp_5xx_share",
    "max_response_ms": "rtime_ms",
    "max_response_ratio": "rtime_ms",
    "max_queue_ms": "qtime_ms",
}
# A relative gate compares with the old side's value, but never with less than this floor:
# an old side without a single 5xx (or answering in 0 ms) would make any 5xx (any time) a breach.
RATIO_FLOOR = {"hrsp_5xx_share": 0.01, "rtime_ms": 1.0}


def parse_stat(text: str) -> dict[str, dict]:
    """`show stat` CSV as {svname: {field: value}} (numbers as int, empty fields absent)."""
    text = text if isinstance(text, str) else ""
    if not text.startswith("# "):
        raise HAProxyError(f"not a 'show stat' answer: {(text.splitlines() or ['(empty)'])[0]!r}")
    rows = {}
    for row in csv.DictReader(io.StringIO(text[2:])):
        rows[row.get("svname")] = {
            key: int(value) if value.isdigit() else value for key, value in row.items() if key and value not in ("", None)
        }
    return rows


def server_stats(address: str, backend: str, timeout: float) -> dict[str, dict]:
    """The statistics of `backend`'s servers now (type 4: servers only)."""
    return parse_stat(runtime.command(address, f"show stat {backend} 4 -1", timeout))


def _count(row: dict, field: str) -> int:
    value = row.get(field, 0)
    return value if isinstance(value, int) else 0


def window(before: dict, after: dict) -> dict:
    """One server's metrics between two samples: counters as deltas (a counter that went back -
    HAProxy restarted - counts from 0), times as HAProxy's moving averages at `after`."""

    def delta(field: str) -> int:
        now, then = _count(after, field), _count(before, field)
        return now - then if now >= then else now

    responses = sum(delta(field) for field in HRSP)
    requests = max(delta("req_tot"), responses, delta("stot"))
    # A failed connection is counted in econ once the request gives up, in wretr/wredis at every
    # attempt HAProxy retried (on this server, or on another one with `option redispatch`).
    errors = delta("econ") + delta("wretr") + delta("wredis") + delta("eresp")
    hrsp_5xx = delta("hrsp_5xx")
    return {
        "requests": requests,
        "responses": responses,
        "econ": delta("econ"),
        "eresp": delta("eresp"),
        "wretr": delta("wretr"),
        "wredis": delta("wredis"),
        "error_rate": round(errors / requests, 4) if requests else None,
        "hrsp_5xx": hrsp_5xx,
        "hrsp_5xx_share": round(hrsp_5xx / responses, 4) if responses else None,
        "rtime_ms": after.get("rtime") if isinstance(after.get("rtime"), int) else None,
        "qtime_ms": after.get("qtime") if isinstance(after.get("qtime"), int) else None,
        "ttime_ms": after.get("ttime") if isinstance(after.get("ttime"), int) else None,
        "status": after.get("status"),
    }


def judge(new: dict, old: dict | None, gates: dict, min_requests: int) -> dict | None:
    """The first gate the new side's metrics breach, or None. Nothing is judged before the new
    side got `min_requests` requests in the step (a share of 3 requests says nothing) - except its
    health: a new side its checks mark DOWN is a breach at once."""
    if str(new.get("status") or "").startswith("DOWN"):
        return {"metric": "status", "value": new["status"], "gate": "health checks", "limit": "UP"}
    if new["requests"] < min_requests:
        return None
    for gate, metric in GATES.items():
        limit = gates.get(gate)
        value = new.get(metric)
        if limit is None or value is None:
            continue
        if gate.endswith("_ratio"):
            reference = old.get(metric) if old else None
            if reference is None:
                continue
            bound = limit * max(reference, RATIO_FLOOR[metric])
            if value > bound:
                return {"metric": metric, "value": value, "gate": gate, "limit": limit, "old_value": reference, "bound": round(bound, 4)}
        elif value > limit:
            return {"metric": metric, "value": value, "gate": gate, "limit": limit}
    return None


def effective_weight(row: dict) -> int:
    """The weight a server takes new connections with: 0 while in maintenance or drained."""
    admin = row.get("srv_admin_state")
    if isinstance(admin, int) and admin:
        return 0
    weight = row.get("srv_uweight")
    return weight if isinstance(weight, int) else 0


def position(to_row: dict, from_row: dict) -> int:
    """The percent of new connections the new side gets now (0 when neither takes any)."""
    to_weight, from_weight = effective_weight(to_row), effective_weight(from_row)
    if to_weight + from_weight == 0:
        return 0
    return round(TOTAL * to_weight / (to_weight + from_weight))


def weights_for(percent: int) -> tuple[int, int]:
    """(new side's weight, old side's weight) for a percent."""
    return percent, TOTAL - percent


def takes_connections(row: dict) -> bool:
    """Whether a server can take new connections at all: up by its checks and in no admin state
    (maintenance, drain)."""
    return row.get("srv_op_state") == runtime.RUNNING and not row.get("srv_admin_state")


def plan(current: int, steps: list[int], old_out: bool = False) -> list[int]:
    """The steps still to take from where the weights stand. With the old side out (down or in
    maintenance) the new side takes every new connection from the first step on, so the steps in
    between hold nothing: only the last one is taken."""
    todo = [step for step in steps if step > current]
    return todo[-1:] if old_out else todo


def check_params(params: dict) -> None:
    steps = params["steps"]
    if not steps or any(not isinstance(step, int) or not 1 <= step <= 100 for step in steps) or steps != sorted(set(steps)):
        raise HAProxyError(f"steps {steps!r} must be percents 1..100 in rising order without repeats, for example [10, 25, 50, 75, 100]")
    if params["from_server"] == params["to_server"]:
        raise HAProxyError(f"from_server and to_server are both {params['to_server']!r}: give the old side and the new side")
    if not 0 <= params["hold"] <= 86400:
        raise HAProxyError(f"hold {params['hold']} must be 0..86400 seconds (each step is held this long)")
    if not 0 < params["interval"] <= 3600:
        raise HAProxyError(f"interval {params['interval']} must be above 0 and at most 3600 seconds")
    if not 0 < params["timeout"] <= 60:
        raise HAProxyError(f"timeout {params['timeout']} must be above 0 and at most 60 seconds (per runtime API command)")
    if params["min_requests"] < 1:
        raise HAProxyError(f"min_requests {params['min_requests']} must be at least 1")
    for gate, limit in (params.get("gates") or {}).items():
        if limit is not None and limit < 0:
            raise HAProxyError(f"gate {gate} is {limit}: a gate is 0 or more")


class Shift:
    """One run of the shift against the admin socket at `address`."""

    def __init__(self, params: dict, check_mode: bool, sleep=time.sleep):
        check_params(params)
        self.params = params
        self.check_mode = check_mode
        self.sleep = sleep
        self.address = params["socket"]
        self.backend = params["backend"]
        self.old = params["from_server"]
        self.new = params["to_server"]
        self.timeout = params["timeout"]
        self.gates = {gate: limit for gate, limit in (params.get("gates") or {}).items() if limit is not None}
        self.commands: list[str] = []
        # the old side takes no new connection (down, maintenance, drain): steps and rollbacks skip it
        self.old_out = False

    def weights(self, percent: int) -> dict[str, int]:
        """The two servers' weights at `percent` (the new side's first)."""
        return dict(zip((self.new, self.old), weights_for(percent), strict=True))

    # Reading --------------------------------------------------------------------------------
    def rows(self) -> tuple[dict, dict]:
        """`show servers state` of the two servers, failing with the names there are."""
        try:
            rows = runtime.servers_state(self.address, self.backend, self.timeout)
        except HAProxyError as exc:
            if "Can't find backend" not in str(exc):
                raise
            raise HAProxyError(
                f"HAProxy at {self.address} has no backend {self.backend!r} (it has {', '.join(self.backends()) or 'none'}): "
                f"give the backend whose servers the shift moves between"
            ) from None
        by_name = {row["srv_name"]: row for row in rows}
        missing = [name for name in (self.old, self.new) if name not in by_name]
        if missing:
            raise HAProxyError(
                f"HAProxy at {self.address}: backend {self.backend} has no server {' or '.join(map(repr, missing))} "
                f"(it has {', '.join(sorted(by_name))}): give from_server and to_server as named in haproxy.cfg"
            )
        return by_name[self.new], by_name[self.old]

    def backends(self) -> list[str]:
        try:
            answer = runtime.command(self.address, "show backend", self.timeout)
        except HAProxyError:
            return []
        return [line.strip() for line in answer.splitlines() if line.strip() and not line.startswith("#")]

    def stats(self) -> dict[str, dict]:
        rows = server_stats(self.address, self.backend, self.timeout)
        for name in (self.old, self.new):
            if name not in rows:
                raise HAProxyError(
                    f"HAProxy at {self.address}: 'show stat' has no line for {self.backend}/{name}: is the runtime API the same HAProxy?"
                )
        return rows

    # Changing -------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        self.commands.append(text)
        if not self.check_mode:
            answer = runtime.command(self.address, text, self.timeout)
            if answer:  # the runtime API says nothing when it applied a `set` command
                raise HAProxyError(f"HAProxy at {self.address} did not apply `{text}`: {answer.splitlines()[0]}")

    def set_percent(self, percent: int) -> None:
        """New side first when it gains (the backend never runs short of weight), then the old side;
        the new side held in drain or maintenance from the runtime API is made ready when it has
        weight. The old side's admin state is left alone: a side drained or in maintenance (taken
        out because it is broken) stays out while traffic moves away from it."""
        to_row, from_row = self.rows()
        new_weight, old_weight = weights_for(percent)
        order = [(self.new, to_row, new_weight), (self.old, from_row, old_weight)]
        if new_weight < effective_weight(to_row):
            order.reverse()
        for name, row, weight in order:
            if row.get("srv_uweight") != weight:
                self.send(f"set weight {self.backend}/{name} {weight}")
            admin = row.get("srv_admin_state") or 0
            if name == self.new and weight and admin & FORCED:
                self.send(f"set server {self.backend}/{name} state ready")
        if self.check_mode:
            return
        to_row, from_row = self.rows()
        if (to_row.get("srv_uweight"), from_row.get("srv_uweight")) != (new_weight, old_weight) or effective_weight(to_row) != new_weight:
            raise HAProxyError(
                f"HAProxy at {self.address} did not take {self.backend} to {percent} %: {self.new} has weight "
                f"{to_row.get('srv_uweight')} (admin state {to_row.get('srv_admin_state')}), {self.old} weight "
                f"{from_row.get('srv_uweight')} (admin state {from_row.get('srv_admin_state')}): a backend with a static "
                f"balance algorithm (a map-based hash) only takes weights 0 and 100 %, and a server in maintenance from "
                f"the configuration is not lifted by the module"
            )

    # The shift ------------------------------------------------------------------------------
    def hold(self, percent: int, baseline: dict | None) -> dict:
        """Hold one step, sampling every interval; the step's record (with `breached` when a gate was)."""
        started = time.monotonic()
        first = self.stats()
        min_requests = self.params["min_requests"]
        samples = []

        def probe():
            now = self.stats()
            new, old = window(first[self.new], now[self.new]), window(first[self.old], now[self.old])
            reference = old if old["requests"] >= min_requests else baseline
            samples.append(1)
            return {"new": new, "old": old, "reference": reference, "breached": judge(new, reference, self.gates, min_requests)}

        last = poll(
            probe,
            Deadline(self.params["hold"]),
            on_timeout=None,
            ready=lambda sample: sample["breached"] is not None,
            interval=self.params["interval"],
            sleep=self.sleep,
        )
        return {
            "percent": percent,
            "weights": self.weights(percent),
            "held_s": round(time.monotonic() - started, 2),
            "samples": len(samples),
            "new": last["new"],
            "old": last["old"],
            "reference": last["reference"],
            "breached": last["breached"],
        }

    def refuse_new_side_down(self, to_row: dict) -> None:
        """The new side must be up to gain traffic (only then: where it gains nothing, e.g. the
        weights stand at the last step already, its health is not asked)."""
        if to_row.get("srv_op_state") != runtime.RUNNING and int(to_row.get("srv_admin_state") or 0) & 0x01:
            raise HAProxyError(
                f"HAProxy at {self.address}: {self.backend}/{self.new} is in maintenance (set from the runtime API), so not up: "
                f"`set server {self.backend}/{self.new} state ready`, wait for its health checks, then shift"
            )
        if to_row.get("srv_op_state") != runtime.RUNNING:
            raise HAProxyError(
                f"HAProxy at {self.address}: {self.backend}/{self.new} is not up (srv_op_state {to_row.get('srv_op_state')}, "
                f"its health checks fail): make it healthy before shifting traffic to it"
            )

    def run(self) -> dict:
        to_row, from_row = self.rows()
        start = position(to_row, from_row)
        self.old_out = not takes_connections(from_row)
        todo = plan(start, self.params["steps"], self.old_out)
        if todo:
            self.refuse_new_side_down(to_row)
        before = {"percent": start, "weights": {self.new: to_row.get("srv_uweight"), self.old: from_row.get("srv_uweight")}}
        result = {
            "changed": bool(todo),
            "start_percent": start,
            "plan": todo,
            "steps": [],
            "percent": todo[-1] if todo else start,
            "commands": self.commands,
            "warnings": [],
        }
        if start > self.params["steps"][-1]:
            result["warnings"].append(
                f"{self.backend}/{self.new} already takes {start} %, above the last step {self.params['steps'][-1]}: nothing to do "
                f"(to move traffic back, swap from_server and to_server)"
            )
        if not todo and not takes_connections(to_row):
            result["warnings"].append(
                f"{self.backend}/{self.new} takes {start} % by its weights but is not up or is out (srv_op_state "
                f"{to_row.get('srv_op_state')}, admin state {to_row.get('srv_admin_state')}): nothing to shift, but check it"
            )
        if todo and self.old_out and len(todo) < len(plan(start, self.params["steps"])):
            result["warnings"].append(
                f"{self.backend}/{self.old} takes no new connections (down, drained or in maintenance): "
                f"{self.new} goes to {todo[-1]} % in one step, held and judged like any step"
            )
        if self.check_mode or not todo:
            for percent in todo:
                self.set_percent(percent)  # records the commands it would send
                result["steps"].append({"percent": percent, "weights": self.weights(percent)})
            result["weights"] = self.weights(result["percent"]) if todo else before["weights"]
            result["diff"] = {"before": before, "after": {"percent": result["percent"], "weights": result["weights"]}}
            return result
        good, baseline = start, None
        for percent in todo:
            try:
                self.set_percent(percent)
                step = self.hold(percent, baseline)
            except HAProxyError as exc:
                # A step set but not judged (a stats read or a weight refused): not left in place,
                # or the next run would start above it and never hold it.
                rolled_back, back = self.go_back(good)
                raise HAProxyError(
                    f"step {percent} %: {exc}; {back}",
                    changed=bool(self.commands),
                    start_percent=start,
                    plan=todo,
                    steps=result["steps"],
                    rolled_back_to=good if rolled_back else None,
                    percent=self.current(),
                    commands=self.commands,
                ) from None
            result["steps"].append(step)
            if step["breached"] is None:
                good = percent
                if step["old"]["requests"] >= self.params["min_requests"]:
                    baseline = step["old"]
                if step["new"]["requests"] < self.params["min_requests"]:
                    result["warnings"].append(
                        f"step {percent} %: {self.new} got {step['new']['requests']} requests in the hold, fewer than "
                        f"min_requests {self.params['min_requests']}: its shares and times were not judged"
                    )
                continue
            self.fail(step, good, result)
        to_row, from_row = self.rows()
        result["weights"] = {self.new: to_row.get("srv_uweight"), self.old: from_row.get("srv_uweight")}
        result["diff"] = {"before": before, "after": {"percent": result["percent"], "weights": result["weights"]}}
        return result

    def current(self):
        try:
            return position(*self.rows())
        except HAProxyError:
            return None

    def go_back(self, good: int) -> tuple[bool, str]:
        """Weights back to the last good step: (whether that worked, what to tell). Not when the old
        side takes no connections: going back would leave new connections no server but a down one."""
        if self.old_out:
            return False, (
                f"weights left where they are: {self.old} takes no new connections (down, drained or in maintenance), "
                f"going back to {good} % would send them to it"
            )
        try:
            self.set_percent(good)
        except HAProxyError as exc:
            return False, f"going back to {good} % failed too ({exc}): set the weights by hand before anything else"
        return True, f"weights back to {good} % ({self.new} {weights_for(good)[0]}, {self.old} {weights_for(good)[1]})"

    def fail(self, step: dict, good: int, result: dict) -> None:
        breached = dict(step["breached"], step=step["percent"], server=f"{self.backend}/{self.new}")
        rolled_back, back = self.go_back(good)
        new = step["new"]
        measured = (
            f"{new['hrsp_5xx']} of {new['responses']} responses"
            if breached["metric"] == "hrsp_5xx_share"
            else f"{new['requests']} requests"
        )
        relative = f" x the old side's {breached['old_value']} = {breached['bound']}" if "bound" in breached else ""
        raise HAProxyError(
            f"step {step['percent']} %: {breached['metric']} of {self.backend}/{self.new} is {breached['value']} ({measured}), "
            f"over the gate {breached['gate']} {breached['limit']}{relative}; {back}",
            changed=True,
            start_percent=result["start_percent"],
            plan=result["plan"],
            breached=breached,
            steps=result["steps"],
            rolled_back_to=good if rolled_back else None,
            percent=self.current(),
            commands=self.commands,
        )


def shift(params: dict, check_mode: bool) -> dict:
    return Shift(params, check_mode).run()
