//! libvirt's own schema check (`virt-xml-validate`) on the domain XML of every golden case.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use std::process::Command;

use common::{CASES, run_case};

/// In CI the tool must be there (the test set-up installs libvirt-clients); elsewhere a
/// missing tool is reported loudly and the test returns without asserting.
fn have_validator() -> bool {
    netbind_testkit::tools_ready(&["virt-xml-validate"])
}

fn validate(xml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("domain.xml");
    std::fs::write(&path, xml).expect("write");
    let out = Command::new("virt-xml-validate")
        .arg(&path)
        .arg("domain")
        .output()
        .expect("run");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_golden_domain_passes_libvirt_schema() {
    if !have_validator() {
        return;
    }
    for case in CASES {
        let xml = run_case(&["domxml", "--full"], case);
        let (ok, out) = validate(&xml);
        assert!(
            ok,
            "case {}: virt-xml-validate rejected:\n{xml}\n{out}",
            case.name
        );
    }
}

#[test]
fn the_validator_rejects_a_broken_interface() {
    // Guards the test above against a validator that accepts anything.
    if !have_validator() {
        return;
    }
    let xml = run_case(&["domxml", "--full"], &CASES[0]).replace("managed='no'", "managed='maybe'");
    let (ok, _) = validate(&xml);
    assert!(!ok, "virt-xml-validate accepted managed='maybe'");
}
