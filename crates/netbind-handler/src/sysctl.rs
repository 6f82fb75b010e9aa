//! Sysctls of the pod netns: plain reads and writes under `sys/net` of a procfs, from a thread
//! inside the netns (a sysctl file resolves to the namespace of the thread that opens it, not
//! to the procfs instance's).
//!
//! The files are opened through a procfs instance of this process's own (`fsopen` +
//! `fsmount`, attached to no mount namespace), not through `/proc`: the kernel keeps one
//! cached directory entry per network namespace under the same name in `/proc/sys/net`, so the
//! first lookup of a path in a new namespace walks every other namespace's entry that the
//! node's `/proc` has cached (about 0.1-0.25 ms with 200 pods here, growing with the pods),
//! while a fresh instance has cached nothing but this process's own lookups (about 25 µs to
//! make, 15 µs for the first lookup, whatever the number of pods). Where a procfs cannot be
//! made (no CAP_SYS_ADMIN, a kernel before 5.2), `/proc/sys` is used.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {path}: invalid path")]
    BadPath { path: String },
    #[error("read sysctl {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("write sysctl {path}={value}: {source}")]
    Write {
        path: String,
        value: String,
        source: std::io::Error,
    },
}

/// `path` under a procfs root: `sys/net/...`, with no empty, `.` or `..` component.
fn under_proc(path: &str) -> Result<CString, SysctlError> {
    let ok = path.starts_with("net/")
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    let bad = || SysctlError::BadPath { path: path.into() };
    if !ok {
        return Err(bad());
    }
    CString::new(format!("sys/{path}")).map_err(|_| bad())
}

/// The procfs the sysctls are opened under.
struct Root {
    fd: OwnedFd,
    /// This process's own instance (`/proc` where one could not be made).
    #[cfg_attr(not(test), expect(dead_code, reason = "what the tests check"))]
    private: bool,
}

/// Made (or opened) on first use; `None` only if not even `/proc` opens.
fn root() -> Option<&'static Root> {
    static ROOT: OnceLock<Option<Root>> = OnceLock::new();
    ROOT.get_or_init(|| match make_proc() {
        Ok(fd) => Some(Root { fd, private: true }),
        Err(e) => {
            tracing::debug!("a private procfs could not be made ({e}); using /proc");
            // SAFETY: open with a NUL-terminated path.
            let fd = unsafe {
                libc::open(
                    c"/proc".as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            let fd = crate::fd::owned(fd).ok()?;
            Some(Root { fd, private: false })
        }
    })
    .as_ref()
}

fn make_proc() -> std::io::Result<OwnedFd> {
    // From <linux/mount.h>.
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // SAFETY: fsopen takes a NUL-terminated file system name and flags.
    let context = crate::fd::owned(unsafe {
        libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC)
    })?;
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or auxiliary argument.
    if unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fsmount takes the context's descriptor, flags and mount attributes.
    crate::fd::owned(unsafe {
        libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), FSMOUNT_CLOEXEC, 0)
    })
}

/// Opens `relative` (from `under_proc`) under the procfs root.
fn open(relative: &CStr, flags: libc::c_int) -> std::io::Result<File> {
    let root = root().ok_or_else(|| std::io::Error::other("neither a procfs nor /proc opens"))?;
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY;
    // SAFETY: openat with an open directory and a NUL-terminated relative path.
    let fd = unsafe { libc::openat(root.fd.as_raw_fd(), relative.as_ptr(), flags) };
    crate::fd::owned(fd).map(File::from)
}

pub fn read(path: &str) -> Result<String, SysctlError> {
    let read_err = |source| SysctlError::Read {
        path: path.into(),
        source,
    };
    let mut file = open(&under_proc(path)?, libc::O_RDONLY).map_err(read_err)?;
    // A sysctl's value is a line; a bound keeps a surprise from being read whole.
    let mut text = String::new();
    (&mut file)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    Ok(text.trim().to_string())
}

/// Writes `value` unless it is already set.
pub fn write(path: &str, value: &str) -> Result<(), SysctlError> {
    if read(path)? == value {
        return Ok(());
    }
    let write_err = |source| SysctlError::Write {
        path: path.into(),
        value: value.into(),
        source,
    };
    let mut file = open(&under_proc(path)?, libc::O_WRONLY).map_err(write_err)?;
    file.write_all(value.as_bytes()).map_err(write_err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code
    use super::*;

    #[test]
    fn paths_outside_net_or_with_dot_components_are_refused() {
        for path in [
            "kernel/hostname",
            "net/../kernel/hostname",
            "net//x",
            "net/./x",
            "net/a\0b",
        ] {
            assert!(
                matches!(read(path), Err(SysctlError::BadPath { .. })),
                "{path:?} was not refused"
            );
        }
    }

    /// Through the private procfs, a thread in a new network namespace reads and writes that
    /// namespace's sysctl (as `/proc` shows it to the same thread), and the node's is untouched.
    #[test]
    fn the_private_procfs_resolves_to_the_threads_namespace() {
        if !netbind_testkit::ready(Vec::new()) {
            return;
        }
        assert!(
            root().is_some_and(|root| root.private),
            "root could not make a procfs of its own"
        );
        let node_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        let wanted = if node_before.trim() == "1" { "0" } else { "1" };
        let seen = std::thread::spawn(move || {
            // SAFETY: unshare on this thread only; the namespace goes with the thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let fresh = read("net/ipv4/ip_forward").unwrap();
            write("net/ipv4/ip_forward", wanted).unwrap();
            let ours = read("net/ipv4/ip_forward").unwrap();
            // The node's /proc resolves to the same thread's namespace.
            let procs = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward");
            (fresh, ours, procs.unwrap_or_default())
        })
        .join()
        .unwrap();
        assert_eq!(seen.0, "0", "a new namespace starts with forwarding off");
        assert_eq!(seen.1, wanted);
        assert_eq!(
            seen.2.trim(),
            wanted,
            "/proc shows the same thread another value"
        );
        let node_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(node_after, node_before, "the node's sysctl changed");
    }
}
