//! The launcher's seccomp allow-list, installed once initialisation is over (hand-off read,
//! domain XML written, sockets bound and joined): from then on the process can only wait,
//! receive and send on its own DHCP sockets, log, and exit. Anything else kills it.
//!
//! Every entry carries its reason, and `tests/seccomp.rs` fails if any entry can be dropped
//! without breaking the launcher (Firecracker's "no redundant rules" rule). What this buys,
//! beyond the empty capability sets (see `netbind audit`): no new socket, no setsockopt (so no
//! IPV6_FREEBIND source forgery, attack A7), no open / ioctl (so no tap attach even though
//! the tap's owner is this uid, A19-A22), no write to any fd but stdout / stderr.
//!
//! The filter and the parsers must agree under any input: whatever the serving loop can do
//! after the filter, for any datagram, is in the list (the heap's `brk` among them), and the
//! tests prove it with hostile datagrams against the real launcher under its filter.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Which calls of a syscall are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    Any,
    /// First argument is one of the DHCP socket fds.
    SocketFds,
    /// First argument is stdout or stderr.
    StdoutStderr,
}

#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    pub nr: i64,
    pub args: Args,
    pub reason: &'static str,
}

pub const ALLOW: &[Entry] = &[
    Entry {
        name: "poll",
        nr: libc::SYS_poll,
        args: Args::Any,
        reason: "wait for DHCP datagrams on the bound sockets (and for SIGTERM)",
    },
    Entry {
        name: "recvmsg",
        nr: libc::SYS_recvmsg,
        args: Args::SocketFds,
        reason: "read a datagram with its IP_PKTINFO / IPV6_PKTINFO, on the DHCP sockets only",
    },
    Entry {
        name: "sendmsg",
        nr: libc::SYS_sendmsg,
        args: Args::SocketFds,
        reason: "answer on the interface the request came in on, on the DHCP sockets only",
    },
    Entry {
        name: "write",
        nr: libc::SYS_write,
        args: Args::StdoutStderr,
        reason: "log to stderr (and the ready line to stdout); no other fd",
    },
    Entry {
        name: "brk",
        nr: libc::SYS_brk,
        args: Args::Any,
        reason: "grow the heap: parsing a datagram allocates (its options), and a guest decides \
                 how many; each datagram's memory is freed before the next, and one datagram \
                 is at most the 4 KiB receive buffer, so the heap stays bounded. malloc asks \
                 for more than brk gives only above 128 KiB (mmap), which no datagram reaches",
    },
    Entry {
        name: "rt_sigreturn",
        nr: libc::SYS_rt_sigreturn,
        args: Args::Any,
        reason: "return from the SIGTERM handler",
    },
    Entry {
        name: "exit_group",
        nr: libc::SYS_exit_group,
        args: Args::Any,
        reason: "exit after SIGTERM or a fatal socket error",
    },
];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("build the seccomp filter: {0}")]
    Build(String),
    #[error("install the seccomp filter: {0}")]
    Install(String),
}

fn eq(arg: u8, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

fn fd_rules(fds: &[RawFd]) -> Result<Vec<SeccompRule>, SeccompError> {
    fds.iter()
        .map(|fd| {
            let fd = u64::try_from(*fd).map_err(|_| SeccompError::Build(format!("fd {fd}")))?;
            SeccompRule::new(vec![eq(0, fd)?]).map_err(|e| SeccompError::Build(e.to_string()))
        })
        .collect()
}

/// The filter for a launcher whose DHCP sockets are `socket_fds`. `skip` leaves one entry out
/// (tests prove each entry is needed); `on_violation` is KillProcess for the launcher and an
/// errno for the audit, which must observe the refusal instead of dying.
pub fn filter(
    socket_fds: &[RawFd],
    on_violation: SeccompAction,
    skip: Option<&str>,
) -> Result<BpfProgram, SeccompError> {
    filter_with(socket_fds, &[], on_violation, skip)
}

/// [`filter`] with `extra` entries on top of [`ALLOW`] (the RA responder's clock).
pub fn filter_with(
    socket_fds: &[RawFd],
    extra: &[Entry],
    on_violation: SeccompAction,
    skip: Option<&str>,
) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for entry in ALLOW
        .iter()
        .chain(extra)
        .filter(|entry| Some(entry.name) != skip)
    {
        let rule = match entry.args {
            Args::Any => vec![],
            Args::SocketFds => fd_rules(socket_fds)?,
            Args::StdoutStderr => fd_rules(&[1, 2])?,
        };
        // An empty rule list for a syscall means "allowed whatever the arguments"; for the fd
        // restricted ones an empty fd list must allow nothing, so leave them out.
        if rule.is_empty() && entry.args != Args::Any {
            continue;
        }
        rules.insert(entry.nr, rule);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|entry| SeccompError::Build(entry.to_string()))?;
    let filter = SeccompFilter::new(rules, on_violation, SeccompAction::Allow, arch)
        .map_err(|entry| SeccompError::Build(entry.to_string()))?;
    BpfProgram::try_from(filter).map_err(|entry| SeccompError::Build(entry.to_string()))
}

/// Installs the filter on the calling thread (the launcher is single-threaded; no_new_privs
/// is already set, which unprivileged seccomp requires).
pub fn install(prog: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(prog).map_err(|e| SeccompError::Install(e.to_string()))
}
