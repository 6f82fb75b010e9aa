//! KubeVirt's naming schemes (§3): pod interface, tap, bridge, renamed pod interface, and
//! the bridge binding's "fake" link-local address.

use std::net::Ipv4Addr;

use netbind_model::admitted::AdmittedNetwork;
use netbind_model::{Cidr, IfName};
use sha2::{Digest, Sha256};

pub const PRIMARY_POD_IFACE: &str = "eth0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("generated interface name for network {network:?}: {source}")]
    IfName {
        network: String,
        source: netbind_model::types::IfNameError,
    },
    #[error(
        "interface index {index} of network {network:?} has no fake bridge address: KubeVirt's \
         169.254.75.1<index> scheme only works for the first 100 interfaces"
    )]
    FakeIpIndex { network: String, index: usize },
}

/// `"pod" + hex(sha256(network name))[:11]`: 11 = IFNAMSIZ-1 - len("-nic").
pub fn hashed_pod_iface_name(network_name: &str) -> String {
    let digest = Sha256::digest(network_name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("pod{}", &hex[..11])
}

/// Is the pod using the legacy ordinal scheme (`net1`, `net2`, ...)?
pub fn uses_ordinal_scheme<'a>(pod_ifaces: impl IntoIterator<Item = &'a str>) -> bool {
    pod_ifaces.into_iter().any(|n| {
        n.strip_prefix("net")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The pod interface name of every network, in `spec.networks` order.
/// Primary (pod or multus default) → `eth0` unless the VMI status recorded another name;
/// secondary → hashed, or ordinal `netN` when the pod already uses that scheme.
pub fn pod_iface_names(
    networks: &[AdmittedNetwork],
    status_names: &dyn Fn(&str) -> Option<String>,
    ordinal: bool,
) -> Result<Vec<(String, IfName)>, NamingError> {
    let mut out = Vec::new();
    let mut secondary = 0usize;
    for net in networks {
        let name = if net.is_primary() {
            status_names(&net.name).unwrap_or_else(|| PRIMARY_POD_IFACE.to_string())
        } else {
            secondary += 1;
            if ordinal {
                format!("net{secondary}")
            } else {
                hashed_pod_iface_name(&net.name)
            }
        };
        let ifname = IfName::new(name).map_err(|source| NamingError::IfName {
            network: net.name.clone(),
            source,
        })?;
        out.push((net.name.clone(), ifname));
    }
    Ok(out)
}

fn suffix(pod_iface: &IfName) -> &str {
    pod_iface
        .as_str()
        .strip_prefix("pod")
        .unwrap_or(pod_iface.as_str())
}

fn derived(network: &str, name: String) -> Result<IfName, NamingError> {
    IfName::new(name).map_err(|source| NamingError::IfName {
        network: network.into(),
        source,
    })
}

/// `tap0` for the primary network, `"tap" + podIface[3:]` for the others.
pub fn tap_name(network: &str, pod_iface: &IfName, primary: bool) -> Result<IfName, NamingError> {
    if primary {
        return derived(network, "tap0".into());
    }
    let rest = pod_iface.as_str().get(3..).unwrap_or("");
    derived(network, format!("tap{rest}"))
}

/// `"k6t-" + podIface without a leading "pod"`.
pub fn bridge_name(network: &str, pod_iface: &IfName) -> Result<IfName, NamingError> {
    derived(network, format!("k6t-{}", suffix(pod_iface)))
}

/// The bridge binding renames the pod interface to `<suffix>-nic`.
pub fn nic_name(network: &str, pod_iface: &IfName) -> Result<IfName, NamingError> {
    derived(network, format!("{}-nic", suffix(pod_iface)))
}

/// `169.254.75.1<index>/32`. KubeVirt does not guard index ≥ 100 (it makes an invalid
/// address); netbind refuses it.
pub fn fake_bridge_ip(network: &str, index: usize) -> Result<Cidr, NamingError> {
    let bad = || NamingError::FakeIpIndex {
        network: network.into(),
        index,
    };
    if index >= 100 {
        return Err(bad());
    }
    let last: u8 = format!("1{index}").parse().map_err(|_| bad())?;
    Cidr::new(Ipv4Addr::new(169, 254, 75, last).into(), 32).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifn(text: &str) -> IfName {
        IfName::new(text).expect("valid")
    }

    #[test]
    fn hashed_names_match_kubevirt() {
        assert_eq!(hashed_pod_iface_name("blue"), "pod16477688c0e");
        assert_eq!(hashed_pod_iface_name("red"), "podb1f51a511f1");
        assert_eq!(hashed_pod_iface_name("secondnetwork"), "pod914f438d88d");
    }

    #[test]
    fn derived_names() {
        let pod = ifn("pod914f438d88d");
        assert_eq!(
            tap_name("n", &pod, false).expect("tap").as_str(),
            "tap914f438d88d"
        );
        assert_eq!(
            bridge_name("n", &pod).expect("br").as_str(),
            "k6t-914f438d88d"
        );
        assert_eq!(
            nic_name("n", &pod).expect("nic").as_str(),
            "914f438d88d-nic"
        );
        let eth0 = ifn("eth0");
        assert_eq!(tap_name("n", &eth0, true).expect("tap").as_str(), "tap0");
        assert_eq!(bridge_name("n", &eth0).expect("br").as_str(), "k6t-eth0");
        assert_eq!(nic_name("n", &eth0).expect("nic").as_str(), "eth0-nic");
        let n1 = ifn("net1");
        assert_eq!(tap_name("n", &n1, false).expect("tap").as_str(), "tap1");
        assert_eq!(bridge_name("n", &n1).expect("br").as_str(), "k6t-net1");
        assert_eq!(
            nic_name("n", &ifn("net12")).expect("nic").as_str(),
            "net12-nic"
        );
        assert_eq!(
            bridge_name("n", &ifn("cust-iface")).expect("br").as_str(),
            "k6t-cust-iface"
        );
        // A custom primary name that is too long for the derived names is an error, not a
        // truncation.
        assert!(matches!(
            nic_name("n", &ifn("abcdefghijklm")),
            Err(NamingError::IfName { .. })
        ));
    }

    #[test]
    fn ordinal_detection() {
        assert!(uses_ordinal_scheme(["eth0", "net1"]));
        assert!(!uses_ordinal_scheme([
            "eth0",
            "net",
            "netx",
            "pod16477688c0e"
        ]));
    }

    #[test]
    fn fake_ips() {
        assert_eq!(
            fake_bridge_ip("n", 0).expect("0").to_string(),
            "169.254.75.10/32"
        );
        assert_eq!(
            fake_bridge_ip("n", 1).expect("1").to_string(),
            "169.254.75.11/32"
        );
        assert_eq!(
            fake_bridge_ip("n", 10).expect("10").to_string(),
            "169.254.75.110/32"
        );
        assert_eq!(
            fake_bridge_ip("n", 99).expect("99").to_string(),
            "169.254.75.199/32"
        );
        assert!(matches!(
            fake_bridge_ip("n", 100),
            Err(NamingError::FakeIpIndex { .. })
        ));
    }
}
