//! Closing an nfnetlink socket without waiting for the kernel.
//!
//! When the last reference to a `NETLINK_NETFILTER` socket goes, nf_tables first finishes the
//! deferred destruction of what earlier transactions in that namespace deleted or replaced,
//! which takes an RCU grace period (10-25 ms on the machines this was measured on). A
//! transaction that replaces a pod's tables (a re-run) or deletes them would make its caller
//! wait for that on the socket's close, or at the process's exit if it keeps the socket.
//!
//! So the last reference is handed to a holder process: forked (twice, so that it is nobody's
//! child to reap: its parent exits at once and is reaped here), it keeps only the socket and a
//! pipe, waits until this process has closed its own copy of the socket, and only then closes
//! it and exits. Between the forks and its exit it makes nothing but system calls that are safe
//! in a forked child of a multi-threaded process (`close_range`, `read`, `close`, `_exit`). If
//! the holder cannot be made, the socket is closed here, and the caller waits as it did before.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Closes `socket` in a holder process once this process has let go of it.
pub fn release_off_path(socket: OwnedFd) {
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let [read_end, write_end] = pipe;
    let fd = socket.as_raw_fd();
    // SAFETY: the child runs only `holder`, which makes async-signal-safe system calls and
    // never returns.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: in the forked child; see `holder`.
        unsafe { holder(fd, read_end, write_end) }
    }
    if child > 0 {
        let mut status = 0;
        // SAFETY: waiting for the child just forked, which exits at once.
        while unsafe { libc::waitpid(child, &mut status, 0) } < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
    }
    // This process's reference goes first (the holder's is then the last); the pipe's write
    // end after it tells the holder so.
    drop(socket);
    // SAFETY: both ends were opened above and are owned by nobody else in this process.
    unsafe {
        libc::close(write_end);
        libc::close(read_end);
    }
}

/// The forked child: forks the holder and exits; the holder keeps `fd` until `read_end` reads
/// end-of-file (every copy of the write end closed), then closes it and exits.
///
/// # Safety
/// Must be called only in a child just forked, and does not return.
unsafe fn holder(fd: RawFd, read_end: RawFd, write_end: RawFd) -> ! {
    // SAFETY: fork and _exit in a forked child.
    unsafe {
        if libc::fork() != 0 {
            libc::_exit(0);
        }
        libc::close(write_end);
        close_all_but(fd, read_end);
        let mut byte = 0u8;
        while libc::read(read_end, (&raw mut byte).cast(), 1) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
        libc::close(fd);
        libc::_exit(0)
    }
}

/// Closes every descriptor but `a` and `b` (the caller's standard streams too: a runtime reads
/// a plugin's output until every copy of it is closed).
///
/// # Safety
/// Only system calls; for a forked child.
unsafe fn close_all_but(a: RawFd, b: RawFd) {
    let (low, high) = (a.min(b), a.max(b));
    let close_range = |first: RawFd, last: RawFd| {
        if first <= last {
            // SAFETY: close_range takes two descriptor numbers and flags.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        }
    };
    close_range(0, low - 1);
    close_range(low + 1, high - 1);
    close_range(high + 1, RawFd::MAX);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// The holder closes the socket once this process has let go of it (the peer reads
    /// end-of-file), and leaves no child of this process to reap.
    #[test]
    fn the_holder_closes_the_socket_after_the_caller_and_is_nobodys_child() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        release_off_path(OwnedFd::from(ours));
        let mut rest = Vec::new();
        assert_eq!(
            peer.read_to_end(&mut rest)
                .expect("end-of-file, not a timeout"),
            0
        );
        // The forks were made by this thread: a child left (running, or a zombie to reap)
        // would be listed here; other tests' children are listed under their own threads.
        let children = std::fs::read_to_string("/proc/thread-self/children").unwrap();
        assert_eq!(children.trim(), "", "a child of this thread is left");
    }
}
