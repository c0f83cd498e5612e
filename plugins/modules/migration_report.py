#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_report
short_description: The final migration report with charts - phase timeline, commit latency through the cutover, replication lag
description:
  - Draws the charts a person would rather look at than read, as PNG files in O(dest), and writes an HTML page
    (C(<name>.html)) that shows them with the phases' table, the write pause and O(summary) - next to the
    C(migration_report.json) and C(.md) that C(playbooks/phase6_verify.yml) writes.
  - C(<name>_timeline.png) - the phases as bars on a UTC clock, coloured by status, with their durations and
    the write pause marked.
  - C(<name>_latency.png) - the workload's commit latency per second (slowest and 99th percentile) above its
    transactions per second, the write pause shaded and labelled; when the run is long, a close-up of the
    seconds around the pause beside it.
  - C(<name>_lag.png) - replication lag over time, one line per slot, over bands that name the phases.
  - A chart without data is not drawn; the page says why (no samples given, every lag read failed, no phase
    started), and a file of that chart left by an earlier run is removed.
  - Runs where its files are (the controller, for C(playbooks/phase6_verify.yml)). The charts are drawn in
    memory first and compared with the files there; only files whose content differs are written, so a second
    run with the same inputs reports no change. The images carry no creation time or software tag.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
requirements:
  - matplotlib (on the host the module runs on)
options:
  dest:
    description: The report directory; created (mode 0755) when missing.
    type: path
    required: true
  name:
    description: Base name of the files - C(<name>.html), C(<name>_timeline.png), C(<name>_latency.png), C(<name>_lag.png).
    type: str
    default: migration_report
  title:
    description: The page's heading.
    type: str
    default: Migration report - blue to green
  phases:
    description:
      - The phase rows in order, as C(zerodowntime.migration.migration_state) returns them (C(phases)) - each
        with C(phase) (or C(name)), C(status), C(started_at), C(completed_at) (UTC epoch seconds or ISO 8601;
        null when not there) and optionally C(attempts).
    type: list
    elements: dict
    default: []
  latency_file:
    description:
      - A JSON-lines file of commit latency per second, as C(playbooks/files/workload.py run --latency-file) writes
        it - one line a second, C({"t", "count", "errors", "max_ms", "p99_ms", "p50_ms"}).
      - Mutually exclusive with O(latency_samples).
    type: path
  latency_samples:
    description: The same samples given inline, a dict each.
    type: list
    elements: dict
  lag_file:
    description:
      - A JSON-lines file of replication lag samples, as C(playbooks/files/workload.py run --lag-file) writes it -
        C({"t", "server", "slot", "lag_bytes"}) a line; a line with C(error) is a failed read, counted in
        RV(charts) and not drawn.
      - Mutually exclusive with O(lag_samples).
    type: path
  lag_samples:
    description: The same samples given inline, a dict each.
    type: list
    elements: dict
  pause:
    description:
      - The cutover's write pause - C(started_at) (UTC epoch seconds or ISO 8601; C(zerodowntime.migration.pg_switchover)
        returns it as C(write_pause_started_at)) and either C(ended_at) or C(ms) (its C(write_pause_ms)).
      - Marked on every chart. Left out, nothing is marked.
    type: dict
  summary:
    description: Figures shown in a table on the page, for example phase 6's checks.
    type: dict
  embed_images:
    description:
      - Put the charts into the page as base64 data, so the HTML file alone shows them (to attach it to a ticket).
        With V(false) the page refers to the PNG files beside it.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Draws the charts in memory and writes nothing; RV(written) and RV(removed) list what a run would write and remove.
  diff_mode:
    support: full
    description: Shows the HTML page before and after.
notes:
  - The latency samples are what the application's clients felt, the lag samples what the slots showed; the lab's
    demo gets both from its write workload (C(--latency-file), C(--lag-file)). The pause is the module's measure of
    it (C(PAUSE) to C(RESUME)); a client's slowest commit at the cutover is that plus the wait for its transaction.
"""

EXAMPLES = r"""
- name: Write the final migration report with charts
  zerodowntime.migration.migration_report:
    dest: "{{ migration_report_dir }}"
    phases: "{{ migration_phase_record.phases }}"
    latency_file: /var/tmp/zerodowntime/workload-latency.jsonl
    lag_file: /var/tmp/zerodowntime/workload-lag.jsonl
    pause:
      started_at: "{{ migration_switchover_result.write_pause_started_at }}"
      ms: "{{ migration_switchover_result.write_pause_ms }}"
    summary:
      rows_compared: "{{ phase6_compare.rows_compared }}"

- name: One HTML file with the charts inside, for the change ticket
  zerodowntime.migration.migration_report:
    dest: /var/tmp/zerodowntime/ticket
    phases: "{{ migration_phase_record.phases }}"
    embed_images: true
"""

RETURN = r"""
html:
  description: Path of the HTML page.
  returned: always
  type: str
  sample: /var/tmp/zerodowntime/reports/migration_report.html
charts:
  description:
    - One entry per chart (C(timeline), C(latency), C(lag)) - C(drawn), its C(path) (null when not drawn),
      C(samples) drawn, or C(reason) when not drawn; the lag chart also counts C(failed_reads).
  returned: always
  type: list
  elements: dict
  sample:
    - {"chart": "latency", "drawn": true, "samples": 412, "path": /var/tmp/zerodowntime/reports/migration_report_latency.png}
    - {"chart": "lag", "drawn": false, "reason": "no replication lag samples were given (the workload's --lag-file)", "path": null}
written:
  description: The files written because their content differed (in check mode, those that would be).
  returned: always
  type: list
  elements: str
removed:
  description: Charts of an earlier run removed because their data is absent now (in check mode, those that would be).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.report.build import build_report
from ansible_collections.zerodowntime.migration.plugins.module_utils.report.charts import MATPLOTLIB


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            name=dict(type="str", default="migration_report"),
            title=dict(type="str", default="Migration report - blue to green"),
            phases=dict(type="list", elements="dict", default=[]),
            latency_file=dict(type="path"),
            latency_samples=dict(type="list", elements="dict"),
            lag_file=dict(type="path"),
            lag_samples=dict(type="list", elements="dict"),
            pause=dict(type="dict"),
            summary=dict(type="dict"),
            embed_images=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("latency_file", "latency_samples"), ("lag_file", "lag_samples")],
        supports_check_mode=True,
    )
    run_module(module, lambda opened: build_report(module.params, module.check_mode), libraries=(MATPLOTLIB,))


if __name__ == "__main__":
    main()
