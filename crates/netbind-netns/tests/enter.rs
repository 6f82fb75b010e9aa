//! Kernel tier (root): `Netns::run_here` runs its body in the namespace and always brings the
//! calling thread back, a panic included; `Netns::run` leaves the calling thread alone.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use netbind_netns::Netns;

/// The network namespace the calling thread is in (its nsfs inode).
fn current() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("own netns")
        .ino()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// Deletes the namespace when the test ends, passed or failed.
struct Remove(String);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn run_here_enters_the_namespace_and_always_comes_back() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root (network namespaces); CI must run it"
        );
        eprintln!("SKIPPED: needs root (network namespaces)");
        return;
    }
    let name = format!("nbns-{}", std::process::id());
    ip(&["netns", "add", &name]);
    let _remove = Remove(name.clone());
    let target = std::fs::metadata(format!("/run/netns/{name}"))
        .expect("named netns")
        .ino();
    let own = current();
    assert_ne!(own, target);
    let ns = Netns::named(&name).expect("open");

    assert_eq!(ns.run_here(current).expect("enter"), target);
    assert_eq!(
        current(),
        own,
        "run_here left the thread in the pod's namespace"
    );

    // A panic in the body unwinds through the guard, which restores the namespace.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ns.run_here(|| -> () { panic!("inside the namespace") })
    }));
    assert!(caught.is_err());
    assert_eq!(
        current(),
        own,
        "a panic left the thread in the pod's namespace"
    );

    // On a thread of its own: the calling thread never moves.
    assert_eq!(ns.run(current).expect("enter"), target);
    assert_eq!(current(), own);
}
