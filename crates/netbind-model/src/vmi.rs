//! The subset of KubeVirt's `kubevirt.io/v1` API that networking reads.
//!
//! Field names follow KubeVirt's JSON names exactly; fields netbind does not use are ignored
//! by serde, as the API server would prune them. Numbers that KubeVirt range-checks in its
//! webhooks (ports, boot order) are kept wide here so admission can report them with
//! KubeVirt's message instead of failing at decode time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An empty binding marker such as `bridge: {}`; any keys inside are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiSpec {
    #[serde(default)]
    pub domain: DomainSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// `amd64`, `arm64`, `s390x`; KubeVirt's webhook defaults it to the cluster's (here amd64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_strategy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<Marker>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    #[serde(default)]
    pub devices: Devices,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Confidential computing: changes the NIC's driver and ROM (see `admission/launch_security.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_security: Option<LaunchSecurity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// Read for the CPU topology KubeVirt derives when `cpu` gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// `spec.domain.resources`: only the CPU entries matter to networking (the queue count).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, crate::quantity::QuantityText>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, crate::quantity::QuantityText>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Devices {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_multiqueue: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_pod_interface: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_virtio_transitional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passt_binding: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<PluginBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slirp: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvtap: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passt: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// `None` when absent (or null); `Some` even when empty: Go decodes `[]` to a non-nil
    /// slice, and KubeVirt's admission tests `!= nil` (a `portRanges: []` without the
    /// PortRangesSpec gate is refused; `ports: []` beside port ranges conflicts with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Port>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_ranges: Option<Vec<PortRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acpi_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_options: Option<DhcpOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginBinding {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub end: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DhcpOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tftp_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_options: Vec<PrivateOption>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateOption {
    #[serde(default)]
    pub option: i64,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multus: Option<MultusNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_claim: Option<Marker>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    #[serde(
        default,
        rename = "vmNetworkCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub vm_network_cidr: Option<String>,
    #[serde(
        default,
        rename = "vmIPv6NetworkCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub vm_ipv6_network_cidr: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultusNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_transport: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<StatusInterface>,
}

impl VmiStatus {
    /// The status phase 1 finds on a VMI written with none (a new VMI): virt-controller sets
    /// `migrationTransport: Unix` when it schedules the VMI, because every launcher pod it
    /// creates today carries `kubevirt.io/migrationTransportUnix`. A status without it is a
    /// legacy launcher's, whose TCP migration ports masquerade must leave alone.
    pub fn new_vmi() -> VmiStatus {
        VmiStatus {
            migration_transport: Some(MIGRATION_TRANSPORT_UNIX.into()),
            interfaces: Vec::new(),
        }
    }
}

/// KubeVirt's `MigrationTransportUnix`.
pub const MIGRATION_TRANSPORT_UNIX: &str = "Unix";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_interface_name: Option<String>,
}

pub use netbind_contract::handoff::BindingKind;

impl Interface {
    /// The ports to forward (none when the list is absent or empty).
    pub fn port_list(&self) -> &[Port] {
        self.ports.as_deref().unwrap_or_default()
    }

    /// The port ranges to forward (none when the list is absent or empty).
    pub fn port_range_list(&self) -> &[PortRange] {
        self.port_ranges.as_deref().unwrap_or_default()
    }

    /// Every binding method set on this interface, in KubeVirt's field order.
    pub fn bindings(&self) -> Vec<BindingKind> {
        let mut found = Vec::new();
        if self.bridge.is_some() {
            found.push(BindingKind::Bridge);
        }
        if self.masquerade.is_some() {
            found.push(BindingKind::Masquerade);
        }
        if self.sriov.is_some() {
            found.push(BindingKind::Sriov);
        }
        if self.passt_binding.is_some() {
            found.push(BindingKind::PasstBinding);
        }
        if self.binding.is_some() {
            found.push(BindingKind::Plugin);
        }
        found
    }

    /// The binding, if exactly one is set.
    pub fn binding_kind(&self) -> Option<BindingKind> {
        match self.bindings().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

impl Network {
    pub fn is_pod(&self) -> bool {
        self.pod.is_some()
    }

    pub fn is_multus_default(&self) -> bool {
        self.multus
            .as_ref()
            .is_some_and(|m| m.default == Some(true))
    }

    /// The pod network or the multus default network: the VM's primary network (`eth0`).
    pub fn is_primary(&self) -> bool {
        self.is_pod() || self.is_multus_default()
    }
}

/// `spec.domain.launchSecurity`: one of AMD SEV, SEV-SNP or Intel TDX (any content: only which
/// ones are present and SEV's attestation matter here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSecurity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sev: Option<Sev>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<Marker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<Marker>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sev {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Marker>,
}

/// `spec.domain.firmware`, as far as launch security's admission reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bootloader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efi: Option<Efi>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Efi {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

/// `spec.domain.features`: only SMM matters (TDX refuses it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smm: Option<FeatureState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}
