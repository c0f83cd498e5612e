# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migration events posted to the people who watch: webhooks and Alertmanager.

An event (a phase started, succeeded, failed, was rolled back; a gate breached) becomes
- for a webhook: one JSON body that Slack-compatible receivers show (`text`, `attachments`) and
  other receivers can read field by field (`event`);
- for Alertmanager: one alert (POST /api/v2/alerts) whose labels say which migration, phase and
  event, with `endsAt` so a success does not stay active for ever.

Delivery is bounded by one deadline for all targets; a target that answers 5xx, 429 or not at
all is tried again until then (common/deadline.poll), any other answer fails at once. A target's URL may carry a token
(Slack's webhooks do): it is never put in a message or a result, the target is named instead.
"""

from __future__ import annotations

import datetime
import json

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError

EVENTS = ("started", "checkpoint", "succeeded", "failed", "rolled_back", "gate_breached")
# Alertmanager routes on severity; the webhook's colour follows it.
SEVERITY = {
    "started": "info",
    "checkpoint": "info",
    "succeeded": "info",
    "failed": "critical",
    "rolled_back": "warning",
    "gate_breached": "critical",
}
COLOUR = {"info": "#2eb886", "warning": "#daa038", "critical": "#a30200"}
ALERT_NAME = "ZerodowntimeMigrationEvent"
RETRY_STATUSES = (429, 500, 502, 503, 504)


class NotifyError(ModuleError):
    """A notification that could not be delivered, or was asked for wrongly."""


def build_event(params: dict, now: datetime.datetime) -> dict:
    event = params["event"]
    summary = params.get("summary") or f"{params['phase']} {event.replace('_', ' ')}"
    return {
        "migration": params["migration"],
        "phase": params["phase"],
        "event": event,
        "severity": SEVERITY[event],
        "summary": summary,
        "details": params.get("details") or {},
        "time": now.isoformat(),
    }


def webhook_body(event: dict) -> dict:
    """Slack's incoming-webhook shape (text + one attachment), plus the event itself."""
    title = f"[{event['migration']}] {event['summary']}"
    fields = [{"title": key, "value": str(value), "short": len(str(value)) < 40} for key, value in sorted(event["details"].items())]
    return {
        "text": title,
        "attachments": [
            {
                "color": COLOUR[event["severity"]],
                "title": f"{event['phase']}: {event['event'].replace('_', ' ')}",
                "fields": fields,
                "ts": int(datetime.datetime.fromisoformat(event["time"]).timestamp()),
            }
        ],
        "event": event,
    }


def alert_body(event: dict, labels: dict, duration_seconds: int) -> list:
    """One Alertmanager alert; the same migration, phase and event make the same alert, so
    Alertmanager groups and de-duplicates repeats."""
    starts = datetime.datetime.fromisoformat(event["time"])
    alert_labels = dict(labels or {})
    alert_labels.update(
        alertname=ALERT_NAME, migration=event["migration"], phase=event["phase"], event=event["event"], severity=event["severity"]
    )
    annotations = {"summary": event["summary"]}
    if event["details"]:
        annotations["description"] = json.dumps(event["details"], sort_keys=True, default=str)
    return [
        {
            "labels": {key: str(value) for key, value in alert_labels.items()},
            "annotations": annotations,
            "startsAt": starts.isoformat(),
            "endsAt": (starts + datetime.timedelta(seconds=duration_seconds)).isoformat(),
        }
    ]


def targets(params: dict) -> list[dict]:
    """Every delivery: (kind, name, url, headers), webhooks first; names must be unique."""
    found = []
    for kind, key, suffix in (("webhook", "webhooks", ""), ("alertmanager", "alertmanagers", "/api/v2/alerts")):
        for entry in params.get(key) or []:
            url = (entry.get("url") or "").rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise NotifyError(f"{kind} {entry.get('name')!r}: its url must start with http:// or https://. Fix {key}[].url")
            found.append({"kind": kind, "name": entry["name"], "url": url + suffix, "headers": entry.get("headers") or {}})
    names = [target["name"] for target in found]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise NotifyError(f"notification targets must have distinct names (results name them, not their URLs): {repeated}")
    if not found:
        raise NotifyError("nothing to notify: give at least one of webhooks or alertmanagers")
    return found


def post(target: dict, body, deadline: Deadline, validate_certs: bool) -> dict:
    """POST `body` to one target until it accepts, answers an error not worth retrying, or the
    deadline passes (the one poll loop of common/deadline)."""
    data = json.dumps(body, default=str)
    headers = dict(target["headers"], **{"Content-Type": "application/json"})
    attempts: list[dict] = []

    def attempt() -> dict:
        try:
            response = open_url(
                target["url"],
                data=data,
                headers=headers,
                method="POST",
                validate_certs=validate_certs,
                timeout=max(0.5, min(5.0, deadline.remaining())),
                follow_redirects="none",
            )
            attempts.append({"status": response.getcode()})
        except HTTPError as exc:
            final = exc.code not in RETRY_STATUSES
            fix = f"check its url and headers (a {exc.code} is not retried)" if final else None
            attempts.append({"reason": f"HTTP {exc.code}", "fix": fix})
        except (URLError, TimeoutError, OSError) as exc:
            attempts.append({"reason": str(getattr(exc, "reason", exc)), "fix": None})
        return attempts[-1]

    last = poll(attempt, deadline, on_timeout=None, ready=lambda answer: "status" in answer or answer["fix"], interval=0.2)
    outcome = {"kind": target["kind"], "name": target["name"], "attempts": len(attempts)}
    if "status" in last:
        return dict(outcome, status=last["status"])
    fix = last["fix"] or "check that the receiver runs and is reachable from this host, or raise timeout"
    return dict(outcome, error=f"{last['reason']} after {len(attempts)} attempt(s): {fix}")


def notify(params: dict, check_mode: bool, post_one=post, now=None) -> dict:
    """Deliver the event to every target (in check mode: say what would be sent)."""
    event = build_event(params, now or datetime.datetime.now(datetime.timezone.utc))  # noqa: UP017 (modules run on 3.9)
    bodies = {"webhook": webhook_body(event), "alertmanager": alert_body(event, params.get("alert_labels"), params["alert_duration"])}
    planned = targets(params)
    result = {
        "event": event,
        "payload": bodies["webhook"],
        "alerts": bodies["alertmanager"],
        "diff": {"before": "", "after": "".join(f"{t['kind']} {t['name']}: {event['summary']}\n" for t in planned)},
    }
    if check_mode:
        return dict(result, changed=True, delivered=[], undelivered=[], would_deliver=[target["name"] for target in planned])
    deadline = Deadline(params["timeout"])
    outcomes = [post_one(target, bodies[target["kind"]], deadline, params["validate_certs"]) for target in planned]
    delivered = [outcome for outcome in outcomes if "error" not in outcome]
    undelivered = [outcome for outcome in outcomes if "error" in outcome]
    result.update(changed=bool(delivered), delivered=delivered, undelivered=undelivered, would_deliver=[])
    if undelivered:
        missed = "; ".join(f"{outcome['kind']} {outcome['name']!r}: {outcome['error']}" for outcome in undelivered)
        if params["fail_on_error"]:
            raise NotifyError(f"the {event['event']} event of {event['phase']} was not delivered to {missed}", **result)
        result["warnings"] = [f"not delivered to {missed}"]
    return result
