"""Daemon wiring: build the services from a `Config`, serve, and shut down cleanly on a signal."""

from __future__ import annotations

import asyncio
import signal
import time

import structlog

from rds_csi import __version__
from rds_csi.cli import Config
from rds_csi.event_pipeline import load_kube_configuration, start_event_pipeline
from rds_csi.gen.csi import v1 as csi
from rds_csi.grpc_server import CsiServer, SocketInUseError
from rds_csi.identity_server import IdentityService, Readiness
from rds_csi.logs import configure_logging

__all__ = ["run", "serve"]

log = structlog.get_logger("rds_csi.daemon")

_REQUIRED_TOOLS = {
    "nvme-tcp": ("nvme", "mount", "umount", "blkid"),
    "loop": ("losetup", "mount", "umount", "blkid"),
}


async def serve(config: Config, stop: asyncio.Event) -> int:
    """Serve until `stop` is set; returns the process exit status."""
    readiness = Readiness()
    try:
        kube_configuration = await load_kube_configuration(config.kubeconfig)
    except Exception as err:  # mounts matter more than events: run with logged events only
        log.error(
            "cannot load the Kubernetes configuration; events are only logged", error=str(err)
        )
        kube_configuration = None
    pipeline = await start_event_pipeline(
        node_id=config.node_id,
        driver_name=config.driver_name,
        kube_configuration=kube_configuration,
        event_api=config.event_api,
    )
    identity = IdentityService(
        driver_name=config.driver_name,
        vendor_version=__version__,
        readiness=readiness,
        required_tools=lambda: _REQUIRED_TOOLS[config.connector],
        connector_name=config.connector,
    )
    server = CsiServer([identity, csi.NodeBase(), csi.ControllerBase()])
    try:
        await server.start(config.socket_path)
    except (SocketInUseError, OSError) as err:
        log.error("cannot listen", socket=str(config.socket_path), error=str(err))
        await pipeline.aclose(timeout=1.0)
        return 1
    readiness.set_ready()
    log.info(
        "started",
        version=__version__,
        driver=config.driver_name,
        node_id=config.node_id,
        connector=config.connector,
    )

    await stop.wait()
    stopping_since = time.monotonic()
    log.info("stopping", grace_s=config.shutdown_grace)
    drained = await server.stop(grace=config.shutdown_grace)
    report = await pipeline.aclose(timeout=config.event_flush_timeout)
    log.info(
        "stopped",
        drained=drained,
        events_undelivered=report.undelivered,
        took_s=round(time.monotonic() - stopping_since, 3),
    )
    return 0


async def _main(config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await serve(config, stop)


def run(config: Config) -> int:
    configure_logging(fmt=config.log_format, level=config.log_level)
    return asyncio.run(_main(config))
