"""Build the guest (kernel + initramfs) for the NVMe/TCP end-to-end run, from Debian packages.

The kernel package is resolved from the `linux-image-amd64` meta package, downloaded with
`apt-get download` and unpacked with `dpkg-deb -x` (never installed). The initramfs holds busybox,
the kernel modules the run needs (with a generated modules.dep), the raw NVMe/filesystem tools and
their shared libraries, and the two init scripts. Everything lands in a cache directory keyed by a
hash of the recipe, so a warm run costs a few hundred milliseconds and any change to the recipe
(this file, the init scripts, the kernel version, the host tools copied in) rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init.sh"
STAGE2_SCRIPT = HERE / "stage2.sh"

KERNEL_META_PACKAGE = "linux-image-amd64"

# Modules the guest loads, in the order asked for; their dependencies come first automatically.
MODULES: tuple[str, ...] = (
    "configfs",
    "crc32c_generic",  # ext4 asks the crypto API for crc32c; no module dependency pulls it in
    "loop",
    "brd",
    "ext4",
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "nvme-core",
    "nvme-fabrics",
    "nvme-tcp",
    "nvmet",
    "nvmet-tcp",
)
# Two 64 MiB RAM disks: the managed volume and the "boot disk" of another NQN prefix.
MODULE_PARAMS: dict[str, str] = {"brd": "rd_nr=4 rd_size=65536"}

# Host tools copied into the initramfs with every library ldd lists for them.
GUEST_TOOLS: tuple[str, ...] = ("nvme", "mke2fs", "blkid", "mount", "umount", "losetup")
TOOL_ALIASES: dict[str, str] = {"mkfs.ext4": "mke2fs"}

# What the harness needs on the host: command -> Debian package that ships it.
HOST_COMMANDS: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "cpio": "cpio",
    "depmod": "kmod",
    "nvme": "nvme-cli",
    "mke2fs": "e2fsprogs",
    "blkid": "util-linux",
    "mount": "mount",
    "losetup": "mount",
    "timeout": "coreutils",
}
STATIC_BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX = Path("/bin/busybox")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"


class BuildError(RuntimeError):
    """The guest could not be built; the message says which step and why."""


@dataclass(frozen=True)
class KernelPackage:
    name: str
    version: str

    @property
    def release(self) -> str:
        """`uname -r` of the guest: the package name minus its `linux-image-` prefix."""
        return self.name.removeprefix("linux-image-")


@dataclass(frozen=True)
class GuestImage:
    """A built guest: what QEMU boots, and the facts the harness reports."""

    directory: Path
    kernel: Path
    initrd: Path
    kernel_package: KernelPackage
    hostnqn: str
    built: bool  # False when it came from the cache
    seconds: float


def log(message: str) -> None:
    print(f"e2e-nvme: {message}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str | os.PathLike[str]], **kwargs: object) -> str:
    env = {**os.environ, "PATH": SBIN_PATH + ":" + os.environ.get("PATH", "")}
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )
    if result.returncode != 0:
        raise BuildError(
            f"{' '.join(map(str, argv))} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result.stdout


def _which(command: str) -> str | None:
    return shutil.which(command, path=SBIN_PATH + ":" + os.environ.get("PATH", ""))


# --- host packages -----------------------------------------------------------------------------


class Apt:
    """apt-get/apt-cache, with one `apt-get update` at most, and only when a look-up needs it."""

    def __init__(self) -> None:
        self._updated = False

    def update(self) -> None:
        if not self._updated:
            log("apt-get update")
            _run(["apt-get", "update", "-qq"])
            self._updated = True

    def install(self, packages: Iterable[str]) -> None:
        wanted = sorted(set(packages))
        if not wanted:
            return
        self.update()
        log(f"installing on the host: {' '.join(wanted)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *wanted],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise BuildError(f"apt-get install {' '.join(wanted)}: {result.stderr.strip()[-2000:]}")

    def resolve_kernel(self) -> KernelPackage:
        """The image package `linux-image-amd64` depends on now, with its candidate version."""
        for attempt in (1, 2):
            try:
                name = self._first_kernel_dependency()
                version = self._candidate_version(name)
                return KernelPackage(name, version)
            except BuildError:
                if attempt == 2 or self._updated:
                    raise
                self.update()
        raise AssertionError("unreachable")

    def resolve_kernel_cached(self, memo: Path) -> KernelPackage:
        """resolve_kernel, remembered until the package lists change.

        Each apt-cache call rebuilds apt's cache (Debian images disable pkgcache.bin), about
        1.5 s apiece; the answer can only change when /var/lib/apt/lists does.
        """
        key = _apt_lists_key()
        try:
            saved = json.loads(memo.read_text())
            if saved["lists"] == key:
                return KernelPackage(saved["name"], saved["version"])
        except (OSError, ValueError, KeyError):
            pass
        kernel = self.resolve_kernel()
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(
            json.dumps({"lists": _apt_lists_key(), "name": kernel.name, "version": kernel.version})
        )
        return kernel

    def _first_kernel_dependency(self) -> str:
        out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE])
        for line in out.splitlines():
            match = re.match(r"\s*(?:\|)?Depends:\s*(linux-image-\S+)", line)
            if match and not match.group(1).startswith("<"):
                return match.group(1)
        raise BuildError(f"apt-cache depends {KERNEL_META_PACKAGE}: no linux-image dependency")

    def _candidate_version(self, package: str) -> str:
        out = _run(["apt-cache", "show", "--no-all-versions", package])
        for line in out.splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
        raise BuildError(f"apt-cache show {package}: no Version")

    def download(self, package: KernelPackage, directory: Path) -> Path:
        """`apt-get download` into directory; a stale package list gets one update and a retry."""
        directory.mkdir(parents=True, exist_ok=True)
        argv = [
            "apt-get",
            "download",
            "-qq",
            "-o",
            "APT::Sandbox::User=root",
            f"{package.name}={package.version}",
        ]
        try:
            _run(argv, cwd=directory)
        except BuildError:
            if self._updated:
                raise
            self.update()
            _run(argv, cwd=directory)
        debs = sorted(directory.glob(f"{package.name}_*.deb"))
        if not debs:
            raise BuildError(f"apt-get download {package.name}: no .deb in {directory}")
        return debs[-1]


def _apt_lists_key() -> str:
    lists = Path("/var/lib/apt/lists")
    digest = hashlib.sha256()
    if lists.is_dir():
        for entry in sorted(lists.iterdir()):
            if entry.is_file():
                stat = entry.stat()
                digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def busybox_is_static() -> bool:
    if not BUSYBOX.exists():
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", STATIC_BUSYBOX_PACKAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "install ok installed" in result.stdout


def ensure_host_tools(apt: Apt) -> None:
    """Install whatever the harness needs and the host lacks, the way CI installs its tools."""
    missing = {package for command, package in HOST_COMMANDS.items() if _which(command) is None}
    if not busybox_is_static():
        missing.add(STATIC_BUSYBOX_PACKAGE)
    if missing:
        if os.geteuid() != 0:
            raise BuildError(f"need host packages {sorted(missing)}; only root can install them")
        apt.install(missing)


# --- recipe and cache --------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shared_libraries(binary: Path) -> list[Path]:
    """Every library the dynamic loader maps for binary, loader included (ldd's view)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    libraries: list[Path] = []
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (", 1)[0].strip()
            if target.startswith("/"):
                libraries.append(Path(target))
        elif line.startswith("/"):
            libraries.append(Path(line.split(" (", 1)[0]))
    return libraries


def guest_files() -> dict[str, Path]:
    """Initramfs path -> host file, for the tools and their libraries."""
    files: dict[str, Path] = {"/bin/busybox": BUSYBOX}
    for tool in GUEST_TOOLS:
        found = _which(tool)
        if found is None:
            raise BuildError(f"{tool} not found on the host")
        files[found] = Path(found)
        for library in shared_libraries(Path(found)):
            files[str(library)] = library
    return files


def recipe_digest(kernel: KernelPackage, files: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for source in (Path(__file__), INIT_SCRIPT, STAGE2_SCRIPT):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    digest.update(f"{kernel.name}={kernel.version}".encode())
    for guest_path, host_path in sorted(files.items()):
        digest.update(f"{guest_path}\0{_sha256(host_path)}\0".encode())
    return digest.hexdigest()[:16]


# --- kernel ------------------------------------------------------------------------------------


def extract_vmlinux(bzimage: Path, out: Path) -> bool:
    """Write the uncompressed ELF kernel inside bzimage to out (QEMU boots it via PVH).

    Booting the ELF skips the in-guest decompression, which is slow under TCG. Returns False when
    the payload is not XZ or not an ELF image; the caller then boots the bzImage.
    """
    data = bzimage.read_bytes()
    start = data.find(XZ_MAGIC)
    while start != -1:
        try:
            payload = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        except lzma.LZMAError:
            payload = b""
        if payload.startswith(ELF_MAGIC):
            out.write_bytes(payload)
            return True
        start = data.find(XZ_MAGIC, start + 1)
    return False


@dataclass(frozen=True)
class ModuleTree:
    root: Path  # a directory holding lib/modules/<release>
    release: str

    @property
    def directory(self) -> Path:
        return self.root / "lib" / "modules" / self.release

    def dependencies(self) -> dict[str, list[str]]:
        """modules.dep as relative path -> relative paths it needs."""
        table: dict[str, list[str]] = {}
        for line in (self.directory / "modules.dep").read_text().splitlines():
            module, _, needs = line.partition(":")
            table[module.strip()] = needs.split()
        return table

    def builtin(self) -> set[str]:
        names = set()
        for line in (self.directory / "modules.builtin").read_text().splitlines():
            names.add(_module_name(line))
        return names


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", base)
    return base.replace("-", "_")


def load_order(tree: ModuleTree, wanted: Sequence[str]) -> list[str]:
    """Module files to insmod, dependencies before their users; builtin modules are skipped."""
    table = tree.dependencies()
    by_name = {_module_name(path): path for path in table}
    builtin = tree.builtin()
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for needed in table[path]:
            visit(needed)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            raise BuildError(f"module {name} is neither a module nor builtin in {tree.release}")
    return order


# --- initramfs ---------------------------------------------------------------------------------


def _copy_into(root: Path, guest_path: str, source: Path) -> None:
    target = root / guest_path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), target)


def _populate_initramfs(
    root: Path, tree: ModuleTree, modules: list[str], files: dict[str, Path], hostnqn: str
) -> None:
    for directory in ("proc", "sys", "dev", "run", "tmp", "lower", "rw", "newroot", "sbin"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for guest_path, host_path in files.items():
        _copy_into(root, guest_path, host_path)
    for alias, tool in TOOL_ALIASES.items():
        real = next(p for p in files if p.endswith("/" + tool))
        (root / real.lstrip("/")).with_name(alias).symlink_to(tool)
    # Busybox applets fill in everything else; the real tools sit earlier on PATH.
    for applet in _run([BUSYBOX, "--list"]).split():
        link = root / "bin" / applet
        if not link.exists() and applet != "busybox":
            link.symlink_to("busybox")
    (root / "sbin" / "modprobe").symlink_to("/bin/busybox")

    # Modules: the load closure, plus the metadata kmod's modprobe reads after switch_root.
    guest_modules = root / "lib" / "modules" / tree.release
    for relative in modules:
        _copy_into(guest_modules, relative, tree.directory / relative)
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copy2(tree.directory / meta, guest_modules / meta)
    _run(["depmod", "-b", root, tree.release])
    lines = []
    for relative in modules:
        params = MODULE_PARAMS.get(_module_name(relative), "")
        lines.append(f"/lib/modules/{tree.release}/{relative} {params}".rstrip())
    etc = root / "etc"
    (etc / "e2e").mkdir(parents=True, exist_ok=True)
    (etc / "e2e" / "modules.load").write_text("\n".join(lines) + "\n")
    (etc / "e2e" / "release").write_text(tree.release + "\n")
    (etc / "nvme").mkdir(parents=True, exist_ok=True)
    (etc / "nvme" / "hostnqn").write_text(hostnqn + "\n")
    (etc / "nvme" / "hostid").write_text(hostnqn.rsplit(":", 1)[-1] + "\n")

    shutil.copy2(INIT_SCRIPT, root / "init")
    shutil.copy2(STAGE2_SCRIPT, root / "stage2.sh")
    (root / "init").chmod(0o755)
    (root / "stage2.sh").chmod(0o755)


def _pack_cpio(root: Path, out: Path) -> None:
    """newc archive, uncompressed: unpacking gzip under TCG costs more than reading the bytes."""
    names = sorted(str(path.relative_to(root)) for path in root.rglob("*") if path != root)
    with out.open("wb") as archive:
        result = subprocess.run(
            ["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
            input="\n".join(names).encode() + b"\n",
            stdout=archive,
            stderr=subprocess.PIPE,
            cwd=root,
            check=False,
        )
    if result.returncode != 0:
        raise BuildError(f"cpio: {result.stderr.decode().strip()}")


# --- entry point -------------------------------------------------------------------------------


def build_guest(cache_dir: Path, *, force: bool = False, apt: Apt | None = None) -> GuestImage:
    """Return the cached guest for the current recipe, building it first when missing or stale.

    Holds an exclusive lock on the cache while it looks and builds, so two runs at once (a
    developer's and CI's, or two developers') neither race on the build nor boot a half-built
    guest.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_guest_locked(cache_dir, force=force, apt=apt)


def _build_guest_locked(cache_dir: Path, *, force: bool, apt: Apt | None) -> GuestImage:
    started = time.monotonic()
    apt = apt or Apt()
    ensure_host_tools(apt)
    kernel = apt.resolve_kernel_cached(cache_dir / "kernel-package.json")
    files = guest_files()
    digest = recipe_digest(kernel, files)
    guest_dir = cache_dir / f"guest-{digest}"
    manifest_path = guest_dir / "manifest.json"
    if manifest_path.exists() and not force:
        manifest = json.loads(manifest_path.read_text())
        return GuestImage(
            directory=guest_dir,
            kernel=guest_dir / manifest["kernel"],
            initrd=guest_dir / manifest["initrd"],
            kernel_package=kernel,
            hostnqn=manifest["hostnqn"],
            built=False,
            seconds=time.monotonic() - started,
        )

    log(f"building the guest ({kernel.name} {kernel.version}) into {guest_dir}")
    deb_dir = cache_dir / "debs"
    debs = list(deb_dir.glob(f"{kernel.name}_{kernel.version.replace(':', '%3a')}_*.deb"))
    deb = debs[0] if debs else apt.download(kernel, deb_dir)
    for previous in deb_dir.glob("linux-image-*.deb"):
        if previous != deb:
            previous.unlink()

    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="work-") as work_name:
        work = Path(work_name)
        unpacked = work / "kernel"
        _run(["dpkg-deb", "-x", deb, unpacked])
        releases = [p.name for p in (unpacked / "lib" / "modules").iterdir()]
        if releases != [kernel.release]:
            raise BuildError(f"{deb.name} holds modules for {releases}, not {kernel.release}")
        tree = ModuleTree(unpacked, kernel.release)
        _run(["depmod", "-b", unpacked, kernel.release])
        modules = load_order(tree, MODULES)

        staging = work / "guest"
        staging.mkdir()
        bzimage = unpacked / "boot" / f"vmlinuz-{kernel.release}"
        kernel_name = "vmlinux" if extract_vmlinux(bzimage, staging / "vmlinux") else "vmlinuz"
        if kernel_name == "vmlinuz":
            shutil.copy2(bzimage, staging / "vmlinuz")
        hostnqn = f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid4()}"
        initramfs = work / "initramfs"
        _populate_initramfs(initramfs, tree, modules, files, hostnqn)
        _pack_cpio(initramfs, staging / "initrd.cpio")
        manifest = {
            "kernel": kernel_name,
            "initrd": "initrd.cpio",
            "kernel_package": f"{kernel.name}={kernel.version}",
            "hostnqn": hostnqn,
            "modules": modules,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for previous in cache_dir.glob("guest-*"):
            shutil.rmtree(previous)
        staging.rename(guest_dir)

    return GuestImage(
        directory=guest_dir,
        kernel=guest_dir / kernel_name,
        initrd=guest_dir / "initrd.cpio",
        kernel_package=kernel,
        hostnqn=hostnqn,
        built=True,
        seconds=time.monotonic() - started,
    )
