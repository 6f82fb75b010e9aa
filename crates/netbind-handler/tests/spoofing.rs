//! A hostile guest stays inside its own addresses (issue 9, item 9). Each test writes forged
//! frames into the pod's tap, where QEMU's frames enter, and checks what the other side of
//! the pod network receives; then it removes the anti-spoofing chain and sends the same frames
//! again, which must now arrive: the attack is real, and only the guard stops it.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Pod, Stack, ok, require_root};
use netbind_testkit::frame::{self, ETH_ARP, ETH_IP, ETH_IP6, Mac, Tap};
use netbind_testkit::in_netns;

#[test]
fn helper_op() {
    common::helper_op_body();
}

const NODE_MAC: Mac = [0x02, 0xaa, 0, 0, 0, 1];
const POD_MAC: Mac = [0x0a, 0x58, 0x0a, 0xf4, 0, 5];
const MASQUERADE_GW_MAC: Mac = [0x02, 0, 0, 0, 0, 0];
const PORT: u16 = 5000;

/// A UDP socket bound in `/run/netns/NS`, and what it received.
struct Listener(UdpSocket);

impl Listener {
    fn new(ns: &str, addr: &str) -> Listener {
        let addr: SocketAddr = addr.parse().unwrap();
        let sock = in_netns(ns, || UdpSocket::bind(addr).expect("bind the listener"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Listener(sock)
    }

    /// The source of the datagram carrying `marker`, if one arrives within a second.
    fn source_of(&self, marker: &str) -> Option<IpAddr> {
        let end = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 256];
        while Instant::now() < end {
            if let Ok((len, from)) = self.0.recv_from(&mut buf)
                && &buf[..len] == marker.as_bytes()
            {
                return Some(from.ip());
            }
        }
        None
    }
}

/// A pod whose IPv4 settings are what KubeVirt pods run with: no reverse-path filter, so only
/// netbind's rules stand between a forged source and the pod network.
fn pod(stack: Stack) -> Pod {
    let pod = Pod::new(stack);
    for ns in [pod.name.clone(), format!("{}-node", pod.name)] {
        ok(&format!(
            "ip netns exec {ns} sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0"
        ));
    }
    pod
}

fn v4(octets: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(octets)
}

fn send4(tap: &mut Tap, (smac, dmac): (Mac, Mac), src: Ipv4Addr, dst: Ipv4Addr, marker: &str) {
    let ip = frame::udp4(src, dst, 40000, PORT, marker.as_bytes());
    tap.send(&frame::ether(dmac, smac, ETH_IP, &ip));
}

fn send6(tap: &mut Tap, smac: Mac, src: Ipv6Addr, dst: Ipv6Addr, marker: &str) {
    let ip = frame::udp6(src, dst, 40000, PORT, marker.as_bytes());
    tap.send(&frame::ether(MASQUERADE_GW_MAC, smac, ETH_IP6, &ip));
}

/// Waits until the bridge forwards through `port`: the kernel reports a port's carrier (a
/// re-upped pod interface, a tap that just got its reader) to the bridge through linkwatch, up
/// to a second later, and the bridge drops what comes from or goes to a port before that.
fn forwarding(pod: &Pod, port: &str) {
    let started = Instant::now();
    while !ok(&format!("ip -n {} -d link show {port}", pod.name))
        .contains("bridge_slave state forwarding")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{port} never forwards"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Attaches to the tap as QEMU would and waits until the bridge takes its frames.
fn guest_tap(pod: &Pod, tap: &str) -> Tap {
    let guest = Tap::attach(&pod.name, tap);
    forwarding(pod, tap);
    guest
}

/// Whether `check` holds within a second.
fn soon(check: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(1);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node's neighbour entry for `ip`, if it has one with an address.
fn node_neighbour(pod: &Pod, ip: &str) -> Option<String> {
    let out = ok(&format!("ip -n {}-node neigh show {ip}", pod.name));
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(String::from)
}

#[test]
fn masquerade_guest_sends_only_from_its_own_addresses() {
    if !require_root() {
        return;
    }
    let pod = pod(Stack::Dual);
    pod.setup_ok("examples/vmi-dual-stack.yaml", &[]);
    let node = format!("{}-node", pod.name);
    let node4 = Listener::new(&node, "10.244.0.1:5000");
    let node6 = Listener::new(&node, "[fd00:10:244::1]:5000");
    // A service that listens only on the pod's loopback (a sidecar's admin port, say).
    let lo = Listener::new(&pod.name, "127.0.0.1:5000");
    let mut tap = guest_tap(&pod, "tap0");
    let guest_mac: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let gw = (guest_mac, MASQUERADE_GW_MAC);
    let (guest6, node_ip6): (Ipv6Addr, Ipv6Addr) = (
        "fd10:0:2::2".parse().unwrap(),
        "fd00:10:244::1".parse().unwrap(),
    );
    let forged6: Ipv6Addr = "fd00:10:244::7".parse().unwrap();

    // What the guest may do: its own address leaves the pod masqueraded as the pod's.
    send4(&mut tap, gw, v4([10, 0, 2, 2]), v4([10, 244, 0, 1]), "own4");
    assert_eq!(node4.source_of("own4"), Some("10.244.0.5".parse().unwrap()));
    send6(&mut tap, guest_mac, guest6, node_ip6, "own6");
    assert_eq!(
        node6.source_of("own6"),
        Some("fd00:10:244::5".parse().unwrap())
    );

    let attacks = |tap: &mut Tap, round: &str| {
        send4(
            tap,
            gw,
            v4([10, 244, 0, 7]),
            v4([10, 244, 0, 1]),
            &format!("pod4-{round}"),
        );
        send4(
            tap,
            gw,
            v4([10, 244, 0, 1]),
            v4([10, 244, 0, 1]),
            &format!("node4-{round}"),
        );
        send6(tap, guest_mac, forged6, node_ip6, &format!("pod6-{round}"));
        send4(
            tap,
            gw,
            v4([10, 0, 2, 2]),
            v4([127, 0, 0, 1]),
            &format!("lo-{round}"),
        );
    };
    attacks(&mut tap, "guarded");
    assert_eq!(
        node4.source_of("pod4-guarded"),
        None,
        "another pod's IPv4 address"
    );
    assert_eq!(node4.source_of("node4-guarded"), None, "the node's address");
    assert_eq!(
        node6.source_of("pod6-guarded"),
        None,
        "another pod's IPv6 address"
    );
    assert_eq!(lo.source_of("lo-guarded"), None, "the pod's 127.0.0.1");

    pod.exec("nft flush chain inet netbind spoof_guard");
    attacks(&mut tap, "open");
    assert_eq!(
        node4.source_of("pod4-open"),
        Some("10.244.0.7".parse().unwrap())
    );
    assert_eq!(node6.source_of("pod6-open"), Some(IpAddr::V6(forged6)));
    assert!(
        lo.source_of("lo-open").is_some(),
        "route_localnet lets it in"
    );
}

#[test]
fn masquerade_loopback_nat_still_reaches_the_guest() {
    if !require_root() {
        return;
    }
    // The part of route_localnet that stays: the pod's own 127.0.0.1 traffic is DNATed to the
    // guest, and the guest's reply (de-SNATed to 127.0.0.1) comes back in through the bridge.
    let pod = pod(Stack::V4);
    pod.setup_ok("examples/vmi-masquerade.yaml", &[]);
    let guest = format!("{}-guest", pod.name);
    ok(&format!(
        "ip netns add {guest} && ip -n {guest} link set lo up && \
         ip -n {ns} link add vm0 type veth peer name eth0 netns {guest} && \
         ip -n {ns} link set vm0 master k6t-eth0 up && \
         ip -n {guest} addr add 10.0.2.2/24 dev eth0 && ip -n {guest} link set eth0 up && \
         ip -n {guest} route add default via 10.0.2.1",
        ns = pod.name
    ));
    let _cleanup = netbind_testkit::Namespaces(vec![guest.clone()]);
    let echo = in_netns(&guest, || UdpSocket::bind("10.0.2.2:5000").unwrap());
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (len, from) = echo.recv_from(&mut buf).expect("the guest receives");
        echo.send_to(&buf[..len], from).unwrap();
    });
    let client = in_netns(&pod.name, || UdpSocket::bind("127.0.0.1:0").unwrap());
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"ping", "127.0.0.1:5000").unwrap();
    let mut buf = [0u8; 64];
    let (len, from) = client.recv_from(&mut buf).expect("the reply comes back");
    assert_eq!(&buf[..len], b"ping");
    assert_eq!(from, "127.0.0.1:5000".parse().unwrap());
    server.join().unwrap();
}

#[test]
fn bridge_guest_sends_only_from_its_own_mac_and_address() {
    if !require_root() {
        return;
    }
    let pod = pod(Stack::V4);
    pod.setup_ok("examples/vmi-bridge.yaml", &[]);
    forwarding(&pod, "eth0-nic");
    let node = Listener::new(&format!("{}-node", pod.name), "10.244.0.1:5000");
    let mut tap = guest_tap(&pod, "tap0");
    let (own_ip, node_ip) = (v4([10, 244, 0, 5]), v4([10, 244, 0, 1]));
    let other_mac: Mac = [0x0a, 0x58, 0x0a, 0xf4, 0, 7];

    send4(&mut tap, (POD_MAC, NODE_MAC), own_ip, node_ip, "own");
    assert_eq!(node.source_of("own"), Some(IpAddr::V4(own_ip)));
    tap.send(&frame::ether(
        [0xff; 6],
        POD_MAC,
        ETH_ARP,
        &frame::arp_request(POD_MAC, own_ip, node_ip),
    ));
    assert!(
        soon(|| node_neighbour(&pod, "10.244.0.5").is_some()),
        "own ARP"
    );

    let attacks = |tap: &mut Tap, round: &str| {
        let forged = v4([10, 244, 0, 7]);
        send4(
            tap,
            (POD_MAC, NODE_MAC),
            forged,
            node_ip,
            &format!("ip-{round}"),
        );
        send4(
            tap,
            (other_mac, NODE_MAC),
            own_ip,
            node_ip,
            &format!("mac-{round}"),
        );
        // ARP poisoning: "10.244.0.7 is at my MAC", said while asking for the node.
        tap.send(&frame::ether(
            [0xff; 6],
            POD_MAC,
            ETH_ARP,
            &frame::arp_request(POD_MAC, forged, node_ip),
        ));
    };
    attacks(&mut tap, "guarded");
    assert_eq!(node.source_of("ip-guarded"), None, "another pod's address");
    assert_eq!(node.source_of("mac-guarded"), None, "another pod's MAC");
    assert_eq!(
        node_neighbour(&pod, "10.244.0.7"),
        None,
        "ARP for another pod's address"
    );

    pod.exec("nft flush chain bridge netbind spoof_guard");
    attacks(&mut tap, "open");
    assert!(node.source_of("ip-open").is_some());
    assert!(node.source_of("mac-open").is_some());
    assert!(soon(
        || node_neighbour(&pod, "10.244.0.7").as_deref() == Some("0a:58:0a:f4:00:05")
    ));
}

/// A pod with the secondary network `blue` (Multus) beside eth0, set up for the multus VMI
/// with `extra` handler flags; returns the pod and a listener on the far side of `blue`.
fn multus_pod(extra: &[&str]) -> (Pod, Listener) {
    let pod = pod(Stack::V4);
    ok(&format!(
        "ip -n {ns}-node link add veth-b address 02:bb:00:00:00:01 type veth peer name pod16477688c0e netns {ns} && \
         ip -n {ns}-node addr add 192.168.100.9/30 dev veth-b && ip -n {ns}-node link set veth-b up && \
         ip -n {ns} link set pod16477688c0e mtu 9000 && ip -n {ns} addr add 192.168.100.10/30 dev pod16477688c0e && \
         ip -n {ns} link set pod16477688c0e up && ip -n {ns} route add 172.16.0.0/16 via 192.168.100.9",
        ns = pod.name
    ));
    pod.setup_ok("examples/vmi-masquerade-multus.yaml", extra);
    forwarding(&pod, "16477688c0e-nic");
    let listener = Listener::new(&format!("{}-node", pod.name), "192.168.100.9:5000");
    (pod, listener)
}

#[test]
fn secondary_bridge_network_checks_only_when_opted_in() {
    if !require_root() {
        return;
    }
    // The VMI's MAC on blue; a VRRP-style shared MAC and another address on the L2 network.
    let guest_mac: Mac = [0x02, 0, 0, 0x0b, 0x1e, 0x01];
    let vrrp_mac: Mac = [0x00, 0, 0x5e, 0, 1, 7];
    let dst: Mac = [0x02, 0xbb, 0, 0, 0, 1];
    let (own, far, other) = (
        v4([192, 168, 100, 10]),
        v4([192, 168, 100, 9]),
        v4([192, 168, 100, 11]),
    );
    let run = |pod: &Pod, node: &Listener, round: &str| -> (bool, bool, bool) {
        let mut tap = guest_tap(pod, "tap16477688c0e");
        send4(
            &mut tap,
            (guest_mac, dst),
            own,
            far,
            &format!("own-{round}"),
        );
        send4(&mut tap, (vrrp_mac, dst), own, far, &format!("mac-{round}"));
        send4(
            &mut tap,
            (guest_mac, dst),
            other,
            far,
            &format!("ip-{round}"),
        );
        (
            node.source_of(&format!("own-{round}")).is_some(),
            node.source_of(&format!("mac-{round}")).is_some(),
            node.source_of(&format!("ip-{round}")).is_some(),
        )
    };
    let (pod, node) = multus_pod(&[]);
    assert_eq!(
        run(&pod, &node, "off"),
        (true, true, true),
        "opt-in off: L2 freedom"
    );
    drop((node, pod));
    let (pod, node) = multus_pod(&["--spoof-check", "default/blue-net"]);
    assert_eq!(
        run(&pod, &node, "on"),
        (true, false, false),
        "opt-in on: own MAC and address only"
    );
}
