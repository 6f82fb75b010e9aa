//! DHCPv4 benchmark, side by side in one run (root only): netbind-launcher (uid 107, no
//! capability), dnsmasq and ISC Kea serve the same kind of guest in the same topology (phase
//! 1's in-pod bridge `k6t-eth0`, the guest a veth on it), each in a pod of its own so that all
//! of them run at once and their rounds interleave.
//!
//! Every server is started the same way: `nsenter --net=POD -- setpriv CREDENTIALS SERVER`
//! (the launcher as uid 107 with every capability dropped, the peers as root, as they are
//! packaged to run), one process exec'ing the next, so the server's pid is the child's.
//!
//! Measured per server:
//! - start to first OFFER: from spawning the command until the first OFFER reaches the guest,
//!   the guest broadcasting a DISCOVER every millisecond and taking an OFFER to any of them;
//!   `NETBIND_BENCH_STARTS` starts per server (default 10), interleaved;
//! - DISCOVER→OFFER→REQUEST→ACK round time over `NETBIND_BENCH_ROUNDS` rounds (default
//!   1000), interleaved round by round across the servers (median, p10, p90, p99);
//! - resident memory while serving (VmRSS after the rounds).
//!
//! Run: `cargo build --release --bins && cargo bench -p netbind-e2e --bench dhcp`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)] // benchmark driver

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01];

fn sh(cmd: &str) {
    netbind_testkit::ok(cmd);
}

/// A BOOTREQUEST with the broadcast flag (every server then answers by broadcast).
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

/// A reply: its xid, message type, yiaddr and server id.
struct Reply {
    xid: u32,
    kind: u8,
    yiaddr: [u8; 4],
    server_id: [u8; 4],
}

fn parse_reply(reply: &[u8]) -> Option<Reply> {
    if reply.len() < 244 || reply[0] != 2 {
        return None;
    }
    let (mut kind, mut server_id, mut pos) = (0u8, [0u8; 4], 240);
    while pos + 1 < reply.len() && reply[pos] != 255 {
        if reply[pos] == 0 {
            pos += 1;
            continue;
        }
        let len = usize::from(reply[pos + 1]);
        let value = reply.get(pos + 2..pos + 2 + len)?;
        match reply[pos] {
            53 if len == 1 => kind = value[0],
            54 if len == 4 => server_id.copy_from_slice(value),
            _ => {}
        }
        pos += 2 + len;
    }
    Some(Reply {
        xid: u32::from_be_bytes(reply[4..8].try_into().ok()?),
        kind,
        yiaddr: reply[16..20].try_into().ok()?,
        server_id,
    })
}

/// Waits until `deadline` for a reply of `kind` whose xid `wanted` accepts.
fn await_reply(
    sock: &UdpSocket,
    kind: u8,
    wanted: impl Fn(u32) -> bool,
    deadline: Instant,
) -> Option<Reply> {
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if !readable_before(sock, deadline) {
            continue;
        }
        let Ok(got) = sock.recv(&mut buf) else {
            continue;
        };
        match parse_reply(&buf[..got]) {
            Some(reply) if reply.kind == kind && wanted(reply.xid) => return Some(reply),
            _ => {}
        }
    }
    None
}

/// Waits until `sock` has a datagram or `deadline` passes. `ppoll`'s timeout is a
/// high-resolution timer; a socket's receive timeout (`SO_RCVTIMEO`) counts in jiffies (4 ms
/// on this machine's HZ=250), which made a 1 ms wait last 4 ms and so the start-to-first-
/// OFFER figures multiples of 4 ms.
fn readable_before(sock: &UdpSocket, deadline: Instant) -> bool {
    use std::os::fd::AsRawFd;
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = libc::timespec {
        tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(left.subsec_nanos()),
    };
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the socket's live fd; no signal mask change.
    let ready = unsafe { libc::ppoll(&mut pfd, 1, &timeout, std::ptr::null()) };
    ready > 0 && pfd.revents & libc::POLLIN != 0
}

fn broadcast(sock: &UdpSocket, packet: &[u8]) {
    // A failed send shows up as a missing reply.
    let _ = sock.send_to(packet, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67));
}

/// One DISCOVER→ACK exchange.
fn round(sock: &UdpSocket, xid: u32, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    broadcast(sock, &request(1, xid, &[]));
    let offer = await_reply(sock, 2, |got| got == xid, started + timeout)?;
    broadcast(
        sock,
        &request(3, xid, &[(50, offer.yiaddr), (54, offer.server_id)]),
    );
    await_reply(sock, 5, |got| got == xid, started + timeout)?;
    Some(started.elapsed())
}

/// Drops whatever is queued on the guest's socket (late replies of an earlier server start).
fn drain(sock: &UdpSocket) {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1500];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
}

fn vm_rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(samples: &[Duration], quantile: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() as f64 - 1.0) * quantile).round() as usize]
}

fn first_line(cmd: &str) -> Option<String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

/// How a server is started: the same `nsenter` + `setpriv` prefix for all.
struct Server {
    name: String,
    pod: String,
    /// `setpriv` arguments: the credentials the server runs with.
    creds: Vec<&'static str>,
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// The guest's DHCP client socket, in this server's guest namespace.
    sock: UdpSocket,
    xid: u32,
}

const ROOT: [&str; 3] = ["--reuid=0", "--regid=0", "--clear-groups"];

impl Server {
    fn spawn(&self) -> (Child, Instant) {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.pod))
            .args(["--", "setpriv"])
            .args(&self.creds)
            .args(&self.argv)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        (cmd.spawn().unwrap(), started)
    }

    fn next_xid(&mut self) -> u32 {
        self.xid += 1;
        self.xid
    }

    /// Broadcasts a DISCOVER every millisecond until an OFFER to any of them arrives.
    fn until_first_offer(&mut self, started: Instant) -> Duration {
        let first = self.xid + 1;
        loop {
            let xid = self.next_xid();
            broadcast(&self.sock, &request(1, xid, &[]));
            let deadline = Instant::now() + Duration::from_millis(1);
            if await_reply(&self.sock, 2, |got| (first..=xid).contains(&got), deadline).is_some() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} never answered",
                self.name
            );
        }
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Kea's configuration for the pod's bridge: the same address, options and lease time.
fn kea_config(dir: &Path, mac: &str) -> String {
    let config = serde_json::json!({ "Dhcp4": {
        "interfaces-config": { "interfaces": ["k6t-eth0"] },
        "lease-database": { "type": "memfile", "persist": false },
        "valid-lifetime": 86_313_600u32,
        "subnet4": [{
            "id": 1,
            "subnet": "10.0.2.0/24",
            "interface": "k6t-eth0",
            "pools": [{ "pool": "10.0.2.2 - 10.0.2.2" }],
            "reservations": [{ "hw-address": mac, "ip-address": "10.0.2.2" }],
            "option-data": [
                { "name": "routers", "data": "10.0.2.1" },
                { "name": "domain-name-servers", "data": "10.96.0.10" },
                { "name": "interface-mtu", "data": "1500" },
                { "name": "domain-name", "data": "default.svc.cluster.local" },
                { "name": "domain-search",
                  "data": "default.svc.cluster.local, svc.cluster.local, cluster.local" }
            ]
        }],
        "loggers": [{ "name": "kea-dhcp4", "severity": "WARN",
                      "output_options": [{ "output": "stderr" }] }]
    }});
    let path = dir.join("kea-dhcp4.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path.display().to_string()
}

/// A pod `POD` (eth0 a veth to the node), phase 1 (masquerade) run in it, and a guest
/// namespace `POD-vm` whose eth0 is a port of the pod's `k6t-eth0`. Returns the guest's
/// client socket.
fn make_pod(pod: &str, node: &str, veth: &str, net: u8, dir: &Path) -> UdpSocket {
    sh(&format!(
        "ip netns add {pod} && ip netns add {pod}-vm && ip -n {pod} link set lo up && \
         ip -n {node} link add {veth} type veth peer name eth0 netns {pod} && \
         ip -n {node} addr add 10.244.{net}.1/24 dev {veth} && ip -n {node} link set {veth} up && \
         ip -n {pod} addr add 10.244.{net}.5/24 dev eth0 && ip -n {pod} link set eth0 up && \
         ip -n {pod} route add default via 10.244.{net}.1"
    ));
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n",
    )
    .unwrap();
    netbind_handler::setup(&netbind_handler::SetupArgs {
        resolv_conf: Some(resolv),
        ..netbind_handler::SetupArgs::new(
            netbind_handler::netns::NetnsTarget::Path(format!("/run/netns/{pod}").into()),
            netbind_testkit::repo_root().join("examples/vmi-masquerade.yaml"),
            netbind_plan::Owner { uid: 107, gid: 107 },
            dir.join("handoff"),
            dir.join("state"),
        )
    })
    .expect("phase 1");
    sh(&format!(
        "ip -n {pod} link add vm0 type veth peer name eth0 address {} netns {pod}-vm && \
         ip -n {pod} link set vm0 master k6t-eth0 up && ip -n {pod}-vm link set eth0 up && \
         ip -n {pod}-vm link set lo up",
        mac_text()
    ));
    netbind_testkit::in_netns(&format!("{pod}-vm"), || {
        let sock = UdpSocket::bind("0.0.0.0:68").unwrap();
        sock.set_broadcast(true).unwrap();
        netbind_testkit::bind_to_device(&sock, "eth0");
        sock
    })
}

fn mac_text() -> String {
    MAC.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn main() {
    if !netbind_testkit::bench_may_run("dhcp") {
        return;
    }
    // Another process using the CPUs biases the comparison (netbind_testkit::MachineLoad).
    let machine = netbind_testkit::MachineLoad::before();
    let rounds = netbind_testkit::env_count("NETBIND_BENCH_ROUNDS", 1000);
    let starts = netbind_testkit::env_count("NETBIND_BENCH_STARTS", 10);
    let prefix = format!("nbd-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    sh(&format!("chmod 755 {}", tmp.path().display()));
    let node = format!("{prefix}-node");
    let mut cleanup = netbind_testkit::Namespaces(vec![node.clone()]);
    sh(&format!("ip netns add {node}"));
    let mac = mac_text();

    let mut servers: Vec<Server> = Vec::new();
    let mut add_pod = |label: &str, net: u8| {
        let pod = format!("{prefix}-{label}");
        cleanup.0.push(pod.clone());
        cleanup.0.push(format!("{pod}-vm"));
        let dir = tmp.path().join(label);
        std::fs::create_dir_all(&dir).unwrap();
        sh(&format!("chmod 755 {}", dir.display()));
        let sock = make_pod(&pod, &node, &format!("v{net}"), net, &dir);
        (pod, dir, sock)
    };

    let (pod, dir, sock) = add_pod("nb", 1);
    servers.push(Server {
        name: "netbind-launcher (uid 107, no capabilities)".into(),
        pod,
        creds: netbind_testkit::VM_USER_SETPRIV.to_vec(),
        argv: vec![
            netbind_e2e::bin("netbind-launcher").display().to_string(),
            "--handoff".into(),
            dir.join("handoff").display().to_string(),
        ],
        env: vec![("NETBIND_LOG", "warn".into())],
        sock,
        xid: 0,
    });

    let dnsmasq = first_line("dnsmasq --version");
    netbind_testkit::peer_present(dnsmasq.is_some(), "dnsmasq");
    let dnsmasq = dnsmasq.map(|line| {
        line.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
            .replace("Dnsmasq version", "dnsmasq")
    });
    if let Some(version) = &dnsmasq {
        let (pod, _, sock) = add_pod("dm", 2);
        servers.push(Server {
            name: format!("{version} (root)"),
            pod,
            creds: ROOT.to_vec(),
            argv: [
                "dnsmasq",
                "--keep-in-foreground",
                // No pid file: dnsmasq's default is the node's /run/dnsmasq.pid, which a
                // bench must not write (a dnsmasq service of the node's own uses that name).
                "--pid-file=",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=k6t-eth0",
                "--bind-interfaces",
                "--no-ping",
                "--dhcp-authoritative",
                "--leasefile-ro",
                "--dhcp-range=10.0.2.2,static,255.255.255.0,86313600",
                &format!("--dhcp-host={mac},10.0.2.2"),
                "--dhcp-option=option:router,10.0.2.1",
                "--dhcp-option=option:dns-server,10.96.0.10",
                "--dhcp-option=option:mtu,1500",
                "--dhcp-option=option:domain-name,default.svc.cluster.local",
                "--dhcp-option=option:domain-search,default.svc.cluster.local,svc.cluster.local,cluster.local",
                "--quiet-dhcp",
            ]
            .map(String::from)
            .to_vec(),
            env: Vec::new(),
            sock,
            xid: 0,
        });
    }

    let kea = first_line("kea-dhcp4 -v").map(|version| format!("Kea {version}"));
    netbind_testkit::peer_present(kea.is_some(), "kea-dhcp4-server");
    if let Some(version) = &kea {
        let (pod, dir, sock) = add_pod("kea", 3);
        let config = kea_config(&dir, &mac);
        let run = dir.display().to_string();
        servers.push(Server {
            name: format!("{version} (root)"),
            pod,
            creds: ROOT.to_vec(),
            argv: vec!["kea-dhcp4".into(), "-c".into(), config],
            env: vec![("KEA_PIDFILE_DIR", run.clone()), ("KEA_LOCKFILE_DIR", run)],
            sock,
            xid: 0,
        });
    }

    // Start to first OFFER, the servers' starts interleaved in a balanced order (each server
    // starts after each other one's stop equally often): a stopped server's exit is work the
    // kernel may still be doing when the next starts.
    let mut ready: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
    for start in 0..starts {
        for idx in netbind_testkit::turn_order(start, servers.len()) {
            let server = &mut servers[idx];
            drain(&server.sock);
            let (child, started) = server.spawn();
            ready[idx].push(server.until_first_offer(started));
            stop(child);
        }
    }

    // All of them serving at once; rounds interleaved across the servers.
    let children: Vec<Child> = servers
        .iter_mut()
        .map(|server| {
            drain(&server.sock);
            let (child, started) = server.spawn();
            server.until_first_offer(started);
            child
        })
        .collect();
    for server in &mut servers {
        for _ in 0..20 {
            let xid = server.next_xid();
            round(&server.sock, xid, Duration::from_secs(1));
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); servers.len()];
    let mut failures = vec![0usize; servers.len()];
    for _ in 0..rounds {
        for (idx, server) in servers.iter_mut().enumerate() {
            let xid = server.next_xid();
            match round(&server.sock, xid, Duration::from_secs(1)) {
                Some(elapsed) => samples[idx].push(elapsed),
                None => failures[idx] += 1,
            }
        }
    }
    let rss: Vec<u64> = children
        .iter()
        .map(|child| vm_rss_kib(child.id()))
        .collect();
    for child in children {
        stop(child);
    }

    println!(
        "## DHCPv4: {rounds} DISCOVER→OFFER→REQUEST→ACK rounds per server (interleaved), {starts} starts per server (interleaved), every server started as `nsenter --net=POD -- setpriv CREDENTIALS SERVER`\n"
    );
    println!(
        "| server | round median ms | round p10–p90 ms | round p99 ms | failed rounds | VmRSS while serving KiB | start to first OFFER median ms | p10–p90 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (idx, server) in servers.iter().enumerate() {
        let done = &samples[idx];
        let round_ms = |q| {
            if done.is_empty() {
                f64::NAN
            } else {
                pct(done, q)
            }
        };
        println!(
            "| {} | {:.3} | {:.3}–{:.3} | {:.3} | {} | {} | {:.1} | {:.1}–{:.1} |",
            server.name,
            round_ms(0.5),
            round_ms(0.1),
            round_ms(0.9),
            round_ms(0.99),
            failures[idx],
            rss[idx],
            pct(&ready[idx], 0.5),
            pct(&ready[idx], 0.1),
            pct(&ready[idx], 0.9),
        );
    }
    if dnsmasq.is_none() || kea.is_none() {
        println!("\n(missing peers: install dnsmasq-base and kea-dhcp4-server)");
    }
    println!("\n{}", machine.report());
    drop(cleanup);
}
