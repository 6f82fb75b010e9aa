//! DHCPv4 benchmark, side by side in one run (root only): netbind-launcher (uid 107, no
//! capability) and dnsmasq serve the same guest in the same topology (phase 1's in-pod bridge
//! `k6t-eth0`, the guest a veth on it), one after the other on port 67.
//!
//! Measured per server: DISCOVER→OFFER→REQUEST→ACK round time over many rounds (median,
//! p99), resident memory while serving (VmRSS after the rounds), and time from start until
//! the first OFFER arrives. Run: `cargo bench -p netbind-launcher --bench dhcp`
//! (env NETBIND_BENCH_ROUNDS, default 1000).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)] // benchmark driver

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01];

fn sh(cmd: &str) {
    netbind_testkit::ok(cmd);
}

/// A BOOTREQUEST with the broadcast flag (both servers then answer by broadcast).
fn request(kind: u8, xid: u32, extra: &[(u8, [u8; 4])]) -> Vec<u8> {
    let mut buf = vec![0u8; 240];
    buf[0] = 1;
    buf[1] = 1;
    buf[2] = 6;
    buf[4..8].copy_from_slice(&xid.to_be_bytes());
    buf[10] = 0x80;
    buf[28..34].copy_from_slice(&MAC);
    buf[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    buf.extend_from_slice(&[53, 1, kind]);
    for (code, v) in extra {
        buf.extend_from_slice(&[*code, 4]);
        buf.extend_from_slice(v);
    }
    buf.extend_from_slice(&[55, 4, 1, 3, 6, 26, 255]);
    buf
}

/// Waits for a reply of `kind` to `xid`; returns (yiaddr, server id).
fn await_reply(
    sock: &UdpSocket,
    xid: u32,
    kind: u8,
    deadline: Instant,
) -> Option<([u8; 4], [u8; 4])> {
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(100)),
        ))
        .unwrap();
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let b = &buf[..n];
        if n < 244 || b[0] != 2 || b[4..8] != xid.to_be_bytes() {
            continue;
        }
        let (mut t, mut sid, mut i) = (0u8, [0u8; 4], 240);
        while i + 1 < n && b[i] != 255 {
            if b[i] == 0 {
                i += 1;
                continue;
            }
            let len = usize::from(b[i + 1]);
            let Some(v) = b.get(i + 2..i + 2 + len) else {
                break;
            };
            match b[i] {
                53 if len == 1 => t = v[0],
                54 if len == 4 => sid.copy_from_slice(v),
                _ => {}
            }
            i += 2 + len;
        }
        if t == kind {
            return Some(([b[16], b[17], b[18], b[19]], sid));
        }
    }
    None
}

/// One DISCOVER→ACK exchange.
fn round(sock: &UdpSocket, xid: u32, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let bcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    sock.send_to(&request(1, xid, &[]), bcast).ok()?;
    let (yiaddr, sid) = await_reply(sock, xid, 2, started + timeout)?;
    sock.send_to(&request(3, xid, &[(50, yiaddr), (54, sid)]), bcast)
        .ok()?;
    await_reply(sock, xid, 5, started + timeout)?;
    Some(started.elapsed())
}

fn client_socket(guest_ns: &str) -> UdpSocket {
    // The client lives in the guest namespace.
    netbind_testkit::in_netns(guest_ns, || {
        let sock = UdpSocket::bind("0.0.0.0:68").unwrap();
        sock.set_broadcast(true).unwrap();
        netbind_testkit::bind_to_device(&sock, "eth0");
        sock
    })
}

fn vm_rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Result {
    name: &'static str,
    rounds: Vec<Duration>,
    rss_kib: u64,
    ready: Duration,
    failures: usize,
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() as f64 - 1.0) * p).round() as usize]
}

fn measure(
    name: &'static str,
    mut child: Child,
    sock: &UdpSocket,
    rounds: usize,
    started: Instant,
) -> Result {
    // Start to ready: the first OFFER, asking every 2 ms.
    let mut xid = 1u32;
    loop {
        xid += 1;
        let t = Instant::now();
        sock.send_to(
            &request(1, xid, &[]),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        )
        .unwrap();
        if await_reply(sock, xid, 2, t + Duration::from_millis(2)).is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} never answered"
        );
    }
    let ready = started.elapsed();
    for _ in 0..20 {
        xid += 1;
        round(sock, xid, Duration::from_secs(1));
    }
    let mut samples = Vec::with_capacity(rounds);
    let mut failures = 0;
    for _ in 0..rounds {
        xid += 1;
        match round(sock, xid, Duration::from_secs(1)) {
            Some(d) => samples.push(d),
            None => failures += 1,
        }
    }
    let rss_kib = vm_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Result {
        name,
        rounds: samples,
        rss_kib,
        ready,
        failures,
    }
}

fn main() {
    if !netbind_testkit::bench_may_run("dhcp") {
        return;
    }
    let rounds = netbind_testkit::env_count("NETBIND_BENCH_ROUNDS", 1000);
    let p = format!("nbd-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    sh(&format!("chmod 755 {}", tmp.path().display()));
    let cleanup =
        netbind_testkit::Namespaces(vec![p.clone(), format!("{p}-node"), format!("{p}-vm")]);
    sh(&format!(
        "ip netns add {p} && ip netns add {p}-node && ip netns add {p}-vm && ip -n {p} link set lo up && \
         ip -n {p}-node link add veth-n type veth peer name eth0 netns {p} && ip -n {p}-node addr add 10.244.0.1/24 dev veth-n && \
         ip -n {p}-node link set veth-n up && ip -n {p} addr add 10.244.0.5/24 dev eth0 && ip -n {p} link set eth0 up && \
         ip -n {p} route add default via 10.244.0.1"
    ));
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n",
    )
    .unwrap();
    let handoff = tmp.path().join("handoff");
    netbind_handler::setup(&netbind_handler::SetupArgs {
        resolv_conf: Some(resolv),
        ..netbind_handler::SetupArgs::new(
            netbind_handler::netns::NetnsTarget::Path(format!("/run/netns/{p}").into()),
            netbind_testkit::repo_root().join("examples/vmi-masquerade.yaml"),
            netbind_plan::Owner { uid: 107, gid: 107 },
            handoff.clone(),
            tmp.path().join("state"),
        )
    })
    .expect("phase 1");
    let mac = MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    sh(&format!(
        "ip -n {p} link add vm0 type veth peer name eth0 address {mac} netns {p}-vm && \
         ip -n {p} link set vm0 master k6t-eth0 up && ip -n {p}-vm link set eth0 up && ip -n {p}-vm link set lo up"
    ));
    let sock = client_socket(&format!("{p}-vm"));

    let mut results = Vec::new();
    let started = Instant::now();
    let launcher = netbind_testkit::as_vm_user(&p)
        .arg(netbind_e2e::bin("netbind-launcher"))
        .arg("--handoff")
        .arg(&handoff)
        .env("NETBIND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    results.push(measure(
        "netbind-launcher (uid 107, no capabilities)",
        launcher,
        &sock,
        rounds,
        started,
    ));

    let have_dnsmasq = Command::new("sh")
        .arg("-c")
        .arg("command -v dnsmasq")
        .output()
        .is_ok_and(|o| o.status.success());
    if have_dnsmasq {
        let started = Instant::now();
        let dnsmasq = Command::new("ip")
            .args(["netns", "exec", &p, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"])
            .args(["--port=0", "--interface=k6t-eth0", "--bind-interfaces", "--no-ping", "--dhcp-authoritative", "--leasefile-ro"])
            .args(["--dhcp-range=10.0.2.2,static,255.255.255.0,86313600", &format!("--dhcp-host={mac},10.0.2.2")])
            .args(["--dhcp-option=option:router,10.0.2.1", "--dhcp-option=option:dns-server,10.96.0.10"])
            .args(["--dhcp-option=option:mtu,1500", "--dhcp-option=option:domain-name,default.svc.cluster.local"])
            .args(["--dhcp-option=option:domain-search,default.svc.cluster.local,svc.cluster.local,cluster.local", "--quiet-dhcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        results.push(measure(
            "dnsmasq 2.90 (root)",
            dnsmasq,
            &sock,
            rounds,
            started,
        ));
    }

    println!(
        "## DHCPv4: DISCOVER→OFFER→REQUEST→ACK, {rounds} rounds per server, same guest and bridge\n"
    );
    println!(
        "| server | median ms | p99 ms | failed rounds | VmRSS while serving KiB | start to first OFFER ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.3} | {:.3} | {} | {} | {:.1} |",
            r.name,
            pct(&r.rounds, 0.5),
            pct(&r.rounds, 0.99),
            r.failures,
            r.rss_kib,
            r.ready.as_secs_f64() * 1e3
        );
    }
    if !have_dnsmasq {
        println!("\n(dnsmasq missing: install dnsmasq-base)");
    }
    drop(cleanup);
}
