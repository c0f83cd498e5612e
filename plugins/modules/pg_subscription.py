#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_subscription
short_description: Create, change, refresh, drop and wait for a PostgreSQL logical replication subscription
description:
  - Manages a subscription on the subscriber (the database the module connects to) to
    publications on a publisher described by structured parameters.
  - The connection string is built from O(publisher) with every value quoted; its password is
    never returned, logged or shown in a diff (it appears as C(********)).
  - With O(wait_for_sync=true) it waits, at most O(timeout) seconds, until every table of the
    subscription is ready (C(pg_subscription_rel.srsubstate = r)) and, when O(max_lag_bytes) is
    set, the lag is that small; it returns per-table states, tables ready/total, the lag in bytes
    and seconds, and the history of the wait (shown with C(-v)). On timeout it fails naming the
    tables that are not ready.
  - Idempotent; options that PostgreSQL 15 cannot change after creation (O(copy_data),
    O(create_slot), O(connect), O(two_phase)) apply when the subscription is created
    (O(copy_data) also applies to a refresh).
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  name:
    description: Subscription name.
    type: str
    required: true
  state:
    description: C(present) creates or changes the subscription; C(absent) drops it.
    type: str
    choices: [present, absent]
    default: present
  publications:
    description: Publications on the publisher to subscribe to. Required to create.
    type: list
    elements: str
  publisher:
    description:
      - How the subscriber reaches the publisher. Required to create; when given for an existing
        subscription, a different connection string is applied with C(ALTER SUBSCRIPTION ... CONNECTION).
      - The module also connects to the publisher itself, with the same parameters, to check its
        C(wal_level) before creating, to read the lag, and for O(refresh).
    type: dict
  enabled:
    description: Whether the subscription replicates. Unset leaves it as it is (new subscriptions are enabled).
    type: bool
  copy_data:
    description: Copy the existing rows of the published tables when creating, and when O(refresh) adds tables.
    type: bool
  create_slot:
    description: Create the replication slot on the publisher when creating the subscription.
    type: bool
  connect:
    description: Connect to the publisher when creating (false implies no slot and no copy).
    type: bool
  slot_name:
    description: Replication slot on the publisher; default the subscription name. C(none) detaches it.
    type: str
  streaming:
    description: Stream large in-progress transactions instead of spilling them to disk on the publisher.
    type: bool
  binary:
    description: Ask the publisher for the binary format (faster; needs matching types on both sides).
    type: bool
  disable_on_error:
    description: Disable the subscription, instead of retrying, when the apply worker hits an error.
    type: bool
  synchronous_commit:
    description: synchronous_commit of the apply worker.
    type: str
    choices: ["off", local, remote_write, remote_apply, "on"]
  two_phase:
    description: Replicate prepared transactions at PREPARE. Only at creation.
    type: bool
  refresh:
    description:
      - Make the subscription know exactly the tables its publications publish now
        (C(ALTER SUBSCRIPTION ... REFRESH PUBLICATION)), copying new tables unless
        O(copy_data=false). Reports a change only when the sets differed.
    type: bool
    default: false
  drop_slot:
    description:
      - With O(state=absent), also drop the replication slot on the publisher (which must be reachable).
      - C(false) disables the subscription, detaches its slot (C(slot_name = NONE)) and drops it
        without contacting the publisher; the slot then stays on the publisher, retaining WAL,
        until it is dropped there.
    type: bool
    default: true
  wait_for_sync:
    description: Wait until every table is ready (and the lag is at most O(max_lag_bytes) when set).
    type: bool
    default: false
  timeout:
    description:
      - Seconds O(wait_for_sync) waits at most.
      - Also bounds the creation of a subscription with a slot - the publisher creates the slot only once every
        transaction running there with a transaction ID has ended; past the bound the module fails naming them
        and creates nothing.
    type: int
    default: 600
  max_lag_bytes:
    description: With O(wait_for_sync), also wait until the publisher's WAL is at most this many bytes ahead of the slot.
    type: int
  poll_interval:
    description: Seconds between two looks at the progress while waiting.
    type: float
    default: 1.0
extends_documentation_fragment:
  - zerodowntime.migration.postgres
  - zerodowntime.migration.postgres.publisher
  - zerodowntime.migration.progress
attributes:
  check_mode:
    support: full
    description: Reports what would change and the statements, runs none of them, and does not wait.
  diff_mode:
    support: full
    description: Shows the subscription's attributes before and after, with the password masked.
"""

EXAMPLES = r"""
- name: Subscribe green to blue's publication and wait for the initial copy
  zerodowntime.migration.pg_subscription:
    login_host: 127.0.0.12
    login_port: 5432
    name: novacron_blue_to_green
    publications: [novacron_migration]
    publisher:
      host: 127.0.0.11
      port: 5432
      dbname: novacron
      user: replicator
      password: "{{ replication_password }}"
    slot_name: novacron_blue_to_green
    create_slot: false        # the slot was made with pg_replication_slot
    copy_data: true
    wait_for_sync: true
    timeout: 1800
    max_lag_bytes: 1048576

- name: Stop forward replication at cutover
  zerodowntime.migration.pg_subscription:
    login_host: 127.0.0.12
    login_port: 5432
    name: novacron_blue_to_green
    enabled: false

- name: Drop a subscription whose publisher is gone (its slot must then be dropped there)
  zerodowntime.migration.pg_subscription:
    login_host: 127.0.0.12
    login_port: 5432
    name: novacron_blue_to_green
    state: absent
    drop_slot: false
"""

RETURN = r"""
subscription:
  description: The subscription's attributes after the run (conninfo with the password masked); empty when absent.
  returned: always
  type: dict
  sample:
    conninfo: "host=127.0.0.11 port=5432 dbname=novacron user=replicator password=********"
    publications: [novacron_migration]
    enabled: true
    binary: false
    streaming: false
    disable_on_error: false
    synchronous_commit: "off"
    slot_name: novacron_blue_to_green
    two_phase: false
tables:
  description: Each subscribed table with its sync state (i, d, f, s, r) and the state's meaning.
  returned: when the subscription exists, outside check mode
  type: list
  elements: dict
  sample: [{"table_name": "public.vms", "state": "r", "state_name": "ready"}]
tables_ready:
  description: How many tables are ready.
  returned: when the subscription exists, outside check mode
  type: int
tables_total:
  description: How many tables the subscription has.
  returned: when the subscription exists, outside check mode
  type: int
lag_bytes:
  description: Bytes of the publisher's WAL its slot has not confirmed (null when the publisher cannot be read).
  returned: when the subscription exists, outside check mode
  type: int
lag_seconds:
  description: Seconds since the apply worker last reported a position (0 when lag_bytes is 0).
  returned: when the subscription exists, outside check mode
  type: float
history:
  description: The wait's progress, one entry each time the figures changed.
  returned: with wait_for_sync, on success and on timeout
  type: list
  elements: dict
  sample: [{"elapsed": 0.0, "tables_ready": 0, "tables_total": 6, "lag_bytes": 1024}]
waited:
  description: Seconds spent waiting.
  returned: with wait_for_sync
  type: float
queries:
  description: Statements run (or, in check mode, that would run), passwords masked.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, PgError, statement_timeout
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.progress import PROGRESS_SPEC, open_reporter
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.subscription import (
    PUBLISHER_SPEC,
    QUERY_CANCELED,
    Subscription,
    build_conninfo,
    open_publisher,
    slot_creation_held,
)

# What the module compares with the subscription (the create-only options are ignored after creation).
DESIRED_OPTIONS = (
    *("publications", "enabled", "binary", "streaming", "disable_on_error", "synchronous_commit"),
    *("copy_data", "create_slot", "connect", "two_phase"),
)


def manage(client: Client, params: dict, log) -> dict:
    publisher = params["publisher"] or {}
    subscription = Subscription(client, params["name"], publisher, drop_slot=params["drop_slot"])
    if params["state"] == "absent":
        return subscription.ensure("absent")

    desired = {key: params[key] for key in DESIRED_OPTIONS}
    slot_name = params["slot_name"]
    # PostgreSQL takes NONE (a detached slot) in any case; attrs() reads it back as "none".
    desired["slot_name"] = "none" if slot_name and slot_name.lower() == "none" else slot_name
    desired["conninfo"] = build_conninfo(publisher) if publisher else None
    exists = subscription.exists()
    if not exists:
        missing = [name for name in ("publications", "publisher") if not params[name]]
        if missing:
            raise PgError(
                f"subscription '{params['name']}' does not exist on {client.endpoint}: to create it, give {' and '.join(missing)}"
            )
        if params["connect"] is not False:
            with open_publisher(publisher) as publisher_client:
                publisher_client.require_logical_wal()

    creates_slot = not exists and not client.check_mode and params["connect"] is not False and params["create_slot"] is not False
    if creates_slot:
        statement_timeout(client, params["timeout"] * 1000)  # the publisher's slot waits for its running transactions
    try:
        result = subscription.ensure("present", desired)
    except PgError as exc:
        if creates_slot and exc.sqlstate == QUERY_CANCELED:
            raise slot_creation_held(publisher, params["name"], params["timeout"]) from None
        raise
    if creates_slot:
        client.query("RESET statement_timeout")
    if client.check_mode and not exists:
        return result  # nothing to read yet: the subscription was not created

    if params["refresh"]:
        added, removed = subscription.refresh_needed()
        if added or removed:
            subscription.refresh(copy_data=params["copy_data"] is not False)
            result.update(changed=True, queries=list(client.queries), refreshed={"added": added, "removed": removed})

    if params["wait_for_sync"] and not client.check_mode:
        reporter = open_reporter(params["progress"], f"initial copy {params['name']}", client.check_mode, unit="tables")
        try:
            result.update(subscription.wait_for_sync(params["timeout"], params["max_lag_bytes"], params["poll_interval"], log, reporter))
        except PgError as exc:
            exc.details.setdefault("warnings", reporter.warnings)
            raise
        finally:
            reporter.close()
        if reporter.warnings:
            result["warnings"] = list(reporter.warnings)
    elif not client.check_mode:
        result.update(subscription.progress())
    return result


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            publications=dict(type="list", elements="str"),
            publisher=dict(type="dict", options=PUBLISHER_SPEC),
            enabled=dict(type="bool"),
            copy_data=dict(type="bool"),
            create_slot=dict(type="bool"),
            connect=dict(type="bool"),
            slot_name=dict(type="str"),
            streaming=dict(type="bool"),
            binary=dict(type="bool"),
            disable_on_error=dict(type="bool"),
            synchronous_commit=dict(type="str", choices=["off", "local", "remote_write", "remote_apply", "on"]),
            two_phase=dict(type="bool"),
            refresh=dict(type="bool", default=False),
            drop_slot=dict(type="bool", default=True),
            wait_for_sync=dict(type="bool", default=False),
            timeout=dict(type="int", default=600),
            max_lag_bytes=dict(type="int"),
            poll_interval=dict(type="float", default=1.0),
            progress=PROGRESS_SPEC,
        ),
        supports_check_mode=True,
    )
    run(module, lambda client: manage(client, module.params, module.log))


if __name__ == "__main__":
    main()
