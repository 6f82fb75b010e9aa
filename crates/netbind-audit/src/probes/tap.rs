//! Attacks on the VM's tap: attaching it, stealing a queue, abusing a held fd (A20–A22).

use super::*;

pub(super) fn tun_attach(name: &str, flags: libc::c_int) -> Result<(), i32> {
    let cpath = CString::new("/dev/net/tun").unwrap_or_default();
    // SAFETY: open with a NUL-terminated path; the fd is owned below.
    let fd = check(unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_flags =
        libc::c_short::from_ne_bytes(u16::try_from(flags & 0xffff).unwrap_or(0).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes the ifreq.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF as _,
            std::ptr::from_mut(&mut req),
        )
    })
    .map(|_| ())
}

pub(super) fn a20(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        tun_attach(
            &pod.tap,
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_ONE_QUEUE,
        ),
        "attached to the VM's tap",
    )
}

pub(super) fn a21(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        tun_attach(
            &pod.tap,
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE,
        ),
        "extra queue attached",
    )
}

pub(super) fn a22(_pod: &PodUnderTest, pre: &Pre, _id: &str) -> Observed {
    match pre.fds.first() {
        Some(fd) => {
            // SAFETY: writing one byte to an fd opened by `prepare`.
            let rc = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            if rc < 0 {
                Observed::Errno(errno())
            } else {
                ok("wrote to a foreign fd")
            }
        }
        None => Observed::Errno(libc::EBADF),
    }
}
