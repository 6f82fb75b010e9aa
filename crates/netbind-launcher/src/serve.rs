//! The thin socket loop around the pure servers: no raw socket, no SO_BINDTODEVICE, no
//! capability.
//!
//! One UDP socket per family serves every interface: `0.0.0.0:67` (SO_REUSEADDR, IP_PKTINFO)
//! and `[::]:547` (IPV6_V6ONLY, IPV6_RECVPKTINFO, member of ff02::1:2 on each bridge). Each
//! datagram is dispatched by its incoming interface to that interface's server; datagrams
//! from any other interface are dropped silently. Replies leave on the interface the request
//! came in on (IP_PKTINFO / IPV6_PKTINFO in sendmsg). One socket per family (rather than
//! KubeVirt's one per bridge) also means a unicast RENEW can never reach the wrong server.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn,
    SockaddrIn6, SockaddrLike, bind, recvmsg, sendmsg, setsockopt, socket, sockopt,
};

use crate::{dhcp4, dhcp6};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("interface {name}: if_nametoindex: {source}")]
    Ifindex { name: String, source: nix::Error },
    #[error("{op} on the DHCP{family} socket: {source}")]
    Socket {
        op: &'static str,
        family: &'static str,
        source: nix::Error,
    },
    #[error("join ff02::1:2 on {name}: {source}")]
    Join {
        name: String,
        source: std::io::Error,
    },
    #[error("poll: {0}")]
    Poll(nix::Error),
}

fn sock_err(op: &'static str, family: &'static str) -> impl FnOnce(nix::Error) -> ServeError {
    move |source| ServeError::Socket { op, family, source }
}

pub fn ifindex(name: &str) -> Result<u32, ServeError> {
    nix::net::if_::if_nametoindex(name).map_err(|source| ServeError::Ifindex {
        name: name.into(),
        source,
    })
}

/// Set by the SIGTERM / SIGINT handler: the loop returns at the next wake-up.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT end the loop cleanly (install before the seccomp filter).
pub fn install_stop_handler() {
    let handler: extern "C" fn(libc::c_int) = on_stop;
    // SAFETY: the handler only stores to an atomic; no SA_RESTART, so poll returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as libc::sighandler_t;
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

pub struct Loop {
    v4: Option<(OwnedFd, BTreeMap<u32, dhcp4::server::Server>)>,
    v6: Option<(OwnedFd, BTreeMap<u32, dhcp6::Server>)>,
    log: LogBudget,
}

/// Lines logged per datagram before the budget runs out.
pub const LOG_BURST: u32 = 32;
/// Past the budget, one summary line per this many datagrams.
pub const SUMMARY_EVERY: u64 = 4096;
/// No datagram for this long ends a burst: the summary is written and the budget refilled.
pub const QUIET_MS: u16 = 2000;

/// What guest traffic can make the launcher write is bounded: each datagram may log a line
/// (its reply or why it was dropped) until [`LOG_BURST`] lines are out; after that datagrams
/// are only counted, summarised every [`SUMMARY_EVERY`] and when the traffic stops for
/// [`QUIET_MS`], which also refills the budget. A flood then writes one line per 4096
/// datagrams instead of one each. No clock is read: the quiet period is poll's timeout, so
/// the seccomp allow-list needs nothing more.
#[derive(Debug)]
struct LogBudget {
    left: u32,
    replies: u64,
    dropped: u64,
}

impl LogBudget {
    fn new() -> Self {
        Self {
            left: LOG_BURST,
            replies: 0,
            dropped: 0,
        }
    }

    /// Whether this datagram's own line may be written; otherwise it is counted.
    fn take(&mut self, reply: bool) -> bool {
        if self.left > 0 {
            self.left -= 1;
            return true;
        }
        if reply {
            self.replies += 1;
        } else {
            self.dropped += 1;
        }
        if self.replies + self.dropped >= SUMMARY_EVERY {
            self.summary();
        }
        false
    }

    fn summary(&mut self) {
        if self.replies + self.dropped > 0 {
            tracing::info!(
                replies = self.replies,
                dropped = self.dropped,
                "DHCP datagrams over the log budget (not logged one by one)"
            );
        }
        self.replies = 0;
        self.dropped = 0;
    }

    /// How long poll may wait: for ever while the budget is full and nothing is pending, so
    /// an idle launcher never wakes up; [`QUIET_MS`] otherwise, to notice the quiet.
    fn poll_timeout(&self) -> PollTimeout {
        if self.left == LOG_BURST && self.replies + self.dropped == 0 {
            PollTimeout::NONE
        } else {
            PollTimeout::from(QUIET_MS)
        }
    }

    fn quiet(&mut self) {
        self.summary();
        self.left = LOG_BURST;
    }
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Loop")
            .field("v4", &self.v4.is_some())
            .field("v6", &self.v6.is_some())
            .finish()
    }
}

/// The log line of a reply, within the budget; both families share it.
fn log_reply(
    budget: &mut LogBudget,
    family: &str,
    kind: impl std::fmt::Debug,
    to: impl std::fmt::Display,
    ifindex: u32,
    sent: nix::Result<usize>,
) {
    if !budget.take(true) {
        return;
    }
    match sent {
        Ok(_) => tracing::info!(kind = ?kind, to = %to, ifindex, "DHCP{family} reply"),
        Err(err) => tracing::warn!(error = %err, to = %to, "DHCP{family} reply not sent"),
    }
}
fn v4_socket() -> Result<OwnedFd, ServeError> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sock_err("socket", "v4"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(sock_err("SO_REUSEADDR", "v4"))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(sock_err("SO_BROADCAST", "v4"))?;
    setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).map_err(sock_err("IP_PKTINFO", "v4"))?;
    let addr = SockaddrIn::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        dhcp4::server::SERVER_PORT,
    ));
    bind(fd.as_raw_fd(), &addr).map_err(sock_err("bind 0.0.0.0:67", "v4"))?;
    Ok(fd)
}

fn v6_socket(ifindexes: &[(String, u32)]) -> Result<OwnedFd, ServeError> {
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sock_err("socket", "v6"))?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(sock_err("IPV6_V6ONLY", "v6"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(sock_err("SO_REUSEADDR", "v6"))?;
    setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)
        .map_err(sock_err("IPV6_RECVPKTINFO", "v6"))?;
    let addr = SockaddrIn6::from(SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        dhcp6::SERVER_PORT,
        0,
        0,
    ));
    bind(fd.as_raw_fd(), &addr).map_err(sock_err("bind [::]:547", "v6"))?;
    for (name, idx) in ifindexes {
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: dhcp6::ALL_SERVERS.octets(),
            },
            ipv6mr_interface: *idx,
        };
        // SAFETY: setsockopt reads a correctly sized ipv6_mreq that lives for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_ADD_MEMBERSHIP,
                std::ptr::from_ref(&mreq).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::ipv6_mreq>()).unwrap_or(0),
            )
        };
        if rc != 0 {
            return Err(ServeError::Join {
                name: name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(fd)
}

impl Loop {
    /// Binds the sockets for the given servers (interface name → server).
    pub fn new(
        v4: Vec<(String, dhcp4::server::Server)>,
        v6: Vec<(String, dhcp6::Server)>,
    ) -> Result<Self, ServeError> {
        let v4 = if v4.is_empty() {
            None
        } else {
            let mut by_index = BTreeMap::new();
            for (name, sock) in v4 {
                by_index.insert(ifindex(&name)?, sock);
            }
            Some((v4_socket()?, by_index))
        };
        let v6 = if v6.is_empty() {
            None
        } else {
            let mut by_index = BTreeMap::new();
            let mut names = Vec::new();
            for (name, sock) in v6 {
                let idx = ifindex(&name)?;
                names.push((name, idx));
                by_index.insert(idx, sock);
            }
            Some((v6_socket(&names)?, by_index))
        };
        Ok(Self {
            v4,
            v6,
            log: LogBudget::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }

    /// The DHCP socket fds (the only fds the seccomp filter lets it receive or send on).
    pub fn fds(&self) -> Vec<RawFd> {
        let mut all = Vec::new();
        if let Some((fd, _)) = &self.v4 {
            all.push(fd.as_raw_fd());
        }
        if let Some((fd, _)) = &self.v6 {
            all.push(fd.as_raw_fd());
        }
        all
    }

    /// Serves until SIGTERM / SIGINT (Ok) or an unrecoverable socket error. With nothing to
    /// serve it just waits for the signal.
    pub fn run(&mut self) -> Result<(), ServeError> {
        let mut buf = vec![0u8; 4096];
        loop {
            if STOP.load(Ordering::SeqCst) {
                return Ok(());
            }
            let (r4, r6) = {
                let mut fds = Vec::new();
                if let Some((fd, _)) = &self.v4 {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
                if let Some((fd, _)) = &self.v6 {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, self.log.poll_timeout()) {
                    Ok(0) => {
                        self.log.quiet();
                        continue;
                    }
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(err) => return Err(ServeError::Poll(err)),
                }
                let ready = |i: usize| {
                    fds.get(i)
                        .and_then(|f| f.revents())
                        .is_some_and(|r| r.contains(PollFlags::POLLIN))
                };
                match (self.v4.is_some(), self.v6.is_some()) {
                    (true, true) => (ready(0), ready(1)),
                    (true, false) => (ready(0), false),
                    (false, true) => (false, ready(0)),
                    (false, false) => (false, false),
                }
            };
            if r4 {
                self.once_v4(&mut buf)?;
            }
            if r6 {
                self.once_v6(&mut buf)?;
            }
        }
    }

    fn once_v4(&mut self, buf: &mut [u8]) -> Result<(), ServeError> {
        let Some((fd, servers)) = &self.v4 else {
            return Ok(());
        };
        let log = &mut self.log;
        let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
        let Some(Datagram {
            len: n,
            src: addr,
            ifindex: ifidx,
        }) = recv_with_ifindex::<SockaddrIn>(fd.as_raw_fd(), buf, &mut cmsg, "v4", |c| match c {
            ControlMessageOwned::Ipv4PacketInfo(pi) => u32::try_from(pi.ipi_ifindex).ok(),
            _ => None,
        })?
        else {
            return Ok(());
        };
        let src = addr.map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |a| {
            SocketAddrV4::new(a.ip(), a.port())
        });
        // Without IP_PKTINFO the incoming interface is unknown: never answer then.
        let Some((idx, server)) = ifidx.and_then(|i| servers.get(&i).map(|s| (i, s))) else {
            if log.take(false) {
                tracing::debug!(ifindex = ?ifidx, "DHCPv4 datagram from another interface dropped");
            }
            return Ok(());
        };
        match server.handle(&buf[..n], src) {
            dhcp4::server::Outcome::Reply { bytes, to, kind } => {
                let pi = libc::in_pktinfo {
                    ipi_ifindex: libc::c_int::try_from(idx).unwrap_or(0),
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(server.config().server_id).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let dest = SockaddrIn::from(to);
                let sent = sendmsg(
                    fd.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &[ControlMessage::Ipv4PacketInfo(&pi)],
                    MsgFlags::empty(),
                    Some(&dest),
                );
                log_reply(log, "v4", kind, to, idx, sent);
            }
            dhcp4::server::Outcome::Drop(why) => {
                if log.take(false) {
                    tracing::info!(reason = %why, "DHCPv4 datagram dropped");
                }
            }
        }
        Ok(())
    }

    fn once_v6(&mut self, buf: &mut [u8]) -> Result<(), ServeError> {
        let Some((fd, servers)) = &self.v6 else {
            return Ok(());
        };
        let log = &mut self.log;
        let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
        let Some(Datagram {
            len: n,
            src: addr,
            ifindex: ifidx,
        }) = recv_with_ifindex::<SockaddrIn6>(fd.as_raw_fd(), buf, &mut cmsg, "v6", |c| match c {
            ControlMessageOwned::Ipv6PacketInfo(pi) => Some(pi.ipi6_ifindex),
            _ => None,
        })?
        else {
            return Ok(());
        };
        let src = addr.map_or(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0), |a| {
            SocketAddrV6::new(a.ip(), a.port(), a.flowinfo(), a.scope_id())
        });
        let Some((idx, server)) = ifidx.and_then(|i| servers.get(&i).map(|s| (i, s))) else {
            if log.take(false) {
                tracing::debug!(ifindex = ?ifidx, "DHCPv6 datagram from another interface dropped");
            }
            return Ok(());
        };
        // A link-local peer needs its scope to be routable back.
        let src = if src.scope_id() == 0 {
            SocketAddrV6::new(*src.ip(), src.port(), 0, idx)
        } else {
            src
        };
        match server.handle(&buf[..n], src) {
            dhcp6::Outcome::Reply { bytes, to, kind } => {
                let pi = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr { s6_addr: [0; 16] },
                    ipi6_ifindex: idx,
                };
                let dest = SockaddrIn6::from(to);
                let sent = sendmsg(
                    fd.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &[ControlMessage::Ipv6PacketInfo(&pi)],
                    MsgFlags::empty(),
                    Some(&dest),
                );
                log_reply(log, "v6", kind, to, idx, sent);
            }
            dhcp6::Outcome::Drop(why) => {
                if log.take(false) {
                    tracing::info!(reason = %why, "DHCPv6 datagram dropped");
                }
            }
        }
        Ok(())
    }
}

/// What [`recv_with_ifindex`] read: the length in the buffer, the source, and the incoming
/// interface named by the family's PKTINFO (none without it: the caller never answers then).
struct Datagram<S> {
    len: usize,
    src: Option<S>,
    ifindex: Option<u32>,
}

/// One datagram from `fd` into `buf`, the incoming interface found among its control messages
/// by `ifindex`. `None` when the read was interrupted or there was nothing to read.
#[allow(clippy::ptr_arg)] // nix's recvmsg takes the control buffer as a Vec
fn recv_with_ifindex<S: SockaddrLike>(
    fd: RawFd,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
    family: &'static str,
    ifindex: fn(&ControlMessageOwned) -> Option<u32>,
) -> Result<Option<Datagram<S>>, ServeError> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = match recvmsg::<S>(fd, &mut iov, Some(cmsg), MsgFlags::empty()) {
        Ok(received) => received,
        Err(nix::Error::EINTR | nix::Error::EAGAIN) => return Ok(None),
        Err(err) => return Err(sock_err("recvmsg", family)(err)),
    };
    let idx = msg
        .cmsgs()
        .ok()
        .into_iter()
        .flatten()
        .find_map(|c| ifindex(&c));
    Ok(Some(Datagram {
        len: msg.bytes,
        src: msg.address,
        ifindex: idx,
    }))
}
