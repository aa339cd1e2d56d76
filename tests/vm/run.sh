#!/usr/bin/env bash
# A QEMU guest with a kernel that has kTLS (Debian's linux-image 6.1,
# amd64 flavour), for the tests the development kernel cannot run (it has
# no CONFIG_TLS). See tests/vm/README.md.
#
#   tests/vm/run.sh prepare              kernel and initramfs into the cache
#   tests/vm/run.sh exec [-t S] -- CMD   boot, run CMD inside, return its status
#
# exec: the guest sees the host's / read-only over 9p, under an overlay
# with a tmpfs upper layer (writes vanish at power-off), and $KTLS_VM_RW
# read-write at the same path; CMD runs in a chroot of that, in the current
# directory, as root, with 127.0.0.1 on lo and no other network. Its
# output streams to stdout (the serial console, kernel messages included).
# Exit status: CMD's; 124 when the guest timed out, 125 when QEMU could not
# start (why: the line "vm: QEMU cannot start: ..." on stderr and in
# $KTLS_VM_CACHE/boot.status), 126 when the guest ended without a status.
#
# env: KTLS_VM_CACHE (default _build/vm), KTLS_VM_RW (default
# $KTLS_VM_CACHE/rw), KTLS_VM_KVER (a kernel ABI such as 6.1.0-57-amd64;
# default: the cached one, else what linux-image-amd64 depends on),
# KTLS_VM_MEM (2G), KTLS_VM_SMP (2), KTLS_VM_TIMEOUT (seconds, 600).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${KTLS_VM_CACHE:-$root/_build/vm}
rw=${KTLS_VM_RW:-$cache/rw}
mem=${KTLS_VM_MEM:-2G}
smp=${KTLS_VM_SMP:-2}
vm_timeout=${KTLS_VM_TIMEOUT:-600}
# tls.ko asks for its AEADs with request_module(); the initramfs has no
# modprobe that could find them, so all are loaded up front.
modules=(tls gcm ghash-generic ghash-clmulni-intel aesni-intel ctr seqiv
  chacha20poly1305 chacha-x86_64 chacha_generic poly1305-x86_64 poly1305_generic
  virtio_pci 9pnet_virtio 9p overlay)

say() { printf 'vm: %s\n' "$*" >&2; }
cannot_start() {
  mkdir -p "$cache"
  echo "cannot-start: $*" >"$cache/boot.status"
  say "QEMU cannot start: $*"
  exit 125
}

# The kernel ABI that linux-image-amd64 depends on in apt's lists.
apt_kernel_version() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -1
}

# The kernel ABI to boot: asked for, cached, or the one Debian ships now.
kernel_version() {
  if [ -n "${KTLS_VM_KVER:-}" ]; then
    echo "$KTLS_VM_KVER"
    return
  fi
  local v
  v=$(find "$cache/kernel" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -1)
  if [ -n "$v" ] && [ -f "$cache/kernel/$v/vmlinuz" ]; then
    echo "$v"
    return
  fi
  v=$(apt_kernel_version)
  if [ -z "$v" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    v=$(apt_kernel_version)
  fi
  echo "$v"
}

# The image package of $kver in $cache/debs (kept, so a new initramfs
# needs no download); sets $deb. Not `apt-get install`: that would run the
# kernel's postinst hooks and pull initramfs-tools into the host. With
# stale lists the version may be gone from the archive: then the lists are
# updated and $kver is what they name now.
fetch_kernel() {
  local d log=$cache/debs/download.log
  mkdir -p "$cache/debs"
  deb=""
  for d in "$cache/debs/linux-image-${kver}_"*.deb; do [ -f "$d" ] && deb=$d; done
  [ -n "$deb" ] && return
  say "downloading linux-image-$kver (apt-get download)"
  if ! (cd "$cache/debs" && apt-get download "linux-image-$kver") >"$log" 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    [ -n "${KTLS_VM_KVER:-}" ] || kver=$(apt_kernel_version)
    (cd "$cache/debs" && apt-get download "linux-image-$kver") >"$log" 2>&1 ||
      cannot_start "no guest kernel: apt-get download linux-image-$kver failed: $(grep -E '^E:' "$log" | head -1)"
  fi
  for d in "$cache/debs/linux-image-${kver}_"*.deb; do [ -f "$d" ] && deb=$d; done
  [ -n "$deb" ] || cannot_start "no guest kernel: apt-get download left no linux-image-${kver}_*.deb"
}

# What the initramfs of $kver is made of, in 16 hex digits.
initrd_key() {
  printf '%s\n' "$kver" "${modules[@]}" | cat - "$here/init.sh" /bin/busybox | sha256sum | cut -c1-16
}

# vmlinuz and an initramfs (busybox, the modules above, tests/vm/init.sh);
# rebuilt only when the kernel, the module list, init.sh or busybox change.
prepare() {
  command -v qemu-system-x86_64 >/dev/null ||
    cannot_start "qemu-system-x86_64 is not installed (Debian package qemu-system-x86, tools/packages.txt)"
  local b
  for b in busybox cpio depmod modprobe; do
    command -v "$b" >/dev/null || [ -x "/sbin/$b" ] ||
      cannot_start "$b is not installed (tools/packages.txt: busybox-static cpio kmod)"
  done
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' ||
    cannot_start "/bin/busybox is not the static one (Debian package busybox-static)"
  kver=$(kernel_version)
  [ -n "$kver" ] || cannot_start "no guest kernel: apt-cache knows no linux-image-amd64"
  kdir=$cache/kernel/$kver
  if [ -f "$kdir/vmlinuz" ] && [ -f "$kdir/initrd-$(initrd_key).img" ]; then
    initrd=$kdir/initrd-$(initrd_key).img
    return
  fi
  local t0=$SECONDS tmp deb
  fetch_kernel
  kdir=$cache/kernel/$kver
  tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  dpkg -x "$deb" "$tmp/deb"
  mkdir -p "$kdir"
  cp "$tmp/deb/boot/vmlinuz-$kver" "$kdir/vmlinuz"
  depmod -b "$tmp/deb" "$kver"
  local ird=$tmp/initrd mdir=lib/modules/$kver m line kw
  mkdir -p "$ird"/{bin,dev,proc,sys,tmp,lower,ovl,host,"$mdir"}
  cp /bin/busybox "$ird/bin/busybox"
  cp "$here/init.sh" "$ird/init"
  chmod 755 "$ird/init"
  : >"$ird/modules.load"
  for m in "${modules[@]}"; do
    # "insmod PATH" lines in load order; "builtin NAME" needs nothing.
    modprobe -d "$tmp/deb" -S "$kver" --show-depends "$m" >"$tmp/deps" ||
      cannot_start "kernel $kver has no module $m"
    while read -r kw line; do
      [ "$kw" = insmod ] || continue
      line=${line#"$tmp/deb/$mdir/"}
      line=${line%% *}
      grep -qxF "$line" "$ird/modules.load" && continue
      echo "$line" >>"$ird/modules.load"
      mkdir -p "$ird/$mdir/$(dirname "$line")"
      cp "$tmp/deb/$mdir/$line" "$ird/$mdir/$line"
    done <"$tmp/deps"
  done
  rm -f "$kdir"/initrd-*.img
  initrd=$kdir/initrd-$(initrd_key).img
  (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
  say "kernel $kver, initramfs with $(wc -l <"$ird/modules.load") modules ($((SECONDS - t0)) s)"
  rm -rf "$tmp"
  trap - EXIT
}

# Boots the guest with CMD (already written to $rw/.vm-cmd); streams the
# console; returns the status as documented at the top.
boot() {
  local log=$cache/console.log qerr=$cache/qemu.stderr
  rm -f "$rw/.vm-rc"
  echo "booting" >"$cache/boot.status"
  local bios=()
  # qboot boots faster than SeaBIOS and prints nothing.
  [ -f /usr/share/qemu/qboot.rom ] && bios=(-bios /usr/share/qemu/qboot.rom)
  local t0=$SECONDS qrc=0
  set +e
  timeout -k 10 "$vm_timeout" qemu-system-x86_64 -accel tcg -cpu max -m "$mem" -smp "$smp" \
    -nographic -nodefaults -no-reboot -serial stdio -monitor none -nic none "${bios[@]}" \
    -kernel "$kdir/vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 quiet panic=-1 mitigations=off random.trust_cpu=on ktlsvm.rw=$rw" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$rw,mount_tag=rw,security_model=none,multidevs=remap" \
    </dev/null 2>"$qerr" | sed -u 's/\r$//' | tee "$log"
  qrc=${PIPESTATUS[0]}
  set -e
  local secs=$((SECONDS - t0))
  local timed_out=false
  [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ] && timed_out=true
  # QEMU itself failed (bad option, no memory, no CPU model): nothing ran.
  # A guest that boots and then hangs or panics is the guest's failure.
  if [ ! -s "$log" ] && [ "$qrc" -ne 0 ] && ! $timed_out; then
    cannot_start "qemu-system-x86_64 exited with status $qrc: $(tail -3 "$qerr" | tr '\n' ' ' | sed 's/ *$//')"
  fi
  echo "started" >"$cache/boot.status"
  if $timed_out; then
    say "the guest timed out after ${vm_timeout} s (KTLS_VM_TIMEOUT); console: $log"
    return 124
  fi
  if [ ! -s "$rw/.vm-rc" ]; then
    say "the guest ended without an exit status after $secs s (qemu status $qrc); console: $log"
    return 126
  fi
  local rc
  rc=$(cat "$rw/.vm-rc")
  say "guest command exited $rc; qemu ran $secs s"
  return "$rc"
}

# Writes CMD, run in the current directory with a clean environment (the
# KTLS_* variables are passed on), as the script the guest's init runs.
write_cmd() {
  case "$PWD$rw" in *[[:space:]]*) cannot_start "paths with spaces are not supported: $PWD $rw" ;; esac
  {
    echo "cd $(printf '%q' "$PWD") || exit 127"
    local v
    for v in $(compgen -e | grep '^KTLS_' || true); do
      printf 'export %s=%q\n' "$v" "${!v}"
    done
    printf 'exec'
    printf ' %q' "$@"
    echo
  } >"$rw/.vm-cmd"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  prepare)
    mkdir -p "$cache"
    prepare
    echo "$kdir/vmlinuz $initrd"
    ;;
  exec)
    while [ $# -gt 0 ]; do
      case "$1" in
        -t)
          vm_timeout=$2
          shift 2
          ;;
        --)
          shift
          break
          ;;
        *) break ;;
      esac
    done
    [ $# -gt 0 ] || {
      echo "usage: $0 exec [-t SECONDS] -- CMD [ARGS...]" >&2
      exit 2
    }
    mkdir -p "$cache" "$rw"
    rw=$(cd "$rw" && pwd)
    prepare
    write_cmd "$@"
    boot
    ;;
  *)
    sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
