# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Matches ARGUMENT_SPEC in plugins/module_utils/etcd/client.py and MEMBERS_SPEC in etcd_cluster.py.
    DOCUMENTATION = r"""
options:
  members:
    description:
      - The cluster's members, in order. The first one bootstraps the cluster (alone); the others
        join it one at a time, in this order. Keep the order stable, the first member especially.
      - A member's init script and data dir are used on the host the module runs on - with O(member),
        that member's host; without, the host of every member's init script.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Member name (C(--name)); 1 to 63 letters, digits, C(_), C(.) or C(-).
        type: str
        required: true
      client_url:
        description: The member's client URL (C(--advertise-client-urls)), C(http://) or C(https://) with a port.
        type: str
        required: true
      peer_url:
        description: The member's peer URL (C(--initial-advertise-peer-urls)).
        type: str
        required: true
      service:
        description: Name of the member's init script in C(/etc/init.d). Default C(etcd-<name>) (what roles/cluster_node writes).
        type: str
      data_dir:
        description:
          - The member's data dir. Used to tell a stopped member with state from a new one; a member to be
            added (or bootstrapped) whose data dir already holds state is refused.
        type: path
  cluster_token:
    description:
      - C(--initial-cluster-token) of the cluster. With the first member's peer URL it determines the
        cluster ID, so a member that answers with another cluster ID is recognised as bootstrapped
        separately and refused.
    type: str
    default: zerodowntime-etcd
  ca_cert:
    description: CA certificate to verify the members' client certificates (https client URLs).
    type: path
  client_cert:
    description: Client certificate, for members that require one (C(--client-cert-auth)).
    type: path
  client_key:
    description: Key of O(client_cert).
    type: path
  request_timeout:
    description: Seconds one HTTP request to a member may take; a member slower than that counts as not answering.
    type: float
    default: 5
  timeout:
    description:
      - Seconds the whole run may take (starting members, waiting for them, adds, the leader election).
      - Past it the module fails and says what it waited for.
    type: float
    default: 120
"""
