#!/usr/bin/env bash
# The privilege boundary is a crate boundary: fail if a crate that must stay pure (or
# unprivileged) links netlink, nftables or setns code.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
for crate in netbind-contract netbind-model netbind-plan; do
  if ! grep -q '^#!\[forbid(unsafe_code)\]' "crates/$crate/src/lib.rs"; then
    echo "check-boundaries: $crate lacks #![forbid(unsafe_code)]" >&2
    fail=1
  fi
done
for crate in netbind-contract netbind-model netbind-plan netbind-launcher; do
  [ -d "crates/$crate" ] || continue
  if cargo tree -p "$crate" -e normal --prefix none 2>/dev/null \
      | grep -E '^(netlink-[a-z-]+|nftables|rtnetlink|netbind-handler|netbind-netlink) ' ; then
    echo "check-boundaries: $crate depends on privileged code (above)" >&2
    fail=1
  fi
done
# Of netbind, the launcher links the contract crate alone: not the planner, the YAML parser or
# admission.
if cargo tree -p netbind-launcher -e normal --prefix none 2>/dev/null \
    | grep -E '^netbind-(model|plan|handler|audit|cli) '; then
  echo "check-boundaries: netbind-launcher depends on more of netbind than netbind-contract (above)" >&2
  fail=1
fi
# ...and not even for its tests: phase 1 + phase 2 tests live in netbind-e2e, so building the
# launcher's own tests never builds privileged code either.
if cargo tree -p netbind-launcher -e normal,dev --prefix none 2>/dev/null \
    | grep -E '^(netbind-(model|plan|handler|audit|cli|netns|netlink)|netlink-[a-z-]+|rtnetlink|nftables) '; then
  echo "check-boundaries: netbind-launcher's dev-dependencies reach privileged code (above)" >&2
  fail=1
fi
# setns lives behind nix's `sched` feature: the launcher must not enable it.
if cargo tree -p netbind-launcher -e features -i nix 2>/dev/null | grep -q 'nix feature "sched"'; then
  echo "check-boundaries: netbind-launcher enables nix's sched feature (setns)" >&2
  fail=1
fi
# What a shipped binary links, no crate links for its tests only: a workspace release build
# unifies features across all of its crates, so a test framework among one crate's runtime
# dependencies (the sidecar's proptest did) enlarges every binary.
if cargo tree --workspace -e normal --prefix none 2>/dev/null \
    | grep -E '^(proptest|quickcheck|tempfile|rusty-fork) '; then
  echo "check-boundaries: a test-only crate is a runtime dependency (above; cargo tree --workspace -e normal -i NAME says whose)" >&2
  fail=1
fi
# The per-pod binaries start once per pod operation, and a static PIE relocates every pointer
# of its read-only data at each start: no regular-expression engine (its Unicode tables were
# 70 KB of them, for a log filter syntax netbind does not use).
if cargo tree -p netbind-handler -p netbind-cni -e normal --prefix none 2>/dev/null \
    | grep -E '^(regex|regex-automata|regex-syntax|matchers) '; then
  echo "check-boundaries: netbind-handler or netbind-cni links a regular-expression engine (above)" >&2
  fail=1
fi
exit $fail
