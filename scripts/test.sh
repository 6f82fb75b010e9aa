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
step "privilege boundary: pure crates carry no unsafe and no kernel crates"
./scripts/check-boundaries.sh
step "cargo nextest run"
cargo nextest run --workspace --locked --no-fail-fast
