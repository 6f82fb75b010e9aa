//! Kernel-tier fixtures: a pod network namespace built the way a CNI bridge plugin would (a
//! veth to a "node" namespace, pod IPs, default route), the handler binary, read-back of the
//! kernel state, and a runner for operations as an unprivileged uid with no capabilities.
//! Every namespace is uniquely named and removed on drop, even when the test fails.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)] // test code

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub use netbind_testkit::{ok, repo_root as root, sh};

/// Kernel tests need root (a failure in CI, a loud skip elsewhere).
pub fn require_root() -> bool {
    netbind_testkit::ready(Vec::new())
}

/// A tool the test needs, on top of root.
pub fn require_tool(tool: &str) -> bool {
    netbind_testkit::ready(netbind_testkit::missing_tools(&[tool]))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    V4,
    V6,
    Dual,
}

/// A pod netns `nbt-<pid>-<n>` with `eth0` (veth, MTU 1450, fixed MAC) to `<name>-node`.
pub struct Pod {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Pod {
    pub fn new(stack: Stack) -> Pod {
        Self::with_eth0(stack, true)
    }

    /// A pod netns with only `lo` when `eth0` is false (a pod whose CNI did nothing).
    pub fn with_eth0(stack: Stack, eth0: bool) -> Pod {
        let seq = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("nbt-{}-{seq}", std::process::id());
        let pod = Pod {
            name: name.clone(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ok(&format!(
            "ip netns add {name} && ip netns add {name}-node && ip -n {name} link set lo up && ip -n {name}-node link set lo up"
        ));
        if !eth0 {
            return pod;
        }
        ok(&format!(
            "ip -n {name}-node link add veth-n address 02:aa:00:00:00:01 type veth peer name eth0 address 0a:58:0a:f4:00:05 netns {name} && \
             ip -n {name}-node link set veth-n up && ip -n {name} link set eth0 mtu 1450 && ip -n {name}-node link set veth-n mtu 1450"
        ));
        if matches!(stack, Stack::V4 | Stack::Dual) {
            ok(&format!(
                "ip -n {name}-node addr add 10.244.0.1/24 dev veth-n && ip -n {name} addr add 10.244.0.5/24 dev eth0"
            ));
        }
        if matches!(stack, Stack::V6 | Stack::Dual) {
            ok(&format!(
                "ip -n {name}-node addr add fd00:10:244::1/64 dev veth-n nodad && ip -n {name} addr add fd00:10:244::5/64 dev eth0 nodad"
            ));
        }
        ok(&format!("ip -n {name} link set eth0 up"));
        // The kernel adds eth0's IPv6 link-local address a moment after the link comes up, and
        // the plan copies every pod address: wait for it so every run observes the same pod.
        let started = std::time::Instant::now();
        while ok(&format!("ip -n {name} -6 addr show dev eth0 scope link"))
            .trim()
            .is_empty()
        {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "no link-local address on eth0"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if matches!(stack, Stack::V4 | Stack::Dual) {
            ok(&format!("ip -n {name} route add default via 10.244.0.1"));
        }
        if matches!(stack, Stack::V6 | Stack::Dual) {
            ok(&format!(
                "ip -n {name} -6 route add default via fd00:10:244::1"
            ));
        }
        pod
    }

    pub fn netns(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn handoff_dir(&self) -> PathBuf {
        self.dir.path().join("handoff")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `netbind-handler <sub> --netns .. --handoff-dir .. --state-dir ..` plus `extra`.
    pub fn handler(&self, sub: &str, extra: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netbind-handler"));
        cmd.current_dir(root())
            .arg(sub)
            .args(["--netns", &self.netns()]);
        if sub != "observe" {
            cmd.arg("--handoff-dir")
                .arg(self.handoff_dir())
                .arg("--state-dir")
                .arg(self.state_dir());
        }
        cmd.args(extra).output().expect("handler runs")
    }

    pub fn setup(&self, vmi: &str, extra: &[&str]) -> Output {
        let mut args = vec!["--vmi", vmi];
        args.extend_from_slice(extra);
        self.handler("setup", &args)
    }

    pub fn setup_ok(&self, vmi: &str, extra: &[&str]) {
        let out = self.setup(vmi, extra);
        assert!(
            out.status.success(),
            "setup {vmi} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn teardown(&self) -> Output {
        self.handler("teardown", &[])
    }

    pub fn exec(&self, cmd: &str) -> String {
        ok(&format!("ip netns exec {} {cmd}", self.name))
    }

    pub fn observed(&self) -> netbind_model::pod::ObservedPod {
        let out = self.handler("observe", &[]);
        assert!(
            out.status.success(),
            "observe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        netbind_model::pod::ObservedPod::from_json(&String::from_utf8_lossy(&out.stdout))
            .expect("POD.json")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Teardown stops what setup started outside the namespace (the RA responder, which
        // would otherwise keep the deleted namespace alive through its socket).
        let _ = self.teardown();
        let _ = sh(&format!(
            "ip netns del {ns} 2>/dev/null; ip netns del {ns}-node 2>/dev/null",
            ns = self.name
        ));
    }
}

/// What Multus adds to a pod for the secondary network "blue" of
/// `examples/vmi-masquerade-multus.yaml`: a veth named pod<sha256("blue")[:11]>, MTU 9000,
/// 192.168.100.10/30 and a route to 172.16.0.0/16 through it.
pub fn add_multus_blue(pod: &Pod) {
    ok(&format!(
        "ip -n {ns}-node link add veth-b type veth peer name pod16477688c0e netns {ns} && \
         ip -n {ns} link set pod16477688c0e mtu 9000 && ip -n {ns} addr add 192.168.100.10/30 dev pod16477688c0e && \
         ip -n {ns} link set pod16477688c0e up && ip -n {ns} route add 172.16.0.0/16 via 192.168.100.9",
        ns = pod.name
    ));
}

/// The plan the handler will apply for this pod (same inputs, through the library).
pub fn plan_for(
    vmi: &str,
    pod: &netbind_model::pod::ObservedPod,
    gates: &[&str],
) -> netbind_plan::PodNetPlan {
    let text = std::fs::read_to_string(root().join(vmi)).expect("vmi");
    let cluster = netbind_model::admission::ClusterConfig {
        feature_gates: gates.iter().map(|g| (*g).into()).collect(),
        ..Default::default()
    };
    let vmi = netbind_model::check::check_vmi(&text, &cluster).expect("valid vmi");
    let opts = netbind_plan::PlanOptions {
        owner: netbind_plan::Owner { uid: 107, gid: 107 },
        resolv_conf: "",
        cluster: &cluster,
        networks: None,
    };
    netbind_plan::plan(&vmi, pod, &opts).expect("plan")
}

pub fn links_json(ns: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(&format!("ip -n {ns} -j -d link show"))).expect("ip -j link")
}

pub fn addrs_json(ns: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(&format!("ip -n {ns} -j addr show"))).expect("ip -j addr")
}

fn is_auto_ll(addr: &serde_json::Value) -> bool {
    addr["family"] == "inet6"
        && addr["local"]
            .as_str()
            .is_some_and(|s| s.starts_with("fe80:"))
        && addr["prefixlen"] == 64
}

/// A normalised view of everything phase 1 may touch, for equality between runs and
/// namespaces: links (no ifindex; random MACs of bridges, taps and `-nic` links left out),
/// addresses (kernel-made link-local left out except on down links), routes, the nftables
/// ruleset (stateless) and the sysctls netbind writes.
pub fn snapshot(ns: &str) -> String {
    let mut out = Vec::new();
    let links = links_json(ns);
    let name_of = |idx: &serde_json::Value| {
        links
            .iter()
            .find(|link| link["ifindex"] == *idx)
            .and_then(|link| link["ifname"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let mut ls: Vec<String> = links
        .iter()
        .map(|link| {
            let name = link["ifname"].as_str().unwrap_or("");
            let kind = match link["linkinfo"]["info_kind"].as_str() {
                Some("ifb") => "dummy",
                Some(info_kind) => info_kind,
                None => "-",
            };
            // Kernel-chosen MACs: bridges, taps, the renamed pod interface (it takes the bridge's),
            // and ifb (the dummy stand-in cannot take one).
            let random_mac = matches!(link["linkinfo"]["info_kind"].as_str(), Some("bridge" | "tun" | "ifb")) || name.ends_with("-nic");
            let mac = if random_mac && link["address"] != "02:00:00:00:00:00" { "random".to_string() } else { link["address"].as_str().unwrap_or("").to_string() };
            let master = link.get("master").and_then(|m| m.as_str()).unwrap_or("-").to_string();
            let up = link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"));
            let data = &link["linkinfo"]["info_data"];
            let tun = if kind == "tun" {
                format!(" user={} group={} mq={} persist={}", data["user"], data["group"], data["multi_queue"], data["persist"])
            } else {
                String::new()
            };
            let learning = link["linkinfo"]["info_slave_data"]["learning"].to_string();
            format!("link {name} kind={kind} mtu={} mac={mac} master={master} up={up} learning={learning}{tun}", link["mtu"])
        })
        .collect();
    ls.sort();
    out.extend(ls);
    let mut addrs: Vec<String> = Vec::new();
    for link in addrs_json(ns) {
        let up = link["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        for addr in link["addr_info"].as_array().into_iter().flatten() {
            if up && is_auto_ll(addr) {
                continue;
            }
            addrs.push(format!(
                "addr {} {}/{}",
                link["ifname"].as_str().unwrap_or(""),
                addr["local"].as_str().unwrap_or(""),
                addr["prefixlen"]
            ));
        }
    }
    addrs.sort();
    out.extend(addrs);
    for fam in ["-4", "-6"] {
        let routes: Vec<serde_json::Value> =
            serde_json::from_str(&ok(&format!("ip -n {ns} -j {fam} route show table main")))
                .expect("routes");
        let mut rs: Vec<String> = routes
            .iter()
            .filter(|r| {
                !r["dst"]
                    .as_str()
                    .is_some_and(|data| data.starts_with("fe80:"))
            })
            .map(|r| format!("route {} via {} dev {}", r["dst"], r["gateway"], r["dev"]))
            .collect();
        rs.sort();
        out.extend(rs);
    }
    let _ = name_of;
    out.push(ok(&format!("ip netns exec {ns} nft -s list ruleset")));
    for sysctl in [
        "net/ipv4/ip_forward",
        "net/ipv6/conf/all/forwarding",
        "net/ipv4/conf/all/arp_ignore",
        "net/ipv4/ip_unprivileged_port_start",
    ] {
        out.push(format!(
            "sysctl {sysctl}={}",
            ok(&format!("ip netns exec {ns} cat /proc/sys/{sysctl}")).trim()
        ));
    }
    out.join("\n")
}

/// What an operation run as an unprivileged uid reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Errno(i32),
}

/// Runs helper operation `op` as `uid:gid` with no capabilities (bounding set empty,
/// no_new_privs), inside the pod netns, in a private mount namespace where `/dev/net/tun` is a
/// 0666 node (as a device plugin would provide; the host's node is never changed).
pub fn run_unprivileged(pod: &Pod, uid: u32, gid: u32, op: &str) -> Outcome {
    let tun = pod.dir.path().join("tun");
    if !tun.exists() {
        let cpath = CString::new(tun.to_str().unwrap()).unwrap();
        // SAFETY: mknod with a valid path; device 10:200 is /dev/net/tun.
        let rc = unsafe {
            libc::mknod(
                cpath.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(10, 200),
            )
        };
        assert_eq!(rc, 0, "mknod tun");
        // SAFETY: chmod with a valid path (the umask narrowed mknod's mode).
        unsafe { libc::chmod(cpath.as_ptr(), 0o666) };
    }
    let ns_fd = std::fs::File::open(pod.netns()).expect("open netns");
    let tun_c = CString::new(tun.to_str().unwrap()).unwrap();
    let dev_c = CString::new("/dev/net/tun").unwrap();
    let root_c = CString::new("/").unwrap();
    let mut cmd = Command::new(std::env::current_exe().expect("test exe"));
    cmd.args(["--exact", "helper_op", "--nocapture", "--test-threads", "1"])
        .env("NETBIND_HELPER_OP", op);
    use std::os::fd::AsRawFd;
    let fd = ns_fd.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls on data
    // prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let err = || std::io::Error::last_os_error();
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 || libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(err());
            }
            if libc::mount(
                std::ptr::null(),
                root_c.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            if libc::mount(
                tun_c.as_ptr(),
                dev_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(err());
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(err());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("helper runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("HELPER-RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "helper {op} printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    match line.trim() {
        "ok" => Outcome::Ok,
        errno => Outcome::Errno(errno.parse().expect("errno")),
    }
}

/// The body of the helper (call it from a `#[test] fn helper_op()` in each test file).
pub fn helper_op_body() {
    let Ok(op) = std::env::var("NETBIND_HELPER_OP") else {
        return;
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap_or("")
        .to_string();
    assert!(
        cap_eff.ends_with("0000000000000000"),
        "helper must hold no capability: {cap_eff}"
    );
    let (kind, arg) = op.split_once(':').unwrap_or((op.as_str(), ""));
    let result: std::io::Result<()> = {
        match kind {
            "tap" => {
                let (name, mq) = arg.split_once(':').unwrap_or((arg, "0"));
                let name = netbind_model::IfName::new(name).unwrap();
                let flags = netbind_handler::tap::tap_flags(mq == "1", false);
                netbind_handler::tap::attach(&name, flags)
                    .map(|_| ())
                    .map_err(|err| {
                        std::io::Error::from_raw_os_error(err.errno().unwrap_or(libc::EIO))
                    })
            }
            "bind" => std::net::UdpSocket::bind(arg).map(|_| ()),
            "write" => std::fs::write(arg, b"x"),
            "read" => std::fs::read(arg).map(|_| ()),
            _ => panic!("unknown helper op {op}"),
        }
    };
    match result {
        Ok(()) => println!("HELPER-RESULT ok"),
        Err(err) => println!("HELPER-RESULT {}", err.raw_os_error().unwrap_or(-1)),
    }
}
