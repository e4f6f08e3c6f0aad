"""Target validation: what a StorageClass can put into volume_context, good and bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from rds_csi.host.connectors.base import Connector, VolumeTarget
from rds_csi.host.connectors.loop import LoopConnector, LoopTarget
from rds_csi.host.connectors.nvme_tcp import (
    NvmeTcpConnector,
    NvmeTcpTarget,
    build_connect_argv,
    parse_nvme_tcp_target,
)
from rds_csi.host.errors import InvalidInput
from rds_csi.host.runner import CommandRunner

NQN = "nqn.2000-02.com.mikrotik:pvc-7b7e6a1e-3c55-4b8e-9d1f-0c0ffee00001"


def ctx(**overrides: str) -> dict[str, str]:
    base = {"nqn": NQN, "nvmeAddress": "10.0.0.5", "nvmePort": "4420"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v != "<drop>"}


def test_defaults_match_the_go_driver() -> None:
    target = parse_nvme_tcp_target({"nqn": NQN, "nvmeAddress": "10.0.0.5"})
    assert target == NvmeTcpTarget(NQN, "10.0.0.5", 4420, -1, 5, None)
    assert build_connect_argv(target) == [
        "nvme",
        "connect",
        "-t",
        "tcp",
        "-a",
        "10.0.0.5",
        "-s",
        "4420",
        "-n",
        NQN,
        "-l",
        "-1",
        "-c",
        "5",
    ]


def test_all_keys_and_rds_address_fallback() -> None:
    target = parse_nvme_tcp_target(
        {
            "nqn": NQN,
            "rdsAddress": "[fd00::5]",
            "nvmePort": "4421",
            "ctrlLossTmo": "600",
            "reconnectDelay": "10",
            "keepAliveTmo": "15",
            "volumePath": "/storage/pvc.img",  # controller keys the node ignores
        }
    )
    assert target == NvmeTcpTarget(NQN, "fd00::5", 4421, 600, 10, 15)
    assert build_connect_argv(target)[-2:] == ["-k", "15"]
    assert parse_nvme_tcp_target(target.to_volume_context()) == target


def test_host_names_and_the_nvme_express_uuid_nqn_are_valid() -> None:
    uuid_nqn = "nqn.2014-08.org.nvmexpress:uuid:0c1f1d3e-5a8b-4c4e-9f0e-1234567890ab"
    target = parse_nvme_tcp_target(ctx(nqn=uuid_nqn, nvmeAddress="RDS-1.storage.lan"))
    assert (target.nqn, target.address) == (uuid_nqn, "rds-1.storage.lan")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (ctx(nqn="<drop>"), r"\['nqn'\] is required"),
        (ctx(nqn="nqn.2000-02.com.mikrotik"), "not an NQN"),
        (ctx(nqn="iqn.2000-02.com.mikrotik:pvc-1"), "not an NQN"),
        (ctx(nqn="nqn.2000-13.com.mikrotik:pvc-1"), "invalid month 13"),
        (ctx(nqn="nqn.20-02.com.mikrotik:pvc-1"), "not an NQN"),
        (ctx(nqn="nqn.2000-02.-bad-.com:pvc-1"), "not an NQN"),
        (ctx(nqn="nqn.2000-02.com.mikrotik:pvc 1"), "whitespace or control"),
        (ctx(nqn="nqn.2000-02.com.mikrotik:pvc-1\n"), "whitespace or control"),
        (ctx(nqn="nqn.2000-02.com.mikrotik:pvc-1,transport=rdma"), r"outside \[A-Za-z0-9"),
        (ctx(nqn="nqn.2000-02.com.mikrotik:" + "a" * 200), "at most 223"),
        (ctx(nvmeAddress="<drop>"), r"\['nvmeAddress'\] \(or 'rdsAddress'\) is required"),
        (ctx(nvmeAddress="10.0.0.256"), "not a valid IP address"),
        (ctx(nvmeAddress="10.0.0.5;reboot"), "neither an IP address nor a valid host name"),
        (ctx(nvmeAddress="-a.example"), "neither an IP address nor a valid host name"),
        (ctx(nvmeAddress="host_name.lan"), "neither an IP address nor a valid host name"),
        (ctx(nvmeAddress="rds.lan\n"), "neither an IP address nor a valid host name"),
        (ctx(nvmeAddress="a" * 64 + ".lan"), "neither an IP address nor a valid host name"),
        (ctx(nvmePort="0"), r"out of range \[1, 65535\]"),
        (ctx(nvmePort="65536"), r"out of range \[1, 65535\]"),
        (ctx(nvmePort="44x0"), "not an integer"),
        (ctx(nvmePort="4420.0"), "not an integer"),
        (ctx(ctrlLossTmo="-2"), r"'ctrlLossTmo'\] -2 is out of range"),
        (ctx(ctrlLossTmo="forever"), "not an integer"),
        (ctx(reconnectDelay="0"), r"'reconnectDelay'\] 0 is out of range"),
        (ctx(keepAliveTmo="0"), r"'keepAliveTmo'\] 0 is out of range"),
        (ctx(keepAliveTmo="99999"), r"'keepAliveTmo'\] 99999 is out of range"),
    ],
)
def test_bad_nvme_context_is_rejected_with_a_clear_message(
    context: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_nvme_tcp_target(context)


def test_target_for_volume_id_follows_the_rds_naming_convention() -> None:
    connector = NvmeTcpConnector(CommandRunner())
    target = connector.target_for_volume_id("pvc-123")
    assert target == NvmeTcpTarget("nqn.2000-02.com.mikrotik:pvc-123", None)
    assert connector.target_for_volume_id("bad id") is None
    with pytest.raises(InvalidInput, match="no nvmeAddress"):
        build_connect_argv(target)


@pytest.fixture
def regular_file(tmp_path: Path) -> Path:
    path = tmp_path / "vol.img"
    path.write_bytes(b"")
    return path


def test_backing_file_must_be_an_existing_regular_file(tmp_path: Path, regular_file: Path) -> None:
    connector = LoopConnector(CommandRunner())
    assert connector.parse_target("v", {"backingFile": str(regular_file)}) == LoopTarget(
        str(regular_file)
    )
    cases = {
        "": r"\['backingFile'\] is required",
        "vol.img": "must be an absolute path",
        f"{tmp_path}/../{tmp_path.name}/vol.img": "must be normalised",
        f"{tmp_path}//vol.img": "must be normalised",
        f"{regular_file}/": "must be normalised",
        f"{tmp_path}/missing.img": "does not exist",
        str(tmp_path): "is not a regular file",
        f"{tmp_path}/vol\n.img": "control characters",
    }
    for value, message in cases.items():
        with pytest.raises(InvalidInput, match=message):
            connector.parse_target("v", {"backingFile": value})


def test_backing_directory_supplies_the_file_from_the_volume_id(tmp_path: Path) -> None:
    connector = LoopConnector(CommandRunner(), backing_dir=str(tmp_path))
    (tmp_path / "pvc-1.img").write_bytes(b"")
    assert connector.parse_target("pvc-1", {}) == LoopTarget(str(tmp_path / "pvc-1.img"))
    assert connector.target_for_volume_id("pvc-1") == LoopTarget(str(tmp_path / "pvc-1.img"))
    assert connector.target_for_volume_id("../etc/passwd") is None
    with pytest.raises(InvalidInput, match="does not exist"):
        connector.parse_target("pvc-2", {})
    assert LoopConnector(CommandRunner()).target_for_volume_id("pvc-1") is None


async def test_connectors_reject_each_others_targets() -> None:
    nvme = NvmeTcpConnector(CommandRunner())
    loop = LoopConnector(CommandRunner())
    with pytest.raises(InvalidInput, match="nvme-tcp connector cannot handle loop file"):
        await nvme.connect(LoopTarget("/x.img"))
    with pytest.raises(InvalidInput, match="loop connector cannot handle"):
        await loop.disconnect(NvmeTcpTarget(NQN, "10.0.0.5"))


def test_both_connectors_satisfy_the_connector_protocol(tmp_path: Path) -> None:
    """Checked statically by mypy (the annotated assignments) and at run time for targets."""
    runner = CommandRunner()
    connectors: list[Connector] = [NvmeTcpConnector(runner), LoopConnector(runner)]
    assert [c.name for c in connectors] == ["nvme-tcp", "loop"]
    assert [c.required_tools() for c in connectors] == [["nvme"], ["losetup"]]
    image = tmp_path / "v.img"
    image.write_bytes(b"")
    targets: list[VolumeTarget] = [
        connectors[0].parse_target("v", {"nqn": NQN, "nvmeAddress": "10.0.0.5"}),
        connectors[1].parse_target("v", {"backingFile": str(image)}),
    ]
    assert all(isinstance(t, VolumeTarget) for t in targets)
    assert [t.key for t in targets] == [NQN, str(image)]
    assert targets[0].describe() == f"{NQN} at 10.0.0.5:4420"
