//! The CRI tier (root): a private containerd (its own netns, mount namespace, root, state,
//! socket, CNI dirs) runs a VM pod as the kubelet would. RunPodSandbox with the VMI
//! annotation runs the CNI chain bridge + host-local → netbind-cni; the launcher and QEMU run
//! as containers of that pod (uid/gid 107, every capability dropped, no_new_privs, read-only
//! root filesystem, own PID namespace; the hand-off record mounted read-only; /dev/net/tun as
//! a CRI device). The guest's lease, its ping of the gateway, egress through the NAT and
//! ingress through the pod IP are checked; StopPodSandbox + RemovePodSandbox must leave
//! nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed step is a failed test

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netbind_cri::client::{ContainerSpec, Cri, PodSpec};
use netbind_cri::node::{APP_IMAGE, NODE_LISTEN_PORT, Node, NodeConfig};
use netbind_podsim::vm::{self, GuestImage};

fn ready() -> bool {
    let mut missing = netbind_testkit::missing_tools(&[
        "containerd",
        "runc",
        "ctr",
        "buildah",
        "catatonit",
        "nsenter",
        "unshare",
        "busybox",
        "qemu-system-x86_64",
    ]);
    if GuestImage::locate().is_err() {
        missing.push("the guest image (scripts/build-guest.sh)".into());
    }
    for bin in ["netbind-cni", "netbind-ra", "netbind-launcher"] {
        if !bins().join(bin).is_file() {
            missing.push(format!("{bin} (cargo build --bins)"));
        }
    }
    netbind_testkit::ready(missing)
}

/// The binaries of this build (target/PROFILE), which `cargo build --bins` made.
fn bins() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn node(tag: &str, with_netbind: bool) -> Node {
    let dir = tempfile::Builder::new()
        .prefix(&format!("netbind-cri-{tag}-"))
        .tempdir()
        .unwrap()
        .keep();
    Node::start(NodeConfig {
        dir,
        netns: format!("nbcri-{}-{tag}", std::process::id()),
        subnet_prefix: "10.251.7".into(),
        netbind_bins: with_netbind.then(bins),
    })
    .expect("the private containerd starts")
}

fn pod_spec(node: &Node, name: &str, vmi: Option<&str>) -> PodSpec {
    let log_directory = node.config.logs_dir().join(name);
    std::fs::create_dir_all(&log_directory).unwrap();
    PodSpec {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("uid-{name}-{}", std::process::id()),
        annotations: vmi
            .map(|v| HashMap::from([("netbind.io/vmi".to_string(), v.to_string())]))
            .unwrap_or_default(),
        labels: HashMap::from([("kubevirt.io".to_string(), "virt-launcher".to_string())]),
        log_directory: log_directory.display().to_string(),
    }
}

/// A directory for one container's writes, owned by the VM user.
fn vm_dir(node: &Node, path: &str) -> PathBuf {
    let dir = node.config.dir.join(path);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(107), Some(107)).unwrap();
    dir
}

fn locked_down(
    name: &str,
    command: Vec<String>,
    mounts: Vec<(String, String, bool)>,
) -> ContainerSpec {
    let mut all = vec![("/usr".to_string(), "/usr".to_string(), true)];
    all.extend(mounts);
    ContainerSpec {
        name: name.into(),
        image: APP_IMAGE.into(),
        command,
        mounts: all,
        uid: 107,
        gid: 107,
        ..ContainerSpec::default()
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// From the node namespace: an HTTP GET to `ip:port` answered by the guest.
fn node_reaches_guest(node: &Node, ip: &str, port: u16, patience: Duration) -> bool {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    netbind_testkit::in_netns(&node.config.netns, || {
        let t = Instant::now();
        while t.elapsed() < patience {
            if let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut body = String::new();
                let _ = c.read_to_string(&mut body);
                if body.contains("netbind-guest-ok") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })
}

fn wait_line(console: &Path, needle: &str, secs: u64) -> Option<String> {
    vm::wait_for_line(console, needle, Duration::from_secs(secs), &|| false)
}

/// One VM pod from RunPodSandbox to RemovePodSandbox; `guest_ip` is the address the guest
/// must lease (masquerade: KubeVirt's 10.0.2.2; bridge: the pod's own).
fn vm_pod(tag: &str, vmi_file: &str, masquerade: bool) {
    let node = node(tag, true);
    let mut cri: Cri = node.client().unwrap();
    let vmi = std::fs::read_to_string(netbind_testkit::repo_root().join(vmi_file)).unwrap();
    let pod = pod_spec(&node, &format!("virt-launcher-{tag}"), Some(&vmi));
    let (sandbox, took) = cri
        .run_pod(&pod)
        .expect("RunPodSandbox through the CNI chain");
    eprintln!("RunPodSandbox took {took:?}");
    let net = cri.pod_network(&sandbox).unwrap();
    // containerd caches the chain's result in its own shape: interfaces by name.
    let made = |name: &str| {
        net.cni_result["Interfaces"][name]["Sandbox"]
            .as_str()
            .is_some_and(|s| s == net.netns)
    };
    assert!(
        made("k6t-eth0") && made("tap0"),
        "the chain's result lists netbind's bridge and tap in the pod: {}",
        net.cni_result
    );
    let handoff_dir = node.config.netbind_run_dir().join(&sandbox).join("handoff");
    let handoff = vm::read_handoff(&handoff_dir).expect("netbind-cni wrote the hand-off");
    let iface = &handoff.interfaces[0];

    // The launcher: its hand-off record read-only, a directory of its own for the XML.
    let launcher_dir = vm_dir(&node, &format!("pods/{sandbox}/launcher"));
    let launcher = cri
        .start_container(
            &sandbox,
            &pod,
            &locked_down(
                "netbind-launcher",
                vec![
                    "/netbind/netbind-launcher".into(),
                    "--handoff".into(),
                    "/handoff".into(),
                    "--domain-out".into(),
                    "/work/domain.xml".into(),
                ],
                vec![
                    (path(&bins()), "/netbind".into(), true),
                    (path(&handoff_dir), "/handoff".into(), true),
                    (path(&launcher_dir), "/work".into(), false),
                ],
            ),
        )
        .expect("the launcher container starts");
    let t = Instant::now();
    while !launcher_dir.join("domain.xml").is_file() && t.elapsed() < Duration::from_secs(20) {
        assert_eq!(
            cri.exited(&launcher).unwrap(),
            None,
            "the launcher exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let xml = std::fs::read_to_string(launcher_dir.join("domain.xml")).expect("domain.xml");
    assert!(xml.contains("<target dev='tap0' managed='no'/>"), "{xml}");

    // QEMU on the pre-created tap: /dev/net/tun from a 0666 node, no capability.
    let guest = GuestImage::locate().unwrap();
    let guest_dir = guest.kernel.parent().unwrap().to_path_buf();
    let vm_work = vm_dir(&node, &format!("pods/{sandbox}/vm"));
    let in_ctr = GuestImage {
        kernel: "/guest/vmlinuz".into(),
        initrd: "/guest/initrd.gz".into(),
    };
    let gateway = node.config.gateway();
    let cmdline = vm::cmdline(
        &[8080],
        Some(&format!("{gateway}:{NODE_LISTEN_PORT}")),
        None,
    );
    let d = &iface.domain;
    let mut command = vec!["/usr/bin/qemu-system-x86_64".to_string()];
    command.extend(vm::qemu_args(
        &in_ctr,
        Path::new("/work/console"),
        iface.tap.as_str(),
        &d.mac.to_string(),
        d.mtu,
        d.rom_disabled,
        &cmdline,
    ));
    let mut compute = locked_down(
        "compute",
        command,
        vec![
            (path(&guest_dir), "/guest".into(), true),
            (path(&vm_work), "/work".into(), false),
        ],
    );
    compute.devices = vec![(path(&node.config.tun_node()), "/dev/net/tun".into())];
    let qemu = cri
        .start_container(&sandbox, &pod, &compute)
        .expect("the QEMU container starts");

    let console = vm_work.join("console");
    let lease = wait_line(&console, "NETBIND-GUEST lease ", 180);
    let tail =
        || String::from_utf8_lossy(&vm::read_console(&console).unwrap_or_default()).into_owned();
    let lease = lease.unwrap_or_else(|| {
        panic!(
            "no lease in 180 s; qemu: {:?}; console:\n{}",
            cri.exited(&qemu).ok(),
            tail()
        )
    });
    let want = if masquerade {
        "10.0.2.2".to_string()
    } else {
        net.ip.clone()
    };
    assert!(lease.contains(&format!("ip={want}")), "{lease}");
    assert!(
        wait_line(&console, "NETBIND-GUEST ping-gateway ok", 30).is_some(),
        "ping of the gateway:\n{}",
        tail()
    );
    assert!(
        wait_line(&console, "NETBIND-GUEST egress ok", 60).is_some(),
        "egress to the node:\n{}",
        tail()
    );
    assert!(
        node_reaches_guest(&node, &net.ip, 8080, Duration::from_secs(30)),
        "ingress: node → pod {}:8080 → guest",
        net.ip
    );
    assert_eq!(
        cri.exited(&launcher).unwrap(),
        None,
        "the launcher still serves"
    );

    // Stop + remove: nothing of the pod may remain.
    cri.remove_pod(&sandbox)
        .expect("StopPodSandbox + RemovePodSandbox");
    assert!(cri.sandboxes().unwrap().is_empty(), "no sandbox left");
    assert!(cri.containers().unwrap().is_empty(), "no container left");
    assert!(
        !node.config.netbind_run_dir().join(&sandbox).exists(),
        "the hand-off and state files are removed"
    );
    assert_eq!(
        node.allocated_addresses(),
        Vec::<String>::new(),
        "no IPAM address held"
    );
    let left: Vec<String> = node
        .links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect();
    assert!(left.is_empty(), "the pod's veth end is gone: {left:?}");
}

#[test]
fn masquerade_vm_pod_on_containerd() {
    if !ready() {
        return;
    }
    vm_pod("masq", "examples/vmi-masquerade.yaml", true);
}

#[test]
fn bridge_vm_pod_on_containerd() {
    if !ready() {
        return;
    }
    vm_pod("bridge", "examples/vmi-bridge.yaml", false);
}

#[test]
fn an_invalid_vmi_annotation_fails_the_sandbox_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let node = node("invalid", true);
    let mut cri = node.client().unwrap();
    let bad = std::fs::read_to_string(netbind_testkit::repo_root().join("examples/vmi-ports.yaml"))
        .unwrap()
        .replace("port: 80", "port: 70000");
    let pod = pod_spec(&node, "virt-launcher-bad", Some(&bad));
    let err = cri.run_pod(&pod).expect_err("RunPodSandbox must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("netbind.io/vmi") && msg.contains("ports[0]"),
        "containerd reports netbind's message: {msg}"
    );
    assert!(cri.sandboxes().unwrap().is_empty(), "no sandbox left");
    assert_eq!(
        node.allocated_addresses(),
        Vec::<String>::new(),
        "no IPAM address held"
    );
    let run_dir = node.config.netbind_run_dir();
    let leftovers: Vec<_> = std::fs::read_dir(&run_dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "no netbind files: {leftovers:?}");
}
