#!/bin/busybox sh
# Stage 1 of the e2e-nvme guest (PID 1 in the initramfs, busybox only).
# Loads the modules, mounts the host root (read-only 9p) under a tmpfs-backed overlay and
# switch_roots into it, so the checkout and its virtualenv run unchanged on the guest kernel.
# Any failure here reports itself on the console and powers the guest off with a failure code.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

fail() {
    echo "E2E-NVME stage1 FAILED: $*"
    echo "E2E-NVME-RESULT rc=90"
    printf '\001' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    poweroff -f
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
read -r uptime _ </proc/uptime
echo "E2E-NVME stage1 start uptime=${uptime}"

# Without this nothing answers on 127.0.0.1 and the target's port is unreachable.
ip link set lo up || fail "ip link set lo up"

while read -r module params; do
    [ -n "$module" ] || continue
    # shellcheck disable=SC2086 # params is a list of words on purpose
    insmod "$module" $params || fail "insmod $module $params"
done </etc/e2e/modules.load

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower \
    || fail "mount the host root over 9p"
# The overlay's upper layer lives on its own tmpfs: switch_root empties the initramfs.
mount -t tmpfs -o mode=0755,size=256m overlay-rw /rw || fail "mount the overlay tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || fail "mount the overlay"

release=$(cat /etc/e2e/release)
mkdir -p /newroot/lib/modules /newroot/etc/nvme || fail "prepare the new root"
cp -a "/lib/modules/$release" /newroot/lib/modules/ || fail "copy the modules"
cp /etc/nvme/hostnqn /etc/nvme/hostid /newroot/etc/nvme/ || fail "copy the host NQN"
cp /stage2.sh /newroot/e2e-stage2.sh || fail "copy stage 2"

umount /proc /sys 2>/dev/null
umount /dev 2>/dev/null
exec switch_root /newroot /bin/sh /e2e-stage2.sh
