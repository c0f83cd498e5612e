#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_shift
short_description: Move traffic between two servers of an HAProxy backend in gated steps
description:
  - Moves new connections of one HAProxy backend from O(from_server) (the old side) to O(to_server) (the
    new side) in O(steps), percents of the backend's new connections. Each step is held O(hold) seconds;
    meanwhile HAProxy's own statistics (C(show stat) on the runtime API) are read every O(interval) seconds
    and the new side's health over the step is compared with O(gates).
  - "Weights: the two servers' weights always add up to 100 - at a step of V(p) percent O(to_server) gets
    weight V(p) and O(from_server) V(100-p) (HAProxy's weights go 0..256; 0 takes no new connection), so a
    weight reads as the percent of new connections with a round-robin or least-connections balance.
    Connections already open stay where they are."
  - "Metrics of the new side, over the step (deltas of HAProxy's counters since the step began, not lifetime
    totals): C(error_rate) - connection errors (C(econ), and the attempts HAProxy retried, C(wretr) and
    C(wredis)) and response errors (C(eresp)) per request or connection attempt; C(hrsp_5xx_share)
    - 5xx responses per response (HTTP backends); C(rtime_ms) and C(qtime_ms) - HAProxy's response and queue
    times (its moving averages over the server's last 1024 requests). They are judged once the new side got
    O(min_requests) requests in the step."
  - A gate breached ends the hold at once (within one O(interval)); the weights go back to the last good step -
    the last step this run held without a breach, or where the run found them (V(0) on a first run) - and the
    module fails naming the metric, its value and the gate (RV(breached)).
  - Idempotent - the run starts from where the weights stand (the percent O(to_server) takes now) and takes
    only the steps above it; at the last step already it changes nothing (and reads no health - a down
    O(to_server) there gives a warning, not a failure).
  - "The old side out - O(from_server) down by its checks, or drained or in maintenance: the new side takes every
    new connection from the first step on, so only the last step is taken (held and judged like any step), a
    breach leaves the weights where they are instead of sending connections back to the old side, and the old
    side's admin state is left alone. This is how traffic goes back to the old infrastructure while the new one
    is down: swap the servers (O(to_server) the side that is up) - only the side gaining traffic is gated."
  - Bounded - at most one O(hold) per step left, and every runtime API command O(timeout).
  - One backend, two servers in it (a backend per side is not supported; put both sides' servers in one
    backend). To move traffic back, swap O(from_server) and O(to_server) - the gates then watch the side
    gaining traffic back, never the side being drained.
  - C(community.general.haproxy) sets one server's weight or state per task, fails neither on HAProxy's
    refusals nor supports check mode, and reads no statistics; the gates need the counters between the steps,
    so this module speaks the runtime API itself (C(plugins/module_utils/haproxy/runtime.py)).
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  socket:
    description:
      - HAProxy's stats socket at level admin, reachable from the host that runs the module - a unix socket
        path or C(host:port) (a C(stats socket ipv4@...) line).
    type: str
    required: true
  backend:
    description:
      - The backend whose servers the shift moves between.
    type: str
    required: true
  from_server:
    description:
      - The old side - the server that gives up traffic. Its health is not gated and its admin state (drain,
        maintenance) is never changed; it may be down.
    type: str
    required: true
  to_server:
    description:
      - The new side - the server that takes traffic. It must be up by its health checks when there is a step
        to take. Put in drain from the runtime API, it is made ready when it first gains weight; in maintenance
        (its checks stop, so it is not up) it is refused, naming the command that makes it ready.
    type: str
    required: true
  steps:
    description:
      - Percents of new connections for O(to_server), 1..100, rising.
    type: list
    elements: int
    default: [10, 25, 50, 75, 100]
  hold:
    description:
      - Seconds each step is held and watched (0..86400), the last one included.
    type: float
    default: 60
  interval:
    description:
      - Seconds between two readings of the statistics during a hold.
    type: float
    default: 1
  min_requests:
    description:
      - Requests the new side must have had in a step before its metrics are judged (fewer - the step passes
        with a warning); the old side's metrics serve as the reference of relative gates from this many on.
    type: int
    default: 20
  gates:
    description:
      - The limits of the new side's metrics over a step. A gate set to null is not checked.
    type: dict
    default: {}
    suboptions:
      max_error_rate:
        description:
          - Most connection and response errors (C(econ) + C(wretr) + C(wredis) + C(eresp)) per request, 0..1.
        type: float
        default: 0.02
      max_5xx_share:
        description:
          - Most 5xx responses per response (C(hrsp_5xx)), 0..1. HTTP backends only.
        type: float
        default: 0.02
      max_5xx_ratio:
        description:
          - Most 5xx share as a multiple of the old side's over the same step (an old share below 1 % counts
            as 1 %). Not checked by default.
        type: float
      max_response_ms:
        description:
          - Longest average response time (C(rtime)), in milliseconds. Not checked by default.
        type: float
      max_response_ratio:
        description:
          - Longest average response time as a multiple of the old side's (an old side under 1 ms counts as
            1 ms). Not checked by default.
        type: float
      max_queue_ms:
        description:
          - Longest average time in HAProxy's queue (C(qtime)), in milliseconds. Not checked by default.
        type: float
  timeout:
    description:
      - Seconds each runtime API command may take.
    type: float
    default: 2
attributes:
  check_mode:
    support: full
    description: Reads where the weights stand and returns the plan (RV(plan), RV(commands)); changes no weight.
  diff_mode:
    support: full
    description: Shows the percent and the two weights before and after.
"""

EXAMPLES = r"""
- name: Move the application's traffic to green, 10 minutes a step, failing back on errors or slowness
  zerodowntime.migration.haproxy_shift:
    socket: /run/haproxy/admin.sock
    backend: app
    from_server: blue
    to_server: green
    steps: [10, 25, 50, 75, 100]
    hold: 600
    interval: 5
    gates:
      max_5xx_share: 0.01
      max_error_rate: 0.01
      max_response_ms: 250
      max_response_ratio: 2
"""

RETURN = r"""
start_percent:
  description: The percent of new connections O(to_server) took when the module started.
  returned: always
  type: int
percent:
  description: The percent it takes now (in check mode, would take).
  returned: always
  type: int
plan:
  description: The steps this run takes (or would take), from where the weights stood.
  returned: always
  type: list
  elements: int
  sample: [50, 75, 100]
steps:
  description:
    - The steps held, each with its percent, weights, C(held_s), C(samples), the metrics of the new side
      (C(new)) and the old side (C(old)) over the step, the reference of relative gates, and C(breached).
  returned: always
  type: list
  elements: dict
weights:
  description: The two servers' weights at the end.
  returned: success
  type: dict
  sample: {"green": 100, "blue": 0}
breached:
  description: The gate breached - C(metric), C(value), C(gate), C(limit), C(step), C(server) (and C(old_value), C(bound) of a
    relative gate).
  returned: on a breach
  type: dict
  sample: {"metric": "hrsp_5xx_share", "value": 0.2, "gate": "max_5xx_share", "limit": 0.02, "step": 25, "server": "app/green"}
rolled_back_to:
  description: The percent the weights went back to after a breach or a step that could not be judged; null when going back failed
    too or was not tried (the old side out).
  returned: on failure
  type: int
commands:
  description: Runtime API commands that changed something (in check mode, those of the plan as seen from now).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.shift import shift


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type="str", required=True),
            backend=dict(type="str", required=True),
            from_server=dict(type="str", required=True),
            to_server=dict(type="str", required=True),
            steps=dict(type="list", elements="int", default=[10, 25, 50, 75, 100]),
            hold=dict(type="float", default=60),
            interval=dict(type="float", default=1),
            min_requests=dict(type="int", default=20),
            gates=dict(
                type="dict",
                default={},
                options=dict(
                    max_error_rate=dict(type="float", default=0.02),
                    max_5xx_share=dict(type="float", default=0.02),
                    max_5xx_ratio=dict(type="float"),
                    max_response_ms=dict(type="float"),
                    max_response_ratio=dict(type="float"),
                    max_queue_ms=dict(type="float"),
                ),
            ),
            timeout=dict(type="float", default=2),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda opened: shift(module.params, module.check_mode))


if __name__ == "__main__":
    main()
