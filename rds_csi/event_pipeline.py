"""Assembles the event pipeline the daemon runs: poster -> recorder -> broadcaster -> sinks.

Without Kubernetes credentials the pipeline still runs with the log sink only, so every event
the node service posts shows up in the plugin's log.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from rds_csi import __version__
from rds_csi.broadcaster import CloseReport, EventBroadcaster
from rds_csi.events import SOURCE_COMPONENT, EventPoster, KubeClaimResolver
from rds_csi.pipeline.log_sink import LogSink
from rds_csi.pipeline.sink import EventSink
from rds_csi.pipeline.stats import PipelineStats
from rds_csi.recorder import EventRecorder

if TYPE_CHECKING:
    from rds_csi.pipeline.kube_sink import KubeSinkOptions

__all__ = ["EventPipeline", "load_kube_configuration", "start_event_pipeline"]

log = structlog.get_logger("rds_csi.daemon")


@dataclass
class EventPipeline:
    poster: EventPoster
    recorder: EventRecorder
    broadcaster: EventBroadcaster
    stats: PipelineStats
    api_client: Any | None

    async def aclose(self, timeout: float) -> CloseReport:
        """Finish pending PVC lookups, flush every sink, close the API client."""
        started = time.monotonic()
        await self.poster.aclose(timeout=min(1.0, timeout / 4))
        remaining = max(0.1, timeout - (time.monotonic() - started))
        report = await self.broadcaster.aclose(remaining)
        if self.api_client is not None:
            await self.api_client.close()
        return report


async def load_kube_configuration(kubeconfig: Path | None) -> Any | None:
    """The API server to post events to: kubeconfig, else in-cluster, else None.

    kubernetes_asyncio is imported only when there are credentials to load: it is most of the
    daemon's start-up time, which matters on a node under load.
    """
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" not in os.environ:
        return None
    from rds_csi.pipeline.kube_api import load_configuration

    return await load_configuration(str(kubeconfig) if kubeconfig is not None else None)


async def start_event_pipeline(
    *,
    node_id: str,
    driver_name: str,
    kube_configuration: Any | None,
    event_api: str = "core/v1",
    sink_options: KubeSinkOptions | None = None,
    extra_sinks: tuple[EventSink, ...] = (),
) -> EventPipeline:
    stats = PipelineStats()
    sinks: list[EventSink] = [LogSink(), *extra_sinks]
    api_client = None
    resolver = None
    if kube_configuration is not None:
        # Imported here: kubernetes_asyncio costs most of the start-up time, and a plugin
        # without credentials never needs it.
        from kubernetes_asyncio import client

        from rds_csi.pipeline.kube_sink import KubeSink, KubeSinkOptions

        options = sink_options or KubeSinkOptions(api=event_api)  # type: ignore[arg-type]
        kube_configuration.connection_pool_maxsize = options.workers + 2
        api_client = client.ApiClient(kube_configuration)
        api_client.user_agent = f"rds-csi-node/{__version__}"
        sinks.append(KubeSink(api_client, options=options, stats=stats))
        resolver = KubeClaimResolver(client.CoreV1Api(api_client), driver_name=driver_name)
        log.info("posting events to Kubernetes", host=kube_configuration.host, api=options.api)
    else:
        log.info("no Kubernetes configuration: events are only logged")
    broadcaster = EventBroadcaster(sinks, stats=stats)
    broadcaster.start()
    recorder = EventRecorder(broadcaster, component=SOURCE_COMPONENT, host=node_id, stats=stats)
    poster = EventPoster(recorder, node_id, resolver)
    return EventPipeline(
        poster=poster,
        recorder=recorder,
        broadcaster=broadcaster,
        stats=stats,
        api_client=api_client,
    )
