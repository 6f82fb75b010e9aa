//! `netbind-audit --ctx JSON [--layers caps,vm,launcher]`: run every attack from inside the
//! pod, with whatever credentials and namespaces this process was started with (`netbind
//! audit` starts it in the pod's sandbox, as the launcher and QEMU are started, but without
//! the VM syscall filter). Each attack runs in a forked child per layer: `caps` as is; `vm`
//! under the VM sandbox's filter (what QEMU runs under); `launcher` under that filter and the
//! launcher's own allow-list (refusals as EPERM instead of a kill, so they can be observed).
//! Prints one JSON document on stdout.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use netbind_audit::probes::{self, PodUnderTest};
use netbind_audit::{ATTACKS, Observed, ProbeResult, ProbeRun};
use serde_json::json;

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// The values that change outcomes, recorded with the report.
fn environment() -> serde_json::Value {
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/proc/sys"))
        .and_then(|l| l.split_whitespace().nth(5).map(String::from))
        .unwrap_or_else(|| "not a separate mount".into());
    let tun = std::fs::metadata("/dev/net/tun")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{:o}", m.mode() & 0o7777)
        })
        .unwrap_or_else(|e| format!("absent ({e})"));
    let sys = |p: &str| read(&format!("/proc/sys/{p}"));
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "sysctls": {
            "net.ipv4.ip_unprivileged_port_start": sys("net/ipv4/ip_unprivileged_port_start"),
            "net.ipv4.ping_group_range": sys("net/ipv4/ping_group_range"),
            "net.ipv6.conf.all.disable_ipv6": sys("net/ipv6/conf/all/disable_ipv6"),
            "net.ipv6.ip_nonlocal_bind": sys("net/ipv6/ip_nonlocal_bind"),
            "kernel.unprivileged_bpf_disabled": sys("kernel/unprivileged_bpf_disabled"),
            "user.max_user_namespaces": sys("user/max_user_namespaces"),
            "kernel.yama.ptrace_scope": sys("kernel/yama/ptrace_scope"),
        },
        "proc_sys_mount": mount,
        "dev_net_tun_mode": tun,
        "audit_process": netbind_audit::status_lines("/proc/self/status", &["Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "NSpid"]),
    })
}

/// Which filters a probe runs under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Caps,
    Vm,
    Launcher,
}

/// Runs one attack in a child, under the filters of `layer`.
fn probe(id: &str, pod: &PodUnderTest, layer: Layer) -> Observed {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Observed::Errno(libc::EIO);
    }
    // SAFETY: both fds were just created.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fork in a single-threaded process; the child only runs the probe and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The result goes out on fd 1, which the launcher's filter lets it write.
        // SAFETY: dup2 onto stdout in the child.
        unsafe { libc::dup2(wr.as_raw_fd(), 1) };
        let mut out = String::with_capacity(16 * 1024);
        let pre = probes::prepare(id, pod);
        if layer != Layer::Caps && netbind_launcher::sandbox::install().is_err() {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(3) };
        }
        if layer == Layer::Launcher {
            let prog = netbind_launcher::seccomp::filter(
                &pre.raw(),
                seccompiler::SeccompAction::Errno(libc::EPERM as u32),
                None,
            );
            let installed = prog
                .map(|p| netbind_launcher::seccomp::install(&p).is_ok())
                .unwrap_or(false);
            if !installed {
                // SAFETY: leaving the child.
                unsafe { libc::_exit(3) };
            }
        }
        let observed = probes::run(id, pod, &pre);
        match observed {
            Observed::Ok(detail) => {
                out.push_str("ok:");
                out.push_str(&detail);
            }
            Observed::Errno(errno) => {
                out.push_str("errno:");
                out.push_str(&errno.to_string());
            }
        }
        // SAFETY: write the result to fd 1 and leave without running any destructor.
        unsafe {
            libc::write(1, out.as_ptr().cast(), out.len());
            libc::_exit(0)
        }
    }
    drop(wr);
    let mut text = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut text);
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    match text.split_once(':') {
        Some(("ok", detail)) => Observed::Ok(detail.to_string()),
        Some(("errno", errno)) => Observed::Errno(errno.parse().unwrap_or(libc::EIO)),
        // The child stopped before reporting: the filter refused something it needed.
        _ => Observed::Errno(libc::EPERM),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(ctx) = get("--ctx") else {
        eprintln!("usage: netbind-audit --ctx JSON [--layers caps,vm,launcher]");
        return ExitCode::from(2);
    };
    let pod: PodUnderTest = match serde_json::from_str(&ctx) {
        Ok(pod) => pod,
        Err(err) => {
            eprintln!("netbind-audit: --ctx: {err}");
            return ExitCode::from(2);
        }
    };
    let layers = get("--layers").unwrap_or_else(|| "caps,vm,launcher".into());
    let with = |l: &str| layers.split(',').any(|x| x == l);
    let (with_vm, with_launcher) = (with("vm"), with("launcher"));
    let results = ATTACKS
        .iter()
        .map(|a| ProbeResult {
            id: a.id.into(),
            caps: probe(a.id, &pod, Layer::Caps),
            vm: with_vm.then(|| probe(a.id, &pod, Layer::Vm)),
            launcher: with_launcher.then(|| probe(a.id, &pod, Layer::Launcher)),
        })
        .collect();
    let run = ProbeRun {
        environment: environment(),
        results,
    };
    match serde_json::to_string(&run) {
        Ok(doc) => {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{doc}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("netbind-audit: serialise the results: {err}");
            ExitCode::FAILURE
        }
    }
}
