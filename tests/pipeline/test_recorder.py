"""The recorder facade: validation, construction, formatting and the thread-safe entry point."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from kubernetes_asyncio.client import V1ObjectMeta, V1PersistentVolumeClaim
from structlog.testing import capture_logs

from rds_csi.broadcaster import EventBroadcaster
from rds_csi.pipeline.clock import ManualClock
from rds_csi.pipeline.model import Event, ObjectRef
from rds_csi.pipeline.stats import PipelineStats
from rds_csi.pipeline.truncate import MESSAGE_LIMIT
from rds_csi.recorder import EventRecorder, ThreadSafeRecorder
from rds_csi.testing import FakeRecorder, RecordingSink

PVC = ObjectRef(kind="PersistentVolumeClaim", name="data", namespace="apps", uid="u-1")
NODE = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-1"}}


def dropped_lines(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [line for line in logs if line["event"] == "events dropped"]


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "type_", "reason", "cause"),
    [
        (PVC, "Error", "Failed", "invalid_type"),
        (PVC, "normal", "Failed", "invalid_type"),
        (PVC, "", "Failed", "invalid_type"),
        (PVC, ["Normal"], "Failed", "invalid_type"),
        (PVC, "Warning", "", "invalid_reason"),
        (PVC, "Warning", None, "invalid_reason"),
        (None, "Warning", "Failed", "invalid_object"),
        ({"kind": "Pod"}, "Warning", "Failed", "invalid_object"),
        ({"name": "data"}, "Warning", "Failed", "invalid_object"),
        ("apps/data", "Warning", "Failed", "invalid_object"),
    ],
)
def test_invalid_input_is_counted_logged_and_dropped(
    obj: object, type_: Any, reason: Any, cause: str
) -> None:
    recorder = FakeRecorder()
    with capture_logs() as logs:
        recorder.event(obj, type_, reason, "message")  # must not raise
    assert recorder.built == []
    assert recorder.stats.dropped == {cause: 1}
    [line] = dropped_lines(logs)
    assert line["cause"] == cause
    assert line["log_level"] == "warning"


def test_invalid_input_logs_are_rate_limited_but_every_drop_is_counted() -> None:
    clock = ManualClock()
    recorder = FakeRecorder(clock=clock)
    with capture_logs() as logs:
        for _ in range(5):
            recorder.event(PVC, "Bogus", "Failed", "m")
        assert len(dropped_lines(logs)) == 1
        clock.advance(10)
        recorder.event(PVC, "Bogus", "Failed", "m")
    assert recorder.stats.dropped["invalid_type"] == 6
    lines = dropped_lines(logs)
    assert [line["occurrences"] for line in lines] == [1, 5]
    assert lines[-1]["total"] == 6


def test_invalid_annotations_are_dropped() -> None:
    recorder = FakeRecorder()
    recorder.annotated_eventf(PVC, 42, "Normal", "Staged", "ok")  # type: ignore[arg-type]
    assert recorder.stats.dropped == {"invalid_annotations": 1}


def test_a_failing_broadcaster_never_raises_into_the_caller() -> None:
    class Broken:
        def emit(self, event: Event) -> bool:
            raise RuntimeError("bug")

    recorder = EventRecorder(Broken(), component="c", host="h")
    recorder.event(PVC, "Normal", "Staged", "ok")
    recorder.eventf(PVC, "Normal", "Staged", "%s", "ok")
    assert recorder.stats.dropped == {"internal_error": 2}


# --- construction -----------------------------------------------------------------------


def test_event_is_built_like_client_go() -> None:
    clock = ManualClock()
    recorder = FakeRecorder(component="rds-csi-node", host="node-1", clock=clock)
    recorder.event(PVC, "Warning", "FailedMount", "mount failed", action="Mount")
    [event] = recorder.built
    now = clock.now_ns()
    assert event.name == f"data.{now:x}"
    assert event.namespace == "apps"
    assert event.involved == PVC
    assert (event.type, event.reason, event.message, event.action) == (
        "Warning",
        "FailedMount",
        "mount failed",
        "Mount",
    )
    assert event.first_timestamp_ns == event.last_timestamp_ns == now
    assert event.count == 1
    assert (event.source_component, event.source_host) == ("rds-csi-node", "node-1")
    assert (event.reporting_controller, event.reporting_instance) == ("rds-csi-node", "node-1")


def test_name_follows_the_clock() -> None:
    clock = ManualClock()
    recorder = FakeRecorder(clock=clock)
    recorder.event(PVC, "Normal", "A", "m")
    clock.advance(1.5)
    recorder.event(PVC, "Normal", "B", "m")
    first, second = (int(e.name.split(".")[1], 16) for e in recorder.built)
    assert second - first == 1_500_000_000


@pytest.mark.parametrize(
    "object_name",
    ["Data", "vol_1", "a" * 240, "-data"],
    ids=["uppercase", "underscore", "too-long", "leading-dash"],
)
def test_name_falls_back_to_uuid_when_not_a_dns_subdomain(object_name: str) -> None:
    recorder = FakeRecorder()
    recorder.event(ObjectRef(kind="Widget", name=object_name), "Normal", "Seen", "m")
    [event] = recorder.built
    assert str(uuid.UUID(event.name)) == event.name
    assert event.involved.name == object_name


def test_cluster_scoped_objects_get_the_default_namespace() -> None:
    recorder = FakeRecorder()
    recorder.event(NODE, "Normal", "Started", "m")
    pv = ObjectRef(kind="PersistentVolume", name="pv-1")
    recorder.event(pv, "Normal", "Staged", "m")
    assert [(e.namespace, e.involved.namespace) for e in recorder.built] == [
        ("default", ""),
        ("default", ""),
    ]


def test_models_read_from_the_api_are_accepted() -> None:
    recorder = FakeRecorder()
    pvc = V1PersistentVolumeClaim(metadata=V1ObjectMeta(name="data", namespace="apps", uid="u-1"))
    recorder.event(pvc, "Normal", "Staged", "m")
    [event] = recorder.built
    assert (event.involved.kind, event.namespace, event.involved.uid) == (
        "PersistentVolumeClaim",
        "apps",
        "u-1",
    )


def test_reporting_fields_can_be_set_and_instance_is_capped_at_128_bytes() -> None:
    recorder = FakeRecorder(
        component="rds-csi-node",
        host="node-1",
        reporting_controller="rds.csi.srvlab.io/node",
        reporting_instance="节点" * 50,
    )
    recorder.event(PVC, "Normal", "Staged", "m")
    [event] = recorder.built
    assert event.reporting_controller == "rds.csi.srvlab.io/node"
    assert len(event.reporting_instance.encode()) <= 128
    assert ("节点" * 50).startswith(event.reporting_instance)


def test_long_message_reason_and_action_are_truncated_in_bytes() -> None:
    recorder = FakeRecorder()
    recorder.event(PVC, "Warning", "原因" * 40, "错误" * 1000, action="动作" * 40)
    [event] = recorder.built
    assert len(event.message.encode()) <= MESSAGE_LIMIT
    assert "bytes truncated" in event.message
    assert len(event.reason.encode()) <= 128 and event.reason.endswith(" ...")
    assert len(event.action.encode()) <= 128 and event.action.endswith(" ...")


def test_related_object_is_referenced_and_a_bad_one_is_left_out() -> None:
    recorder = FakeRecorder()
    with capture_logs() as logs:
        recorder.event(PVC, "Normal", "Staged", "m", related=NODE)
        recorder.event(PVC, "Normal", "Staged", "m", related={"kind": "Node"})
    good, bad = recorder.built
    assert good.related is not None and good.related.name == "node-1"
    assert bad.related is None
    assert [line["cause"] for line in logs] == ["invalid_related"]
    assert recorder.stats.dropped_total == 0


# --- eventf -----------------------------------------------------------------------------


def test_eventf_formats_with_percent_args() -> None:
    recorder = FakeRecorder()
    recorder.eventf(PVC, "Warning", "FailedMount", "mount %s failed: exit %d", "/mnt/x", 32)
    recorder.eventf(PVC, "Normal", "Staged", "staged %(volume)s", {"volume": "vol-1"})
    recorder.eventf(PVC, "Normal", "Progress", "100% done")  # no args: not a format string
    assert recorder.events == [
        "Warning FailedMount mount /mnt/x failed: exit 32",
        "Normal Staged staged vol-1",
        "Normal Progress 100% done",
    ]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("fmt", "args"),
    [
        ("exit %d", ("thirty-two",)),
        ("%s and %s", ("one",)),
        ("%s", ("a", "b")),
        ("%(missing)s", ({"volume": "v"},)),
        ("%s", (Unprintable(),)),
    ],
    ids=["wrong-type", "too-few", "too-many", "missing-key", "failing-str"],
)
def test_eventf_formatting_error_sends_the_raw_format(fmt: str, args: tuple[object, ...]) -> None:
    recorder = FakeRecorder()
    with capture_logs() as logs:
        recorder.eventf(PVC, "Warning", "FailedMount", fmt, *args)
    assert recorder.events == [f"Warning FailedMount {fmt}"]
    assert recorder.stats.format_errors == 1
    assert recorder.stats.dropped_total == 0
    [line] = logs
    assert (line["cause"], line["fmt"]) == ("format_error", fmt)


def test_annotated_eventf_copies_the_annotations() -> None:
    recorder = FakeRecorder()
    annotations = {"rds.csi.srvlab.io/volume": "vol-1"}
    recorder.annotated_eventf(PVC, annotations, "Normal", "Staged", "staged %s", "vol-1")
    annotations["later"] = "change"
    [event] = recorder.built
    assert event.annotations == {"rds.csi.srvlab.io/volume": "vol-1"}
    assert event.message == "staged vol-1"


# --- thread-safe entry point ------------------------------------------------------------


async def test_threadsafe_recorder_delivers_from_a_real_thread() -> None:
    stats = PipelineStats()
    sink = RecordingSink()
    broadcaster = EventBroadcaster([sink], stats=stats)
    broadcaster.start()
    recorder = EventRecorder(broadcaster, component="c", host="h", stats=stats)
    threadsafe = ThreadSafeRecorder(recorder)
    caller_threads: set[int] = set()

    def blocking_job() -> None:
        caller_threads.add(threading.get_ident())
        for i in range(100):
            threadsafe.eventf(PVC, "Normal", "Step", "step %d", i)
        threadsafe.event(PVC, "Bogus", "Step", "invalid")
        threadsafe.eventf(PVC, "Normal", "Step", "bad %d", "x")

    await asyncio.to_thread(blocking_job)
    events = await sink.wait_for(101)
    assert threading.get_ident() not in caller_threads
    assert [e.message for e in events[:100]] == [f"step {i}" for i in range(100)]
    assert events[100].message == "bad %d"
    assert stats.dropped == {"invalid_type": 1}
    assert stats.format_errors == 1
    await broadcaster.aclose(1)


def test_threadsafe_recorder_after_the_loop_stopped_is_a_counted_no_op() -> None:
    recorder = FakeRecorder()
    loop = asyncio.new_event_loop()
    threadsafe = ThreadSafeRecorder(recorder, loop)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            threadsafe.event(PVC, "Normal", "Late", "after the loop")
        except BaseException as exc:
            errors.append(exc)

    for _ in range(2):  # once stopped, then once closed
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
        loop.close()
    assert errors == []
    assert recorder.built == []
    assert recorder.stats.dropped == {"loop_stopped": 2}


def test_fake_recorder_keeps_client_go_style_strings() -> None:
    recorder = FakeRecorder()
    recorder.event(PVC, "Warning", "FailedMount", "boom")
    recorder.event(PVC, "Nope", "FailedMount", "dropped")
    assert recorder.events == ["Warning FailedMount boom"]
    recorder.clear()
    assert recorder.events == [] and recorder.built == []
