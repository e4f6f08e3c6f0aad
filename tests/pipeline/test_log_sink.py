"""The structured log sink: one line per event, level by event type."""

from __future__ import annotations

from structlog.testing import capture_logs

from rds_csi.broadcaster import EventBroadcaster
from rds_csi.pipeline.log_sink import LogSink
from rds_csi.pipeline.model import ObjectRef
from rds_csi.testing import FakeRecorder

PVC = ObjectRef(kind="PersistentVolumeClaim", name="data", namespace="apps", uid="u-1")
NODE = ObjectRef(kind="Node", name="node-1")


async def test_one_line_per_event_with_level_by_type() -> None:
    recorder = FakeRecorder(component="rds-csi-node", host="node-1")
    recorder.event(PVC, "Warning", "FailedMount", "mount failed: exit 32", action="Mount")
    recorder.event(NODE, "Normal", "Started", "plugin started")
    recorder.event(NODE, "Normal", "Started", "plugin started")  # no correlation here
    with capture_logs() as logs:
        await LogSink().write(recorder.built)
    assert [(line["log_level"], line["reason"]) for line in logs] == [
        ("warning", "FailedMount"),
        ("info", "Started"),
        ("info", "Started"),
    ]
    warning = logs[0]
    assert {k: warning[k] for k in warning if k not in ("event", "log_level")} == {
        "type": "Warning",
        "reason": "FailedMount",
        "kind": "PersistentVolumeClaim",
        "namespace": "apps",
        "name": "data",
        "uid": "u-1",
        "message": "mount failed: exit 32",
        "count": 1,
        "source": "rds-csi-node/node-1",
        "reporting_instance": "node-1",
        "action": "Mount",
    }
    assert "uid" not in logs[1]  # unknown uids are not logged as empty strings
    assert logs[1]["namespace"] == ""


async def test_log_sink_behind_a_broadcaster_logs_every_event() -> None:
    broadcaster = EventBroadcaster([LogSink()])
    recorder = FakeRecorder()
    for i in range(3):
        recorder.eventf(PVC, "Normal", "Step", "step %d", i)
    for event in recorder.built:
        broadcaster.emit(event)
    with capture_logs() as logs:
        report = await broadcaster.aclose(1)
    assert [line["message"] for line in logs if line["event"] == "kubernetes event"] == [
        "step 0",
        "step 1",
        "step 2",
    ]
    assert report.sink("log").delivered == 3
