# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RabbitMQ management API options."""

from __future__ import annotations


class ModuleDocFragment:
    # Matches API_ARGUMENT_SPEC in plugins/module_utils/rabbitmq/api.py.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the management API.
    type: str
    default: 127.0.0.1
  login_port:
    description:
      - Port of the management API.
    type: int
    default: 15672
  login_protocol:
    description:
      - V(https) when the management listener has TLS.
    type: str
    choices: [http, https]
    default: http
  login_user:
    description:
      - User of the management API (tag C(administrator), or C(management) with configure permission on the vhost).
    type: str
    default: guest
  login_password:
    description:
      - Password of O(login_user). Never logged, returned or shown in messages.
    type: str
    required: true
  path_prefix:
    description:
      - The management API's C(management.path_prefix), when it is served under a prefix (e.g. C(/rabbitmq)).
      - Plain path segments only - no V(.) or V(..) segment, C(?), C(#), C(%), backslash or space (an error otherwise).
    type: str
    default: ""
  validate_certs:
    description:
      - Verify the server's TLS certificate (O(login_protocol=https)).
    type: bool
    default: true
  ca_path:
    description:
      - CA certificate file to verify the server's certificate with.
    type: path
  timeout:
    description:
      - Seconds to wait for each answer of the API.
    type: float
    default: 10.0
"""
