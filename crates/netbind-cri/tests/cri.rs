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
use std::path::{Path, PathBuf};
use std::time::Duration;

use netbind_cri::client::{Cri, PodSpec};
use netbind_cri::node::{BindingPluginNet, NODE_LISTEN_PORT, Node, NodeConfig};
use netbind_cri::pluginpod::{PluginPod, PluginPodConfig};
use netbind_cri::vmpod::{VmPod, VmPodConfig};
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
    for bin in [
        "netbind-cni",
        "netbind-ra",
        "netbind-launcher",
        "netbind-vm-exec",
        "netbind-sidecar",
    ] {
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
    node_with(tag, with_netbind, None)
}

fn node_with(tag: &str, with_netbind: bool, binding_plugin: Option<BindingPluginNet>) -> Node {
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
        binding_plugin,
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

/// From the node namespace: an HTTP GET to `ip:port` answered by the guest.
fn node_reaches_guest(node: &Node, ip: &str, port: u16, patience: Duration) -> bool {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    netbind_testkit::in_netns(&node.config.netns, || {
        vm::guest_page_answers(addr, patience)
    })
}

/// After the lease: the guest pings its gateway and reaches the node (its console says so), and
/// the node reaches the guest's port 8080 through the pod IP.
fn assert_reachable(
    node: &Node,
    pod_ip: &str,
    console_line: &dyn Fn(&str, Duration) -> Option<String>,
) {
    for (line, what) in [
        ("NETBIND-GUEST ping-gateway ok", "ping of the gateway"),
        ("NETBIND-GUEST egress ok", "egress to the node"),
    ] {
        assert!(
            console_line(line, Duration::from_secs(60)).is_some(),
            "{what}: not on the console"
        );
    }
    assert!(
        node_reaches_guest(node, pod_ip, 8080, Duration::from_secs(30)),
        "ingress: node → pod {pod_ip}:8080 → guest"
    );
}

/// One VM pod from RunPodSandbox to RemovePodSandbox. The guest must lease KubeVirt's
/// 10.0.2.2 (masquerade) or the pod's own address (bridge).
fn vm_pod(tag: &str, vmi_file: &str, masquerade: bool) {
    let node = node(tag, true);
    let mut cri: Cri = node.client().unwrap();
    let config = VmPodConfig {
        name: format!("virt-launcher-{tag}"),
        namespace: "default".into(),
        vmi: std::fs::read_to_string(netbind_testkit::repo_root().join(vmi_file)).unwrap(),
        bins: bins(),
        guest: GuestImage::locate().unwrap(),
        cmdline: vm::cmdline(
            &[8080],
            Some(&format!("{}:{NODE_LISTEN_PORT}", node.config.gateway())),
            None,
        ),
        netbind_run_dir: node.config.netbind_run_dir(),
        work_dir: node.config.dir.join("pods").join(tag),
        tun: node.config.tun_node(),
        boot: true,
    };
    let pod = VmPod::start(&mut cri, &config).expect("the VM pod starts");
    eprintln!("RunPodSandbox took {:?}", pod.run_pod_sandbox);
    let net = cri.pod_network(&pod.sandbox).unwrap();
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
    assert!(
        pod.domain_xml.contains("<target dev='tap0' managed='no'/>"),
        "{}",
        pod.domain_xml
    );
    let lease = pod
        .console
        .line("NETBIND-GUEST lease ", Duration::from_secs(180))
        .unwrap_or_else(|| {
            panic!(
                "no lease in 180 s; qemu: {:?}; console (last lines):\n{}",
                pod.qemu.as_ref().map(|q| cri.exited(q)),
                pod.console.tail()
            )
        });
    eprintln!("RunPodSandbox to lease: {:?}", pod.started.elapsed());
    let want = if masquerade {
        "10.0.2.2"
    } else {
        pod.ip.as_str()
    };
    assert!(lease.contains(&format!("ip={want} ")), "{lease}");
    assert_reachable(&node, &pod.ip, &|line, patience| {
        pod.console.line(line, patience)
    });
    assert_eq!(
        cri.exited(&pod.launcher).unwrap(),
        None,
        "the launcher still serves"
    );

    // Stop + remove: nothing of the pod may remain.
    remove_and_check(&mut cri, &node, &pod.sandbox);
    assert!(
        !node.config.netbind_run_dir().join(&pod.sandbox).exists(),
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

/// KubeVirt's binding-plugin form: the pod as virt-controller makes it for a VMI with
/// `binding: {name: netbind-masquerade}` (KubeVirt's annotations, no netbind one; the binding's
/// NetworkAttachmentDefinition in the chain with `logicNetworkName`; the hook sidecar and the
/// compute container). The test plays virt-launcher on the hook socket; the guest's lease can
/// only come from the sidecar, since no launcher runs in this pod.
#[test]
fn kubevirt_shaped_binding_plugin_pod_on_containerd() {
    if !ready() {
        return;
    }
    let plugin = "netbind-masquerade";
    let node = node_with(
        "plugin",
        true,
        Some(BindingPluginNet {
            mode: "masquerade".into(),
            network: "default".into(),
        }),
    );
    let mut cri: Cri = node.client().unwrap();
    let repo = netbind_testkit::repo_root();
    let vmi_json = std::fs::read_to_string(repo.join("testdata/kubevirt/vmi-netbind.json"))
        .unwrap()
        .replace(
            "\"binding\": {\"name\": \"netbind\"}",
            &format!("\"binding\": {{\"name\": \"{plugin}\"}}"),
        );
    assert!(vmi_json.contains(plugin));
    let config = PluginPodConfig {
        name: "virt-launcher-vmi-masquerade".into(),
        namespace: "default".into(),
        plugin: plugin.into(),
        network: "default".into(),
        vmi_json,
        domain_xml: std::fs::read_to_string(repo.join("testdata/kubevirt/domain-tap.xml")).unwrap(),
        bins: bins(),
        guest: GuestImage::locate().unwrap(),
        cmdline: vm::cmdline(
            &[8080],
            Some(&format!("{}:{NODE_LISTEN_PORT}", node.config.gateway())),
            None,
        ),
        work_dir: node.config.dir.join("pods").join("plugin"),
        tun: node.config.tun_node(),
    };
    let pod = PluginPod::start(&mut cri, &config).expect("the KubeVirt-shaped pod starts");
    assert_eq!(pod.info.name, "netbind");
    assert_eq!(pod.info.versions, ["v1alpha3", "v1alpha2"]);
    assert!(
        pod.domain_xml.contains("<target dev='tap0' managed='no'/>"),
        "{}",
        pod.domain_xml
    );
    let containers = cri.containers().unwrap();
    assert_eq!(
        containers.len(),
        2,
        "the sidecar and compute only: {containers:?}"
    );
    let lease = pod
        .console
        .line("NETBIND-GUEST lease ", Duration::from_secs(180))
        .unwrap_or_else(|| {
            panic!(
                "no lease in 180 s; qemu: {:?}; sidecar: {:?}; console (last lines):\n{}\nsidecar log:\n{}",
                cri.exited(&pod.qemu),
                cri.exited(&pod.sidecar),
                pod.console.tail(),
                std::fs::read_to_string(
                    Path::new(&pod.pod.log_directory).join("hook-sidecar-0.log")
                )
                .unwrap_or_default()
            )
        });
    assert!(lease.contains("ip=10.0.2.2 "), "{lease}");
    assert_reachable(&node, &pod.ip, &|line, patience| {
        pod.console.line(line, patience)
    });
    assert_eq!(
        cri.exited(&pod.sidecar).unwrap(),
        None,
        "the sidecar still serves"
    );
    remove_and_check(&mut cri, &node, &pod.sandbox);
}

/// StopPodSandbox + RemovePodSandbox, then no sandbox, container or IPAM address is left.
fn remove_and_check(cri: &mut Cri, node: &Node, sandbox: &str) {
    cri.remove_pod(sandbox)
        .expect("StopPodSandbox + RemovePodSandbox");
    assert!(cri.sandboxes().unwrap().is_empty(), "no sandbox left");
    assert!(cri.containers().unwrap().is_empty(), "no container left");
    assert_eq!(
        node.allocated_addresses(),
        Vec::<String>::new(),
        "no IPAM address held"
    );
}
