//! Processes the trusted side started, named for good: pid plus start time (clock ticks since
//! boot, field 22 of /proc/PID/stat), recorded at spawn. A pid reused by another process has
//! another start time, and every signal goes through a pidfd opened before the check, so a
//! recycled pid is never hit. Nothing the VM side writes is ever used to find a process.
//! Phase 1 records its RA responders this way; `netbind up` its sandboxes.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces and
/// parentheses: the fields follow the last ')'), from field 3 (the state) on.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// The start time of `pid`, or `None` if it is gone or a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    if fields.first()? == "Z" {
        return None;
    }
    // Start time is field 22, 19 after the state.
    fields.get(19)?.parse().ok()
}

/// The parent of `pid` (field 4 of /proc/PID/stat).
pub fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

impl Proc {
    /// Records `pid` just after it was spawned.
    pub fn of(pid: u32) -> Option<Proc> {
        start_time(pid).map(|start| Proc { pid, start })
    }

    /// Whether this very process still runs.
    pub fn alive(self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// A pidfd on this process, if it is still the one recorded. The check comes after the
    /// open: once the pidfd exists the pid cannot be reused, so a match means the pidfd is it.
    pub fn pidfd(self) -> Option<OwnedFd> {
        let fd = pidfd_open(self.pid).ok()?;
        self.alive().then_some(fd)
    }

    /// SIGTERM, then SIGKILL if it still runs after `grace`.
    pub fn stop(self, grace: Duration) {
        let Some(fd) = self.pidfd() else { return };
        if !signal(&fd, libc::SIGTERM) {
            return;
        }
        self.wait(grace);
        if self.alive() {
            signal(&fd, libc::SIGKILL);
        }
    }

    /// Waits up to `limit` for the process to end.
    pub fn wait(self, limit: Duration) {
        let started = Instant::now();
        while self.alive() && started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A pidfd on whatever process has `pid` now (pid 0 and 1 are never taken).
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    if pid <= 1 {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    netbind_netns::pidfd_open(pid)
}

/// Whether the process behind `fd` has not been reaped yet (signal 0: checked, not sent).
/// While it has not, its pid cannot name another process.
pub fn still_there(fd: &OwnedFd) -> bool {
    signal(fd, 0)
}

/// Sends `sig` through a pidfd; true if it was delivered.
pub fn signal(fd: &OwnedFd, sig: libc::c_int) -> bool {
    // SAFETY: pidfd_send_signal on an open pidfd, no siginfo, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}
