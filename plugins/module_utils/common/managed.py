# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An object managed by a module (a table, a slot, a queue ...): exists / attrs / create / update / drop.

Subclasses say how to read and change one kind of object. `ensure` does the rest once for all
of them: compares what is there with what was asked, decides changed, builds the diff, and
relies on the Client for check mode (changing statements are recorded, not run).
"""

from __future__ import annotations


class ManagedObject:
    """One named object. `desired` maps attribute names to wanted values; None means "any"."""

    kind = "object"

    def __init__(self, client, name: str):
        self.client = client
        self.name = name

    # What a subclass provides -------------------------------------------------------------
    def exists(self) -> bool:
        raise NotImplementedError

    def attrs(self) -> dict:
        """The object's current attributes, comparable with `desired` (only when it exists)."""
        raise NotImplementedError

    def create(self, desired: dict) -> None:
        raise NotImplementedError

    def update(self, current: dict, changes: dict) -> None:
        """Apply `changes` (only the attributes that differ) to the existing object."""
        raise NotImplementedError

    def drop(self, current: dict) -> None:
        raise NotImplementedError

    # Shared behaviour ---------------------------------------------------------------------
    def differences(self, current: dict, desired: dict) -> dict:
        """The attributes to change; override to normalise values before comparing."""
        return {key: value for key, value in desired.items() if value is not None and current.get(key) != value}

    def ensure(self, state: str, desired: dict | None = None) -> dict:
        """Bring the object to `state` ('present' or 'absent'); return changed, diff, queries."""
        desired = desired or {}
        before = self.attrs() if self.exists() else None
        if state == "present":
            if before is None:
                self.create(desired)
                after = self.projected({}, desired)
            else:
                changes = self.differences(before, desired)
                if changes:
                    self.update(before, changes)
                after = self.projected(before, changes)
        elif state == "absent":
            if before is not None:
                self.drop(before)
            after = None
        else:
            raise ValueError(f"unknown state {state!r}")
        if after is not None and not self.client.check_mode and after != before:
            after = self.attrs()  # report what the server now says, not what we meant
        return {
            "changed": before != after,
            "state": "absent" if after is None else "present",
            self.kind: self.diff_view(after),
            "diff": {"before": self.diff_view(before), "after": self.diff_view(after)},
            "queries": list(self.client.queries),
        }

    @staticmethod
    def projected(current: dict, changes: dict) -> dict:
        merged = dict(current)
        merged.update({key: value for key, value in changes.items() if value is not None})
        return merged

    def diff_view(self, attributes: dict | None) -> dict:
        """The attributes as diff mode and the result show them; override to hide secrets."""
        return dict(attributes) if attributes is not None else {}
