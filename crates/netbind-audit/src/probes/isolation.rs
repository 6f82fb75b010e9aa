//! Attacks on the sandbox itself and on other pods: namespaces, mounts, ptrace, eBPF,
//! capabilities, nf_tables in a user namespace, cross-pod signals, ptrace and reads
//! (A23–A26, A28, A29, A32–A35).

use super::*;

/// Whether `t` is a process this one can name: a process with that pid, seen from here, that
/// started when the target did. (Another PID namespace numbers its own processes; a local pid
/// that happens to equal the target's is another process.)
pub(super) fn nameable(target: &Target) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", target.pid)) else {
        return false;
    };
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(19))
        .and_then(|v| v.parse::<u64>().ok())
        == Some(target.start)
}

/// A32: a user namespace with a network namespace, then one nf_tables transaction inside it
/// (NEWTABLE between BATCH_BEGIN and BATCH_END on NETLINK_NETFILTER).
pub(super) fn userns_nftables() -> Result<(), i32> {
    // SAFETY: unshare takes flags only (this probe runs in a forked child).
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) })?;
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    let msg = |ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]| {
        let len = 16 + 4 + attrs.len();
        let mut message = Vec::with_capacity(len);
        message.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
        message.extend_from_slice(&ty.to_ne_bytes());
        message.extend_from_slice(&flags.to_ne_bytes());
        message.extend_from_slice(&seq.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes());
        message.extend_from_slice(&[family, 0]);
        message.extend_from_slice(&res_id.to_be_bytes());
        message.extend_from_slice(attrs);
        message
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
    let received = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let received = usize::try_from(received).map_err(|_| errno())?;
    // The first answer is NLMSG_ERROR for the NEWTABLE: errno 0 is its ACK.
    if received >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
        let errno = i32::from_ne_bytes(buf[16..20].try_into().unwrap_or([0; 4]));
        return if errno == 0 { Ok(()) } else { Err(-errno) };
    }
    Err(libc::EIO)
}

pub(super) fn a23(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    // SAFETY: unshare takes flags only (this probe runs in a forked child).
    let result = check(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(|_| ());
    obs(result, "new network namespace")
}

pub(super) fn a24(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    // SAFETY: unshare takes flags only, and this probe runs in a forked child.
    match check(unsafe { libc::unshare(libc::CLONE_NEWUSER) }) {
        Err(err) => Observed::Errno(err),
        Ok(_) => obs(
            udp().and_then(|s| {
                let mut req = ifreq(&pod.pod_iface);
                ioctl(&s, libc::SIOCGIFMTU, &mut req)?;
                ioctl(&s, libc::SIOCSIFMTU, &mut req)
            }),
            "pod eth0 changed from a user namespace",
        ),
    }
}

pub(super) fn a25(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    let (source, target, fstype) = (
        CString::new("none").unwrap_or_default(),
        CString::new("/tmp").unwrap_or_default(),
        CString::new("tmpfs").unwrap_or_default(),
    );
    // SAFETY: mount with NUL-terminated strings.
    obs(
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        })
        .map(|_| ()),
        "tmpfs mounted",
    )
}

pub(super) fn a26(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    let pid = libc::pid_t::try_from(pod.launcher_pid).unwrap_or(0);
    // SAFETY: ptrace attach / detach on a pid; no memory is passed.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
    if rc < 0 {
        Observed::Errno(errno())
    } else {
        // SAFETY: ptrace detach of the process just attached; no memory is passed.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
        ok("attached to the launcher")
    }
}

pub(super) fn a28(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
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
        (Err(errno), _) => Observed::Errno(errno),
    }
}

pub(super) fn a29(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
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
    let hdr = Hdr(0x2008_0522, 0);
    let data = [Data(1 << 21, 1 << 21, 0), Data(0, 0, 0)];
    // SAFETY: capset reads a v3 header and two data words.
    let rc = unsafe { libc::syscall(libc::SYS_capset, std::ptr::from_ref(&hdr), data.as_ptr()) };
    if rc == 0 {
        ok("CAP_SYS_ADMIN raised")
    } else {
        Observed::Errno(if e1 == 0 { errno() } else { e1 })
    }
}

pub(super) fn a32(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        userns_nftables(),
        "nf_tables table created in a private user + network namespace",
    )
}

pub(super) fn a33(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    match &pod.victim {
        None => Observed::Errno(libc::ENOENT),
        Some(victim) if !nameable(&victim.launcher) => Observed::Errno(libc::ESRCH),
        Some(victim) => {
            // Signal 0: the permission check of SIGKILL, without the kill.
            let pid = libc::pid_t::try_from(victim.launcher.pid).unwrap_or(0);
            // SAFETY: kill with a pid and signal 0.
            obs(
                check(unsafe { libc::kill(pid, 0) }).map(|_| ()),
                &format!("may signal pod {}'s launcher", victim.pod),
            )
        }
    }
}

pub(super) fn a34(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    match &pod.victim {
        None => Observed::Errno(libc::ENOENT),
        Some(victim) if !nameable(&victim.vm) => Observed::Errno(libc::ESRCH),
        Some(victim) => {
            let pid = libc::pid_t::try_from(victim.vm.pid).unwrap_or(0);
            // PTRACE_SEIZE does not stop the tracee; the probe's exit detaches it.
            // SAFETY: ptrace with a pid and no memory.
            let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
            let what = if victim.vm_is_qemu {
                "QEMU"
            } else {
                "launcher"
            };
            obs(
                check(i32::try_from(rc).unwrap_or(-1)).map(|_| ()),
                &format!("traced pod {}'s {what} (its guest's memory)", victim.pod),
            )
        }
    }
}

pub(super) fn a35(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    match &pod.victim {
        None => Observed::Errno(libc::ENOENT),
        Some(victim) => match std::fs::read(&victim.handoff) {
            Ok(bytes) => ok(&format!(
                "read {} bytes of pod {}'s hand-off record",
                bytes.len(),
                victim.pod
            )),
            Err(err) => Observed::Errno(err.raw_os_error().unwrap_or(libc::EIO)),
        },
    }
}
