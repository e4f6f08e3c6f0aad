"""Test helpers shipped to users of rds_csi, in the spirit of structlog.testing and client-go's
FakeRecorder: an in-memory recording sink, a fake recorder and a Kubernetes API-server emulator
(`rds_csi.testing.apiserver`, imported on its own)."""

from rds_csi.testing.recording import FakeRecorder, RecordingSink

__all__ = ["FakeRecorder", "RecordingSink"]
