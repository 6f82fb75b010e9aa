//! A VMI after KubeVirt's defaulting and admission, with every value admission checked held in
//! its type: the binding as an enum carrying its ports or port ranges, MACs, PCI addresses and
//! NTP servers parsed, the interface state as an enum.
//!
//! The planner takes only an [`AdmittedVmi`], and only [`admit`] builds one (its fields are
//! readable everywhere, but the type is `non_exhaustive`, so construction stays here): admission runs first, and
//! the conversion below uses the same parsers admission used, so the planner never re-parses a
//! string or meets a case admission refused.

use std::net::Ipv4Addr;

use crate::admission::{ClusterConfig, FeatureGate, Violation, apply_defaults, validate};
use crate::handoff::{BindingKind, PciAddress, PrivateOption};
use crate::net::{DEFAULT_VM_CIDR_V4, DEFAULT_VM_CIDR_V6, MasqueradeAddrs};
use crate::types::MacAddr;
use crate::vmi::{Interface, Network, ObjectMeta, Port, PortRange, VmiSpec, VmiStatus};

/// A VMI that passed defaulting and every admission rule. `non_exhaustive`: no other crate can
/// build one, so holding one means admission ran.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdmittedVmi {
    pub metadata: ObjectMeta,
    /// `spec.hostname`, when set and not empty.
    pub hostname: Option<String>,
    /// `spec.subdomain`, when set and not empty.
    pub subdomain: Option<String>,
    /// `spec.networks`, in the spec's order (the secondary interfaces' names depend on it).
    pub networks: Vec<AdmittedNetwork>,
    /// `spec.domain.devices.interfaces`, in the spec's order, each with its network.
    pub interfaces: Vec<AdmittedInterface>,
    /// `networkInterfaceMultiqueue: true`.
    pub multiqueue: bool,
    /// `useVirtioTransitional: true`.
    pub virtio_transitional: bool,
    pub cpu: CpuTopology,
    /// `spec.domain.launchSecurity`, as the converter sees it.
    pub launch_security: Option<LaunchSecurityKind>,
    /// Whether the architecture lets the converter tune a NIC's boot ROM (all but s390x).
    pub rom_tuning: bool,
    pub status: AdmittedStatus,
}

/// Which confidential-computing technology the VMI asks for. On s390x any `launchSecurity`
/// is IBM Secure Execution (KubeVirt's "PV").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchSecurityKind {
    Sev,
    Snp,
    Tdx,
    SecureExecution,
}

impl LaunchSecurityKind {
    /// KubeVirt's `useLaunchSecurity` (SEV, SNP or Secure Execution; not TDX): the virtio NIC
    /// gets `iommu='on'` and no boot ROM even with a boot order.
    pub fn protects_devices(self) -> bool {
        !matches!(self, LaunchSecurityKind::Tdx)
    }
}

/// The guest CPU topology as KubeVirt derives it (see `convert::cpu_topology`): the counts in
/// `spec.domain.cpu`, or sockets from the CPU limit or request. Sockets may be 0 (a `0` CPU
/// request), which gives no queues, as in KubeVirt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

/// What KubeVirt recorded in `status` (written by KubeVirt, so read leniently: a MAC that does
/// not parse is as good as none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmittedStatus {
    /// `status.migrationTransport`, e.g. `Unix`.
    pub migration_transport: Option<String>,
    pub interfaces: Vec<StatusInterface>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInterface {
    pub network: String,
    pub mac: Option<MacAddr>,
    pub pod_interface_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedNetwork {
    pub name: String,
    pub source: NetworkSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkSource {
    Pod,
    /// A Multus network: its NetworkAttachmentDefinition, and whether it replaces the pod
    /// network as the VM's primary one.
    Multus {
        network_name: String,
        default: bool,
    },
    ResourceClaim,
}

impl AdmittedNetwork {
    /// The pod network or the Multus default network: the VM's primary network (`eth0`).
    pub fn is_primary(&self) -> bool {
        matches!(
            self.source,
            NetworkSource::Pod | NetworkSource::Multus { default: true, .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedInterface {
    /// The interface's name, which is also its network's.
    pub name: String,
    pub network: AdmittedNetwork,
    pub binding: Binding,
    pub model: NicModel,
    pub mac: Option<MacAddr>,
    pub pci_address: Option<PciAddress>,
    pub boot_order: Option<u32>,
    pub acpi_index: Option<u32>,
    pub dhcp: DhcpExtras,
    pub state: InterfaceState,
}

/// How the interface reaches its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    Bridge,
    Masquerade(MasqueradeBinding),
    Sriov,
    /// KubeVirt's core passt binding (feature gate `PasstBinding`): the VM reaches the pod
    /// network through passt, on the pod interface itself.
    PasstBinding(PasstBinding),
    /// A network binding plugin declared in the KubeVirt CR.
    Plugin {
        name: String,
        /// Its `domainAttachmentType`, when the CR declares one.
        attachment: Option<DomainAttachment>,
    },
}

/// How a binding plugin's interface reaches the domain (`domainAttachmentType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainAttachment {
    /// The plugin's CNI made the tap; the domain gets `<interface type='ethernet'>` on it.
    Tap,
    /// Phase 1 makes the bridge, tap and dummy as for the bridge binding (without the fake
    /// bridge address or DHCP, which the plugin serves); the domain is as for `Tap`.
    ManagedTap,
}

impl Binding {
    pub fn kind(&self) -> BindingKind {
        match self {
            Binding::Bridge => BindingKind::Bridge,
            Binding::Masquerade(_) => BindingKind::Masquerade,
            Binding::Sriov => BindingKind::Sriov,
            Binding::PasstBinding(_) => BindingKind::PasstBinding,
            Binding::Plugin { .. } => BindingKind::Plugin,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeBinding {
    /// The in-pod subnet of `vmNetworkCIDR` (KubeVirt's default when unset).
    pub v4: MasqueradeAddrs,
    /// The in-pod subnet of `vmIPv6NetworkCIDR` (KubeVirt's default when unset).
    pub v6: MasqueradeAddrs,
    /// Whether the VMI set `vmIPv6NetworkCIDR` itself.
    pub v6_requested: bool,
    pub forward: Forward,
}

/// What passt forwards to the guest: the interface's `ports` (KubeVirt's passt converter reads
/// no `portRanges`, which admission allows on masquerade interfaces only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasstBinding {
    pub ports: Vec<ForwardPort>,
}

/// What inbound traffic the masquerade binding forwards to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// No `ports` and no `portRanges`: every port.
    All,
    Ports(Vec<ForwardPort>),
    /// `portRanges` (feature gate `PortRangesSpec`).
    Ranges(Vec<ForwardRange>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardPort {
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardRange {
    pub protocol: Protocol,
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// KubeVirt's spelling (`TCP`, `UDP`); unset means TCP for a port, nothing for a range.
    fn parse(text: Option<&str>, unset: Option<Protocol>) -> Option<Protocol> {
        match text.unwrap_or("") {
            "" => unset,
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The nftables keyword: `tcp`, `udp`.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The NIC models KubeVirt accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    Virtio,
    E1000,
    E1000e,
    Igb,
    Ne2kPci,
    Pcnet,
    Rtl8139,
}

impl NicModel {
    pub const ALL: [NicModel; 7] = [
        NicModel::E1000,
        NicModel::E1000e,
        NicModel::Igb,
        NicModel::Ne2kPci,
        NicModel::Pcnet,
        NicModel::Rtl8139,
        NicModel::Virtio,
    ];

    /// `model:` as written; unset or empty is virtio.
    pub fn parse(text: Option<&str>) -> Option<NicModel> {
        match text.unwrap_or("") {
            "" => Some(NicModel::Virtio),
            name => NicModel::ALL.into_iter().find(|m| m.as_str() == name),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Igb => "igb",
            NicModel::Ne2kPci => "ne2k_pci",
            NicModel::Pcnet => "pcnet",
            NicModel::Rtl8139 => "rtl8139",
        }
    }
}

/// `state:` of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceState {
    /// Unset or `up`.
    Up,
    /// `down`: the guest sees the link down.
    Down,
    /// `absent`: hot-unplugged.
    Absent,
}

impl InterfaceState {
    pub fn parse(text: Option<&str>) -> Option<InterfaceState> {
        match text.unwrap_or("") {
            "" | "up" => Some(InterfaceState::Up),
            "down" => Some(InterfaceState::Down),
            "absent" => Some(InterfaceState::Absent),
            _ => None,
        }
    }
}

/// `dhcpOptions`, parsed; empty strings are unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpExtras {
    pub boot_file_name: Option<String>,
    pub tftp_server_name: Option<String>,
    pub ntp_servers: Vec<Ipv4Addr>,
    pub private_options: Vec<PrivateOption>,
}

mod convert;
pub use convert::admit;

impl AdmittedVmi {
    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&AdmittedInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// `namespace/name` (or `name`) for logs and the hand-off record.
    pub fn qualified_name(&self) -> String {
        match (&self.metadata.namespace, &self.metadata.name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            (None, Some(name)) => name.clone(),
            _ => String::new(),
        }
    }

    /// The annotations KubeVirt reads on the VMI.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
