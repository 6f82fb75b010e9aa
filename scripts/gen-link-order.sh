#!/usr/bin/env bash
# Makes link/hot-functions.txt: the functions netbind-handler runs in a pod's setup and
# teardown, and netbind-cni in its ADD and DEL, hottest first, as symbol names of the builds
# that ship and measure them (`cargo build --release --bins`, as scripts/run.sh builds, and the
# phase-1 bench's own build, whose dev-dependencies unify other features and so give other
# symbol hashes). The linker wrapper (scripts/link-ordered) places them first and together;
# link/README.md says why.
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
  for ns in "$id-node" "$id-m" "$id-b" "$id-c"; do ip netns del "$ns" 2>/dev/null || true; done
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
pod "$id-c" "${id}c" 73

bin=target/x86_64-unknown-linux-gnu/release
# Runs one of the binaries under callgrind (`--demangle=no`: the linker needs the symbol
# names). valgrind 3.19 knows neither NS_GET_NSTYPE nor fsopen (its notes go to its log): the
# handler reads and writes the sysctls through the node's /proc there, so the few functions of
# its own procfs mount are not in the list.
profile() {
  local out=$1 program=$2
  shift 2
  valgrind -q --tool=callgrind --demangle=no --callgrind-out-file="$work/$out" \
    --log-file="$work/$out.log" "$bin/$program" "$@" >/dev/null
}

# One build's handler: a masquerade pod set up and torn down, a bridge pod set up and torn
# down as a runtime's DEL does it (detached; the helper's removal is not on the caller's path).
profile_handler() {
  local tag=$1
  for binding in masquerade bridge; do
    local ns=$id-${binding:0:1}
    local dirs=(--handoff-dir "$work/$tag-$binding/handoff" --state-dir "$work/$tag-$binding/state")
    profile "$tag-$binding-setup" netbind-handler setup --netns "/run/netns/$ns" \
      --vmi "$PWD/examples/vmi-$binding.yaml" "${dirs[@]}"
    if [ "$binding" = masquerade ]; then
      profile "$tag-$binding-teardown" netbind-handler teardown --netns "/run/netns/$ns" "${dirs[@]}"
    else
      profile "$tag-$binding-teardown" netbind-handler teardown --detach \
        --netns "/run/netns/$ns" "${dirs[@]}"
      sleep 1 # the helper's removal
    fi
  done
}

# netbind-cni's ADD of a masquerade VM's pod (the VMI in the pod annotation, the pod network's
# result before it) and its DEL, as a runtime calls them.
profile_cni() {
  python3 - "$PWD/examples/vmi-masquerade.yaml" "$work/cni-run" "$id-c" >"$work/cni.json" <<'PY'
import json, sys
vmi, run_dir, ns = sys.argv[1:]
print(json.dumps({
    "cniVersion": "1.0.0", "name": "pods", "type": "netbind-cni", "runDir": run_dir,
    "capabilities": {"io.kubernetes.cri.pod-annotations": True},
    "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {
        "netbind.io/vmi": open(vmi).read(), "io.kubernetes.cri.sandbox-name": "order"}},
    "prevResult": {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": f"/run/netns/{ns}"}],
        "ips": [{"address": "10.73.0.2/24", "gateway": "10.73.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}]}}))
PY
  for command in ADD DEL; do
    CNI_COMMAND=$command CNI_CONTAINERID=order1 CNI_NETNS="/run/netns/$id-c" CNI_IFNAME=eth0 \
      CNI_PATH=/usr/lib/cni profile "release-cni-$command" netbind-cni <"$work/cni.json"
  done
  sleep 1 # the DEL's detached removal
}

cargo build --release --bins --locked -q
profile_handler release
profile_cni
# The bench builds netbind-handler only (netbind-cni keeps the release build's names).
cargo bench --locked -q -p netbind-handler --bench phase1 --no-run
profile_handler bench

# Every function with instructions counted, hottest first over all runs; each name once.
python3 - "$work" >link/hot-functions.txt <<'PY'
import collections, glob, re, subprocess, sys

total = collections.Counter()
runs = ("setup", "teardown", "ADD", "DEL")
for out in sorted(path for run in runs for path in glob.glob(f"{sys.argv[1]}/*-{run}")):
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
PY
echo "gen-link-order.sh: link/hot-functions.txt, $(wc -l <link/hot-functions.txt) functions"
