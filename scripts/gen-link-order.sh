#!/usr/bin/env bash
# Makes link/hot-functions.txt: the functions netbind-handler runs in a pod's setup and
# teardown, hottest first, as symbol names of the builds that ship and measure it (`cargo
# build --release --bins`, as scripts/run.sh builds, and the phase-1 bench's own build, whose
# dev-dependencies unify other features and so give other symbol hashes). The linker wrapper
# (scripts/link-ordered) places them first and together; link/README.md says why.
#
# Run as root after a change to what a setup runs (it is a layout hint: a stale list costs
# only the speed of the functions it misses). Counted by valgrind's callgrind (instructions,
# not time: the same list whatever else the machine does), in namespaces of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "gen-link-order.sh: run as root (it makes network namespaces)" >&2; exit 1; }
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }

work=$(mktemp -d /dev/shm/netbind-order.XXXXXX)
id=nbo$$
cleanup() {
  for ns in "$id-node" "$id-m" "$id-b"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A pod as a runtime leaves it: eth0 (a veth from the node) with the pod IP and a default route.
ip netns add "$id-node"
pod() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip -n "$id-node" link add "$2" type veth peer name eth0 netns "$1"
  ip -n "$id-node" addr add "10.$3.0.1/24" dev "$2"
  ip -n "$id-node" link set "$2" up
  ip -n "$1" addr add "10.$3.0.2/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" route add default via "10.$3.0.1"
}
pod "$id-m" "${id}m" 71
pod "$id-b" "${id}b" 72

handler=target/x86_64-unknown-linux-gnu/release/netbind-handler
# Runs the handler under callgrind (`--demangle=no`: the linker needs the symbol names).
profile() {
  local out=$1
  shift
  # valgrind 3.19 knows neither NS_GET_NSTYPE nor fsopen (its notes go to its log): the
  # handler reads and writes the sysctls through the node's /proc there, so the few functions
  # of its own procfs mount are not in the list.
  valgrind -q --tool=callgrind --demangle=no --callgrind-out-file="$work/$out" \
    --log-file="$work/$out.log" \
    "$handler" "$@" >/dev/null
}
# One build's functions: a masquerade pod set up and torn down, a bridge pod set up and torn
# down as a runtime's DEL does it (detached; the helper's removal is not on the caller's path).
profile_build() {
  local tag=$1
  for binding in masquerade bridge; do
    local ns=$id-${binding:0:1}
    local dirs=(--handoff-dir "$work/$tag-$binding/handoff" --state-dir "$work/$tag-$binding/state")
    profile "$tag-$binding-setup" setup --netns "/run/netns/$ns" \
      --vmi "$PWD/examples/vmi-$binding.yaml" "${dirs[@]}"
    if [ "$binding" = masquerade ]; then
      profile "$tag-$binding-teardown" teardown --netns "/run/netns/$ns" "${dirs[@]}"
    else
      profile "$tag-$binding-teardown" teardown --detach --netns "/run/netns/$ns" "${dirs[@]}"
      sleep 1 # the helper's removal
    fi
  done
}

cargo build --release --bins --locked -q
profile_build release
cargo bench --locked -q -p netbind-handler --bench phase1 --no-run
profile_build bench

# Every function with instructions counted, hottest first over all runs; each name once.
python3 - "$work" >link/hot-functions.txt <<'EOF'
import collections, glob, re, subprocess, sys

total = collections.Counter()
for out in sorted(glob.glob(sys.argv[1] + "/*-setup") + glob.glob(sys.argv[1] + "/*-teardown")):
    listing = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", out],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = listing.split("file:function", 1)[1].splitlines()
    for row in rows:
        match = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+?):(\S+)", row)
        if not match:
            continue
        name = re.sub(r"'\d+$", "", match.group(3))
        if name.startswith("0x") or name == "(below":
            continue
        total[name] += int(match.group(1).replace(",", ""))
print("\n".join(name for name, _ in total.most_common()))
EOF
echo "gen-link-order.sh: link/hot-functions.txt, $(wc -l <link/hot-functions.txt) functions"
