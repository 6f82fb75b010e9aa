//! Hot-plug and hot-unplug of a secondary bridge interface on a running pod, end to end: phase
//! 1 run again with the changed VMI, the launcher restarted on the new hand-off record (it
//! serves what the record held when it started: after its seccomp filter it can open nothing),
//! real DHCP clients and a guest on the first interface whose lease and traffic must survive
//! both. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Pings the first guest sends, one every 50 ms: 20 s, well beyond the hot-plug and unplug.
const PINGS: u32 = 400;

/// The hot-plugged interface's MAC in `examples/vmi-masquerade-multus.yaml`.
const BLUE_MAC: &str = "02:00:00:0b:1e:01";

/// `busybox udhcpc` in namespace `ns` on its eth0: the lease it reports, or none.
fn lease_in(ns: &str, tries: u32) -> Vec<(String, String)> {
    client_in(
        ns,
        &format!(
            "busybox udhcpc -i eth0 -f -q -n -t {tries} -T 1 -s {}/udhcpc.sh",
            clients_dir()
        ),
    )
}

/// (transmitted, received) from ping's summary.
fn ping_counts(summary: &str) -> (u32, u32) {
    let line = summary
        .lines()
        .find(|line| line.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {summary:?}"));
    let numbers: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .take(2)
        .filter_map(|part| part.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// The ifindexes of the running interface's bridge and tap (the same after a re-run: the
/// links were not remade).
fn ifindexes(pod: &str) -> Vec<String> {
    ["k6t-eth0", "tap0"]
        .iter()
        .map(|name| {
            ok(&format!("ip -n {pod} -o link show {name}"))
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_hot_plugged_bridge_is_served_and_the_running_guest_keeps_its_lease_and_traffic() {
    if !require(&["busybox"]) {
        return;
    }
    let mut fixture =
        Fixture::without_launcher("testdata/vmi/multus-before-hotplug.yaml", common::Stack::V4);
    let pod = fixture.pod.clone();
    let ready = fixture.restart_launcher();
    assert!(ready.contains("\"interfaces\":1"), "{ready}");

    // The guest on the first interface takes its lease and sends traffic through the NAT to
    // the node for the whole hot-plug and unplug: a fixed count, so that ping ends by itself
    // with every reply in (stopping it by a signal could cut off one in flight).
    let lease = lease_in(&format!("{pod}-vm"), 3);
    assert_eq!(get(&lease, "ip"), "10.0.2.2", "{lease:?}");
    ok(&format!(
        "ip -n {pod}-vm addr add 10.0.2.2/24 dev eth0 && ip -n {pod}-vm route add default via 10.0.2.1"
    ));
    let ping = Command::new("ip")
        .args(["netns", "exec", &format!("{pod}-vm")])
        .args([
            "busybox",
            "ping",
            "-i",
            "0.05",
            "-c",
            &PINGS.to_string(),
            "-W",
            "5",
            "10.244.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = ifindexes(&pod);

    // Hot-plug: Multus adds blue's pod interface, the VMI gains the interface, phase 1 runs
    // again and the launcher restarts on the new record.
    ok(&format!(
        "ip -n {pod}-node link add veth-b type veth peer name pod16477688c0e netns {pod} && \
         ip -n {pod} addr add 192.168.100.10/30 dev pod16477688c0e && \
         ip -n {pod} link set pod16477688c0e up && ip -n {pod} route add 172.16.0.0/16 via 192.168.100.9"
    ));
    fixture
        .phase1("examples/vmi-masquerade-multus.yaml")
        .expect("hot-plug");
    let ready = fixture.restart_launcher();
    assert!(ready.contains("\"interfaces\":2"), "{ready}");
    // blue's guest: a veth on blue's in-pod bridge where its tap is, with the VMI's MAC.
    ok(&format!(
        "ip netns add {pod}-x && ip -n {pod}-x link set lo up && \
         ip -n {pod} link add vmb type veth peer name eth0 address {BLUE_MAC} netns {pod}-x && \
         ip -n {pod} link set vmb master k6t-16477688c0e up && ip -n {pod}-x link set eth0 up"
    ));
    let blue = lease_in(&format!("{pod}-x"), 3);
    assert_eq!(get(&blue, "ip"), "192.168.100.10", "{blue:?}");

    // Hot-unplug: `state: absent`; the launcher restarts on a record without blue.
    fixture
        .phase1("testdata/vmi/multus-blue-absent.yaml")
        .expect("hot-unplug");
    let ready = fixture.restart_launcher();
    assert!(ready.contains("\"interfaces\":1"), "{ready}");
    let links = ok(&format!("ip -n {pod} -o link show"));
    assert!(
        !links.contains("k6t-16477688c0e") && !links.contains("tap16477688c0e"),
        "{links}"
    );
    assert!(
        lease_in(&format!("{pod}-x"), 2).is_empty(),
        "blue is still served"
    );

    // The first guest: same links, its lease renewed by the restarted launcher, and not one
    // ping lost through both changes.
    assert_eq!(
        ifindexes(&pod),
        running,
        "the running interface's links were remade"
    );
    let again = lease_in(&format!("{pod}-vm"), 3);
    assert_eq!(get(&again, "ip"), "10.0.2.2", "{again:?}");
    let mut ping = ping;
    assert!(
        ping.try_wait().unwrap().is_none(),
        "the pings ended before the hot-plug and unplug were done: raise PINGS"
    );
    let out = ping.wait_with_output().unwrap();
    let (sent, received) = ping_counts(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(sent, PINGS, "ping stopped early");
    assert_eq!(received, sent, "the running guest lost traffic");
}
