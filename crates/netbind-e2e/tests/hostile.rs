//! Hostile guests against the real launcher under its seccomp filter: datagrams full of
//! options, datagrams larger than the receive buffer and fragmented on the wire, and floods
//! of DISCOVER / SOLICIT from thousands of MACs while real clients ask for their leases. The
//! launcher must stay alive, keep its memory and its log bounded, and serve the real clients
//! during the flood. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

fn mac(seed: u32) -> [u8; 6] {
    let bytes = seed.to_be_bytes();
    [0x02, 0x6e, bytes[0], bytes[1], bytes[2], bytes[3]]
}

fn alive(fixture: &mut Fixture) -> bool {
    fixture
        .launcher
        .as_mut()
        .unwrap()
        .try_wait()
        .unwrap()
        .is_none()
}

#[test]
fn hostile_datagrams_and_floods_do_not_stop_the_server() {
    if !require(&["busybox", "setpriv", "dhclient"]) {
        return;
    }
    let mut fixture = Fixture::without_launcher("examples/vmi-dual-stack.yaml", Stack::Dual);
    let log = fixture.dir.path().join("launcher.log");
    fixture.log = Some(log.clone());
    let handoff = fixture.handoff();
    fixture.start_launcher(&handoff);
    let pid = fixture.launcher_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Seccomp:\t2"), "under its filter");
    let rss_before = status_kib(pid, "VmRSS:");
    wait_for_link_local(&fixture);

    // Datagrams stuffed with options: the parsers allocate for each (a few SOLICITs like
    // these used to kill the launcher with SIGSYS on brk).
    send6_from_guest(
        &fixture,
        &(0..8)
            .map(|seq| solicit(mac(seq), seq, 1000))
            .collect::<Vec<_>>(),
    );
    send_from_guest(
        &fixture,
        &(0..8)
            .map(|seq| discover(mac(seq), seq, 1300))
            .collect::<Vec<_>>(),
    );
    // Larger than the 4 KiB receive buffer, fragmented on the 1450-byte link.
    send6_from_guest(&fixture, &[solicit(mac(99), 99, 5000)]);
    send_from_guest(&fixture, &[discover(mac(98), 98, 6000)]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(&mut fixture),
        "the launcher survived the option-stuffed datagrams"
    );

    // A flood from thousands of MACs while real clients ask for their leases.
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let (v4, v6) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut seq = 1000u32;
            while !stop.load(Ordering::SeqCst) {
                let v4: Vec<Vec<u8>> = (seq..seq + 25).map(|j| discover(mac(j), j, 20)).collect();
                let v6: Vec<Vec<u8>> = (seq..seq + 25).map(|j| solicit(mac(j), j, 20)).collect();
                send_from_guest(&fixture, &v4);
                send6_from_guest(&fixture, &v6);
                sent.fetch_add(50, Ordering::SeqCst);
                seq += 25;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // Let the flood get going first.
        let started = Instant::now();
        while sent.load(Ordering::SeqCst) < 2000 && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // More patient than the other tests' clients: other tests (TCG guests) may share the
        // two cores with the flood.
        let v4 = fixture.client(&format!(
            "busybox udhcpc -i eth0 -f -q -n -t 8 -T 2 -s {}/udhcpc.sh",
            clients_dir()
        ));
        let v6 = dhclient(&fixture, true);
        stop.store(true, Ordering::SeqCst);
        (v4, v6)
    });
    let flood = sent.load(Ordering::SeqCst);
    assert!(flood >= 2000, "the flood ran ({flood} datagrams)");
    assert_eq!(
        get(&v4, "ip"),
        "10.0.2.2",
        "udhcpc during the flood: {v4:?}"
    );
    assert_eq!(
        get(&v6, "ip6"),
        "fd10:0:2::2",
        "dhclient -6 during the flood: {v6:?}"
    );
    assert!(alive(&mut fixture), "the launcher survived the flood");

    // Memory: nothing is kept per client, so the flood leaves the resident set where it was.
    let rss_after = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    assert!(
        rss_after <= rss_before + 2048 && hwm < 32 * 1024,
        "resident set {rss_before} kB -> {rss_after} kB (peak {hwm} kB) after {flood} datagrams"
    );

    // Log: the budget's burst plus a summary per 4096 datagrams and once the traffic stops
    // (2 s of quiet), not a line per datagram.
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("over the log budget")
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let bytes = std::fs::metadata(&log).unwrap().len();
    let per_datagram = bytes as f64 / flood as f64;
    assert!(
        per_datagram < 10.0,
        "{bytes} log bytes for {flood} datagrams ({per_datagram:.1} per datagram)"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("over the log budget"),
        "the flood is summarised:\n{}",
        text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}
