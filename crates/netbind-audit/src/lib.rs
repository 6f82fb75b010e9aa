//! The VM side's privilege audit: the attack list A1–A31 (reference: privilege-attacks §6)
//! and A32–A39 (namespace creation, cross-pod attacks, misuse of the router-advertisement
//! socket),
//! what each needs, what it must get without that capability, and the verdict logic.
//! The probes themselves (syscalls) are in `probes`; `netbind audit` runs them as the launcher.

pub mod probes;

use serde::{Deserialize, Serialize};

/// What a probe observed: success (with a detail) or the errno it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    Ok(String),
    Errno(i32),
}

impl Observed {
    pub fn text(&self) -> String {
        match self {
            Observed::Ok(detail) if detail.is_empty() => "ok".into(),
            Observed::Ok(detail) => format!("ok ({detail})"),
            Observed::Errno(errno) => errno_name(*errno),
        }
    }
}

pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EROFS => "EROFS",
        libc::EINVAL => "EINVAL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EBUSY => "EBUSY",
        libc::ENOENT => "ENOENT",
        libc::ENOSPC => "ENOSPC",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENODEV => "ENODEV",
        libc::ESRCH => "ESRCH",
        _ => return format!("errno {errno}"),
    };
    name.into()
}

/// One attack of the list.
#[derive(Debug, Clone, Copy)]
pub struct Attack {
    pub id: &'static str,
    pub name: &'static str,
    /// The capability that would allow it (`None`: no capability gates it).
    pub needs: Option<&'static str>,
    /// The result the capability model predicts without that capability.
    pub expect: &'static str,
}

pub const ATTACKS: &[Attack] = &[
    Attack {
        id: "A1",
        name: "sniff the pod segment (AF_PACKET raw)",
        needs: Some("NET_RAW"),
        expect: "EPERM",
    },
    Attack {
        id: "A2",
        name: "gratuitous ARP on eth0 (AF_PACKET dgram)",
        needs: Some("NET_RAW"),
        expect: "EPERM",
    },
    Attack {
        id: "A3",
        name: "forged IPv4 (raw IPPROTO_RAW socket)",
        needs: Some("NET_RAW"),
        expect: "EPERM",
    },
    Attack {
        id: "A4",
        name: "rogue RA / ICMPv6 (raw ICMPv6 socket)",
        needs: Some("NET_RAW"),
        expect: "EPERM",
    },
    Attack {
        id: "A5",
        name: "ICMP through a ping socket",
        needs: None,
        expect: "EACCES (ping_group_range)",
    },
    Attack {
        id: "A6",
        name: "IPv4 source forgery (IP_TRANSPARENT)",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A7",
        name: "IPv6 source forgery (IPV6_FREEBIND)",
        needs: None,
        expect: "ok without caps: mitigated by seccomp",
    },
    Attack {
        id: "A8",
        name: "re-bind a socket to another device",
        needs: Some("NET_RAW"),
        expect: "EPERM",
    },
    Attack {
        id: "A9",
        name: "rogue DHCP server answering the pod network",
        needs: Some("NET_RAW"),
        expect: "EPERM: the nft guard drops it",
    },
    Attack {
        id: "A10",
        name: "lower the privileged-port floor (/proc/sys)",
        needs: None,
        expect: "EACCES / EROFS",
    },
    Attack {
        id: "A11",
        name: "create a link (bridge)",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A12",
        name: "change eth0's MTU",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A13",
        name: "change eth0's MAC",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A14",
        name: "promiscuous mode on eth0",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A15",
        name: "enslave the tap to a bridge",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A16",
        name: "add an address",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A17",
        name: "nftables (even a GETTABLE dump)",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A18",
        name: "ethtool set (tx checksum)",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A19",
        name: "create a new tap",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A20",
        name: "attach the VM's tap (owner = launcher uid)",
        needs: Some("NET_ADMIN"),
        expect: "ok by owner: mitigated by seccomp",
    },
    Attack {
        id: "A21",
        name: "steal a multiqueue queue of the tap",
        needs: Some("NET_ADMIN"),
        expect: "EINVAL / EPERM",
    },
    Attack {
        id: "A22",
        name: "abuse a held tap fd (write to a foreign fd)",
        needs: None,
        expect: "no tun fd held; write blocked by seccomp",
    },
    Attack {
        id: "A23",
        name: "enter or create a network namespace",
        needs: Some("SYS_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A24",
        name: "user-namespace detour to the pod's eth0",
        needs: None,
        expect: "EPERM on the pod's links",
    },
    Attack {
        id: "A25",
        name: "mount (make /proc/sys writable)",
        needs: Some("SYS_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A26",
        name: "ptrace the launcher",
        needs: Some("SYS_PTRACE"),
        expect: "EPERM (non-dumpable)",
    },
    Attack {
        id: "A27",
        name: "SO_MARK / SO_PRIORITY 7",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A28",
        name: "AF_XDP / eBPF program load",
        needs: Some("NET_RAW"),
        expect: "EPERM",
    },
    Attack {
        id: "A29",
        name: "regain capabilities (capset, ambient raise)",
        needs: None,
        expect: "EPERM",
    },
    Attack {
        id: "A30",
        name: "change the tap's MTU without an fd",
        needs: Some("NET_ADMIN"),
        expect: "EPERM",
    },
    Attack {
        id: "A31",
        name: "recon: dump links (allowed, informational)",
        needs: None,
        expect: "ok",
    },
    Attack {
        id: "A32",
        name: "user + network namespace, nf_tables inside",
        needs: None,
        expect: "EPERM (VM syscall filter)",
    },
    Attack {
        id: "A33",
        name: "signal another pod's launcher (same uid)",
        needs: None,
        expect: "ESRCH (own PID namespace)",
    },
    Attack {
        id: "A34",
        name: "ptrace another pod's QEMU (same uid)",
        needs: None,
        expect: "ESRCH (own PID namespace)",
    },
    Attack {
        id: "A35",
        name: "read another pod's hand-off record",
        needs: None,
        expect: "ENOENT (own mount namespace)",
    },
    Attack {
        id: "A36",
        name: "RA socket: advertise onto the pod network",
        needs: None,
        expect: "EPERM: ra_guard drops its mark",
    },
    Attack {
        id: "A37",
        name: "RA socket: forge a neighbour advertisement",
        needs: None,
        expect: "EPERM: ra_guard drops its mark",
    },
    Attack {
        id: "A38",
        name: "RA socket: rebind it to the pod interface",
        needs: Some("NET_RAW"),
        expect: "EPERM",
    },
    Attack {
        id: "A39",
        name: "RA socket: detach its filter, clear its mark",
        needs: Some("NET_ADMIN"),
        expect: "EPERM (SO_LOCK_FILTER; mark)",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "blocked")]
    Blocked,
    #[serde(rename = "allowed-as-expected")]
    AllowedAsExpected,
    #[serde(rename = "EXPOSED")]
    Exposed,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Blocked => "blocked",
            Verdict::AllowedAsExpected => "allowed-as-expected",
            Verdict::Exposed => "EXPOSED",
        }
    }
}

/// Recon that any process may do (A31) is expected to succeed.
pub fn allowed_by_model(attack: &Attack, grants: &[String]) -> bool {
    attack.id == "A31"
        || attack
            .needs
            .is_some_and(|n| grants.iter().any(|g| g.eq_ignore_ascii_case(n)))
}

/// The verdict from what the launcher itself could do. `reached` is, for attacks whose
/// success is a packet elsewhere (A9), whether it arrived; `held_tun` (A22) whether the real
/// launcher holds a tun fd.
pub fn verdict(
    attack: &Attack,
    observed: &Observed,
    grants: &[String],
    reached: Option<bool>,
) -> Verdict {
    let succeeded = match (observed, reached) {
        (Observed::Errno(_), _) => false,
        (Observed::Ok(_), Some(given)) => given,
        (Observed::Ok(_), None) => true,
    };
    match (succeeded, allowed_by_model(attack, grants)) {
        (false, _) => Verdict::Blocked,
        (true, true) => Verdict::AllowedAsExpected,
        (true, false) => Verdict::Exposed,
    }
}

/// What a compromised launcher must not do but QEMU does by design, with the reason: for
/// the "vm" layer these are expected, not exposures.
pub const QEMU_BY_DESIGN: &[(&str, &str)] = &[
    ("A20", "QEMU attaches the VM's tap: that is its job"),
    ("A22", "QEMU writes to the tap fd it holds: that is its job"),
];

/// The verdict for what a compromised QEMU could do: as [`verdict`], except that what QEMU
/// does by design is expected.
pub fn verdict_as_qemu(
    attack: &Attack,
    observed: &Observed,
    grants: &[String],
    reached: Option<bool>,
) -> Verdict {
    match verdict(attack, observed, grants, reached) {
        Verdict::Exposed if QEMU_BY_DESIGN.iter().any(|(id, _)| *id == attack.id) => {
            Verdict::AllowedAsExpected
        }
        other => other,
    }
}

/// What `netbind-audit` prints (one JSON document): each attack's outcome under each layer it
/// ran, and the values of the environment that change outcomes. `netbind audit` reads it back
/// with this same type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRun {
    pub environment: serde_json::Value,
    pub results: Vec<ProbeResult>,
}

/// One attack's outcomes: credentials and namespaces alone, under the VM filter, under the
/// launcher's allow-list too (the last two only when those layers ran).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeResult {
    pub id: String,
    pub caps: Observed,
    #[serde(default)]
    pub vm: Option<Observed>,
    #[serde(default)]
    pub launcher: Option<Observed>,
}

/// The lines of a `/proc/PID/status`-style file whose keys are in `keys`, as a JSON object
/// (values trimmed); an unreadable file gives an empty object.
pub fn status_lines(path: &str, keys: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| keys.contains(k))
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.trim())))
        .collect()
}

/// One line of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub attack: String,
    pub needs: String,
    pub expected: String,
    /// Credentials and the sandbox's namespaces, no syscall filter (what dropping
    /// capabilities and isolating the pod achieve alone).
    pub caps_only: String,
    /// The VM sandbox as QEMU runs in it: capabilities + namespaces + the VM syscall filter.
    #[serde(default)]
    pub vm: String,
    /// The launcher as it runs: the VM sandbox + the launcher's own allow-list.
    pub launcher: String,
    pub verdict: Verdict,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_complete_and_ordered() {
        let ids: Vec<&str> = ATTACKS.iter().map(|a| a.id).collect();
        let want: Vec<String> = (1..=39).map(|i| format!("A{i}")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn every_attack_has_its_probe() {
        let probes: Vec<&str> = probes::PROBES.iter().map(|(id, _)| *id).collect();
        let attacks: Vec<&str> = ATTACKS.iter().map(|a| a.id).collect();
        assert_eq!(probes, attacks);
    }

    #[test]
    fn verdicts() {
        let a1 = &ATTACKS[0];
        let none: Vec<String> = vec![];
        let raw = vec!["NET_RAW".to_string()];
        assert_eq!(
            verdict(a1, &Observed::Errno(libc::EPERM), &none, None),
            Verdict::Blocked
        );
        assert_eq!(
            verdict(a1, &Observed::Ok(String::new()), &none, None),
            Verdict::Exposed
        );
        assert_eq!(
            verdict(a1, &Observed::Ok(String::new()), &raw, None),
            Verdict::AllowedAsExpected
        );
        let a9 = &ATTACKS[8];
        assert_eq!(
            verdict(a9, &Observed::Ok("sent".into()), &none, Some(false)),
            Verdict::Blocked
        );
        assert_eq!(
            verdict(a9, &Observed::Ok("sent".into()), &none, Some(true)),
            Verdict::Exposed
        );
        assert_eq!(
            verdict(&ATTACKS[30], &Observed::Ok(String::new()), &none, None),
            Verdict::AllowedAsExpected
        );
    }
}
