//! `netbind audit [POD] [--grant CAP,...] [--json]`: every attack of a compromised launcher
//! (A1–A31), tried for real from inside the pod with the launcher's exact credentials.
//!
//! The probes run in `netbind-audit`, started exactly as the launcher is (uid/gid 107, no
//! groups, every capability set empty unless `--grant`, no_new_privs, the same mount
//! namespace); each attack runs twice, with the credentials alone ("caps only") and under the
//! launcher's own seccomp filter ("launcher", which decides the verdict). `--grant` models a
//! launcher as KubeVirt ran it: those capabilities and no netbind filter. Around the probes,
//! netbind (root) watches the node side for the rogue DHCP datagram (A9) and checks that the
//! real launcher holds no tun fd (A22).

// The node-side listener speaks the C ABI (socket address sizes and families).
#![allow(clippy::cast_possible_truncation)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use netbind_audit::{ATTACKS, Observed, Row, Verdict, verdict};
use netbind_model::handoff::{HANDOFF_FILE, Handoff};
use serde::Serialize;

use crate::podsim;
use crate::up::{self, PodRecord, UpArgs, UpError};
use crate::vm;

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

/// Listens on the node side (UDP :68 in the node namespace) for datagrams carrying `marker`.
fn node_listener(marker: String, stop: &AtomicBool, bound: &AtomicBool) -> bool {
    // This runs on its own thread (see the caller).
    if podsim::enter_netns(podsim::NODE_NS).is_err() {
        return false;
    }
    // SO_REUSEADDR: audits of several pods may listen at once; each broadcast reaches all.
    // SAFETY: plain socket calls on a fd owned by the UdpSocket below.
    let sock = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
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
            return false;
        }
        sock
    };
    bound.store(true, Ordering::SeqCst);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 2048];
    let mut seen = false;
    while !stop.load(Ordering::SeqCst) {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains(&marker)
        {
            seen = true;
        }
    }
    // A last look for a datagram still in flight.
    if let Ok(n) = sock.recv(&mut buf) {
        seen |= String::from_utf8_lossy(&buf[..n]).contains(&marker);
    }
    seen
}

pub fn audit(pod: Option<String>, grants: Vec<String>) -> Result<AuditReport, UpError> {
    let grants: Vec<String> = grants
        .iter()
        .flat_map(|g| g.split(','))
        .map(|g| g.trim().trim_start_matches("CAP_").to_uppercase())
        .filter(|g| !g.is_empty())
        .collect();
    // Without a pod, audit a fresh one made for the purpose (masquerade, no guest).
    let (name, ephemeral) = match pod {
        Some(p) => (p, false),
        None => {
            let name = format!("audit-{}", std::process::id());
            let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/vmi-masquerade.yaml");
            up::up(&UpArgs {
                file,
                boot: None,
                name: Some(name.clone()),
                json: true,
                cluster: Default::default(),
            })?;
            (name, true)
        }
    };
    let result = run(&name, &grants);
    if ephemeral {
        let _ = up::down(&name);
    }
    result
}

fn run(name: &str, grants: &[String]) -> Result<AuditReport, UpError> {
    let rec = PodRecord::load(name).ok_or_else(|| {
        err(format!(
            "no pod named {name} (netbind up, or netbind audit without a pod)"
        ))
    })?;
    let dir = podsim::run_dir().join("pods").join(name);
    let handoff = Handoff::from_json(
        &std::fs::read(dir.join("handoff").join(HANDOFF_FILE)).unwrap_or_default(),
    )
    .map_err(|e| err(e.to_string()))?;
    let first = handoff
        .interfaces
        .first()
        .ok_or_else(|| err("the pod has no interface"))?;
    let launcher_pid = rec
        .launcher
        .filter(|p| p.alive())
        .map(|p| p.pid)
        .ok_or_else(|| err("the pod's launcher is not running"))?;
    let marker = format!("NETBIND-AUDIT-A9-{}", std::process::id());
    let ctx = serde_json::json!({
        "pod_iface": first.pod_interface.to_string(),
        "bridge": first.bridge.to_string(),
        "tap": first.tap.to_string(),
        "pod_ip": rec.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
        "launcher_pid": launcher_pid,
        "marker": marker,
    });
    let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let bin = exe
        .parent()
        .map(|d| d.join("netbind-audit"))
        .filter(|p| p.is_file())
        .ok_or_else(|| err("netbind-audit not found next to netbind (cargo build --bins)"))?;
    let layers = if grants.is_empty() {
        "caps,launcher"
    } else {
        "caps"
    };
    let tun = podsim::tun_node()?;
    let stop = AtomicBool::new(false);
    let bound = AtomicBool::new(false);
    let (out, reached) = std::thread::scope(|s| {
        let listener = s.spawn(|| node_listener(marker.clone(), &stop, &bound));
        // The rogue datagram must not go out before the listener is bound.
        let t = std::time::Instant::now();
        while !bound.load(Ordering::SeqCst)
            && !listener.is_finished()
            && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = vm::unprivileged_with(
            &rec.netns,
            &tun,
            grants,
            None,
            &bin.display().to_string(),
            &[
                "--ctx".into(),
                ctx.to_string(),
                "--layers".into(),
                layers.into(),
            ],
        )
        .output();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        (out, listener.join().unwrap_or(false))
    });
    let out = out.map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "netbind-audit failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| err(format!("netbind-audit output: {e}")))?;
    let held = holds_tun(launcher_pid);
    let results = doc["results"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for a in ATTACKS {
        let r = results
            .iter()
            .find(|r| r["id"] == a.id)
            .cloned()
            .unwrap_or_default();
        let caps: Observed =
            serde_json::from_value(r["caps"].clone()).unwrap_or(Observed::Errno(libc::EIO));
        let launcher: Option<Observed> =
            serde_json::from_value(r["launcher"].clone()).ok().flatten();
        let decisive = launcher.clone().unwrap_or_else(|| caps.clone());
        let reached = match a.id {
            "A9" => Some(reached),
            "A22" => Some(held),
            _ => None,
        };
        rows.push(Row {
            id: a.id.into(),
            attack: a.name.into(),
            needs: a.needs.unwrap_or("-").into(),
            expected: a.expect.into(),
            caps_only: caps.text(),
            launcher: launcher.map_or_else(|| "-".into(), |o| o.text()),
            verdict: verdict(a, &decisive, grants, reached),
        });
    }
    Ok(AuditReport {
        pod: name.into(),
        grants: grants.to_vec(),
        launcher_holds_tun_fd: held,
        rogue_dhcp_reached_node: reached,
        environment: doc["environment"].clone(),
        rows,
    })
}

pub fn print_table(r: &AuditReport) {
    println!(
        "netbind audit of pod {} ({}):",
        r.pod,
        if r.grants.is_empty() {
            "the launcher as it runs".to_string()
        } else {
            format!(
                "granted {} — a launcher as KubeVirt ran it, no seccomp",
                r.grants.join(",")
            )
        }
    );
    println!(
        "{:<4} {:<46} {:<10} {:<36} {:<34} {:<24} VERDICT",
        "ID", "ATTACK", "NEEDS", "EXPECTED WITHOUT IT", "CAPS ONLY", "LAUNCHER"
    );
    for row in &r.rows {
        println!(
            "{:<4} {:<46} {:<10} {:<36} {:<34} {:<24} {}",
            row.id,
            row.attack,
            row.needs,
            row.expected,
            trunc(&row.caps_only, 34),
            trunc(&row.launcher, 24),
            row.verdict.text()
        );
    }
    let exposed = r
        .rows
        .iter()
        .filter(|x| x.verdict == Verdict::Exposed)
        .count();
    println!(
        "launcher holds a tun fd: {}; rogue DHCP reached the node: {}; EXPOSED: {exposed}",
        r.launcher_holds_tun_fd, r.rogue_dhcp_reached_node
    );
    println!("environment: {}", r.environment);
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.into()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
