//! The planner's golden cases, run through the library: VMI → admission → plan, compared with
//! `testdata/golden/CASE/{plan.json,handoff.json,nft.txt}`. (The CLI's golden test runs the
//! same cases through `netbind plan` and also checks the domain XML and the help texts.)
//! `NETBIND_BLESS=1 cargo test -p netbind-plan --test golden` rewrites them after review.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed step is a failed test

use netbind_model::admission::ClusterConfig;
use netbind_model::check::check_vmi;
use netbind_model::pod::ObservedPod;
use netbind_plan::{Owner, PlanOptions, PodNetPlan};
use netbind_testkit::golden::{CASES, Case, compare};
use netbind_testkit::repo_root;

fn plan(case: &Case) -> PodNetPlan {
    let read = |rel: &str| {
        std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let mut cluster = match case.kubevirt_config {
        Some(rel) => netbind_model::cluster_objects::kubevirt_config(&read(rel))
            .expect("the case's KubeVirt CR"),
        None => ClusterConfig::default(),
    };
    cluster
        .feature_gates
        .extend(case.feature_gates.iter().map(|g| (*g).into()));
    cluster.spoof_check_networks = case.spoof_check.iter().map(|n| (*n).into()).collect();
    let vmi = check_vmi(&read(case.vmi), &cluster).expect("the case's VMI is admitted");
    let pod = ObservedPod::from_json(&read(&format!("testdata/pods/{}.json", case.pod)))
        .expect("the case's pod file");
    let resolv = read(&format!("testdata/{}", case.resolv));
    let opts = PlanOptions {
        owner: Owner {
            uid: case.owner.0,
            gid: case.owner.1,
        },
        resolv_conf: &resolv,
        cluster: &cluster,
        networks: None,
    };
    netbind_plan::plan(&vmi, &pod, &opts).expect("the case plans")
}

#[test]
fn golden_plans() {
    let mut failures = Vec::new();
    for case in CASES {
        let dir = repo_root().join("testdata/golden").join(case.name);
        let plan = plan(case);
        let json = serde_json::to_string_pretty(&plan).expect("plan serialises") + "\n";
        compare(&dir.join("plan.json"), &json, &mut failures);
        // The hand-off golden is written with sorted keys (a JSON value, as the CLI test reads
        // it back from `netbind plan`).
        let value = serde_json::to_value(&plan.handoff).expect("hand-off serialises");
        let handoff = serde_json::to_string_pretty(&value).expect("JSON") + "\n";
        compare(&dir.join("handoff.json"), &handoff, &mut failures);
        let nft: String = plan
            .nftables
            .commands
            .iter()
            .map(|c| format!("{c}\n"))
            .collect();
        compare(&dir.join("nft.txt"), &nft, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
