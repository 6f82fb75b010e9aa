//! End-to-end tier for phase 2: phase 1 builds the pod (real netns, bridge, tap), the launcher
//! runs as uid 107 with no capability and no_new_privs, and real DHCP clients (busybox udhcpc,
//! ISC dhclient, dhcpcd; dhclient -6 for IPv6) in a "guest" namespace whose veth is plugged
//! into the bridge where the VM's tap is, report what they got. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::process::Command;

use common::*;

#[test]
fn bridge_binding_real_clients_get_the_pod_ip() {
    if !require(&["busybox", "dhclient", "dhcpcd", "setpriv"]) {
        return;
    }
    let fixture = Fixture::new("examples/vmi-bridge.yaml", Stack::V4);

    let lease = udhcpc(&fixture, "eth0");
    assert_eq!(get(&lease, "ip"), "10.244.0.5", "{lease:?}");
    assert_eq!(get(&lease, "mask"), "24");
    assert_eq!(get(&lease, "router"), "10.244.0.1");
    assert_eq!(get(&lease, "dns"), "10.96.0.10");
    assert_eq!(get(&lease, "mtu"), "1450");
    assert_eq!(get(&lease, "domain"), "default.svc.cluster.local");
    assert_eq!(get(&lease, "serverid"), "169.254.75.10");
    assert_eq!(get(&lease, "hostname"), "vmi-bridge");
    assert_search(&lease, "search");
    // Classless routes as the client decoded them: the pod's extra route, default last.
    assert_eq!(
        get(&lease, "staticroutes"),
        "10.96.0.0/12 10.244.0.1 0.0.0.0/0 10.244.0.1"
    );

    let lease = dhclient(&fixture, false);
    assert_eq!(get(&lease, "ip"), "10.244.0.5", "{lease:?}");
    assert_eq!(get(&lease, "mask"), "255.255.255.0");
    assert_eq!(get(&lease, "router"), "10.244.0.1");
    assert_eq!(get(&lease, "dns"), "10.96.0.10");
    assert_eq!(get(&lease, "mtu"), "1450");
    assert_eq!(get(&lease, "domain"), "default.svc.cluster.local");
    assert_search(&lease, "search");
    assert_eq!(get(&lease, "rfc3442"), "12 10 96 10 244 0 1 0 10 244 0 1");

    let lease = dhcpcd(&fixture);
    assert_eq!(get(&lease, "ip"), "10.244.0.5", "{lease:?}");
    assert_eq!(get(&lease, "cidr"), "24");
    assert_eq!(get(&lease, "dns"), "10.96.0.10");
    assert_eq!(get(&lease, "mtu"), "1450");
    assert_search(&lease, "search");
    assert_eq!(
        get(&lease, "staticroutes"),
        "10.96.0.0/12 10.244.0.1 0.0.0.0/0 10.244.0.1"
    );

    // The domain XML the launcher wrote is the renderer's, for the tap phase 1 made.
    let xml = std::fs::read_to_string(fixture.dir.path().join("launcher/domain.xml")).unwrap();
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
    let fixture = Fixture::new("examples/vmi-masquerade.yaml", Stack::V4);
    for lease in [
        udhcpc(&fixture, "eth0"),
        dhclient(&fixture, false),
        dhcpcd(&fixture),
    ] {
        assert_eq!(get(&lease, "ip"), "10.0.2.2", "{lease:?}");
        assert_eq!(get(&lease, "router"), "10.0.2.1", "{lease:?}");
        assert_eq!(get(&lease, "dns"), "10.96.0.10", "{lease:?}");
        assert_eq!(get(&lease, "mtu"), "1450", "{lease:?}");
        assert_search(&lease, "search");
    }
}

#[test]
fn malformed_datagrams_over_the_wire_do_not_stop_the_server() {
    if !require(&["busybox", "setpriv"]) {
        return;
    }
    let mut fixture = Fixture::new("examples/vmi-masquerade.yaml", Stack::V4);
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
    send_from_guest(&fixture, &payloads);
    assert_eq!(
        get(&udhcpc(&fixture, "eth0"), "ip"),
        "10.0.2.2",
        "the launcher still serves"
    );
    assert!(
        fixture
            .launcher
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "the launcher is still running"
    );
}

#[test]
fn dhcpv6_real_client_gets_the_guest_address() {
    if !require(&["dhclient", "setpriv"]) {
        return;
    }
    let fixture = Fixture::new("examples/vmi-dual-stack.yaml", Stack::Dual);
    wait_for_link_local(&fixture);
    let lease = dhclient(&fixture, true);
    assert_eq!(get(&lease, "ip6"), "fd10:0:2::2", "{lease:?}");
    assert_eq!(get(&lease, "dns6"), "fd00:10:96::a", "{lease:?}");
    // And IPv4 on the same bridge, same launcher.
    assert_eq!(get(&udhcpc(&fixture, "eth0"), "ip"), "10.0.2.2");
}

#[test]
fn no_answer_on_another_interface_of_the_pod() {
    if !require(&["busybox", "setpriv"]) {
        return;
    }
    let fixture = Fixture::new("examples/vmi-masquerade.yaml", Stack::V4);
    let pod = &fixture.pod;
    // Another interface of the same pod netns, not the bridge: its DISCOVERs reach the
    // launcher's socket (bound to 0.0.0.0:67) but carry another ifindex.
    ok(&format!(
        "ip netns add {pod}-x && ip -n {pod} link add other0 type veth peer name eth0 netns {pod}-x && \
         ip -n {pod} addr add 192.168.77.1/24 dev other0 && ip -n {pod} link set other0 up && ip -n {pod}-x link set eth0 up"
    ));
    let out = sh(&format!(
        "ip netns exec {pod}-x timeout 20 busybox udhcpc -i eth0 -f -q -n -t 3 -T 1 -s /bin/true"
    ));
    assert!(
        !out.status.success(),
        "a client on another interface must get no lease"
    );
    // The guest on the bridge still gets its lease from the same launcher.
    assert_eq!(get(&udhcpc(&fixture, "eth0"), "ip"), "10.0.2.2");
}

#[test]
fn launcher_refuses_to_run_with_a_capability() {
    if !require(&["setpriv"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // As root with its full capability sets.
    let cmd = Command::new(netbind_e2e::bin("netbind-launcher"))
        .arg("--handoff")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        cmd.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&cmd.stderr)
    );
    assert!(String::from_utf8_lossy(&cmd.stderr).contains("refusing to run with privileges"));
    // As uid 107 with exactly one capability left (ambient CAP_NET_BIND_SERVICE, as KubeVirt
    // grants it).
    let cmd = Command::new("setpriv")
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
        .arg(netbind_e2e::bin("netbind-launcher"))
        .arg("--handoff")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&cmd.stderr);
    assert_eq!(cmd.status.code(), Some(3), "{err}");
    assert!(
        err.contains("CapAmb=cap_net_bind_service") && err.contains("CapBnd=cap_net_bind_service"),
        "{err}"
    );
    // Without no_new_privs.
    let cmd = Command::new("setpriv")
        .args([
            "--reuid=107",
            "--regid=107",
            "--clear-groups",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(netbind_e2e::bin("netbind-launcher"))
        .arg("--handoff")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&cmd.stderr).contains("no_new_privs is not set"),
        "{}",
        String::from_utf8_lossy(&cmd.stderr)
    );
}
