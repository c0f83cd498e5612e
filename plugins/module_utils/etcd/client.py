# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""etcd 3.4's HTTP/JSON gateway: one client per member URL, bounded calls, clear errors.

The gateway serves the v3 gRPC API as JSON: POST /v3/<service>/<method> with a JSON body.
uint64 values (member and cluster IDs, raft term and index) come back as decimal strings, and
false or empty fields are left out. Every call has a timeout; a member that does not answer
within it is "unreachable", never a hang.

Pure helpers (no etcd needed): `member_id`, `cluster_id`, `hex_id`, `b64`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import urllib.error

from ansible.module_utils.urls import open_url

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError

ARGUMENT_SPEC = dict(
    ca_cert=dict(type="path"),
    client_cert=dict(type="path"),
    client_key=dict(type="path"),
    request_timeout=dict(type="float", default=5.0),
)


class EtcdError(ModuleError):
    """An error meant for the person running the playbook; `details` are returned with the failure."""


def member_id(peer_urls: list[str], cluster_token: str) -> int:
    """The ID etcd gives a member of a *new* cluster (bootstrapped or restored from a snapshot):
    the first 8 bytes (big endian) of SHA-1 over its sorted peer URLs and the cluster token.
    Members added later get a time-salted ID instead."""
    data = b"".join(url.encode() for url in sorted(peer_urls)) + cluster_token.encode()
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]  # noqa: S324 - etcd's own ID scheme


def cluster_id(member_ids: list[int]) -> int:
    """The cluster ID etcd derives from the IDs of the members it was bootstrapped with. It never
    changes afterwards: adding or removing members keeps it."""
    data = b"".join(struct.pack(">Q", value) for value in sorted(member_ids))
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]  # noqa: S324 - etcd's own ID scheme


def hex_id(value) -> str:
    """An ID as etcdctl prints it (hex); the gateway sends decimal strings."""
    return format(int(value), "x")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdClient:
    """Calls to one member's client URL."""

    def __init__(self, url: str, params: dict):
        self.url = url.rstrip("/")
        self.timeout = params.get("request_timeout") or 5.0
        self.tls = {
            "ca_path": params.get("ca_cert"),
            "client_cert": params.get("client_cert"),
            "client_key": params.get("client_key"),
        }

    def _open(self, path: str, body: dict | None, timeout: float | None = None):
        data = json.dumps(body).encode() if body is not None else None
        try:
            return open_url(
                self.url + path,
                data=data,
                method="POST" if body is not None else "GET",
                headers={"Content-Type": "application/json"},
                timeout=timeout or self.timeout,
                validate_certs=True,
                **{key: value for key, value in self.tls.items() if value},
            )
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                message = json.loads(text).get("error") or text
            except ValueError:
                message = text
            message = message.strip()
            raise EtcdError(f"etcd at {self.url} refused {path}: {message}", http_status=exc.code, etcd_error=message) from None
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EtcdError(
                f"cannot reach etcd at {self.url} ({reason}): is the member started, and is the URL "
                "(scheme http/https, host, client port) right? With TLS, pass ca_cert (and client_cert/client_key).",
                unreachable=True,
            ) from None

    def call(self, path: str, body: dict | None = None, timeout: float | None = None) -> dict:
        with self._open(path, body if body is not None else {}, timeout) as response:
            text = response.read().decode()
        try:
            return json.loads(text) if text else {}
        except ValueError:
            raise EtcdError(f"{self.url}{path} did not answer with JSON (is this an etcd client URL?): {text[:200]}") from None

    def health(self) -> bool:
        with self._open("/health", None) as response:
            text = response.read().decode()
        try:
            return json.loads(text).get("health") == "true"
        except ValueError:
            raise EtcdError(f"{self.url}/health did not answer with JSON (is this an etcd client URL?): {text[:200]}") from None

    # The gateway's methods the collection uses ----------------------------------------------
    def status(self) -> dict:
        return self.call("/v3/maintenance/status")

    def member_list(self) -> dict:
        return self.call("/v3/cluster/member/list")

    def member_add(self, peer_urls: list[str], learner: bool = False) -> dict:
        return self.call("/v3/cluster/member/add", {"peerURLs": peer_urls, "isLearner": learner})

    def member_remove(self, ident) -> dict:
        return self.call("/v3/cluster/member/remove", {"ID": str(ident)})

    def member_promote(self, ident) -> dict:
        return self.call("/v3/cluster/member/promote", {"ID": str(ident)})

    def put(self, key: str, value: str) -> dict:
        return self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def get(self, key: str) -> str | None:
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def snapshot(self, out, timeout: float) -> int:
        """Stream the member's backend (/v3/maintenance/snapshot, JSON lines of base64 blobs)
        into the binary file `out`; returns the bytes written."""
        written = 0
        with self._open("/v3/maintenance/snapshot", {}, timeout) as response:
            for line in response:
                line = line.strip()
                if not line:
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise EtcdError(f"etcd at {self.url} stopped the snapshot: {message['error']}")
                blob = base64.b64decode(message.get("result", {}).get("blob", ""))
                out.write(blob)
                written += len(blob)
        return written
