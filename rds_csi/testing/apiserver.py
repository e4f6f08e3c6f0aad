"""A Kubernetes API server emulator on aiohttp, for tests and the no-cluster demo.

There is no kube-apiserver binary here, so the event sink and the PVC lookups are tested against
this.  It is only worth having if it is strict in the same places as the real server: a request
it accepts must be accepted by a real API server, and one it rejects must come back with the same
status, reason and (as far as practical) message.  The order of checks follows the real request
path: authentication (401), authorization (403), decoding (400/415), NamespaceLifecycle admission
(404/403), create/update strategy and validation (400/422), EventRateLimit admission (429), and
storage (409/500).

On top of that it injects the faults a client must survive (status codes with Retry-After,
delays, hangs, connection resets), records every request, and emulates RBAC denials.

Not emulated: watch, server-side apply, deletecollection, YAML/protobuf bodies, managedFields,
dry-run, the 1 h event TTL (`expire_events()` stands in), and writes to PVCs, PVs and Nodes other
than through the `add_*`/`delete_*` helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import random
import re
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

from rds_csi.testing.apiserver_validation import (
    CORE,
    CORE_EVENT,
    EVENTS_GROUP,
    EVENTS_V1_EVENT,
    DecodeError,
    FieldError,
    GoNumber,
    aggregate_message,
    core_to_v1,
    decode_object,
    encode_object,
    format_time,
    go_quote,
    is_dns1123_label,
    v1_to_core,
    validate_event_create,
    validate_event_update,
    validate_object_meta,
    validate_object_meta_update,
)

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration

__all__ = ["DEFAULT_USER", "ApiError", "ApiServerEmulator", "Fault", "RecordedRequest"]

JSON = Any

DEFAULT_USER = "system:serviceaccount:kube-system:rds-csi-node"
"""Who the bearer token authenticates as; it appears in RBAC denials and User rate limits."""

MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024  # --max-request-bytes default (MaxRequestBodyBytes)
_OPTIMISTIC_LOCK = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    "application/strategic-merge-patch+json",
)
_BODY_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
_DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


# --------------------------------------------------------------------------- public data types


@dataclass(eq=False)
class Fault:
    """A misbehaviour injected before normal handling, matched in injection order.

    `status=None` means "then answer normally" (useful with `delay` or `hang`).  `times` counts
    firings (None: forever); a request that loses the `probability` draw is not a firing and falls
    through to the next fault.  `fired` counts firings so far.

    A `reset` closes the socket without an answer.  Note that aiohttp (so kubernetes-asyncio)
    silently retries an idempotent request once when a reused keep-alive connection drops, so
    reset a GET twice (`times=2`) to make the client see it.
    """

    method: str | None = None
    path: str | None = None  # a regex searched in the URL path
    status: int | None = 503
    retry_after: float | None = None  # seconds, sent as the Retry-After header
    body_reason: str | None = None
    delay: float = 0.0
    hang: bool = False
    reset: bool = False
    times: int | None = 1
    probability: float | None = None
    fired: int = field(default=0, init=False)

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass(frozen=True)
class RecordedRequest:
    """One answered request.  `status` is None when no response was sent (reset, shutdown);
    `time` is the event loop's clock when the answer was decided."""

    method: str
    path: str
    query: Mapping[str, str]
    content_type: str | None
    body: JSON
    status: int | None
    time: float
    fault: Fault | None = None
    response: JSON = None
    user_agent: str | None = None


class ApiError(Exception):
    """A `metav1.Status` failure as the API server writes it."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, JSON] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def status(self) -> dict[str, JSON]:
        body: dict[str, JSON] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
        }
        if self.message:
            body["message"] = self.message
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


# --------------------------------------------------------------------------- Status builders
# k8s.io/apimachinery/pkg/api/errors: the same messages, reasons and details.


def _qualified(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def _details(group: str, kind: str, name: str, **extra: JSON) -> dict[str, JSON]:
    out: dict[str, JSON] = {}
    if name:
        out["name"] = name
    if group:
        out["group"] = group
    if kind:
        out["kind"] = kind
    out.update({k: v for k, v in extra.items() if v})
    return out


def _not_found(group: str, resource: str, name: str) -> ApiError:
    message = f"{_qualified(group, resource)} {go_quote(name)} not found"
    return ApiError(404, "NotFound", message, _details(group, resource, name))


def _already_exists(group: str, resource: str, name: str) -> ApiError:
    message = f"{_qualified(group, resource)} {go_quote(name)} already exists"
    return ApiError(409, "AlreadyExists", message, _details(group, resource, name))


def _conflict(group: str, resource: str, name: str, why: str) -> ApiError:
    message = f"Operation cannot be fulfilled on {_qualified(group, resource)} {go_quote(name)}: "
    return ApiError(409, "Conflict", message + why, _details(group, resource, name))


def _invalid(group: str, kind: str, name: str, errors: list[FieldError]) -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    causes = [{"reason": e.type, "message": e.body(), "field": e.field} for e in errors]
    message = f"{qualified} {go_quote(name)} is invalid: {aggregate_message(errors)}"
    return ApiError(422, "Invalid", message, _details(group, kind, name, causes=causes))


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _forbidden(
    group: str, resource: str, name: str, why: str, causes: list[dict[str, str]] | None = None
) -> ApiError:
    subject = _qualified(group, resource) + (f" {go_quote(name)}" if name else "")
    message = f"{subject} is forbidden: {why}"
    return ApiError(403, "Forbidden", message, _details(group, resource, name, causes=causes))


def _unprocessable(message: str) -> ApiError:
    """`NewGenericServerResponse(422, ...)`: how JSON-patch application errors come back."""
    return ApiError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": message}]},
    )


def _unsupported_media(accepted: Iterable[str]) -> ApiError:
    message = "the body of the request was in an unknown format - accepted media types include: "
    return ApiError(415, "UnsupportedMediaType", message + ", ".join(accepted))


_NOT_FOUND_PATH = ApiError(404, "NotFound", "the server could not find the requested resource", {})
_METHOD_NOT_ALLOWED = ApiError(
    405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}
)
_UNAUTHORIZED = ApiError(401, "Unauthorized", "Unauthorized")

_REASON_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class _Route:
    group: str
    resource: str  # events | persistentvolumeclaims | persistentvolumes | nodes
    namespace: str | None
    name: str | None

    @property
    def kind(self) -> str:
        return {
            "events": "Event",
            "persistentvolumeclaims": "PersistentVolumeClaim",
            "persistentvolumes": "PersistentVolume",
            "nodes": "Node",
        }[self.resource]


_ROUTES = (
    (re.compile(r"/api/v1/namespaces/([^/]+)/(events|persistentvolumeclaims)(?:/([^/]+))?"), CORE),
    (
        re.compile(r"/apis/events\.k8s\.io/v1/namespaces/([^/]+)/(events)(?:/([^/]+))?"),
        EVENTS_GROUP,
    ),
)
_CLUSTER_ROUTES = (
    (re.compile(r"/api/v1/(persistentvolumes|nodes)(?:/([^/]+))?"), CORE),
    (re.compile(r"/api/v1/(events|persistentvolumeclaims)()"), CORE),
    (re.compile(r"/apis/events\.k8s\.io/v1/(events)()"), EVENTS_GROUP),
)


def _route(path: str) -> _Route | None:
    for pattern, group in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return _Route(group, match[2], match[1], match[3])
    for pattern, group in _CLUSTER_ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return _Route(group, match[1], None, match[2] or None)
    return None


def _verb(method: str, route: _Route, query: Mapping[str, str]) -> str | None:
    """The authorization verb, or None when the resource does not take this method."""
    if method == "GET":
        if route.name:
            return "get"
        return "watch" if query.get("watch") in ("1", "true") else "list"
    if route.resource != "events":
        return None  # PVC/PV/Node writes are not emulated
    if route.name:
        return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    return "create" if method == "POST" and route.namespace else None


# --------------------------------------------------------------------------- selectors

# field label -> where it lives in the object (only what the real server's field sets offer)
_EVENT_FIELDS = {
    "metadata.name": "metadata.name",
    "metadata.namespace": "metadata.namespace",
    "reason": "reason",
    "reportingComponent": "reportingComponent",
    "source": "source.component",
    "type": "type",
}
_EVENT_FIELDS.update(
    {
        f"involvedObject.{key}": f"involvedObject.{key}"
        for key in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
    }
)
_EVENT_FIELDS["involvedObject.fieldPath"] = "involvedObject.fieldPath"
_OBJECT_FIELDS = {
    "persistentvolumeclaims": {"metadata.name": "metadata.name", "metadata.namespace": "x"},
    "persistentvolumes": {"metadata.name": "metadata.name"},
    "nodes": {"metadata.name": "metadata.name", "spec.unschedulable": "spec.unschedulable"},
}
_OBJECT_FIELDS["persistentvolumeclaims"]["metadata.namespace"] = "metadata.namespace"
_REQUIREMENT = re.compile(
    r"\s*(!?)([^!=,\s()]+)\s*"  # [!]key
    r"(?:(==|=|!=)\s*([^,\s]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*"  # op value | in (a,b)
)


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # = != in notin exists !exists
    values: frozenset[str] = frozenset()

    def matches(self, value: str | None, present: bool) -> bool:
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        inside = value in self.values
        return inside if self.op in ("=", "in") else not inside


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def _label_selector(selector: str) -> list[_Requirement]:
    requirements = []
    for part in _split_selector(selector):
        match = _REQUIREMENT.fullmatch(part)
        if not match or (match[1] and (match[3] or match[5])):
            raise _bad_request(f"unable to parse requirement: {part.strip()}")
        negated, key, op, value, set_op, values = match.groups()
        if op:
            requirements.append(_Requirement(key, "!=" if op == "!=" else "=", frozenset([value])))
        elif set_op:
            allowed = frozenset(v.strip() for v in values.split(","))
            requirements.append(_Requirement(key, set_op, allowed))
        else:
            requirements.append(_Requirement(key, "!exists" if negated else "exists"))
    return requirements


def _field_selector(selector: str, fields: Mapping[str, str]) -> list[_Requirement]:
    requirements = []
    for part in _split_selector(selector):
        match = re.fullmatch(r"\s*([^!=\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not match:
            raise _bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        label, op, value = match.groups()
        if label not in fields:
            known = '", "'.join(sorted(fields))
            raise _bad_request(f'"{label}" is not a known field selector: only "{known}"')
        requirements.append(
            _Requirement(fields[label], "!=" if op == "!=" else "=", frozenset([value]))
        )
    return requirements


def _field_value(obj: Mapping[str, JSON], path: str) -> str:
    node: JSON = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, bool) or path == "spec.unschedulable":
        return "true" if node else "false"
    return "" if node is None else str(node)


# --------------------------------------------------------------------------- patches


def _merge_patch(target: JSON, patch: JSON, strategic: bool) -> JSON:
    """RFC 7386, plus the `$patch` map directives of a strategic merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):  # $setElementOrder/..., $retainKeys: list order
            continue
        deleted = strategic and isinstance(value, dict) and value.get("$patch") == "delete"
        if value is None or deleted:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value, strategic)
    return result


class _JsonPatchError(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _JsonPatchError(f'JSON pointer must be empty or start with a "/": {path}')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: JSON, parts: list[str], op: str, path: str) -> JSON:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _JsonPatchError(f'{op} operation does not apply: doc is missing path: "{path}"')
    return node


def _json_patch(doc: JSON, operations: list[JSON]) -> JSON:
    """RFC 6902 (add, remove, replace, move, copy, test), evanphx/json-patch style errors."""
    doc = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict):
            raise _JsonPatchError("invalid operation")
        op, path = operation.get("op"), operation.get("path", "")
        if op not in ("add", "remove", "replace", "move", "copy", "test"):
            raise _JsonPatchError(f"Unexpected kind: {op}")
        if op in ("move", "copy"):
            source = _pointer(operation.get("from", ""))
            holder = _container(doc, source, op, operation.get("from", ""))
            value = _get(holder, source[-1], op, operation.get("from", "")) if source else doc
            if op == "move":
                _remove(holder, source[-1], op, operation.get("from", ""))
            doc = _add(doc, _pointer(path), copy.deepcopy(value), op, path)
            continue
        parts = _pointer(path)
        if op == "test":
            holder = _container(doc, parts, op, path)
            current = _get(holder, parts[-1], op, path) if parts else doc
            if current != operation.get("value"):
                raise _JsonPatchError(f"testing value {path} failed: test failed")
        elif op == "add":
            doc = _add(doc, parts, copy.deepcopy(operation.get("value")), op, path)
        elif op == "remove":
            _remove(_container(doc, parts, op, path), parts[-1], op, path)
        else:
            holder = _container(doc, parts, op, path)
            _get(holder, parts[-1], op, path)
            if isinstance(holder, list):
                holder[int(parts[-1])] = copy.deepcopy(operation.get("value"))
            else:
                holder[parts[-1]] = copy.deepcopy(operation.get("value"))
    return doc


def _get(holder: JSON, key: str, op: str, path: str) -> JSON:
    if isinstance(holder, dict) and key in holder:
        return holder[key]
    if isinstance(holder, list) and key.isdigit() and int(key) < len(holder):
        return holder[int(key)]
    raise _JsonPatchError(
        f"{op} operation does not apply: doc is missing key: {path}: missing value"
    )


def _remove(holder: JSON, key: str, op: str, path: str) -> None:
    _get(holder, key, op, path)
    if isinstance(holder, list):
        del holder[int(key)]
    else:
        del holder[key]


def _add(doc: JSON, parts: list[str], value: JSON, op: str, path: str) -> JSON:
    if not parts:
        return value
    holder = _container(doc, parts, op, path)
    key = parts[-1]
    if isinstance(holder, dict):
        holder[key] = value
    elif isinstance(holder, list) and (key == "-" or (key.isdigit() and int(key) <= len(holder))):
        holder.insert(len(holder) if key == "-" else int(key), value)
    else:
        raise _JsonPatchError(f'{op} operation does not apply: doc is missing path: "{path}"')
    return doc


def _go_map(value: JSON) -> str:
    """Go's `%+v` of decoded JSON, which is how strategic-merge decode errors print the patch."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_map(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_map(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compact(value: JSON) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _load_json(raw: bytes) -> JSON:
    """JSON the way Go reads it: invalid UTF-8 replaced, no NaN, fractions kept apart from ints."""

    def reject(constant: str) -> JSON:
        raise ValueError(f"invalid character '{constant[0]}' looking for beginning of value")

    return json.loads(raw.decode("utf-8", "replace"), parse_float=GoNumber, parse_constant=reject)


# --------------------------------------------------------------------------- EventRateLimit


@dataclass
class _Bucket:
    qps: float
    burst: int
    tokens: float
    last: float

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.qps)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _EventLimit:
    """One `limits:` entry of the EventRateLimit admission configuration."""

    type: str
    qps: float
    burst: int
    cache_size: int
    buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    def accept(self, key: str, now: float) -> bool:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.qps, self.burst, float(self.burst), now)
            self.buckets[key] = bucket
            if len(self.buckets) > self.cache_size:
                self.buckets.popitem(last=False)  # an evicted key comes back with a full burst
        self.buckets.move_to_end(key)
        return bucket.take(now)


# --------------------------------------------------------------------------- the emulator


def _now() -> str:
    return format_time(datetime.now(UTC))


class ApiServerEmulator:
    """An HTTP Kubernetes API server on 127.0.0.1 with events, PVCs, PVs and Nodes.

    Use as `async with ApiServerEmulator(token="t") as api:`; `api.configuration()` gives a
    kubernetes-asyncio Configuration pointing at it.  All state lives on the event loop that
    started it; the helpers are plain methods to call from that loop.
    """

    def __init__(
        self,
        token: str | None = "test-token",  # noqa: S107 - a test server's default
        *,
        seed: int = 0,
        user: str = DEFAULT_USER,
        implicit_namespaces: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.user = user
        self.implicit_namespaces = implicit_namespaces
        self._host = host
        self._port = port
        self._clock = clock
        # Seeded on purpose: the same seed gives the same faults and generated names.
        self._fault_rng = random.Random(seed)  # noqa: S311
        self._name_rng = random.Random(f"{seed}/generateName")  # noqa: S311
        self._rv = 0
        self._events: dict[tuple[str, str], dict[str, JSON]] = {}
        self._pvcs: dict[tuple[str, str], dict[str, JSON]] = {}
        self._pvs: dict[str, dict[str, JSON]] = {}
        self._nodes: dict[str, dict[str, JSON]] = {}
        self._namespaces: dict[str, str] = {ns: "Active" for ns in _DEFAULT_NAMESPACES}
        self._removed_namespaces: set[str] = set()
        self._faults: list[Fault] = []
        self._forbidden: list[tuple[str, str, str | None, str | None]] = []
        self._limits: list[_EventLimit] = []
        self._requests: list[RecordedRequest] = []
        self._changed: asyncio.Condition | None = None
        self._release: asyncio.Event | None = None
        self._shutdown: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._shutdown = asyncio.Event()
        app = web.Application(client_max_size=4 * MAX_REQUEST_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        site = web.SockSite(self._runner, sock)
        await site.start()
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop serving: hung and delayed requests are cut off without an answer."""
        if self._runner is None:
            return
        assert self._shutdown is not None
        self._shutdown.set()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> ApiServerEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def configuration(self) -> Configuration:
        """A kubernetes-asyncio client Configuration for this server (host + bearer token)."""
        from kubernetes_asyncio.client import Configuration

        config = Configuration(host=self.url)
        if self.token is not None:
            config.api_key = {"BearerToken": self.token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return config

    # ------------------------------------------------------------------ objects and namespaces

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _new_meta(self, name: str, namespace: str | None, uid: str | None) -> dict[str, JSON]:
        meta: dict[str, JSON] = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        meta.update(
            uid=uid or str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            creationTimestamp=_now(),
        )
        return meta

    def add_namespace(self, namespace: str) -> None:
        self._namespaces[namespace] = "Active"
        self._removed_namespaces.discard(namespace)

    def set_namespace_terminating(self, namespace: str) -> None:
        """Creates in it now fail with 403 and the NamespaceTerminating cause."""
        self._namespaces[namespace] = "Terminating"
        self._removed_namespaces.discard(namespace)

    def remove_namespace(self, namespace: str) -> None:
        """The namespace no longer exists: creates and updates in it get 404."""
        self._namespaces.pop(namespace, None)
        self._removed_namespaces.add(namespace)

    def _namespace_exists(self, namespace: str) -> bool:
        if namespace in self._namespaces:
            return True
        if namespace in self._removed_namespaces or not self.implicit_namespaces:
            return False
        return not is_dns1123_label(namespace)  # a Namespace with another name cannot exist

    def add_pvc(
        self,
        namespace: str,
        name: str,
        uid: str | None = None,
        volume_name: str | None = None,
        *,
        storage: str = "1Gi",
        storage_class: str = "rds-nvme",
        access_modes: Iterable[str] = ("ReadWriteOnce",),
        volume_mode: str = "Filesystem",
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, JSON]:
        """Store a PersistentVolumeClaim (Bound when `volume_name` is given) and return it."""
        modes = list(access_modes)
        meta = self._new_meta(name, namespace, uid)
        if labels:
            meta["labels"] = dict(labels)
        spec: dict[str, JSON] = {
            "accessModes": modes,
            "resources": {"requests": {"storage": storage}},
            "storageClassName": storage_class,
            "volumeMode": volume_mode,
        }
        status: dict[str, JSON] = {"phase": "Pending"}
        if volume_name:
            spec["volumeName"] = volume_name
            status = {"phase": "Bound", "accessModes": modes, "capacity": {"storage": storage}}
        pvc = {
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "metadata": meta,
            "spec": spec,
            "status": status,
        }
        self._pvcs[(namespace, name)] = pvc
        return pvc

    def add_pv(
        self,
        name: str,
        volume_handle: str | None = None,
        driver: str = "rds.csi.srvlab.io",
        claim: tuple[str, str, str] | None = None,
        *,
        capacity: str = "1Gi",
        fs_type: str = "ext4",
        volume_attributes: Mapping[str, str] | None = None,
        storage_class: str = "rds-nvme",
        access_modes: Iterable[str] = ("ReadWriteOnce",),
        volume_mode: str = "Filesystem",
        uid: str | None = None,
    ) -> dict[str, JSON]:
        """Store a CSI PersistentVolume; `claim=(namespace, name, uid)` binds it (and the PVC,
        if stored and still unbound, the way the PV controller would)."""
        csi: dict[str, JSON] = {
            "driver": driver,
            "volumeHandle": volume_handle or name,
            "fsType": fs_type,
        }
        if volume_attributes:
            csi["volumeAttributes"] = dict(volume_attributes)
        meta = self._new_meta(name, None, uid)
        meta["annotations"] = {"pv.kubernetes.io/provisioned-by": driver}
        meta["finalizers"] = ["kubernetes.io/pv-protection"]
        spec: dict[str, JSON] = {
            "accessModes": list(access_modes),
            "capacity": {"storage": capacity},
            "csi": csi,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": storage_class,
            "volumeMode": volume_mode,
        }
        phase = "Available"
        if claim is not None:
            claim_ns, claim_name, claim_uid = claim
            spec["claimRef"] = {
                "kind": "PersistentVolumeClaim",
                "namespace": claim_ns,
                "name": claim_name,
                "uid": claim_uid,
                "apiVersion": "v1",
            }
            phase = "Bound"
            pvc = self._pvcs.get((claim_ns, claim_name))
            if pvc is not None and not pvc["spec"].get("volumeName"):
                pvc["spec"]["volumeName"] = name
                pvc["status"] = {
                    "phase": "Bound",
                    "accessModes": list(pvc["spec"]["accessModes"]),
                    "capacity": {"storage": capacity},
                }
                pvc["metadata"]["resourceVersion"] = self._next_rv()
        pv = {
            "kind": "PersistentVolume",
            "apiVersion": "v1",
            "metadata": meta,
            "spec": spec,
            "status": {"phase": phase},
        }
        self._pvs[name] = pv
        return pv

    def add_node(
        self,
        name: str,
        uid: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        internal_ip: str = "10.0.0.10",
    ) -> dict[str, JSON]:
        meta = self._new_meta(name, None, uid)
        meta["labels"] = {"kubernetes.io/hostname": name, **(labels or {})}
        node = {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": meta,
            "spec": {},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": internal_ip},
                    {"type": "Hostname", "address": name},
                ],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }
        self._nodes[name] = node
        return node

    def delete_pvc(self, namespace: str, name: str) -> dict[str, JSON] | None:
        return self._pvcs.pop((namespace, name), None)

    def delete_pv(self, name: str) -> dict[str, JSON] | None:
        return self._pvs.pop(name, None)

    def delete_node(self, name: str) -> dict[str, JSON] | None:
        return self._nodes.pop(name, None)

    # ------------------------------------------------------------------ events as stored

    def _render_event(self, event: Mapping[str, JSON], group: str, typed: bool = True) -> JSON:
        if group == EVENTS_GROUP:
            body = encode_object(core_to_v1(event), EVENTS_V1_EVENT)
            type_meta = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
        else:
            body = encode_object(event, CORE_EVENT)
            type_meta = {"kind": "Event", "apiVersion": "v1"}
        body.pop("kind", None)
        body.pop("apiVersion", None)
        return {**type_meta, **body} if typed else body

    def events(self, namespace: str | None = None, group: str = "core") -> list[JSON]:
        """Stored Events as the API would return them (`group="events.k8s.io"` for v1)."""
        wire_group = EVENTS_GROUP if group == EVENTS_GROUP else CORE
        return [
            self._render_event(ev, wire_group)
            for (ns, _), ev in sorted(self._events.items())
            if namespace is None or ns == namespace
        ]

    def event(self, namespace: str, name: str, group: str = "core") -> JSON | None:
        stored = self._events.get((namespace, name))
        if stored is None:
            return None
        return self._render_event(stored, EVENTS_GROUP if group == EVENTS_GROUP else CORE)

    def expire_events(self) -> int:
        """Drop every stored Event, as the 1 h TTL would; returns how many went."""
        count = len(self._events)
        self._events.clear()
        return count

    # ------------------------------------------------------------------ faults, RBAC, limits

    def inject(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def release_hangs(self) -> None:
        """Let every request held by a `hang` fault go on (later hangs hold again)."""
        if self._release is not None:
            self._release.set()
            self._release = asyncio.Event()

    async def wait_for_fault(self, fault: Fault, fired: int = 1, timeout: float = 5.0) -> None:
        """Until `fault` fired `fired` times (counted on arrival, before any delay or hang)."""
        await self._wait(lambda: fault.fired >= fired, timeout)

    def forbid(
        self,
        verb: str,
        resource: str,
        *,
        group: str | None = None,
        namespace: str | None = None,
    ) -> None:
        """RBAC says no: `verb` ("get", "create", "*", ...) on `resource` ("*" for all)."""
        self._forbidden.append((verb, resource, group, namespace))

    def allow_all(self) -> None:
        self._forbidden.clear()

    def limit_events(
        self, qps: float, burst: int, limit_type: str = "Server", cache_size: int = 4096
    ) -> None:
        """EventRateLimit admission: core/v1 Event creates and updates beyond the bucket get 429.

        Like the real plugin it only matches the core group's Event kind, so events.k8s.io/v1
        requests are not limited.  `limit_type` is Server, Namespace, User or SourceAndObject.
        """
        if limit_type not in ("Server", "Namespace", "User", "SourceAndObject"):
            raise ValueError(f"unknown event rate limit type: {limit_type}")
        self._limits.append(_EventLimit(limit_type, qps, burst, cache_size))

    def clear_event_limits(self) -> None:
        self._limits.clear()

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    def clear_requests(self) -> None:
        self._requests.clear()

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Until at least `n` requests were answered in total; returns the log."""
        await self._wait(lambda: len(self._requests) >= n, timeout)
        return self.requests

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        if self._changed is None:
            raise RuntimeError("the emulator is not started")
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    # ------------------------------------------------------------------ HTTP entry point

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        fault = self._take_fault(request.method, request.path)
        response: web.Response | None
        if fault is not None:
            await self._notify()
            response = await self._fire(fault, request, raw)
        else:
            response = self._respond(request, raw)
        try:
            body: JSON = _load_json(raw) if raw else None
        except ValueError:
            body = None
        answer: JSON = None
        if response is not None and isinstance(response.body, bytes):
            answer = json.loads(response.body)
        self._requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                content_type=request.headers.get("Content-Type"),
                body=_plain_json(body),
                status=None if response is None else response.status,
                time=asyncio.get_running_loop().time(),
                fault=fault,
                response=answer,
                user_agent=request.headers.get("User-Agent"),
            )
        )
        await self._notify()
        if response is None:
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPInternalServerError()  # never reaches the client: the socket is gone
        return response

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if not fault.matches(method, path):
                continue
            if fault.probability is not None and self._fault_rng.random() >= fault.probability:
                continue
            fault.fired += 1
            return fault
        return None

    async def _fire(self, fault: Fault, request: web.Request, raw: bytes) -> web.Response | None:
        assert self._shutdown is not None and self._release is not None
        if fault.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._shutdown.wait(), fault.delay)
        if fault.hang and not self._shutdown.is_set():
            release, shutdown = self._release.wait(), self._shutdown.wait()
            waiters = [asyncio.ensure_future(release), asyncio.ensure_future(shutdown)]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        if fault.reset or self._shutdown.is_set():
            return None
        if fault.status is None:
            return self._respond(request, raw)
        reason = fault.body_reason or _REASON_BY_CODE.get(fault.status, "")
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        error = ApiError(
            fault.status, reason, f"injected fault: HTTP {fault.status}", None, headers
        )
        return self._error_response(error)

    def _error_response(self, error: ApiError) -> web.Response:
        return self._json(error.code, error.status(), error.headers)

    def _json(
        self,
        status: int,
        body: JSON,
        headers: Mapping[str, str] | None = None,
        warnings: Iterable[str] = (),
    ) -> web.Response:
        out: CIMultiDict[str] = CIMultiDict(headers or {})
        out["Audit-Id"] = str(uuid.uuid4())
        for warning in warnings:
            out.add("Warning", f"299 - {go_quote(warning)}")
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return web.Response(
            status=status, body=payload, content_type="application/json", headers=out
        )

    def _respond(self, request: web.Request, raw: bytes) -> web.Response:
        try:
            return self._serve(request, raw)
        except ApiError as error:
            return self._error_response(error)

    # ------------------------------------------------------------------ the request path

    def _serve(self, request: web.Request, raw: bytes) -> web.Response:
        if self.token is not None and not self._authenticated(request):
            raise _UNAUTHORIZED
        path, method, query = request.path, request.method, request.query
        discovery = self._discovery(path)
        if discovery is not None:
            if method != "GET":
                raise _METHOD_NOT_ALLOWED
            return self._json(200, discovery)
        route = _route(path)
        if route is None:
            raise _NOT_FOUND_PATH
        verb = _verb(method, route, query)
        if verb is None:
            raise _METHOD_NOT_ALLOWED
        self._authorize(verb, route)
        if len(raw) > MAX_REQUEST_BODY_BYTES:
            raise ApiError(
                413,
                "RequestEntityTooLarge",
                f"Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}",
            )
        if verb == "watch":
            raise ApiError(405, "MethodNotAllowed", "watch is not emulated", {})
        if route.resource != "events":
            return self._read_object(route, verb, query)
        content_type = request.headers.get("Content-Type", "")
        strictness = query.get("fieldValidation", "Warn")
        if verb == "get":
            return self._json(200, self._render_event(self._stored(route), route.group))
        if verb == "list":
            return self._list_events(route, query)
        if verb == "delete":
            return self._delete_event(route)
        if verb == "create":
            return self._create_event(route, raw, content_type, strictness)
        if verb == "update":
            return self._replace_event(route, raw, content_type, strictness)
        return self._patch_event(route, raw, content_type, strictness)

    def _authenticated(self, request: web.Request) -> bool:
        parts = request.headers.get("Authorization", "").split(" ")
        return len(parts) == 2 and parts[0].lower() == "bearer" and parts[1] == self.token

    def _authorize(self, verb: str, route: _Route) -> None:
        for f_verb, f_resource, f_group, f_namespace in self._forbidden:
            if f_verb not in ("*", verb) or f_resource not in ("*", route.resource):
                continue
            if f_group is not None and f_group != route.group:
                continue
            if f_namespace is not None and f_namespace != route.namespace:
                continue
            where = (
                f"in the namespace {go_quote(route.namespace)}"
                if route.namespace
                else "at the cluster scope"
            )
            why = (
                f"User {go_quote(self.user)} cannot {verb} resource {go_quote(route.resource)} "
                f"in API group {go_quote(route.group)} {where}"
            )
            raise _forbidden(route.group, route.resource, route.name or "", why)

    # ------------------------------------------------------------------ reads

    def _read_object(self, route: _Route, verb: str, query: Mapping[str, str]) -> web.Response:
        table: Mapping[Any, dict[str, JSON]]
        if route.resource == "persistentvolumeclaims":
            table = self._pvcs
            key: Any = (route.namespace, route.name)
        elif route.resource == "persistentvolumes":
            table, key = self._pvs, route.name
        else:
            table, key = self._nodes, route.name
        if verb == "get":
            found = table.get(key)
            if found is None:
                raise _not_found(CORE, route.resource, route.name or "")
            return self._json(200, found)
        items = [
            obj
            for k, obj in sorted(table.items(), key=lambda kv: str(kv[0]))
            if route.namespace is None or k[0] == route.namespace
        ]
        items = self._select(items, query, _OBJECT_FIELDS[route.resource])
        return self._json(200, self._list_body(route, [self._untyped(o) for o in items]))

    @staticmethod
    def _untyped(obj: Mapping[str, JSON]) -> dict[str, JSON]:
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}

    def _list_body(self, route: _Route, items: list[JSON]) -> dict[str, JSON]:
        return {
            "kind": f"{route.kind}List",
            "apiVersion": "events.k8s.io/v1" if route.group == EVENTS_GROUP else "v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    @staticmethod
    def _select(
        items: list[dict[str, JSON]], query: Mapping[str, str], fields: Mapping[str, str]
    ) -> list[dict[str, JSON]]:
        labels = _label_selector(query.get("labelSelector", ""))
        wanted = _field_selector(query.get("fieldSelector", ""), fields)

        def keep(obj: Mapping[str, JSON]) -> bool:
            obj_labels = obj["metadata"].get("labels") or {}
            return all(
                r.matches(obj_labels.get(r.key), r.key in obj_labels) for r in labels
            ) and all(r.matches(_field_value(obj, r.key), True) for r in wanted)

        return [obj for obj in items if keep(obj)]

    def _stored(self, route: _Route) -> dict[str, JSON]:
        assert route.namespace is not None and route.name is not None
        stored = self._events.get((route.namespace, route.name))
        if stored is None:
            raise _not_found(route.group, route.resource, route.name)
        return stored

    def _list_events(self, route: _Route, query: Mapping[str, str]) -> web.Response:
        items = [
            ev
            for (ns, _), ev in sorted(self._events.items())
            if route.namespace is None or ns == route.namespace
        ]
        items = self._select(items, query, _EVENT_FIELDS)
        rendered = [self._render_event(ev, route.group, typed=False) for ev in items]
        return self._json(200, self._list_body(route, rendered))

    def _delete_event(self, route: _Route) -> web.Response:
        stored = self._stored(route)
        assert route.namespace is not None and route.name is not None
        del self._events[(route.namespace, route.name)]
        self._next_rv()
        details = _details(route.group, route.resource, route.name, uid=stored["metadata"]["uid"])
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        return self._json(200, {**body, "details": details})

    # ------------------------------------------------------------------ event writes

    def _decode_event(
        self, document: JSON, group: str, strictness: str
    ) -> tuple[dict[str, JSON], list[str]]:
        """Decode a versioned Event body into the canonical (core) form, or a 400."""
        expected = "events.k8s.io/v1" if group == EVENTS_GROUP else "v1"
        if isinstance(document, dict):
            api_version = document.get("apiVersion")
            if isinstance(api_version, str) and api_version and api_version != expected:
                raise _bad_request(
                    f"the API version in the data ({api_version}) does not match the expected "
                    f"API version ({expected})"
                )
            kind = document.get("kind")
            if isinstance(kind, str) and kind and kind != "Event":
                raise _bad_request(
                    f'{kind} in version "v1" cannot be handled as a Event: no kind '
                    f'"{kind}" is registered for version "{expected}"'
                )
        schema = EVENTS_V1_EVENT if group == EVENTS_GROUP else CORE_EVENT
        try:
            obj, unknown = decode_object(document, schema)
        except DecodeError as exc:
            raise _bad_request(
                f'Event in version "v1" cannot be handled as a Event: {exc}'
            ) from None
        warnings = [f'unknown field "{path}"' for path in unknown]
        if warnings and strictness == "Strict":
            raise _bad_request(
                'Event in version "v1" cannot be handled as a Event: strict decoding error: '
                + ", ".join(warnings)
            )
        event = v1_to_core(obj) if group == EVENTS_GROUP else obj
        return event, [] if strictness == "Ignore" else warnings

    def _read_body(self, raw: bytes, content_type: str) -> JSON:
        media = content_type.split(";")[0].strip().lower()
        if media and media != "application/json":
            if media in _BODY_TYPES:
                raise ApiError(415, "UnsupportedMediaType", f"{media} bodies are not emulated")
            raise _unsupported_media(_BODY_TYPES)
        try:
            return _load_json(raw)
        except ValueError as exc:
            summary = "<empty>" if not raw else raw[:30].decode("utf-8", "replace")
            raise _bad_request(
                "the object provided is unrecognized (must be of type Event): couldn't get "
                f"version/kind; json parse error: {exc} ({summary})"
            ) from None

    def _namespace_admission(self, route: _Route, name: str, creating: bool) -> None:
        """NamespaceLifecycle: no writes into missing namespaces, no creates while terminating."""
        namespace = route.namespace or ""
        if not self._namespace_exists(namespace):
            raise _not_found(CORE, "namespaces", namespace)
        if creating and self._namespaces.get(namespace) == "Terminating":
            cause = {
                "reason": "NamespaceTerminating",
                "message": f"namespace {namespace} is being terminated",
                "field": "metadata.namespace",
            }
            why = (
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated"
            )
            raise _forbidden(route.group, route.resource, name, why, causes=[cause])

    def _rate_limit(self, route: _Route, event: Mapping[str, JSON]) -> None:
        """EventRateLimit admission; every configured limit takes a token, as in the plugin."""
        if route.group != CORE or not self._limits:
            return
        now = self._clock()
        involved = event["involvedObject"]
        keys = {
            "Server": "",
            "Namespace": route.namespace or "",
            "User": self.user,
            "SourceAndObject": "".join(
                [event["source"]["component"], event["source"]["host"]]
                + [involved[k] for k in ("kind", "namespace", "name", "uid", "apiVersion")]
            ),
        }
        rejection = None
        for limit in self._limits:
            key = keys[limit.type]
            if not limit.accept(key, now):
                rejection = f"limit reached on type {limit.type} for key {key}"
        if rejection is not None:
            raise ApiError(429, "TooManyRequests", f"Too many requests: {rejection}")

    def _generate_name(self, base: str) -> str:
        suffix = "".join(self._name_rng.choice(_NAME_ALPHABET) for _ in range(5))
        return base[:58] + suffix

    def _store_new(self, route: _Route, event: dict[str, JSON]) -> dict[str, JSON]:
        """What create (and create-on-update) share after decoding and namespace admission."""
        meta = event["metadata"]
        namespace = route.namespace or ""
        if not meta["namespace"]:
            meta["namespace"] = namespace
        elif meta["namespace"] != namespace:
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        kind_group = route.group
        errors = validate_event_create(event, route.group)
        if errors:
            raise _invalid(kind_group, "Event", meta["name"], errors)
        errors = validate_object_meta(meta, name_rule="path")
        if errors:
            raise _invalid(kind_group, "Event", meta["name"], errors)
        self._rate_limit(route, event)
        rv = meta["resourceVersion"]
        if rv.isdigit() and int(rv) != 0:
            raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
        if (namespace, meta["name"]) in self._events:
            raise _already_exists(route.group, route.resource, meta["name"])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = datetime.now(UTC).replace(microsecond=0)
        meta["resourceVersion"] = self._next_rv()
        meta.update(selfLink="", deletionTimestamp=None, deletionGracePeriodSeconds=None)
        meta["managedFields"] = []  # not emulated; better none than the client's own
        self._events[(namespace, meta["name"])] = event
        return event

    def _create_event(
        self, route: _Route, raw: bytes, content_type: str, strictness: str
    ) -> web.Response:
        document = self._read_body(raw, content_type)
        event, warnings = self._decode_event(document, route.group, strictness)
        meta = event["metadata"]
        if not meta["name"] and meta["generateName"]:
            meta["name"] = self._generate_name(meta["generateName"])
        self._namespace_admission(route, meta["name"], creating=True)
        stored = self._store_new(route, event)
        return self._json(201, self._render_event(stored, route.group), warnings=warnings)

    def _replace_event(
        self, route: _Route, raw: bytes, content_type: str, strictness: str
    ) -> web.Response:
        document = self._read_body(raw, content_type)
        event, warnings = self._decode_event(document, route.group, strictness)
        meta = event["metadata"]
        if meta["name"] != route.name:
            raise _bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({route.name})"
            )
        if meta["namespace"] and meta["namespace"] != route.namespace:
            raise _bad_request(
                f"the namespace of the object ({meta['namespace']}) does not match the namespace "
                f"on the request ({route.namespace})"
            )
        assert route.namespace is not None and route.name is not None
        current = self._events.get((route.namespace, route.name))
        if current is None:  # the event strategy allows create-on-update
            self._authorize("create", route)
            self._namespace_admission(route, route.name, creating=True)
            meta["resourceVersion"] = ""
            stored = self._store_new(route, event)
            return self._json(201, self._render_event(stored, route.group), warnings=warnings)
        updated = self._update(route, current, event)
        return self._json(200, self._render_event(updated, route.group), warnings=warnings)

    def _patch_event(
        self, route: _Route, raw: bytes, content_type: str, strictness: str
    ) -> web.Response:
        media = content_type.split(";")[0].strip().lower()
        if media not in _PATCH_TYPES:
            raise _unsupported_media(_PATCH_TYPES)
        if media == "application/apply-patch+yaml":
            raise ApiError(415, "UnsupportedMediaType", "server-side apply is not emulated")
        current = self._stored(route)
        base = self._render_event(current, route.group)
        try:
            patch = _load_json(raw)
        except ValueError as exc:
            raise _bad_request(f"error decoding patch: {exc}") from None
        if media == "application/json-patch+json":
            if not isinstance(patch, list):
                raise _bad_request(
                    f"error decoding patch: json: cannot unmarshal {type(patch).__name__} "
                    "into Go value of type []handlers.jsonPatchOp"
                )
            try:
                patched = _json_patch(base, patch)
            except _JsonPatchError as exc:
                raise _unprocessable(str(exc)) from None
            shown = _compact(_plain_json(patched))
        else:
            if not isinstance(patch, dict):
                raise _bad_request(
                    "error decoding patch: json: cannot unmarshal non-object into Go value of "
                    "type map[string]interface {}"
                )
            strategic = media == "application/strategic-merge-patch+json"
            patched = _merge_patch(base, patch, strategic)
            shown = _go_map(_plain_json(patch)) if strategic else _compact(_plain_json(patched))
        try:
            event, warnings = self._decode_event(patched, route.group, strictness)
        except ApiError as error:
            detail = error.message.split("cannot be handled as a Event: ", 1)[-1]
            field_error = FieldError("FieldValueInvalid", "patch", shown, detail)
            raise _invalid("", "", "", [field_error]) from None
        meta = event["metadata"]
        if meta["namespace"] and meta["namespace"] != route.namespace:
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        if meta["name"] != route.name:
            raise _bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({route.name})"
            )
        updated = self._update(route, current, event)
        return self._json(200, self._render_event(updated, route.group), warnings=warnings)

    def _update(
        self, route: _Route, current: dict[str, JSON], event: dict[str, JSON]
    ) -> dict[str, JSON]:
        """Admission, the optimistic-concurrency check, BeforeUpdate and validation, storage."""
        assert route.name is not None
        self._namespace_admission(route, route.name, creating=False)
        meta, old_meta = event["metadata"], current["metadata"]
        rv = meta["resourceVersion"]
        if rv and rv != "0":
            if not rv.isdigit():  # what APIObjectVersioner.ParseResourceVersion reports
                detail = f"strconv.ParseUint: parsing {go_quote(rv)}: invalid syntax"
                error = FieldError("FieldValueInvalid", "resourceVersion", rv, detail)
                raise _invalid(route.group, route.resource, route.name, [error])
            if rv != old_meta["resourceVersion"]:
                raise _conflict(route.group, route.resource, route.name, _OPTIMISTIC_LOCK)
        if not meta["namespace"]:
            meta["namespace"] = route.namespace or ""
        if not meta["uid"]:
            meta["uid"] = old_meta["uid"]
        meta["creationTimestamp"] = old_meta["creationTimestamp"]
        meta["managedFields"] = []
        errors = validate_object_meta_update(meta, old_meta)
        errors += validate_event_update(event, current, route.group)
        if errors:
            raise _invalid(route.group, "Event", route.name, errors)
        self._rate_limit(route, event)
        meta["resourceVersion"] = self._next_rv()
        self._events[(meta["namespace"], meta["name"])] = event
        return event

    # ------------------------------------------------------------------ discovery

    def _discovery(self, path: str) -> JSON | None:
        resource = {"namespaced": True, "kind": "Event", "name": "events", "singularName": "event"}
        verbs = ["create", "delete", "get", "list", "patch", "update"]
        if path == "/version":
            return {"major": "1", "minor": "36", "gitVersion": "v1.36.0-rds-csi-emulator"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            version = {"groupVersion": "events.k8s.io/v1", "version": "v1"}
            group = {"name": EVENTS_GROUP, "versions": [version], "preferredVersion": version}
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
        if path == "/api/v1":
            resources = [
                {**resource, "verbs": verbs},
                {
                    "name": "nodes",
                    "singularName": "node",
                    "namespaced": False,
                    "kind": "Node",
                    "verbs": ["get", "list"],
                },
                {
                    "name": "persistentvolumeclaims",
                    "singularName": "persistentvolumeclaim",
                    "namespaced": True,
                    "kind": "PersistentVolumeClaim",
                    "verbs": ["get", "list"],
                },
                {
                    "name": "persistentvolumes",
                    "singularName": "persistentvolume",
                    "namespaced": False,
                    "kind": "PersistentVolume",
                    "verbs": ["get", "list"],
                },
            ]
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}
        if path == "/apis/events.k8s.io/v1":
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "events.k8s.io/v1",
                "resources": [{**resource, "verbs": verbs}],
            }
        return None


def _plain_json(value: JSON) -> JSON:
    """Decoded request JSON without the GoNumber wrapper, for the request log."""
    if isinstance(value, GoNumber):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    return value


# --------------------------------------------------------------------------- demo entry point


async def _serve_forever(port: int, token: str | None) -> None:
    async with ApiServerEmulator(token=token, port=port) as api:
        print(f"Kubernetes API emulator listening on {api.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """`python -m rds_csi.testing.apiserver --port 6443`: an emulator for manual demos."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--token", default="test-token", help="bearer token; '' disables auth")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, args.token or None))


if __name__ == "__main__":
    main()
