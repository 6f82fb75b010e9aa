//! Golden files for everything netbind generates from a VMI and a pod: the plan JSON,
//! KubeVirt's nft commands, the hand-off record and the domain XML, plus the CLI help.
//! `NETBIND_BLESS=1 cargo test -p netbind-cli --test golden` rewrites them after review.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use common::{CASES, netbind, root, run_case};
use netbind_testkit::golden::compare;

#[test]
fn golden_outputs() {
    let mut failures = Vec::new();
    for case in CASES {
        let dir = root().join("testdata/golden").join(case.name);
        let plan_json = run_case(&["plan"], case);
        compare(&dir.join("plan.json"), &plan_json, &mut failures);
        let plan: serde_json::Value = serde_json::from_str(&plan_json).expect("plan is JSON");
        let handoff = serde_json::to_string_pretty(&plan["handoff"]).expect("handoff") + "\n";
        compare(&dir.join("handoff.json"), &handoff, &mut failures);
        // The hand-off record in the plan must be one the launcher accepts.
        netbind_model::handoff::Handoff::from_json(handoff.as_bytes())
            .expect("launcher-readable hand-off");
        compare(
            &dir.join("nft.txt"),
            &run_case(&["plan", "--nft-text"], case),
            &mut failures,
        );
        compare(
            &dir.join("interfaces.xml"),
            &run_case(&["domxml"], case),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_help() {
    let mut failures = Vec::new();
    for sub in [
        "", "validate", "plan", "domxml", "up", "down", "status", "audit",
    ] {
        let args: Vec<&str> = if sub.is_empty() {
            vec!["--help"]
        } else {
            vec![sub, "--help"]
        };
        let name = if sub.is_empty() {
            "netbind".to_string()
        } else {
            format!("netbind-{sub}")
        };
        let path = root().join(format!("testdata/golden/help/{name}.txt"));
        compare(&path, &netbind(&args), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
