//! `netbind audit`: every attack A1–A35 tried for real from inside a pod in the VM side's
//! sandbox, as the launcher and as QEMU, against another pod with a QEMU guest, and with
//! NET_ADMIN + NET_RAW granted (the talk's demonstration). Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::collections::BTreeMap;
use std::process::Command;

fn ready() -> bool {
    // The other pod of the cross-pod attacks runs a QEMU guest.
    let mut bins = common::POD_BINS.to_vec();
    bins.push("netbind-audit");
    common::ready_with(&bins, &["qemu-system-x86_64"], common::guest_missing())
}

fn audit(args: &[&str]) -> (serde_json::Value, BTreeMap<String, String>) {
    let cmd = Command::new(env!("CARGO_BIN_EXE_netbind"))
        .arg("audit")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        cmd.status.success(),
        "{}",
        String::from_utf8_lossy(&cmd.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&cmd.stdout).unwrap();
    let rows = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (doc, rows)
}

fn ids(rows: &BTreeMap<String, String>, verdict: &str) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .filter(|(_, x)| x.as_str() == verdict)
        .map(|(k, _)| k.clone())
        .collect();
    ids.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
    ids
}

fn row(doc: &serde_json::Value, id: &str) -> serde_json::Value {
    doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap()
        .clone()
}

#[test]
fn the_vm_side_as_it_runs_blocks_every_attack() {
    if !ready() {
        return;
    }
    let (doc, rows) = audit(&[]);
    assert_eq!(rows.len(), 39);
    assert!(ids(&rows, "EXPOSED").is_empty(), "{doc:#}");
    // Allowed: recon (A31) and, for QEMU only, attaching the VM's own tap (A20), its job.
    assert_eq!(ids(&rows, "allowed-as-expected"), ["A20", "A31"], "{doc:#}");
    assert_eq!(ids(&rows, "blocked").len(), 37, "{doc:#}");
    let row = |id: &str| row(&doc, id);
    // What credentials and namespaces alone do not stop, the filters do: the tap owner is the
    // VM uid (A20), IPV6_FREEBIND needs no capability (A7), a foreign fd is writable (A22),
    // and a user namespace makes nf_tables reachable (A32).
    for id in ["A7", "A20", "A22", "A32"] {
        assert!(
            row(id)["caps_only"].as_str().unwrap().starts_with("ok"),
            "{id} on credentials alone: {}",
            row(id)
        );
        assert_eq!(
            row(id)["launcher"],
            "EPERM",
            "{id} under the launcher's filter"
        );
    }
    // QEMU's sandbox filter refuses source forgery and namespace creation too.
    for id in ["A7", "A32", "A23", "A24"] {
        assert_eq!(
            row(id)["vm"],
            "EPERM",
            "{id} under the VM filter: {}",
            row(id)
        );
    }
    // Pods are isolated by their namespaces alone: the other pod's launcher and QEMU cannot
    // be named from this one, nor its hand-off record be found.
    assert_eq!(row("A33")["caps_only"], "ESRCH", "{}", row("A33"));
    assert_eq!(row("A34")["caps_only"], "ESRCH", "{}", row("A34"));
    assert_eq!(row("A35")["caps_only"], "ENOENT", "{}", row("A35"));
    // The router-advertisement socket (the audited pod is dual stack): what carries its mark
    // leaves only as an RA through the bridge; it cannot be rebound, unfiltered or unmarked.
    for id in ["A36", "A37", "A38", "A39"] {
        assert_eq!(row(id)["caps_only"], "EPERM", "{id}: {}", row(id));
    }
    // A9: the rogue DHCP datagram is dropped by phase 1's nft guard, and never reaches the node.
    assert_eq!(row("A9")["caps_only"], "EPERM");
    assert_eq!(doc["rogue_dhcp_reached_node"], false);
    // A10: uid 107 and a read-only /proc/sys.
    assert!(["EACCES", "EROFS"].contains(&row("A10")["caps_only"].as_str().unwrap()));
    assert_eq!(
        doc["environment"]["proc_sys_mount"]
            .as_str()
            .unwrap()
            .split(',')
            .next(),
        Some("ro")
    );
    // A26: the launcher is in another PID namespace; A22: no tun fd in the launcher.
    assert_eq!(row("A26")["caps_only"], "ESRCH");
    assert_eq!(doc["launcher_holds_tun_fd"], false);
    let env = &doc["environment"];
    let status = |path: &serde_json::Value| {
        (
            path["CapEff"].as_str().map(String::from),
            path["CapBnd"].as_str().map(String::from),
            path["NoNewPrivs"].as_str().map(String::from),
            path["Seccomp"].as_str().map(String::from),
            // Two PIDs: the node's and 1, its own namespace's.
            path["NSpid"].as_str().map(|s| s.split_whitespace().count()),
        )
    };
    let locked = (
        Some("0000000000000000".to_string()),
        Some("0000000000000000".to_string()),
        Some("1".to_string()),
        Some("2".to_string()),
        Some(2),
    );
    for path in [
        &env["launcher_process"],
        &env["victim"]["launcher"],
        &env["victim"]["qemu"],
    ] {
        assert_eq!(status(path), locked, "{path}");
    }
    // QEMU under both filters: netbind's two and its own -sandbox.
    assert_eq!(env["victim"]["qemu"]["Seccomp_filters"], "3", "{env}");
}

#[test]
fn with_net_admin_and_net_raw_the_attacks_succeed() {
    if !ready() {
        return;
    }
    let (doc, rows) = audit(&["--grant", "NET_ADMIN,NET_RAW"]);
    let allowed: Vec<String> = [
        "A1", "A2", "A3", "A4", "A6", "A8", "A9", "A11", "A12", "A13", "A14", "A15", "A16", "A17",
        "A18", "A19", "A20", "A27", "A28", "A30", "A31", "A38", "A39",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(ids(&rows, "allowed-as-expected"), allowed, "{doc:#}");
    // With NET_RAW a rogue DHCP server answers the node side: a packet socket bypasses nftables.
    assert_eq!(doc["rogue_dhcp_reached_node"], true);
    // Without netbind's filters, IPv6 source forgery and a user namespace with nf_tables need
    // no capability at all.
    assert_eq!(ids(&rows, "EXPOSED"), ["A7", "A32"], "{doc:#}");
    // The namespaces still keep the other pod out of reach.
    assert_eq!(
        ids(&rows, "blocked"),
        [
            "A5", "A10", "A21", "A22", "A23", "A24", "A25", "A26", "A29", "A33", "A34", "A35",
            "A36", "A37"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
    );
}

#[test]
fn without_ra_guard_the_ra_socket_reaches_the_node() {
    if !ready() {
        return;
    }
    // The attack is real: on a dual-stack pod whose ra_guard chain is emptied, the RA socket's
    // advertisement and forged neighbour advertisement reach the node.
    let name = format!("ra-guard-{}", std::process::id());
    let up = Command::new(env!("CARGO_BIN_EXE_netbind"))
        .args(["up", "examples/vmi-dual-stack.yaml", "--name", &name])
        .current_dir(common::root())
        .output()
        .unwrap();
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Command::new(env!("CARGO_BIN_EXE_netbind"))
                .args(["down", &self.0])
                .output();
        }
    }
    let _down = Down(name.clone());
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let (doc, rows) = audit(&[&name]);
    assert_eq!(ids(&rows, "EXPOSED"), Vec::<String>::new(), "{doc:#}");
    netbind_testkit::ok(&format!(
        "ip netns exec netbind-{name} nft flush chain inet netbind ra_guard"
    ));
    let (doc, rows) = audit(&[&name]);
    assert_eq!(ids(&rows, "EXPOSED"), ["A36", "A37"], "{doc:#}");
}
