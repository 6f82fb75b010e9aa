//! The sandbox's lifetime: root records the sandbox's `unshare` when it starts one (`netbind
//! up`, the tests), and everything in the sandbox must die with it, whatever the program in it
//! does. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::time::{Duration, Instant};

use common::*;
use netbind_podsim::sandbox::Proc;

/// Still running: recorded and not yet a zombie (a killed process stays in /proc until its
/// parent reaps it).
fn running(proc: Proc) -> bool {
    proc.alive()
        && std::fs::read_to_string(format!("/proc/{}/stat", proc.pid))
            .ok()
            .and_then(|stat| {
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().next().map(|state| state != "Z")
            })
            .unwrap_or(false)
}

/// `unshare --kill-child` gives its child a parent-death signal, but the kernel clears that
/// signal when the child changes its credentials, which the sandbox does (uid 107, no
/// capability) before running the program. Without the signal restored, killing the recorded
/// `unshare` left the sandbox's PID 1 and the launcher running, outside anybody's record, in a
/// network namespace that then never went away.
#[test]
fn the_sandbox_dies_with_its_recorded_unshare() {
    if !require(&["setpriv"]) {
        return;
    }
    let mut fixture = Fixture::new("examples/vmi-bridge.yaml", Stack::V4);
    let launcher = Proc::of(fixture.launcher_pid()).expect("the launcher runs");
    let mut unshare = fixture.launcher.take().expect("the recorded unshare");
    let init = netbind_podsim::sandbox::children(unshare.id())
        .into_iter()
        .next()
        .expect("the sandbox's PID 1");
    unshare.kill().unwrap();
    unshare.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (running(launcher) || running(init)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !running(init),
        "the sandbox's PID 1 ({}) outlived the unshare root recorded",
        init.pid
    );
    assert!(
        !running(launcher),
        "the launcher ({}) outlived the unshare root recorded",
        launcher.pid
    );
}
