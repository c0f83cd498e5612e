# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error base class of the collection.

Every engine's error (PgError, EtcdError, RabbitMQError, RedisModuleError ...) derives from
ModuleError: a message meant for the person running the playbook - what is wrong and what to
do - plus `details`, figures the module returns with the failure (per-table states, the step
that failed, the lag when a wait gave up).
"""

from __future__ import annotations


class ModuleError(Exception):
    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details
