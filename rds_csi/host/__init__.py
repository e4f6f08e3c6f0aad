"""The host layer: connectors that attach volumes, the mounter, and stale-mount detection.

Nothing in here knows about gRPC or CSI messages; errors are plain Python exceptions that the
CSI layer maps to status codes.
"""
