//! `netbind audit [POD] [--grant CAP,...] [--json]`: every attack of a compromised launcher or
//! QEMU (A1–A35), tried for real from inside the pod in the VM side's own sandbox.
//!
//! The probes run in `netbind-audit`, started in the pod's sandbox as the launcher and QEMU
//! are (uid/gid 107, no groups, every capability set empty unless `--grant`, no_new_privs,
//! PID and mount namespaces of its own), but without the syscall filter; each attack runs
//! three times: with the credentials and namespaces alone ("caps only"), under the VM
//! sandbox's filter that QEMU runs under ("vm"), and under that and the launcher's own
//! allow-list ("launcher"). The worse of "vm" and "launcher" decides the verdict. `--grant`
//! models a launcher as KubeVirt ran it: those capabilities and no netbind filter. The
//! cross-pod attacks (A33–A35) aim at another pod, made for the purpose (with a QEMU guest). Around the probes, netbind (root) watches the node side for the rogue DHCP
//! datagram (A9) and checks that the real launcher holds no tun fd (A22).

// The node-side listener speaks the C ABI (socket address sizes and families).
#![allow(clippy::cast_possible_truncation)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use netbind_audit::{ATTACKS, Observed, ProbeRun, Row, Verdict, verdict, verdict_as_qemu};
use netbind_handler::netns::{Netns, NetnsGuard};
use netbind_model::handoff::HANDOFF_FILE;
use serde::Serialize;

use crate::podsim;
use crate::up::{self, PodRecord, UpArgs, UpError};
use crate::vm;

mod cri;

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub pod: String,
    pub grants: Vec<String>,
    pub launcher_holds_tun_fd: bool,
    pub rogue_dhcp_reached_node: bool,
    pub environment: serde_json::Value,
    pub rows: Vec<Row>,
}

fn err(detail: impl Into<String>) -> UpError {
    UpError::Step {
        step: "audit",
        detail: detail.into(),
    }
}

/// Does process `pid` hold an fd on /dev/net/tun?
fn holds_tun(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("net/tun"))
            })
        })
        .unwrap_or(false)
}

/// What reached the node side during the audit.
#[derive(Debug, Clone, Copy, Default)]
struct NodeSeen {
    /// The rogue DHCP datagram (A9).
    dhcp: bool,
    /// The router advertisement (A36) and the neighbour advertisement (A37) sent on the RA
    /// socket.
    ra: bool,
    na: bool,
}

/// Listens on the node side (UDP :68, and ICMPv6, in the node namespace) for the audit's
/// packets, recognised by `marker`.
fn node_listener(node_ns: &str, marker: String, stop: &AtomicBool, bound: &AtomicBool) -> NodeSeen {
    let mut seen = NodeSeen::default();
    // This runs on its own thread (see the caller), which the guard keeps in the node
    // namespace until it returns.
    let Ok(node) = Netns::named(node_ns) else {
        return seen;
    };
    let Ok(_in_node) = NetnsGuard::enter(&node) else {
        return seen;
    };
    // SO_REUSEADDR: audits of several pods may listen at once; each broadcast reaches all.
    // SAFETY: plain socket calls on fds owned by the sockets below.
    let (dhcp, icmp) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return seen;
        }
        let sock = <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            std::ptr::from_ref(&one).cast(),
            4,
        );
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = 68u16.to_be();
        if libc::bind(
            fd,
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return seen;
        }
        let raw = libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        );
        if raw < 0 {
            return seen;
        }
        (
            sock,
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw),
        )
    };
    bound.store(true, Ordering::SeqCst);
    let _ = dhcp.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 2048];
    let mine =
        |data: &[u8], id: &str| String::from_utf8_lossy(data).contains(&format!("{marker}-{id}"));
    let mut look = |seen: &mut NodeSeen| {
        if let Ok(len) = dhcp.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..len]).contains(&marker)
        {
            seen.dhcp = true;
        }
        loop {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let len = unsafe {
                libc::recv(
                    std::os::fd::AsRawFd::as_raw_fd(&icmp),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(len) = usize::try_from(len) else { break };
            let data = &buf[..len];
            match data.first() {
                Some(134) if mine(data, "A36") => seen.ra = true,
                Some(136) if mine(data, "A37") => seen.na = true,
                _ => {}
            }
        }
    };
    while !stop.load(Ordering::SeqCst) {
        look(&mut seen);
    }
    // A last look for a packet still in flight.
    look(&mut seen);
    seen
}

/// The fd number the audit's probes find the RA socket at (3 and 4 are the sandbox's).
const AUDIT_RA_FD: i32 = 5;

/// `up` of a pod made for the audit (masquerade, on a pod network of `family`); `boot`: with
/// a QEMU guest.
fn ephemeral(
    name: &str,
    boot: Option<up::Boot>,
    family: podsim::IpFamily,
    runtime: up::Runtime,
) -> Result<(), UpError> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/vmi-masquerade.yaml");
    up::up(&UpArgs {
        file,
        boot,
        name: Some(name.to_string()),
        json: true,
        cluster: Default::default(),
        ip_family: Some(family),
        runtime,
        cri_socket: None,
        cni_run_dir: PathBuf::from("/run/netbind/cni"),
    })
    .map(|_| ())
}

pub fn audit(pod: Option<String>, grants: Vec<String>) -> Result<AuditReport, UpError> {
    let grants: Vec<String> = grants
        .iter()
        .flat_map(|g| g.split(','))
        .map(|g| g.trim().trim_start_matches("CAP_").to_uppercase())
        .filter(|g| !g.is_empty())
        .collect();
    let mut made = Vec::new();
    let result = (|| {
        // Without a pod, audit a fresh one made for the purpose (masquerade, no guest).
        let name = match pod {
            Some(found) => found,
            None => {
                let name = format!("audit-{}", std::process::id());
                made.push(name.clone());
                // Dual stack: the pod also has the router-advertisement socket to attack.
                ephemeral(&name, None, podsim::IpFamily::Dual, up::Runtime::Sim)?;
                name
            }
        };
        // The victim runs where the audited pod runs.
        let runtime = PodRecord::load(&name).map_or(up::Runtime::Sim, |r| r.runtime);
        // The cross-pod attacks need another pod: one made for the purpose (a pod of someone
        // else's could go away mid-audit), with a QEMU guest when the guest image is there.
        let victim = format!("audit-victim-{}", std::process::id());
        made.push(victim.clone());
        let boot = vm::GuestImage::locate().ok().map(|_| up::Boot::Qemu);
        ephemeral(&victim, boot, podsim::IpFamily::Ipv4, runtime)?;
        run(&name, &victim, &grants)
    })();
    for item in made.iter().rev() {
        let _ = up::down(item);
    }
    result
}

/// Reads the given lines of /proc/PID/status of a process root recorded.
fn process_status(process: Option<vm::Proc>) -> serde_json::Value {
    let Some(process) = process.filter(|process| process.alive()) else {
        return serde_json::Value::Null;
    };
    let keys = [
        "Name",
        "Uid",
        "Gid",
        "CapEff",
        "CapBnd",
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
        "NSpid",
    ];
    let mut status = netbind_audit::status_lines(&format!("/proc/{}/status", process.pid), &keys);
    status.insert("pid".into(), serde_json::json!(process.pid));
    serde_json::Value::Object(status)
}

/// The VM process of a pod: QEMU (the sandbox's own program, or what libvirt started in the
/// pod's network namespace), if it runs one.
fn qemu_of(rec: &PodRecord) -> Option<vm::Proc> {
    match rec.boot? {
        up::Boot::Qemu => rec.vm.and_then(vm::sandbox_program),
        up::Boot::Libvirt => vm::netns_processes(&rec.netns, "qemu").into_iter().next(),
    }
}

fn target(proc: vm::Proc) -> serde_json::Value {
    serde_json::json!({ "pid": proc.pid, "start": proc.start })
}

fn run(name: &str, victim: &str, grants: &[String]) -> Result<AuditReport, UpError> {
    let load = |n: &str| {
        PodRecord::load(n).ok_or_else(|| {
            err(format!(
                "no pod named {n} (netbind up, or netbind audit without a pod)"
            ))
        })
    };
    let rec = load(name)?;
    let vrec = load(victim)?;
    if let (Some(pod), Some(other)) = (&rec.cri, &vrec.cri) {
        return cri::run(&rec, pod, other, grants);
    }
    let dir = rec.dir();
    let handoff = vm::read_handoff(&dir.join("handoff")).map_err(err)?;
    let first = handoff
        .interfaces
        .first()
        .ok_or_else(|| err("the pod has no interface"))?;
    let running = |r: &PodRecord| {
        r.launcher
            .and_then(vm::sandbox_program)
            .ok_or_else(|| err(format!("pod {}'s launcher is not running", r.name)))
    };
    let launcher = running(&rec)?;
    let vlauncher = running(&vrec)?;
    let vqemu = qemu_of(&vrec);
    let marker = format!("NETBIND-AUDIT-A9-{}", std::process::id());
    let mut ctx = serde_json::json!({
        "pod_iface": first.pod_interface.to_string(),
        "bridge": first.bridge.to_string(),
        "tap": first.tap.to_string(),
        "pod_ip": rec.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
        "launcher_pid": launcher.pid,
        "marker": marker,
        "victim": {
            "pod": victim,
            "launcher": target(vlauncher),
            "vm": target(vqemu.unwrap_or(vlauncher)),
            "vm_is_qemu": vqemu.is_some(),
            "handoff": vrec.dir().join("handoff").join(HANDOFF_FILE),
        },
    });
    let bin = up::sibling("netbind-audit")?;
    let vm_exec = up::sibling("netbind-vm-exec")?;
    let layers = if grants.is_empty() {
        "caps,vm,launcher"
    } else {
        "caps"
    };
    // An IPv6 pod's RA socket, opened as phase 1 opens it for the responder.
    let ra_socket = if rec.family.v6() {
        let netns = rec.netns.clone();
        let bridge = first.bridge.clone();
        let opened = Netns::named(&netns)
            .and_then(|n| n.run(|| netbind_handler::ra::open_socket(&bridge)))
            .map_err(|error| err(error.to_string()))?
            .map_err(|error| err(error.to_string()))?;
        Some(opened)
    } else {
        None
    };
    if let (Some(_), Some(context)) = (&ra_socket, ctx.as_object_mut()) {
        context.insert("ra_fd".into(), serde_json::json!(AUDIT_RA_FD));
    }
    let tun = podsim::tun_node()?;
    let sandbox = vm::Sandbox {
        netns: &rec.netns,
        tun: &tun,
        pod_dir: &dir,
        vm_exec: &vm_exec,
    };
    let stop = AtomicBool::new(false);
    let bound = AtomicBool::new(false);
    let (out, reached) = std::thread::scope(|scope| {
        let listener =
            scope.spawn(|| node_listener(podsim::NODE_NS, marker.clone(), &stop, &bound));
        // The rogue datagram must not go out before the listener is bound.
        let started = std::time::Instant::now();
        while !bound.load(Ordering::SeqCst)
            && !listener.is_finished()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // In the pod's sandbox, without the VM filter: the probes add each layer themselves.
        let mut cmd = sandbox.command_with(
            grants,
            false,
            None,
            &bin.display().to_string(),
            &[
                "--ctx".into(),
                ctx.to_string(),
                "--layers".into(),
                layers.into(),
            ],
        );
        if let Some(sock) = &ra_socket {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let src = sock.as_raw_fd();
            // SAFETY: dup2 and fcntl between fork and exec are async-signal-safe; the copy
            // (not close-on-exec) is what the probes find, through every exec of the sandbox.
            unsafe {
                cmd.pre_exec(move || {
                    // dup2 onto itself keeps close-on-exec: when the socket already has the
                    // number, clear the flag instead.
                    let rc = if src == AUDIT_RA_FD {
                        libc::fcntl(src, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(src, AUDIT_RA_FD)
                    };
                    if rc < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let out = cmd.output();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        (out, listener.join().unwrap_or_default())
    });
    let out = out.map_err(|error| err(error.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "netbind-audit failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let run: ProbeRun = serde_json::from_slice(&out.stdout)
        .map_err(|error| err(format!("netbind-audit output: {error}")))?;
    let held = holds_tun(launcher.pid);
    let rows = verdict_rows(&run, grants, reached, held)?;
    let mut environment = run.environment;
    if let Some(fields) = environment.as_object_mut() {
        fields.insert("launcher_process".into(), process_status(Some(launcher)));
        fields.insert("qemu_process".into(), process_status(qemu_of(&rec)));
        fields.insert(
            "victim".into(),
            serde_json::json!({
                "pod": victim,
                "launcher": process_status(Some(vlauncher)),
                "qemu": process_status(vqemu),
            }),
        );
    }
    Ok(AuditReport {
        pod: name.into(),
        grants: grants.to_vec(),
        launcher_holds_tun_fd: held,
        rogue_dhcp_reached_node: reached.dhcp,
        environment,
        rows,
    })
}

/// The verdict of every attack from the probes' observations and what root saw around them.
fn verdict_rows(
    run: &ProbeRun,
    grants: &[String],
    reached: NodeSeen,
    held: bool,
) -> Result<Vec<Row>, UpError> {
    let mut rows = Vec::new();
    for attack in ATTACKS {
        let result = run
            .results
            .iter()
            .find(|result| result.id == attack.id)
            .ok_or_else(|| err(format!("netbind-audit reported nothing for {}", attack.id)))?;
        let caps = result.caps.clone();
        let (vm_layer, launcher_layer) = (result.vm.clone(), result.launcher.clone());
        let reached = match attack.id {
            "A9" => Some(reached.dhcp),
            "A36" => Some(reached.ra),
            "A37" => Some(reached.na),
            "A22" => Some(held),
            _ => None,
        };
        // Both the launcher and QEMU are attackers: the worse of their layers decides (the
        // capabilities alone when --grant models KubeVirt's launcher without filters).
        let verdicts: Vec<Verdict> = match (&vm_layer, &launcher_layer) {
            (None, None) => vec![verdict(attack, &caps, grants, reached)],
            _ => vm_layer
                .iter()
                .map(|o| verdict_as_qemu(attack, o, grants, reached))
                .chain(
                    launcher_layer
                        .iter()
                        .map(|o| verdict(attack, o, grants, reached)),
                )
                .collect(),
        };
        let verdict = verdicts
            .into_iter()
            .max_by_key(|v| match v {
                Verdict::Blocked => 0,
                Verdict::AllowedAsExpected => 1,
                Verdict::Exposed => 2,
            })
            .unwrap_or(Verdict::Blocked);
        let text = |o: Option<Observed>| o.map_or_else(|| "-".into(), |o| o.text());
        rows.push(Row {
            id: attack.id.into(),
            attack: attack.name.into(),
            needs: attack.needs.unwrap_or("-").into(),
            expected: attack.expect.into(),
            caps_only: caps.text(),
            vm: text(vm_layer),
            launcher: text(launcher_layer),
            verdict,
        });
    }
    Ok(rows)
}

pub fn print_table(report: &AuditReport) {
    println!(
        "netbind audit of pod {} ({}):",
        report.pod,
        if report.grants.is_empty() {
            "the launcher as it runs".to_string()
        } else {
            format!(
                "granted {} — a launcher as KubeVirt ran it, no seccomp",
                report.grants.join(",")
            )
        }
    );
    println!(
        "{:<4} {:<46} {:<10} {:<36} {:<34} {:<16} {:<16} VERDICT",
        "ID", "ATTACK", "NEEDS", "EXPECTED WITHOUT IT", "CAPS ONLY", "VM (QEMU)", "LAUNCHER"
    );
    for row in &report.rows {
        println!(
            "{:<4} {:<46} {:<10} {:<36} {:<34} {:<16} {:<16} {}",
            row.id,
            row.attack,
            row.needs,
            row.expected,
            trunc(&row.caps_only, 34),
            trunc(&row.vm, 16),
            trunc(&row.launcher, 16),
            row.verdict.text()
        );
    }
    let exposed = report
        .rows
        .iter()
        .filter(|x| x.verdict == Verdict::Exposed)
        .count();
    println!(
        "launcher holds a tun fd: {}; rogue DHCP reached the node: {}; EXPOSED: {exposed}",
        report.launcher_holds_tun_fd, report.rogue_dhcp_reached_node
    );
    println!("environment: {}", report.environment);
}

fn trunc(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.into()
    } else {
        text.chars().take(max - 1).collect::<String>() + "…"
    }
}
