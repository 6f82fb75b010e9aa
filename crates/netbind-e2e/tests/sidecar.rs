//! KubeVirt's plugin form, on one machine: phase 1 done, the pod record on the tap as
//! netbind-cni leaves it, and netbind-sidecar started in exactly the launcher's sandbox (the
//! pod's namespace, uid 107, no capability). virt-launcher's OnDefineDomain call brings it the
//! VMI; a real DHCP client in the guest's place then gets its lease from it.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use common::*;
use netbind_sidecar::client::HookClient;

#[test]
fn the_sidecar_serves_dhcp_after_on_define_domain() {
    if !require(&["busybox"]) {
        return;
    }
    let mut fixture = Fixture::without_launcher("examples/vmi-masquerade.yaml", Stack::V4);
    fixture.log = Some(fixture.dir.path().join("sidecar.log"));
    // As netbind-cni writes it in the binding-plugin form (its chain test reads it back).
    ok(&format!(
        "ip -n {} link set dev tap0 alias 'netbind/1 net=default pod=eth0 mode=masquerade'",
        fixture.pod
    ));
    let own = fixture.own_dir("hooks");
    let socket = own.join("netbind.sock");
    let resolv = fixture.dir.path().join("resolv.conf");
    let (child, ready) = fixture.start_sandboxed(
        "netbind-sidecar",
        &[
            "--socket".into(),
            socket.display().to_string(),
            "--plugin".into(),
            "netbind".into(),
            "--resolv-conf".into(),
            resolv.display().to_string(),
        ],
    );
    fixture.launcher = Some(child);
    assert!(
        ready,
        "sidecar not ready: {}",
        std::fs::read_to_string(fixture.dir.path().join("sidecar.log")).unwrap_or_default()
    );
    // No DHCP before virt-launcher defines the domain: the sidecar does not know the VM yet.
    let early = sh(&format!(
        "ip netns exec {}-vm busybox udhcpc -i eth0 -f -q -n -t 1 -T 1 -s /bin/true",
        fixture.pod
    ));
    assert!(!early.status.success(), "a lease before OnDefineDomain");
    let client = HookClient::connect(&socket).expect("dial the sidecar");
    let xml = std::fs::read(root().join("testdata/kubevirt/domain-tap.xml")).unwrap();
    let vmi = std::fs::read(root().join("testdata/kubevirt/vmi-netbind.json")).unwrap();
    let defined = client.on_define_domain(&xml, &vmi).expect("OnDefineDomain");
    let defined = String::from_utf8(defined).unwrap();
    assert!(
        defined.contains("<target dev='tap0' managed='no'/>"),
        "{defined}"
    );
    let lease = udhcpc(&fixture, "eth0");
    assert_eq!(get(&lease, "ip"), "10.0.2.2", "{lease:?}");
    assert_eq!(get(&lease, "router"), "10.0.2.1", "{lease:?}");
    assert_eq!(get(&lease, "dns"), "10.96.0.10", "{lease:?}");
    // Zero capabilities in every set, on every thread (the DHCP one included), and the DHCP
    // thread under one seccomp filter more than the others (the launcher's allow-list).
    let pid = fixture.launcher_pid();
    let filters = |status: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Seccomp_filters:"))
            .and_then(|count| count.trim().parse::<u32>().ok())
            .expect("Seccomp_filters")
    };
    let main_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mut dhcp_thread = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        if std::fs::read_to_string(task.join("comm")).unwrap().trim() == "dhcp" {
            dhcp_thread = true;
            assert_eq!(filters(&status), filters(&main_status) + 1, "{status}");
        }
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            let line = status
                .lines()
                .find(|line| line.starts_with(set))
                .unwrap_or_default();
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
        let uid = status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|id| id == "107"),
            "{uid}"
        );
    }
    assert!(dhcp_thread, "no dhcp thread in {pid}");
}
