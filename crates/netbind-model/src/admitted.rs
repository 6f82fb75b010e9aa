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
use crate::net::{DEFAULT_VM_CIDR_V4, DEFAULT_VM_CIDR_V6, MasqueradeAddrs, parse_ipv4_sloppy};
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
    pub status: AdmittedStatus,
}

/// `spec.domain.cpu`: an unset or zero count is one.
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
    PasstBinding,
    /// A network binding plugin declared in the KubeVirt CR.
    Plugin {
        name: String,
    },
}

impl Binding {
    pub fn kind(&self) -> BindingKind {
        match self {
            Binding::Bridge => BindingKind::Bridge,
            Binding::Masquerade(_) => BindingKind::Masquerade,
            Binding::Sriov => BindingKind::Sriov,
            Binding::PasstBinding => BindingKind::PasstBinding,
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
            t => NicModel::ALL.into_iter().find(|m| m.as_str() == t),
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

/// Applies KubeVirt's defaulting, runs every admission rule, and on success returns the typed
/// spec. `spec_path` is where the spec lives in the document (`spec`, `spec.template.spec`).
pub fn admit(
    metadata: ObjectMeta,
    mut spec: VmiSpec,
    status: &VmiStatus,
    spec_path: &str,
    cfg: &ClusterConfig,
) -> Result<AdmittedVmi, Vec<Violation>> {
    if let Err(violation) = apply_defaults(&mut spec, spec_path, cfg) {
        return Err(vec![violation]);
    }
    let violations = validate(&spec, spec_path, cfg);
    if !violations.is_empty() {
        return Err(violations);
    }
    convert(metadata, &spec, status, spec_path, cfg).map_err(|violation| vec![violation])
}

/// The typed form of a spec that passed `validate`. Each step uses the parser the matching
/// admission rule used, so a failure here is a rule missing from admission: it is reported as a
/// violation of that field, never a panic.
fn convert(
    metadata: ObjectMeta,
    spec: &VmiSpec,
    status: &VmiStatus,
    spec_path: &str,
    cfg: &ClusterConfig,
) -> Result<AdmittedVmi, Violation> {
    let networks: Vec<AdmittedNetwork> = spec
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| network(n, &format!("{spec_path}.networks[{i}]")))
        .collect::<Result<_, _>>()?;
    let interfaces = spec
        .domain
        .devices
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, iface)| {
            let path = format!("{spec_path}.domain.devices.interfaces[{i}]");
            let Some((j, (net, raw))) = networks
                .iter()
                .zip(&spec.networks)
                .enumerate()
                .find(|(_, (n, _))| n.name == iface.name)
            else {
                return Err(violation(
                    format!("{path}.name"),
                    "has no network of that name",
                ));
            };
            let net_path = format!("{spec_path}.networks[{j}]");
            interface(iface, net.clone(), (raw, &net_path), &path, cfg)
        })
        .collect::<Result<_, _>>()?;
    let cpu = spec.domain.cpu.clone().unwrap_or_default();
    let count = |c: Option<u32>| c.unwrap_or(1).max(1);
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    Ok(AdmittedVmi {
        metadata,
        hostname: nonempty(&spec.hostname),
        subdomain: nonempty(&spec.subdomain),
        networks,
        interfaces,
        multiqueue: spec.domain.devices.network_interface_multiqueue == Some(true),
        virtio_transitional: spec.domain.devices.use_virtio_transitional == Some(true),
        cpu: CpuTopology {
            sockets: count(cpu.sockets),
            cores: count(cpu.cores),
            threads: count(cpu.threads),
        },
        status: AdmittedStatus {
            migration_transport: status.migration_transport.clone(),
            interfaces: status
                .interfaces
                .iter()
                .filter_map(|s| {
                    Some(StatusInterface {
                        network: s.name.clone()?,
                        mac: s.mac.as_deref().and_then(|m| MacAddr::parse_go(m).ok()),
                        pod_interface_name: s.pod_interface_name.clone(),
                    })
                })
                .collect(),
        },
    })
}

fn violation(field: String, message: impl Into<String>) -> Violation {
    Violation {
        field,
        message: message.into(),
    }
}

fn network(net: &Network, path: &str) -> Result<AdmittedNetwork, Violation> {
    let source = match (&net.pod, &net.multus, &net.resource_claim) {
        (Some(_), None, None) => NetworkSource::Pod,
        (None, Some(m), None) => NetworkSource::Multus {
            network_name: m.network_name.clone().unwrap_or_default(),
            default: m.default == Some(true),
        },
        (None, None, Some(_)) => NetworkSource::ResourceClaim,
        _ => return Err(violation(path.into(), "should have only one network type")),
    };
    Ok(AdmittedNetwork {
        name: net.name.clone(),
        source,
    })
}

fn interface(
    iface: &Interface,
    network: AdmittedNetwork,
    raw_network: (&Network, &str),
    path: &str,
    cfg: &ClusterConfig,
) -> Result<AdmittedInterface, Violation> {
    let binding = match iface.bindings().as_slice() {
        [BindingKind::Bridge] => Binding::Bridge,
        [BindingKind::Masquerade] => {
            Binding::Masquerade(masquerade(iface, raw_network, path, cfg)?)
        }
        [BindingKind::Sriov] => Binding::Sriov,
        [BindingKind::PasstBinding] => Binding::PasstBinding,
        [BindingKind::Plugin] => Binding::Plugin {
            name: iface.binding.clone().unwrap_or_default().name,
        },
        _ => {
            return Err(violation(
                path.into(),
                "must have exactly one binding method or binding plugin",
            ));
        }
    };
    let field = |name: &str| format!("{path}.{name}");
    let model = NicModel::parse(iface.model.as_deref())
        .ok_or_else(|| violation(field("model"), "unsupported model"))?;
    let mac = iface
        .mac_address
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| MacAddr::parse_go(m).map_err(|e| violation(field("macAddress"), e.to_string())))
        .transpose()?;
    let pci_address = iface
        .pci_address
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| PciAddress::parse(p).ok_or_else(|| violation(field("pciAddress"), "malformed")))
        .transpose()?;
    let state = InterfaceState::parse(iface.state.as_deref())
        .ok_or_else(|| violation(field("state"), "unsupported"))?;
    let positive = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
    Ok(AdmittedInterface {
        name: iface.name.clone(),
        network,
        binding,
        model,
        mac,
        pci_address,
        boot_order: positive(iface.boot_order),
        acpi_index: positive(iface.acpi_index),
        dhcp: dhcp_extras(iface, &field("dhcpOptions"))?,
        state,
    })
}

fn masquerade(
    iface: &Interface,
    (network, network_path): (&Network, &str),
    path: &str,
    cfg: &ClusterConfig,
) -> Result<MasqueradeBinding, Violation> {
    let pod = network.pod.clone().unwrap_or_default();
    let net_field = |name: &str| format!("{network_path}.pod.{name}");
    let v4 = MasqueradeAddrs::v4(pod.vm_network_cidr.as_deref().unwrap_or(DEFAULT_VM_CIDR_V4))
        .map_err(|e| violation(net_field("vmNetworkCIDR"), e.to_string()))?;
    let v6 = MasqueradeAddrs::v6(
        pod.vm_ipv6_network_cidr
            .as_deref()
            .unwrap_or(DEFAULT_VM_CIDR_V6),
    )
    .map_err(|e| violation(net_field("vmIPv6NetworkCIDR"), e.to_string()))?;
    let forward = if !iface.port_ranges.is_empty() {
        if !cfg.gate(FeatureGate::PortRangesSpec) {
            return Err(violation(
                format!("{path}.portRanges"),
                "the PortRangesSpec feature gate is not enabled",
            ));
        }
        Forward::Ranges(
            iface
                .port_ranges
                .iter()
                .enumerate()
                .map(|(j, r)| forward_range(r, &format!("{path}.portRanges[{j}]")))
                .collect::<Result<_, _>>()?,
        )
    } else if !iface.ports.is_empty() {
        Forward::Ports(
            iface
                .ports
                .iter()
                .enumerate()
                .map(|(j, p)| forward_port(p, &format!("{path}.ports[{j}]")))
                .collect::<Result<_, _>>()?,
        )
    } else {
        Forward::All
    };
    Ok(MasqueradeBinding {
        v4,
        v6,
        v6_requested: pod.vm_ipv6_network_cidr.is_some(),
        forward,
    })
}

fn forward_port(port: &Port, path: &str) -> Result<ForwardPort, Violation> {
    Ok(ForwardPort {
        protocol: Protocol::parse(port.protocol.as_deref(), Some(Protocol::Tcp))
            .ok_or_else(|| violation(format!("{path}.protocol"), "only TCP or UDP"))?,
        port: port_number(port.port).ok_or_else(|| violation(path.into(), "out of range"))?,
    })
}

fn forward_range(range: &PortRange, path: &str) -> Result<ForwardRange, Violation> {
    let protocol = Protocol::parse(range.protocol.as_deref(), None)
        .ok_or_else(|| violation(format!("{path}.protocol"), "only TCP or UDP"))?;
    let start = port_number(range.start)
        .ok_or_else(|| violation(format!("{path}.start"), "out of range"))?;
    let end =
        port_number(range.end).ok_or_else(|| violation(format!("{path}.end"), "out of range"))?;
    if start > end {
        return Err(violation(path.into(), "start greater than end"));
    }
    Ok(ForwardRange {
        protocol,
        start,
        end,
    })
}

/// `0 < port < 65536`, as admission checks it.
fn port_number(number: i64) -> Option<u16> {
    u16::try_from(number).ok().filter(|p| *p > 0)
}

fn dhcp_extras(iface: &Interface, path: &str) -> Result<DhcpExtras, Violation> {
    let Some(dhcp) = &iface.dhcp_options else {
        return Ok(DhcpExtras::default());
    };
    let ntp_servers = dhcp
        .ntp_servers
        .iter()
        .enumerate()
        .map(|(k, s)| {
            parse_ipv4_sloppy(s)
                .ok_or_else(|| violation(format!("{path}.ntpServers[{k}]"), "not an IPv4 address"))
        })
        .collect::<Result<_, _>>()?;
    let private_options = dhcp
        .private_options
        .iter()
        .map(|o| {
            u8::try_from(o.option)
                .ok()
                .filter(|c| (224..=254).contains(c))
                .map(|code| PrivateOption {
                    code,
                    value: o.value.clone(),
                })
                .ok_or_else(|| violation(format!("{path}.privateOptions"), "out of range"))
        })
        .collect::<Result<_, _>>()?;
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    Ok(DhcpExtras {
        boot_file_name: nonempty(&dhcp.boot_file_name),
        tftp_server_name: nonempty(&dhcp.tftp_server_name),
        ntp_servers,
        private_options,
    })
}

impl AdmittedVmi {
    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&AdmittedInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// `namespace/name` (or `name`) for logs and the hand-off record.
    pub fn qualified_name(&self) -> String {
        match (&self.metadata.namespace, &self.metadata.name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => String::new(),
        }
    }

    /// The annotations KubeVirt reads on the VMI.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_vmi;

    const VMI: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: t, namespace: ns}
spec:
  domain:
    devices:
      interfaces:
      - name: default
        masquerade: {}
        macAddress: 02-00-00-AB-CD-EF
        pciAddress: 0000:81:1f.7
        model: e1000e
        state: down
        bootOrder: 2
        ports: [{port: 80}, {port: 53, protocol: UDP}]
        dhcpOptions:
          ntpServers: [010.000.002.001]
          privateOptions: [{option: 240, value: x}]
      - name: blue
        bridge: {}
        state: absent
  networks:
  - name: default
    pod: {vmIPv6NetworkCIDR: 'fd20::/64'}
  - name: blue
    multus: {networkName: blue-net}
";

    #[test]
    fn admission_hands_the_planner_parsed_values() {
        let vmi = check_vmi(VMI, &ClusterConfig::default()).expect("admitted");
        assert_eq!(vmi.qualified_name(), "ns/t");
        let first = vmi.interface("default").expect("default");
        assert_eq!(
            first.mac.map(|masq| masq.to_string()).as_deref(),
            Some("02:00:00:ab:cd:ef")
        );
        assert_eq!(
            first.pci_address,
            Some(PciAddress {
                domain: 0,
                bus: 0x81,
                slot: 0x1f,
                function: 7
            })
        );
        assert_eq!(first.model, NicModel::E1000e);
        assert_eq!(first.state, InterfaceState::Down);
        assert_eq!(first.boot_order, Some(2));
        assert_eq!(first.dhcp.ntp_servers, vec![Ipv4Addr::new(10, 0, 2, 1)]);
        assert_eq!(first.dhcp.private_options[0].code, 240);
        let Binding::Masquerade(masq) = &first.binding else {
            panic!("masquerade expected, got {:?}", first.binding);
        };
        assert_eq!(masq.v4.guest.to_string(), "10.0.2.2/24");
        assert_eq!(masq.v6.gateway.to_string(), "fd20::1/64");
        assert!(masq.v6_requested);
        assert_eq!(
            masq.forward,
            Forward::Ports(vec![
                ForwardPort {
                    protocol: Protocol::Tcp,
                    port: 80
                },
                ForwardPort {
                    protocol: Protocol::Udp,
                    port: 53
                },
            ])
        );
        let blue = vmi.interface("blue").expect("blue");
        assert_eq!(blue.binding, Binding::Bridge);
        assert_eq!(blue.state, InterfaceState::Absent);
        assert!(!blue.network.is_primary());
        assert_eq!(
            blue.network.source,
            NetworkSource::Multus {
                network_name: "blue-net".into(),
                default: false
            }
        );
    }

    #[test]
    fn defaults_give_the_pod_network_the_cluster_binding() {
        let text = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: t}\nspec: {}\n";
        let cfg = ClusterConfig {
            default_network_interface: "masquerade".into(),
            ..ClusterConfig::default()
        };
        let vmi = check_vmi(text, &cfg).expect("admitted");
        assert_eq!(vmi.interfaces.len(), 1);
        assert!(matches!(
            &vmi.interfaces[0].binding,
            Binding::Masquerade(m) if m.forward == Forward::All && !m.v6_requested
        ));
        assert!(vmi.interfaces[0].network.is_primary());
    }
}
