//! End-to-end tier for phase 2: phase 1 builds the pod (real netns, bridge, tap), the launcher
//! runs as uid 107 with no capability and no_new_privs, and real DHCP clients (busybox udhcpc,
//! ISC dhclient, dhcpcd; dhclient -6 for IPv6) in a "guest" namespace whose veth is plugged
//! into the bridge where the VM's tap is, report what they got. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require(tools: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if is_root && missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run this as root with {missing:?} installed"
    );
    eprintln!("SKIPPED: needs root and {missing:?}");
    false
}

fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

fn ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}`: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

static N: AtomicU32 = AtomicU32::new(0);

const POD_MAC: &str = "0a:58:0a:f4:00:05";

struct Fixture {
    pod: String,
    dir: tempfile::TempDir,
    launcher: Option<Child>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut c) = self.launcher.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let p = &self.pod;
        let _ = sh(&format!(
            "for n in {p} {p}-node {p}-vm {p}-x; do ip netns del $n 2>/dev/null; done; rm -f /var/lib/dhcpcd/*{p}*"
        ));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stack {
    V4,
    Dual,
}

impl Fixture {
    /// A CNI-made pod, phase 1 applied for `vmi`, a guest namespace on the bridge, and the
    /// launcher running unprivileged.
    fn new(vmi: &str, stack: Stack) -> Fixture {
        let p = format!(
            "nbl-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let f = Fixture {
            pod: p.clone(),
            dir: tempfile::tempdir().unwrap(),
            launcher: None,
        };
        std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        ok(&format!(
            "ip netns add {p} && ip netns add {p}-node && ip netns add {p}-vm && \
             ip -n {p} link set lo up && ip -n {p}-vm link set lo up && \
             ip -n {p}-node link add veth-n type veth peer name eth0 address {POD_MAC} netns {p} && \
             ip -n {p}-node addr add 10.244.0.1/24 dev veth-n && ip -n {p}-node link set veth-n up && \
             ip -n {p} link set eth0 mtu 1450 && ip -n {p} addr add 10.244.0.5/24 dev eth0 && ip -n {p} link set eth0 up && \
             ip -n {p} route add default via 10.244.0.1 && ip -n {p} route add 10.96.0.0/12 via 10.244.0.1"
        ));
        if stack == Stack::Dual {
            ok(&format!(
                "ip -n {p}-node addr add fd00:10:244::1/64 dev veth-n nodad && ip -n {p} addr add fd00:10:244::5/64 dev eth0 nodad && \
                 ip -n {p} -6 route add default via fd00:10:244::1"
            ));
        }
        let resolv = f.dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.96.0.10\nnameserver fd00:10:96::a\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n").unwrap();
        let handoff = f.dir.path().join("handoff");
        netbind_handler::setup(&netbind_handler::SetupArgs {
            target: netbind_handler::netns::NetnsTarget::Path(format!("/run/netns/{p}").into()),
            vmi: root().join(vmi),
            owner: netbind_plan::Owner { uid: 107, gid: 107 },
            handoff_dir: handoff.clone(),
            state_dir: f.dir.path().join("state"),
            nft_bin: "nft".into(),
            resolv_conf: Some(resolv),
            cluster: Default::default(),
            launcher_pid: None,
            selinux: Default::default(),
            inject: None,
        })
        .expect("phase 1");
        // The guest: a veth where the tap would be (same bridge, the pod's original MAC).
        ok(&format!(
            "ip -n {p} link add vm0 type veth peer name eth0 address {POD_MAC} netns {p}-vm && \
             ip -n {p} link set vm0 master k6t-eth0 mtu 1450 up && \
             ip netns exec {p}-vm sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 && \
             ip -n {p}-vm link set eth0 up"
        ));
        let mut f = f;
        f.start_launcher(&handoff);
        f
    }

    fn start_launcher(&mut self, handoff: &Path) {
        // The launcher's own writable directory (the hand-off directory is read-only to it).
        let own = self.dir.path().join("launcher");
        std::fs::create_dir_all(&own).unwrap();
        let c = std::ffi::CString::new(own.to_str().unwrap()).unwrap();
        // SAFETY: chown on a NUL-terminated path we just created.
        let rc = unsafe { libc::chown(c.as_ptr(), 107, 107) };
        assert_eq!(rc, 0);
        let domain = own.join("domain.xml");
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.pod,
                "setpriv",
                "--reuid=107",
                "--regid=107",
                "--clear-groups",
            ])
            .args([
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
            ])
            .arg(env!("CARGO_BIN_EXE_netbind-launcher"))
            .arg("--handoff")
            .arg(handoff)
            .arg("--domain-out")
            .arg(&domain)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("launcher");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("\"event\":\"ready\""),
            "launcher not ready: {line:?}"
        );
        self.launcher = Some(child);
    }

    fn guest(&self, cmd: &str) -> Output {
        sh(&format!("ip netns exec {}-vm {cmd}", self.pod))
    }

    /// Runs a client in the guest namespace; returns its `NB key=value` report.
    fn client(&self, cmd: &str) -> Vec<(String, String)> {
        let o = self.guest(&format!("timeout 30 {cmd}"));
        let out = String::from_utf8_lossy(&o.stdout);
        out.lines()
            .filter_map(|l| l.find("NB ").map(|i| &l[i + 3..]))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }
}

fn get<'a>(r: &'a [(String, String)], k: &str) -> &'a str {
    r.iter()
        .find(|(key, _)| key == k)
        .map_or("", |(_, v)| v.as_str())
}

fn clients_dir() -> String {
    root().join("testdata/dhcp-clients").display().to_string()
}

fn udhcpc(f: &Fixture, iface: &str) -> Vec<(String, String)> {
    f.client(&format!(
        "busybox udhcpc -i {iface} -f -q -n -t 3 -T 2 -O mtu -O domain -O search -O staticroutes -O hostname -s {}/udhcpc.sh",
        clients_dir()
    ))
}

fn dhclient(f: &Fixture, six: bool) -> Vec<(String, String)> {
    let d = f.dir.path();
    let r = f.client(&format!(
        "dhclient {} -1 -cf {c}/dhclient.conf -sf {c}/dhclient.sh -lf {l} -pf {p} eth0",
        if six { "-6" } else { "" },
        c = clients_dir(),
        l = d
            .join(if six {
                "dhclient6.leases"
            } else {
                "dhclient.leases"
            })
            .display(),
        p = d.join("dhclient.pid").display(),
    ));
    let _ = sh(&format!(
        "kill $(cat {}) 2>/dev/null",
        d.join("dhclient.pid").display()
    ));
    r
}

fn dhcpcd(f: &Fixture) -> Vec<(String, String)> {
    let _ = sh("rm -f /var/lib/dhcpcd/eth0.lease");
    let r = f.client(&format!(
        "dhcpcd -4 -1 -B -A -t 10 --noipv4ll -f /dev/null -o interface_mtu -o domain_name -o domain_search \
         -o domain_name_servers -o classless_static_routes -o host_name -c {}/dhcpcd.sh eth0",
        clients_dir()
    ));
    let _ = sh("rm -f /var/lib/dhcpcd/eth0.lease");
    r
}

fn assert_search(r: &[(String, String)], key: &str) {
    let s = get(r, key);
    assert!(
        s.contains("default.svc.cluster.local")
            && s.contains("svc.cluster.local")
            && s.contains("cluster.local"),
        "{key}: {s:?} in {r:?}"
    );
}

#[test]
fn bridge_binding_real_clients_get_the_pod_ip() {
    if !require(&["busybox", "dhclient", "dhcpcd", "setpriv"]) {
        return;
    }
    let f = Fixture::new("examples/vmi-bridge.yaml", Stack::V4);

    let r = udhcpc(&f, "eth0");
    assert_eq!(get(&r, "ip"), "10.244.0.5", "{r:?}");
    assert_eq!(get(&r, "mask"), "24");
    assert_eq!(get(&r, "router"), "10.244.0.1");
    assert_eq!(get(&r, "dns"), "10.96.0.10");
    assert_eq!(get(&r, "mtu"), "1450");
    assert_eq!(get(&r, "domain"), "default.svc.cluster.local");
    assert_eq!(get(&r, "serverid"), "169.254.75.10");
    assert_eq!(get(&r, "hostname"), "vmi-bridge");
    assert_search(&r, "search");
    // Classless routes as the client decoded them: the pod's extra route, default last.
    assert_eq!(
        get(&r, "staticroutes"),
        "10.96.0.0/12 10.244.0.1 0.0.0.0/0 10.244.0.1"
    );

    let r = dhclient(&f, false);
    assert_eq!(get(&r, "ip"), "10.244.0.5", "{r:?}");
    assert_eq!(get(&r, "mask"), "255.255.255.0");
    assert_eq!(get(&r, "router"), "10.244.0.1");
    assert_eq!(get(&r, "dns"), "10.96.0.10");
    assert_eq!(get(&r, "mtu"), "1450");
    assert_eq!(get(&r, "domain"), "default.svc.cluster.local");
    assert_search(&r, "search");
    assert_eq!(get(&r, "rfc3442"), "12 10 96 10 244 0 1 0 10 244 0 1");

    let r = dhcpcd(&f);
    assert_eq!(get(&r, "ip"), "10.244.0.5", "{r:?}");
    assert_eq!(get(&r, "cidr"), "24");
    assert_eq!(get(&r, "dns"), "10.96.0.10");
    assert_eq!(get(&r, "mtu"), "1450");
    assert_search(&r, "search");
    assert_eq!(
        get(&r, "staticroutes"),
        "10.96.0.0/12 10.244.0.1 0.0.0.0/0 10.244.0.1"
    );

    // The domain XML the launcher wrote is the renderer's, for the tap phase 1 made.
    let xml = std::fs::read_to_string(f.dir.path().join("launcher/domain.xml")).unwrap();
    assert!(
        xml.contains("<target dev='tap0' managed='no'/>")
            && xml.contains(&format!("<mac address='{POD_MAC}'/>")),
        "{xml}"
    );
}

#[test]
fn masquerade_real_clients_get_the_guest_address() {
    if !require(&["busybox", "dhclient", "dhcpcd", "setpriv"]) {
        return;
    }
    let f = Fixture::new("examples/vmi-masquerade.yaml", Stack::V4);
    for r in [udhcpc(&f, "eth0"), dhclient(&f, false), dhcpcd(&f)] {
        assert_eq!(get(&r, "ip"), "10.0.2.2", "{r:?}");
        assert_eq!(get(&r, "router"), "10.0.2.1", "{r:?}");
        assert_eq!(get(&r, "dns"), "10.96.0.10", "{r:?}");
        assert_eq!(get(&r, "mtu"), "1450", "{r:?}");
        assert_search(&r, "search");
    }
}

/// Sends raw UDP payloads to the DHCP server port from the guest namespace.
fn send_from_guest(f: &Fixture, payloads: &[Vec<u8>]) {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{}-vm", f.pod);
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on an open namespace fd, on this short-lived thread only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0);
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.set_broadcast(true).unwrap();
            for p in payloads {
                sock.send_to(p, "255.255.255.255:67").unwrap();
            }
        })
        .join()
        .unwrap();
    });
}

#[test]
fn malformed_datagrams_over_the_wire_do_not_stop_the_server() {
    if !require(&["busybox", "setpriv"]) {
        return;
    }
    let f = Fixture::new("examples/vmi-masquerade.yaml", Stack::V4);
    let mut header = vec![0u8; 240];
    header[..3].copy_from_slice(&[1, 1, 6]);
    header[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    let with = |tail: &[u8]| [header.clone(), tail.to_vec()].concat();
    let payloads = vec![
        vec![],
        vec![1],
        header[..100].to_vec(),
        with(&[53, 0, 255]),              // zero-length message type
        with(&[53, 1, 1, 12, 250, 1]),    // option longer than the datagram
        with(&[53, 1, 1, 52, 1, 9, 255]), // invalid overload
        with(&[53, 1, 42, 255]),          // unknown message type
        with(&[53, 1, 1]),                // no END
        vec![0xff; 1400],
    ];
    send_from_guest(&f, &payloads);
    assert_eq!(
        get(&udhcpc(&f, "eth0"), "ip"),
        "10.0.2.2",
        "the launcher still serves"
    );
    let launcher = f.launcher.as_ref().unwrap();
    assert!(
        Path::new(&format!("/proc/{}", launcher.id())).exists(),
        "the launcher is still running"
    );
}

#[test]
fn dhcpv6_real_client_gets_the_guest_address() {
    if !require(&["dhclient", "setpriv"]) {
        return;
    }
    let f = Fixture::new("examples/vmi-dual-stack.yaml", Stack::Dual);
    // Replies come from the bridge's link-local address: wait for its DAD to finish.
    let t = Instant::now();
    while !ok(&format!(
        "ip -n {} -6 addr show dev k6t-eth0 tentative",
        f.pod
    ))
    .trim()
    .is_empty()
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "bridge link-local still tentative"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = dhclient(&f, true);
    assert_eq!(get(&r, "ip6"), "fd10:0:2::2", "{r:?}");
    assert_eq!(get(&r, "dns6"), "fd00:10:96::a", "{r:?}");
    // And IPv4 on the same bridge, same launcher.
    assert_eq!(get(&udhcpc(&f, "eth0"), "ip"), "10.0.2.2");
}

#[test]
fn no_answer_on_another_interface_of_the_pod() {
    if !require(&["busybox", "setpriv"]) {
        return;
    }
    let f = Fixture::new("examples/vmi-masquerade.yaml", Stack::V4);
    let p = &f.pod;
    // Another interface of the same pod netns, not the bridge: its DISCOVERs reach the
    // launcher's socket (bound to 0.0.0.0:67) but carry another ifindex.
    ok(&format!(
        "ip netns add {p}-x && ip -n {p} link add other0 type veth peer name eth0 netns {p}-x && \
         ip -n {p} addr add 192.168.77.1/24 dev other0 && ip -n {p} link set other0 up && ip -n {p}-x link set eth0 up"
    ));
    let o = sh(&format!(
        "ip netns exec {p}-x timeout 20 busybox udhcpc -i eth0 -f -q -n -t 3 -T 1 -s /bin/true"
    ));
    assert!(
        !o.status.success(),
        "a client on another interface must get no lease"
    );
    // The guest on the bridge still gets its lease from the same launcher.
    assert_eq!(get(&udhcpc(&f, "eth0"), "ip"), "10.0.2.2");
}

#[test]
fn launcher_refuses_to_run_with_a_capability() {
    if !require(&["setpriv"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // As root with its full capability sets.
    let o = Command::new(env!("CARGO_BIN_EXE_netbind-launcher"))
        .arg("--handoff")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to run with privileges"));
    // As uid 107 with exactly one capability left (ambient CAP_NET_BIND_SERVICE, as KubeVirt
    // grants it).
    let o = Command::new("setpriv")
        .args([
            "--reuid=107",
            "--regid=107",
            "--clear-groups",
            "--inh-caps=-all,+net_bind_service",
        ])
        .args([
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
            "--no-new-privs",
        ])
        .arg(env!("CARGO_BIN_EXE_netbind-launcher"))
        .arg("--handoff")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("CapAmb=cap_net_bind_service") && err.contains("CapBnd=cap_net_bind_service"),
        "{err}"
    );
    // Without no_new_privs.
    let o = Command::new("setpriv")
        .args([
            "--reuid=107",
            "--regid=107",
            "--clear-groups",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_netbind-launcher"))
        .arg("--handoff")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no_new_privs is not set"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
