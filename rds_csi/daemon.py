"""Daemon wiring: build the services from a `Config`, serve, and shut down cleanly on a signal."""

from __future__ import annotations

import asyncio
import signal
import time

import structlog

from rds_csi import __version__
from rds_csi.cli import Config
from rds_csi.event_pipeline import EventPipeline, load_kube_configuration, start_event_pipeline
from rds_csi.gen.csi import v1 as csi
from rds_csi.grpc_server import CsiServer, SocketInUseError
from rds_csi.host import (
    CommandRunner,
    Connector,
    LoopConnector,
    Mounter,
    MountRecoverer,
    NvmeTcpConfig,
    NvmeTcpConnector,
    Prober,
    StaleChecker,
)
from rds_csi.identity_server import IdentityService, Readiness
from rds_csi.logs import configure_logging
from rds_csi.metrics import MetricsServer, PluginMetrics, RpcDurations
from rds_csi.node_server import NodeService

__all__ = ["build_identity_service", "build_node_service", "run", "serve"]

log = structlog.get_logger("rds_csi.daemon")

# Start-up clean-up of orphaned NVMe/TCP connections is best effort and must not hold up Probe.
ORPHAN_CLEANUP_TIMEOUT = 120.0


def build_connector(config: Config, runner: CommandRunner) -> Connector:
    if config.connector == "loop":
        backing = str(config.loop_backing_dir) if config.loop_backing_dir else None
        return LoopConnector(runner, backing_dir=backing)
    return NvmeTcpConnector(
        runner, config=NvmeTcpConfig(managed_nqn_prefix=config.managed_nqn_prefix)
    )


def build_node_service(config: Config, pipeline: EventPipeline) -> NodeService:
    runner = CommandRunner()
    mounter = Mounter(runner, Prober(timeout=5.0))
    return NodeService(
        node_id=config.node_id,
        connector=build_connector(config, runner),
        mounter=mounter,
        checker=StaleChecker(mounter),
        recoverer=MountRecoverer(mounter),
        poster=pipeline.poster,
        zone=config.topology_zone,
    )


def build_identity_service(
    config: Config, node: NodeService, readiness: Readiness
) -> IdentityService:
    def missing_tools() -> list[str]:
        # Looked up by the runner that runs them: its search path adds the sbin directories a
        # container's PATH may lack, and tests map tools to stand-ins.
        needed = [*node.connector.required_tools(), "mount", "umount", "blkid"]
        return node.mounter.runner.missing_tools(needed)

    return IdentityService(
        driver_name=config.driver_name,
        vendor_version=__version__,
        readiness=readiness,
        missing_tools=missing_tools,
        connector_name=config.connector,
    )


async def _start_up(node: NodeService, readiness: Readiness) -> None:
    """What must finish before Probe reports ready."""
    try:
        report = await asyncio.wait_for(node.connector.cleanup_orphans(), ORPHAN_CLEANUP_TIMEOUT)
    except Exception as err:  # best effort: a failed clean-up must not keep the node down
        log.warning("orphan clean-up failed", error=str(err))
    else:
        if report.detached or report.failed:
            log.info(
                "orphan clean-up",
                detached=report.detached,
                skipped=report.skipped,
                failed=report.failed,
            )
    readiness.set_ready()
    log.info("ready")


def _metrics_server(
    config: Config,
    readiness: Readiness,
    server: CsiServer,
    pipeline: EventPipeline,
    node: NodeService,
    rpc_durations: RpcDurations,
) -> MetricsServer:
    def ready() -> bool:
        return readiness.ready and not server.observer.draining

    metrics = PluginMetrics(
        rpc=rpc_durations,
        pipeline=pipeline.stats,
        node=node.stats,
        ready=ready,
        rpcs_in_flight=lambda: server.observer.in_flight,
        info={"version": __version__, "driver": config.driver_name, "connector": config.connector},
    )
    return MetricsServer(metrics.render, ready)


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
    node = build_node_service(config, pipeline)
    identity = build_identity_service(config, node, readiness)
    rpc_durations = RpcDurations()
    server = CsiServer([identity, node, csi.ControllerBase()], on_rpc_done=rpc_durations.observe)
    metrics_server = None
    if config.metrics_address is not None:
        metrics_server = _metrics_server(config, readiness, server, pipeline, node, rpc_durations)
        try:
            await metrics_server.start(*config.metrics_address)
        except OSError as err:
            # Asked for explicitly, and the readiness probe depends on it: refuse to run blind.
            log.error("cannot listen for metrics", address=config.metrics_address, error=str(err))
            await pipeline.aclose(timeout=1.0)
            return 1
    try:
        await server.start(config.socket_path)
    except (SocketInUseError, OSError) as err:
        log.error("cannot listen", socket=str(config.socket_path), error=str(err))
        if metrics_server is not None:
            await metrics_server.aclose()
        await pipeline.aclose(timeout=1.0)
        return 1
    log.info(
        "started",
        version=__version__,
        driver=config.driver_name,
        node_id=config.node_id,
        connector=config.connector,
    )
    start_up = asyncio.create_task(_start_up(node, readiness))

    await stop.wait()
    stopping_since = time.monotonic()
    log.info("stopping", grace_s=config.shutdown_grace)
    start_up.cancel()
    drained = await server.stop(grace=config.shutdown_grace)
    # Operations whose caller gave up (client deadline) still run: let them finish too.
    remaining = max(0.0, config.shutdown_grace - (time.monotonic() - stopping_since))
    drained = await node.operations.wait_idle(remaining) and drained
    report = await pipeline.aclose(timeout=config.event_flush_timeout)
    if metrics_server is not None:
        await metrics_server.aclose()
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
