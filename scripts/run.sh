#!/usr/bin/env bash
# The main job. Until `netbind up` lands, it validates the example VMI and prints the phase-1
# plan, KubeVirt's nftables commands and the libvirt interface XML for a sample pod.
set -euo pipefail
cd "$(dirname "$0")/.."
VMI=${1:-examples/vmi-masquerade.yaml}
POD=${POD:-testdata/pods/pod-v4.json}

./scripts/setup.sh
cargo build --release --locked -p netbind-cli
NB=target/release/netbind
$NB validate "$VMI"
echo "--- plan ($VMI on $POD)"
$NB plan "$VMI" --pod "$POD" --resolv-conf testdata/resolv.conf
echo "--- nftables (KubeVirt's commands)"
$NB plan "$VMI" --pod "$POD" --resolv-conf testdata/resolv.conf --nft-text
echo "--- domain interfaces"
$NB domxml "$VMI" --pod "$POD" --resolv-conf testdata/resolv.conf
