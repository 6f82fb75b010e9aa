//! The syscall filter of every VM-side process: the launcher (before its own allow-list
//! narrows it further), QEMU, and libvirt's session daemons. `netbind-vm-exec` installs it
//! between dropping to the VM uid and exec'ing the program, so QEMU runs under it from its
//! first instruction (QEMU's own `-sandbox` stacks on top).
//!
//! It is a deny-list, because QEMU and libvirt need most of the kernel: it refuses what a
//! process with no capability can still do and that reaches past its own VM. Namespace
//! creation first: a user namespace makes the caller root of a new network namespace, where
//! nf_tables, netfilter hooks and every other netns-local kernel path become reachable (the
//! kernel attack surface behind many local privilege escalations). `netbind audit` runs its
//! probes under this very filter (the "vm" column).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::seccomp::SeccompError;

/// One refused syscall, or one refused use of it, with its reason.
#[derive(Debug, Clone, Copy)]
pub struct Denied {
    pub name: &'static str,
    pub nr: i64,
    pub when: When,
    pub reason: &'static str,
}

/// Which calls of a denied syscall are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// `clone` with this flag set (flags are its first argument on x86_64).
    CloneFlag(u64),
    /// `setsockopt(fd, level, name, ...)` of this option.
    SockOpt(u64, u64),
}

const NS: &str = "a namespace of its own: a user namespace with a network namespace puts the \
                  whole netns-local kernel (nf_tables first) within reach of uid 107";

const MOUNTS: &str = "mounts: only possible in a namespace of its own, and refused with it";
const OTHERS: &str = "another process's memory: a VM process never debugs or reads another";

pub const DENY: &[Denied] = &[
    always("unshare", libc::SYS_unshare, NS),
    always("setns", libc::SYS_setns, NS),
    always("mount", libc::SYS_mount, MOUNTS),
    always("umount2", libc::SYS_umount2, MOUNTS),
    always("pivot_root", libc::SYS_pivot_root, MOUNTS),
    always("open_tree", libc::SYS_open_tree, MOUNTS),
    always("move_mount", libc::SYS_move_mount, MOUNTS),
    always("fsopen", libc::SYS_fsopen, MOUNTS),
    always("fsmount", libc::SYS_fsmount, MOUNTS),
    always("fspick", libc::SYS_fspick, MOUNTS),
    always("ptrace", libc::SYS_ptrace, OTHERS),
    always("process_vm_readv", libc::SYS_process_vm_readv, OTHERS),
    always("process_vm_writev", libc::SYS_process_vm_writev, OTHERS),
    always(
        "bpf",
        libc::SYS_bpf,
        "eBPF: verifier and maps are kernel attack surface; no VM process loads programs",
    ),
    always(
        "perf_event_open",
        libc::SYS_perf_event_open,
        "perf events: kernel attack surface and a side channel on other tenants",
    ),
    always(
        "keyctl",
        libc::SYS_keyctl,
        "the kernel keyring is not namespaced: keys would be shared with other pods",
    ),
    always("add_key", libc::SYS_add_key, "as keyctl"),
    always("request_key", libc::SYS_request_key, "as keyctl"),
    always(
        "userfaultfd",
        libc::SYS_userfaultfd,
        "stalls kernel page faults at will (an exploit primitive); only QEMU's post-copy \
         migration uses it, and netbind does not migrate",
    ),
    always(
        "io_uring_setup",
        libc::SYS_io_uring_setup,
        "io_uring runs its operations outside this filter's view; QEMU here uses thread-pool I/O",
    ),
    clone_flag("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    clone_flag("CLONE_NEWNET", libc::CLONE_NEWNET),
    clone_flag("CLONE_NEWNS", libc::CLONE_NEWNS),
    clone_flag("CLONE_NEWPID", libc::CLONE_NEWPID),
    clone_flag("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    clone_flag("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    clone_flag("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    sockopt("IPV6_FREEBIND", libc::IPPROTO_IPV6, libc::IPV6_FREEBIND),
    sockopt("IP_FREEBIND", libc::IPPROTO_IP, libc::IP_FREEBIND),
];

const fn always(name: &'static str, nr: i64, reason: &'static str) -> Denied {
    Denied {
        name,
        nr,
        when: When::Always,
        reason,
    }
}

const fn clone_flag(name: &'static str, flag: libc::c_int) -> Denied {
    Denied {
        name,
        nr: libc::SYS_clone,
        when: When::CloneFlag(flag as u64),
        reason: NS,
    }
}

const FREEBIND: &str = "sending from an address the pod does not own: with FREEBIND an IPv6 \
                        socket binds and sends from any source (IP_FREEBIND sets the same flag \
                        on an IPv6 socket), which needs no capability and leaves the pod \
                        un-NATed, past the guest's anti-spoofing chain (audit A7)";

const fn sockopt(name: &'static str, level: libc::c_int, opt: libc::c_int) -> Denied {
    Denied {
        name,
        nr: libc::SYS_setsockopt,
        when: When::SockOpt(level as u64, opt as u64),
        reason: FREEBIND,
    }
}

fn build(cause: impl ToString) -> SeccompError {
    SeccompError::Build(cause.to_string())
}

/// The filters, in the order they are installed: the deny-list (refusals as EPERM), then
/// `clone3` answered ENOSYS. clone3 passes its flags in memory, which seccomp cannot read, so
/// it cannot be checked for namespace flags; ENOSYS makes glibc fall back to `clone`, whose
/// flags the first filter checks (QEMU's own sandbox does the same).
pub fn programs() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(build)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for denied in DENY {
        let entry = rules.entry(denied.nr).or_default();
        let cond = |arg, len, op, v| SeccompCondition::new(arg, len, op, v).map_err(build);
        let conds = match denied.when {
            When::Always => continue,
            When::CloneFlag(flag) => vec![cond(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?],
            When::SockOpt(level, opt) => vec![
                cond(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, level)?,
                cond(2, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, opt)?,
            ],
        };
        entry.push(SeccompRule::new(conds).map_err(build)?);
    }
    let eperm = SeccompAction::Errno(libc::EPERM.unsigned_abs());
    let deny = SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch).map_err(build)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        arch,
    )
    .map_err(build)?;
    [deny, clone3]
        .into_iter()
        .map(|flag| BpfProgram::try_from(flag).map_err(build))
        .collect()
}

/// Installs the filters on the calling thread. The caller has no_new_privs set (which an
/// unprivileged filter requires) and no other thread.
pub fn install() -> Result<(), SeccompError> {
    for program in programs()? {
        seccompiler::apply_filter(&program).map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}
