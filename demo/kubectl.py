"""Render Events the way kubectl prints them, so the demo's output reads like a cluster's.

Two views: `kubectl get events` (a tabwriter table, padding 3, rows in the API's list order)
and the "Events:" section of `kubectl describe` (padding 2, sorted by last timestamp, the age
of the first occurrence or "<last> (xN over <first>)" for repeats).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "age",
    "describe_events",
    "describe_pvc",
    "get_events_table",
    "human_duration",
    "tabulate",
]

Event = Mapping[str, Any]


def human_duration(seconds: float) -> str:
    """kubectl's age format (apimachinery duration.HumanDuration): 5s, 2m5s, 3h10m, 2d4h."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = divmod(hours // 24, 365)
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def age(timestamp: object, now: datetime) -> str:
    """The age of an RFC 3339 timestamp, "<unknown>" when the field is unset."""
    when = _parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


def tabulate(rows: Sequence[Sequence[str]], *, padding: int, min_width: int = 0) -> list[str]:
    """Align cells like Go's text/tabwriter: every column but the last is as wide as its
    widest cell plus `padding` (at least `min_width`); the last cell is not padded."""
    if not rows:
        return []
    columns = max(len(row) for row in rows)
    widths = [0] * columns
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell) + padding, min_width)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[index]) for index, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + (row[-1] if row else "")).rstrip())
    return lines


def _first_seen(event: Event, now: datetime) -> str:
    first = event.get("firstTimestamp") or event.get("eventTime")
    return age(first, now)


def _count(event: Event) -> int:
    series = event.get("series")
    if isinstance(series, Mapping) and series.get("count"):
        return int(series["count"])
    return int(event.get("count") or 1)


def _last_seen(event: Event, now: datetime) -> str:
    series = event.get("series")
    if isinstance(series, Mapping) and series.get("lastObservedTime"):
        return age(series["lastObservedTime"], now)
    if event.get("lastTimestamp"):
        return age(event["lastTimestamp"], now)
    return _first_seen(event, now)


def _object(event: Event) -> str:
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind", "")).lower()
    name = involved.get("name")
    return f"{kind}/{name}" if name else kind


def get_events_table(events: Sequence[Event], now: datetime | None = None) -> str:
    """`kubectl get events`: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE."""
    if not events:
        return "No resources found."
    now = now or datetime.now(UTC)
    rows = [["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]]
    for event in events:
        last_seen = _last_seen(event, now)
        count = _count(event)
        if count > 1:
            last_seen = f"{last_seen} (x{count} over {_first_seen(event, now)})"
        rows.append(
            [
                last_seen,
                str(event.get("type", "")),
                str(event.get("reason", "")),
                _object(event),
                str(event.get("message", "")).strip(),
            ]
        )
    return "\n".join(tabulate(rows, padding=3, min_width=6))


def _sort_key(event: Event) -> datetime:
    stamp = _parse_time(event.get("lastTimestamp")) or _parse_time(event.get("eventTime"))
    return stamp or datetime.min.replace(tzinfo=UTC)


def describe_events(events: Sequence[Event], now: datetime) -> list[str]:
    if not events:
        return ["Events:  <none>"]
    rows = [
        ["  Type", "Reason", "Age", "From", "Message"],
        ["  ----", "------", "----", "----", "-------"],
    ]
    for event in sorted(events, key=_sort_key):
        count = _count(event)
        interval = _first_seen(event, now)
        if count > 1:
            interval = f"{_last_seen(event, now)} (x{count} over {interval})"
        source = event.get("source") or {}
        rows.append(
            [
                f"  {event.get('type', '')}",
                str(event.get("reason", "")),
                interval,
                str(source.get("component") or event.get("reportingComponent") or ""),
                str(event.get("message", "")).strip(),
            ]
        )
    return ["Events:", *tabulate(rows, padding=2)]


_ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


def describe_pvc(
    pvc: Mapping[str, Any], events: Sequence[Event], now: datetime | None = None
) -> str:
    """The head of `kubectl describe pvc` and its Events section."""
    now = now or datetime.now(UTC)
    meta = pvc.get("metadata", {})
    spec = pvc.get("spec", {})
    status = pvc.get("status", {})
    capacity = (status.get("capacity") or {}).get("storage", "")
    modes = ",".join(_ACCESS_MODES.get(m, m) for m in status.get("accessModes") or [])
    fields = [
        ("Name:", meta.get("name", "")),
        ("Namespace:", meta.get("namespace", "")),
        ("StorageClass:", spec.get("storageClassName", "")),
        ("Status:", status.get("phase", "")),
        ("Volume:", spec.get("volumeName", "")),
        ("Capacity:", capacity),
        ("Access Modes:", modes),
        ("VolumeMode:", spec.get("volumeMode", "")),
    ]
    head = tabulate([[name, str(value)] for name, value in fields], padding=2)
    return "\n".join([*head, *describe_events(events, now)])
