//! Shared by the CLI integration tests: the golden cases and a runner for the binary.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed step is a failed test
#![allow(dead_code, unused_imports)] // each test binary uses a part

use std::path::Path;
use std::process::Command;

pub use netbind_testkit::repo_root as root;

pub use netbind_testkit::golden::{CASES, Case as GoldenCase};

pub fn netbind(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_netbind"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("netbind runs");
    assert!(
        out.status.success(),
        "netbind {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub fn run_case(prefix: &[&str], case: &GoldenCase) -> String {
    let args = case.cli_args();
    let mut all: Vec<&str> = prefix.to_vec();
    all.extend(args.iter().map(String::as_str));
    netbind(&all)
}

/// True when the test can run: root, the given binaries built next to `netbind`, the given
/// tools on PATH, and nothing in `also_missing` (a failure in CI, a loud skip elsewhere).
pub fn ready_with(bins: &[&str], tools: &[&str], also_missing: Vec<String>) -> bool {
    let dir = Path::new(env!("CARGO_BIN_EXE_netbind"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut missing: Vec<String> = bins
        .iter()
        .filter(|b| !dir.join(b).is_file())
        .map(|b| format!("{b} (cargo build --bins)"))
        .collect();
    missing.extend(netbind_testkit::missing_tools(tools));
    missing.extend(also_missing);
    netbind_testkit::ready(missing)
}

/// The binaries `netbind up` runs: phase 1, phase 2 and the VM sandbox's exec shim.
pub const POD_BINS: [&str; 3] = ["netbind-handler", "netbind-launcher", "netbind-vm-exec"];

/// The guest image, if it is missing (for [`ready_with`]).
pub fn guest_missing() -> Vec<String> {
    if root().join(".e2e/guest/initrd.gz").is_file() {
        Vec::new()
    } else {
        vec!["the guest image (scripts/build-guest.sh)".into()]
    }
}

/// [`ready_with`] for tests that need only root and the project's binaries.
pub fn root_with_bins(bins: &[&str]) -> bool {
    ready_with(bins, &[], Vec::new())
}

/// Whether some address file of the pod simulator's allocator still names `pod`. Checking the
/// freed address itself would race: another test's pod may be given it the moment it is free.
pub fn address_held_by(pod: &str) -> Option<String> {
    std::fs::read_dir("/run/netbind/ipam")
        .ok()?
        .flatten()
        .find(|e| std::fs::read_to_string(e.path()).is_ok_and(|owner| owner.trim() == pod))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// The pod `name` as `netbind status --json` lists it (`None` when it is not listed).
pub fn pod_status(name: &str) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_netbind"))
        .args(["status", "--json"])
        .output()
        .expect("netbind status runs");
    let pods: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    pods.as_array()?.iter().find(|p| p["name"] == name).cloned()
}
