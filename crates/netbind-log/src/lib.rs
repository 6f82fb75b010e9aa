//! How the handler, the CNI plugin, the launcher and the sidecar log, in one place: each
//! binary had its own copy of this set-up, and the copies drifted (one read another variable,
//! three wrote terminal colour codes into runtimes' and pods' logs).
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The variable that filters every netbind binary's log (a `tracing` filter: `debug`,
/// `netbind_cni=debug`, ...).
pub const FILTER_ENV: &str = "NETBIND_LOG";

/// Logs to stderr, filtered by [`FILTER_ENV`] or else by `default` (e.g. `"warn"`), with colour
/// codes only for a person at a terminal: a runtime's log or a pod's keeps the text as written.
/// Call it once, first thing in `main` (before any seccomp filter: it asks whether stderr is a
/// terminal).
pub fn init(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
