#!/bin/sh
# Stage 2 of the e2e-nvme guest: PID 1 on the host root (overlay), run by the host's /bin/sh.
# Mounts the kernel filesystems, runs the guest test with the checkout's virtualenv, prints the
# verdict marker the harness reads and hands the exit code to QEMU through isa-debug-exit.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PYTHONUNBUFFERED=1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# /tmp stays on the overlay (already tmpfs-backed): the checkout itself may live under /tmp.
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t configfs configfs /sys/kernel/config

finish() {
    echo "E2E-NVME-RESULT rc=$1"
    sync
    if [ "$1" -eq 0 ]; then code='\000'; else code='\001'; fi
    # isa-debug-exit: QEMU exits with (code << 1) | 1.
    printf "$code" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    echo o >/proc/sysrq-trigger
    exit "$1"
}

if [ -z "$E2E_REPO" ] || [ ! -d "$E2E_REPO" ]; then
    echo "E2E-NVME stage2: E2E_REPO '$E2E_REPO' is not a directory"
    finish 91
fi
cd "$E2E_REPO" || finish 91
read -r uptime _ </proc/uptime
echo "E2E-NVME stage2 start uptime=${uptime}"
export E2E_PYTHON_LAUNCH_UPTIME="$uptime"
timeout -k 5 "${E2E_GUEST_TIMEOUT:-200}" "$E2E_PYTHON" -m tests.e2e_nvme.guest_test
finish $?
