//! Descriptors from raw system-call returns. Every descriptor the crate gets from `libc`
//! (open, openat, socket, fsopen, fsmount; pidfds come from `netbind_netns::pidfd_open`)
//! becomes an `OwnedFd` here, so the ownership claim that needs `unsafe` is made in one
//! place, right after the call, before anything else can touch `errno`.

use std::os::fd::{FromRawFd, OwnedFd};

/// The descriptor a system call returned, or the error it set in `errno` when it returned a
/// negative value. Call it on the call's return value directly: any call in between could
/// change `errno`.
pub(crate) fn owned(ret: impl Into<i64>) -> std::io::Result<OwnedFd> {
    let ret = ret.into();
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(ret)
        .map_err(|_| std::io::Error::other(format!("descriptor {ret} out of range")))?;
    // SAFETY: a descriptor the kernel just returned to this process, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::owned;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_negative_return_is_the_error_errno_names() {
        // SAFETY: open of a NUL-terminated path.
        let err = owned(unsafe { libc::open(c"/nonexistent/netbind".as_ptr(), libc::O_RDONLY) })
            .expect_err("open of a missing path fails");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn a_descriptor_is_owned_and_closed_on_drop() {
        // A pipe's reader sees the end once its only writer is closed; a writer left open
        // leaves the non-blocking read with EAGAIN instead.
        // No descriptor number is reused in between, as another test's thread could do.
        let mut ends = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        let rc = unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
        let reader = owned(ends[0]).expect("the read end");
        let writer = owned(ends[1]).expect("the write end");
        drop(writer);
        let mut byte = 0u8;
        // SAFETY: read of one byte into a live local from an open descriptor.
        let read = unsafe { libc::read(reader.as_raw_fd(), (&raw mut byte).cast(), 1) };
        assert_eq!(read, 0, "{}", std::io::Error::last_os_error());
    }
}
