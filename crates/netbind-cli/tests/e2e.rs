//! End-to-end tier: `netbind up --boot ...` on one machine, with a real guest under QEMU (TCG)
//! or through an unprivileged libvirt session daemon, asserting the lease and the
//! connectivity it reports; then `netbind down` must leave nothing behind. Needs root, QEMU,
//! libvirt and the guest image (scripts/setup.sh installs and builds them; CI has them).
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::path::Path;
use std::process::Command;

fn ready(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !common::root().join(".e2e/guest/initrd.gz").is_file() {
        missing.push("the guest image (scripts/build-guest.sh)".into());
    }
    common::ready_with(&["netbind-handler", "netbind-launcher"], tools, missing)
}

fn netbind(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netbind"))
        .current_dir(common::root())
        .args(args)
        .output()
        .expect("netbind runs")
}

/// Brings a pod up with a real guest, checks the report, brings it down, checks no trace.
/// `unlisted`: the spec lists ports, so a port it does not list must not reach the guest.
fn up_and_down(
    vmi: &str,
    boot: &str,
    name: &str,
    want_lease: impl Fn(&str) -> bool,
    unlisted: bool,
) {
    let _ = netbind(&["down", name]);
    let o = netbind(&["up", vmi, "--boot", boot, "--name", name, "--json"]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    // Leave nothing behind even if an assertion below fails.
    struct Down<'a>(&'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = netbind(&["down", self.0]);
        }
    }
    let _down = Down(name);
    assert!(o.status.success(), "netbind up failed:\n{stdout}\n{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let g = &r["guest"];
    let lease = g["lease_ip"].as_str().unwrap_or("");
    assert!(want_lease(lease), "lease {lease:?} in {r:#}");
    assert!(
        g["time_to_lease_ms"].as_u64().is_some_and(|t| t > 0),
        "{r:#}"
    );
    assert_eq!(g["ping_gateway"], true, "{r:#}");
    assert_eq!(g["egress"], true, "{r:#}");
    assert_eq!(g["ingress"], true, "{r:#}");
    if unlisted {
        assert_eq!(g["unlisted_blocked"], true, "{r:#}");
    } else {
        assert!(g["unlisted_blocked"].is_null(), "{r:#}");
    }
    let pod_ip = r["pod_ip"].as_str().unwrap().to_string();

    let st = netbind(&["status", "--json"]);
    let pods: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let me = pods
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .expect("listed by status");
    assert!(
        me["launcher"].as_str().unwrap().starts_with("running"),
        "{me}"
    );
    assert!(me["vm"].as_str().unwrap().contains("running"), "{me}");

    let d = netbind(&["down", name]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    assert!(
        !Path::new(&format!("/run/netns/netbind-{name}")).exists(),
        "pod namespace removed"
    );
    assert!(
        !Path::new(&format!("/run/netbind/pods/{name}")).exists(),
        "pod record removed"
    );
    assert_eq!(
        common::address_held_by(name),
        None,
        "down released the pod's address ({pod_ip})"
    );
    let ps = String::from_utf8_lossy(
        &Command::new("ps")
            .args(["-eo", "stat,args"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !ps.lines()
            .any(|l| !l.starts_with('Z') && l.contains(&format!("/run/netbind/pods/{name}/"))),
        "no process of the pod is left:\n{ps}"
    );
}

#[test]
fn masquerade_with_qemu() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox"]) {
        up_and_down(
            "examples/vmi-masquerade.yaml",
            "qemu",
            &format!("e2e-mq-{}", std::process::id()),
            |l| l == "10.0.2.2",
            false,
        );
    }
}

#[test]
fn bridge_with_qemu() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox"]) {
        // The guest takes over the pod IP.
        up_and_down(
            "examples/vmi-bridge.yaml",
            "qemu",
            &format!("e2e-bq-{}", std::process::id()),
            |l| l.starts_with("10.244.0."),
            false,
        );
    }
}

#[test]
fn masquerade_with_libvirt() {
    if ready(&[
        "qemu-system-x86_64",
        "setpriv",
        "busybox",
        "libvirtd",
        "virsh",
    ]) {
        up_and_down(
            "examples/vmi-masquerade.yaml",
            "libvirt",
            &format!("e2e-ml-{}", std::process::id()),
            |l| l == "10.0.2.2",
            false,
        );
    }
}

#[test]
fn forwarded_port_from_the_spec() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox"]) {
        // vmi-ports.yaml forwards only TCP 80 (and UDP 53): the guest serves 80 and 8080, the
        // node reaches 80 through the pod IP and not 8080 (which the guest does serve: reached
        // from inside the pod).
        up_and_down(
            "examples/vmi-ports.yaml",
            "qemu",
            &format!("e2e-pt-{}", std::process::id()),
            |l| l == "10.0.2.2",
            true,
        );
    }
}
