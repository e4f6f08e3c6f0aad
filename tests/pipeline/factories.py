"""The event the pipeline tests feed in, built one way: what the node plugin records."""

from __future__ import annotations

from typing import Any

from rds_csi.pipeline.model import Event, ObjectRef

T0 = 1_790_000_000 * 10**9  # 2026-09-21T14:13:20Z, unix nanoseconds


def node_event(involved: ObjectRef, *, at_ns: int = T0, **changes: Any) -> Event:
    """A Warning about `involved` from rds-csi-node on node-1, named `<object>.<hex at_ns>`
    and stamped `at_ns`; `changes` replace any other field."""
    fields: dict[str, Any] = {
        "name": f"{involved.name}.{at_ns:x}",
        "namespace": involved.namespace or "default",
        "involved": involved,
        "type": "Warning",
        "reason": "NodeStageFailed",
        "message": "mount failed",
        "source_component": "rds-csi-node",
        "source_host": "node-1",
        "reporting_controller": "rds.csi.srvlab.io",
        "reporting_instance": "node-1",
        "first_timestamp_ns": at_ns,
        "last_timestamp_ns": at_ns,
    }
    fields.update(changes)
    return Event(**fields)
