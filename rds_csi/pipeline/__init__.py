"""The event pipeline's internals: the event model, correlation, sinks and counters.

The public entry points are `rds_csi.recorder` (what callers use) and `rds_csi.broadcaster`
(what fans events out).  Nothing in here knows about CSI or gRPC.
"""
