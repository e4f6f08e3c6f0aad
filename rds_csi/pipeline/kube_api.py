"""The few API calls the Kubernetes sink makes, as raw JSON over a kubernetes-asyncio ApiClient.

Responses are read with `_preload_content=False`: no model deserialisation (which also
validates required fields and can raise on a perfectly good answer), any HTTP status comes
back as a value instead of an exception, and the body is released at once.  Every call has a
timeout; transport failures become one exception type with a short cause.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client, config

__all__ = ["ApiResponse", "EventApi", "EventTransport", "TransportError", "load_configuration"]

CORE = "core"
EVENTS_V1 = "events.k8s.io"


async def load_configuration(
    kubeconfig: str | None = None, *, context: str | None = None, in_cluster: bool | None = None
) -> client.Configuration:
    """Where the API server is: a named kubeconfig first, else the pod's service account when
    running in a pod (or `in_cluster`), else the default kubeconfig."""
    configuration = client.Configuration()
    if in_cluster is None:
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    return configuration


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: Any  # parsed JSON, or None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def status_message(self) -> tuple[str, str]:
        """(reason, message) of a metav1.Status body, or ("", "")."""
        if isinstance(self.body, dict):
            return str(self.body.get("reason", "")), str(self.body.get("message", ""))
        return "", ""


class TransportError(Exception):
    """No HTTP answer: connection refused or reset, TLS failure, or the call timed out."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause  # "timeout" or "error"
        self.detail = detail


class EventTransport(Protocol):
    """What the sink needs from the API; `EventApi` is the real one, tests may fake it."""

    async def create_event(
        self, group: str, namespace: str, body: dict[str, Any]
    ) -> ApiResponse: ...

    async def patch_event(
        self, group: str, namespace: str, name: str, body: dict[str, Any]
    ) -> ApiResponse: ...

    async def get_object(self, kind: str, namespace: str, name: str) -> ApiResponse: ...


class EventApi:
    def __init__(self, api_client: client.ApiClient, *, timeout: float) -> None:
        self._timeout = timeout
        self._core = client.CoreV1Api(api_client)
        self._events = client.EventsV1Api(api_client)
        self._getters: dict[str, Callable[[str, str], Awaitable[Any]]] = {
            "PersistentVolumeClaim": lambda ns, name: (
                self._core.read_namespaced_persistent_volume_claim(name, ns, **self._raw())
            ),
            "Pod": lambda ns, name: self._core.read_namespaced_pod(name, ns, **self._raw()),
            "PersistentVolume": lambda _ns, name: self._core.read_persistent_volume(
                name, **self._raw()
            ),
            "Node": lambda _ns, name: self._core.read_node(name, **self._raw()),
        }

    def _raw(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": self._timeout}

    async def create_event(self, group: str, namespace: str, body: dict[str, Any]) -> ApiResponse:
        api = self._events if group == EVENTS_V1 else self._core
        # A plain dict is serialised as it is (the stubs ask for a model, the code does not).
        raw: Any = body
        return await self._send(lambda: api.create_namespaced_event(namespace, raw, **self._raw()))

    async def patch_event(
        self, group: str, namespace: str, name: str, body: dict[str, Any]
    ) -> ApiResponse:
        """A dict body goes out as application/strategic-merge-patch+json."""
        api = self._events if group == EVENTS_V1 else self._core
        return await self._send(
            lambda: api.patch_namespaced_event(name, namespace, body, **self._raw())
        )

    async def get_object(self, kind: str, namespace: str, name: str) -> ApiResponse:
        getter = self._getters[kind]
        return await self._send(lambda: getter(namespace, name))

    async def _send(self, call: Callable[[], Awaitable[Any]]) -> ApiResponse:
        try:
            # aiohttp's own timeout covers the request; this one also covers reading the body.
            async with asyncio.timeout(self._timeout):
                response: aiohttp.ClientResponse = await call()
                try:
                    data = await response.read()
                finally:
                    response.release()
        except TimeoutError as exc:
            raise TransportError("timeout", f"no answer within {self._timeout}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError("error", repr(exc)[:300]) from exc
        return ApiResponse(response.status, _json(data), response.headers.get("Retry-After"))


def _json(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None
