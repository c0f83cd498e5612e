#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rabbitmq_queue
short_description: Declare or delete a RabbitMQ queue through the management API, comparing every argument
description:
  - Declares a queue with C(PUT /api/queues/{vhost}/{name}) on RabbitMQ's management HTTP API
    (plugin C(rabbitmq_management)), or deletes it.
  - Reads the existing queue first (C(GET /api/queues/{vhost}/{name})) and compares C(durable),
    C(auto_delete) and B(every) argument, C(x-queue-type) included (an existing queue's type is
    taken from the API's C(type) field when it was declared without the argument). Identical -
    nothing is sent, C(changed=false). Different - RabbitMQ cannot change a declared queue, so the
    module fails naming each differing argument with what the queue has and what the task wants,
    and changes nothing.
  - With O(recreate=true) a differing queue is deleted and declared again, only while it is empty -
    it refuses (naming the message count) when the queue holds messages, and the delete is sent with
    C(if-empty=true) so a message arriving in the meantime makes RabbitMQ refuse it too. No message
    is ever dropped by this module.
  - O(state=absent) deletes the queue only when it is empty, for the same reason.
  - Queue names containing C(/) are refused with an error - the name travels in the URL path, where
    an encoded slash is decoded by many proxies and path prefixes in front of the API. Names starting
    with C(amq.) (reserved) and names over 255 bytes are refused too.
  - Queue and vhost names V(.) and V(..) are refused with an error - dots are not encoded in a URL, and
    the API resolves them as dot segments (C(/api/queues/%2F/..) is the list of all queues).
  - Every answer is checked to be the queue (or vhost) asked for - a dict with its name and vhost;
    anything else (a list, another queue, a proxy's page) is an error and nothing is changed.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
extends_documentation_fragment:
  - zerodowntime.migration.rabbitmq
options:
  name:
    description:
      - The queue's name (no C(/), not V(.) or V(..), not starting with C(amq.), at most 255 bytes).
    type: str
    required: true
  vhost:
    description:
      - The virtual host; it must exist (the module fails naming it otherwise). V(.) and V(..) are refused.
    type: str
    default: /
  state:
    description:
      - V(present) - the queue exists as declared; V(absent) - it does not exist (deleted only when empty).
    type: str
    choices: [present, absent]
    default: present
  durable:
    description:
      - Whether the queue survives a broker restart. Quorum and stream queues must be durable.
    type: bool
    default: true
  auto_delete:
    description:
      - Whether the queue is deleted when its last consumer unsubscribes.
    type: bool
    default: false
  type:
    description:
      - The queue type, declared as argument C(x-queue-type) and compared like every other argument.
    type: str
    choices: [classic, quorum, stream]
    default: classic
  message_ttl:
    description:
      - Argument C(x-message-ttl), milliseconds a message may stay in the queue.
    type: int
  max_priority:
    description:
      - Argument C(x-max-priority) (classic queues), the highest message priority the queue supports.
    type: int
  dead_letter_exchange:
    description:
      - Argument C(x-dead-letter-exchange). V("") is the default exchange, which routes by queue name.
    type: str
  dead_letter_routing_key:
    description:
      - Argument C(x-dead-letter-routing-key); with the default exchange, the dead-letter queue's name.
    type: str
  max_length:
    description:
      - Argument C(x-max-length), the most messages the queue holds.
    type: int
  arguments:
    description:
      - Further arguments, merged with those of the typed options above. The same key given here and by a
        typed option with another value is an error.
    type: dict
    default: {}
  recreate:
    description:
      - When the queue exists with another declaration, delete it and declare it again - only while it is
        empty. Without it such a queue is an error.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads the queue and reports what would change; sends no PUT or DELETE.
  diff_mode:
    support: full
    description: Shows durable, auto_delete and the arguments before and after.
requirements:
  - The C(rabbitmq_management) plugin enabled on the broker.
"""

EXAMPLES = r"""
- name: Dead-letter queue of vcenter_sync
  zerodowntime.migration.rabbitmq_queue:
    name: vcenter_sync_dlq
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"

- name: vcenter_sync - priorities up to 10, 1 h TTL, expired messages to vcenter_sync_dlq
  zerodowntime.migration.rabbitmq_queue:
    name: vcenter_sync
    max_priority: 10
    message_ttl: 3600000
    dead_letter_exchange: ""
    dead_letter_routing_key: vcenter_sync_dlq
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"

- name: Make jobs a quorum queue (it was classic) - only while it is empty
  zerodowntime.migration.rabbitmq_queue:
    name: jobs
    vhost: app
    type: quorum
    recreate: true
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
"""

RETURN = r"""
name:
  description: The queue.
  returned: always
  type: str
  sample: vcenter_sync
vhost:
  description: Its virtual host.
  returned: always
  type: str
  sample: /
state:
  description: Whether the queue exists afterwards (would exist, in check mode).
  returned: success
  type: str
  sample: present
queue:
  description: The queue's durable, auto_delete and arguments (x-queue-type included) afterwards; empty when absent.
  returned: success
  type: dict
  sample: {"durable": true, "auto_delete": false, "arguments": {"x-queue-type": "classic", "x-max-priority": 10}}
messages:
  description: Messages in the queue as the management API last reported them (its statistics lag a few seconds); null when unknown.
  returned: success
  type: int
differences:
  description: Each differing field or argument of an existing queue with what it has and what the task wants.
  returned: when the declaration differs and recreate is false
  type: dict
  sample: {"x-queue-type": {"have": "classic", "want": "quorum"}}
queries:
  description: The changing API calls made (in check mode, those that would have been made).
  returned: always
  type: list
  elements: str
  sample: ["PUT /api/queues/%2F/vcenter_sync"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.rabbitmq.api import (
    API_ARGUMENT_SPEC,
    ManagementApi,
    ensure_queue,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            API_ARGUMENT_SPEC,
            name=dict(type="str", required=True),
            vhost=dict(type="str", default="/"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            durable=dict(type="bool", default=True),
            auto_delete=dict(type="bool", default=False),
            type=dict(type="str", default="classic", choices=["classic", "quorum", "stream"]),
            message_ttl=dict(type="int"),
            max_priority=dict(type="int"),
            dead_letter_exchange=dict(type="str"),
            dead_letter_routing_key=dict(type="str", no_log=False),
            max_length=dict(type="int"),
            arguments=dict(type="dict", default={}),
            recreate=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    run_module(
        module,
        lambda opened: ensure_queue(opened["api"], params),
        openers={"api": lambda: ManagementApi(params, check_mode=module.check_mode)},
        on_failure=lambda opened, exc: {"name": params["name"], "vhost": params["vhost"]},
    )


if __name__ == "__main__":
    main()
