//! The launcher's seccomp allow-list: the launcher works under it, and every entry is needed
//! (leaving any one out breaks serving or a clean stop). Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::*;
use netbind_launcher::seccomp::ALLOW;

/// Serves one lease, then stops on SIGTERM. Returns (lease obtained, clean exit 0).
fn scenario(skip: Option<&str>) -> (bool, bool) {
    let mut fixture = Fixture::without_launcher("examples/vmi-masquerade.yaml", Stack::V4);
    let handoff = fixture.handoff();
    let extra: Vec<&str> = skip.map(|s| vec!["--seccomp-skip", s]).unwrap_or_default();
    if !fixture.start_launcher_args(&handoff, &extra) {
        return (false, false);
    }
    // A launcher missing an entry it needs may die right after its ready line.
    let Some(pid) = fixture.running_launcher_pid() else {
        return (false, false);
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if skip.is_none() {
        assert!(
            status.contains("Seccomp:\t2"),
            "the launcher runs in seccomp filter mode:\n{status}"
        );
    }
    // Datagrams full of options make the parser allocate: the heap must be able to grow
    // under the filter (they used to kill the launcher with SIGSYS on brk).
    send_from_guest(
        &fixture,
        &(0..8)
            .map(|i| discover([2, 0, 0, 0, 0, 9], i, 1300))
            .collect::<Vec<_>>(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let lease = get(&udhcpc(&fixture, "eth0"), "ip") == "10.0.2.2";
    // SAFETY: kill with the pid of the launcher this test started.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGTERM) };
    let mut child = fixture.launcher.take().unwrap();
    let started = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "launcher did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (lease, st.code() == Some(0) && st.signal().is_none())
}

#[test]
fn launcher_serves_and_stops_under_its_filter() {
    if !require(&["busybox", "setpriv"]) {
        return;
    }
    assert_eq!(scenario(None), (true, true));
}

#[test]
fn every_allow_list_entry_is_needed() {
    if !require(&["busybox", "setpriv"]) {
        return;
    }
    for entry in ALLOW {
        assert!(!entry.reason.is_empty(), "{} has no reason", entry.name);
        let (lease, clean) = scenario(Some(entry.name));
        assert!(
            !(lease && clean),
            "seccomp entry {} ({}) is no longer needed: drop it",
            entry.name,
            entry.reason
        );
    }
}
