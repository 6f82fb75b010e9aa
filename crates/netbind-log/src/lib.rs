//! How the handler, the CNI plugin, the launcher and the sidecar log, in one place: each
//! binary had its own copy of this set-up, and the copies drifted (one read another variable,
//! three wrote terminal colour codes into runtimes' and pods' logs).
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The variable that filters every netbind binary's log: comma-separated directives, each a
/// level (`debug`) or a target and its level (`netbind_cni=debug`).
pub const FILTER_ENV: &str = "NETBIND_LOG";

/// The filter a value of [`FILTER_ENV`] asks for, or why it cannot be one.
///
/// Targets and levels only, not `tracing`'s `EnvFilter` with its span and field matching:
/// that one brings a regular-expression engine whose Unicode tables are pointers the C
/// library relocates at every start of a static binary (about 70 KB of them in the per-pod
/// handler), for a syntax no netbind log line needs.
///
/// # Errors
///
/// The directive that is neither a level nor `target=level`.
pub fn filter(spec: &str) -> Result<Targets, String> {
    spec.parse::<Targets>()
        .map_err(|err| format!("{FILTER_ENV}={spec:?} is not a log filter ({err}): expected levels or target=level, comma-separated"))
}

/// Logs to stderr, filtered by [`FILTER_ENV`] or else by `default` (e.g. `"warn"`), with colour
/// codes only for a person at a terminal: a runtime's log or a pod's keeps the text as written.
/// A value of [`FILTER_ENV`] that is not a filter is said on stderr, and `default` used; an
/// empty one is as if unset.
/// Call it once, first thing in `main` (before any seccomp filter: it asks whether stderr is a
/// terminal).
pub fn init(default: &str) {
    // An empty value is no value (a `Targets` parsed from it would silence everything).
    let from_env = std::env::var(FILTER_ENV)
        .ok()
        .filter(|spec| !spec.trim().is_empty())
        .map(|spec| filter(&spec));
    let targets = match from_env {
        Some(Ok(targets)) => targets,
        Some(Err(why)) => {
            eprintln!("{why}; logging with {default:?}");
            filter(default).unwrap_or_default()
        }
        None => filter(default).unwrap_or_default(),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(targets),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::filter;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn levels_and_targets_are_filters() {
        let targets = filter("warn,netbind_cni=debug").expect("a filter");
        assert!(targets.would_enable("netbind_cni::add", &tracing::Level::DEBUG));
        assert!(!targets.would_enable("netbind_cni::add", &tracing::Level::TRACE));
        assert!(targets.would_enable("netbind_handler", &tracing::Level::WARN));
        assert!(!targets.would_enable("netbind_handler", &tracing::Level::INFO));
        assert_eq!(
            filter("debug").expect("a level").default_level(),
            Some(LevelFilter::DEBUG)
        );
    }

    #[test]
    fn a_bad_directive_is_named() {
        let err = filter("netbind_cni=loud").expect_err("not a level");
        assert!(err.contains("NETBIND_LOG=\"netbind_cni=loud\""), "{err}");
    }
}
