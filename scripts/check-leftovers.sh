#!/usr/bin/env bash
# Fails when something the tests started still runs after them: a test stops what it starts,
# even when it fails, and a process left running keeps its network namespace alive after
# `ip netns del`. Always: any process whose executable is in the test build's directory
# (target/.../debug). With CI set (a machine that runs nothing else in namespaces of its
# own), also any process in a network namespace other than this script's, whatever its
# program (a DHCP client, dnsmasq, QEMU). The detached teardown helpers finish within a
# second, so it waits up to 10 s before it lists what is left. It signals nothing (a pid
# read from /proc may be reused by the time of a kill): it reports.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${CARGO_TARGET_DIR:-$PWD/target}"
dir="$(cd "$dir" && pwd)/x86_64-unknown-linux-gnu/debug/"
own_netns=$(readlink /proc/self/ns/net)

left() {
  local p exe netns
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || exe=""
    netns=$(readlink "$p/ns/net" 2>/dev/null) || netns="$own_netns"
    case "$exe" in
      "$dir"*) ;;
      *) [ -n "${CI:-}" ] && [ "$netns" != "$own_netns" ] || continue ;;
    esac
    echo "${p#/proc/} ($netns): $(tr '\0' ' ' 2>/dev/null <"$p/cmdline")"
  done
}

for _ in $(seq 50); do
  [ -z "$(left)" ] && exit 0
  sleep 0.2
done
echo "processes the tests started still run 10 s after them (pid (network namespace): command line):" >&2
left >&2
exit 1
