"""Logging set-up: structlog for our own lines, and the same rendering for stdlib loggers.

Two rules shape this module.  Request fields named ``secrets`` (every CSI secret field has that
name) never reach a log line, whatever logged them.  Tracebacks are rendered without local
variables, because structlog's default dict tracebacks print locals and a local can hold a secret.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
_SECRET_KEYS = frozenset({"secrets"})

__all__ = ["REDACTED", "configure_logging", "redact", "redact_secrets"]


def redact(value: Any) -> Any:
    """Return a copy of a nested mapping/sequence with every ``secrets`` mapping masked.

    Keys stay visible (an operator needs to know *which* secret was passed); values do not.
    """
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if key in _SECRET_KEYS:
                out[key] = dict.fromkeys(item, REDACTED) if isinstance(item, Mapping) else REDACTED
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets anywhere in the event dict."""
    for key, value in list(event_dict.items()):
        if key in _SECRET_KEYS:
            event_dict[key] = (
                dict.fromkeys(value, REDACTED) if isinstance(value, Mapping) else REDACTED
            )
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = redact(value)
    return event_dict


def _exception_renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
    return structlog.processors.format_exc_info


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    # plain_traceback never prints locals, unlike the rich/better-exceptions formatters that
    # ConsoleRenderer picks by default when those packages happen to be installed.
    return structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)


def configure_logging(
    *,
    fmt: str = "json",
    level: str = "info",
    stream: TextIO | None = None,
    cache_loggers: bool = True,
) -> None:
    """Configure structlog and route stdlib logging (grpclib, aiohttp, ...) through it."""
    out = stream if stream is not None else sys.stdout
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        structlog.processors.StackInfoRenderer(),
    ]
    structlog.configure(
        processors=[*shared, _exception_renderer(fmt), _renderer(fmt)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=cache_loggers,
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _exception_renderer(fmt),
                _renderer(fmt),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter (aiohttp access logs, hpack) stays at warning unless we debug.
    root.setLevel(numeric_level if numeric_level <= logging.DEBUG else logging.WARNING)
