//! Shared by the launcher's integration tests: a CNI-made pod with phase 1 applied, a guest
//! namespace on the bridge, the launcher started unprivileged, and real DHCP clients.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)] // test code

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use netbind_podsim::sandbox::{Proc, Sandbox, sandbox_program};

pub use netbind_testkit::{ok, repo_root as root, sh};

/// Root and the given tools (a failure in CI, a loud skip elsewhere).
pub fn require(tools: &[&str]) -> bool {
    netbind_testkit::ready(netbind_testkit::missing_tools(tools))
}

static N: AtomicU32 = AtomicU32::new(0);

pub const POD_MAC: &str = "0a:58:0a:f4:00:05";

pub struct Fixture {
    pub pod: String,
    pub dir: tempfile::TempDir,
    pub launcher: Option<Child>,
    /// Where the launcher's stderr (its log) goes; discarded when `None`.
    pub log: Option<PathBuf>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut child) = self.launcher.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let pod = &self.pod;
        // Phase 1's teardown stops what it started (the RA responder holds a socket in the
        // pod's namespace).
        let _ = netbind_handler::teardown(&netbind_handler::TeardownArgs {
            target: netbind_handler::netns::NetnsTarget::Path(format!("/run/netns/{pod}").into()),
            handoff_dir: self.handoff(),
            state_dir: self.dir.path().join("state"),
            nft_bin: "nft".into(),
        });
        let _ = sh(&format!(
            "for n in {pod} {pod}-node {pod}-vm {pod}-x; do ip netns del $n 2>/dev/null; done; rm -f /var/lib/dhcpcd/*{pod}*"
        ));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    V4,
    Dual,
}

impl Fixture {
    /// A CNI-made pod, phase 1 applied for `vmi`, a guest namespace on the bridge, and the
    /// launcher running unprivileged.
    pub fn new(vmi: &str, stack: Stack) -> Fixture {
        let mut fixture = Self::without_launcher(vmi, stack);
        let handoff = fixture.handoff();
        fixture.start_launcher(&handoff);
        fixture
    }

    pub fn handoff(&self) -> PathBuf {
        self.dir.path().join("handoff")
    }

    /// The RA responders phase 1 started for this pod, from its state.
    pub fn responders(&self) -> Vec<netbind_handler::ra::Responder> {
        let st = std::fs::read(self.dir.path().join("state/state.json")).unwrap();
        let st: netbind_handler::state::HandlerState = serde_json::from_slice(&st).unwrap();
        st.responders
    }

    /// The log of the RA responder of `bridge`.
    pub fn ra_log(&self, bridge: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("state/ra-{bridge}.log")))
            .unwrap_or_default()
    }

    /// Phase 1 and the guest namespace, but no launcher yet.
    pub fn without_launcher(vmi: &str, stack: Stack) -> Fixture {
        let pod = format!(
            "nbl-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let fixture = Fixture {
            pod: pod.clone(),
            dir: tempfile::tempdir().unwrap(),
            launcher: None,
            log: None,
        };
        std::fs::set_permissions(fixture.dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        ok(&format!(
            "ip netns add {pod} && ip netns add {pod}-node && ip netns add {pod}-vm && \
             ip -n {pod} link set lo up && ip -n {pod}-vm link set lo up && \
             ip -n {pod}-node link add veth-n type veth peer name eth0 address {POD_MAC} netns {pod} && \
             ip -n {pod}-node addr add 10.244.0.1/24 dev veth-n && ip -n {pod}-node link set veth-n up && \
             ip -n {pod} link set eth0 mtu 1450 && ip -n {pod} addr add 10.244.0.5/24 dev eth0 && ip -n {pod} link set eth0 up && \
             ip -n {pod} route add default via 10.244.0.1 && ip -n {pod} route add 10.96.0.0/12 via 10.244.0.1"
        ));
        if stack == Stack::Dual {
            ok(&format!(
                "ip -n {pod}-node addr add fd00:10:244::1/64 dev veth-n nodad && ip -n {pod} addr add fd00:10:244::5/64 dev eth0 nodad && \
                 ip -n {pod} -6 route add default via fd00:10:244::1"
            ));
        }
        let resolv = fixture.dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.96.0.10\nnameserver fd00:10:96::a\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n").unwrap();
        fixture.phase1(vmi).expect("phase 1");
        // The guest: a veth where the tap would be (same bridge, the pod's original MAC).
        ok(&format!(
            "ip -n {pod} link add vm0 type veth peer name eth0 address {POD_MAC} netns {pod}-vm && \
             ip -n {pod} link set vm0 master k6t-eth0 mtu 1450 up && \
             ip netns exec {pod}-vm sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 && \
             ip -n {pod}-vm link set eth0 up"
        ));
        fixture
    }

    /// Runs phase 1 for `vmi` in the pod (again, for a re-run: a hot-plug, an unplug).
    pub fn phase1(
        &self,
        vmi: &str,
    ) -> Result<netbind_handler::SetupReport, netbind_handler::HandlerError> {
        let pod = &self.pod;
        netbind_handler::setup(&netbind_handler::SetupArgs {
            resolv_conf: Some(self.dir.path().join("resolv.conf")),
            ra_responder: Some(netbind_e2e::bin("netbind-ra")),
            ..netbind_handler::SetupArgs::new(
                netbind_handler::netns::NetnsTarget::Path(format!("/run/netns/{pod}").into()),
                root().join(vmi),
                netbind_plan::Owner { uid: 107, gid: 107 },
                self.handoff(),
                self.dir.path().join("state"),
            )
        })
    }

    pub fn start_launcher(&mut self, handoff: &Path) {
        assert!(self.start_launcher_args(handoff, &[]), "launcher not ready");
    }

    /// Starts the launcher; true once it printed its ready line.
    pub fn start_launcher_args(&mut self, handoff: &Path, extra: &[&str]) -> bool {
        self.launch(handoff, extra).contains("\"event\":\"ready\"")
    }

    /// Starts the launcher on `handoff` (plus `extra` arguments); returns its first line.
    fn launch(&mut self, handoff: &Path, extra: &[&str]) -> String {
        let own = self.own_dir("launcher");
        let domain = own.join("domain.xml");
        let mut args: Vec<String> = vec![
            "--handoff".into(),
            handoff.display().to_string(),
            "--domain-out".into(),
            domain.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let (child, line) = self.start_sandboxed_line("netbind-launcher", &args);
        self.launcher = Some(child);
        line
    }

    /// A directory of the fixture's that uid 107 owns.
    pub fn own_dir(&self, name: &str) -> PathBuf {
        let own = self.dir.path().join(name);
        std::fs::create_dir_all(&own).unwrap();
        let cpath = std::ffi::CString::new(own.to_str().unwrap()).unwrap();
        // SAFETY: chown on a NUL-terminated path we just created.
        let rc = unsafe { libc::chown(cpath.as_ptr(), 107, 107) };
        assert_eq!(rc, 0);
        own
    }

    /// Starts one of netbind's binaries in exactly the sandbox `netbind up` starts the
    /// launcher in: the pod's netns, its own PID and mount namespaces, uid 107 with no
    /// capability, the VM syscall filter. Returns it and whether its first stdout line was a
    /// ready line.
    pub fn start_sandboxed(&self, program: &str, args: &[String]) -> (Child, bool) {
        let (child, line) = self.start_sandboxed_line(program, args);
        (child, line.contains("\"event\":\"ready\""))
    }

    /// The same, with the first line it printed.
    pub fn start_sandboxed_line(&self, program: &str, args: &[String]) -> (Child, String) {
        std::fs::create_dir_all(netbind_podsim::run_dir()).unwrap();
        let tun = netbind_podsim::tun_node().expect("the sandbox's tun node");
        let vm_exec = netbind_e2e::bin("netbind-vm-exec");
        let sandbox = Sandbox {
            netns: &self.pod,
            tun: &tun,
            pod_dir: self.dir.path(),
            vm_exec: &vm_exec,
        };
        let bin = netbind_e2e::bin(program);
        let mut child = sandbox
            .command(None, bin.to_str().unwrap(), args)
            .stdout(Stdio::piped())
            .stderr(match &self.log {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap_or_else(|err| panic!("{program}: {err}"));
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        (child, line)
    }

    /// Stops the launcher and starts it again on the current hand-off record (what a
    /// supervisor does after phase 1 changed it); returns its ready line.
    pub fn restart_launcher(&mut self) -> String {
        if let Some(mut child) = self.launcher.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let line = self.launch(&self.handoff(), &[]);
        assert!(
            line.contains("\"event\":\"ready\""),
            "launcher not ready: {line}"
        );
        line
    }

    /// The launcher's own pid (below the sandbox's `unshare` and its PID 1).
    pub fn launcher_pid(&self) -> u32 {
        self.running_launcher_pid()
            .expect("the launcher runs in its sandbox")
    }

    /// The same, `None` once the launcher has exited (and its sandbox with it).
    pub fn running_launcher_pid(&self) -> Option<u32> {
        let sandbox = Proc::of(self.launcher.as_ref()?.id())?;
        sandbox_program(sandbox).map(|p| p.pid)
    }

    pub fn guest(&self, cmd: &str) -> Output {
        sh(&format!("ip netns exec {}-vm {cmd}", self.pod))
    }

    /// Runs a client in the guest namespace; returns its `NB key=value` report.
    pub fn client(&self, cmd: &str) -> Vec<(String, String)> {
        client_in(&format!("{}-vm", self.pod), cmd)
    }
}

/// Runs a client in namespace `ns` (at most 30 s); returns its `NB key=value` report.
pub fn client_in(ns: &str, cmd: &str) -> Vec<(String, String)> {
    let output = sh(&format!("ip netns exec {ns} timeout 30 {cmd}"));
    let out = String::from_utf8_lossy(&output.stdout);
    out.lines()
        .filter_map(|l| l.find("NB ").map(|i| &l[i + 3..]))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

pub fn get<'a>(lease: &'a [(String, String)], wanted: &str) -> &'a str {
    lease
        .iter()
        .find(|(key, _)| key == wanted)
        .map_or("", |(_, v)| v.as_str())
}

pub fn clients_dir() -> String {
    root().join("testdata/dhcp-clients").display().to_string()
}

pub fn udhcpc(fixture: &Fixture, iface: &str) -> Vec<(String, String)> {
    fixture.client(&format!(
        "busybox udhcpc -i {iface} -f -q -n -t 3 -T 2 -O mtu -O domain -O search -O staticroutes -O hostname -s {}/udhcpc.sh",
        clients_dir()
    ))
}

pub fn dhclient(fixture: &Fixture, six: bool) -> Vec<(String, String)> {
    let dir = fixture.dir.path();
    let lease = fixture.client(&format!(
        "dhclient {} -1 -cf {clients}/dhclient.conf -sf {clients}/dhclient.sh -lf {leases} -pf {pid_file} eth0",
        if six { "-6" } else { "" },
        clients = clients_dir(),
        leases = dir
            .join(if six {
                "dhclient6.leases"
            } else {
                "dhclient.leases"
            })
            .display(),
        pid_file = dir.join("dhclient.pid").display(),
    ));
    let _ = sh(&format!(
        "kill $(cat {}) 2>/dev/null",
        dir.join("dhclient.pid").display()
    ));
    lease
}

pub fn dhcpcd(fixture: &Fixture) -> Vec<(String, String)> {
    let _ = sh("rm -f /var/lib/dhcpcd/eth0.lease");
    let lease = fixture.client(&format!(
        "dhcpcd -4 -1 -B -A -t 10 --noipv4ll -f /dev/null -o interface_mtu -o domain_name -o domain_search \
         -o domain_name_servers -o classless_static_routes -o host_name -c {}/dhcpcd.sh eth0",
        clients_dir()
    ));
    let _ = sh("rm -f /var/lib/dhcpcd/eth0.lease");
    lease
}

pub fn assert_search(lease: &[(String, String)], key: &str) {
    let found = get(lease, key);
    assert!(
        found.contains("default.svc.cluster.local")
            && found.contains("svc.cluster.local")
            && found.contains("cluster.local"),
        "{key}: {found:?} in {lease:?}"
    );
}

/// Sends raw UDP payloads to the DHCP server port from the guest namespace.
pub fn send_from_guest(fixture: &Fixture, payloads: &[Vec<u8>]) {
    netbind_testkit::in_netns(&format!("{}-vm", fixture.pod), || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_broadcast(true).unwrap();
        // The guest has no address and no route: bind to its interface so the limited
        // broadcast goes out there (as a DHCP client's would).
        netbind_testkit::bind_to_device(&sock, "eth0");
        for payload in payloads {
            sock.send_to(payload, "255.255.255.255:67").unwrap();
        }
    });
}

/// A BOOTP DISCOVER from `mac` (broadcast flag set) carrying `extra` filler options of one
/// data byte each: a guest can fill a datagram with thousands of options.
pub fn discover(mac: [u8; 6], xid: u32, extra: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 236];
    buf[0] = 1; // BOOTREQUEST
    buf[1] = 1; // Ethernet
    buf[2] = 6;
    buf[4..8].copy_from_slice(&xid.to_be_bytes());
    buf[10] = 0x80; // broadcast
    buf[28..34].copy_from_slice(&mac);
    buf.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1]);
    for idx in 0..extra {
        // Site-specific codes 224-254, none of which the server answers.
        buf.extend_from_slice(&[224 + u8::try_from(idx % 30).unwrap(), 1, 0]);
    }
    buf.push(255);
    buf
}

/// A DHCPv6 SOLICIT with a DUID-LL of `mac`, an IA_NA, and `extra` empty filler options.
pub fn solicit(mac: [u8; 6], xid: u32, extra: usize) -> Vec<u8> {
    let mut msg = vec![1u8];
    msg.extend_from_slice(&xid.to_be_bytes()[1..]);
    let opt = |msg: &mut Vec<u8>, code: u16, data: &[u8]| {
        msg.extend_from_slice(&code.to_be_bytes());
        msg.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        msg.extend_from_slice(data);
    };
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&mac);
    opt(&mut msg, 1, &duid);
    opt(&mut msg, 3, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    opt(&mut msg, 8, &[0, 0]);
    for idx in 0..extra {
        // Unassigned codes: parsed, kept, never answered.
        opt(&mut msg, 0x7f00 + u16::try_from(idx % 200).unwrap(), &[]);
    }
    msg
}

/// Sends DHCPv6 payloads to ff02::1:2 on the guest's eth0, from its link-local address.
pub fn send6_from_guest(fixture: &Fixture, payloads: &[Vec<u8>]) {
    netbind_testkit::in_netns(&format!("{}-vm", fixture.pod), || {
        let idx = nix_ifindex("eth0");
        let sock = std::net::UdpSocket::bind("[::]:0").unwrap();
        let to = std::net::SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, idx);
        for payload in payloads {
            // A full socket buffer under a flood is the kernel's business, not a failure.
            let _ = sock.send_to(payload, to);
        }
    });
}

fn nix_ifindex(name: &str) -> u32 {
    let cpath = std::ffi::CString::new(name).unwrap();
    // SAFETY: if_nametoindex reads a NUL-terminated name.
    unsafe { libc::if_nametoindex(cpath.as_ptr()) }
}

/// A number from the process's status file, in kB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Replies come from the bridge's link-local address and go to the guest's: waits for both
/// to finish duplicate address detection (dhclient -6 cannot bind before).
pub fn wait_for_link_local(fixture: &Fixture) {
    let started = std::time::Instant::now();
    loop {
        let bridge = ok(&format!(
            "ip -n {} -6 addr show dev k6t-eth0 tentative",
            fixture.pod
        ));
        let guest = ok(&format!(
            "ip -n {}-vm -6 addr show dev eth0 tentative",
            fixture.pod
        ));
        let guest_ll = ok(&format!(
            "ip -n {}-vm -6 addr show dev eth0 scope link",
            fixture.pod
        ));
        if bridge.trim().is_empty() && guest.trim().is_empty() && !guest_ll.trim().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "link-local addresses still tentative"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
