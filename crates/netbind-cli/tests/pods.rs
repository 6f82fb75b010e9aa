//! The pod simulation of `netbind up` (no guest): several pods brought up at once get
//! distinct addresses on one node, the node bridge keeps one MAC while pods come and go, and
//! `down` releases each address. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::path::Path;
use std::process::{Command, Output};

const NODE_NS: &str = "netbind-node";
const NODE_BRIDGE: &str = "nb-node0";

fn netbind(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netbind"))
        .current_dir(common::root())
        .args(args)
        .output()
        .expect("netbind runs")
}

/// The node bridge's MAC and how the kernel says it was assigned (3 = set by user space).
fn node_bridge_mac() -> (String, String) {
    let cmd = Command::new("ip")
        .args(["-n", NODE_NS, "-j", "link", "show", NODE_BRIDGE])
        .output()
        .unwrap();
    assert!(
        cmd.status.success(),
        "{}",
        String::from_utf8_lossy(&cmd.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&cmd.stdout).unwrap();
    let mac = doc[0]["address"].as_str().unwrap().to_string();
    let cmd = Command::new("ip")
        .args(["netns", "exec", NODE_NS, "cat"])
        .arg(format!("/sys/class/net/{NODE_BRIDGE}/addr_assign_type"))
        .output()
        .unwrap();
    (mac, String::from_utf8_lossy(&cmd.stdout).trim().to_string())
}

/// The pod reaches the node's gateway address through its eth0. (Not the other way round: the
/// masquerade rules hand everything addressed to the pod IP to the guest, not booted here.)
fn pod_reaches_node(pod: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &format!("netbind-{pod}")])
        .args(["busybox", "ping", "-c", "1", "-W", "2", "10.244.0.1"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn several_pods_share_the_node_without_colliding() {
    if !common::root_with_bins(&common::POD_BINS) {
        return;
    }
    let pid = std::process::id();
    let pods: Vec<(String, &str)> = [
        "examples/vmi-masquerade.yaml",
        "examples/vmi-bridge.yaml",
        "examples/vmi-masquerade.yaml",
    ]
    .iter()
    .enumerate()
    .map(|(idx, file)| (format!("pods-{pid}-{idx}"), *file))
    .collect();
    // Remove every pod even if an assertion fails.
    struct Down(Vec<String>);
    impl Drop for Down {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = netbind(&["down", name]);
            }
        }
    }
    let _down = Down(pods.iter().map(|(name, _)| name.clone()).collect());

    // All at once: the node and the address allocator are shared under a lock.
    let outs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(name, file)| {
                scope.spawn(move || netbind(&["up", file, "--name", name, "--json"]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = Vec::new();
    for out in &outs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ip = doc["pod_ip"].as_str().unwrap().to_string();
        assert!(
            Path::new(&format!("/run/netbind/ipam/{ip}")).exists(),
            "{ip} recorded as allocated"
        );
        ips.push(ip);
    }
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ips.len(), "distinct pod addresses: {ips:?}");

    // Each masquerade pod is wired to the node (a bridge pod's eth0 now belongs to its guest,
    // which is not booted here).
    for (name, file) in &pods {
        if file.contains("masquerade") {
            assert!(pod_reaches_node(name), "pod {name} reaches the node");
        }
    }

    // A fixed, user-assigned MAC: the kernel never recalculates it from the ports.
    let before = node_bridge_mac();
    assert_eq!(before, ("02:6e:62:00:00:01".to_string(), "3".to_string()));

    // Down, one by one: the address goes back, the node bridge keeps its MAC, the others stay.
    for (idx, ((name, _), ip)) in pods.iter().zip(&ips).enumerate() {
        let down = netbind(&["down", name]);
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
        assert_eq!(common::address_held_by(name), None, "{ip} released by down");
        assert!(!Path::new(&format!("/run/netns/netbind-{name}")).exists());
        if idx + 1 < pods.len() {
            assert_eq!(
                node_bridge_mac(),
                before,
                "node bridge MAC after {name} left"
            );
            let (last, _) = pods.last().unwrap();
            assert!(pod_reaches_node(last), "pod {last} still wired");
        }
    }
}

/// Two `up` of one name at once: exactly one wins, and the loser's failure leaves the
/// winner's pod running (it used to clean up the winner's namespace and address).
#[test]
fn two_ups_of_one_name_one_wins_and_the_other_leaves_it_alone() {
    if !common::root_with_bins(&common::POD_BINS) {
        return;
    }
    let name = format!("race-{}", std::process::id());
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = netbind(&["down", &self.0]);
        }
    }
    let _down = Down(name.clone());
    let outs: Vec<Output> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    netbind(&[
                        "up",
                        "examples/vmi-masquerade.yaml",
                        "--name",
                        &name,
                        "--json",
                    ])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<&Output> = outs.iter().filter(|out| out.status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one up wins: {outs:?}");
    for out in outs.iter().filter(|out| !out.status.success()) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is already up"), "{err}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&won[0].stdout).unwrap();
    assert!(Path::new(&format!("/run/netns/netbind-{name}")).exists());
    assert_eq!(
        common::address_held_by(&name).as_deref(),
        doc["pod_ip"].as_str(),
        "the winner keeps its address"
    );
    assert!(pod_reaches_node(&name), "the winner's pod is still wired");
    let me = common::pod_status(&name).expect("listed");
    assert!(
        me["launcher"].as_str().unwrap().starts_with("running"),
        "{me}"
    );
}

/// The simulator's lock is root's alone (an unprivileged flock on it would stop every `up`),
/// and an `up` waiting for it still stops on SIGTERM.
#[test]
fn the_lock_is_out_of_reach_and_a_waiting_up_stops_on_sigterm() {
    if !common::root_with_bins(&common::POD_BINS) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let lock = Path::new("/run/netbind/lock.root");
    // Any up creates it; take it ourselves as root to block the next up.
    std::fs::create_dir_all("/run/netbind").unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .unwrap();
    let meta = file.metadata().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: flock on an open fd, released when f is dropped.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
    assert_eq!(rc, 0);
    let name = format!("sigterm-{}", std::process::id());
    let mut up = Command::new(env!("CARGO_BIN_EXE_netbind"))
        .current_dir(common::root())
        .args(["up", "examples/vmi-masquerade.yaml", "--name", &name])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(up.try_wait().unwrap().is_none(), "up waits for the lock");
    // SAFETY: kill with the pid of the child this test started.
    unsafe { libc::kill(i32::try_from(up.id()).unwrap(), libc::SIGTERM) };
    let started = std::time::Instant::now();
    while up.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "up ignored SIGTERM while waiting for the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = up.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(file);
    assert!(!Path::new(&format!("/run/netbind/pods/{name}")).exists());
    // After an up has opened it, the lock file is root's and 0600: uid 107 cannot open it.
    let _ = netbind(&["up", "examples/vmi-masquerade.yaml", "--name", &name]);
    let _ = netbind(&["down", &name]);
    let m2 = std::fs::metadata(lock).unwrap();
    assert_eq!(
        (m2.uid(), m2.mode() & 0o777),
        (0, 0o600),
        "was {:o}",
        meta.mode()
    );
    let cmd = Command::new("setpriv")
        .args([
            "--reuid=107",
            "--regid=107",
            "--clear-groups",
            "flock",
            "-n",
        ])
        .arg(lock)
        .arg("true")
        .output()
        .unwrap();
    assert!(!cmd.status.success(), "uid 107 could flock the lock");
}

#[test]
fn the_cluster_default_binding_reaches_phase_1() {
    if !common::root_with_bins(&common::POD_BINS) {
        return;
    }
    // A VMI with no interface gets the cluster's default binding: `up` admits it with the
    // setting, and phase 1 must apply the same one (it gets the whole configuration, typed).
    // The setting comes from the shorthand flag or from KubeVirt's own CR: the same result.
    let dir = tempfile::tempdir().unwrap();
    let cr = |binding: &str| {
        let path = dir.path().join(format!("kubevirt-{binding}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {{name: kubevirt, namespace: kubevirt}}\nspec:\n  configuration:\n    network:\n      defaultNetworkInterface: {binding}\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let cases = [
        (
            "masquerade",
            "flag",
            vec![
                "--default-network-interface".to_string(),
                "masquerade".into(),
            ],
        ),
        (
            "bridge",
            "flag",
            vec!["--default-network-interface".into(), "bridge".into()],
        ),
        (
            "masquerade",
            "cr",
            vec!["--kubevirt-config".into(), cr("masquerade")],
        ),
        (
            "bridge",
            "cr",
            vec!["--kubevirt-config".into(), cr("bridge")],
        ),
    ];
    for (binding, source, setting) in cases {
        let name = format!("dni-{binding}-{source}-{}", std::process::id());
        let mut args = vec![
            "up",
            "testdata/vmi/no-interfaces.yaml",
            "--name",
            &name,
            "--json",
        ];
        args.extend(setting.iter().map(String::as_str));
        let out = netbind(&args);
        let links = Command::new("ip")
            .args(["-n", &format!("netbind-{name}"), "-j", "addr", "show"])
            .output()
            .unwrap();
        let _ = netbind(&["down", &name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["binding"], binding);
        let links: serde_json::Value = serde_json::from_slice(&links.stdout).unwrap();
        let names: Vec<&str> = links
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .collect();
        let gateway = links.as_array().unwrap().iter().any(|l| {
            l["ifname"] == "k6t-eth0"
                && l["addr_info"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["local"] == "10.0.2.1"))
        });
        match binding {
            // The masquerade gateway on the bridge, the pod interface untouched.
            "masquerade" => assert!(gateway && !names.contains(&"eth0-nic"), "{links:#}"),
            // The pod interface moved under the bridge as eth0-nic, no masquerade gateway.
            _ => assert!(!gateway && names.contains(&"eth0-nic"), "{links:#}"),
        }
    }
}
