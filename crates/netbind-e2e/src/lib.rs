//! Support for the end-to-end tests and benchmarks of phase 1 + phase 2 (in `tests/` and
//! `benches/`): they run the handler's library for phase 1 and the launcher's real binaries
//! for phase 2, which live in a crate of their own so that the launcher has no dependency,
//! not even a dev-dependency, on the privileged side.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// A netbind binary of the build profile this test or benchmark was built with
/// (`target/x86_64-unknown-linux-gnu/debug` for tests, `.../release` for benchmarks: the
/// workspace's `.cargo/config.toml` names the target). Cargo builds only a package's
/// own binaries for its tests, so the test command builds them first: `cargo build --bins
/// --features netbind-launcher/test-hooks` (the seccomp test needs `--seccomp-skip`), or
/// `cargo build --release --bins` before a benchmark. A missing binary fails with that advice.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/PROFILE/deps/TEST-HASH → target/PROFILE/NAME
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins --features \
         netbind-launcher/test-hooks` for the tests, `cargo build --release --bins` for the \
         benchmarks)",
        path.display()
    );
    path
}
