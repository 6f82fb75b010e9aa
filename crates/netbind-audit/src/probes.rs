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

/// What the probes need to know about the pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ctx {
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

/// ND option type 253 (RFC 4727, for experiments): carries the marker by which the node
/// side recognises an audit packet (A36, A37).
const MARKER_OPTION: u8 = 253;

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

fn int(v: libc::c_int) -> [u8; 4] {
    v.to_ne_bytes()
}

fn htons(v: u16) -> u16 {
    v.to_be()
}

fn ifindex(name: &str) -> u32 {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: if_nametoindex reads a NUL-terminated name.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn mac_of(name: &str) -> [u8; 6] {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default();
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(s.trim().split(':')) {
        *o = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    m
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zero is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    r
}

fn ioctl(fd: &OwnedFd, req: libc::c_ulong, r: &mut libc::ifreq) -> Result<(), i32> {
    // SAFETY: the request reads / writes the ifreq, which outlives the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req as _, std::ptr::from_mut(r)) }).map(|_| ())
}

/// netlink: one request, the kernel's verdict from its ACK (or the end of a dump).
fn netlink(proto: libc::c_int, msg_type: u16, flags: u16, body: &[u8]) -> Result<(), i32> {
    let fd = sock(libc::AF_NETLINK, libc::SOCK_RAW, proto)?;
    let len = 16 + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&(flags | 1 | 4).to_ne_bytes()); // REQUEST | ACK
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    // SAFETY: send reads `m` for its length.
    check(unsafe { libc::send(fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) } as libc::c_int)?;
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(errno());
        }
        let n = usize::try_from(n).unwrap_or(0);
        let mut off = 0;
        while off + 16 <= n {
            let l = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
            let t = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or([0; 2]));
            match t {
                2 => {
                    // NLMSG_ERROR: errno 0 is the ACK.
                    let e =
                        i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or([0; 4]));
                    return if e == 0 { Ok(()) } else { Err(-e) };
                }
                3 => return Ok(()), // NLMSG_DONE of a dump
                _ => {}
            }
            if l < 16 {
                return Err(libc::EIO);
            }
            off += (l + 3) & !3;
        }
    }
}

fn rtattr(t: u16, data: &[u8]) -> Vec<u8> {
    let len = 4 + data.len();
    let mut v = Vec::new();
    v.extend_from_slice(&u16::try_from(len).unwrap_or(0).to_ne_bytes());
    v.extend_from_slice(&t.to_ne_bytes());
    v.extend_from_slice(data);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn ifinfomsg(index: u32) -> Vec<u8> {
    let mut v = vec![0u8; 16];
    v[4..8].copy_from_slice(&index.to_ne_bytes());
    v
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

fn obs(r: Result<(), i32>, detail: &str) -> Observed {
    match r {
        Ok(()) => ok(detail),
        Err(e) => Observed::Errno(e),
    }
}

/// Opens what an attack uses that the running launcher already holds, before the filter.
pub fn prepare(id: &str, c: &Ctx) -> Pre {
    let mut pre = Pre::default();
    match id {
        // The RA socket, as the responder holds it: its filter allows sendmsg on it.
        "A36" | "A37" => {
            pre.pod_ifindex = ifindex(&c.pod_iface);
            if let Some(fd) = c.ra_fd {
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
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                pre.fds.push(OwnedFd::from(f));
            }
        }
        _ => {}
    }
    pre
}

/// Ethernet-less IPv4/UDP datagram 67 → 68 to the limited broadcast, for an AF_PACKET dgram
/// socket (the kernel adds the Ethernet header).
fn dhcp_frame(src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(0).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&[255, 255, 255, 255]);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !u16::try_from(sum).unwrap_or(0);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let mut v = ip;
    v.extend_from_slice(&67u16.to_be_bytes());
    v.extend_from_slice(&68u16.to_be_bytes());
    v.extend_from_slice(&u16::try_from(udp_len).unwrap_or(0).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

fn packet_send(ifname: &str, proto: u16, payload: &[u8]) -> Result<(), i32> {
    let fd = sock(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(htons(proto)))?;
    // SAFETY: sockaddr_ll is plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = htons(proto);
    sll.sll_ifindex = i32::try_from(ifindex(ifname)).unwrap_or(0);
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: sendto reads the payload and the sockaddr_ll for their sizes.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            std::ptr::from_ref(&sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

/// Source ports of the rogue DHCP replies (A9): the server port, the client port, and two
/// ordinary ones.
pub const A9_SOURCE_PORTS: [u16; 4] = [67, 68, 1067, 40067];

fn udp_broadcast_via(fd: RawFd, ifname: &str, payload: &[u8]) -> Result<(), i32> {
    // SAFETY: plain data structures for sendmsg, all alive for the call.
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = htons(68);
        sa.sin_addr.s_addr = u32::MAX;
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut cbuf = [0u8; 64];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = std::ptr::from_mut(&mut sa).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as _;
        let pi = libc::in_pktinfo {
            ipi_ifindex: i32::try_from(ifindex(ifname)).unwrap_or(0),
            ipi_spec_dst: libc::in_addr { s_addr: 0 },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(&pi).cast::<u8>(),
            libc::CMSG_DATA(c),
            std::mem::size_of::<libc::in_pktinfo>(),
        );
        if libc::sendmsg(fd, &msg, 0) < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }
}

fn tun_attach(name: &str, flags: libc::c_int) -> Result<(), i32> {
    let c = CString::new("/dev/net/tun").unwrap_or_default();
    // SAFETY: open with a NUL-terminated path; the fd is owned below.
    let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: as above.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut r = ifreq(name);
    r.ifr_ifru.ifru_flags =
        libc::c_short::from_ne_bytes(u16::try_from(flags & 0xffff).unwrap_or(0).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes the ifreq.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF as _,
            std::ptr::from_mut(&mut r),
        )
    })
    .map(|_| ())
}

/// Whether `t` is a process this one can name: a process with that pid, seen from here, that
/// started when the target did. (Another PID namespace numbers its own processes; a local pid
/// that happens to equal the target's is another process.)
fn nameable(t: &Target) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)) else {
        return false;
    };
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(19))
        .and_then(|v| v.parse::<u64>().ok())
        == Some(t.start)
}

/// A32: a user namespace with a network namespace, then one nf_tables transaction inside it
/// (NEWTABLE between BATCH_BEGIN and BATCH_END on NETLINK_NETFILTER).
fn userns_nftables() -> Result<(), i32> {
    // SAFETY: unshare takes flags only (this probe runs in a forked child).
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) })?;
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    let msg = |ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]| {
        let len = 16 + 4 + attrs.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, 0]);
        m.extend_from_slice(&res_id.to_be_bytes());
        m.extend_from_slice(attrs);
        m
    };
    let name = rtattr(1, b"nbaudit\0"); // NFTA_TABLE_NAME
    let mut batch = msg(0x10, 1, 1, 0, NFNL_SUBSYS_NFTABLES, &[]); // BATCH_BEGIN
    // NFT_MSG_NEWTABLE, REQUEST | ACK | CREATE, family inet.
    batch.extend(msg(
        NFNL_SUBSYS_NFTABLES << 8,
        1 | 4 | 0x400,
        2,
        1,
        0,
        &name,
    ));
    batch.extend(msg(0x11, 1, 3, 0, NFNL_SUBSYS_NFTABLES, &[])); // BATCH_END
    let fd = sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_NETFILTER)?;
    // SAFETY: send reads `batch` for its length.
    let sent = unsafe { libc::send(fd.as_raw_fd(), batch.as_ptr().cast(), batch.len(), 0) };
    check(sent as libc::c_int)?;
    let mut buf = vec![0u8; 8192];
    // SAFETY: recv writes at most buf.len() bytes into buf.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n = usize::try_from(n).map_err(|_| errno())?;
    // The first answer is NLMSG_ERROR for the NEWTABLE: errno 0 is its ACK.
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
        let e = i32::from_ne_bytes(buf[16..20].try_into().unwrap_or([0; 4]));
        return if e == 0 { Ok(()) } else { Err(-e) };
    }
    Err(libc::EIO)
}

/// An ND message of `kind` (RA 134, NA 136) with `body` after the 4-byte ICMPv6 header and
/// the marker option, sent to all nodes out of interface `index` on `fd` (sendmsg: what the
/// responder may call).
fn nd_out_of(fd: RawFd, index: u32, kind: u8, body: &[u8], marker: &str) -> Result<(), i32> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(body);
    let mut opt = vec![MARKER_OPTION, 0];
    opt.extend_from_slice(marker.as_bytes());
    while opt.len() % 8 != 0 {
        opt.push(0);
    }
    opt[1] = u8::try_from(opt.len() / 8).unwrap_or(0);
    m.extend_from_slice(&opt);
    // SAFETY: plain data for sendmsg, all alive for the call.
    let rc = unsafe {
        let mut to: libc::sockaddr_in6 = std::mem::zeroed();
        to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        to.sin6_addr.s6_addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        to.sin6_scope_id = index;
        let mut iov = libc::iovec {
            iov_base: m.as_mut_ptr().cast(),
            iov_len: m.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = std::ptr::from_mut(&mut to).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        libc::sendmsg(fd, &msg, 0)
    };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

/// The marker of attack `id`'s packet (the node side looks for it).
pub fn marker_of(c: &Ctx, id: &str) -> String {
    format!("{}-{id}", c.marker)
}

/// A probe: what attack `id` tries, with the fds `prepare` opened.
pub type Probe = fn(&Ctx, &Pre, &str) -> Observed;

/// A UDP socket, the tool of many attacks.
fn udp() -> Result<OwnedFd, i32> {
    sock(libc::AF_INET, libc::SOCK_DGRAM, 0)
}

/// Runs attack `id`; `pre` holds what `prepare` opened. An id with no probe is ENOSYS (the
/// table test keeps that from happening).
pub fn run(id: &str, c: &Ctx, pre: &Pre) -> Observed {
    match PROBES.iter().find(|(a, _)| *a == id) {
        Some((_, probe)) => probe(c, pre, id),
        None => Observed::Errno(libc::ENOSYS),
    }
}

/// Each attack's probe, by id (the same ids as `ATTACKS`, in order; a test holds them equal).
pub const PROBES: &[(&str, Probe)] = &[
    ("A1", a1),
    ("A2", a2),
    ("A3", a3),
    ("A4", a4),
    ("A5", a5),
    ("A6", a6),
    ("A7", a7),
    ("A8", a8),
    ("A9", a9),
    ("A10", a10),
    ("A11", a11),
    ("A12", a12),
    ("A13", a13),
    ("A14", a14),
    ("A15", a15),
    ("A16", a16),
    ("A17", a17),
    ("A18", a18),
    ("A19", a19),
    ("A20", a20),
    ("A21", a21),
    ("A22", a22),
    ("A23", a23),
    ("A24", a24),
    ("A25", a25),
    ("A26", a26),
    ("A27", a27),
    ("A28", a28),
    ("A29", a29),
    ("A30", a30),
    ("A31", a31),
    ("A32", a32),
    ("A33", a33),
    ("A34", a34),
    ("A35", a35),
    ("A36", a36),
    ("A37", a37),
    ("A38", a38),
    ("A39", a39),
];

fn a1(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        sock(libc::AF_PACKET, libc::SOCK_RAW, i32::from(htons(0x0003))).map(|_| ()),
        "packet socket",
    )
}

fn a2(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let mac = mac_of(&c.pod_iface);
    let ip = c.pod_ip.octets();
    // ARP reply: the pod's own address at its own MAC (harmless if it goes out).
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&ip);
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&ip);
    obs(
        packet_send(&c.pod_iface, 0x0806, &arp),
        "gratuitous ARP sent",
    )
}

fn a3(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        sock(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW).map(|_| ()),
        "raw socket",
    )
}

fn a4(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        sock(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6).map(|_| ()),
        "raw ICMPv6 socket",
    )
}

fn a5(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        sock(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP).map(|_| ()),
        "ping socket",
    )
}

fn a6(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| setopt(&s, libc::SOL_IP, libc::IP_TRANSPARENT, &int(1))),
        "IP_TRANSPARENT set",
    )
}

fn a7(_c: &Ctx, pre: &Pre, _id: &str) -> Observed {
    match pre.fds.first() {
        Some(fd) => obs(
            setopt(fd, libc::SOL_IPV6, libc::IPV6_FREEBIND, &int(1)),
            "IPV6_FREEBIND set: any source address",
        ),
        None => Observed::Errno(libc::EAFNOSUPPORT),
    }
}

fn a8(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            setopt(
                &s,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                c.pod_iface.as_bytes(),
            )?;
            setopt(
                &s,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                c.bridge.as_bytes(),
            )
        }),
        "re-bound",
    )
}

fn a9(c: &Ctx, pre: &Pre, _id: &str) -> Observed {
    let payload = c.marker.as_bytes();
    match packet_send(&c.pod_iface, 0x0800, &dhcp_frame(c.pod_ip, payload)) {
        Ok(()) => ok("sent through a packet socket"),
        Err(_) => {
            // Every source port that could send: one success is enough to try.
            let mut sent = Vec::new();
            let mut last = libc::EACCES;
            for (fd, port) in pre.fds.iter().zip(&pre.ports) {
                match udp_broadcast_via(fd.as_raw_fd(), &c.pod_iface, payload) {
                    Ok(()) => sent.push(format!(":{port}")),
                    Err(e) => last = e,
                }
            }
            if sent.is_empty() {
                Observed::Errno(last)
            } else {
                ok(&format!("sent from UDP {} on eth0", sent.join(", ")))
            }
        }
    }
}

fn a10(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let p = CString::new("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or_default();
    // SAFETY: open with a NUL-terminated path.
    match check(unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) }) {
        Err(e) => Observed::Errno(e),
        Ok(fd) => {
            // SAFETY: fd was just opened; write reads 1 byte.
            let rc = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let r = if rc < 0 {
                Observed::Errno(errno())
            } else {
                ok("floor set to 0")
            };
            // SAFETY: closing the fd we opened.
            unsafe { libc::close(fd) };
            r
        }
    }
}

fn a11(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let mut body = ifinfomsg(0);
    body.extend(rtattr(3, b"nbaudit0\0"));
    body.extend(rtattr(18, &rtattr(1, b"bridge")));
    let r = netlink(libc::NETLINK_ROUTE, RTM_NEWLINK, NLM_F_CREATE_EXCL, &body);
    if r.is_ok() {
        let idx = ifindex("nbaudit0");
        let _ = netlink(libc::NETLINK_ROUTE, RTM_DELLINK, 0, &ifinfomsg(idx));
    }
    obs(r, "bridge nbaudit0 created (and removed)")
}

fn a12(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            let mut r = ifreq(&c.pod_iface);
            ioctl(&s, libc::SIOCGIFMTU, &mut r)?;
            ioctl(&s, libc::SIOCSIFMTU, &mut r)
        }),
        "MTU set (to its current value)",
    )
}

fn a13(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            let mut r = ifreq(&c.pod_iface);
            ioctl(&s, libc::SIOCGIFHWADDR, &mut r)?;
            ioctl(&s, libc::SIOCSIFHWADDR, &mut r)
        }),
        "MAC set (to its current value)",
    )
}

fn a14(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            let mut r = ifreq(&c.pod_iface);
            ioctl(&s, libc::SIOCGIFFLAGS, &mut r)?;
            // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled in.
            let flags = unsafe { r.ifr_ifru.ifru_flags };
            r.ifr_ifru.ifru_flags = flags | libc::IFF_PROMISC as libc::c_short;
            ioctl(&s, libc::SIOCSIFFLAGS, &mut r)?;
            r.ifr_ifru.ifru_flags = flags;
            ioctl(&s, libc::SIOCSIFFLAGS, &mut r)
        }),
        "promiscuous on (and off again)",
    )
}

fn a15(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let mut body = ifinfomsg(ifindex(&c.tap));
    body.extend(rtattr(10, &ifindex(&c.bridge).to_ne_bytes()));
    obs(
        netlink(libc::NETLINK_ROUTE, RTM_NEWLINK, 0, &body),
        "master set (to the bridge it is on)",
    )
}

fn a16(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let mut body = vec![libc::AF_INET as u8, 32, 0, 0];
    body.extend_from_slice(&ifindex("lo").to_ne_bytes());
    body.extend(rtattr(2, &[192, 0, 2, 77]));
    body.extend(rtattr(1, &[192, 0, 2, 77]));
    let r = netlink(libc::NETLINK_ROUTE, RTM_NEWADDR, NLM_F_CREATE_EXCL, &body);
    if r.is_ok() {
        let _ = netlink(libc::NETLINK_ROUTE, RTM_DELADDR, 0, &body);
    }
    obs(r, "192.0.2.77 added to lo (and removed)")
}

fn a17(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE, nfgenmsg {AF_UNSPEC, v0, 0}.
    obs(
        netlink(
            libc::NETLINK_NETFILTER,
            (10 << 8) | 1,
            NLM_F_DUMP,
            &[0, 0, 0, 0],
        ),
        "nftables tables dumped",
    )
}

fn a18(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            let mut v: [u32; 2] = [0x16, 0]; // ETHTOOL_GTXCSUM
            let mut r = ifreq(&c.pod_iface);
            r.ifr_ifru.ifru_data = v.as_mut_ptr().cast();
            ioctl(&s, libc::SIOCETHTOOL, &mut r)?;
            let mut set: [u32; 2] = [0x17, v[1]]; // ETHTOOL_STXCSUM, the same value
            r.ifr_ifru.ifru_data = set.as_mut_ptr().cast();
            ioctl(&s, libc::SIOCETHTOOL, &mut r)
        }),
        "tx checksum set (to its current value)",
    )
}

fn a19(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        tun_attach("nbaudit1", libc::IFF_TAP | libc::IFF_NO_PI),
        "new tap created (gone when closed)",
    )
}

fn a20(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        tun_attach(
            &c.tap,
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_ONE_QUEUE,
        ),
        "attached to the VM's tap",
    )
}

fn a21(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        tun_attach(
            &c.tap,
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE,
        ),
        "extra queue attached",
    )
}

fn a22(_c: &Ctx, pre: &Pre, _id: &str) -> Observed {
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

fn a23(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    // SAFETY: unshare takes flags only (this probe runs in a forked child).
    let r = check(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(|_| ());
    obs(r, "new network namespace")
}

fn a24(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    // SAFETY: as above.
    match check(unsafe { libc::unshare(libc::CLONE_NEWUSER) }) {
        Err(e) => Observed::Errno(e),
        Ok(_) => obs(
            udp().and_then(|s| {
                let mut r = ifreq(&c.pod_iface);
                ioctl(&s, libc::SIOCGIFMTU, &mut r)?;
                ioctl(&s, libc::SIOCSIFMTU, &mut r)
            }),
            "pod eth0 changed from a user namespace",
        ),
    }
}

fn a25(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let (a, b, t) = (
        CString::new("none").unwrap_or_default(),
        CString::new("/tmp").unwrap_or_default(),
        CString::new("tmpfs").unwrap_or_default(),
    );
    // SAFETY: mount with NUL-terminated strings.
    obs(
        check(unsafe { libc::mount(a.as_ptr(), b.as_ptr(), t.as_ptr(), 0, std::ptr::null()) })
            .map(|_| ()),
        "tmpfs mounted",
    )
}

fn a26(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let pid = libc::pid_t::try_from(c.launcher_pid).unwrap_or(0);
    // SAFETY: ptrace attach / detach on a pid; no memory is passed.
    let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
    if r < 0 {
        Observed::Errno(errno())
    } else {
        // SAFETY: as above.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
        ok("attached to the launcher")
    }
}

fn a27(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| setopt(&s, libc::SOL_SOCKET, libc::SO_MARK, &int(1))),
        "SO_MARK set",
    )
}

fn a28(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let xdp = sock(44, libc::SOCK_RAW, 0).map(|_| ());
    // An empty BPF_PROG_LOAD attribute block: refused for permission before anything.
    let attr = [0u8; 128];
    // SAFETY: bpf reads `attr` for its size.
    let bpf =
        check(unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()) } as libc::c_int)
            .map(|_| ());
    match (xdp, bpf) {
        (Ok(()), _) => ok("AF_XDP socket"),
        (_, Ok(())) => ok("BPF program loaded"),
        (Err(e), _) => Observed::Errno(e),
    }
}

fn a29(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    // CAP_SYS_ADMIN into the ambient set, then into the effective set.
    // SAFETY: prctl with integer arguments.
    let amb = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, 21, 0, 0) };
    if amb == 0 {
        return ok("ambient CAP_SYS_ADMIN");
    }
    let e1 = errno();
    #[repr(C)]
    struct Hdr(u32, i32);
    #[repr(C)]
    struct Data(u32, u32, u32);
    let h = Hdr(0x2008_0522, 0);
    let d = [Data(1 << 21, 1 << 21, 0), Data(0, 0, 0)];
    // SAFETY: capset reads a v3 header and two data words.
    let rc = unsafe { libc::syscall(libc::SYS_capset, std::ptr::from_ref(&h), d.as_ptr()) };
    if rc == 0 {
        ok("CAP_SYS_ADMIN raised")
    } else {
        Observed::Errno(if e1 == 0 { errno() } else { e1 })
    }
}

fn a30(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    let mut r = ifreq(&c.tap);
    let mtu = udp()
        .and_then(|s| ioctl(&s, libc::SIOCGIFMTU, &mut r))
        .map(|_| {
            // SAFETY: ifru_mtu is the member SIOCGIFMTU filled in.
            unsafe { r.ifr_ifru.ifru_mtu }
        });
    let mtu = u32::try_from(mtu.unwrap_or(1500)).unwrap_or(1500);
    let mut body = ifinfomsg(ifindex(&c.tap));
    body.extend(rtattr(4, &mtu.to_ne_bytes()));
    obs(
        netlink(libc::NETLINK_ROUTE, RTM_NEWLINK, 0, &body),
        "tap MTU set (to its current value)",
    )
}

fn a31(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        netlink(libc::NETLINK_ROUTE, RTM_GETLINK, NLM_F_DUMP, &ifinfomsg(0)),
        "links dumped",
    )
}

fn a32(_c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    obs(
        userns_nftables(),
        "nf_tables table created in a private user + network namespace",
    )
}

fn a33(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    match &c.victim {
        None => Observed::Errno(libc::ENOENT),
        Some(v) if !nameable(&v.launcher) => Observed::Errno(libc::ESRCH),
        Some(v) => {
            // Signal 0: the permission check of SIGKILL, without the kill.
            let pid = libc::pid_t::try_from(v.launcher.pid).unwrap_or(0);
            // SAFETY: kill with a pid and signal 0.
            obs(
                check(unsafe { libc::kill(pid, 0) }).map(|_| ()),
                &format!("may signal pod {}'s launcher", v.pod),
            )
        }
    }
}

fn a34(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    match &c.victim {
        None => Observed::Errno(libc::ENOENT),
        Some(v) if !nameable(&v.vm) => Observed::Errno(libc::ESRCH),
        Some(v) => {
            let pid = libc::pid_t::try_from(v.vm.pid).unwrap_or(0);
            // PTRACE_SEIZE does not stop the tracee; the probe's exit detaches it.
            // SAFETY: ptrace with a pid and no memory.
            let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
            let what = if v.vm_is_qemu { "QEMU" } else { "launcher" };
            obs(
                check(i32::try_from(r).unwrap_or(-1)).map(|_| ()),
                &format!("traced pod {}'s {what} (its guest's memory)", v.pod),
            )
        }
    }
}

fn a35(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    match &c.victim {
        None => Observed::Errno(libc::ENOENT),
        Some(v) => match std::fs::read(&v.handoff) {
            Ok(b) => ok(&format!(
                "read {} bytes of pod {}'s hand-off record",
                b.len(),
                v.pod
            )),
            Err(e) => Observed::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
        },
    }
}

fn a36(c: &Ctx, pre: &Pre, id: &str) -> Observed {
    match pre.fds.first() {
        None => Observed::Errno(libc::ENOENT),
        // An RA (router lifetime 1800) onto the pod network, as if the pod were a router.
        Some(fd) => obs(
            nd_out_of(
                fd.as_raw_fd(),
                pre.pod_ifindex,
                134,
                &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0],
                &marker_of(c, id),
            ),
            "router advertisement sent out of the pod interface",
        ),
    }
}

fn a37(c: &Ctx, pre: &Pre, id: &str) -> Observed {
    match pre.fds.first() {
        None => Observed::Errno(libc::ENOENT),
        // An unsolicited NA with override for the node's own gateway address.
        Some(fd) => {
            let mut body = vec![0x20, 0, 0, 0];
            body.extend_from_slice(
                &std::net::Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 1).octets(),
            );
            obs(
                nd_out_of(
                    fd.as_raw_fd(),
                    pre.pod_ifindex,
                    136,
                    &body,
                    &marker_of(c, id),
                ),
                "neighbour advertisement sent out of the pod interface",
            )
        }
    }
}

fn a38(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    match c.ra_fd {
        None => Observed::Errno(libc::ENOENT),
        Some(fd) => {
            // SAFETY: fd is the RA socket this process was given; the OwnedFd is forgotten
            // so that the probe does not close it.
            let owned = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut name = c.pod_iface.clone().into_bytes();
            name.push(0);
            obs(
                setopt(&owned, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &name),
                "RA socket rebound to the pod interface",
            )
        }
    }
}

fn a39(c: &Ctx, _pre: &Pre, _id: &str) -> Observed {
    match c.ra_fd {
        None => Observed::Errno(libc::ENOENT),
        Some(fd) => {
            // SAFETY: as in A38.
            let owned = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd) });
            let detach = setopt(&owned, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &int(0));
            let unmark = setopt(&owned, libc::SOL_SOCKET, libc::SO_MARK, &int(0));
            match (detach, unmark) {
                (Ok(()), _) => ok("socket filter detached"),
                (_, Ok(())) => ok("socket mark cleared"),
                (Err(e), _) => Observed::Errno(e),
            }
        }
    }
}
