# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A replication slot (logical or physical) as a ManagedObject, with its health figures.

A slot's identity (type, output plugin, database) cannot be changed in place: a same-named slot
that differs is an error naming the difference, never a silent drop and re-create, because a
slot holds the position its consumer resumes from. Dropping an active slot needs `force`, which
terminates the walsender that holds it first.
"""

from __future__ import annotations

import re

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, sql

# ReplicationSlotValidateName() in PostgreSQL: lower-case letters, digits and underscores, and
# shorter than NAMEDATALEN (64).
SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
IDENTITY = ("slot_type", "plugin", "database")
# How long `force` waits for a terminated walsender to release its slot.
RELEASE_TIMEOUT = 10.0


def validate_slot_name(name) -> str:
    """Return `name` if PostgreSQL accepts it as a slot name; raise PgError saying why not."""
    if not isinstance(name, str) or not SLOT_NAME.fullmatch(name):
        raise PgError(
            f"invalid replication slot name {name!r}: PostgreSQL allows only lower-case letters, "
            f"digits and underscores ([a-z0-9_]), 1 to 63 characters: choose a name like 'green_sub'"
        )
    return name


def slot_desired(params: dict) -> dict:
    """The identity the module asks for, from its parameters; raises PgError on combinations
    that make no sense for the slot type."""
    slot_type = params.get("slot_type") or "logical"
    if slot_type == "physical":
        if params.get("plugin"):
            raise PgError("plugin applies to logical slots only: drop 'plugin' or use slot_type: logical")
        return {"slot_type": "physical", "plugin": None, "database": None}
    if params.get("immediately_reserve"):
        raise PgError(
            "immediately_reserve applies to physical slots only (a logical slot always reserves WAL): drop it or use slot_type: physical"
        )
    return {"slot_type": "logical", "plugin": params.get("plugin") or "pgoutput", "database": params.get("login_db")}


class ReplicationSlot(ManagedObject):
    kind = "slot"

    def __init__(self, client, name: str, force: bool = False, immediately_reserve: bool = False):
        super().__init__(client, validate_slot_name(name))
        self.force = force
        self.immediately_reserve = immediately_reserve

    def exists(self) -> bool:
        return self.attrs() is not None

    def attrs(self) -> dict | None:
        """Identity plus health; `retained_wal_bytes` is the WAL kept back for this slot."""
        return self.client.query_one(
            "SELECT s.slot_type, s.plugin, s.database, s.active, s.active_pid, "
            "s.restart_lsn::text AS restart_lsn, s.confirmed_flush_lsn::text AS confirmed_flush_lsn, s.wal_status, "
            "pg_catalog.pg_wal_lsn_diff(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() "
            "ELSE pg_catalog.pg_current_wal_lsn() END, s.restart_lsn)::bigint AS retained_wal_bytes "
            "FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = %s",
            (self.name,),
        )

    def differences(self, current: dict, desired: dict) -> dict:
        """A slot cannot be altered: any difference in its identity is an error with the fix."""
        wanted = {key: desired.get(key) for key in IDENTITY}
        if wanted["slot_type"] == "physical":
            wanted = {"slot_type": "physical"}
        found = [f"{key} is {current.get(key)!r}, not {value!r}" for key, value in wanted.items() if current.get(key) != value]
        if found:
            raise PgError(
                f"replication slot '{self.name}' already exists on {self.client.endpoint} but {'; '.join(found)}: "
                f"a slot cannot be changed in place: drop it (state: absent) if nothing consumes it, or choose another name"
            )
        return {}

    def create(self, desired: dict) -> None:
        name = sql.Literal(self.name)
        if desired["slot_type"] == "logical":
            self.client.require_logical_wal()
            plugin = desired["plugin"]
            self.client.execute(
                "SELECT pg_catalog.pg_create_logical_replication_slot(%s, %s)",
                (self.name, plugin),
                audit=self.client.render(
                    sql.SQL("SELECT pg_catalog.pg_create_logical_replication_slot({}, {})").format(name, sql.Literal(plugin))
                ),
            )
        else:
            reserve = bool(self.immediately_reserve)
            self.client.execute(
                "SELECT pg_catalog.pg_create_physical_replication_slot(%s, %s)",
                (self.name, reserve),
                audit=self.client.render(
                    sql.SQL("SELECT pg_catalog.pg_create_physical_replication_slot({}, {})").format(name, sql.Literal(reserve))
                ),
            )

    def update(self, current: dict, changes: dict) -> None:  # differences() never returns any
        raise PgError(f"replication slot '{self.name}' cannot be altered")

    def drop(self, current: dict) -> None:
        if current.get("active"):
            pid = current.get("active_pid")
            if not self.force:
                raise PgError(
                    f"replication slot '{self.name}' on {self.client.endpoint} is active (used by walsender pid {pid}): "
                    f"stop its consumer first (e.g. ALTER SUBSCRIPTION ... DISABLE on the subscriber), "
                    f"or set force: true to terminate pid {pid} and drop the slot"
                )
            self.client.execute(
                "SELECT pg_catalog.pg_terminate_backend(%s)",
                (pid,),
                audit=f"SELECT pg_catalog.pg_terminate_backend({int(pid)})",
            )
            if not self.client.check_mode:
                self.wait_until_released(pid)
        self.client.execute(
            "SELECT pg_catalog.pg_drop_replication_slot(%s)",
            (self.name,),
            audit=self.client.render(sql.SQL("SELECT pg_catalog.pg_drop_replication_slot({})").format(sql.Literal(self.name))),
        )

    def wait_until_released(self, pid, timeout: float = RELEASE_TIMEOUT) -> None:
        def still_active(row):
            raise PgError(
                f"replication slot '{self.name}' on {self.client.endpoint} is still active {timeout:g} s after "
                f"terminating walsender pid {pid} (now pid {row['active_pid']}): its consumer reconnects; "
                f"stop the consumer (e.g. disable the subscription) and retry"
            )

        poll(self.attrs, Deadline(timeout), still_active, ready=lambda row: row is None or not row["active"], interval=0.1)

    def diff_view(self, attributes: dict | None) -> dict:
        """Only the identity: health figures move on their own and are not a change."""
        if attributes is None:
            return {}
        return {key: attributes.get(key) for key in IDENTITY}


def ensure_slot(client, params: dict) -> dict:
    """What the pg_replication_slot module does, given its parameters."""
    slot = ReplicationSlot(client, params["name"], force=params.get("force"), immediately_reserve=params.get("immediately_reserve"))
    desired = slot_desired(params) if params.get("state", "present") == "present" else {}
    if desired.get("database") is not None:
        desired["database"] = client.query_one("SELECT pg_catalog.current_database() AS db")["db"]
    result = slot.ensure(params.get("state", "present"), desired)
    if result["state"] == "present":
        # The health figures, also when nothing changed (diff_view keeps only the identity).
        # In check mode a slot that would be created does not exist yet: show its identity.
        current = slot.attrs()
        result[slot.kind] = current if current is not None else dict(result["diff"]["after"])
    return result
