#!/usr/bin/env bash
# Installs everything netbind's build, tests and main job need on Debian 12, as root.
# Safe to run twice: apt and cargo skip what is already there.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# The VM's uid/gid (KubeVirt's non-root qemu: 107) needs a passwd entry for libvirt. Create it
# before installing packages, which allocate system ids from 100 upwards and could take 107.
if ! getent group 107 >/dev/null; then groupadd -g 107 netbind-vm; fi
if ! getent passwd 107 >/dev/null; then
  useradd -u 107 -g 107 -M -d /nonexistent -s /usr/sbin/nologin netbind-vm 2>/dev/null
fi

PKGS=(
  iproute2 nftables            # kernel state read-back in tests (ip -j, nft -j)
  libvirt-clients libxml2-utils # virt-xml-validate: libvirt's own schema check
  dnsmasq-base busybox-static   # a rogue server and a real client; dnsmasq is also a bench peer
  isc-dhcp-client dhcpcd-base   # real DHCP clients against the launcher
  ndisc6                        # rdisc6: a real router-solicitation client against netbind-ra
  util-linux                    # setpriv: starts the launcher with no capability
  containernetworking-plugins netavark  # peers in the phase-1 benchmark
  kea-dhcp4-server              # a peer in the DHCP benchmark (a started service listens on no interface)
  qemu-system-x86 cpio file     # the real guest (TCG) and its initramfs
  passt                         # the passt binding's user-mode network (a guest on it, no capability)
  libvirt-daemon libvirt-daemon-driver-qemu  # an unprivileged libvirt session daemon
  containerd runc buildah catatonit  # the CRI tier: a private containerd, images built locally
  protobuf-compiler             # protoc, for the CRI client's generated code (crate k8s-cri)
  python3 binutils              # the linker wrapper (scripts/link-ordered) and its nm
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup.sh: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup.sh: installing cargo-nextest"
  # From / : the workspace's .cargo/config.toml (static, its own target) is not for tools.
  (cd / && cargo install --locked cargo-nextest)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup.sh: installing cargo-fuzz"
  (cd / && cargo install --locked cargo-fuzz)
fi

# kubernetes-validate (PyPI): the Kubernetes OpenAPI schemas, offline, for the strict check of
# deploy/'s manifests. In a venv of its own, so the system Python is left alone.
VALIDATE_VENV=/opt/netbind/venv
if [ ! -x "$VALIDATE_VENV/bin/kubernetes-validate" ]; then
  echo "setup.sh: installing kubernetes-validate into $VALIDATE_VENV"
  mkdir -p "$(dirname "$VALIDATE_VENV")"
  python3 -m venv "$VALIDATE_VENV"
  "$VALIDATE_VENV/bin/pip" install -q kubernetes-validate
fi

# The test guest: Debian's cloud kernel and a busybox initramfs (kept when already built).
"$(dirname "$0")/build-guest.sh"
