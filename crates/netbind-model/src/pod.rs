//! The observed pod network namespace (`POD.json`): what phase 1 reads before planning.
//!
//! `netbind-handler observe` produces it from a netlink dump; `netbind plan --pod` reads it.
//! Only facts the planner needs are recorded: per interface its name, ifindex, kind, MAC, MTU,
//! addresses and the main-table routes whose output interface it is.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::net::Cidr;
use crate::types::{IfName, MacAddr};

pub const POD_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedPod {
    pub version: u32,
    pub interfaces: Vec<PodInterface>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodInterface {
    pub name: IfName,
    /// Kernel ifindex; 0 when unknown (hand-written files). Phase 1 finds a renamed pod
    /// interface again by this index.
    #[serde(default)]
    pub index: u32,
    /// As netlink reports `IFLA_INFO_KIND`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<LinkType>,
    pub mac: MacAddr,
    pub mtu: u32,
    /// All addresses, both families, including link-local, in kernel order.
    #[serde(default)]
    pub addresses: Vec<Cidr>,
    /// Main-table routes whose output interface is this one, in kernel order.
    #[serde(default)]
    pub routes: Vec<PodRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodRoute {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("POD.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("POD.json: unsupported version {0} (this netbind reads version {POD_FORMAT_VERSION})")]
    Version(u32),
    #[error("POD.json: interface {0} is listed twice")]
    Duplicate(IfName),
    #[error("POD.json: interfaces[{index}].mtu: {mtu} is below the IPv4 minimum of {MIN_MTU}")]
    Mtu { index: usize, mtu: u32 },
}

/// RFC 791: every IPv4 link carries 68-byte datagrams; below that nothing netbind plans works.
pub const MIN_MTU: u32 = 68;

impl ObservedPod {
    pub fn from_json(text: &str) -> Result<Self, PodError> {
        let pod: ObservedPod = serde_json::from_str(text)?;
        if pod.version != POD_FORMAT_VERSION {
            return Err(PodError::Version(pod.version));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, iface) in pod.interfaces.iter().enumerate() {
            if iface.mtu < MIN_MTU {
                return Err(PodError::Mtu {
                    index,
                    mtu: iface.mtu,
                });
            }
            if !seen.insert(&iface.name) {
                return Err(PodError::Duplicate(iface.name.clone()));
            }
        }
        Ok(pod)
    }

    pub fn get(&self, name: &str) -> Option<&PodInterface> {
        self.interfaces.iter().find(|i| i.name.as_str() == name)
    }
}

impl PodInterface {
    pub fn global_v4(&self) -> Option<Cidr> {
        self.addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() && a.is_global_unicast())
    }

    pub fn global_v6(&self) -> Option<Cidr> {
        self.addresses
            .iter()
            .copied()
            .find(|a| !a.is_ipv4() && a.is_global_unicast())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let json = r#"{"version":1,"interfaces":[{"name":"eth0","index":2,"mac":"0a:58:0a:f4:00:05","mtu":1450,
            "addresses":["fe80::1/64","10.244.0.5/24"],"routes":[{"dst":"0.0.0.0/0","gateway":"10.244.0.1"}]}]}"#;
        let pod = ObservedPod::from_json(json).expect("valid");
        let eth0 = pod.get("eth0").expect("eth0");
        assert_eq!(
            eth0.global_v4().map(|c| c.to_string()),
            Some("10.244.0.5/24".into())
        );
        assert_eq!(eth0.global_v6(), None);
        assert!(matches!(
            ObservedPod::from_json(&json.replace("\"version\":1", "\"version\":9")),
            Err(PodError::Version(9))
        ));
        let err = ObservedPod::from_json(&json.replace("1450", "67")).expect_err("mtu 67");
        assert!(err.to_string().contains("interfaces[0].mtu: 67"), "{err}");
        let err = ObservedPod::from_json(&json.replace("\"mtu\"", "\"mtux\""))
            .expect_err("unknown field");
        assert!(err.to_string().contains("mtux"), "{err}");
        let err = ObservedPod::from_json(&json.replace("eth0", "a-very-long-interface-name"))
            .expect_err("long");
        assert!(err.to_string().contains("longer than 15"), "{err}");
    }
}

/// A kernel link's type (`IFLA_INFO_KIND`). The types netbind acts on are variants; any other
/// is kept as the kernel names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum LinkType {
    Bridge,
    Dummy,
    /// The stand-in netbind creates where the `dummy` driver is missing.
    Ifb,
    /// A tap (the kernel reports taps and tuns as `tun`).
    Tun,
    Veth,
    Other(String),
}

impl LinkType {
    pub fn as_str(&self) -> &str {
        match self {
            LinkType::Bridge => "bridge",
            LinkType::Dummy => "dummy",
            LinkType::Ifb => "ifb",
            LinkType::Tun => "tun",
            LinkType::Veth => "veth",
            LinkType::Other(kind) => kind,
        }
    }

    /// A type netbind creates, so that it may replace a link of that type; it refuses to
    /// touch any other.
    pub fn netbind_creates(&self) -> bool {
        matches!(
            self,
            LinkType::Bridge | LinkType::Dummy | LinkType::Ifb | LinkType::Tun
        )
    }
}

impl From<String> for LinkType {
    fn from(kind: String) -> Self {
        match kind.as_str() {
            "bridge" => LinkType::Bridge,
            "dummy" => LinkType::Dummy,
            "ifb" => LinkType::Ifb,
            "tun" => LinkType::Tun,
            "veth" => LinkType::Veth,
            _ => LinkType::Other(kind),
        }
    }
}

impl From<LinkType> for String {
    fn from(kind: LinkType) -> Self {
        kind.as_str().to_string()
    }
}

impl std::fmt::Display for LinkType {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.pad(self.as_str())
    }
}
