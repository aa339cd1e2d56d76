#!/bin/busybox sh
# /init of the guest's initramfs (tests/vm/run.sh builds it): loads the
# modules, mounts the host's / (9p, read-only) under a tmpfs overlay and
# the read-write share, runs the command run.sh wrote in a chroot of it,
# leaves its exit status in the share and powers off. Lines of its own
# start with "vm: " (run.sh looks for "vm: init").
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "vm: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
kv=$(uname -r)
say "init: kernel $kv, up $(up) s"
rc=0
while read -r m; do
  insmod "/lib/modules/$kv/$m" || say "insmod $m failed"
done </modules.load
ip link set lo up
rw=$(sed -n 's/.*ktlsvm\.rw=\([^ ]*\).*/\1/p' /proc/cmdline)

mount_host() {
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower ||
    return 1
  mount -t tmpfs -o size=1G upper /ovl && mkdir -p /ovl/upper /ovl/work || return 1
  mount -t overlay -o lowerdir=/lower,upperdir=/ovl/upper,workdir=/ovl/work overlay /host ||
    return 1
  mount -t proc proc /host/proc
  mount -t sysfs sys /host/sys
  mount -t devtmpfs dev /host/dev
  mkdir -p /host/dev/pts /host/dev/shm
  mount -t devpts devpts /host/dev/pts
  mount -t tmpfs shm /host/dev/shm
  # /tmp stays the host's (under the overlay, so writes vanish at power-off):
  # a checkout, or the read-write share, may live there.
  mount -t tmpfs run /host/run
  [ -n "$rw" ] || return 1
  mkdir -p "/host$rw"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none rw "/host$rw"
}

if mount_host; then
  say "running the command, up $(up) s"
  chroot /host /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/sh "$rw/.vm-cmd" </dev/null
  rc=$?
  echo "$rc" >"/host$rw/.vm-rc"
else
  say "cannot mount the host's root and $rw over 9p"
  rc=126
fi
say "exit $rc, up $(up) s"
sync
poweroff -f
