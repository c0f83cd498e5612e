# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switchover's guardian: a process that ends the write pause when the module cannot.

SIGTERM (AWX cancelling a job), SIGHUP (the SSH connection dropped) and SIGKILL kill a module at
once, without `finally` - and a PgBouncer PAUSE, a repointed pool or an ALTER SYSTEM freeze do
not end by themselves. So before the first PAUSE the module starts this guardian:

* in its own session and process group (`start_new_session`), ignoring SIGHUP and SIGINT, so
  nothing aimed at the module, its process group or ansible-playbook's reaches it;
* with the connection options (secrets included) sent through its stdin, never on a command
  line or in a file; it imports everything it needs and answers `armed` before the pause starts
  (the module's files are deleted when the module ends);
* holding the same open lock file as the module (the journal's run lock), so no other
  switchover of the pool starts while it lives.

It then waits on its stdin. The module writes `done` when the run committed or was undone. End
of file without `done` means the module's process is gone: the guardian acts at once. When the
pause passes its deadline plus `margin` (plus UNDO_BUDGET while the module undoes by itself)
it acts too. Acting means: with the journal's lock held, a run that reached `committing` is
finished (every pool resumed on the target: clients may already write there), any other is
undone from the journal (newest step first). Every action is logged to the journal and to
`<journal_dir>/<pool>.guardian.log`. It always exits: after `done`, after acting, or at its own
hard limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.journal import FINAL_STATES, Journal

BOOTSTRAP = (
    "import json, sys; sys.path[:0] = json.loads(sys.stdin.readline()); "
    "from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.guardian import main; main()"
)
ARM_TIMEOUT = 15.0  # seconds the module waits for the guardian to answer `armed`
UNDO_BUDGET = 20.0  # how long the module's own undo may take before the guardian steps in
POLL = 0.2  # how often the guardian re-reads the journal (the deadline is set when the pause starts)


class GuardianError(PgError):
    pass


class Guardian:
    """The module's handle on its guardian."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.pid = process.pid

    def finish(self, wait: float = 5.0) -> None:
        """Tell the guardian the run ended (committed or undone), then reap it."""
        try:
            self.process.stdin.write(b"done\n")
            self.process.stdin.close()
        except OSError:  # the guardian is gone already (killed alone): nothing to tell
            pass
        # Not gone in time: it exits by itself at its hard limit; the lock keeps the next run out until then.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=wait)


def spawn(journal: Journal, config: dict) -> Guardian:
    """Start the guardian and wait until it is armed. `config` carries the connection options
    (with their passwords): it goes through the pipe only."""
    log = os.open(journal.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd="/",
            close_fds=True,
            pass_fds=(journal.lock_fd,),
            start_new_session=True,
        )
    finally:
        os.close(log)
    payload = json.dumps(sys.path) + "\n" + json.dumps(dict(config, lock_fd=journal.lock_fd)) + "\n"
    try:
        process.stdin.write(payload.encode("utf-8"))
        process.stdin.flush()
        ready = select.select([process.stdout], [], [], ARM_TIMEOUT)[0]
        answer = process.stdout.readline().strip() if ready else b""
    except OSError:
        answer = b""
    if answer != b"armed":
        process.kill()
        process.wait()
        raise GuardianError(
            f"the switchover's guardian did not start within {ARM_TIMEOUT:g} s (answered {answer!r}); see "
            f"{journal.log_path}. Nothing was paused"
        )
    process.stdout.close()
    return Guardian(process)


# --- the guardian process ----------------------------------------------------------------------
def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} guardian[{os.getpid()}] {message}\n")
    sys.stderr.flush()


def main() -> None:
    for signum in (signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    config = json.loads(sys.stdin.readline())
    # Import now: the module's files (a zip in its temporary directory) vanish when it ends.
    from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import switchover as pg_switchover

    journal = Journal(config["journal_dir"], config["name"])
    started = time.time()
    log(f"armed for run {config['run_id']} of pool '{config['name']}' (module pid {os.getppid()})")
    os.write(1, b"armed\n")
    os.close(1)
    reason = watch(journal, config, started)
    if reason:
        act(pg_switchover, journal, config, reason)
    log("exits")


def watch(journal: Journal, config: dict, started: float) -> str | None:
    """Wait for `done`, the end of the module or the deadline. Returns why to act, or None."""
    timeout, margin = float(config["timeout"]), float(config["margin"])
    hard_limit = started + timeout + margin + UNDO_BUDGET + 60
    while True:  # not a poll(): the limit moves with the journal (wall clock, another process) and stdin is watched
        record = journal.read() or {}
        if record.get("run_id") != config["run_id"] or record.get("state") in FINAL_STATES:
            return None
        deadline = float(record.get("deadline_at") or started + timeout)
        limit = deadline + margin + (UNDO_BUDGET if record.get("state") == "undoing" else 0)
        now = time.time()
        if now >= limit or now >= hard_limit:
            return (
                f"the switchover passed its deadline ({timeout:g} s timeout + {margin:g} s margin) in state "
                f"{record.get('state')} without committing"
            )
        readable = select.select([0], [], [], min(POLL, limit - now))[0]
        if readable:
            data = os.read(0, 64)
            if not data:
                return f"the module's process ended (killed, or its connection dropped) in state {record.get('state')}"
            if b"done" in data:
                return None


def act(pg_switchover, journal: Journal, config: dict, reason: str) -> None:
    log(f"acts: {reason}")
    try:
        outcome = pg_switchover.take_over(journal, config["params"], config["run_id"], reason)
    except Exception as exc:  # the journal says so; the next run repairs what is left
        log(f"could not finish: {exc!r}")
        journal.event("guardian failed", by="guardian", error=str(exc))
        return
    log(f"done: {json.dumps(outcome, default=str)}")
