#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_notify
short_description: Tell people about a migration event - webhooks (Slack-compatible) and Alertmanager
description:
  - Posts one migration event - a phase V(started), V(succeeded), V(failed), V(rolled_back), a V(checkpoint),
    a V(gate_breached) - to every target of O(webhooks) and O(alertmanagers).
  - A webhook gets one JSON body in the shape of Slack's incoming webhooks (C(text) and one attachment whose
    colour follows the severity), and the event's fields under C(event) for receivers that read JSON.
  - An Alertmanager gets one alert (C(POST /api/v2/alerts)) named C(ZerodowntimeMigrationEvent) with the labels
    C(migration), C(phase), C(event) and C(severity) (V(critical) for V(failed) and V(gate_breached),
    V(warning) for V(rolled_back), V(info) otherwise) and O(alert_labels); it ends after O(alert_duration),
    and Alertmanager de-duplicates a repeated event by its labels.
  - All deliveries share one deadline (O(timeout)). A target that is unreachable or answers 429 or 5xx is tried
    again until then; any other error answer fails at once. Targets are named in results and messages by
    their C(name), never by their URL, which may carry a token.
  - A notification is an event, not a state - like C(ansible.builtin.uri) with C(POST), every run that is not in
    check mode posts and reports a change. Send it on a transition - the C(phase_state) entry point of the
    C(zerodowntime.migration.migration) role notifies only when C(migration_state) recorded a change, so a
    re-run of a phase that changes nothing notifies nobody.
  - Written for this collection because C(community.general.slack) speaks only to Slack and nothing in the
    usual collections posts alerts to Alertmanager's API.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  migration:
    description: Name of the migration, in every message and label.
    type: str
    default: zerodowntime
  phase:
    description: The phase (or step) the event belongs to.
    type: str
    required: true
  event:
    description: What happened.
    type: str
    required: true
    choices: [started, checkpoint, succeeded, failed, rolled_back, gate_breached]
  summary:
    description: The line people read; by default the phase and the event, for example C(phase5_cutover failed).
    type: str
  details:
    description: Figures to show with the event (the error, the write pause, a gate's metric and value).
    type: dict
  webhooks:
    description: Webhooks that receive the event as JSON.
    type: list
    elements: dict
    default: []
    suboptions: &target
      name:
        description: How results and messages name this target.
        type: str
        required: true
      url:
        description:
          - A webhook's URL, or an Alertmanager's base URL such as C(http://127.0.0.41:9093) (C(/api/v2/alerts) is added).
          - It may hold a token; it is never shown.
        type: str
        required: true
      headers:
        description: Extra HTTP headers, for example an C(Authorization) header.
        type: dict
  alertmanagers:
    description: Alertmanagers that receive the event as an alert.
    type: list
    elements: dict
    default: []
    suboptions: *target
  alert_labels:
    description: Labels added to the alert (for routing), for example C(team=dba).
    type: dict
  alert_duration:
    description: Seconds the alert stays active in Alertmanager (its C(endsAt)).
    type: int
    default: 3600
  timeout:
    description: Seconds all deliveries may take together, retries included.
    type: float
    default: 10
  validate_certs:
    description: Verify the TLS certificates of https targets.
    type: bool
    default: true
  fail_on_error:
    description:
      - Fail when a target did not take the event. With V(false), the module warns and goes on - for a rescue
        section, where a failed notification must not hide the failure it reports.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Posts nothing; returns the bodies it would post and the targets (RV(would_deliver)).
  diff_mode:
    support: full
    description: Shows one line per target - who would be told what.
"""

EXAMPLES = r"""
- name: Tell the on-call channel and Alertmanager that the cutover failed
  zerodowntime.migration.migration_notify:
    migration: novacron
    phase: phase5_cutover
    event: failed
    details:
      error: "{{ ansible_failed_result.msg }}"
    webhooks:
      - name: oncall-slack
        url: "{{ vault_oncall_webhook_url }}"
    alertmanagers:
      - name: alertmanager
        url: http://127.0.0.41:9093   # the lab's Alertmanager (monitor-1)
    fail_on_error: false
"""

RETURN = r"""
event:
  description: The event as sent.
  returned: always
  type: dict
  sample: {"migration": "novacron", "phase": "phase5_cutover", "event": "failed", "severity": "critical",
           "summary": "phase5_cutover failed", "details": {"error": "..."}, "time": "2026-12-03T20:01:02+00:00"}
payload:
  description: The JSON body posted to each webhook.
  returned: always
  type: dict
alerts:
  description: The body posted to each Alertmanager (a list of one alert).
  returned: always
  type: list
  elements: dict
delivered:
  description: The targets that took the event - C(kind), C(name), HTTP C(status), C(attempts).
  returned: always
  type: list
  elements: dict
undelivered:
  description: The targets that did not - C(kind), C(name), C(error) (what happened and the fix), C(attempts).
  returned: always
  type: list
  elements: dict
would_deliver:
  description: In check mode, the names of the targets that would be told; empty otherwise.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.notify.events import EVENTS, notify

TARGET = dict(
    name=dict(type="str", required=True),
    url=dict(type="str", required=True, no_log=True),
    headers=dict(type="dict", no_log=True),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            migration=dict(type="str", default="zerodowntime"),
            phase=dict(type="str", required=True),
            event=dict(type="str", required=True, choices=list(EVENTS)),
            summary=dict(type="str"),
            details=dict(type="dict"),
            webhooks=dict(type="list", elements="dict", default=[], options=TARGET),
            alertmanagers=dict(type="list", elements="dict", default=[], options=TARGET),
            alert_labels=dict(type="dict"),
            alert_duration=dict(type="int", default=3600),
            timeout=dict(type="float", default=10),
            validate_certs=dict(type="bool", default=True),
            fail_on_error=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda opened: notify(module.params, module.check_mode))


if __name__ == "__main__":
    main()
