//! nftables, as ONE transaction per batch (it all applies or nothing does), in the pod's
//! namespace.
//!
//! By default the batch goes straight to the kernel over nfnetlink from this process
//! (`crate::nfnl`): no process to start, no library to load, no ruleset cache to read first.
//! For comparison and as an operator's fallback, `NETBIND_NFT=exec`, or `--nft PATH`, applies
//! the same ruleset's libnftables JSON form with `nft -j -f -` (a child started from the
//! thread inside the pod netns inherits it). There is no in-process libnftables: netbind's
//! binaries are static (`.cargo/config.toml`), and a static glibc program that `dlopen`s a
//! library linked against the shared libc runs two C libraries in one process (it crashed in
//! the tests).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netbind_plan::nft::{Family, Ruleset};

use crate::nfnl;
pub use crate::nfnl::Op;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables transaction ({what}): the nft binary {bin} is not available: {source}")]
    Spawn {
        what: String,
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("nftables transaction ({what}) failed: {stderr}")]
    Failed { what: String, stderr: String },
    #[error("nftables transaction ({what}): its thread panicked")]
    Panicked { what: String },
    #[error("nftables transaction ({what}): start its thread: {source}")]
    Thread {
        what: String,
        source: std::io::Error,
    },
    #[error("nftables transaction ({what}): cannot write {source}")]
    Lower {
        what: String,
        source: nfnl::LowerError,
    },
    #[error("nftables transaction ({what}) failed: {source}")]
    Kernel {
        what: String,
        source: nfnl::TransactionError,
    },
}

/// How transactions run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nft {
    /// nf_tables messages from this process.
    Netlink,
    /// The `nft` tool, as a child.
    Binary(PathBuf),
}

/// `NETBIND_NFT=exec`: apply the JSON form through the nft binary instead (an operator's
/// fallback); `netlink`, or unset, is the default.
pub const BACKEND_ENV: &str = "NETBIND_NFT";

/// Whether `NETBIND_NFT` asks for the nft binary. Any other value than `exec` or `netlink` is
/// named in a warning (`library` was a backend before the binaries became static).
fn exec_asked() -> bool {
    match std::env::var(BACKEND_ENV) {
        Ok(value) if value == "exec" => true,
        Ok(value) if value == "netlink" || value.is_empty() => false,
        Ok(value) => {
            tracing::warn!("{BACKEND_ENV}={value} is not a backend (exec, netlink); using netlink");
            false
        }
        Err(_) => false,
    }
}

/// The libnftables JSON form of `op` on `ruleset`.
fn json(ruleset: &Ruleset, op: Op) -> serde_json::Value {
    match op {
        Op::Create => ruleset.json_create_batch(),
        Op::Recreate => ruleset.json_batch(),
        Op::Delete => ruleset.json_delete_batch(),
    }
}

impl Nft {
    /// The backend, chosen before any change is made so a missing one fails up front: a
    /// binary named by path (`--nft /path/to/nft`) is used as asked; `NETBIND_NFT=exec` takes
    /// `bin` from `PATH`; otherwise netlink from this process.
    pub fn select(bin: &Path) -> Option<Nft> {
        if bin.components().count() > 1 || exec_asked() {
            return locate(bin).map(Nft::Binary);
        }
        Some(Nft::Netlink)
    }

    /// Starts `op` on `ruleset` as one transaction; `what` names it in errors (the tables
    /// touched). The kernel work may overlap with the caller's (e.g. its own RCU waits) until
    /// `wait`. A ruleset that cannot be written fails here, before anything is sent.
    pub fn start(&self, ruleset: &Ruleset, op: Op, what: &str) -> Result<Pending, NftError> {
        match self {
            Nft::Binary(bin) => start_binary(bin, &json(ruleset, op), what),
            Nft::Netlink => {
                let batch = lower(ruleset, op, what)?;
                let name = what.to_string();
                on_thread(what, move || {
                    nfnl::apply(&batch).map_err(|source| NftError::Kernel { what: name, source })
                })
            }
        }
    }

    /// Whether table `name` of `family` exists in the calling thread's namespace (read-back,
    /// for CHECK): asked over netlink, or listed with the binary when that backend was chosen.
    pub fn table_exists(&self, family: Family, name: &str) -> Result<bool, String> {
        match self {
            Nft::Netlink => nfnl::table_exists(family, name).map_err(|err| err.to_string()),
            Nft::Binary(bin) => Command::new(bin)
                .args(["list", "table", family.as_str(), name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|status| status.success())
                .map_err(|err| format!("cannot run {}: {err}", bin.display())),
        }
    }

    /// Applies `op` on `ruleset` as one transaction and waits for it: over netlink on the
    /// calling thread (so in its namespace), or through an `nft` child.
    pub fn apply(&self, ruleset: &Ruleset, op: Op, what: &str) -> Result<(), NftError> {
        match self {
            Nft::Binary(_) => self.start(ruleset, op, what)?.wait(),
            Nft::Netlink => {
                let batch = lower(ruleset, op, what)?;
                nfnl::apply(&batch).map_err(|source| NftError::Kernel {
                    what: what.into(),
                    source,
                })
            }
        }
    }

    /// Whether a transaction would run in a process of its own (and so gains from running
    /// beside the caller's work) rather than on the calling thread.
    pub fn is_process(&self) -> bool {
        matches!(self, Nft::Binary(_))
    }
}

/// The nf_tables messages of `op` on `ruleset`, or why they cannot be written.
fn lower(ruleset: &Ruleset, op: Op, what: &str) -> Result<nfnl::Batch, NftError> {
    nfnl::batch(ruleset, op).map_err(|source| NftError::Lower {
        what: what.into(),
        source,
    })
}

/// Runs a transaction on a thread of its own. A thread made by a thread inside the pod netns
/// starts in that netns, so its sockets are opened there.
fn on_thread(
    what: &str,
    body: impl FnOnce() -> Result<(), NftError> + Send + 'static,
) -> Result<Pending, NftError> {
    let thread = std::thread::Builder::new()
        .name("nft".into())
        .spawn(move || {
            let started = Instant::now();
            let done = body();
            (done, started.elapsed())
        })
        .map_err(|source| NftError::Thread {
            what: what.into(),
            source,
        })?;
    Ok(Pending::Thread(thread))
}

/// Locates the nft binary on `PATH` (or as given, when `bin` is a path).
pub fn locate(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A transaction started and not yet finished.
#[derive(Debug)]
pub enum Pending {
    Child {
        child: std::process::Child,
        what: String,
        bin: PathBuf,
        started: Instant,
    },
    /// The transaction's result and how long it took on its thread.
    Thread(std::thread::JoinHandle<(Result<(), NftError>, Duration)>),
}

fn start_binary(bin: &Path, batch: &serde_json::Value, what: &str) -> Result<Pending, NftError> {
    let mut child = Command::new(bin)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn {
            what: what.into(),
            bin: bin.into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as nft's own failure when waited for.
        let _ = stdin.write_all(batch.to_string().as_bytes());
    }
    Ok(Pending::Child {
        child,
        what: what.into(),
        bin: bin.into(),
        started: Instant::now(),
    })
}

impl Pending {
    pub fn wait(self) -> Result<(), NftError> {
        self.wait_timed().0
    }

    /// Waits, and says how long the transaction itself took (its thread's own time, or the
    /// `nft` child's life), whatever the caller did meanwhile.
    pub fn wait_timed(self) -> (Result<(), NftError>, Duration) {
        match self {
            Pending::Thread(thread) => thread.join().unwrap_or_else(|_| {
                (
                    Err(NftError::Panicked {
                        what: "a transaction".into(),
                    }),
                    Duration::ZERO,
                )
            }),
            Pending::Child {
                child,
                what,
                bin,
                started,
            } => {
                let out = match child.wait_with_output() {
                    Ok(out) => out,
                    Err(source) => {
                        return (
                            Err(NftError::Spawn { what, bin, source }),
                            started.elapsed(),
                        );
                    }
                };
                let took = started.elapsed();
                if out.status.success() {
                    return (Ok(()), took);
                }
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                let stderr = if stderr.is_empty() {
                    format!("exit status {}", out.status)
                } else {
                    stderr
                };
                (Err(NftError::Failed { what, stderr }), took)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code
    use super::*;
    use netbind_plan::nft::{Builder, ChainType, Expr, Family, Hook};

    fn ruleset(jump_to: &str) -> Ruleset {
        let mut b = Builder::default();
        b.table(Family::Inet, "nbtest");
        b.chain(
            Family::Inet,
            "nbtest",
            "c",
            Some((ChainType::Filter, Hook::Input, 0)),
        );
        b.chain(Family::Inet, "nbtest", "d", None);
        b.rule(
            Family::Inet,
            "nbtest",
            "c",
            vec![Expr::Counter, Expr::Jump(jump_to.into())],
        );
        Ruleset { tables: b.ruleset }
    }

    /// In a namespace of its own (root), through netlink and through the nft binary: a ruleset
    /// applies; one the kernel refuses (a jump to a chain that does not exist) comes back as a
    /// failure naming the transaction and what the kernel said, and (one transaction) leaves
    /// the tables as they were.
    #[test]
    fn a_transaction_applies_in_the_callers_namespace_and_names_failures() {
        if !netbind_testkit_ready() {
            return;
        }
        for (backend, rule_named) in [(Nft::Netlink, true), (Nft::Binary("nft".into()), false)] {
            let name = format!("nbnft-{}-{rule_named}", std::process::id());
            let ok = |cmd: &str| {
                let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
                assert!(out.status.success(), "{cmd}: {out:?}");
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            ok(&format!("ip netns add {name}"));
            let target = netbind_netns::NetnsTarget::Path(format!("/run/netns/{name}").into());
            let result = netbind_netns::Netns::open(&target).unwrap().run(|| {
                backend
                    .apply(&ruleset("d"), Op::Create, "tables inet nbtest")
                    .expect("applies");
                backend.apply(&ruleset("nope"), Op::Recreate, "tables inet nbtest")
            });
            let listed = ok(&format!("ip netns exec {name} nft list ruleset"));
            let host = ok("nft list tables");
            ok(&format!("ip netns del {name}"));
            let err = result.expect("entered").expect_err("refused");
            let text = err.to_string();
            assert!(
                text.contains("nftables transaction (tables inet nbtest) failed")
                    && text.contains("No such file or directory"),
                "{backend:?}: {text}"
            );
            if rule_named {
                assert!(
                    text.contains("add rule inet nbtest c `counter jump nope`"),
                    "{text}"
                );
            }
            assert!(listed.contains("jump d"), "{backend:?}: {listed}");
            assert!(
                !host.contains("nbtest"),
                "the host's ruleset was touched: {host}"
            );
        }
    }

    fn netbind_testkit_ready() -> bool {
        netbind_testkit::ready(netbind_testkit::missing_tools(&["ip", "nft"]))
    }
}
