//! nftables, as ONE transaction per batch (it all applies or nothing does), in the pod's
//! namespace, through libnftables' JSON interface.
//!
//! In process by default: libnftables (`libnftables.so.1`, the library the `nft` tool itself is
//! built on, so the same JSON schema, transaction and error messages) is loaded at run time and
//! called from the thread inside the pod netns, where its netlink socket is opened. That saves
//! starting a process per transaction (~2 ms). A node without the library, or
//! `NETBIND_NFT=exec`, runs `nft -j -f -` instead (a child started from the same thread
//! inherits the namespace).

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
}

/// How transactions run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nft {
    /// libnftables, in this process.
    Library,
    /// The `nft` tool, as a child.
    Binary(PathBuf),
}

/// `NETBIND_NFT=exec`: use the nft binary even where libnftables loads (benchmarks compare
/// the two; an operator can fall back).
pub const BACKEND_ENV: &str = "NETBIND_NFT";

impl Nft {
    /// The backend, chosen before any change is made so a missing one fails up front: a
    /// binary named by path (`--nft /path/to/nft`) is used as asked; otherwise the library when
    /// it loads (and `NETBIND_NFT` is not `exec`), else `bin` on `PATH`.
    pub fn select(bin: &Path) -> Option<Nft> {
        let forced_exec = std::env::var(BACKEND_ENV).is_ok_and(|value| value == "exec")
            || bin.components().count() > 1;
        if !forced_exec && library().is_some() {
            return Some(Nft::Library);
        }
        locate(bin).map(Nft::Binary)
    }

    /// Starts a JSON batch as one transaction; `what` names it in errors (the tables touched).
    /// The kernel work may overlap with the caller's (e.g. its own RCU waits) until `wait`.
    pub fn start(&self, batch: &serde_json::Value, what: &str) -> Result<Pending, NftError> {
        match self {
            Nft::Binary(bin) => start_binary(bin, batch, what),
            Nft::Library => {
                let text = batch.to_string();
                let name = what.to_string();
                // A thread made by a thread inside the pod netns starts in that netns.
                let thread = std::thread::Builder::new()
                    .name("nft".into())
                    .spawn(move || {
                        let started = Instant::now();
                        let done = run_library(&text, &name);
                        (done, started.elapsed())
                    })
                    .map_err(|source| NftError::Library {
                        what: what.into(),
                        message: format!("start a thread: {source}"),
                    })?;
                Ok(Pending::Thread(thread))
            }
        }
    }

    /// Applies a JSON batch as one transaction and waits for it.
    pub fn apply(&self, batch: &serde_json::Value, what: &str) -> Result<(), NftError> {
        match self {
            Nft::Library => run_library(&batch.to_string(), what),
            Nft::Binary(bin) => start_binary(bin, batch, what)?.wait(),
        }
    }
}

/// Loads libnftables on a thread of its own, so that its ~1 ms of `dlopen` and relocation
/// overlaps the caller's parsing and observation instead of adding to them; `Nft::select`
/// then finds it loaded (or waits for the load to finish). Nothing to do when the binary is
/// forced.
pub fn preload() {
    if std::env::var(BACKEND_ENV).is_ok_and(|value| value == "exec") {
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

    /// In a namespace of its own (root): a batch through libnftables applies, and one the
    /// kernel refuses comes back as a failure naming the transaction and what nft says.
    #[test]
    fn libnftables_applies_in_the_callers_namespace_and_names_failures() {
        if !netbind_testkit_ready() {
            return;
        }
        let name = format!("nbnft-{}", std::process::id());
        let ok = |cmd: &str| {
            let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
            assert!(out.status.success(), "{cmd}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ok(&format!("ip netns add {name}"));
        let target = netbind_netns::NetnsTarget::Path(format!("/run/netns/{name}").into());
        let result = netbind_netns::Netns::open(&target).unwrap().run(|| {
            let good = serde_json::json!({"nftables": [
                {"add": {"table": {"family": "inet", "name": "nbtest"}}},
                {"add": {"chain": {"family": "inet", "table": "nbtest", "name": "c",
                    "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}},
            ]});
            Nft::Library
                .apply(&good, "tables inet nbtest")
                .expect("applies");
            let bad = serde_json::json!({"nftables": [
                {"add": {"rule": {"family": "inet", "table": "nope", "chain": "c",
                    "expr": [{"counter": null}]}}},
            ]});
            Nft::Library.apply(&bad, "tables inet nope")
        });
        let listed = ok(&format!("ip netns exec {name} nft list tables"));
        let host = ok("nft list tables");
        ok(&format!("ip netns del {name}"));
        let err = result.expect("entered").expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("nftables transaction (tables inet nope) failed")
                && text.contains("No such file or directory"),
            "{text}"
        );
        assert!(listed.contains("table inet nbtest"), "{listed}");
        assert!(
            !host.contains("nbtest"),
            "the host's ruleset was touched: {host}"
        );
    }

    fn netbind_testkit_ready() -> bool {
        let mut missing = netbind_testkit::missing_tools(&["ip", "nft"]);
        if library().is_none() {
            missing.push("libnftables.so.1".into());
        }
        netbind_testkit::ready(missing)
    }
}
