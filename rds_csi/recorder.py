"""The facade callers use to record Kubernetes events (client-go `record.EventRecorder`).

Recording must never hurt the caller: every method is synchronous, O(1), never blocks and never
raises.  Bad input is logged (rate-limited), counted in `PipelineStats.dropped` by cause and
dropped; everything else becomes an `Event` handed to the broadcaster without waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from rds_csi.pipeline.clock import SYSTEM_CLOCK, Clock
from rds_csi.pipeline.model import NORMAL, WARNING, Event, ObjectRef
from rds_csi.pipeline.naming import event_name, event_namespace
from rds_csi.pipeline.refs import InvalidObjectError, object_ref
from rds_csi.pipeline.stats import DropReporter, PipelineStats
from rds_csi.pipeline.truncate import (
    ACTION_LIMIT,
    MESSAGE_LIMIT,
    REASON_LIMIT,
    REPORTING_INSTANCE_LIMIT,
    truncate_middle_utf8,
    truncate_utf8,
)

__all__ = ["Emitter", "EventRecorder", "ThreadSafeRecorder"]

_log = structlog.get_logger(__name__)


class Emitter(Protocol):
    """What the recorder hands events to; `EventBroadcaster` is the real one."""

    def emit(self, event: Event) -> bool: ...


class _Rejected(Exception):
    """Internal: the input cannot make a valid event.  Never leaves this module."""

    def __init__(self, cause: str, **context: Any) -> None:
        super().__init__(cause)
        self.cause = cause
        self.context = context


class _RecordingMethods:
    """The call surface shared by EventRecorder and ThreadSafeRecorder (client-go's
    Event / Eventf / AnnotatedEventf); each class decides in `_record` where the work happens."""

    def event(
        self,
        obj: object,
        type: str,
        reason: str,
        message: str,
        *,
        action: str = "",
        related: object = None,
    ) -> None:
        """Record one occurrence of `reason` about `obj`."""
        self._record(obj, None, type, reason, message, (), action, related)

    def eventf(
        self,
        obj: object,
        type: str,
        reason: str,
        fmt: str,
        *args: object,
        action: str = "",
        related: object = None,
    ) -> None:
        """Like `event`, with a %-format message (formatted only when `args` are given)."""
        self._record(obj, None, type, reason, fmt, args, action, related)

    def annotated_eventf(
        self,
        obj: object,
        annotations: Mapping[str, str],
        type: str,
        reason: str,
        fmt: str,
        *args: object,
        action: str = "",
        related: object = None,
    ) -> None:
        """Like `eventf`, with annotations on the Event object itself."""
        self._record(obj, annotations, type, reason, fmt, args, action, related)

    def _record(
        self,
        obj: object,
        annotations: Mapping[str, str] | None,
        type_: str,
        reason: str,
        fmt: str,
        args: tuple[object, ...],
        action: str,
        related: object,
    ) -> None:
        raise NotImplementedError


class EventRecorder(_RecordingMethods):
    """Builds events about Kubernetes objects and passes them on, the way client-go does.

    `obj` and `related` may be kubernetes-asyncio models, dicts (API- or reference-shaped),
    `V1ObjectReference`s or `ObjectRef`s.  Must be called from the event loop's thread (or
    before the loop runs); other threads use `ThreadSafeRecorder`.
    """

    def __init__(
        self,
        broadcaster: Emitter,
        *,
        component: str,
        host: str,
        reporting_controller: str = "",
        reporting_instance: str = "",
        stats: PipelineStats | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._emitter = broadcaster
        self.component = component
        self.host = host
        self.reporting_controller = reporting_controller or component
        self.reporting_instance = truncate_utf8(
            reporting_instance or host, REPORTING_INSTANCE_LIMIT, marker=""
        )
        self.stats = stats if stats is not None else PipelineStats()
        self._clock = clock
        self._drops = DropReporter(self.stats, _log, clock=clock)

    def _record(
        self,
        obj: object,
        annotations: Mapping[str, str] | None,
        type_: str,
        reason: str,
        fmt: str,
        args: tuple[object, ...],
        action: str,
        related: object,
    ) -> None:
        try:
            message = fmt
            if args:
                message, error = format_message(fmt, args)
                if error is not None:
                    self._format_failed(fmt, error)
            related_ref = None if related is None else self._related_ref(related)
            event = self._build(obj, type_, reason, message, action, related_ref, annotations)
            self._emitter.emit(event)
        except _Rejected as rejected:
            self._reject(rejected)
        except Exception as exc:  # a bug must cost an event, never the caller's operation
            self._internal_error(exc)

    def _build(
        self,
        obj: object,
        type_: str,
        reason: object,
        message: object,
        action: object,
        related: ObjectRef | None,
        annotations: Mapping[str, str] | None,
    ) -> Event:
        """The event for these arguments, or `_Rejected`.  Pure: safe from any thread."""
        if type_ not in (NORMAL, WARNING):  # a tuple: compares, never hashes the input
            raise _Rejected("invalid_type", type=repr(type_)[:64])
        if not isinstance(reason, str) or not reason:
            raise _Rejected("invalid_reason", reason=repr(reason)[:64])
        try:
            ref = obj if type(obj) is ObjectRef else object_ref(obj)
        except InvalidObjectError as exc:
            raise _Rejected("invalid_object", error=str(exc)) from None
        if annotations is not None:
            try:
                annotations = {str(k): str(v) for k, v in annotations.items()}
            except Exception as exc:
                raise _Rejected("invalid_annotations", error=repr(exc)[:200]) from None
        now = self._clock.now_ns()
        # Positional on purpose: keyword construction of this 16-field dataclass costs more
        # than the rest of the call.  The order is Event's field order.
        return Event(
            event_name(ref.name, now),
            event_namespace(ref),
            ref,
            type_,
            truncate_utf8(reason, REASON_LIMIT),
            truncate_middle_utf8(_text(message), MESSAGE_LIMIT),
            self.component,
            self.host,
            self.reporting_controller,
            self.reporting_instance,
            now,  # first_timestamp_ns
            now,  # last_timestamp_ns
            1,  # count
            truncate_utf8(_text(action), ACTION_LIMIT) if action else "",
            related,
            annotations,
        )

    def _related_ref(self, related: object) -> ObjectRef | None:
        ref, error = related_object_ref(related)
        if error is not None:
            self._related_failed(error)
        return ref

    def _related_failed(self, error: InvalidObjectError) -> None:
        self._drops.warn("invalid_related", error=str(error))

    def _reject(self, rejected: _Rejected) -> None:
        self._drops.drop(rejected.cause, **rejected.context)

    def _format_failed(self, fmt: str, error: Exception) -> None:
        self.stats.format_errors += 1
        self._drops.warn("format_error", fmt=fmt[:200], error=repr(error)[:200])

    def _internal_error(self, error: BaseException) -> None:
        self._drops.drop("internal_error", error=repr(error)[:200])


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def format_message(fmt: str, args: tuple[object, ...]) -> tuple[str, Exception | None]:
    """`fmt % args` as stdlib logging does it; on failure the raw `fmt` and the error."""
    if not args:
        return fmt, None
    values: object = args
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        values = args[0]  # "%(volume)s" with a dict, as logging allows
    try:
        return fmt % values, None
    except Exception as exc:  # TypeError, ValueError, KeyError, or a failing __str__
        return fmt, exc


def related_object_ref(related: object) -> tuple[ObjectRef | None, InvalidObjectError | None]:
    """Like events/v1: an unusable `related` is left out; the event itself still goes out."""
    if related is None:
        return None, None
    try:
        return (related if type(related) is ObjectRef else object_ref(related)), None
    except InvalidObjectError as exc:
        return None, exc


class ThreadSafeRecorder(_RecordingMethods):
    """Records from threads other than the loop's (executor jobs, blocking host calls).

    The event is built in the calling thread, so its timestamp is the call's, and handed to the
    loop with `call_soon_threadsafe`.  Once the loop has stopped, calls are counted no-ops
    (cause "loop_stopped").  Create it inside the loop, or pass the loop.
    """

    def __init__(
        self, recorder: EventRecorder, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._recorder = recorder
        self._loop = loop if loop is not None else asyncio.get_running_loop()

    def _record(
        self,
        obj: object,
        annotations: Mapping[str, str] | None,
        type_: str,
        reason: str,
        fmt: str,
        args: tuple[object, ...],
        action: str,
        related: object,
    ) -> None:
        recorder = self._recorder
        try:
            message, error = format_message(fmt, args)
            if error is not None:
                self._post(recorder._format_failed, fmt, error)
            related_ref, related_error = related_object_ref(related)
            if related_error is not None:
                self._post(recorder._related_failed, related_error)
            event = recorder._build(obj, type_, reason, message, action, related_ref, annotations)
            self._post(recorder._emitter.emit, event)
        except _Rejected as rejected:
            self._post(recorder._reject, rejected)
        except Exception as exc:
            self._post(recorder._internal_error, exc)

    def _post(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop.is_running():
            try:
                loop.call_soon_threadsafe(callback, *args)
                return
            except RuntimeError:  # closed between the check and the call
                pass
        # The loop is gone, nothing else touches the stats any more.
        self._recorder.stats.drop("loop_stopped")
