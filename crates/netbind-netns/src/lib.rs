//! Entering a network namespace: the one guard the handler, the pod simulator and the tests
//! share.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, so namespace work runs on a thread
//! that enters the pod netns through a guard (restoring the original netns on every exit path,
//! panics included): a dedicated thread that is then thrown away (`Netns::run`), or the
//! calling thread itself (`Netns::run_here`: phase 1's setup and teardown, on a pod's
//! creation and deletion path). Sockets and child processes created on that thread belong
//! to the pod netns.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsTarget {
    /// A bind-mounted namespace such as `/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(PathBuf),
    /// A process; entered through a pidfd so a recycled pid cannot redirect us.
    Pid(u32),
}

impl std::fmt::Display for NetnsTarget {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetnsTarget::Path(path) => write!(out, "{}", path.display()),
            NetnsTarget::Pid(pid) => write!(out, "pid {pid}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("open network namespace {target}: {source}")]
    Open {
        target: NetnsTarget,
        source: std::io::Error,
    },
    /// The path names something else: a FIFO, a directory, a plain file, another kind of
    /// namespace.
    #[error("network namespace {target}: not a network namespace but {found}")]
    NotNetns { target: NetnsTarget, found: String },
    #[error("enter network namespace {target}: {source}")]
    Enter {
        target: NetnsTarget,
        source: std::io::Error,
    },
    #[error("restore the handler's own network namespace: {0}")]
    Restore(std::io::Error),
    #[error("the network-namespace worker thread panicked")]
    Panicked,
}

impl NetnsError {
    /// The namespace no longer exists (pod gone): teardown treats this as done.
    pub fn is_gone(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)))
    }
}

/// An open handle on a network namespace (a namespace fd or a pidfd).
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    target: NetnsTarget,
}

/// A pidfd on whatever process has `pid` now (the handler's process identities use it too).
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Netns {
    pub fn open(target: &NetnsTarget) -> Result<Self, NetnsError> {
        let open_error = |source| NetnsError::Open {
            target: target.clone(),
            source,
        };
        let fd = match target {
            NetnsTarget::Path(path) => {
                // Non-blocking: a FIFO at the path would otherwise hold the open until a
                // writer came, forever; it is refused below as what it is.
                let file = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                    .open(path)
                    .map_err(open_error)?;
                if let Err(found) = network_namespace(&file) {
                    return Err(NetnsError::NotNetns {
                        target: target.clone(),
                        found,
                    });
                }
                OwnedFd::from(file)
            }
            NetnsTarget::Pid(pid) => pidfd_open(*pid).map_err(open_error)?,
        };
        Ok(Self {
            fd,
            target: target.clone(),
        })
    }

    /// Opens the named namespace `/run/netns/NAME` (what `ip netns add` makes).
    pub fn named(name: &str) -> Result<Self, NetnsError> {
        Self::open(&NetnsTarget::Path(PathBuf::from("/run/netns").join(name)))
    }

    /// Runs `body` on the calling thread inside this namespace, and brings the thread back to
    /// its own namespace afterwards (or aborts the process if it cannot: see `NetnsGuard`).
    /// For a caller on the hot path: no thread to create and then tear down (its stack is
    /// released with an `madvise` on exit). Threads `body` starts are in the namespace too.
    pub fn run_here<T>(&self, body: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let _guard = NetnsGuard::enter(self)?;
        Ok(body())
    }

    /// Runs `f` on a fresh thread inside this namespace.
    pub fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _guard = NetnsGuard::enter(self)?;
                    Ok(body())
                })
                .join()
                .map_err(|_| NetnsError::Panicked)?
        })
    }
}

/// `Ok` if `file` is a network namespace (a file of the kernel's nsfs), else what it is,
/// for the error: `setns` would only say "Invalid argument".
fn network_namespace(file: &File) -> Result<(), String> {
    let kind = file
        .metadata()
        .map_err(|err| format!("a file whose type cannot be read ({err})"))?
        .file_type();
    if !kind.is_file() {
        return Err(format!("a {}", netbind_contract::input::file_kind(kind)));
    }
    // SAFETY: NS_GET_NSTYPE takes no argument; it only asks the kernel about the open file.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if nstype < 0 {
        let err = std::io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::ENOTTY) {
            "a plain file".to_string()
        } else {
            format!("a file the kernel does not take as a namespace ({err})")
        });
    }
    let name = match nstype {
        libc::CLONE_NEWNET => return Ok(()),
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWPID => "PID",
        libc::CLONE_NEWUTS => "UTS",
        libc::CLONE_NEWIPC => "IPC",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "another kind of",
    };
    Err(format!("a {name} namespace"))
}

/// Enters a namespace on the current thread; leaving (drop) restores the thread's original
/// network namespace.
#[derive(Debug)]
pub struct NetnsGuard {
    original: OwnedFd,
}

fn setns(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fd is a valid open namespace fd or pidfd for the duration of the call.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl NetnsGuard {
    pub fn enter(ns: &Netns) -> Result<Self, NetnsError> {
        let original = File::open("/proc/thread-self/ns/net")
            .map(OwnedFd::from)
            .map_err(NetnsError::Restore)?;
        setns(&ns.fd).map_err(|source| NetnsError::Enter {
            target: ns.target.clone(),
            source,
        })?;
        Ok(Self { original })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(err) = setns(&self.original) {
            // The thread is about to end anyway; never let it run more work in the pod netns.
            eprintln!("could not restore the original network namespace: {err}; aborting");
            std::process::abort();
        }
    }
}
