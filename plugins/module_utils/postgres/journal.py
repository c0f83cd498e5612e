# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchover's journal: one JSON file per pool on the PgBouncer host, shared by the module,
its guardian and the next run.

What it records (never a secret): the run, its state, the facts every undo needs (where each
pool pointed, the freeze values found before), the steps begun, the deadline, and who undid
what and why. States:

  preparing -> pausing -> committing -> committed
                     \\-> undoing -> undone

A step is recorded *before* it runs (write-ahead), so an undo never misses one; every undo is
idempotent, so undoing a step that never ran is harmless. `committing` is written durably before
the first RESUME on the target: from then on clients may write there, so a dead run is finished
(every pool resumed on the target), never undone.

A lock file beside the journal keeps two switchovers of one pool apart. The module opens it and
hands the same open file to its guardian, so the lock is held as long as either lives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time

DEFAULT_DIRECTORY = "/var/lib/zerodowntime/switchover"
FINAL_STATES = ("committed", "undone")


class JournalError(Exception):
    pass


class Journal:
    def __init__(self, directory: str, name: str):
        self.directory = directory
        self.name = name
        self.path = os.path.join(directory, f"{name}.json")
        self.lock_path = os.path.join(directory, f"{name}.lock")
        self.log_path = os.path.join(directory, f"{name}.guardian.log")
        self.lock_fd: int | None = None

    # --- the run lock ------------------------------------------------------------------------
    def acquire(self) -> int:
        """Take the pool's run lock (without waiting); returns its file descriptor."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(
                f"cannot open the switchover lock {self.lock_path}: {exc.strerror}. Make journal_dir a directory "
                f"the module's user can write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            record = self.read() or {}
            raise JournalError(
                f"another switchover of pool '{self.name}' is running, or its guardian is still finishing one "
                f"(journal {self.path}: state {record.get('state', '?')}, module pid {record.get('pid', '?')}, "
                f"guardian pid {record.get('guardian_pid', '?')}). Wait for it to end - the guardian always exits "
                f"within the switchover's timeout plus its margin - then run again"
            ) from None
        self.lock_fd = fd
        return fd

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    # --- the record -----------------------------------------------------------------------------
    def read(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise JournalError(f"the switchover journal {self.path} cannot be read ({exc}): move it aside and run again") from None

    def write(self, record: dict, durable: bool = False) -> None:
        """Replace the record atomically (a reader sees the old or the new one, never a mix).
        `durable` also flushes it to disk: for what must survive the host's crash."""
        record["updated_at"] = time.time()
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, sort_keys=True, default=str)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    @contextlib.contextmanager
    def exclusive(self):
        """Read-modify-write the record with no other process changing it meanwhile (module and
        guardian decide who undoes under this lock)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(f"{self.path}.mutex", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, durable: bool = False, **changes) -> dict:
        with self.exclusive():
            record = self.read() or {}
            record.update(changes)
            self.write(record, durable)
            return record

    def transition(self, allowed_from: tuple, durable: bool = False, **changes) -> tuple[bool, dict]:
        """Set `changes` only if the state is one of `allowed_from`; returns (done, record)."""
        with self.exclusive():
            record = self.read() or {}
            if record.get("state") not in allowed_from:
                return False, record
            record.update(changes)
            self.write(record, durable)
            return True, record

    def event(self, what: str, **fields) -> None:
        """Append a line to the record's history (who did what, when)."""
        with self.exclusive():
            record = self.read() or {}
            record.setdefault("events", []).append(dict(fields, at=time.time(), what=what))
            self.write(record)


def pending(record: dict | None) -> bool:
    """Whether a record is a run that neither committed nor was undone."""
    return bool(record) and record.get("state") not in FINAL_STATES
