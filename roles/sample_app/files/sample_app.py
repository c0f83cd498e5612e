# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's sample HTTP application: one instance per side (blue, green) behind HAProxy's app backend.

  sample_app.py --instance blue --listen 127.0.0.1:18081 [--fault-file FILE]

GET /health answers 200 {"instance": ..., "status": "ok"} (HAProxy's check); every other GET
answers 200 {"instance": ..., "path": ..., "request": n}. Python's standard library only.

Faults on purpose (tests, drills): FILE, read again whenever it changes, holds JSON such as
{"error_share": 0.2, "delay_ms": 50}: that share of the requests (not /health) answers 500, spread
evenly (every 5th request at 0.2, counted from when the file last changed), each request (not
/health) waits delay_ms first; {"health_status": 503} makes /health answer that status instead. A
missing or empty file means no fault; an unreadable one is logged and counts as no fault.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Faults:
    """The fault file's settings, read again when its mtime, size or inode change."""

    def __init__(self, path: str | None):
        self.path = path
        self.lock = threading.Lock()
        self.signature: tuple | None = None
        self.settings: dict = {}
        self.requests = 0

    def current(self) -> dict:
        if not self.path:
            return {}
        try:
            stat = os.stat(self.path)
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            signature = None
        except OSError as exc:  # e.g. a directory it may not enter: said once, then no fault
            signature = ("error", str(exc))
        with self.lock:
            if signature != self.signature:
                self.signature, self.settings, self.requests = signature, self.load(signature), 0
            return self.settings

    def load(self, signature: tuple | None) -> dict:
        if signature is None:
            return {}
        if signature[0] == "error":
            print(f"fault file {self.path}: {signature[1]}; no fault", file=sys.stderr, flush=True)
            return {}
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read().strip()
            settings = json.loads(text) if text else {}
            if not isinstance(settings, dict):
                raise ValueError("not a JSON object")
            return {
                "error_share": min(max(float(settings.get("error_share") or 0), 0.0), 1.0),
                "delay_ms": max(float(settings.get("delay_ms") or 0), 0.0),
                "health_status": int(settings.get("health_status") or 200),
            }
        except (OSError, ValueError, TypeError) as exc:
            print(f"fault file {self.path}: {exc}; no fault", file=sys.stderr, flush=True)
            return {}

    def next_fails(self, share: float) -> bool:
        """Whether this request answers 500: evenly spread, exactly `share` of the requests."""
        with self.lock:
            self.requests += 1
            count = self.requests
        return int(count * share) > int((count - 1) * share)


def handler(instance: str, faults: Faults) -> type[BaseHTTPRequestHandler]:
    served = {"count": 0}
    served_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = f"zerodowntime-sample-app/{instance}"

        def answer(self, status: int, body: dict) -> None:
            data = (json.dumps(body, sort_keys=True) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            settings = faults.current()
            path = self.path.split("?", 1)[0]
            if path == "/health":
                status = settings.get("health_status", 200)
                self.answer(status, {"instance": instance, "status": "ok" if status == 200 else "failing"})
                return
            if settings.get("delay_ms"):
                time.sleep(settings["delay_ms"] / 1000)
            with served_lock:
                served["count"] += 1
                number = served["count"]
            if settings.get("error_share") and faults.next_fails(settings["error_share"]):
                self.answer(500, {"instance": instance, "error": "fault injected", "request": number})
                return
            self.answer(200, {"instance": instance, "path": path, "request": number})

        do_HEAD = do_GET

        def log_message(self, format, *args):
            pass  # no access log: the load of a shift would fill the disk; HAProxy logs the requests

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instance", required=True, help="the name it answers with (blue, green)")
    parser.add_argument("--listen", required=True, help="address:port to listen on")
    parser.add_argument("--fault-file", help="JSON fault settings, read again when it changes")
    options = parser.parse_args(argv)
    address, _colon, port = options.listen.rpartition(":")
    server = ThreadingHTTPServer((address, int(port)), handler(options.instance, Faults(options.fault_file)))
    server.daemon_threads = True
    print(f"sample app {options.instance} listening on {options.listen}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
