//! `netbind up --runtime containerd` (root): the main job on a real containerd that netbind
//! starts for itself. The report must carry the same checks as on the simulator; `status`
//! lists the pod with its containers; `down` removes the sandbox through the runtime and,
//! with the last pod, the private node. Needs containerd, runc, buildah, catatonit, QEMU and
//! the guest image (scripts/setup.sh installs and builds them; CI has them).
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::process::Command;

fn netbind(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netbind"))
        .current_dir(common::root())
        .args(args)
        .output()
        .expect("netbind runs")
}

/// A pod's binaries plus `extra`, containerd and its tools, QEMU and the guest image (a
/// failure in CI, a loud skip elsewhere).
fn containerd_ready(extra: &[&'static str]) -> bool {
    let mut bins = common::POD_BINS.to_vec();
    bins.extend(extra);
    common::ready_with(
        &bins,
        &[
            "containerd",
            "runc",
            "ctr",
            "buildah",
            "catatonit",
            "qemu-system-x86_64",
        ],
        common::guest_missing(),
    )
}

#[test]
fn up_status_down_on_containerd() {
    if !containerd_ready(&["netbind-cni", "netbind-ra", "netbind-audit"]) {
        return;
    }
    let name = format!("cri-{}", std::process::id());
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = netbind(&["down", &self.0]);
        }
    }
    let _down = Down(name.clone());
    let out = netbind(&[
        "up",
        "examples/vmi-masquerade.yaml",
        "--runtime",
        "containerd",
        "--boot",
        "qemu",
        "--name",
        &name,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "netbind up --runtime containerd failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let guest = &doc["guest"];
    assert_eq!(guest["lease_ip"], "10.0.2.2", "{doc:#}");
    assert_eq!(guest["ping_gateway"], true, "{doc:#}");
    assert_eq!(guest["egress"], true, "{doc:#}");
    assert_eq!(guest["ingress"], true, "{doc:#}");
    let steps: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    for step in ["sandbox", "phase1", "launcher", "boot", "lease"] {
        assert!(steps.contains(&step), "step {step} in {steps:?}");
    }
    let status = common::pod_status(&name).expect("status lists the pod");
    assert_eq!(status["runtime"], "containerd", "{status:#}");
    assert_eq!(status["phase"], "running", "{status:#}");
    assert!(
        status["launcher"]
            .as_str()
            .unwrap()
            .starts_with("container "),
        "{status:#}"
    );

    // The audit runs inside that pod too, as one more locked-down container: nothing is
    // exposed, the cross-pod attacks hit a victim pod of the same runtime, and the launcher and
    // QEMU run with no capability under netbind's VM filter.
    let out = netbind(&["audit", &name, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).expect("audit JSON");
    let rows = audit["rows"].as_array().expect("rows");
    assert!(rows.len() >= 39, "{audit:#}");
    let exposed: Vec<&str> = rows
        .iter()
        .filter(|doc| doc["verdict"] == "EXPOSED")
        .filter_map(|doc| doc["id"].as_str())
        .collect();
    assert!(
        exposed.is_empty(),
        "exposed in the CRI pod: {exposed:?}\n{audit:#}"
    );
    for id in ["A33", "A34"] {
        let row = rows.iter().find(|doc| doc["id"] == id).unwrap();
        assert_eq!(row["caps_only"], "ESRCH", "{row:#}");
    }
    let env = &audit["environment"];
    assert_eq!(env["runtime"], "containerd", "{env:#}");
    for process in ["launcher_process", "qemu_process"] {
        assert_eq!(env[process]["CapEff"], "0000000000000000", "{env:#}");
        assert_eq!(env[process]["Seccomp"], "2", "{env:#}");
    }

    let out = netbind(&["down", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(common::pod_status(&name).is_none(), "the pod is gone");
    let netns =
        String::from_utf8_lossy(&Command::new("ip").args(["netns"]).output().unwrap().stdout)
            .into_owned();
    assert!(
        !netns
            .lines()
            .any(|l| l.split_whitespace().next() == Some("netbind-cri")),
        "the private node's namespace is removed with its last pod: {netns}"
    );
    assert!(
        !std::path::Path::new("/var/lib/netbind/cri-node").exists(),
        "the private node's directory is removed"
    );
}

#[test]
fn up_on_a_given_cri_socket() {
    if !containerd_ready(&["netbind-cni", "netbind-ra"]) {
        return;
    }
    // Someone else's containerd: a node of the CRI tier, with netbind-cni in its chain.
    let exe_dir = std::path::Path::new(env!("CARGO_BIN_EXE_netbind"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = std::env::temp_dir().join(format!("netbind-given-cri-{}", std::process::id()));
    let node = netbind_cri::node::Node::start(netbind_cri::node::NodeConfig {
        dir,
        netns: format!("nbgiven-{}", std::process::id()),
        subnet_prefix: "10.254.3".into(),
        netbind_bins: Some(exe_dir),
        binding_plugin: None,
    })
    .expect("a containerd to point netbind at");
    let name = format!("given-{}", std::process::id());
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = netbind(&["down", &self.0]);
        }
    }
    let _down = Down(name.clone());
    let socket = node.config.socket().display().to_string();
    let run_dir = node.config.netbind_run_dir().display().to_string();
    let out = netbind(&[
        "up",
        "examples/vmi-bridge.yaml",
        "--runtime",
        "containerd",
        "--cri-socket",
        &socket,
        "--cni-run-dir",
        &run_dir,
        "--boot",
        "qemu",
        "--name",
        &name,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "netbind up --cri-socket failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    // The bridge binding: the guest leases the pod's own address.
    assert_eq!(doc["guest"]["lease_ip"], doc["pod_ip"], "{doc:#}");
    assert_eq!(doc["guest"]["ping_gateway"], true, "{doc:#}");
    let out = netbind(&["down", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(common::pod_status(&name).is_none(), "the pod is gone");
    let mut cri = node.client().unwrap();
    assert!(
        cri.sandboxes().unwrap().is_empty(),
        "down removed the sandbox"
    );
    assert!(
        netbind_cri::node::Node::running(&node.config),
        "a containerd netbind did not start is left running"
    );
}
