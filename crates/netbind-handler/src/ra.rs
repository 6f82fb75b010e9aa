//! Router advertisements without a capability in the sender (issue: IPv6 masquerade guests
//! get no default route from DHCPv6). Phase 1 opens what needs privilege, a raw ICMPv6
//! socket in the pod's network namespace, shapes it so that its holder can use it for one
//! thing only, and hands it to `netbind-ra`, started here with nothing (uid/gid 65534, no
//! capability in any set, no_new_privs; it checks, then confines itself with a syscall
//! allow-list). The same path serves `netbind up`, `netbind-handler setup` (also with
//! `--pid`) and a CNI plugin, which all exit before the pod's containers start: the
//! responder is phase 1's, recorded in its state and stopped by its teardown.
//!
//! What the holder of the socket can do: receive router solicitations that arrive on the
//! pod's bridge (the socket is bound to it; the locked classic BPF filter drops every other
//! ICMPv6 type before it is queued) and send router advertisements out of that bridge, that
//! is to the guest alone. What it cannot: send anything else, or out of another interface
//! (a bound raw socket still could, given a scope id: the socket's mark, which only
//! CAP_NET_ADMIN / CAP_NET_RAW can change, makes the plan's `ra_guard` chain drop it),
//! rebind it (changing a bound device needs CAP_NET_RAW), change or remove the filter
//! (SO_LOCK_FILTER), open another socket or call setsockopt (its syscall filter).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use netbind_model::IfName;
use netbind_model::ra::RaConfig;

/// The uid and gid the responder runs as (`nobody`): not the VM's, so that nothing of the
/// VM side shares its credentials.
pub const RESPONDER_ID: u32 = 65534;
/// The fd number the responder finds its socket at.
pub const RESPONDER_FD: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum RaError {
    #[error("router advertisements on {iface}: {op}: {source}")]
    Socket {
        iface: IfName,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("start the RA responder {bin} for {iface}: {source}")]
    Spawn {
        bin: String,
        iface: IfName,
        source: std::io::Error,
    },
    /// The responder runs but could not be recorded: it is stopped and the setup rolled back,
    /// since teardown could not find it.
    #[error("record the RA responder for {iface}: {message}")]
    Record { iface: IfName, message: String },
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: setsockopt reads `len` bytes of `v`, which outlives the call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    })
}

/// The classic BPF program attached to the socket: the data it sees starts at the ICMPv6
/// header; keep router solicitations (type 133), drop everything else.
const RS_ONLY: [libc::sock_filter; 4] = [
    // ldb [0]: the ICMPv6 type.
    libc::sock_filter {
        code: 0x30,
        jt: 0,
        jf: 0,
        k: 0,
    },
    // jeq #133, next, drop
    libc::sock_filter {
        code: 0x15,
        jt: 0,
        jf: 1,
        k: 133,
    },
    // ret #0xffff: keep (up to 64 KiB).
    libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0xffff,
    },
    // ret #0: drop.
    libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    },
];

/// Opens the responder's socket for `bridge`. Must run in the pod's network namespace.
pub fn open_socket(bridge: &IfName) -> Result<OwnedFd, RaError> {
    let err = |op| {
        let iface = bridge.clone();
        move |source| RaError::Socket { iface, op, source }
    };
    // SAFETY: socket takes integers; the fd is owned at once.
    let fd = crate::fd::owned(unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        )
    })
    .map_err(err("socket(AF_INET6, SOCK_RAW, ICMPV6)"))?;
    let name = std::ffi::CString::new(bridge.as_str()).unwrap_or_default();
    // SAFETY: if_nametoindex reads a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(err("if_nametoindex")(std::io::Error::last_os_error()));
    }
    let index = libc::c_int::try_from(ifindex).unwrap_or(0);
    // SO_BINDTODEVICE by index: only the bridge's traffic, and only out of the bridge.
    setopt(&fd, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, &index)
        .map_err(err("SO_BINDTOIFINDEX"))?;
    // Kernel-side type filter too (cheap, before the BPF program): router solicitations only.
    let mut types = [u32::MAX; 8];
    types[133 / 32] &= !(1 << (133 % 32));
    setopt(&fd, libc::IPPROTO_ICMPV6, 1, &types).map_err(err("ICMP6_FILTER"))?;
    let one: libc::c_int = 1;
    let hops: libc::c_int = 255;
    // RFC 4861: neighbour discovery is sent with hop limit 255, and a solicitation with any
    // other is dropped; the responder checks it from IPV6_HOPLIMIT.
    setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &one)
        .map_err(err("IPV6_RECVHOPLIMIT"))?;
    setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)
        .map_err(err("IPV6_MULTICAST_HOPS"))?;
    setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &hops)
        .map_err(err("IPV6_UNICAST_HOPS"))?;
    setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &index)
        .map_err(err("IPV6_MULTICAST_IF"))?;
    let zero: libc::c_int = 0;
    setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &zero)
        .map_err(err("IPV6_MULTICAST_LOOP"))?;
    // Solicitations go to all-routers (ff02::2).
    let group = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr {
            s6_addr: std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2).octets(),
        },
        ipv6mr_interface: ifindex,
    };
    setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &group)
        .map_err(err("IPV6_ADD_MEMBERSHIP ff02::2"))?;
    // The guard (table netbind, chain ra_guard) lets what carries this mark out only as a
    // router advertisement through the bridge; the holder cannot change the mark.
    let mark = netbind_plan::plan::RA_SOCKET_MARK;
    setopt(&fd, libc::SOL_SOCKET, libc::SO_MARK, &mark).map_err(err("SO_MARK"))?;
    let prog = libc::sock_fprog {
        len: u16::try_from(RS_ONLY.len()).unwrap_or(0),
        filter: RS_ONLY.as_ptr().cast_mut(),
    };
    setopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
        .map_err(err("SO_ATTACH_FILTER"))?;
    // From here on no one, root included, can detach or replace the filter on this socket.
    setopt(&fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER, &one).map_err(err("SO_LOCK_FILTER"))?;
    Ok(fd)
}

/// A responder as phase 1 started it (pid and start time).
pub type Responder = crate::process::Proc;

/// Starts `bin` (netbind-ra) with `socket` as fd 3, with nothing: every capability dropped
/// from the bounding set, no supplementary groups, uid/gid 65534, no_new_privs. Its stderr
/// goes to `log` (a file of the root-only state directory, opened here).
pub fn spawn(
    bin: &Path,
    socket: &OwnedFd,
    cfg: &RaConfig,
    log: File,
) -> Result<Responder, RaError> {
    let spawn_err = |source| RaError::Spawn {
        bin: bin.display().to_string(),
        iface: cfg.interface.clone(),
        source,
    };
    let config = serde_json::to_string(cfg).map_err(|e| spawn_err(std::io::Error::other(e)))?;
    let src = socket.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.args(["--fd", &RESPONDER_FD.to_string(), "--config", &config])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if src == RESPONDER_FD {
                check(libc::fcntl(src, libc::F_SETFD, 0))?;
            } else {
                check(libc::dup2(src, RESPONDER_FD))?;
            }
            // Its own session: not killed with the handler's terminal or process group.
            libc::setsid();
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(RESPONDER_ID, RESPONDER_ID, RESPONDER_ID))?;
            check(libc::setresuid(RESPONDER_ID, RESPONDER_ID, RESPONDER_ID))?;
            // The uid change cleared the permitted, effective and ambient sets; clear the
            // inheritable one too (lowering needs no capability).
            let header = [0x2008_0522u32, 0];
            let data = [0u32; 6];
            if libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(spawn_err)?;
    // Not waited for: it outlives phase 1 and is stopped by teardown.
    let pid = child.id();
    drop(child);
    Responder::of(pid)
        .ok_or_else(|| spawn_err(std::io::Error::other("exited at once (see its log)")))
}
