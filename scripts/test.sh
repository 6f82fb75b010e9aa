#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting, lints, the privilege-boundary
# check, then every test (pure, kernel and end-to-end tiers) with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

step() { echo "==> $*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
step "cargo doc (no warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked --quiet
step "privilege boundary: pure crates carry no unsafe and no kernel crates"
./scripts/check-boundaries.sh
step "cargo build --bins (the e2e and audit tests run every binary; the launcher's test hook is on for the seccomp test)"
cargo build --bins --locked --features netbind-launcher/test-hooks
step "cargo nextest run"
cargo nextest run --workspace --locked --no-fail-fast
step "nothing the tests started still runs"
./scripts/check-leftovers.sh
step "benchmarks, smoke run: each once with the fewest rounds, as the README runs them (a bench that breaks at run time fails here; at this size its numbers mean nothing)"
cargo build --release --bins --locked -q
bench() {
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    tail -40 "$log"
    echo "benchmark failed: $*" >&2
    exit 1
  fi
  grep -E '^(## |\| netbind|Floor|Ceiling|CRI benchmark|RunPodSandbox|The machine|WARNING)' "$log" || true
  rm -f "$log"
}
NETBIND_BENCH_CYCLES=2 NETBIND_BENCH_PODS=8 NETBIND_BENCH_CONCURRENT=4 NETBIND_BENCH_SETTLE_MS=20 \
  bench cargo bench --locked -q -p netbind-handler --bench phase1
NETBIND_BENCH_ROUNDS=20 NETBIND_BENCH_STARTS=2 bench cargo bench --locked -q -p netbind-e2e --bench dhcp
NETBIND_BENCH_ROUNDS=2 NETBIND_BENCH_VMS=1 bench cargo bench --locked -q -p netbind-cri --bench cri
step "nothing the benchmarks started still runs"
./scripts/check-leftovers.sh
step "fuzz smoke: every target ${FUZZ_SECONDS:-20} s from its seeds (stable toolchain, no sanitizer)"
(
  cd fuzz
  # cargo fuzz has no --locked and would quietly rewrite a lock file that fell behind the
  # workspace's dependencies: fail instead, as every other cargo call here does.
  if ! cargo metadata --locked --format-version 1 >/dev/null; then
    echo "fuzz/Cargo.lock is out of date: run 'cargo update -w' in fuzz/ and commit it" >&2
    exit 1
  fi
  for t in dhcpv4 dhcpv6 handoff vmi_yaml; do
    mkdir -p "corpus/$t"
    log="corpus/$t.log"
    if ! cargo fuzz run -s none -a "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="${FUZZ_SECONDS:-20}" -print_final_stats=1 >"$log" 2>&1; then
      tail -40 "$log"
      echo "fuzz target $t failed" >&2
      exit 1
    fi
    echo "$t: $(grep -E '^stat::number_of_executed_units' "$log")"
  done
)
