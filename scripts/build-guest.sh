#!/usr/bin/env bash
# Builds netbind's test guest from Debian packages into DIR (default: .e2e/guest):
#   DIR/vmlinuz      Debian's cloud kernel (downloaded and unpacked, never installed: installing
#                    linux-image-* would pull udev, initramfs-tools and systemd-sysv)
#   DIR/initrd.gz    busybox-static, ISC dhclient (DHCPv6) with its libraries, the virtio-net
#                    modules, guest/init and its hooks
# Safe to run twice: an existing build is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(realpath -m "${1:-.e2e/guest}")
# Up to date when the image is newer than both files of guest/ that go into it.
fresh=1
for f in guest/init guest/udhcpc.script guest/dhclient6.script; do
  [ "$DIR/initrd.gz" -nt "$f" ] || fresh=0
done
if [ -s "$DIR/vmlinuz" ] && [ -s "$DIR/initrd.gz" ] && [ "$fresh" = 1 ]; then
  exit 0
fi
mkdir -p "$DIR"
W=$(mktemp -d)
chmod 755 "$W"  # apt-get download drops to _apt, which must be able to write here
trap 'rm -rf "$W"' EXIT
kpkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
KPKG=$(kpkg)
if [ -z "$KPKG" ]; then
  # No package lists yet (a machine where set-up had nothing to install).
  apt-get update -qq
  KPKG=$(kpkg)
fi
[ -n "$KPKG" ] || { echo "build-guest.sh: cannot find Debian's cloud kernel package" >&2; exit 1; }
(cd "$W" && apt-get download -qq "$KPKG" && dpkg-deb -x "$KPKG"_*.deb kroot)
cp "$W"/kroot/boot/vmlinuz-* "$DIR/vmlinuz.tmp" && mv "$DIR/vmlinuz.tmp" "$DIR/vmlinuz"
R="$W/initramfs"
mkdir -p "$R"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$R/bin/busybox"
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' \
  || { echo "build-guest.sh: /bin/busybox must be busybox-static" >&2; exit 1; }
cp guest/init "$R/init"
cp guest/udhcpc.script "$R/udhcpc.script"
cp guest/dhclient6.script "$R/dhclient6.script"
chmod 755 "$R/init" "$R/udhcpc.script" "$R/dhclient6.script"
# busybox has no DHCPv6 client: Debian's ISC dhclient, with the libraries ldd names.
DHCLIENT=$(command -v dhclient || echo /sbin/dhclient)
[ -x "$DHCLIENT" ] || { echo "build-guest.sh: dhclient (isc-dhcp-client) is missing" >&2; exit 1; }
mkdir -p "$R/sbin" "$R/etc/dhcp" "$R/var/lib/dhcp" "$R/run"
cp "$DHCLIENT" "$R/sbin/dhclient"
: > "$R/etc/dhcp/dhclient.conf"
for lib in $(ldd "$DHCLIENT" | grep -o '/[^ ]*'); do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
for kd in "$W"/kroot/lib/modules/*/; do
  kv=$(basename "$kd")
  mkdir -p "$R/lib/modules/$kv"
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    f=$(find "$kd/kernel" -name "$m.ko" | head -1)
    [ -n "$f" ] && cp "$f" "$R/lib/modules/$kv/"
  done
done
# Build aside and move into place: an interrupted or failed build never leaves a file that a
# later run would take for a finished one.
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -9) > "$DIR/initrd.gz.tmp"
chmod 644 "$DIR/vmlinuz" "$DIR/initrd.gz.tmp"
mv "$DIR/initrd.gz.tmp" "$DIR/initrd.gz"
echo "build-guest.sh: $DIR/vmlinuz ($KPKG), $DIR/initrd.gz"
