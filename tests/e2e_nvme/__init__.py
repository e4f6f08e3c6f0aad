"""End-to-end test of the NVMe/TCP path against the real kernel, in a QEMU guest.

Why a VM: the host kernel of the dev and CI machines has no NVMe/TCP, no nvmet and no configfs,
and its KVM (kvm_pvm) cannot run a stock kernel. So the harness boots Debian's stock kernel under
TCG (2 vCPUs), where Linux's own target (nvmet-tcp) and initiator (nvme-tcp) talk over 127.0.0.1.

Run it (as root, from the repository root, with the project's virtualenv):

    .venv/bin/python -m tests.e2e_nvme.run            # build if needed, boot, run every scenario
    .venv/bin/python -m tests.e2e_nvme.run --quiet    # stream only result lines
    .venv/bin/python -m tests.e2e_nvme.run --only raw_tools_path,connector_orphan_cleanup
    .venv/bin/python -m tests.e2e_nvme.run --rebuild  # ignore the cached guest

Exit status 0 only when every scenario passed; the last line reads `e2e: N passed, M failed`.

Pieces:
* build.py: the guest, from Debian packages, cached in .cache/e2e-nvme/guest-<recipe hash>/.
  The kernel package is resolved from `linux-image-amd64` (apt-cache depends), fetched with
  `apt-get download`, unpacked with `dpkg-deb -x`; modules.dep comes from `depmod -b`; the ELF
  kernel is pulled out of vmlinuz so QEMU boots it through PVH. The initramfs (uncompressed cpio)
  holds static busybox, the modules (configfs, nvme*, nvmet*, brd, loop, ext4, 9p, overlay, ...),
  nvme/mke2fs/blkid/mount/umount/losetup with their ldd libraries, and etc/nvme/hostnqn+hostid.
  Missing host tools (qemu-system-x86, busybox-static, cpio, kmod, nvme-cli, e2fsprogs, ...) are
  installed with apt-get. Any change to the recipe inputs (build.py, the init scripts, the kernel
  version, the host binaries copied in) changes the hash and rebuilds.
* init.sh (stage 1, busybox): lo up, insmod, mount the host root read-only over 9p, put a
  tmpfs-backed overlay on top, switch_root. stage2.sh (stage 2, host /bin/sh): proc/sys/dev/
  configfs, then `python -m tests.e2e_nvme.guest_test` with the checkout's .venv: the code under
  test is the working tree, unchanged. It prints `E2E-NVME-RESULT rc=N` and writes the verdict to
  isa-debug-exit (QEMU exits (v << 1) | 1); run.py requires both to agree, because QEMU itself
  exits 0 when the guest fails. `timeout` wraps QEMU and run.py has its own deadline on top.
* target.py: nvmet through configfs (subsystems, namespaces, ports, links); it can take a
  namespace or a port away under a mount and give it back.
* guest_test.py: the scenarios, each printing `E2E-NVME PASS|FAIL|SKIP <name>`; target and host are
  reset between scenarios. Raw tools first (connect, device by subsysnqn in the multipath layout,
  mkfs, mount, write, read back, disconnect; namespace loss under a mount; port loss and
  reconnect), then the plugin's NvmeTcpConnector (idempotent connect/disconnect, the prefix guard,
  orphan cleanup), a grpclib probe that measures what gRPC costs in the guest, and finally the
  real daemon over its socket: start-up orphan clean-up, Identity, stage/publish/stats/
  unpublish/unstage (each twice), stale mount recovery (StaleMountDetected), RecoveryFailed, and
  a clean SIGTERM shutdown.

Not collected by pytest (see conftest.py): this is its own command, run by `make e2e-nvme`.
"""
