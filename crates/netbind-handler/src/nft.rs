//! nftables, as ONE transaction per batch (it all applies or nothing does), in the pod's
//! namespace.
//!
//! By default the batch goes straight to the kernel over nfnetlink from this process
//! (`crate::nfnl`): no process to start, no library to load, no ruleset cache to read first.
//! Two other ways apply the same ruleset through its libnftables JSON form, for comparison and
//! as an operator's fallback: `NETBIND_NFT=library` loads libnftables (`libnftables.so.1`,
//! which the `nft` tool is built on) into this process; `NETBIND_NFT=exec`, or `--nft PATH`,
//! runs `nft -j -f -` (a child started from the thread inside the pod netns inherits it).

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netbind_plan::nft::Ruleset;

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
    #[error("nftables transaction ({what}): libnftables: {message}")]
    Library { what: String, message: String },
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
    /// libnftables, in this process.
    Library,
    /// The `nft` tool, as a child.
    Binary(PathBuf),
}

/// `NETBIND_NFT=library` or `exec`: apply the JSON form through libnftables or the nft binary
/// instead (benchmarks compare the three; an operator can fall back).
pub const BACKEND_ENV: &str = "NETBIND_NFT";

fn backend_env(value: &str) -> bool {
    std::env::var(BACKEND_ENV).is_ok_and(|set| set == value)
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
    /// `bin` from `PATH`; `NETBIND_NFT=library` takes libnftables when it loads, else `bin`;
    /// otherwise netlink from this process.
    pub fn select(bin: &Path) -> Option<Nft> {
        if backend_env("exec") || bin.components().count() > 1 {
            return locate(bin).map(Nft::Binary);
        }
        if backend_env("library") {
            if library().is_some() {
                return Some(Nft::Library);
            }
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
                let batch = nfnl::batch(ruleset, op).map_err(|source| NftError::Lower {
                    what: what.into(),
                    source,
                })?;
                let name = what.to_string();
                on_thread(what, move || {
                    nfnl::apply(&batch).map_err(|source| NftError::Kernel { what: name, source })
                })
            }
            Nft::Library => {
                let text = json(ruleset, op).to_string();
                let name = what.to_string();
                on_thread(what, move || run_library(&text, &name))
            }
        }
    }

    /// Applies `op` on `ruleset` as one transaction and waits for it.
    pub fn apply(&self, ruleset: &Ruleset, op: Op, what: &str) -> Result<(), NftError> {
        self.start(ruleset, op, what)?.wait()
    }
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

/// With `NETBIND_NFT=library`: loads libnftables on a thread of its own, so that its ~1 ms
/// of `dlopen` and relocation overlaps the caller's parsing and observation instead of adding
/// to them; `Nft::select` then finds it loaded (or waits for the load to finish).
pub fn preload() {
    if !backend_env("library") {
        return;
    }
    // A failure to start the thread only loses the overlap: `select` loads it then.
    let _ = std::thread::Builder::new()
        .name("nft-load".into())
        .spawn(|| library().is_some());
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
                    Err(NftError::Library {
                        what: "a transaction".into(),
                        message: "its thread panicked".into(),
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

/// libnftables' `NFT_CTX_DEFAULT`.
const NFT_CTX_DEFAULT: c_uint = 0;
/// libnftables' `NFT_CTX_OUTPUT_JSON`: with it, libnftables 1.0.6 (Debian 12) reads its input
/// as JSON too.
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

/// The entry points of libnftables netbind calls.
struct Library {
    ctx_new: unsafe extern "C" fn(c_uint) -> *mut c_void,
    ctx_free: unsafe extern "C" fn(*mut c_void),
    buffer_output: unsafe extern "C" fn(*mut c_void) -> c_int,
    buffer_error: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_error_buffer: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    output_set_flags: unsafe extern "C" fn(*mut c_void, c_uint),
    run_cmd_from_buffer: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
}

/// Whether libnftables loads in this process (the `library` backend, and the tests'
/// reference for the netlink one).
pub fn libnftables_loads() -> bool {
    library().is_some()
}

fn library() -> Option<&'static Library> {
    static LIBRARY: OnceLock<Option<Library>> = OnceLock::new();
    LIBRARY.get_or_init(load).as_ref()
}

/// `dlopen`s libnftables once; it stays loaded for the life of the process.
fn load() -> Option<Library> {
    // SAFETY: dlopen with a NUL-terminated name; a null handle is handled below.
    let handle = unsafe {
        libc::dlopen(
            c"libnftables.so.1".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        )
    };
    if handle.is_null() {
        return None;
    }
    let symbol = |name: &CStr| {
        // SAFETY: dlsym on the live handle above with a NUL-terminated name.
        let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!address.is_null()).then_some(address)
    };
    // SAFETY: each address is the named libnftables function, whose C signature
    // (libnftables.h, stable since nftables 0.9) is the function pointer type it becomes.
    unsafe {
        Some(Library {
            ctx_new: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_uint) -> *mut c_void>(
                symbol(c"nft_ctx_new")?,
            ),
            ctx_free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(
                symbol(c"nft_ctx_free")?,
            ),
            buffer_output: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> c_int,
            >(symbol(c"nft_ctx_buffer_output")?),
            buffer_error: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> c_int,
            >(symbol(c"nft_ctx_buffer_error")?),
            get_error_buffer: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> *const c_char,
            >(symbol(c"nft_ctx_get_error_buffer")?),
            output_set_flags: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void, c_uint),
            >(symbol(c"nft_ctx_output_set_flags")?),
            run_cmd_from_buffer: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
            >(symbol(c"nft_run_cmd_from_buffer")?),
        })
    }
}

/// One transaction through libnftables, on the calling thread (and so in its netns): a
/// context of its own, JSON in, the error buffer as the message.
fn run_library(batch: &str, what: &str) -> Result<(), NftError> {
    let fail = |message: String| NftError::Library {
        what: what.into(),
        message,
    };
    let lib = library().ok_or_else(|| fail("libnftables.so.1 is not loaded".into()))?;
    let input = CString::new(batch).map_err(|_| fail("the batch holds a NUL byte".into()))?;
    // SAFETY: a fresh context, used only on this thread and freed below on every path.
    let ctx = unsafe { (lib.ctx_new)(NFT_CTX_DEFAULT) };
    if ctx.is_null() {
        return Err(fail("nft_ctx_new failed".into()));
    }
    // SAFETY: ctx is live; the buffers are owned by it and read before it is freed.
    let (rc, error) = unsafe {
        (lib.buffer_output)(ctx);
        (lib.buffer_error)(ctx);
        (lib.output_set_flags)(ctx, NFT_CTX_OUTPUT_JSON);
        let rc = (lib.run_cmd_from_buffer)(ctx, input.as_ptr());
        let buffer = (lib.get_error_buffer)(ctx);
        let error = if buffer.is_null() {
            String::new()
        } else {
            CStr::from_ptr(buffer).to_string_lossy().trim().to_string()
        };
        (lib.ctx_free)(ctx);
        (rc, error)
    };
    if rc == 0 {
        return Ok(());
    }
    Err(NftError::Failed {
        what: what.into(),
        stderr: if error.is_empty() {
            format!("libnftables returned {rc}")
        } else {
            error
        },
    })
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

    /// In a namespace of its own (root), through netlink and through libnftables: a ruleset
    /// applies; one the kernel refuses (a jump to a chain that does not exist) comes back as a
    /// failure naming the transaction and what the kernel said, and (one transaction) leaves
    /// the tables as they were.
    #[test]
    fn a_transaction_applies_in_the_callers_namespace_and_names_failures() {
        if !netbind_testkit_ready() {
            return;
        }
        for (backend, rule_named) in [(Nft::Netlink, true), (Nft::Library, false)] {
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
        let mut missing = netbind_testkit::missing_tools(&["ip", "nft"]);
        if !libnftables_loads() {
            missing.push("libnftables.so.1".into());
        }
        netbind_testkit::ready(missing)
    }
}
