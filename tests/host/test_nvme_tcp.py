"""The NVMe/TCP connector on a fabricated sysfs tree with a recording `nvme` stand-in."""

from __future__ import annotations

from typing import Any

import pytest

from rds_csi.host.connectors.nvme_sysfs import NvmeSysfs
from rds_csi.host.connectors.nvme_tcp import NvmeTcpConfig, NvmeTcpConnector
from rds_csi.host.errors import ConnectError, DeviceNotFound, DisconnectRefused
from rds_csi.host.runner import CommandRunner
from tests.host.conftest import NvmeStandin

PREFIX = "nqn.2000-02.com.mikrotik:"
NQN_A = PREFIX + "pvc-aaaaaaaa-0000-4000-8000-000000000001"
NQN_B = PREFIX + "pvc-bbbbbbbb-0000-4000-8000-000000000002"
NQN_C = PREFIX + "pvc-cccccccc-0000-4000-8000-000000000003"
BOOT = "nqn.2019-08.org.example.diskless:node-var"


def make(nvme: NvmeStandin, **config: Any) -> NvmeTcpConnector:
    settings: dict[str, Any] = {
        "device_timeout": 5.0,
        "poll_initial": 0.01,
        "poll_max": 0.05,
        "disconnect_wait": 1.0,
    }
    settings.update(config)
    return NvmeTcpConnector(
        CommandRunner(tools={"nvme": str(nvme.path)}),
        sys_root=str(nvme.sys_root),
        dev_root=str(nvme.dev_root),
        config=NvmeTcpConfig(**settings),
    )


def context(nqn: str, **extra: str) -> dict[str, str]:
    return {"nqn": nqn, "nvmeAddress": "10.0.0.5", **extra}


def connect_argv(nqn: str, *tail: str) -> list[str]:
    return [
        "connect",
        "-t",
        "tcp",
        "-a",
        "10.0.0.5",
        "-s",
        "4420",
        "-n",
        nqn,
        "-l",
        "-1",
        "-c",
        "5",
        *tail,
    ]


# ---- device lookup ---------------------------------------------------------------------------


def test_multipath_layout_maps_the_hidden_path_node_to_the_head(nvme: NvmeStandin) -> None:
    nvme.add_subsystem(subsys=0, nqn=NQN_A, controllers=[0], multipath=True)
    sysfs = NvmeSysfs(str(nvme.sys_root), str(nvme.dev_root))
    # The controller directory holds only nvme0c0n1; the block device is nvme0n1.
    assert sorted(
        p.name for p in (nvme.sys_root / "class/nvme/nvme0").iterdir() if p.name.startswith("nvme0")
    ) == ["nvme0c0n1"]
    assert sysfs.device_path(NQN_A) == f"{nvme.dev_root}/nvme0n1"


def test_head_is_found_from_the_controller_alone(nvme: NvmeStandin) -> None:
    """Without the nvme-subsystem class (older kernels) nvme<S>c<C>n<N> still maps to
    nvme<S>n<N>."""
    nvme.add_subsystem(subsys=2, nqn=NQN_A, controllers=[5], multipath=True)
    (nvme.sys_root / "class/nvme-subsystem/nvme-subsys2").unlink()
    sysfs = NvmeSysfs(str(nvme.sys_root), str(nvme.dev_root))
    assert sysfs.device_path(NQN_A) == f"{nvme.dev_root}/nvme2n1"


def test_non_multipath_layout_uses_the_namespace_under_the_controller(nvme: NvmeStandin) -> None:
    nvme.add_subsystem(subsys=0, nqn=NQN_A, controllers=[3], multipath=False)
    sysfs = NvmeSysfs(str(nvme.sys_root), str(nvme.dev_root))
    assert sysfs.device_path(NQN_A) == f"{nvme.dev_root}/nvme3n1"


def test_several_subsystems_and_controllers_resolve_by_nqn(nvme: NvmeStandin) -> None:
    nvme.add_subsystem(subsys=0, nqn=BOOT, controllers=[0], multipath=True)
    nvme.add_subsystem(subsys=1, nqn=NQN_A, controllers=[1, 4], multipath=True)  # two paths
    nvme.add_subsystem(subsys=2, nqn=NQN_B, controllers=[2], namespaces=[2, 1])
    sysfs = NvmeSysfs(str(nvme.sys_root), str(nvme.dev_root))
    assert sysfs.device_path(NQN_A) == f"{nvme.dev_root}/nvme1n1"
    subsystem = sysfs.find(NQN_A)
    assert subsystem is not None and subsystem.controllers == ("nvme1", "nvme4")
    assert sysfs.device_path(NQN_B) == f"{nvme.dev_root}/nvme2n1"  # lowest namespace first
    assert sysfs.device_path(BOOT) == f"{nvme.dev_root}/nvme0n1"
    assert sysfs.device_path(NQN_C) is None


def test_a_block_device_without_its_dev_node_is_not_returned_yet(nvme: NvmeStandin) -> None:
    nvme.add_subsystem(subsys=0, nqn=NQN_A, controllers=[0], dev_nodes=False)
    sysfs = NvmeSysfs(str(nvme.sys_root), str(nvme.dev_root))
    subsystem = sysfs.find(NQN_A)
    assert subsystem is not None and subsystem.block_devices == ("nvme0n1",)
    assert sysfs.device_path(NQN_A) is None


async def test_moved_controller_number_is_followed(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    target = connector.parse_target("v", context(NQN_A))
    nvme.add_subsystem(subsys=0, nqn=NQN_A, controllers=[0])
    assert await connector.resolve_device(target) == f"{nvme.dev_root}/nvme0n1"
    # Reconnected after a discovery controller took number 0 for a moment.
    nvme.remove_nqn(NQN_A)
    nvme.add_subsystem(subsys=0, nqn=NQN_B, controllers=[0])
    nvme.add_subsystem(subsys=3, nqn=NQN_A, controllers=[7])
    assert await connector.resolve_device(target) == f"{nvme.dev_root}/nvme3n1"


# ---- connect --------------------------------------------------------------------------------


async def test_connect_runs_nvme_connect_and_waits_for_the_device(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    target = connector.parse_target("v", context(NQN_A, keepAliveTmo="30"))
    nvme.plan_connect(NQN_A, {"appear": {"subsys": 4, "controllers": [6]}})
    assert await connector.connect(target) == f"{nvme.dev_root}/nvme4n1"
    assert nvme.calls() == [connect_argv(NQN_A, "-k", "30")]


async def test_connect_is_idempotent_without_running_nvme_again(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    target = connector.parse_target("v", context(NQN_A))
    first = await connector.connect(target)
    second = await connector.connect(target)
    assert first == second == f"{nvme.dev_root}/nvme0n1"
    assert nvme.calls() == [connect_argv(NQN_A)]


@pytest.mark.parametrize(
    ("rc", "stderr"),
    [
        (114, "Failed to write to /dev/nvme-fabrics: Operation already in progress\n"),
        (1, "already connected\n"),
    ],
)
async def test_already_connected_counts_as_success(nvme: NvmeStandin, rc: int, stderr: str) -> None:
    connector = make(nvme)
    nvme.plan_connect(NQN_A, {"rc": rc, "stderr": stderr, "appear": {"subsys": 1}})
    device = await connector.connect(connector.parse_target("v", context(NQN_A)))
    assert device == f"{nvme.dev_root}/nvme1n1"


async def test_connect_failure_is_a_connect_error_with_the_tool_message(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    nvme.plan_connect(
        NQN_A,
        {
            "rc": 1,
            "stderr": "Failed to write to /dev/nvme-fabrics: Connection refused\n",
            "appear": None,
        },
    )
    with pytest.raises(ConnectError) as caught:
        await connector.connect(connector.parse_target("v", context(NQN_A)))
    assert str(caught.value) == (
        f"nvme connect to 10.0.0.5:4420 for {NQN_A} failed: nvme exited with code 1: "
        "Failed to write to /dev/nvme-fabrics: Connection refused"
    )
    assert nvme.calls() == [connect_argv(NQN_A)]


async def test_device_that_appears_late_is_waited_for(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    nvme.plan_connect(NQN_A, {"appear": {"subsys": 2, "controllers": [9]}, "delay": 0.3})
    device = await connector.connect(connector.parse_target("v", context(NQN_A)))
    assert device == f"{nvme.dev_root}/nvme2n1"
    assert nvme.calls() == [connect_argv(NQN_A)]


async def test_device_that_never_appears_is_device_not_found(nvme: NvmeStandin) -> None:
    connector = make(nvme, device_timeout=0.3)
    nvme.plan_connect(NQN_A, {"appear": None})
    with pytest.raises(DeviceNotFound, match=r"no block device for .* within 0.3 s"):
        await connector.connect(connector.parse_target("v", context(NQN_A)))


async def test_orphaned_subsystem_is_reconnected_once(nvme: NvmeStandin) -> None:
    """Connected but namespace-less (a controller from an earlier life): disconnect, connect."""
    connector = make(nvme, device_timeout=0.3)
    nvme.plan_connect(
        NQN_A,
        {"appear": {"subsys": 0, "controllers": [0], "namespaces": []}},
        {"appear": {"subsys": 1, "controllers": [1]}},
    )
    device = await connector.connect(connector.parse_target("v", context(NQN_A)))
    assert device == f"{nvme.dev_root}/nvme1n1"
    assert nvme.calls() == [connect_argv(NQN_A), ["disconnect", "-n", NQN_A], connect_argv(NQN_A)]


# ---- disconnect, orphans, rescan -----------------------------------------------------------


async def test_disconnect_is_guarded_and_idempotent(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    nvme.add_subsystem(subsys=0, nqn=NQN_A, controllers=[0])
    nvme.add_subsystem(subsys=1, nqn=BOOT, controllers=[1])
    by_id = connector.target_for_volume_id("pvc-aaaaaaaa-0000-4000-8000-000000000001")
    assert by_id is not None
    await connector.disconnect(by_id)
    assert await connector.resolve_device(by_id) is None
    await connector.disconnect(by_id)  # nothing attached: no command
    boot = connector.parse_target("boot", context(BOOT))
    with pytest.raises(DisconnectRefused, match="does not start with the managed prefix"):
        await connector.disconnect(boot)
    assert nvme.calls() == [["disconnect", "-n", NQN_A]]
    assert await connector.resolve_device(boot) == f"{nvme.dev_root}/nvme1n1"


async def test_managed_prefix_is_configurable(nvme: NvmeStandin) -> None:
    connector = make(nvme, managed_nqn_prefix=PREFIX + "pvc-")
    nvme.add_subsystem(subsys=0, nqn=PREFIX + "node-var", controllers=[0])
    with pytest.raises(DisconnectRefused):
        await connector.disconnect(connector.parse_target("x", context(PREFIX + "node-var")))
    assert nvme.calls() == []


async def test_narrow_prefix_still_names_volumes_by_the_rds_convention(
    nvme: NvmeStandin,
) -> None:
    connector = make(nvme, managed_nqn_prefix=PREFIX + "pvc-")
    target = connector.target_for_volume_id("pvc-1234")
    assert target is not None and target.nqn == PREFIX + "pvc-1234"
    nvme.add_subsystem(subsys=0, nqn=PREFIX + "pvc-1234", controllers=[0])
    await connector.disconnect(target)
    assert nvme.calls() == [["disconnect", "-n", PREFIX + "pvc-1234"]]


async def test_cleanup_disconnects_only_managed_orphans(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    nvme.add_subsystem(subsys=0, nqn=BOOT, controllers=[0], namespaces=[])  # unmanaged orphan
    nvme.add_subsystem(subsys=1, nqn=NQN_A, controllers=[1], namespaces=[])  # managed orphan
    nvme.add_subsystem(subsys=2, nqn=NQN_B, controllers=[2])  # managed, in use
    nvme.add_subsystem(subsys=3, nqn=NQN_C, controllers=[3], multipath=False, namespaces=[])
    report = await connector.cleanup_orphans()
    assert report.detached == [NQN_A, NQN_C]
    assert sorted(report.skipped) == sorted([BOOT, NQN_B])
    assert report.failed == {}
    assert nvme.calls() == [["disconnect", "-n", NQN_A], ["disconnect", "-n", NQN_C]]


async def test_cleanup_reports_a_failed_disconnect_and_goes_on(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    nvme.add_subsystem(subsys=0, nqn=NQN_A, controllers=[0], namespaces=[])
    nvme.add_subsystem(subsys=1, nqn=NQN_B, controllers=[1], namespaces=[])
    nvme.plan_disconnect(NQN_A, {"rc": 1, "stderr": "Failed to disconnect\n"})
    report = await connector.cleanup_orphans()
    assert report.detached == [NQN_B]
    assert list(report.failed) == [NQN_A]
    assert "Failed to disconnect" in report.failed[NQN_A]


async def test_rescan_runs_on_every_controller(nvme: NvmeStandin) -> None:
    connector = make(nvme)
    nvme.add_subsystem(subsys=1, nqn=NQN_A, controllers=[1, 4])
    await connector.rescan(connector.parse_target("v", context(NQN_A)))
    assert nvme.calls() == [
        ["ns-rescan", f"{nvme.dev_root}/nvme1"],
        ["ns-rescan", f"{nvme.dev_root}/nvme4"],
    ]
    with pytest.raises(DeviceNotFound):
        await connector.rescan(connector.parse_target("v", context(NQN_B)))
