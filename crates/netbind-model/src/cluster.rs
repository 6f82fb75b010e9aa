//! The cluster configuration: the KubeVirt CR settings that change admission, defaulting and
//! the plan.

use std::collections::BTreeSet;

/// The KubeVirt CR settings that change admission, defaulting and the plan. It crosses from
/// `netbind` to `netbind-handler` whole, as one typed file (`--cluster-config`), so that the
/// two can never apply different settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `spec.configuration.network.defaultNetworkInterface`: `bridge` (default) or `masquerade`.
    pub default_network_interface: String,
    /// `spec.configuration.network.permitBridgeInterfaceOnPodNetwork` (default true).
    pub permit_bridge_interface_on_pod_network: bool,
    /// Enabled feature gates.
    pub feature_gates: BTreeSet<FeatureGate>,
    /// Secondary (Multus) networks, by NetworkAttachmentDefinition (`namespace/name`, or
    /// `name` for the VMI's namespace), whose bridge-bound guests may send only from their own
    /// MAC and addresses. Opt-in per network, as the CNI bridge plugin's `macspoofchk`: guests
    /// on an L2 network may legitimately use other MACs (VRRP, nested bridges). The pod network
    /// is always checked.
    pub spoof_check_networks: BTreeSet<String>,
    /// `spec.configuration.network.binding`: network binding plugins, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub bindings: std::collections::BTreeMap<String, crate::cluster_objects::BindingPlugin>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            default_network_interface: "bridge".into(),
            permit_bridge_interface_on_pod_network: true,
            feature_gates: BTreeSet::new(),
            spoof_check_networks: BTreeSet::new(),
            bindings: std::collections::BTreeMap::new(),
        }
    }
}

impl ClusterConfig {
    /// Reads a cluster configuration strictly (an unknown field is an error).
    pub fn from_json(bytes: &[u8]) -> Result<ClusterConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn gate(&self, gate: FeatureGate) -> bool {
        self.feature_gates.contains(&gate)
    }

    /// Whether the Multus network `network_name` of a VMI in `vmi_namespace` opted in to the
    /// spoofing check.
    pub fn spoof_checked(&self, network_name: &str, vmi_namespace: &str) -> bool {
        let key = |n: &str| match n.split_once('/') {
            Some(_) => n.to_string(),
            None => format!("{vmi_namespace}/{n}"),
        };
        let wanted = key(network_name);
        self.spoof_check_networks.iter().any(|n| key(n) == wanted)
    }
}

/// A KubeVirt feature gate (`spec.configuration.developerConfiguration.featureGates`). The
/// gates netbind acts on are variants; any other name is kept as written, as KubeVirt keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FeatureGate {
    /// `portRanges` on masquerade interfaces.
    PortRangesSpec,
    /// KubeVirt's core passt binding (`passtBinding: {}`).
    PasstBinding,
    /// `launchSecurity` with `sev` or `snp`.
    WorkloadEncryptionSEV,
    /// `launchSecurity` with `tdx`.
    WorkloadEncryptionTDX,
    Other(String),
}

impl From<String> for FeatureGate {
    fn from(name: String) -> Self {
        match name.as_str() {
            "PortRangesSpec" => FeatureGate::PortRangesSpec,
            "PasstBinding" => FeatureGate::PasstBinding,
            "WorkloadEncryptionSEV" => FeatureGate::WorkloadEncryptionSEV,
            "WorkloadEncryptionTDX" => FeatureGate::WorkloadEncryptionTDX,
            _ => FeatureGate::Other(name),
        }
    }
}

impl From<&str> for FeatureGate {
    fn from(name: &str) -> Self {
        FeatureGate::from(name.to_string())
    }
}

impl From<FeatureGate> for String {
    fn from(gate: FeatureGate) -> Self {
        match gate {
            FeatureGate::PortRangesSpec => "PortRangesSpec".into(),
            FeatureGate::PasstBinding => "PasstBinding".into(),
            FeatureGate::WorkloadEncryptionSEV => "WorkloadEncryptionSEV".into(),
            FeatureGate::WorkloadEncryptionTDX => "WorkloadEncryptionTDX".into(),
            FeatureGate::Other(name) => name,
        }
    }
}
