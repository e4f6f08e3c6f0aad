"""Test helpers shipped to users of rds_csi, in the spirit of structlog.testing and client-go's
FakeRecorder: an in-memory recording sink, a fake recorder and a Kubernetes API-server emulator."""
