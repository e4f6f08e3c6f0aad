"""CSI Identity service: who the plugin is, what it offers, and whether it is ready."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from rds_csi.gen.csi import v1 as csi

__all__ = ["IdentityService", "Readiness", "missing_tools"]


class Readiness:
    """Set once the daemon's own start-up (orphan clean-up, pipeline) has finished."""

    def __init__(self) -> None:
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def set_ready(self) -> None:
        self._ready = True


def missing_tools(tools: Sequence[str]) -> list[str]:
    """The host programs from `tools` that are not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


class IdentityService(csi.IdentityBase):
    def __init__(
        self,
        *,
        driver_name: str,
        vendor_version: str,
        readiness: Readiness,
        required_tools: Callable[[], Sequence[str]],
        connector_name: str,
    ) -> None:
        self._driver_name = driver_name
        self._vendor_version = vendor_version
        self._readiness = readiness
        self._required_tools = required_tools
        self._connector_name = connector_name

    async def get_plugin_info(self, message: csi.GetPluginInfoRequest) -> csi.GetPluginInfoResponse:
        return csi.GetPluginInfoResponse(
            name=self._driver_name,
            vendor_version=self._vendor_version,
            manifest={"connector": self._connector_name},
        )

    async def get_plugin_capabilities(
        self, message: csi.GetPluginCapabilitiesRequest
    ) -> csi.GetPluginCapabilitiesResponse:
        # Node-only plugin: no CONTROLLER_SERVICE.  NodeGetInfo reports a topology segment,
        # which the spec ties to VOLUME_ACCESSIBILITY_CONSTRAINTS.
        return csi.GetPluginCapabilitiesResponse(
            capabilities=[
                csi.PluginCapability(
                    service=csi.PluginCapabilityService(
                        type=csi.PluginCapabilityServiceType.VOLUME_ACCESSIBILITY_CONSTRAINTS
                    )
                ),
                csi.PluginCapability(
                    volume_expansion=csi.PluginCapabilityVolumeExpansion(
                        type=csi.PluginCapabilityVolumeExpansionType.ONLINE
                    )
                ),
            ]
        )

    async def probe(self, message: csi.ProbeRequest) -> csi.ProbeResponse:
        missing = missing_tools(self._required_tools())
        if missing:
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"missing required host tool(s) for the {self._connector_name} connector: "
                f"{', '.join(missing)} (not found on PATH)",
            )
        return csi.ProbeResponse(ready=self._readiness.ready)
