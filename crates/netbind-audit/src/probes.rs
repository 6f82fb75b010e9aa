//! The attacks, at the syscall level. Each probe captures errno right after the call that
//! decides it. Probes that would change the pod when allowed (the `--grant` demo) change it to
//! what it already is, or undo the change at once: the point is the permission check.

// This module speaks the C ABI: struct sizes, address-family constants and return values are
// small and are cast the way C code passes them.
#![allow(clippy::cast_possible_truncation, clippy::cast_lossless)]

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use crate::Observed;

mod isolation;
mod links;
mod packets;
mod ra;
mod tap;

/// What the probes need to know about the pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodUnderTest {
    pub pod_iface: String,
    pub bridge: String,
    pub tap: String,
    pub pod_ip: Ipv4Addr,
    pub launcher_pid: u32,
    /// Payload of the rogue DHCP datagram (A9), so the node side can recognise it.
    pub marker: String,
    /// Another pod, the target of the cross-pod attacks (A33-A35).
    #[serde(default)]
    pub victim: Option<Victim>,
    /// The fd of a router-advertisement socket as phase 1 hands it to its responder (A36-A39;
    /// absent when the pod has no IPv6).
    #[serde(default)]
    pub ra_fd: Option<RawFd>,
}

/// A process as root recorded it: pid (in the node's PID namespace) and start time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Target {
    pub pid: u32,
    pub start: u64,
}

/// What another pod exposes to an attacker in this one, if the sandboxes leak.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Victim {
    pub pod: String,
    pub launcher: Target,
    /// Its VM process (QEMU), or its launcher when it runs no guest.
    pub vm: Target,
    pub vm_is_qemu: bool,
    pub handoff: String,
}

/// What a probe opened before the seccomp filter (the launcher's own sockets, in effect).
#[derive(Debug, Default)]
pub struct Pre {
    pub fds: Vec<OwnedFd>,
    /// The local port of each fd that is a bound UDP socket (read before the filter).
    pub ports: Vec<u16>,
    /// The pod interface's index, looked up before the filter (which forbids the lookup).
    pub pod_ifindex: u32,
}

impl Pre {
    pub fn raw(&self) -> Vec<RawFd> {
        self.fds.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(rc: libc::c_int) -> Result<libc::c_int, i32> {
    if rc < 0 { Err(errno()) } else { Ok(rc) }
}

fn sock(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> Result<OwnedFd, i32> {
    // SAFETY: socket takes plain integers; the fd is owned below.
    let fd = check(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: fd was just returned by socket.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setopt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, val: &[u8]) -> Result<(), i32> {
    // SAFETY: setsockopt reads `val` for its length.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

fn int(value: libc::c_int) -> [u8; 4] {
    value.to_ne_bytes()
}

fn htons(port: u16) -> u16 {
    port.to_be()
}

fn ifindex(name: &str) -> u32 {
    let cpath = CString::new(name).unwrap_or_default();
    // SAFETY: if_nametoindex reads a NUL-terminated name.
    unsafe { libc::if_nametoindex(cpath.as_ptr()) }
}

fn mac_of(name: &str) -> [u8; 6] {
    let text =
        std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default();
    let mut mac = [0u8; 6];
    for (octet, part) in mac.iter_mut().zip(text.trim().split(':')) {
        *octet = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    mac
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    req
}

fn ioctl(fd: &OwnedFd, req: libc::c_ulong, ifr: &mut libc::ifreq) -> Result<(), i32> {
    // SAFETY: the request reads / writes the ifreq, which outlives the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req as _, std::ptr::from_mut(ifr)) }).map(|_| ())
}

/// netlink: one request, the kernel's verdict from its ACK (or the end of a dump).
fn netlink(proto: libc::c_int, msg_type: u16, flags: u16, body: &[u8]) -> Result<(), i32> {
    let fd = sock(libc::AF_NETLINK, libc::SOCK_RAW, proto)?;
    let len = 16 + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&(flags | 1 | 4).to_ne_bytes()); // REQUEST | ACK
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    // SAFETY: send reads `m` for its length.
    check(unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } as libc::c_int)?;
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let received = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if received < 0 {
            return Err(errno());
        }
        let received = usize::try_from(received).unwrap_or(0);
        let mut off = 0;
        while off + 16 <= received {
            let msg_len =
                u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
            let msg_kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or([0; 2]));
            match msg_kind {
                2 => {
                    // NLMSG_ERROR: errno 0 is the ACK.
                    let errno =
                        i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or([0; 4]));
                    return if errno == 0 { Ok(()) } else { Err(-errno) };
                }
                3 => return Ok(()), // NLMSG_DONE of a dump
                _ => {}
            }
            if msg_len < 16 {
                return Err(libc::EIO);
            }
            off += (msg_len + 3) & !3;
        }
    }
}

fn rtattr(port: u16, data: &[u8]) -> Vec<u8> {
    let len = 4 + data.len();
    let mut attr = Vec::new();
    attr.extend_from_slice(&u16::try_from(len).unwrap_or(0).to_ne_bytes());
    attr.extend_from_slice(&port.to_ne_bytes());
    attr.extend_from_slice(data);
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    attr
}

fn ifinfomsg(index: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 16];
    buf[4..8].copy_from_slice(&index.to_ne_bytes());
    buf
}

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLM_F_CREATE_EXCL: u16 = 0x400 | 0x200;
const NLM_F_DUMP: u16 = 0x300;

fn ok(detail: &str) -> Observed {
    Observed::Ok(detail.into())
}

fn obs(result: Result<(), i32>, detail: &str) -> Observed {
    match result {
        Ok(()) => ok(detail),
        Err(err) => Observed::Errno(err),
    }
}

/// Opens what an attack uses that the running launcher already holds, before the filter.
pub fn prepare(id: &str, pod: &PodUnderTest) -> Pre {
    let mut pre = Pre::default();
    match id {
        // The RA socket, as the responder holds it: its filter allows sendmsg on it.
        "A36" | "A37" => {
            pre.pod_ifindex = ifindex(&pod.pod_iface);
            if let Some(fd) = pod.ra_fd {
                // SAFETY: dup of an fd this process was given; the copy is owned below.
                let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
                if copy >= 0 {
                    // SAFETY: copy was just returned by fcntl.
                    pre.fds.push(unsafe { OwnedFd::from_raw_fd(copy) });
                }
            }
        }
        "A7" => {
            if let Ok(fd) = sock(libc::AF_INET6, libc::SOCK_DGRAM, 0) {
                pre.fds.push(fd);
            }
        }
        "A9" => {
            // The launcher's DHCP socket, UDP 0.0.0.0:67 (the floor is 67 in the pod), and
            // sockets on other ports: a client takes a reply to port 68 from any source port,
            // so the guard must stop them all.
            for port in A9_SOURCE_PORTS {
                if let Ok(fd) = sock(libc::AF_INET, libc::SOCK_DGRAM, 0) {
                    let _ = setopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &int(1));
                    let _ = setopt(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, &int(1));
                    // SAFETY: sockaddr_in is plain data.
                    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                    sa.sin_family = libc::AF_INET as libc::sa_family_t;
                    sa.sin_port = htons(port);
                    // SAFETY: bind reads a sockaddr_in of the given size.
                    let rc = unsafe {
                        libc::bind(
                            fd.as_raw_fd(),
                            std::ptr::from_ref(&sa).cast(),
                            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        )
                    };
                    if rc == 0 {
                        pre.fds.push(fd);
                        pre.ports.push(port);
                    }
                }
            }
        }
        "A22" => {
            if let Ok(file) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                pre.fds.push(OwnedFd::from(file));
            }
        }
        _ => {}
    }
    pre
}

/// Source ports of the rogue DHCP replies (A9): the server port, the client port, and two
/// ordinary ones.
pub const A9_SOURCE_PORTS: [u16; 4] = [67, 68, 1067, 40067];

/// The marker of attack `id`'s packet (the node side looks for it).
pub fn marker_of(pod: &PodUnderTest, id: &str) -> String {
    format!("{}-{id}", pod.marker)
}

/// A probe: what attack `id` tries, with the fds `prepare` opened.
pub type Probe = fn(&PodUnderTest, &Pre, &str) -> Observed;

/// A UDP socket, the tool of many attacks.
fn udp() -> Result<OwnedFd, i32> {
    sock(libc::AF_INET, libc::SOCK_DGRAM, 0)
}

/// Runs attack `id`; `pre` holds what `prepare` opened. An id with no probe is ENOSYS (the
/// table test keeps that from happening).
pub fn run(id: &str, pod: &PodUnderTest, pre: &Pre) -> Observed {
    match PROBES.iter().find(|(a, _)| *a == id) {
        Some((_, probe)) => probe(pod, pre, id),
        None => Observed::Errno(libc::ENOSYS),
    }
}

/// Each attack's probe, by id (the same ids as `ATTACKS`, in order; a test holds them equal).
pub const PROBES: &[(&str, Probe)] = &[
    ("A1", packets::a1),
    ("A2", packets::a2),
    ("A3", packets::a3),
    ("A4", packets::a4),
    ("A5", packets::a5),
    ("A6", packets::a6),
    ("A7", packets::a7),
    ("A8", packets::a8),
    ("A9", packets::a9),
    ("A10", links::a10),
    ("A11", links::a11),
    ("A12", links::a12),
    ("A13", links::a13),
    ("A14", links::a14),
    ("A15", links::a15),
    ("A16", links::a16),
    ("A17", links::a17),
    ("A18", links::a18),
    ("A19", links::a19),
    ("A20", tap::a20),
    ("A21", tap::a21),
    ("A22", tap::a22),
    ("A23", isolation::a23),
    ("A24", isolation::a24),
    ("A25", isolation::a25),
    ("A26", isolation::a26),
    ("A27", links::a27),
    ("A28", isolation::a28),
    ("A29", isolation::a29),
    ("A30", links::a30),
    ("A31", links::a31),
    ("A32", isolation::a32),
    ("A33", isolation::a33),
    ("A34", isolation::a34),
    ("A35", isolation::a35),
    ("A36", ra::a36),
    ("A37", ra::a37),
    ("A38", ra::a38),
    ("A39", ra::a39),
];
