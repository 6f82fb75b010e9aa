#!/usr/bin/env bash
# The main job: set up this machine, build netbind, and run a VMI on privilege-separated
# networking with a real guest. Usage: run.sh [VMI.yaml] [qemu|libvirt|none]
#   default: examples/vmi-masquerade.yaml with QEMU. The pod is removed at the end unless
#   KEEP=1 (then: target/x86_64-unknown-linux-gnu/release/netbind status / down NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
VMI=${1:-examples/vmi-masquerade.yaml}
BOOT=${2:-qemu}
NAME=${NAME:-demo}

./scripts/setup.sh
cargo build --release --locked --bins
# .cargo/config.toml names the target (static binaries), hence the triple in the path.
NB=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/netbind
$NB validate "$VMI"
$NB down "$NAME" >/dev/null 2>&1 || true
if [ "$BOOT" = none ]; then
  $NB up "$VMI" --name "$NAME"
else
  $NB up "$VMI" --name "$NAME" --boot "$BOOT"
fi
$NB status
if [ "${KEEP:-0}" != 1 ]; then
  $NB down "$NAME"
fi
