"""A sink that writes one structured log line per event (client-go's StartStructuredLogging).

It sees every occurrence as recorded, with no correlation, so the log still shows what
happened when the API server is slow, down or rate-limiting the Kubernetes sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from rds_csi.pipeline.model import WARNING, Event

__all__ = ["LOGGER_NAME", "LogSink"]

LOGGER_NAME = "rds_csi.events"


class LogSink:
    """Warning events are logged at warning level, Normal ones at info."""

    def __init__(self, name: str = "log", logger: Any = None) -> None:
        self.name = name
        self._log = logger if logger is not None else structlog.get_logger(LOGGER_NAME)

    async def write(self, batch: Sequence[Event]) -> None:
        for event in batch:
            self._write_one(event)

    async def aclose(self, deadline: float) -> int:
        return 0  # every write is synchronous: nothing is ever held back

    def _write_one(self, event: Event) -> None:
        ref = event.involved
        fields: dict[str, Any] = {
            "type": event.type,
            "reason": event.reason,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "message": event.message,
            "count": event.count,
            "source": f"{event.source_component}/{event.source_host}",
            "reporting_instance": event.reporting_instance,
        }
        if ref.uid:
            fields["uid"] = ref.uid
        if event.action:
            fields["action"] = event.action
        if event.type == WARNING:
            self._log.warning("kubernetes event", **fields)
        else:
            self._log.info("kubernetes event", **fields)
