//! Descriptors from raw system-call returns. Every descriptor the crate gets from `libc`
//! (open, openat, socket, pidfd_open, fsopen, fsmount) becomes an `OwnedFd` here, so the
//! ownership claim that needs `unsafe` is made in one place, right after the call, before
//! anything else can touch `errno`.

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
        // SAFETY: open of a NUL-terminated path.
        let fd =
            owned(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })
                .expect("open /dev/null");
        let raw = fd.as_raw_fd();
        drop(fd);
        // SAFETY: fcntl on a closed descriptor only reports EBADF.
        assert_eq!(unsafe { libc::fcntl(raw, libc::F_GETFD) }, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
