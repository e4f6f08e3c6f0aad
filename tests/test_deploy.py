"""The deployment manifests and the image recipe, checked against the code they deploy.

Nothing here needs a cluster or a container engine: the manifests are validated offline against
the Kubernetes OpenAPI schemas, the RBAC rules against the API calls the event pipeline really
makes (replayed against the API-server emulator), and the DaemonSet's command line against the
real argument parser.
"""

from __future__ import annotations

import asyncio
import copy
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rds_csi import DEFAULT_DRIVER_NAME, __version__
from rds_csi.cli import build_parser, parse_config
from rds_csi.daemon import ORPHAN_CLEANUP_TIMEOUT
from rds_csi.event_pipeline import start_event_pipeline
from rds_csi.events import PVC_NAME_KEY, PVC_NAMESPACE_KEY
from rds_csi.host import CommandRunner, LoopConnector, Mounter, NvmeTcpConnector
from rds_csi.pipeline.kube_sink import KubeSinkOptions
from rds_csi.testing.apiserver import ApiServerEmulator, RecordedRequest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"

# The schemas the manifests must satisfy: the oldest Kubernetes these manifests claim to support
# and the newest that kubernetes-validate knows.  Strict: unknown fields are errors.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")

PLUGIN = "rds-csi-node"
REGISTRAR = "node-driver-registrar"
LIVENESS = "liveness-probe"


# --------------------------------------------------------------------------- loading


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def load_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in manifest_files():
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)
    return docs


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return load_documents()


def the(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = the(docs, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for candidate in pod_spec(docs)["containers"]:
        if candidate["name"] == name:
            return dict(candidate)
    raise AssertionError(f"no container {name!r} in the DaemonSet")


# --------------------------------------------------------------------------- schema validation


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(docs: list[dict[str, Any]], version: str) -> None:
    assert docs, "no manifests found"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_is_strict_about_unknown_fields(docs: list[dict[str, Any]]) -> None:
    """A typo in a field name must fail the suite, not be silently dropped by the API server."""
    daemonset = copy.deepcopy(the(docs, "DaemonSet"))
    daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0][
        "mountPropogation"
    ] = "Bidirectional"
    with pytest.raises(kubernetes_validate.ValidationError, match="mountPropogation"):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    assert sorted(resources) == sorted(p.name for p in manifest_files())
    for label_set in kustomization.get("labels", []):
        # The DaemonSet selector is immutable: common labels must stay out of it.
        assert label_set.get("includeSelectors") is False


# --------------------------------------------------------------------------- RBAC


_API_PATH = re.compile(
    r"/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)"
    r"(?:/namespaces/[^/]+)?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?"
)
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def authorization_of(request: RecordedRequest) -> tuple[str, str, str]:
    """(verb, resource, group) that RBAC checks for one API request."""
    match = _API_PATH.fullmatch(request.path)
    assert match, f"unexpected API path {request.path}"
    if request.method == "GET":
        verb = "get" if match["name"] else "list"
    elif request.method == "DELETE":
        verb = "delete" if match["name"] else "deletecollection"
    else:
        verb = _VERBS[request.method]
    return verb, match["resource"], match["group"] or ""


def granted_by(role: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    granted = set()
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    granted.add((verb, resource, group))
    return granted


# Every (verb, resource, group) the emulator serves: what the role does not grant is forbidden.
_EMULATED = [
    (verb, resource, group)
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete")
    for resource, group in (
        ("events", ""),
        ("events", "events.k8s.io"),
        ("persistentvolumeclaims", ""),
        ("persistentvolumes", ""),
        ("nodes", ""),
    )
]


async def until(api: ApiServerEmulator, done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait, request by request, until `done()` holds."""
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await api.wait_for_requests(len(api.requests) + 1, timeout)
    except TimeoutError:
        seen = [(r.method, r.path, r.status) for r in api.requests]
        raise AssertionError(f"the expected API calls never came; the server saw {seen}") from None


def answered(api: ApiServerEmulator, method: str, resource: str, status: int) -> int:
    return sum(
        1
        for r in api.requests
        if r.method == method and f"/{resource}" in r.path and r.status == status
    )


async def replay_event_calls(event_api: str, granted: set[tuple[str, str, str]]) -> set[Any]:
    """Drive the node's event path through every kind of write and lookup it makes, with RBAC
    denying all that `granted` does not allow; return the calls as RBAC saw them."""
    async with ApiServerEmulator(token="t") as api:
        for verb, resource, group in _EMULATED:
            if (verb, resource, group) not in granted:
                api.forbid(verb, resource, group=group)
        api.add_pvc("apps", "data", uid="uid-data", volume_name="pvc-1")
        api.add_pvc("apps", "logs", uid="uid-logs", volume_name="pvc-2")
        api.add_pv("pvc-2", claim=("apps", "logs", "uid-logs"))
        pipeline = await start_event_pipeline(
            node_id="node-1",
            driver_name=DEFAULT_DRIVER_NAME,
            kube_configuration=api.configuration(),
            event_api=event_api,
            sink_options=KubeSinkOptions(api=event_api, series_interval=0.01),  # type: ignore[arg-type]
        )
        poster = pipeline.poster
        claim = {PVC_NAMESPACE_KEY: "apps", PVC_NAME_KEY: "data"}
        try:
            # A first failure: the claim's uid is looked up (GET PVC), the event created.
            await poster.post_mount_failure("pvc-1", claim, "mkfs failed")
            await until(api, lambda: answered(api, "POST", "events", 201) == 1)
            # The same failure again: the event's count is patched.
            await poster.post_mount_failure("pvc-1", claim, "mkfs failed")
            await until(api, lambda: answered(api, "PATCH", "events", 200) == 1)
            # The event expired (1 h TTL): the patch gets 404 and the event is created again.
            assert api.expire_events() == 1
            await poster.post_mount_failure("pvc-1", claim, "mkfs failed")
            await until(api, lambda: answered(api, "POST", "events", 201) == 2)
            assert answered(api, "PATCH", "events", 404) == 1
            # No PVC keys in the volume context: volume id -> PV -> claimRef.
            await poster.post_stale_mount_detected("pvc-2", {}, "/dev/nvme0n1", "/dev/nvme1n1")
            await until(api, lambda: answered(api, "POST", "events", 201) == 3)
            assert answered(api, "GET", "persistentvolumes", 200) == 1
        finally:
            await pipeline.aclose(timeout=5.0)
        assert not pipeline.stats.dropped, f"events lost: {dict(pipeline.stats.dropped)}"
        denied = [r for r in api.requests if r.status == 403]
        assert not denied, f"RBAC denied {[authorization_of(r) for r in denied]}"
        stored = {ev["involvedObject"]["name"] for ev in api.events("apps")}
        assert stored == {"data", "logs"}
        return {authorization_of(r) for r in api.requests}


async def test_cluster_role_grants_exactly_the_calls_the_code_makes(
    docs: list[dict[str, Any]],
) -> None:
    granted = granted_by(the(docs, "ClusterRole"))
    core = await replay_event_calls("core/v1", granted)
    events_v1 = await replay_event_calls("events.k8s.io/v1", granted)

    lookups = {("get", "persistentvolumeclaims", ""), ("get", "persistentvolumes", "")}
    assert core == lookups | {("create", "events", ""), ("patch", "events", "")}
    assert events_v1 == lookups | {
        ("create", "events", "events.k8s.io"),
        ("patch", "events", "events.k8s.io"),
    }
    assert granted == core | events_v1, (
        f"granted but never used: {sorted(granted - core - events_v1)}; "
        f"used but not granted: {sorted((core | events_v1) - granted)}"
    )


def test_the_role_is_bound_to_the_daemonsets_service_account(docs: list[dict[str, Any]]) -> None:
    account = the(docs, "ServiceAccount")
    binding = the(docs, "ClusterRoleBinding")
    daemonset = the(docs, "DaemonSet")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": the(docs, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert daemonset["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert pod_spec(docs)["serviceAccountName"] == account["metadata"]["name"]


# --------------------------------------------------------------------------- the command line


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m[1]], value)


def container_env(spec: Mapping[str, Any], node_name: str, pod_ip: str) -> dict[str, str]:
    downward = {"spec.nodeName": node_name, "status.podIP": pod_ip}
    env: dict[str, str] = {}
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        else:
            env[var["name"]] = downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_plugin_args_and_env_are_accepted_by_the_real_cli(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    plugin = container(docs, PLUGIN)
    env = container_env(plugin, node_name="worker-7", pod_ip="10.1.2.3")
    args = [expand(arg, env) for arg in plugin.get("args", [])]
    assert "command" not in plugin, "the image's ENTRYPOINT is rds-csi-node"
    # The socket directory exists inside the pod (plugin-dir); here it is a temporary one.
    socket_dir = str(Path(sock_path_in(plugin, env)).parent) + "/"
    here = [arg.replace(socket_dir, f"{tmp_path}/") for arg in args]
    here_env = {key: value.replace(socket_dir, f"{tmp_path}/") for key, value in env.items()}
    config = parse_config(here, here_env)
    assert config.socket_path == tmp_path / "csi.sock"
    assert config.node_id == "worker-7"
    assert config.driver_name == DEFAULT_DRIVER_NAME
    assert config.connector == "nvme-tcp"
    assert config.log_format == "json"
    assert config.metrics_address == ("10.1.2.3", 9809)
    assert config.kubeconfig is None, "in the pod the in-cluster configuration is used"


def test_every_plugin_env_var_is_used(docs: list[dict[str, Any]]) -> None:
    """Each variable is read by the CLI (it changes a default) or expanded into an argument."""
    plugin = container(docs, PLUGIN)
    args = " ".join(plugin.get("args", []))
    baseline = vars(build_parser({}).parse_args([]))
    for var in plugin.get("env", []):
        name = var["name"]
        if f"$({name})" in args:
            continue
        changed = vars(build_parser({name: "unix:///sentinel/x.sock"}).parse_args([]))
        assert changed != baseline, f"env {name} is neither read by rds-csi-node nor in args"


def sock_path_in(plugin: Mapping[str, Any], env: Mapping[str, str]) -> str:
    config_endpoint = [expand(a, env) for a in plugin["args"] if a.startswith("--endpoint=")]
    endpoint = config_endpoint[0].split("=", 1)[1] if config_endpoint else env["CSI_ENDPOINT"]
    assert endpoint.startswith("unix://")
    return endpoint.removeprefix("unix://")


def flag(spec: Mapping[str, Any], name: str) -> str:
    for arg in spec.get("args", []):
        key, _, value = arg.partition("=")
        if key == name:
            return str(value)
    raise AssertionError(f"{spec['name']} has no {name}")


def host_path(docs: list[dict[str, Any]], spec: Mapping[str, Any], path: str) -> str:
    """Where a path inside a container lives on the node, through its hostPath mounts."""
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    best: tuple[str, str] | None = None
    for mount in spec.get("volumeMounts", []):
        target = mount["mountPath"].rstrip("/")
        covers = path == target or path.startswith(target + "/")
        if covers and (best is None or len(target) > len(best[0])):
            best = (target, volumes[mount["name"]]["hostPath"]["path"].rstrip("/"))
    assert best is not None, f"{path} is not on a hostPath volume in {spec['name']}"
    return best[1] + path[len(best[0]) :]


def test_plugin_registrar_and_livenessprobe_agree_on_the_socket(
    docs: list[dict[str, Any]],
) -> None:
    plugin = container(docs, PLUGIN)
    env = container_env(plugin, node_name="n", pod_ip="10.0.0.1")
    plugin_socket = host_path(docs, plugin, sock_path_in(plugin, env))
    assert plugin_socket == f"/var/lib/kubelet/plugins/{DEFAULT_DRIVER_NAME}/csi.sock"

    registrar = container(docs, REGISTRAR)
    assert host_path(docs, registrar, flag(registrar, "--csi-address")) == plugin_socket
    # The kubelet dials this path on the node itself.
    assert flag(registrar, "--kubelet-registration-path") == plugin_socket
    assert host_path(docs, registrar, "/registration") == "/var/lib/kubelet/plugins_registry"

    liveness = container(docs, LIVENESS)
    assert host_path(docs, liveness, flag(liveness, "--csi-address")) == plugin_socket


def test_kubelet_directory_is_shared_bidirectionally(docs: list[dict[str, Any]]) -> None:
    plugin = container(docs, PLUGIN)
    mounts = {m["mountPath"]: m for m in plugin["volumeMounts"]}
    assert mounts["/var/lib/kubelet"].get("mountPropagation") == "Bidirectional"
    assert host_path(docs, plugin, "/var/lib/kubelet/pods") == "/var/lib/kubelet/pods"
    assert host_path(docs, plugin, "/dev/nvme0n1") == "/dev/nvme0n1"
    assert host_path(docs, plugin, "/sys/class/nvme") == "/sys/class/nvme"
    assert plugin["securityContext"]["privileged"] is True
    spec = pod_spec(docs)
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]


# --------------------------------------------------------------------------- probes and ports


def listen_port(spec: Mapping[str, Any]) -> int:
    """The port a container's HTTP server listens on, from its own flags."""
    for name in ("--metrics-address", "--http-endpoint"):
        try:
            return int(flag(spec, name).rpartition(":")[2])
        except AssertionError:
            continue
    raise AssertionError(f"{spec['name']} serves no HTTP")


def probe_port(spec: Mapping[str, Any], probe: Mapping[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in spec.get("ports", [])}
    assert port in named, f"{spec['name']}: probe port {port!r} is not declared"
    return int(named[port])


def test_probes_reach_the_servers_that_answer_them(docs: list[dict[str, Any]]) -> None:
    plugin = container(docs, PLUGIN)
    registrar = container(docs, REGISTRAR)
    liveness = container(docs, LIVENESS)
    # Startup and readiness: the plugin's own /healthz (ready after start-up).
    for kind in ("startupProbe", "readinessProbe"):
        probe = plugin[kind]
        assert probe["httpGet"]["path"] == "/healthz"
        assert probe_port(plugin, probe) == listen_port(plugin)
    # Liveness: CSI Probe through the livenessprobe sidecar.
    assert plugin["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probe_port(plugin, plugin["livenessProbe"]) == listen_port(liveness)
    assert probe_port(registrar, registrar["livenessProbe"]) == listen_port(registrar)
    # hostNetwork: every port is a node port, so none may be used twice.
    ports = [listen_port(c) for c in (plugin, registrar, liveness)]
    assert len(set(ports)) == len(ports)
    annotations = the(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == listen_port(plugin)


def test_startup_probe_outlasts_the_orphan_cleanup(docs: list[dict[str, Any]]) -> None:
    """Before start-up finishes, CSI Probe says not ready and the liveness probe would fail:
    the startup probe must hold liveness off for longer than the clean-up may take."""
    probe = container(docs, PLUGIN)["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget > ORPHAN_CLEANUP_TIMEOUT


def test_shutdown_fits_the_termination_grace_period(docs: list[dict[str, Any]]) -> None:
    plugin = container(docs, PLUGIN)
    env = container_env(plugin, node_name="n", pod_ip="10.0.0.1")
    args = vars(build_parser(env).parse_args([expand(a, env) for a in plugin["args"]]))
    needed = args["shutdown_grace"] + args["event_flush_timeout"]
    assert pod_spec(docs)["terminationGracePeriodSeconds"] > needed


def test_every_container_has_requests_and_limits(docs: list[dict[str, Any]]) -> None:
    for spec in pod_spec(docs)["containers"]:
        for bound in ("requests", "limits"):
            assert set(spec["resources"][bound]) == {"cpu", "memory"}, spec["name"]


# --------------------------------------------------------------------------- images


def test_plugin_image_is_a_documented_placeholder_tagged_with_the_version(
    docs: list[dict[str, Any]],
) -> None:
    image = container(docs, PLUGIN)["image"]
    assert image.startswith("ghcr.io/")
    assert image.rpartition(":")[2] == __version__


def test_sidecars_are_pinned_upstream_images(docs: list[dict[str, Any]]) -> None:
    for name, repository in (
        (REGISTRAR, "registry.k8s.io/sig-storage/csi-node-driver-registrar"),
        (LIVENESS, "registry.k8s.io/sig-storage/livenessprobe"),
    ):
        image, _, tag = container(docs, name)["image"].rpartition(":")
        assert image == repository
        assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"{name}: pin a release tag, not {tag!r}"


def test_csidriver_matches_the_plugin(docs: list[dict[str, Any]]) -> None:
    driver = the(docs, "CSIDriver")
    assert driver["metadata"]["name"] == DEFAULT_DRIVER_NAME
    assert driver["spec"] == {
        "attachRequired": False,
        "podInfoOnMount": False,
        "volumeLifecycleModes": ["Persistent"],
        "fsGroupPolicy": "File",
        "requiresRepublish": False,
    }


# --------------------------------------------------------------------------- Dockerfile

# Debian bookworm package of each host tool the code runs (dpkg -S on bookworm).
DEBIAN_PACKAGE = {
    "nvme": "nvme-cli",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "blkid": "util-linux",
    "mkfs.ext4": "e2fsprogs",
    "fsck.ext4": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_repair": "xfsprogs",
    "xfs_growfs": "xfsprogs",
}


def dockerfile_instructions() -> Iterator[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            yield keyword.upper(), rest.strip()


def test_image_installs_a_package_for_every_host_tool() -> None:
    runner = CommandRunner()
    tools = {
        *NvmeTcpConnector(runner).required_tools(),
        *LoopConnector(runner).required_tools(),
        *Mounter.required_tools(),
    }
    unknown = tools - DEBIAN_PACKAGE.keys()
    assert not unknown, f"add the Debian package of {unknown} to DEBIAN_PACKAGE and the image"
    installed: set[str] = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest
            words = shlex.split(rest.split("apt-get install", 1)[1].split("&&", 1)[0])
            installed |= {w for w in words if not w.startswith("-")}
    assert {DEBIAN_PACKAGE[tool] for tool in tools} <= installed


def test_image_base_user_and_entrypoint() -> None:
    instructions = list(dockerfile_instructions())
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in instructions
    final_from = [rest for keyword, rest in instructions if keyword == "FROM"][-1]
    assert final_from == "${PYTHON_IMAGE}"
    assert instructions[-1] == ("ENTRYPOINT", '["rds-csi-node"]')
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users in ([], ["root"])
    entry_points = distribution("rds-csi").entry_points
    assert any(ep.name == "rds-csi-node" and ep.group == "console_scripts" for ep in entry_points)


def runtime_closure() -> dict[str, str]:
    """name -> installed version for every runtime dependency of rds-csi (no dev extras)."""
    seen: dict[str, set[str]] = {}
    versions: dict[str, str] = {}

    def walk(requirement: Requirement) -> None:
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in seen and extras <= seen[name]:
            return
        seen[name] = seen.get(name, set()) | extras
        dist = distribution(requirement.name)
        versions[name] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            wanted = seen[name] or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                walk(sub)

    for raw in distribution("rds-csi").requires or []:
        requirement = Requirement(raw)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            walk(requirement)
    return versions


def test_image_requirements_are_the_pinned_runtime_closure() -> None:
    lines = (DEPLOY / "image" / "requirements.txt").read_text().splitlines()
    pins: dict[str, str] = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for raw in project["dependencies"]:
        requirement = Requirement(raw)
        (specifier,) = requirement.specifier
        assert specifier.operator == "=="
        assert pins[canonicalize_name(requirement.name)] == specifier.version
    closure = runtime_closure()
    expected = "\n".join(f"{name}=={version}" for name, version in sorted(closure.items()))
    assert sorted(pins) == sorted(closure), f"requirements.txt should list:\n{expected}"


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _ = rest.split()
            copied |= {source.rstrip("/") for source in sources}
    assert copied == admitted
