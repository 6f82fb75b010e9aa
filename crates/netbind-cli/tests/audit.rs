//! `netbind audit`: every attack A1–A31 tried for real from inside a pod as the launcher, and
//! with NET_ADMIN + NET_RAW granted (the talk's demonstration). Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::collections::BTreeMap;
use std::process::Command;

fn ready() -> bool {
    common::root_with_bins(&["netbind-handler", "netbind-launcher", "netbind-audit"])
}

fn audit(args: &[&str]) -> (serde_json::Value, BTreeMap<String, String>) {
    let o = Command::new(env!("CARGO_BIN_EXE_netbind"))
        .arg("audit")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = r["rows"]
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
    (r, v)
}

fn ids(v: &BTreeMap<String, String>, verdict: &str) -> Vec<String> {
    let mut ids: Vec<String> = v
        .iter()
        .filter(|(_, x)| x.as_str() == verdict)
        .map(|(k, _)| k.clone())
        .collect();
    ids.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
    ids
}

#[test]
fn the_launcher_as_it_runs_blocks_every_attack() {
    if !ready() {
        return;
    }
    let (r, v) = audit(&[]);
    assert_eq!(v.len(), 31);
    assert!(ids(&v, "EXPOSED").is_empty(), "{r:#}");
    // Everything is blocked, recon included (the seccomp filter leaves no netlink socket).
    assert_eq!(ids(&v, "blocked").len(), 31, "{r:#}");
    // The attacks dropping capabilities alone does not stop are shown stopped by the other
    // layers: the tap owner is the launcher's uid (A20 succeeds on credentials alone), IPV6_FREEBIND
    // needs no capability (A7), a foreign fd is writable (A22): the seccomp filter refuses them.
    let row = |id: &str| {
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()
            .clone()
    };
    for id in ["A7", "A20", "A22"] {
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
    // A9: the rogue DHCP datagram is dropped by phase 1's nft guard, and never reaches the node.
    assert_eq!(row("A9")["caps_only"], "EPERM");
    assert_eq!(r["rogue_dhcp_reached_node"], false);
    // A10: uid 107 and a read-only /proc/sys.
    assert!(["EACCES", "EROFS"].contains(&row("A10")["caps_only"].as_str().unwrap()));
    assert_eq!(
        r["environment"]["proc_sys_mount"]
            .as_str()
            .unwrap()
            .split(',')
            .next(),
        Some("ro")
    );
    // A26: non-dumpable; A22: no tun fd in the launcher.
    assert_eq!(row("A26")["caps_only"], "EPERM");
    assert_eq!(r["launcher_holds_tun_fd"], false);
    let l = &r["environment"]["launcher_process"];
    assert_eq!(
        (
            l["CapEff"].as_str(),
            l["CapBnd"].as_str(),
            l["NoNewPrivs"].as_str(),
            l["Seccomp"].as_str()
        ),
        (
            Some("0000000000000000"),
            Some("0000000000000000"),
            Some("1"),
            Some("2")
        )
    );
}

#[test]
fn with_net_admin_and_net_raw_the_attacks_succeed() {
    if !ready() {
        return;
    }
    let (r, v) = audit(&["--grant", "NET_ADMIN,NET_RAW"]);
    let allowed: Vec<String> = [
        "A1", "A2", "A3", "A4", "A6", "A8", "A9", "A11", "A12", "A13", "A14", "A15", "A16", "A17",
        "A18", "A19", "A20", "A27", "A28", "A30", "A31",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(ids(&v, "allowed-as-expected"), allowed, "{r:#}");
    // With NET_RAW a rogue DHCP server answers the node side: a packet socket bypasses nftables.
    assert_eq!(r["rogue_dhcp_reached_node"], true);
    // Without netbind's seccomp filter, IPv6 source forgery needs no capability at all.
    assert_eq!(ids(&v, "EXPOSED"), vec!["A7".to_string()], "{r:#}");
    assert_eq!(
        ids(&v, "blocked"),
        ["A5", "A10", "A21", "A22", "A23", "A24", "A25", "A26", "A29"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
}
