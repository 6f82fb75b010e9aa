//! The sandbox's lifetime: root records the sandbox's `unshare` when it starts one (`netbind
//! up`, the tests), and everything in the sandbox must die with it, whatever the program in it
//! does. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::time::Duration;

use common::*;
use netbind_podsim::sandbox::{Proc, sandbox_init};

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
    let init = sandbox_init(Proc::of(unshare.id()).expect("the unshare runs"))
        .expect("the sandbox's PID 1");
    unshare.kill().unwrap();
    unshare.wait().unwrap();
    // `alive` is false once a process is gone or a zombie (killed, not yet reaped).
    for (what, proc) in [("PID 1", init), ("launcher", launcher)] {
        proc.wait(Duration::from_secs(5));
        assert!(
            !proc.alive(),
            "the sandbox's {what} ({}) outlived the unshare root recorded",
            proc.pid
        );
    }
}
