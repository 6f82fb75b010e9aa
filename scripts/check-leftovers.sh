#!/usr/bin/env bash
# Fails when a process started from this checkout's test build (target/.../debug) still runs
# after the tests: a test stops what it starts, even when it fails, and a sandbox or helper
# left running keeps its network namespace alive after `ip netns del`. The detached teardown
# helpers finish within a second, so it waits up to 10 s before it lists what is left. It
# signals nothing (a pid read from /proc may be reused by the time of a kill): it reports.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${CARGO_TARGET_DIR:-$PWD/target}"
dir="$(cd "$dir" && pwd)/x86_64-unknown-linux-gnu/debug/"

left() {
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case "$exe" in
      "$dir"*) echo "${p#/proc/}: $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" ;;
    esac
  done
}

for _ in $(seq 50); do
  [ -z "$(left)" ] && exit 0
  sleep 0.2
done
echo "processes the tests started still run 10 s after them (pid: command line):" >&2
left >&2
exit 1
