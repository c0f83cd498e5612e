# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SQLite cutover: the application moved from its SQLite file to the target table_copy filled,
in one bounded operation that completes or leaves the file as it was - and the way back.

state=switched, in order:
1. Leftovers of a dead run first (the marker view below says what it reached): a switch that
   happened is committed, a freeze that did not lead to one is removed.
2. Checks, reading only: the copy complete for this file (table_copy's checkpoints), at most
   `max_backlog` changes left to replay, the next configuration file there and different.
3. freeze: sqlite_readonly's triggers, each refusing writes only until the deadline
   (now + window_timeout): past it the file takes writes again by itself, whatever happened to
   the process that froze it (SIGKILL, a lost host) - the freeze needs no process to end it.
   SIGTERM and SIGHUP undo it at once.
4. replay: table_copy's replay down to 0 changes (the file is frozen, so the backlog ends).
5. validate: the rows of every key changed since the copy's last replay before the freeze (and of
   the last `tail_changes` changes before it) compared on both sides in the comparison engine's
   canonical forms.
6. reverse_capture: the target records its own writes from now on (postgres/change_capture.py),
   so a rollback can bring them back into the file.
7. switch: the next configuration renamed onto the application's (the old one kept as
   `<app_config>.previous`). The application's next write goes to the target.
8. commit: the freeze made permanent (no deadline), so a writer still holding the old
   configuration is refused, and the marker says switched.
Any failure before the switch (the deadline included) removes the freeze: the file is as it was,
and the target's extra replayed rows are harmless (a later run replays again). A failure after the
switch leaves the freeze to lapse at the deadline; the next run commits.

state=rolled_back: the target's writes held (postgres/write_hold.py: triggers that refuse writes
until a deadline, so they too end by themselves), replayed back into the file
(sqlite/reverse.py), the file's freeze removed and the old configuration renamed back, then the
hold removed. A rollback that cannot bring the target's writes back (no reverse capture) refuses
and says how many writes the target took that the file lacks is unknown.

The marker is a view (`zdm_cutover__state`: no application table, nothing to write) holding one
JSON text: status (frozen, switched), deadline, the SHA-256 of the configuration being switched
to, the copy's replay position, the target.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import time
from typing import NoReturn

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.failpoint import hold as failpoint
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.signals import signals_interrupt
from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.run import canonical_for
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.engine import plan_tables
from ansible_collections.zerodowntime.migration.plugins.module_utils.copy.run import (
    COPY_OPTIONS,
    checkpoint_store,
    run_copy,
    target_adapter,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import write_hold
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.change_capture import PgChangeSource, ensure_target_capture
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client, quote_ident, quote_literal
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.compare import SqliteSide
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.readonly import (
    ReadOnly,
    desired_tables,
    desired_triggers,
    tables_of,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.readonly import check_params as check_readonly_params
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.reverse import read_position, replay_back, start_position
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.source import SqliteSource, check_source

MARKER_VIEW = "zdm_cutover__state"
# Kept in reserve at the deadline for the switch and the commit (a rename and one transaction).
SWITCH_RESERVE = 1.0

CUTOVER_OPTIONS = dict(
    {name: COPY_OPTIONS[name] for name in ("change_table", "tables", "key_columns", "target_engine", "target_schema", "phase")},
    **{name: COPY_OPTIONS[name] for name in COPY_OPTIONS if name.startswith("mariadb_")},
    progress_schema=COPY_OPTIONS["progress_schema"],
    progress_table=COPY_OPTIONS["progress_table"],
    state=dict(type="str", default="switched", choices=["switched", "rolled_back"]),
    migration=dict(type="str", required=True),
    app_config=dict(type="path", required=True),
    app_config_next=dict(type="path"),
    window_timeout=dict(type="float", default=30.0),
    max_backlog=dict(type="int", default=10000),
    validate=dict(type="str", default="tail", choices=["tail", "none"]),
    tail_changes=dict(type="int", default=1000),
    reverse_change_table=dict(type="str", default="zdm_reverse_changes"),
)


class CutoverError(ModuleError):
    pass


def utc_text(seconds_from_now: float = 0.0) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds_from_now)  # noqa: UP017 (modules run on 3.9)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def sha256_of(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


# -- the marker ---------------------------------------------------------------------------------
def read_marker(client: Client) -> dict | None:
    if not client.query("SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?", (MARKER_VIEW,)):
        return None
    (text,) = client.query(f"SELECT state FROM {quote_ident(MARKER_VIEW)}")[0]  # noqa: S608 (quoted identifier)
    return json.loads(text)


def write_marker(client: Client, marker: dict | None) -> None:
    client.execute(f"DROP VIEW IF EXISTS {quote_ident(MARKER_VIEW)}")
    if marker is not None:
        client.execute(f"CREATE VIEW {quote_ident(MARKER_VIEW)} AS SELECT {quote_literal(json.dumps(marker, sort_keys=True))} AS state")


# -- the steps ----------------------------------------------------------------------------------
class Cutover:
    def __init__(self, sqlite_client: Client, target_client, params: dict, check_mode: bool, clock=time.monotonic):
        self.sqlite = sqlite_client
        self.target_client = target_client
        self.params = params
        self.check_mode = check_mode
        self.clock = clock
        self.steps: list[dict] = []
        self.warnings: list[str] = []
        self.changed = False
        self.app_config = params["app_config"]
        self.app_config_next = params.get("app_config_next") or self.app_config + ".next"
        self.app_config_previous = self.app_config + ".previous"
        self.source = SqliteSource(sqlite_client, params["change_table"], params.get("key_columns"))
        self.target = target_adapter(target_client, params)
        self.planned: list | None = None

    @contextlib.contextmanager
    def step(self, name: str):
        started = self.clock()
        yield
        self.steps.append({"step": name, "ms": round((self.clock() - started) * 1000, 1)})
        failpoint(f"sqlite_cutover.{name}")  # tests only: sleep after the step that just ended

    def copy_params(self, **changes) -> dict:
        params = {name: spec.get("default") for name, spec in COPY_OPTIONS.items()}
        params.update({name: self.params[name] for name in CUTOVER_OPTIONS if name in COPY_OPTIONS})
        params.update({name: value for name, value in self.params.items() if name.startswith("login_") or name in ("ssl_mode", "ca_cert")})
        params.update(progress_interval=0.0, **changes)
        return params

    def readonly_params(self, until: str | None) -> dict:
        return {
            "state": "present",
            "migration": self.params["migration"],
            "target_description": f"{self.target.kind} {self.target.where}",
            "tables": self.params.get("tables"),
            "change_table": self.params["change_table"],
            "until": until,
        }

    def plans(self) -> list:
        """table_copy's plan of the tables (key, columns, the target's types), made once."""
        if self.planned is None:
            self.planned = plan_tables(self.source, self.target, self.params.get("tables"), {})
        return self.planned

    def reverse_params(self) -> dict:
        return {"target_schema": self.params["target_schema"], "change_table": self.params["reverse_change_table"]}

    def description(self) -> str:
        return f"{self.target.kind} {self.target.where}"

    # -- checks ----------------------------------------------------------------------------------
    def check(self) -> int:
        """The copy complete for this file and the backlog small; returns the replay position."""
        check_readonly_params(self.readonly_params(None))
        for name, low in (("window_timeout", 3 * SWITCH_RESERVE), ("max_backlog", 0), ("tail_changes", 0)):
            if self.params[name] < low:
                raise CutoverError(f"{name}={self.params[name]} is out of range: give {low} or more. Nothing was changed")
        check_source(self.source)
        store = checkpoint_store(self.target_client, self.copy_params())
        store.load()
        tables = desired_tables(self.sqlite, self.readonly_params(None))
        recorded = store.copy.get("tables") or {}
        missing = [table for table in tables if not (recorded.get(table) or {}).get("done")]
        if missing or store.copy.get("replayed_seq") is None:
            raise CutoverError(
                f"the copy of {', '.join(missing) or 'every table'} into {self.description()} is not complete (phase "
                f"{self.params['phase']!r} of {self.params['progress_schema']}.{self.params['progress_table']}): run "
                f"zerodowntime.migration.table_copy until it reports complete first. Nothing was changed"
            )
        replayed = store.copy["replayed_seq"]
        backlog = self.source.backlog(replayed)
        if backlog > self.params["max_backlog"]:
            raise CutoverError(
                f"{backlog} captured changes are not replayed yet (max_backlog={self.params['max_backlog']}): the file would stay "
                f"frozen while they are. Run zerodowntime.migration.table_copy again (replay_until) right before the cutover. "
                f"Nothing was changed"
            )
        if sha256_of(self.app_config_next) is None:
            raise CutoverError(
                f"the next configuration {self.app_config_next} does not exist: template the application's configuration for "
                f"{self.description()} there first (the cutover renames it onto {self.app_config}). Nothing was changed"
            )
        if sha256_of(self.app_config) is None:
            raise CutoverError(f"the application's configuration {self.app_config} does not exist: give app_config. Nothing was changed")
        if sha256_of(self.app_config) == sha256_of(self.app_config_next):
            raise CutoverError(
                f"{self.app_config_next} is the same as {self.app_config}: the application would not move. Template the target's "
                f"configuration there. Nothing was changed"
            )
        return replayed

    # -- leftovers -------------------------------------------------------------------------------
    def refuse_live_freeze(self, marker: dict) -> None:
        """A freeze whose deadline has not passed may belong to a run still going (a relaunched job,
        a second operator): removing it would let writes into the file behind that run's replay."""
        if marker.get("deadline") and utc_text() < marker["deadline"]:
            raise CutoverError(
                f"{self.sqlite.path} is frozen by another cutover run until {marker['deadline']} UTC (its marker view "
                f"{MARKER_VIEW}), which may still be running: run again after that moment. Nothing was changed"
            )

    def repair(self, marker: dict) -> dict | None:
        """A dead run's marker: commit a switch that happened, remove a freeze that led nowhere."""
        self.refuse_live_freeze(marker)
        if sha256_of(self.app_config) == marker.get("next_sha256"):
            self.warnings.append(
                f"an earlier cutover switched {self.app_config} to {marker.get('target')} but did not commit (its process ended): "
                f"committed now"
            )
            self.commit(marker, "an earlier cutover switched the application and ended before it committed")
            return self.result(marker, repaired="committed")
        self.warnings.append(
            f"an earlier cutover froze {self.sqlite.path} (deadline {marker.get('deadline')} UTC) and did not switch: its freeze "
            f"is removed before this run"
        )
        if not self.check_mode:
            self.unfreeze()
        return None

    # -- the operation ---------------------------------------------------------------------------
    def freeze(self, until: str | None, marker: dict, check=None) -> None:
        """The read-only triggers (refusing until `until`; None: for good) and the marker, in one write
        transaction; `check()` runs first inside it and may refuse."""
        toggle = ReadOnly(self.sqlite)
        params = self.readonly_params(until)
        with self.sqlite.immediate():
            if check is not None:
                check()
            wanted = {"triggers": desired_triggers(desired_tables(self.sqlite, params), params), "readonly_since": utc_text()}
            toggle.ensure("present", wanted)
            write_marker(self.sqlite, marker)
        self.changed = True

    def unfreeze(self, marker: dict | None = None) -> None:
        """The freeze removed; the marker replaced by `marker` (None: removed)."""
        toggle = ReadOnly(self.sqlite)
        with self.sqlite.immediate():
            toggle.ensure("absent")
            write_marker(self.sqlite, marker)
        self.changed = True

    def validate_tail(self, since_seq: int, until_seq: int) -> dict:
        """The rows of the keys changed after `since_seq` (and the last tail_changes before it) equal on both sides."""
        by_name = {plan.name: plan for plan in self.plans()}
        first = max(0, since_seq - self.params["tail_changes"])
        keys: dict = {}
        for _seq, table, key, old in self.source.changes(first, until_seq - first + self.params["tail_changes"] + 1):
            if table in by_name:
                for values in (key, old):
                    if values is not None:
                        keys.setdefault(table, {})[tuple(values)] = values
        self.target.prepare_compare()
        differing = []
        checked = 0
        for table, wanted in keys.items():
            plan = by_name[table]
            canonical = canonical_for(plan)
            sqlite_side = SqliteSide(self.sqlite, "source", plan.name, plan.columns, plan.key, canonical)
            target_side = self.target.compare_side("target", plan.name, plan.columns, plan.key, canonical)
            source_digests = canonical.digests(sqlite_side.rows_for_keys(list(wanted)))
            target_digests = canonical.digests(target_side.rows_for_keys(list(wanted)))
            checked += len(wanted)
            for key in sorted(set(source_digests) | set(target_digests), key=repr):
                if source_digests.get(key) != target_digests.get(key):
                    differing.append({"table": table, "key": list(key)})
        if differing:
            raise CutoverError(
                f"{len(differing)} row(s) changed in the last changes differ between {self.sqlite.path} and {self.description()} "
                f"after the final replay (first: {differing[:5]}): the cutover is undone. Compare the tables "
                f"(zerodowntime.migration.table_compare) and copy again before the next cutover",
                differing=differing[:20],
            )
        return {"keys": checked, "tables": sorted(keys)}

    def install_reverse_capture(self) -> dict | None:
        if self.params["target_engine"] != "postgresql":
            self.warnings.append(
                f"no reverse capture on {self.description()}: a rollback can bring back writes from PostgreSQL targets only, so "
                f"a rollback of this cutover will refuse once the target took writes"
            )
            return None
        keys = {plan.name: plan.key for plan in self.plans()}
        schema, change_table = self.params["target_schema"], self.params["reverse_change_table"]
        result = ensure_target_capture(self.target_client, schema, keys, change_table)
        # where a rollback would replay from: the change rows past it are the way back's backlog (pg_cutover_watch's
        # reverse_backlog_after); rows of an earlier cutover already replayed into the file are not
        source = PgChangeSource(self.target_client, schema, change_table)
        result["replayed_seq"] = start_position(read_position(self.sqlite), source.identity(), source.high_seq())
        return result

    def switch_config(self) -> None:
        shutil.copy2(self.app_config, self.app_config_previous)
        os.replace(self.app_config_next, self.app_config)

    def commit(self, marker: dict, what: str = "the switch took longer than the freeze's deadline") -> None:
        """The freeze made permanent - unless writes reached the file after the replay position the switch
        was made at (the freeze lapsed first): those are on no target, and are named instead."""

        def no_lapsed_writes() -> None:
            lapsed = self.source.backlog(marker["replayed_seq"])
            if lapsed:
                raise CutoverError(
                    f"{what}: the freeze lapsed and {lapsed} write(s) reached {self.sqlite.path} afterwards (change rows after "
                    f"{marker['replayed_seq']} in {self.params['change_table']}), which the target lacks; the application now "
                    f"writes to {marker.get('target')}. Compare those rows with the target's and apply what is still wanted there "
                    f"(zerodowntime.migration.table_compare names them), then run again",
                    changed=self.changed,
                    switched=True,
                    lapsed_writes=lapsed,
                )

        self.freeze(None, dict(marker, status="switched", deadline=None, committed_at=utc_text()), check=no_lapsed_writes)

    def result(self, marker: dict | None, **extra) -> dict:
        readonly = ReadOnly(self.sqlite)
        return {
            "changed": self.changed,
            "state": self.params["state"],
            "path": self.sqlite.path,
            "target": self.description(),
            "app_config": self.app_config,
            "marker": marker,
            "readonly_tables": tables_of(readonly.triggers()),
            "steps": self.steps,
            "warnings": self.warnings,
            **extra,
        }

    def undo_before_switch(self, exc: BaseException, frozen_at, marker: dict) -> NoReturn:
        """A failure, a signal or the deadline before the switch: the freeze is removed (the file
        takes writes again) and the error raised says so. frozen_at is None when nothing is to undo."""
        undone = frozen_at is not None
        if undone:
            try:
                self.unfreeze()
            except ModuleError as undo_error:  # the file locked past busy_timeout: the deadline still ends the freeze
                self.warnings.append(f"removing the freeze failed ({undo_error}); it lapses at {marker['deadline']} UTC")
                undone = False
        if isinstance(exc, ModuleError):
            exc.details.update(changed=self.changed, undone=undone, steps=self.steps, warnings=self.warnings)
            raise exc
        if isinstance(exc, Exception):
            state = f"the cutover is undone ({self.sqlite.path} takes writes again)" if undone else "see the warnings"
            if frozen_at is None:
                state = "nothing was changed"
            raise CutoverError(f"{exc}: {state}", undone=undone, steps=self.steps, warnings=self.warnings) from exc
        raise exc

    def switch(self) -> dict:
        marker = read_marker(self.sqlite)
        if marker and marker.get("status") == "switched":
            return self.result(marker, write_window_ms=None)
        if marker and marker.get("status") == "rolling_back":
            raise CutoverError(
                f"a rollback of the cutover of {self.sqlite.path} did not finish (its marker view {MARKER_VIEW} says rolling_back): "
                f"run this module with state=rolled_back to finish it first. Nothing was changed"
            )
        if marker:
            repaired = self.repair(marker)
            if repaired is not None:
                return repaired
        replayed_seq = self.check()
        if self.check_mode:
            planned = ["freeze", "replay", "validate" if self.params["validate"] == "tail" else None, "reverse_capture", "switch", "commit"]
            return self.result(
                marker,
                changed=True,
                planned_steps=[step for step in planned if step],
                backlog=self.source.backlog(replayed_seq),
                diff={
                    "before": {"app_config": self.app_config, "status": None},
                    "after": {"app_config": self.app_config_next, "status": "switched"},
                },
            )
        window_timeout = self.params["window_timeout"]
        marker = {
            "status": "frozen",
            "deadline": utc_text(window_timeout),
            "next_sha256": sha256_of(self.app_config_next),
            "replayed_seq": replayed_seq,
            "target": self.description(),
            "app_config": self.app_config,
        }
        started = self.clock()
        frozen_at = None
        switched_at = None
        replay = validated = reverse = None
        try:
            with signals_interrupt():
                with self.step("freeze"):
                    self.freeze(marker["deadline"], marker)
                    frozen_at = self.clock()  # inside the step: a signal in the step's failpoint hold undoes it too
                deadline_at = started + window_timeout
                with self.step("replay"):
                    replay = run_copy(
                        self.sqlite,
                        self.target_client,
                        self.copy_params(replay_until=0, replay_timeout=max(deadline_at - self.clock() - SWITCH_RESERVE, 0.001)),
                        False,
                    )
                if replay["backlog"]:
                    raise CutoverError(
                        f"{replay['backlog']} change(s) were still not replayed at the deadline (window_timeout={window_timeout}): "
                        f"the cutover is undone. Replay closer to the cutover (table_copy) or give a longer window_timeout"
                    )
                marker["replayed_seq"] = replay["replayed_seq"]
                if self.params["validate"] == "tail":
                    with self.step("validate"):
                        validated = self.validate_tail(replayed_seq, replay["replayed_seq"])
                with self.step("reverse_capture"):
                    reverse = self.install_reverse_capture()
                if self.clock() > deadline_at - SWITCH_RESERVE:
                    raise CutoverError(
                        f"the freeze's deadline (window_timeout={window_timeout} s) would pass before the switch: the cutover is "
                        f"undone and the file takes writes again. Give a longer window_timeout, or replay closer to the cutover"
                    )
                with self.sqlite.immediate():
                    write_marker(self.sqlite, marker)  # the replay position the switch is made at
                with self.step("switch"):
                    self.switch_config()
                    switched_at = self.clock()
        except BaseException as exc:  # a signal (common.signals.Interrupted) too: every way out undoes or completes
            if switched_at is None:
                self.undo_before_switch(exc, frozen_at, marker)
            # the application already uses the target: completing it (the commit, a few ms) is the way out
            self.warnings.append(f"{exc or type(exc).__name__} after the switch: the cutover was completed rather than undone")
        try:
            with self.step("commit"):
                self.commit(marker)
        except ModuleError as exc:
            exc.details.update(changed=True, switched=True, steps=self.steps)
            if exc.details.get("lapsed_writes"):
                raise
            exc.args = (
                f"the application was switched to {self.description()}, but making {self.sqlite.path}'s freeze permanent failed: "
                f"{exc}. The freeze lapses at {marker['deadline']} UTC; run the cutover again to commit it",
            )
            raise
        window_ms = round((switched_at - started) * 1000, 1)
        return self.result(
            read_marker(self.sqlite),
            write_window_ms=window_ms,
            replayed_changes=replay["replayed_changes"],
            replayed_seq=replay["replayed_seq"],
            validated_keys=(validated or {}).get("keys"),
            validated_tables=(validated or {}).get("tables"),
            reverse_capture=reverse,
            diff={
                "before": {"app_config": self.app_config_previous, "status": None},
                "after": {"app_config": self.app_config, "status": "switched"},
            },
        )

    def roll_back(self) -> dict:
        marker = read_marker(self.sqlite)
        if marker is None:
            return self.result(None, rolled_back=False)  # never switched (or rolled back already)
        if marker.get("status") not in ("switched", "rolling_back"):
            self.refuse_live_freeze(marker)
            if sha256_of(self.app_config) == marker.get("next_sha256"):
                # a dead run's switch: committed first (refused if writes reached the file after its freeze lapsed)
                self.commit(marker, "an earlier cutover switched the application and ended before it committed")
                marker = read_marker(self.sqlite)
            else:
                if not self.check_mode:
                    self.unfreeze()
                return self.result(None, rolled_back=True, note="an unfinished cutover's freeze was removed; the application never moved")
        if sha256_of(self.app_config_previous) is None:
            raise CutoverError(
                f"{self.app_config_previous} (the configuration the cutover replaced) is missing: the application cannot be "
                f"pointed back at {self.sqlite.path}. Restore it, then run the rollback again. Nothing was changed"
            )
        if self.params["target_engine"] != "postgresql":
            raise CutoverError(
                f"a rollback from {self.description()} cannot bring the target's writes back into {self.sqlite.path} (no reverse "
                f"capture for this target): every write the application made there since the cutover would be lost. Nothing "
                f"was changed"
            )
        if self.check_mode:
            return self.result(
                marker,
                changed=True,
                planned_steps=["hold_target", "replay_back", "unfreeze", "switch_back", "release_target"],
                pending_changes=replay_back(self.sqlite, self.target_client, self.reverse_params(), 1.0, True)["pending_changes"],
                diff={
                    "before": {"app_config": self.app_config, "status": "switched"},
                    "after": {"app_config": self.app_config_previous, "status": None},
                },
            )
        # The order keeps a way back at every step: the marker stays (rolling_back once the file is
        # writable) until the application's configuration names the file again, and .previous is
        # removed last - a run that ends anywhere in between is run again from the start (the replay
        # back goes on from its recorded position); the application stays on the target meanwhile.
        window = self.params["window_timeout"]
        started = self.clock()
        switched_back = None
        tables = [plan.name for plan in self.plans()]
        message = f"zerodowntime.migration {self.params['migration']}: writes are held while the application moves back"
        with signals_interrupt():
            with self.step("hold_target"):
                write_hold.hold(self.target_client, self.params["target_schema"], tables, utc_text(window), message)
            try:
                with self.step("replay_back"):
                    # within the hold's own deadline (taken before the hold waited for its locks), the reserve kept
                    left = window - (self.clock() - started) - SWITCH_RESERVE
                    if left <= 0:
                        raise CutoverError(self.hold_too_short(window))
                    replayed = replay_back(self.sqlite, self.target_client, self.reverse_params(), left, False)
                if not replayed.get("complete", True) or replayed.get("backlog"):
                    raise CutoverError(
                        f"{replayed.get('backlog')} of the target's changes were still not brought back when the hold's time ran out "
                        f"(window_timeout={window}): the application stays on {self.description()} and {self.sqlite.path} stays "
                        f"frozen. What was brought back is recorded; run the rollback again (it goes on from there), with a longer "
                        f"window_timeout",
                        replayed_back=replayed.get("replayed_changes"),
                    )
                if self.clock() - started > window - SWITCH_RESERVE:
                    raise CutoverError(self.hold_too_short(window))
                with self.step("unfreeze"):
                    self.unfreeze(dict(marker, status="rolling_back"))
                with self.step("switch_back"):
                    staged = self.app_config + ".zdm-rollback"
                    shutil.copy2(self.app_config_previous, staged)
                    os.replace(staged, self.app_config)
                    switched_back = self.clock()
                with self.sqlite.immediate():
                    write_marker(self.sqlite, None)
                os.remove(self.app_config_previous)
            finally:
                with self.step("release_target"):
                    write_hold.release(self.target_client, self.params["target_schema"], tables)
        return self.result(
            None,
            rolled_back=True,
            write_window_ms=round((switched_back - started) * 1000, 1),
            replayed_back=replayed.get("replayed_changes"),
        )

    def hold_too_short(self, window: float) -> str:
        return (
            f"the hold on {self.description()}'s writes (window_timeout={window} s) would pass before the application is "
            f"back on {self.sqlite.path}: nothing is switched back, the hold is released. Run the rollback again with a longer "
            f"window_timeout (what was brought back is recorded)"
        )


def run_cutover(sqlite_client: Client, target_client, params: dict, check_mode: bool) -> dict:
    cutover = Cutover(sqlite_client, target_client, params, check_mode)
    result = cutover.switch() if params["state"] == "switched" else cutover.roll_back()
    result["queries"] = list(sqlite_client.queries) + list(target_client.queries)
    if not result["warnings"]:
        result.pop("warnings")
    return result
