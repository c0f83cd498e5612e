# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RabbitMQ's management HTTP API (rabbitmq_management, :15672) and queues declared through it.

`ManagementApi` sends JSON requests with Ansible's URL helpers (`open_url`: timeout, TLS
verification, CA path, basic auth) and turns every failure into a `RabbitMQError` whose message
says what failed and what to fix, without the password. In check mode it records the requests
that would change something (`queries`) instead of sending them, as pg_client.Client does for SQL,
so `Queue` can reuse `ManagedObject.ensure` (changed, diff and check mode handled once).

A queue's declaration (durable, auto_delete and every argument, x-queue-type included) is
compared with the existing queue's: RabbitMQ cannot change a declared queue, so a difference is an
error naming each differing argument, unless `recreate` allows deleting and redeclaring it while
it is empty (the delete uses `if-empty=true`, so a message arriving meanwhile is never lost).

Every name that travels in a URL path (vhost, queue) goes through `path_segment`: percent-encoded,
and never `.` or `..`, which are not encoded and which the API resolves as dot segments
(`/api/queues/%2F/..` is `/api/queues`, the list of all queues). An answer is used only when it is
the object asked for (`expect_object`: a dict with that name and vhost); anything else is an error.

Pure helpers (no broker needed): `path_segment`, `expect_object`, `check_queue_name`, `check_vhost`,
`queue_path`, `desired_arguments`, `argument_differences`, `describe_differences`.
"""

from __future__ import annotations

import json
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.urls import open_url

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject

API_ARGUMENT_SPEC = {
    "login_host": {"type": "str", "default": "127.0.0.1"},
    "login_port": {"type": "int", "default": 15672},
    "login_protocol": {"type": "str", "default": "http", "choices": ["http", "https"]},
    "login_user": {"type": "str", "default": "guest"},
    "login_password": {"type": "str", "no_log": True, "required": True},
    "path_prefix": {"type": "str", "default": ""},
    "validate_certs": {"type": "bool", "default": True},
    "ca_path": {"type": "path"},
    "timeout": {"type": "float", "default": 10.0},
}

# Typed options of rabbitmq_queue and the x-arguments they set.
TYPED_ARGUMENTS = {
    "message_ttl": "x-message-ttl",
    "max_priority": "x-max-priority",
    "dead_letter_exchange": "x-dead-letter-exchange",
    "dead_letter_routing_key": "x-dead-letter-routing-key",
    "max_length": "x-max-length",
}
QUEUE_TYPES = ("classic", "quorum", "stream")
MAX_NAME_BYTES = 255  # AMQP 0-9-1 short string


class RabbitMQError(ModuleError):
    """A failure to report as the module's msg; `details` go into the result too."""


class ManagementApi:
    """One management API endpoint. `request` sends, or in check mode records, one call."""

    def __init__(self, params: dict, check_mode: bool = False):
        self.params = params
        self.check_mode = check_mode
        self.queries: list[str] = []
        prefix = check_path_prefix(params.get("path_prefix") or "")
        self.endpoint = f"{params['login_protocol']}://{params['login_host']}:{params['login_port']}"
        self.base = self.endpoint + prefix

    def close(self) -> None:
        """Nothing stays open between requests."""

    def request(self, method: str, path: str, body=None, allow: tuple = ()):
        """Send `method path` (path starts with /api/); return (status, decoded JSON or None).

        Statuses in `allow` (e.g. 404) are returned, not raised. Changing calls are recorded in
        `queries`, and in check mode only recorded."""
        if method != "GET":
            self.queries.append(f"{method} {path}")
            if self.check_mode:
                return 204, None
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            response = open_url(
                self.base + path,
                data=data,
                headers=headers,
                method=method,
                url_username=self.params["login_user"],
                url_password=self.params["login_password"],
                force_basic_auth=True,
                validate_certs=self.params.get("validate_certs", True),
                ca_path=self.params.get("ca_path"),
                timeout=self.params.get("timeout", 10.0),
                follow_redirects="none",
            )
            return response.getcode(), decode(response.read())
        except HTTPError as exc:
            payload = decode(exc.read()) if exc.fp is not None else None
            if exc.code in allow:
                return exc.code, payload
            raise self.http_error(method, path, exc.code, payload) from None
        except (URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RabbitMQError(
                f"cannot reach the RabbitMQ management API at {self.params['login_host']}:{self.params['login_port']} "
                f"({self.base}) within the {self.params.get('timeout', 10.0)} s timeout: {reason}. Check that RabbitMQ "
                f"runs with the rabbitmq_management plugin enabled (rabbitmq-plugins enable rabbitmq_management) and "
                f"listens there, and the login_host, login_port, login_protocol and path_prefix options"
            ) from None

    def http_error(self, method: str, path: str, status: int, payload) -> RabbitMQError:
        reason = payload.get("reason") if isinstance(payload, dict) else None
        user = self.params["login_user"]
        if status == 401:
            hint = (
                f"the management API at {self.endpoint} refused user {user!r} (HTTP 401 Unauthorized): the password is "
                f"wrong or the user does not exist"
            )
            if user == "guest":
                hint += " (guest may only log in from localhost: loopback_users)"
            return RabbitMQError(hint + ". Fix login_user / login_password", status=status)
        if status == 403:
            return RabbitMQError(
                f"user {user!r} may not {method} {path} on {self.endpoint} (HTTP 403: {reason or 'forbidden'}): give it the "
                f"'administrator' (or 'management' plus permissions on the vhost) tag",
                status=status,
            )
        return RabbitMQError(f"{method} {path} on {self.endpoint} failed with HTTP {status}: {reason or payload}", status=status)

    def vhost_exists(self, vhost: str) -> bool:
        path = f"/api/vhosts/{path_segment(vhost, 'vhost')}"
        status, body = self.request("GET", path, allow=(404,))
        if status != 200 or body is None:
            return False
        expect_object(body, path, self.endpoint, "vhost", name=vhost)
        return True

    def require_vhost(self, vhost: str) -> None:
        if not self.vhost_exists(vhost):
            raise RabbitMQError(
                f"vhost {vhost!r} does not exist on {self.endpoint}: create it first (the zerodowntime.migration.rabbitmq "
                f"role's rabbitmq_vhosts, or rabbitmqctl add_vhost {vhost}) and give the user permissions on it, or fix "
                f"the vhost option"
            )


def decode(raw: bytes):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


DOT_SEGMENTS = (".", "..")


def path_segment(value: str, what: str) -> str:
    """`value` percent-encoded as one URL path segment; `.` and `..` (which stay unencoded and
    which the API resolves as "this" and "the parent" path) are refused, naming `what` it is."""
    if value in DOT_SEGMENTS:
        raise RabbitMQError(
            f"{what} name {value!r} cannot be used through the management API: the name travels in the URL path, where "
            f"{value!r} is a dot segment that the server resolves to another resource (e.g. the list of all queues) "
            f"instead of the {what} {value!r}, so this module refuses it. Use another {what} name (e.g. with letters, "
            f"digits, '_' or a dot inside the name such as 'app.jobs'). Nothing was changed"
        )
    return quote(value, safe="")


def expect_object(body, path: str, endpoint: str, what: str, **expected) -> dict:
    """`body` if it is the one object asked for (a dict whose fields equal `expected`); else an error."""
    if isinstance(body, dict) and all(body.get(key) == value for key, value in expected.items()):
        return body
    wanted = ", ".join(f"{key} {value!r}" for key, value in expected.items())
    got = (
        f"a {type(body).__name__} of {len(body)} item(s)"
        if isinstance(body, list)
        else f"{', '.join(f'{key} {body.get(key)!r}' for key in expected)}"
        if isinstance(body, dict)
        else f"{type(body).__name__} {str(body)[:80]!r}"
    )
    raise RabbitMQError(
        f"GET {path} on {endpoint} did not answer with the {what} asked for ({wanted}) but with {got}: a proxy or "
        f"path_prefix in front of the API rewrote the URL, or login_host/login_port/path_prefix point at something "
        f"other than the RabbitMQ management API. Fix them; nothing was changed",
        answer_type=type(body).__name__,
    )


def check_path_prefix(path_prefix: str) -> str:
    """`path_prefix` as "/a/b" ("" for none); dot segments and URL delimiters are refused."""
    segments = [segment for segment in path_prefix.strip("/").split("/") if segment]
    for segment in segments:
        if segment in DOT_SEGMENTS or any(char in segment for char in "?#%\\") or any(char.isspace() for char in segment):
            raise RabbitMQError(
                f"path_prefix {path_prefix!r} has the segment {segment!r}: a prefix is plain path segments (e.g. /rabbitmq), "
                f"without '.' or '..' segments, '?', '#', '%', backslashes or spaces, which would make the requests reach "
                f"another URL. Fix path_prefix to the management.path_prefix of the broker"
            )
    return "/" + "/".join(segments) if segments else ""


def check_vhost(vhost) -> str:
    """Return `vhost` if it can travel in a URL path; else fail saying why and what to do."""
    if not isinstance(vhost, str) or not vhost:
        raise RabbitMQError("vhost must be a non-empty vhost name (the default vhost is '/')")
    path_segment(vhost, "vhost")
    return vhost


def check_queue_name(name) -> str:
    """Return `name` if it can be declared through the API; else fail saying why and what to do."""
    if not isinstance(name, str) or not name:
        raise RabbitMQError("name must be a non-empty queue name (server-named queues cannot be declared through the management API)")
    if "/" in name:
        raise RabbitMQError(
            f"queue name {name!r} contains '/': the management API takes the name in the URL path, where an encoded "
            f"slash (%2F) is decoded by many proxies and path prefixes in front of it, so this module refuses such "
            f"names. Rename the queue (e.g. use '.' or '_' instead of '/')"
        )
    path_segment(name, "queue")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise RabbitMQError(f"queue name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes (AMQP's limit): shorten it")
    if name.startswith("amq."):
        raise RabbitMQError(f"queue name {name!r} starts with 'amq.', which RabbitMQ reserves for itself: choose another name")
    return name


def queue_path(vhost: str, name: str) -> str:
    return f"/api/queues/{path_segment(vhost, 'vhost')}/{path_segment(name, 'queue')}"


def desired_arguments(params: dict) -> dict:
    """The x-arguments the options ask for: `arguments` merged with the typed options.

    A typed option and the same key in `arguments` with another value is an error."""
    wanted = dict(params.get("arguments") or {})
    typed = {TYPED_ARGUMENTS[option]: params[option] for option in TYPED_ARGUMENTS if params.get(option) is not None}
    typed["x-queue-type"] = params.get("type") or "classic"
    for key, value in typed.items():
        if key in wanted and wanted[key] != value:
            option = next((o for o, k in TYPED_ARGUMENTS.items() if k == key), "type")
            raise RabbitMQError(f"arguments[{key!r}] is {wanted[key]!r} but option {option} says {value!r}: set it in one place only")
        wanted[key] = value
    if wanted["x-queue-type"] not in QUEUE_TYPES:
        raise RabbitMQError(f"x-queue-type {wanted['x-queue-type']!r} is not one of {', '.join(QUEUE_TYPES)}: fix type or arguments")
    return wanted


def check_declaration(params: dict, arguments: dict) -> None:
    queue_type = arguments["x-queue-type"]
    if queue_type in ("quorum", "stream") and not params.get("durable", True):
        raise RabbitMQError(f"{queue_type} queues must be durable: set durable: true (or type: classic)")
    if queue_type in ("quorum", "stream") and params.get("auto_delete"):
        raise RabbitMQError(f"{queue_type} queues cannot be auto_delete: set auto_delete: false (or type: classic)")


def current_arguments(queue: dict) -> dict:
    """The queue's arguments as declared, with x-queue-type filled in from its type."""
    arguments = dict(queue.get("arguments") or {})
    arguments.setdefault("x-queue-type", queue.get("type") or "classic")
    return arguments


def argument_differences(current: dict, desired: dict) -> dict:
    """{field: (have, want)} for durable, auto_delete and every argument of either side."""
    differences = {}
    for field in ("durable", "auto_delete"):
        if current.get(field) != desired.get(field):
            differences[field] = (current.get(field), desired.get(field))
    have, want = current.get("arguments") or {}, desired.get("arguments") or {}
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            differences[key] = (have.get(key), want.get(key))
    return differences


def describe_differences(differences: dict) -> str:
    return "; ".join(
        f"{key}: have {'(not set)' if have is None else json.dumps(have)}, want {'(not set)' if want is None else json.dumps(want)}"
        for key, (have, want) in differences.items()
    )


class Queue(ManagedObject):
    """A queue in a vhost, through the management API; `api` plays ManagedObject's client."""

    kind = "queue"

    def __init__(self, api: ManagementApi, vhost: str, name: str, recreate: bool = False):
        super().__init__(api, name)
        self.vhost = vhost
        self.path = queue_path(vhost, name)
        self.recreate = recreate
        self.messages = None

    def read(self):
        status, data = self.client.request("GET", self.path, allow=(404,))
        if status != 200:
            return None
        return expect_object(data, self.path, self.client.endpoint, "queue", name=self.name, vhost=self.vhost)

    def exists(self) -> bool:
        return self.read() is not None

    def attrs(self) -> dict:
        data = self.read() or {}
        self.messages = data.get("messages")
        return {"durable": data.get("durable"), "auto_delete": data.get("auto_delete"), "arguments": current_arguments(data)}

    def differences(self, current: dict, desired: dict) -> dict:
        return {key: desired[key] for key in argument_differences(current, desired) if key in ("durable", "auto_delete")} | (
            {"arguments": desired["arguments"]} if (current.get("arguments") or {}) != (desired.get("arguments") or {}) else {}
        )

    def create(self, desired: dict) -> None:
        self.client.request("PUT", self.path, body=desired)

    def update(self, current: dict, changes: dict) -> None:
        desired = self.projected(current, changes)
        differing = describe_differences(argument_differences(current, desired))
        where = f"queue {self.name!r} in vhost {self.vhost!r}"
        if not self.recreate:
            raise RabbitMQError(
                f"{where} exists with another declaration ({differing}). RabbitMQ cannot change a declared queue: make the "
                f"task match the queue, or set recreate: true to delete and redeclare it while it is empty. Nothing was changed",
                differences={key: {"have": have, "want": want} for key, (have, want) in argument_differences(current, desired).items()},
            )
        if self.messages:
            raise RabbitMQError(
                f"{where} holds {self.messages} message(s): recreate refuses to delete it ({differing}). Let its consumers "
                f"drain it (or move the messages elsewhere) and run again. Nothing was changed",
                messages=self.messages,
            )
        self.drop(current, if_empty=True)
        self.create(desired)

    def drop(self, current: dict, if_empty: bool = True) -> None:
        if self.messages:
            raise RabbitMQError(
                f"queue {self.name!r} in vhost {self.vhost!r} holds {self.messages} message(s): it is not deleted. Drain it "
                f"first and run again. Nothing was changed",
                messages=self.messages,
            )
        status, payload = self.client.request("DELETE", self.path + ("?if-empty=true" if if_empty else ""), allow=(400,))
        if status == 400:
            reason = payload.get("reason") if isinstance(payload, dict) else payload
            raise RabbitMQError(
                f"RabbitMQ refused to delete queue {self.name!r} in vhost {self.vhost!r}: {reason} "
                f"(a message arrived meanwhile?). Drain it and run again",
            )


def ensure_queue(api: ManagementApi, params: dict) -> dict:
    """Bring the queue of `params` (rabbitmq_queue's options) to its state; return the result."""
    name = check_queue_name(params["name"])
    vhost = check_vhost(params.get("vhost") or "/")
    desired = None
    if params["state"] == "present":
        arguments = desired_arguments(params)
        check_declaration(params, arguments)
        desired = {"durable": params.get("durable", True), "auto_delete": params.get("auto_delete", False), "arguments": arguments}
    api.require_vhost(vhost)
    queue = Queue(api, vhost, name, recreate=params.get("recreate", False))
    result = queue.ensure(params["state"], desired)
    result.update(name=name, vhost=vhost, messages=queue.messages)
    return result
