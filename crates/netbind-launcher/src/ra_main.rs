//! `netbind-ra --fd N --config JSON`: the router-advertisement responder of one masquerade
//! bridge, run with no privilege. Phase 1 (root) opens its socket in the pod's network
//! namespace and hands it over as fd N: a raw ICMPv6 socket bound to the bridge (rebinding
//! needs CAP_NET_RAW), in the all-routers group, with hop limits 255 and a locked socket
//! filter that admits router solicitations only. This process then drops nothing (it starts
//! with nothing: it checks), installs the launcher's syscall allow-list (poll, recvmsg and
//! sendmsg on this socket only, write to stderr, brk, clock_gettime, exit) and sends what the
//! plan says, when RFC 4861 says.

use std::net::Ipv6Addr;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use netbind_contract::ra::RaConfig;
use netbind_launcher::ra::{Rng, Schedule, advertisement, check_solicitation};
use netbind_launcher::seccomp::{self, Args, Entry};
use netbind_launcher::{privilege, serve};

#[derive(Parser, Debug)]
#[command(
    name = "netbind-ra",
    version,
    about = "netbind: router advertisements, unprivileged"
)]
struct Cli {
    /// The raw ICMPv6 socket phase 1 opened (bound to the bridge, filter locked).
    #[arg(long)]
    fd: RawFd,
    /// The plan's advertisement (JSON of `RaConfig`).
    #[arg(long)]
    config: String,
}

/// Solicitations (answered or rejected) logged one by one; after that only every this many:
/// what a guest sends cannot fill the disk.
const LOG_FIRST: u64 = 16;
const LOG_EVERY: u64 = 4096;

const CLOCK: Entry = Entry {
    name: "clock_gettime",
    nr: libc::SYS_clock_gettime,
    args: Args::Any,
    reason: "the advertisement timers read the monotonic clock (normally through the vDSO, \
             with no syscall; this is its fallback)",
};

fn sockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// The socket must be what phase 1 promised: raw ICMPv6, bound to an interface.
fn check_socket(fd: RawFd) -> Result<u32, String> {
    let is = |level, name| sockopt_int(fd, level, name);
    if is(libc::SOL_SOCKET, libc::SO_DOMAIN) != Some(libc::AF_INET6)
        || is(libc::SOL_SOCKET, libc::SO_TYPE) != Some(libc::SOCK_RAW)
        || is(libc::SOL_SOCKET, libc::SO_PROTOCOL) != Some(libc::IPPROTO_ICMPV6)
    {
        return Err(format!("fd {fd} is not a raw ICMPv6 socket"));
    }
    match is(libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX) {
        Some(index) if index > 0 => u32::try_from(index).map_err(|e| e.to_string()),
        _ => Err(format!("fd {fd} is not bound to an interface")),
    }
}

fn seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `b`.
    unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    u64::from_ne_bytes(buf)
}

/// One datagram off the socket: the ICMPv6 message length, its hop limit, its source.
fn receive(fd: RawFd, buf: &mut [u8]) -> Option<(usize, Option<u8>, Ipv6Addr)> {
    // SAFETY: plain data for recvmsg, all alive for the call; the control buffer is aligned
    // for cmsghdr and large enough for one IPV6_HOPLIMIT.
    unsafe {
        let mut from: libc::sockaddr_in6 = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = std::ptr::from_mut(&mut from).cast();
        msg.msg_namelen =
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in6>()).ok()?;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let len = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        let len = usize::try_from(len).ok()?;
        let mut hop = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IPV6 && (*cmsg).cmsg_type == libc::IPV6_HOPLIMIT
            {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                hop = u8::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Some((
            len.min(buf.len()),
            hop,
            Ipv6Addr::from(from.sin6_addr.s6_addr),
        ))
    }
}

/// Sends `msg` to all nodes (ff02::1) on interface `ifindex`.
fn send_all_nodes(fd: RawFd, ifindex: u32, msg: &[u8]) -> Result<(), std::io::Error> {
    // SAFETY: plain data for sendmsg, all alive for the call.
    let rc = unsafe {
        let mut to: libc::sockaddr_in6 = std::mem::zeroed();
        to.sin6_family = libc::sa_family_t::try_from(libc::AF_INET6).unwrap_or(10);
        to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        to.sin6_scope_id = ifindex;
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_name = std::ptr::from_mut(&mut to).cast();
        header.msg_namelen =
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in6>()).unwrap_or(0);
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        libc::sendmsg(fd, &header, 0)
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn leave(code: i32) -> ! {
    // exit_group alone: no runtime teardown, which the allow-list would refuse.
    // SAFETY: _exit ends the process.
    unsafe { libc::_exit(code) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = privilege::check().and_then(|()| privilege::set_nondumpable()) {
        eprintln!("netbind-ra: {err}");
        return ExitCode::from(3);
    }
    let cfg: RaConfig = match serde_json::from_str(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("netbind-ra: --config: {err}");
            return ExitCode::from(2);
        }
    };
    let ifindex = match check_socket(cli.fd) {
        Ok(index) => index,
        Err(err) => {
            eprintln!("netbind-ra: --fd: {err}");
            return ExitCode::from(2);
        }
    };
    let ra = advertisement(&cfg);
    let mut schedule = Schedule::new(&cfg, Instant::now(), Rng::new(seed()));
    serve::install_stop_handler();
    let prog = match seccomp::filter_with(
        &[cli.fd],
        &[CLOCK],
        seccompiler::SeccompAction::KillProcess,
        None,
    ) {
        Ok(program) => program,
        Err(err) => {
            eprintln!("netbind-ra: {err}");
            return ExitCode::from(1);
        }
    };
    // SAFETY: malloc_trim only returns free memory at the top of the heap to the kernel.
    unsafe { libc::malloc_trim(0) };
    if let Err(err) = seccomp::install(&prog) {
        eprintln!("netbind-ra: {err}");
        return ExitCode::from(1);
    }
    eprintln!(
        "netbind-ra: advertising {} on {} (ifindex {ifindex}), no capability, filter on",
        cfg.prefix, cfg.interface
    );
    let mut buf = [0u8; 1500];
    let (mut sent, mut rejected, mut answered, mut send_errors) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let wait = schedule.wait(Instant::now()).min(Duration::from_secs(3600));
        let mut pfd = libc::pollfd {
            fd: cli.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd.
        let ready = unsafe {
            libc::poll(
                &mut pfd,
                1,
                i32::try_from(wait.as_millis()).unwrap_or(i32::MAX),
            )
        };
        if serve::STOP.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("netbind-ra: stopping on signal ({sent} sent, {rejected} rejected)");
            leave(0);
        }
        if ready > 0 && pfd.revents & libc::POLLIN != 0 {
            while let Some((len, hop, from)) = receive(cli.fd, &mut buf) {
                match check_solicitation(&buf[..len], hop, from.is_unspecified()) {
                    Ok(()) => {
                        answered += 1;
                        if answered <= LOG_FIRST || answered % LOG_EVERY == 0 {
                            eprintln!("netbind-ra: solicitation #{answered} from {from}");
                        }
                        schedule.solicited(Instant::now());
                    }
                    Err(err) => {
                        rejected += 1;
                        if rejected <= LOG_FIRST || rejected % LOG_EVERY == 0 {
                            eprintln!(
                                "netbind-ra: ignored datagram #{rejected} from {from}: {err}"
                            );
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= schedule.next() {
            match send_all_nodes(cli.fd, ifindex, &ra) {
                Ok(()) => {
                    sent += 1;
                    schedule.sent(now);
                }
                Err(err) => {
                    send_errors += 1;
                    if send_errors <= LOG_FIRST || send_errors % LOG_EVERY == 0 {
                        eprintln!("netbind-ra: send #{send_errors} failed: {err} (retrying)");
                    }
                    schedule.retry(now);
                }
            }
        }
    }
}
