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
    for (code, value) in extra {
        buf.extend_from_slice(&[*code, 4]);
        buf.extend_from_slice(value);
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
        let Ok(got) = sock.recv(&mut buf) else {
            continue;
        };
        let reply = &buf[..got];
        if got < 244 || reply[0] != 2 || reply[4..8] != xid.to_be_bytes() {
            continue;
        }
        let (mut msg_type, mut sid, mut pos) = (0u8, [0u8; 4], 240);
        while pos + 1 < got && reply[pos] != 255 {
            if reply[pos] == 0 {
                pos += 1;
                continue;
            }
            let len = usize::from(reply[pos + 1]);
            let Some(value) = reply.get(pos + 2..pos + 2 + len) else {
                break;
            };
            match reply[pos] {
                53 if len == 1 => msg_type = value[0],
                54 if len == 4 => sid.copy_from_slice(value),
                _ => {}
            }
            pos += 2 + len;
        }
        if msg_type == kind {
            return Some(([reply[16], reply[17], reply[18], reply[19]], sid));
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

fn pct(samples: &[Duration], quantile: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() as f64 - 1.0) * quantile).round() as usize]
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
        let begun = Instant::now();
        sock.send_to(
            &request(1, xid, &[]),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        )
        .unwrap();
        if await_reply(sock, xid, 2, begun + Duration::from_millis(2)).is_some() {
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
            Some(elapsed) => samples.push(elapsed),
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
    let prefix = format!("nbd-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    sh(&format!("chmod 755 {}", tmp.path().display()));
    let cleanup = netbind_testkit::Namespaces(vec![
        prefix.clone(),
        format!("{prefix}-node"),
        format!("{prefix}-vm"),
    ]);
    sh(&format!(
        "ip netns add {prefix} && ip netns add {prefix}-node && ip netns add {prefix}-vm && ip -n {prefix} link set lo up && \
         ip -n {prefix}-node link add veth-n type veth peer name eth0 netns {prefix} && ip -n {prefix}-node addr add 10.244.0.1/24 dev veth-n && \
         ip -n {prefix}-node link set veth-n up && ip -n {prefix} addr add 10.244.0.5/24 dev eth0 && ip -n {prefix} link set eth0 up && \
         ip -n {prefix} route add default via 10.244.0.1"
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
            netbind_handler::netns::NetnsTarget::Path(format!("/run/netns/{prefix}").into()),
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
        "ip -n {prefix} link add vm0 type veth peer name eth0 address {mac} netns {prefix}-vm && \
         ip -n {prefix} link set vm0 master k6t-eth0 up && ip -n {prefix}-vm link set eth0 up && ip -n {prefix}-vm link set lo up"
    ));
    let sock = client_socket(&format!("{prefix}-vm"));

    let mut results = Vec::new();
    let started = Instant::now();
    let launcher = netbind_testkit::as_vm_user(&prefix)
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
            .args(["netns", "exec", &prefix, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"])
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
    for result in &results {
        println!(
            "| {} | {:.3} | {:.3} | {} | {} | {:.1} |",
            result.name,
            pct(&result.rounds, 0.5),
            pct(&result.rounds, 0.99),
            result.failures,
            result.rss_kib,
            result.ready.as_secs_f64() * 1e3
        );
    }
    if !have_dnsmasq {
        println!("\n(dnsmasq missing: install dnsmasq-base)");
    }
    drop(cleanup);
}
