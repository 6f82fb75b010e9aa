//! Router advertisements for an IPv6 masquerade guest, sent with no capability: phase 1
//! opens the socket and starts `netbind-ra`; a guest namespace on the bridge (where the tap
//! is) asks with a real client (rdisc6), takes its address from a real DHCPv6 client, and
//! must then reach the node through the NAT and be reached through the pod's IPv6 address
//! on a forwarded port, which needs the default route only the advertisements give. Needs
//! root, rdisc6 (ndisc6) and dhclient.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)] // test code (C ABI sizes)

mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{Fixture, Stack, dhclient, get, ok, require, wait_for_link_local};
use netbind_testkit::in_netns;

const GUEST: &str = "fd10:0:2::2";
const ROUTER_LL: &str = "fe80::ff:fe00:0";

fn guest_ns(fixture: &Fixture) -> String {
    format!("{}-vm", fixture.pod)
}

/// Waits until the guest's kernel has a default route learned from an advertisement.
fn default_route(fixture: &Fixture) -> String {
    let started = Instant::now();
    loop {
        let route = ok(&format!(
            "ip -n {} -6 route show default",
            guest_ns(fixture)
        ));
        if route.contains(ROUTER_LL) {
            return route;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no default route: {route:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ipv6_guest_gets_a_default_route_and_reaches_both_ways() {
    if !require(&["rdisc6", "dhclient"]) {
        return;
    }
    let fixture = Fixture::new("examples/vmi-dual-stack.yaml", Stack::Dual);
    wait_for_link_local(&fixture);
    let responders = fixture.responders();
    assert_eq!(responders.len(), 1, "one responder for k6t-eth0");
    let status = std::fs::read_to_string(format!("/proc/{}/status", responders[0].pid)).unwrap();
    for want in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "Uid:\t65534",
    ] {
        assert!(
            status.lines().any(|l| l.starts_with(want)),
            "responder lacks {want:?}:\n{status}"
        );
    }

    // A real router-discovery client sees what the plan says.
    let out = fixture.guest("rdisc6 -1 -n -w 3000 eth0");
    let adv = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        adv.lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| {
                l.split(':')
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(":")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|| panic!("rdisc6 printed no {name:?}:\n{adv}"))
    };
    assert_eq!(field("Hop limit"), "64 (      0x40)");
    assert_eq!(field("Stateful address conf."), "Yes");
    assert_eq!(field("Stateful other conf."), "Yes");
    assert!(field("Router lifetime").starts_with("1800"), "{adv}");
    assert_eq!(field("Prefix"), "fd10:0:2::/120");
    assert_eq!(field("On-link"), "Yes");
    assert_eq!(field("Autonomous address conf."), "No");
    assert!(field("Valid time").starts_with("2592000"), "{adv}");
    assert!(field("Pref. time").starts_with("604800"), "{adv}");
    assert!(field("MTU").starts_with("1450"), "{adv}");
    assert_eq!(field("Source link-layer address"), "02:00:00:00:00:00");
    assert!(adv.contains(&format!("from {ROUTER_LL}")), "{adv}");

    // The address from DHCPv6 (M flag), the route from the advertisement.
    let lease = dhclient(&fixture, true);
    assert_eq!(get(&lease, "ip6"), GUEST, "{lease:?}");
    ok(&format!(
        "ip -n {} -6 addr add {GUEST}/120 dev eth0 nodad",
        guest_ns(&fixture)
    ));
    let route = default_route(&fixture);
    assert!(route.contains("proto ra"), "{route}");
    let ping = fixture.guest("busybox ping -6 -c 2 -W 2 fd10:0:2::1");
    assert!(
        ping.status.success(),
        "ping the gateway: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Egress: to the node, masqueraded to the pod's address.
    let node = format!("{}-node", fixture.pod);
    let listener = in_netns(&node, || UdpSocket::bind("[fd00:10:244::1]:5000").unwrap());
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    in_netns(&guest_ns(&fixture), || {
        let sock = UdpSocket::bind(format!("[{GUEST}]:0")).unwrap();
        sock.send_to(b"guest-v6", "[fd00:10:244::1]:5000").unwrap();
    });
    let mut buf = [0u8; 64];
    let (len, from) = listener
        .recv_from(&mut buf)
        .expect("egress reaches the node");
    assert_eq!(&buf[..len], b"guest-v6");
    assert_eq!(from.ip().to_string(), "fd00:10:244::5", "masqueraded");

    // Ingress: the node connects to the pod's IPv6 address, the guest answers (its SYN-ACK
    // goes back through the default route).
    let server = in_netns(&guest_ns(&fixture), || {
        TcpListener::bind(format!("[{GUEST}]:8080")).unwrap()
    });
    let serve = std::thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        conn.write_all(b"guest-ok").unwrap();
    });
    let mut conn = in_netns(&node, || {
        let to: SocketAddrV6 = "[fd00:10:244::5]:8080".parse().unwrap();
        TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)).expect("ingress")
    });
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "guest-ok");
    serve.join().unwrap();
}

/// A raw ICMPv6 socket in `/run/netns/NS`, sending with hop limit `hops` out of `dev`.
fn icmp6_socket(ns: &str, dev: &str, hops: i32) -> OwnedFd {
    in_netns(ns, || {
        // SAFETY: socket takes integers; owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd was just returned by socket.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        netbind_testkit::bind_to_device(&fd, dev);
        for opt in [libc::IPV6_MULTICAST_HOPS, libc::IPV6_UNICAST_HOPS] {
            // SAFETY: setsockopt reads an int.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    opt,
                    std::ptr::from_ref(&hops).cast(),
                    4,
                );
            }
        }
        fd
    })
}

fn ifindex(ns: &str, dev: &str) -> u32 {
    let links: serde_json::Value =
        serde_json::from_str(&ok(&format!("ip -n {ns} -j link show {dev}"))).unwrap();
    u32::try_from(links[0]["ifindex"].as_u64().unwrap()).unwrap()
}

fn send_to_routers(fd: &OwnedFd, ifindex: u32, msg: &[u8]) {
    let to = SocketAddrV6::new("ff02::2".parse::<Ipv6Addr>().unwrap(), 0, 0, ifindex);
    let sa = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: to.ip().octets(),
        },
        sin6_scope_id: ifindex,
    };
    // SAFETY: sendto reads the message and the address for their sizes.
    unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        );
    }
}

/// Counts router advertisements arriving on `fd` for `window`.
fn count_adverts(fd: &OwnedFd, window: Duration) -> usize {
    let end = Instant::now() + window;
    let mut count = 0;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        // SAFETY: recv writes at most buf.len() bytes.
        let rc = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if rc > 0 && buf[0] == 134 {
            count += 1;
        } else if rc <= 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    count
}

#[test]
fn hostile_and_foreign_solicitations_are_ignored_and_answers_rate_limited() {
    if !require(&["rdisc6"]) {
        return;
    }
    let fixture = Fixture::new("examples/vmi-dual-stack.yaml", Stack::Dual);
    wait_for_link_local(&fixture);
    let responder = fixture.responders()[0];
    let guest = guest_ns(&fixture);
    let gidx = ifindex(&guest, "eth0");
    let good = icmp6_socket(&guest, "eth0", 255);
    let forwarded = icmp6_socket(&guest, "eth0", 64);
    let rs = [133u8, 0, 0, 0, 0, 0, 0, 0];
    // Malformed: a forwarded one (hop limit 64), a bad code, a zero-length option, an option
    // running past the end, an oversized one packed with options.
    send_to_routers(&forwarded, gidx, &rs);
    send_to_routers(&good, gidx, &[133, 1, 0, 0, 0, 0, 0, 0]);
    send_to_routers(
        &good,
        gidx,
        &[133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
    );
    send_to_routers(
        &good,
        gidx,
        &[133, 0, 0, 0, 0, 0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0],
    );
    let mut big = rs.to_vec();
    for _ in 0..170 {
        big.extend_from_slice(&[200, 1, 0, 0, 0, 0, 0, 0]);
    }
    send_to_routers(&good, gidx, &big);

    // A flood of valid solicitations: answers stay at most one per 3 s (RFC 4861
    // MIN_DELAY_BETWEEN_RAS), plus the initial unsolicited ones.
    let listen = icmp6_socket(&guest, "eth0", 255);
    let flood = std::thread::scope(|scope| {
        let counter = scope.spawn(|| count_adverts(&listen, Duration::from_secs(4)));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            for _ in 0..100 {
                send_to_routers(&good, gidx, &rs);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        counter.join().unwrap()
    });
    assert!(flood <= 4, "{flood} advertisements in 4 s of flooding");
    assert!(responder.alive(), "the responder survived the flood");

    // Solicitations from the pod network side (the node) reach the pod, but not the socket,
    // which is bound to the bridge.
    let node = format!("{}-node", fixture.pod);
    let from_node = icmp6_socket(&node, "veth-n", 255);
    let nidx = ifindex(&node, "veth-n");
    for _ in 0..50 {
        send_to_routers(&from_node, nidx, &rs);
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = fixture.ra_log("k6t-eth0");
    let node_ll = ok(&format!("ip -n {node} -6 addr show dev veth-n scope link"));
    let node_ll = node_ll
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap()
        .to_string();
    assert!(
        !log.contains(&node_ll),
        "a solicitation from the node was seen:\n{log}"
    );
    for reason in [
        "hop limit 64",
        "ICMPv6 code 1",
        "has length 0",
        "runs past the end",
    ] {
        assert!(log.contains(reason), "{reason:?} not logged:\n{log}");
    }
    assert!(
        log.len() < 16 * 1024,
        "the log stays small: {} bytes",
        log.len()
    );

    // And it still answers.
    let out = fixture.guest("rdisc6 -1 -n -w 4000 -r 3 eth0");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fd10:0:2::/120"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(responder.alive());
}
