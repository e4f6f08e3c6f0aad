"""The CSI gRPC transport: a grpclib server on a unix socket, with per-RPC logging and a
graceful drain.

Business logic lives in the service classes; this module only binds the socket safely, observes
every call (one log line each: method, volume_id, code, duration), turns unexpected exceptions
into a short INTERNAL status and lets in-flight calls finish on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from grpclib.const import Status
from grpclib.events import RecvMessage, RecvRequest, listen
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from rds_csi.logs import redact

__all__ = ["CsiServer", "RpcObserver", "SocketInUseError", "bind_unix_socket"]

log = structlog.get_logger("rds_csi.rpc")

SOCKET_MODE = 0o660

# Called once per finished RPC: (method, grpc status, seconds).  The metrics endpoint hooks in here.
RpcDoneHook = Callable[[str, Status, float], None]


class SocketInUseError(RuntimeError):
    """The socket path is served by another live process, or is not a socket at all."""


@dataclass
class _CallInfo:
    method: str
    volume_id: str | None = None


_current_call: ContextVar[_CallInfo | None] = ContextVar("rds_csi_current_call", default=None)


def _short_method(full: str) -> str:
    """'/csi.v1.Node/NodeStageVolume' -> 'NodeStageVolume'."""
    return full.rsplit("/", 1)[-1]


class RpcObserver:
    """Wraps every request handler of a grpclib server.

    grpclib hands servicer methods only the message, so the wrapping happens through its event
    hooks: RecvRequest swaps in an observing handler, RecvMessage (same task) reads volume_id.
    """

    def __init__(self, on_done: RpcDoneHook | None = None) -> None:
        self._on_done = on_done
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def install(self, server: Server) -> None:
        listen(server, RecvRequest, self._on_request)
        listen(server, RecvMessage, self._on_message)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def _on_message(self, event: RecvMessage) -> None:
        call = _current_call.get()
        if call is None:
            return
        volume_id = getattr(event.message, "volume_id", None)
        if volume_id:
            call.volume_id = volume_id
            structlog.contextvars.bind_contextvars(volume_id=volume_id)
        if log.is_enabled_for(10):  # logging.DEBUG, without building the dict otherwise
            log.debug("rpc request", request=redact(event.message.to_dict()))

    async def _on_request(self, event: RecvRequest) -> None:
        handler = event.method_func
        method = _short_method(event.method_name)

        async def observed(stream: Any) -> None:
            if self.draining:
                raise GRPCError(Status.UNAVAILABLE, "the node plugin is shutting down")
            await self._run(handler, stream, method)

        event.method_func = observed

    async def _run(self, handler: Any, stream: Any, method: str) -> None:
        call = _CallInfo(method=method)
        _current_call.set(call)
        structlog.contextvars.bind_contextvars(rpc=method)
        self._in_flight += 1
        self._idle.clear()
        started = time.perf_counter()
        status, message = Status.OK, None
        try:
            await handler(stream)
        except GRPCError as err:
            status, message = err.status, err.message
            raise
        except asyncio.CancelledError:
            status, message = Status.CANCELLED, "cancelled (client deadline or disconnect)"
            raise
        except Exception as exc:
            # The traceback stays in our log (rendered without locals); the client gets a
            # short, stable message.
            log.error("rpc raised an unexpected exception", exc_info=True)
            status = Status.INTERNAL
            message = f"internal error ({type(exc).__name__}); see the node plugin log"
            raise GRPCError(status, message) from None
        finally:
            elapsed = time.perf_counter() - started
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
            fields: dict[str, Any] = {
                "method": method,
                "code": status.name,
                "duration_ms": round(elapsed * 1000, 3),
            }
            if call.volume_id:
                fields["volume_id"] = call.volume_id
            if message and status is not Status.OK:
                fields["error"] = message
            level = log.info if status in (Status.OK, Status.CANCELLED) else log.warning
            level("rpc", **fields)
            if self._on_done is not None:
                try:
                    self._on_done(method, status, elapsed)
                except Exception:  # a metrics hook must never replace the RPC's own result
                    log.error("rpc hook failed", exc_info=True)


def _socket_is_served(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as err:
        if err.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    else:
        return True
    finally:
        probe.close()


def bind_unix_socket(path: Path, mode: int = SOCKET_MODE) -> socket.socket:
    """Bind a listening unix socket with `mode`, removing a stale socket left by a crash.

    A live socket (another instance answering) and a non-socket file are never removed.
    The umask is narrowed around bind() so the socket never exists with wider permissions.
    """
    if path.is_symlink() or path.exists():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SocketInUseError(f"{path} exists and is not a socket; refusing to remove it")
        if _socket_is_served(path):
            raise SocketInUseError(f"another process is already serving {path}")
        path.unlink()
        log.info("removed stale socket", path=str(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous_umask)
    os.chmod(path, mode)
    sock.listen(128)
    sock.setblocking(False)
    return sock


class CsiServer:
    """Owns the grpclib server, its socket and the drain on shutdown."""

    def __init__(self, services: Sequence[Any], on_rpc_done: RpcDoneHook | None = None) -> None:
        self._server = Server(list(services))
        self.observer = RpcObserver(on_rpc_done)
        self.observer.install(self._server)
        self._path: Path | None = None

    async def start(self, path: Path) -> None:
        sock = bind_unix_socket(path)
        try:
            await self._server.start(sock=sock)
        except BaseException:
            sock.close()
            path.unlink(missing_ok=True)
            raise
        self._path = path
        log.info("listening", socket=str(path), mode=oct(SOCKET_MODE))

    async def stop(self, grace: float) -> bool:
        """Refuse new calls, let in-flight ones finish within `grace`, then close.

        Returns False when calls had to be cancelled at the deadline.
        """
        self.observer.draining = True
        if self._path is not None:
            # Nothing new can connect once the path is gone; existing connections get
            # UNAVAILABLE for new calls while the old ones finish.
            self._path.unlink(missing_ok=True)
        drained = True
        if self.observer.in_flight:
            log.info("waiting for in-flight rpcs", count=self.observer.in_flight, grace_s=grace)
            try:
                await asyncio.wait_for(self.observer.wait_idle(), grace)
            except TimeoutError:
                drained = False
                log.warning("grace period over, cancelling rpcs", count=self.observer.in_flight)
        self._server.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.wait_closed()
        return drained
