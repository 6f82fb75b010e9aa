//! Persistent taps through the tun ioctls (the kernel refuses to create tun/tap over
//! rtnetlink). Owner and group are always both set: an ownerless tap is open to any uid that
//! can open /dev/net/tun.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use netbind_model::IfName;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("open /dev/net/tun for tap {name}: {source}")]
    Open {
        name: IfName,
        source: std::io::Error,
    },
    #[error("{op} on tap {name}: {source}")]
    Ioctl {
        op: &'static str,
        name: IfName,
        source: std::io::Error,
    },
}

impl TapError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            TapError::Open { source, .. } | TapError::Ioctl { source, .. } => source.raw_os_error(),
        }
    }
}

/// What the handler asks of a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapSpec {
    pub owner: u32,
    pub group: u32,
    pub multi_queue: bool,
}

fn ifreq(name: &IfName, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // IfName guarantees ≤ 15 bytes, so the NUL terminator fits.
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_str().bytes()) {
        *dst = src as libc::c_char;
    }
    // ifr_flags is a 16-bit field and IFF_TUN_EXCL (0x8000) uses its sign bit: reinterpret
    // the bits, do not convert the value.
    let bits = u16::try_from(flags & 0xffff).unwrap_or_default();
    req.ifr_ifru.ifru_flags = libc::c_short::from_ne_bytes(bits.to_ne_bytes());
    req
}

/// The flags libvirt uses when it opens the tap: they must match or its TUNSETIFF fails with
/// EINVAL. Single queue: KubeVirt's `IFF_TUN_EXCL|IFF_ONE_QUEUE` on creation.
pub fn tap_flags(multi_queue: bool, create: bool) -> libc::c_int {
    let base = libc::IFF_TAP | libc::IFF_NO_PI;
    match (multi_queue, create) {
        (true, _) => base | libc::IFF_MULTI_QUEUE,
        // IFF_TUN_EXCL makes creation fail if the name exists instead of attaching to it.
        (false, true) => base | libc::IFF_ONE_QUEUE | libc::IFF_TUN_EXCL,
        (false, false) => base | libc::IFF_ONE_QUEUE,
    }
}

fn ioctl(
    fd: &std::fs::File,
    op: &'static str,
    req: libc::c_ulong,
    arg: libc::c_ulong,
    name: &IfName,
) -> Result<(), TapError> {
    // SAFETY: TUNSETOWNER / TUNSETGROUP / TUNSETPERSIST take the value itself as argument
    // (not a pointer), on a tun fd we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if rc < 0 {
        return Err(TapError::Ioctl {
            op,
            name: name.clone(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Attaches to (or creates) the tap `name` with `flags`; returns the open tun fd.
pub fn attach(name: &IfName, flags: libc::c_int) -> Result<std::fs::File, TapError> {
    let fd = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|source| TapError::Open {
            name: name.clone(),
            source,
        })?;
    let mut req = ifreq(name, flags);
    // SAFETY: TUNSETIFF reads and writes a struct ifreq that lives for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
    if rc < 0 {
        return Err(TapError::Ioctl {
            op: "TUNSETIFF",
            name: name.clone(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(fd)
}

/// Creates the tap, or re-asserts owner, group and persistence on an existing one.
/// Owner and group are set before persist (systemd's order); the fd is closed afterwards so
/// QEMU / libvirt can attach their queues.
pub fn ensure(name: &IfName, spec: TapSpec, exists: bool) -> Result<(), TapError> {
    let fd = attach(name, tap_flags(spec.multi_queue, !exists))?;
    ioctl(
        &fd,
        "TUNSETOWNER",
        libc::TUNSETOWNER as _,
        libc::c_ulong::from(spec.owner),
        name,
    )?;
    ioctl(
        &fd,
        "TUNSETGROUP",
        libc::TUNSETGROUP as _,
        libc::c_ulong::from(spec.group),
        name,
    )?;
    ioctl(&fd, "TUNSETPERSIST", libc::TUNSETPERSIST as _, 1, name)?;
    Ok(())
}
