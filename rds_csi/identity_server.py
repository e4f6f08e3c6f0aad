"""CSI Identity service: who the plugin is, what it offers, and whether it is ready."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from rds_csi.gen.csi import v1 as csi

__all__ = ["IdentityService", "Readiness"]


class Readiness:
    """Set once the daemon's own start-up (orphan clean-up, pipeline) has finished."""

    def __init__(self) -> None:
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def set_ready(self) -> None:
        self._ready = True


class IdentityService(csi.IdentityBase):
    def __init__(
        self,
        *,
        driver_name: str,
        vendor_version: str,
        readiness: Readiness,
        missing_tools: Callable[[], Sequence[str]],
        connector_name: str,
    ) -> None:
        """`missing_tools` names the host programs the plugin needs and cannot run; it must
        look them up the way commands are run (`CommandRunner.missing_tools`), or Probe and
        the RPCs disagree about what is installed."""
        self._driver_name = driver_name
        self._vendor_version = vendor_version
        self._readiness = readiness
        self._missing_tools = missing_tools
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
        missing = self._missing_tools()
        if missing:
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"missing required host tool(s) for the {self._connector_name} connector: "
                f"{', '.join(missing)} (not found)",
            )
        return csi.ProbeResponse(ready=self._readiness.ready)
