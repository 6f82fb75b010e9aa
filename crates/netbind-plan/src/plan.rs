//! `plan(spec, observed pod) -> PodNetPlan`: the whole of phase 1 and the phase-2 hand-off as
//! data. Pure; the handler is a thin adapter that applies it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netbind_model::admission::{ClusterConfig, parse_pci_address};
use netbind_model::handoff::{
    Dhcpv4Config, Dhcpv6Config, DomainInterface, HANDOFF_VERSION, Handoff, HandoffInterface,
    LEASE_SECONDS, PciAddress, PrivateOption, Route4,
};
use netbind_model::net::{AddrError, DEFAULT_VM_CIDR_V4, DEFAULT_VM_CIDR_V6, MasqueradeAddrs};
use netbind_model::pod::{ObservedPod, PodInterface};
use netbind_model::ra::RaConfig;
use netbind_model::vmi::{BindingKind, Interface, Network};
use netbind_model::yaml::LoadedVmi;
use netbind_model::{Cidr, IfName, MacAddr};
use serde::{Deserialize, Serialize};

use crate::dns::{self, DnsConfig};
use crate::naming::{self, NamingError};
use crate::nft::{Builder, Expr, Family, Field, RuleRef, Ruleset, Val};

pub const PLAN_VERSION: u32 = 1;
/// The lowest port the unprivileged launcher may bind in the pod netns: 67 lets it bind
/// DHCPv4 (67) and DHCPv6 (547) with no capability while every port below 67 (ssh, dns, ...)
/// still needs CAP_NET_BIND_SERVICE.
pub const UNPRIVILEGED_PORT_START: &str = "67";
/// Table of netbind's own filter rules (the DHCP-leak guard).
pub const GUARD_TABLE: &str = "netbind";
/// SO_MARK of the router-advertisement responder's socket ("nbra"), set by phase 1: its
/// holder cannot change it (that needs CAP_NET_ADMIN or CAP_NET_RAW), and the guard lets
/// what carries it out only as a router advertisement, only through the bridge it serves.
pub const RA_SOCKET_MARK: u32 = 0x6e62_7261;
/// Envoy's reserved ports, skipped by the Istio rule set.
const ISTIO_RESERVED_PORTS: [u16; 10] = [
    15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090,
];
const ISTIO_NON_PROXIED_PORT: u16 = 22;
const LIVE_MIGRATION_PORTS: [u16; 2] = [49152, 49153];

/// The uid/gid that will open the tap (QEMU / libvirt); owner AND group are always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetPlan {
    pub version: u32,
    pub vmi: String,
    pub owner: Owner,
    /// In apply order.
    pub links: Vec<LinkPlan>,
    /// In apply order, after the links.
    pub sysctls: Vec<Sysctl>,
    pub nftables: NftPlan,
    pub handoff: Handoff,
    /// Router advertisements the trusted side has sent for it (masquerade with IPv6), by a
    /// responder with no capability on a socket phase 1 opens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub router_adverts: Vec<RaConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftPlan {
    pub ruleset: Ruleset,
    /// KubeVirt's `nft` commands for the same rules, in KubeVirt's order (for humans and for
    /// the compatibility golden files; the handler applies `ruleset` as one JSON batch).
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPlan {
    /// The VMI network this link serves.
    pub network: String,
    pub name: IfName,
    pub kind: LinkKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<IfName>,
    /// The exact address set: anything else on the link is removed.
    pub addresses: Vec<Cidr>,
    pub up: bool,
    /// Bridge-port learning (only set where KubeVirt turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum LinkKind {
    Bridge,
    Dummy,
    Tap {
        owner: u32,
        group: u32,
        queues: u32,
        multi_queue: bool,
    },
    /// The pod interface the CNI made; found by ifindex (it may already be renamed) or name.
    PodInterface {
        index: u32,
        original_name: IfName,
        original_mac: MacAddr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MacPlan {
    Fixed(MacAddr),
    /// KubeVirt gives the renamed pod interface the bridge's (random) MAC so that the pod's
    /// original MAC is free for the guest.
    CopyFrom(IfName),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctl {
    /// Path below `/proc/sys`, e.g. `net/ipv4/ip_forward`.
    pub path: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Naming(#[from] NamingError),
    #[error("network {network:?}: pod link ({iface}) is missing")]
    PodLinkMissing { network: String, iface: IfName },
    #[error("network {network:?}: no gateway address found in routes for {iface}")]
    NoGateway { network: String, iface: IfName },
    #[error("network {network:?}: {field}: {source}")]
    Cidr {
        network: String,
        field: &'static str,
        source: AddrError,
    },
    #[error("network {network:?}: pod interface {iface} MTU {mtu} does not fit DHCP option 26")]
    Mtu {
        network: String,
        iface: IfName,
        mtu: u32,
    },
    #[error("interface {network:?}: macAddress: {source}")]
    Mac {
        network: String,
        source: netbind_model::types::MacError,
    },
    #[error("network {network:?}: link {name} is also planned for another network")]
    DuplicateLink { network: String, name: IfName },
    #[error("interface {network:?} has no network of that name (run `netbind validate`)")]
    NoNetwork { network: String },
}

/// Everything `plan` reads besides the VMI and the pod.
#[derive(Debug, Clone)]
pub struct PlanOptions<'a> {
    pub owner: Owner,
    /// Contents of the launcher's `/etc/resolv.conf`.
    pub resolv_conf: &'a str,
    pub cluster: &'a ClusterConfig,
}

/// What differs between the bridge and masquerade DHCPv4 servers.
struct Lease {
    listen: IfName,
    server_id: Ipv4Addr,
    client: Cidr,
    client_mac: Option<MacAddr>,
    router: Option<Ipv4Addr>,
    routes: Vec<Route4>,
    mtu: u16,
}

struct Ctx<'a> {
    vmi: &'a LoadedVmi,
    pod: &'a ObservedPod,
    opts: &'a PlanOptions<'a>,
    dns: DnsConfig,
    links: Vec<LinkPlan>,
    sysctls: Vec<Sysctl>,
    nft: Builder,
    guard_inet: Vec<IfName>,
    guard_bridge: Vec<IfName>,
    spoof: Vec<SpoofGuard>,
    handoff: Vec<HandoffInterface>,
    router_adverts: Vec<RaConfig>,
    warnings: Vec<String>,
}

/// What a guest may send from, per bridge (item of the anti-spoofing chains).
enum SpoofGuard {
    /// Masquerade: the guest's packets are routed by the pod, entering on `bridge`.
    Routed { bridge: IfName, guest: Vec<IpAddr> },
    /// Bridge binding: the guest's frames enter the pod's bridge from its `tap`.
    Bridged {
        tap: IfName,
        mac: MacAddr,
        addrs: Vec<IpAddr>,
    },
}

pub fn plan(
    vmi: &LoadedVmi,
    pod: &ObservedPod,
    opts: &PlanOptions,
) -> Result<PodNetPlan, PlanError> {
    let mut warnings = Vec::new();
    let dns = dns::parse_resolv_conf(opts.resolv_conf, &mut warnings);
    let mut c = Ctx {
        vmi,
        pod,
        opts,
        dns,
        links: Vec::new(),
        sysctls: Vec::new(),
        nft: Builder::default(),
        guard_inet: Vec::new(),
        guard_bridge: Vec::new(),
        spoof: Vec::new(),
        handoff: Vec::new(),
        router_adverts: Vec::new(),
        warnings,
    };
    let spec = &vmi.spec;
    let status_name = |net: &str| {
        vmi.status
            .interfaces
            .iter()
            .find(|s| s.name.as_deref() == Some(net))
            .and_then(|s| s.pod_interface_name.clone())
    };
    let ordinal = naming::uses_ordinal_scheme(pod.interfaces.iter().map(|i| i.name.as_str()));
    let pod_names = naming::pod_iface_names(spec, &status_name, ordinal)?;
    for (index, iface) in spec.domain.devices.interfaces.iter().enumerate() {
        let network = spec
            .networks
            .iter()
            .find(|n| n.name == iface.name)
            .ok_or_else(|| PlanError::NoNetwork {
                network: iface.name.clone(),
            })?;
        let Some((_, pod_iface)) = pod_names.iter().find(|(n, _)| *n == iface.name) else {
            return Err(PlanError::NoNetwork {
                network: iface.name.clone(),
            });
        };
        if iface.state.as_deref() == Some("absent") {
            c.warnings.push(format!(
                "interface {:?}: state absent (hot-unplug) is not planned",
                iface.name
            ));
            continue;
        }
        match iface.binding_kind() {
            Some(BindingKind::Bridge) => c.bridge(index, iface, network, pod_iface)?,
            Some(BindingKind::Masquerade) => c.masquerade(iface, network, pod_iface)?,
            Some(other) => c.warnings.push(format!(
                "interface {:?}: binding {other:?} has no phase-1 work in netbind; skipped",
                iface.name
            )),
            None => {
                return Err(PlanError::NoNetwork {
                    network: iface.name.clone(),
                });
            }
        }
    }
    c.finish()
}

impl Ctx<'_> {
    fn pod_link(&self, network: &Network, iface: &IfName) -> Result<&PodInterface, PlanError> {
        self.pod
            .get(iface.as_str())
            .ok_or_else(|| PlanError::PodLinkMissing {
                network: network.name.clone(),
                iface: iface.clone(),
            })
    }

    fn spec_mac(iface: &Interface) -> Result<Option<MacAddr>, PlanError> {
        iface
            .mac_address
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(MacAddr::parse_go)
            .transpose()
            .map_err(|source| PlanError::Mac {
                network: iface.name.clone(),
                source,
            })
    }

    fn status_mac(&self, network: &str) -> Option<MacAddr> {
        self.vmi
            .status
            .interfaces
            .iter()
            .find(|s| s.name.as_deref() == Some(network))
            .and_then(|s| s.mac.as_deref())
            .and_then(|m| MacAddr::parse_go(m).ok())
    }

    /// Queue count for this interface: vCPUs (capped at 256) with multiqueue on a virtio NIC.
    fn queues(&self, iface: &Interface) -> u32 {
        let devices = &self.vmi.spec.domain.devices;
        let virtio = matches!(iface.model.as_deref(), None | Some("") | Some("virtio"));
        if devices.network_interface_multiqueue != Some(true) || !virtio {
            return 0;
        }
        let cpu = self.vmi.spec.domain.cpu.clone().unwrap_or_default();
        let vcpus = u64::from(cpu.sockets.unwrap_or(1).max(1))
            * u64::from(cpu.cores.unwrap_or(1).max(1))
            * u64::from(cpu.threads.unwrap_or(1).max(1));
        u32::try_from(vcpus.min(256)).unwrap_or(256)
    }

    fn tap(&self, iface: &Interface, name: &IfName, mtu: u32, master: &IfName) -> LinkPlan {
        let queues = self.queues(iface);
        LinkPlan {
            network: iface.name.clone(),
            name: name.clone(),
            kind: LinkKind::Tap {
                owner: self.opts.owner.uid,
                group: self.opts.owner.gid,
                queues,
                // libvirt opens a single-queue tap without IFF_MULTI_QUEUE; the flags must
                // match or its TUNSETIFF fails with EINVAL.
                multi_queue: queues > 1,
            },
            mac: None,
            mtu: Some(mtu),
            master: Some(master.clone()),
            addresses: vec![],
            up: true,
            learning: None,
        }
    }

    fn domain(&self, iface: &Interface, tap: &IfName, mac: MacAddr, mtu: u32) -> DomainInterface {
        let model = match iface.model.as_deref() {
            None | Some("") | Some("virtio") => {
                if self.vmi.spec.domain.devices.use_virtio_transitional == Some(true) {
                    "virtio-transitional".to_string()
                } else {
                    "virtio-non-transitional".to_string()
                }
            }
            Some(m) => m.to_string(),
        };
        let boot_order = iface
            .boot_order
            .and_then(|b| u32::try_from(b).ok())
            .filter(|b| *b > 0);
        let queues = self.queues(iface);
        DomainInterface {
            alias: format!("ua-{}", iface.name),
            tap: tap.clone(),
            mac,
            model,
            mtu,
            boot_order,
            rom_disabled: boot_order.is_none(),
            pci_address: iface
                .pci_address
                .as_deref()
                .and_then(parse_pci_address)
                .map(|(domain, bus, slot, function)| PciAddress {
                    domain,
                    bus,
                    slot,
                    function,
                }),
            acpi_index: iface
                .acpi_index
                .and_then(|a| u32::try_from(a).ok())
                .filter(|a| *a > 0),
            queues: (queues > 0).then_some(queues),
            link_down: iface.state.as_deref() == Some("down"),
        }
    }

    fn hostname(&self) -> String {
        let h = self
            .vmi
            .spec
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| {
                let n = self.vmi.metadata.name.clone().unwrap_or_default();
                n.split('.').next().unwrap_or_default().to_string()
            });
        h.chars().take(63).collect()
    }

    /// The search list after the subdomain entry is prepended, then sanitised.
    fn search(&mut self) -> Vec<String> {
        let mut search = self.dns.search.clone();
        if let Some(sub) = self.vmi.spec.subdomain.as_deref().filter(|s| !s.is_empty())
            && let Some(entry) = dns::subdomain_search_entry(&search, sub)
        {
            search.insert(0, entry);
        }
        dns::sanitize_search(search, &mut self.warnings)
    }

    fn mtu16(network: &str, iface: &IfName, mtu: u32) -> Result<u16, PlanError> {
        u16::try_from(mtu).map_err(|_| PlanError::Mtu {
            network: network.into(),
            iface: iface.clone(),
            mtu,
        })
    }

    fn dhcp_extras(
        iface: &Interface,
    ) -> (
        Vec<Ipv4Addr>,
        Option<String>,
        Option<String>,
        Vec<PrivateOption>,
    ) {
        let Some(d) = &iface.dhcp_options else {
            return (vec![], None, None, vec![]);
        };
        let ntp = d
            .ntp_servers
            .iter()
            .filter_map(|s| netbind_model::admission::parse_ipv4_sloppy(s))
            .collect();
        let private = d
            .private_options
            .iter()
            .filter_map(|o| {
                Some(PrivateOption {
                    code: u8::try_from(o.option).ok()?,
                    value: o.value.clone(),
                })
            })
            .filter(|o| (224..=254).contains(&o.code))
            .collect();
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        (
            ntp,
            nonempty(&d.tftp_server_name),
            nonempty(&d.boot_file_name),
            private,
        )
    }

    fn dhcpv4(&mut self, iface: &Interface, l: Lease) -> Dhcpv4Config {
        let Lease {
            listen,
            server_id,
            client,
            client_mac,
            router,
            routes,
            mtu,
        } = l;
        let search = self.search();
        let domain_name = dns::longest(search.iter()).cloned();
        let (ntp, tftp_server, boot_file, private) = Self::dhcp_extras(iface);
        let client_ip = match client.addr() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        Dhcpv4Config {
            interface: listen,
            server_id,
            client_ip,
            prefix_len: client.prefix(),
            client_mac,
            router,
            dns: self.dns.v4.clone(),
            hostname: self.hostname(),
            domain_name,
            search,
            mtu,
            routes,
            ntp,
            tftp_server,
            boot_file,
            private,
            lease_seconds: LEASE_SECONDS,
        }
    }

    fn bridge(
        &mut self,
        index: usize,
        iface: &Interface,
        network: &Network,
        pod_iface: &IfName,
    ) -> Result<(), PlanError> {
        let net = network.name.as_str();
        let primary = network.is_primary();
        let link = self.pod_link(network, pod_iface)?.clone();
        let bridge = naming::bridge_name(net, pod_iface)?;
        let nic = naming::nic_name(net, pod_iface)?;
        let tap = naming::tap_name(net, pod_iface, primary)?;
        let v4 = link.global_v4();
        let fake = match v4 {
            Some(_) => Some(naming::fake_bridge_ip(net, index)?),
            None => None,
        };
        // Discovery first (KubeVirt §5.1), so nothing is planned for a pod we cannot serve.
        let dhcp = match v4 {
            None => None,
            Some(ip) => {
                let routes: Vec<_> = link.routes.iter().filter(|r| r.dst.is_ipv4()).collect();
                let first = routes.first().ok_or_else(|| PlanError::NoGateway {
                    network: net.into(),
                    iface: pod_iface.clone(),
                })?;
                let router = match first.gateway {
                    Some(IpAddr::V4(g)) => Some(g),
                    _ => None,
                };
                let local = ip.network();
                let mut kept: Vec<Route4> = routes
                    .iter()
                    .filter(|r| r.dst.network() != local)
                    .filter_map(|r| {
                        let IpAddr::V4(dst) = r.dst.network().addr() else {
                            return None;
                        };
                        let gateway = match r.gateway {
                            Some(IpAddr::V4(g)) => g,
                            _ => Ipv4Addr::UNSPECIFIED,
                        };
                        Some(Route4 {
                            dst,
                            prefix_len: r.dst.prefix(),
                            gateway,
                        })
                    })
                    .collect();
                // RFC 3442 clients apply routes in order; KubeVirt moves the default route last.
                kept.sort_by_key(|r| r.prefix_len == 0);
                let mac = Self::spec_mac(iface)?
                    .or_else(|| self.status_mac(net))
                    .unwrap_or(link.mac);
                let mtu = Self::mtu16(net, pod_iface, link.mtu)?;
                let server_id = match fake.map(|f| f.addr()) {
                    Some(IpAddr::V4(a)) => a,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                Some(self.dhcpv4(
                    iface,
                    Lease {
                        listen: bridge.clone(),
                        server_id,
                        client: ip,
                        client_mac: Some(mac),
                        router,
                        routes: kept,
                        mtu,
                    },
                ))
            }
        };
        self.links.push(LinkPlan {
            network: net.into(),
            name: bridge.clone(),
            kind: LinkKind::Bridge,
            mac: None,
            mtu: None,
            master: None,
            addresses: fake.into_iter().collect(),
            up: true,
            learning: None,
        });
        self.links.push(LinkPlan {
            network: net.into(),
            name: nic.clone(),
            kind: LinkKind::PodInterface {
                index: link.index,
                original_name: pod_iface.clone(),
                original_mac: link.mac,
            },
            mac: Some(MacPlan::CopyFrom(bridge.clone())),
            mtu: None,
            master: Some(bridge.clone()),
            addresses: vec![],
            up: true,
            learning: Some(false),
        });
        self.links.push(self.tap(iface, &tap, link.mtu, &bridge));
        self.links.push(LinkPlan {
            network: net.into(),
            name: pod_iface.clone(),
            kind: LinkKind::Dummy,
            mac: Some(MacPlan::Fixed(link.mac)),
            mtu: Some(link.mtu),
            master: None,
            // The dummy keeps the pod IPs so kubelet / CNI CHECK still find them on `eth0`.
            addresses: link.addresses.clone(),
            up: false,
            learning: None,
        });
        if v4.is_some() {
            self.global_sysctl("net/ipv4/conf/all/arp_ignore", "1");
        }
        self.guard_bridge.push(nic);
        let mac = Self::spec_mac(iface)?.unwrap_or(link.mac);
        let checked = match &network.multus {
            Some(m) if !primary => {
                let ns = self.vmi.metadata.namespace.as_deref().unwrap_or("default");
                let nad = m.network_name.as_deref().unwrap_or_default();
                self.opts.cluster.spoof_checked(nad, ns)
            }
            _ => true,
        };
        if checked {
            self.spoof.push(SpoofGuard::Bridged {
                tap: tap.clone(),
                mac,
                addrs: link
                    .addresses
                    .iter()
                    .filter(|a| a.is_global_unicast())
                    .map(|a| a.addr())
                    .collect(),
            });
        }
        let domain = self.domain(iface, &tap, mac, link.mtu);
        self.handoff.push(HandoffInterface {
            network: net.into(),
            binding: BindingKind::Bridge,
            pod_interface: pod_iface.clone(),
            bridge,
            tap,
            dhcpv4: dhcp,
            dhcpv6: None,
            domain,
        });
        Ok(())
    }

    fn masquerade(
        &mut self,
        iface: &Interface,
        network: &Network,
        pod_iface: &IfName,
    ) -> Result<(), PlanError> {
        let net = network.name.as_str();
        let link = self.pod_link(network, pod_iface)?.clone();
        let pod_cfg = network.pod.clone().unwrap_or_default();
        let cidr_err = |field, source| PlanError::Cidr {
            network: net.into(),
            field,
            source,
        };
        let v4 = match link.global_v4() {
            Some(pod_ip) => Some((
                MasqueradeAddrs::v4(
                    pod_cfg
                        .vm_network_cidr
                        .as_deref()
                        .unwrap_or(DEFAULT_VM_CIDR_V4),
                )
                .map_err(|e| cidr_err("vmNetworkCIDR", e))?,
                pod_ip,
            )),
            None => None,
        };
        let v6 = match link.global_v6() {
            Some(_) => Some(
                MasqueradeAddrs::v6(
                    pod_cfg
                        .vm_ipv6_network_cidr
                        .as_deref()
                        .unwrap_or(DEFAULT_VM_CIDR_V6),
                )
                .map_err(|e| cidr_err("vmIPv6NetworkCIDR", e))?,
            ),
            None => None,
        };
        let bridge = naming::bridge_name(net, pod_iface)?;
        let tap = naming::tap_name(net, pod_iface, true)?;
        let mtu = Self::mtu16(net, pod_iface, link.mtu)?;
        let mut addresses = Vec::new();
        addresses.extend(v4.map(|(m, _)| m.gateway));
        addresses.extend(v6.map(|m| m.gateway));
        self.links.push(LinkPlan {
            network: net.into(),
            name: bridge.clone(),
            kind: LinkKind::Bridge,
            mac: Some(MacPlan::Fixed(MacAddr::MASQUERADE_BRIDGE)),
            mtu: Some(link.mtu),
            master: None,
            addresses,
            up: true,
            learning: None,
        });
        self.links.push(self.tap(iface, &tap, link.mtu, &bridge));
        if v4.is_some() {
            // DNAT'ed 127.0.0.1-sourced packets must be routable out of the bridge.
            self.sysctls.push(Sysctl {
                path: format!("net/ipv4/conf/{bridge}/route_localnet"),
                value: "1".into(),
            });
            self.global_sysctl("net/ipv4/ip_forward", "1");
        }
        if v6.is_some() {
            self.global_sysctl("net/ipv6/conf/all/forwarding", "1");
        }
        let dhcpv4 = match v4 {
            Some((m, _)) => {
                let (IpAddr::V4(gw), IpAddr::V4(_)) = (m.gateway.addr(), m.guest.addr()) else {
                    return Err(cidr_err(
                        "vmNetworkCIDR",
                        AddrError::NotV4(m.gateway.to_string()),
                    ));
                };
                Some(self.dhcpv4(
                    iface,
                    Lease {
                        listen: bridge.clone(),
                        server_id: gw,
                        client: m.guest,
                        client_mac: None,
                        router: Some(gw),
                        routes: vec![],
                        mtu,
                    },
                ))
            }
            None => None,
        };
        let dhcpv6 = v6.and_then(|m| match m.guest.addr() {
            IpAddr::V6(client_ip) => Some(Dhcpv6Config {
                interface: bridge.clone(),
                server_mac: MacAddr::MASQUERADE_BRIDGE,
                client_ip,
                dns: self.dns.v6.clone(),
                lease_seconds: LEASE_SECONDS,
            }),
            IpAddr::V4(_) => None,
        });
        if let Some((m, pod_ip)) = v4 {
            self.masquerade_nft(
                Family::Ip,
                iface,
                pod_iface,
                &bridge,
                m,
                Some(pod_ip.addr()),
            );
        }
        if let Some(m) = v6 {
            self.masquerade_nft(Family::Ip6, iface, pod_iface, &bridge, m, None);
            self.router_adverts.push(RaConfig::masquerade(
                bridge.clone(),
                MacAddr::MASQUERADE_BRIDGE,
                m.gateway,
                link.mtu,
            ));
        }
        self.guard_inet.push(pod_iface.clone());
        let mut guest: Vec<IpAddr> = v4.map(|(m, _)| m.guest.addr()).into_iter().collect();
        guest.extend(v6.map(|m| m.guest.addr()));
        self.spoof.push(SpoofGuard::Routed {
            bridge: bridge.clone(),
            guest,
        });
        let mac = Self::spec_mac(iface)?.unwrap_or(link.mac);
        let domain = self.domain(iface, &tap, mac, link.mtu);
        self.handoff.push(HandoffInterface {
            network: net.into(),
            binding: BindingKind::Masquerade,
            pod_interface: pod_iface.clone(),
            bridge,
            tap,
            dhcpv4,
            dhcpv6,
            domain,
        });
        Ok(())
    }

    /// KubeVirt §6.3, rule for rule and in KubeVirt's order.
    fn masquerade_nft(
        &mut self,
        fam: Family,
        iface: &Interface,
        pod_iface: &IfName,
        bridge: &IfName,
        m: MasqueradeAddrs,
        pod_ipv4: Option<IpAddr>,
    ) {
        let (g, gw) = (m.guest.addr(), m.gateway.addr());
        let lo: IpAddr = if fam == Family::Ip {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        };
        let istio = self
            .vmi
            .metadata
            .annotations
            .get("sidecar.istio.io/inject")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let n = &mut self.nft;
        n.table(fam, "nat");
        n.chain(fam, "nat", "prerouting", Some(("nat", "prerouting", -100)));
        n.chain(fam, "nat", "input", Some(("nat", "input", 100)));
        n.chain(fam, "nat", "output", Some(("nat", "output", -100)));
        n.chain(fam, "nat", "postrouting", Some(("nat", "postrouting", 100)));
        n.chain(fam, "nat", "KUBEVIRT_PREINBOUND", None);
        n.chain(fam, "nat", "KUBEVIRT_POSTINBOUND", None);
        n.rule(
            fam,
            "nat",
            "postrouting",
            vec![
                Expr::one(Field::Saddr(fam), Val::Addr(g)),
                Expr::Counter,
                Expr::Masquerade,
            ],
        );
        n.rule(
            fam,
            "nat",
            "prerouting",
            vec![
                Expr::one(Field::Iifname, Val::Name(pod_iface.to_string())),
                Expr::Counter,
                Expr::Jump("KUBEVIRT_PREINBOUND".into()),
            ],
        );
        n.rule(
            fam,
            "nat",
            "postrouting",
            vec![
                Expr::one(Field::Oifname, Val::Name(bridge.to_string())),
                Expr::Counter,
                Expr::Jump("KUBEVIRT_POSTINBOUND".into()),
            ],
        );
        let skip = |n: &mut Builder, ports: &[u16]| {
            for chain in ["output", "KUBEVIRT_POSTINBOUND"] {
                n.rule(
                    fam,
                    "nat",
                    chain,
                    vec![
                        Expr::set(
                            Field::Dport("tcp".into()),
                            ports.iter().map(|p| Val::Port(*p)).collect(),
                        ),
                        Expr::one(Field::Saddr(fam), Val::Addr(lo)),
                        Expr::Counter,
                        Expr::Return,
                    ],
                );
            }
        };
        // Live migration over TCP uses 49152/49153 on loopback; keep them out of the DNAT.
        if self.vmi.status.migration_transport.as_deref() != Some("Unix") {
            skip(n, &LIVE_MIGRATION_PORTS);
        }
        let snat_src: Vec<Val> = if istio && fam == Family::Ip {
            vec![Val::Addr(lo), Val::Addr(Ipv4Addr::new(127, 0, 0, 6).into())]
        } else {
            vec![Val::Addr(lo)]
        };
        let mut dnat_dst = vec![Val::Addr(lo)];
        if istio && fam == Family::Ip {
            dnat_dst.extend(pod_ipv4.map(Val::Addr));
        }
        // Locally generated traffic to loopback (port-forward, probes) goes to the guest:
        // SNAT to the gateway on the way in, DNAT in `output`; `dport` narrows both to a port.
        let loopback = |n: &mut Builder, dport: Option<Expr>| {
            let mut post = dport.clone().into_iter().collect::<Vec<_>>();
            post.extend([
                Expr::set(Field::Saddr(fam), snat_src.clone()),
                Expr::Counter,
                Expr::Snat(gw),
            ]);
            n.rule(fam, "nat", "KUBEVIRT_POSTINBOUND", post);
            let mut out = vec![Expr::set(Field::Daddr(fam), dnat_dst.clone())];
            out.extend(dport);
            out.extend([Expr::Counter, Expr::Dnat(g)]);
            n.rule(fam, "nat", "output", out);
        };
        let ranges_on = self.opts.cluster.gate("PortRangesSpec");
        let proto = |p: &Option<String>| p.as_deref().unwrap_or("TCP").to_lowercase();
        let mut targets: Vec<(String, Val, bool)> = Vec::new(); // (proto, port/range, is-range)
        for p in &iface.ports {
            if let Ok(port) = u16::try_from(p.port) {
                targets.push((proto(&p.protocol), Val::Port(port), false));
            }
        }
        if ranges_on {
            for r in &iface.port_ranges {
                if let (Ok(s), Ok(e)) = (u16::try_from(r.start), u16::try_from(r.end)) {
                    targets.push((proto(&r.protocol), Val::Range(s, e), true));
                }
            }
        }
        if targets.is_empty() {
            if istio {
                skip(n, &ISTIO_RESERVED_PORTS);
                n.rule(
                    fam,
                    "nat",
                    "KUBEVIRT_PREINBOUND",
                    vec![
                        Expr::set(
                            Field::Dport("tcp".into()),
                            vec![Val::Port(ISTIO_NON_PROXIED_PORT)],
                        ),
                        Expr::Counter,
                        Expr::Dnat(g),
                    ],
                );
            } else {
                n.rule(
                    fam,
                    "nat",
                    "KUBEVIRT_PREINBOUND",
                    vec![Expr::Counter, Expr::Dnat(g)],
                );
            }
            loopback(n, None);
            return;
        }
        for (p, val, is_range) in targets {
            let dport = Field::Dport(p);
            let proxied_skip = istio && val != Val::Port(ISTIO_NON_PROXIED_PORT);
            if !proxied_skip {
                let m = if is_range {
                    Expr::one(dport.clone(), val.clone())
                } else {
                    Expr::set(dport.clone(), vec![val.clone()])
                };
                n.rule(
                    fam,
                    "nat",
                    "KUBEVIRT_PREINBOUND",
                    vec![m, Expr::Counter, Expr::Dnat(g)],
                );
            }
            loopback(n, Some(Expr::one(dport, val)));
        }
    }

    fn global_sysctl(&mut self, path: &str, value: &str) {
        if !self.sysctls.iter().any(|s| s.path == path) {
            self.sysctls.push(Sysctl {
                path: path.into(),
                value: value.into(),
            });
        }
    }

    /// netbind's DHCP-leak guard: nothing the pod netns sends from UDP port 67/547 or to UDP
    /// port 68/546 may leave through the pod interface, so a compromised launcher cannot answer DHCP on the
    /// pod network (routed: `inet` output hook; bridged: `bridge` output hook on the port).
    fn guard(&mut self) {
        for (fam, ifaces) in [
            (Family::Inet, self.guard_inet.clone()),
            (Family::Bridge, self.guard_bridge.clone()),
        ] {
            if ifaces.is_empty() {
                continue;
            }
            self.nft.table(fam, GUARD_TABLE);
            self.nft.chain(
                fam,
                GUARD_TABLE,
                "dhcp_guard",
                Some(("filter", "output", 0)),
            );
            for i in ifaces {
                // A server reply is what a client accepts: anything to the client ports, from
                // whatever source port (clients do not check it), and anything from the server
                // ports (relay-style replies to port 67).
                for (m, ports) in [
                    (Field::Sport("udp".into()), [67, 547]),
                    (Field::Dport("udp".into()), [68, 546]),
                ] {
                    let ports = ports.into_iter().map(Val::Port).collect();
                    self.nft.rule(
                        fam,
                        GUARD_TABLE,
                        "dhcp_guard",
                        vec![
                            Expr::one(Field::Oifname, Val::Name(i.to_string())),
                            Expr::set(m, ports),
                            Expr::Counter,
                            Expr::Drop,
                        ],
                    );
                }
            }
        }
    }

    /// Anti-spoofing: what the guest sends must come from its own addresses (and, bridged,
    /// its own MAC), checked before conntrack and NAT see it (prerouting, priority -300).
    /// - Masquerade: only the guest's address is masqueraded, and the pod forwards with
    ///   `rp_filter` off, so any other source would leave the pod un-NATed. `0.0.0.0` and
    ///   link-local (`::`, `fe80::/10`) stay allowed: DHCP and neighbour discovery use them and
    ///   the kernel never forwards them. `route_localnet=1` on the bridge is what the loopback
    ///   NAT needs for its replies (de-SNATed to 127.0.0.1 in prerouting, after this chain);
    ///   a guest packet addressed to 127.0.0.0/8 itself is dropped here.
    /// - Bridge binding: frames entering the bridge from the guest's tap may be only IPv4,
    ///   IPv6 and ARP, from the guest's MAC, with the pod's addresses as source (ARP sender
    ///   included). Matched by the tap's name: `ibrname` needs `nft_meta_bridge`, which not
    ///   every node kernel has.
    fn spoof_guard(&mut self) {
        const CHAIN: &str = "spoof_guard";
        let v4_any: IpAddr = Ipv4Addr::UNSPECIFIED.into();
        let v6_any: IpAddr = Ipv6Addr::UNSPECIFIED.into();
        let link_local = Val::Prefix(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0).into(), 10);
        let allowed = |addrs: &[IpAddr]| {
            let mut v4: Vec<Val> = addrs
                .iter()
                .filter(|a| a.is_ipv4())
                .map(|a| Val::Addr(*a))
                .collect();
            v4.push(Val::Addr(v4_any));
            let mut v6: Vec<Val> = addrs
                .iter()
                .filter(|a| a.is_ipv6())
                .map(|a| Val::Addr(*a))
                .collect();
            v6.extend([link_local.clone(), Val::Addr(v6_any)]);
            (v4, v6)
        };
        for g in std::mem::take(&mut self.spoof) {
            let (fam, prefix, v4, v6, rules) = match &g {
                SpoofGuard::Routed { bridge, guest } => {
                    let (v4, v6) = allowed(guest);
                    let from = vec![Expr::one(Field::Iifname, Val::Name(bridge.to_string()))];
                    let rules = vec![vec![Expr::one(
                        Field::Daddr(Family::Ip),
                        Val::Prefix(Ipv4Addr::new(127, 0, 0, 0).into(), 8),
                    )]];
                    (Family::Inet, from, v4, v6, rules)
                }
                SpoofGuard::Bridged { tap, mac, addrs } => {
                    let (v4, v6) = allowed(addrs);
                    let from = vec![Expr::one(Field::Iifname, Val::Name(tap.to_string()))];
                    let rules = vec![
                        vec![Expr::differs(
                            Field::EtherType,
                            ["ip", "arp", "ip6"].map(|t| Val::Name(t.into())).to_vec(),
                        )],
                        vec![Expr::differs(Field::EtherSaddr, vec![Val::Mac(*mac)])],
                        vec![Expr::differs(Field::ArpSaddrEther, vec![Val::Mac(*mac)])],
                        vec![Expr::differs(Field::ArpSaddrIp, v4.clone())],
                    ];
                    (Family::Bridge, from, v4, v6, rules)
                }
            };
            if !self.nft.has_chain(fam, GUARD_TABLE, CHAIN) {
                if !self.nft.has_table(fam, GUARD_TABLE) {
                    self.nft.table(fam, GUARD_TABLE);
                }
                self.nft.chain(
                    fam,
                    GUARD_TABLE,
                    CHAIN,
                    Some(("filter", "prerouting", -300)),
                );
            }
            let sources = [
                vec![Expr::differs(Field::Saddr(Family::Ip), v4)],
                vec![Expr::differs(Field::Saddr(Family::Ip6), v6)],
            ];
            for m in rules.into_iter().chain(sources) {
                let mut exprs = prefix.clone();
                exprs.extend(m);
                exprs.extend([Expr::Counter, Expr::Drop]);
                self.nft.rule(fam, GUARD_TABLE, CHAIN, exprs);
            }
        }
    }

    /// The RA responder's socket is bound to the bridge, but a bound raw socket still sends
    /// out of another interface when given its scope: what carries the socket's mark leaves
    /// only through the bridge, and only as a router advertisement (so no forged neighbour
    /// advertisement reaches the pod network, nor the guest).
    fn ra_guard(&mut self) {
        const CHAIN: &str = "ra_guard";
        let bridges: Vec<IfName> = self
            .router_adverts
            .iter()
            .map(|r| r.interface.clone())
            .collect();
        if bridges.is_empty() {
            return;
        }
        if !self.nft.has_table(Family::Inet, GUARD_TABLE) {
            self.nft.table(Family::Inet, GUARD_TABLE);
        }
        self.nft.chain(
            Family::Inet,
            GUARD_TABLE,
            CHAIN,
            Some(("filter", "output", 0)),
        );
        let mark = Expr::one(Field::Mark, Val::Hex(RA_SOCKET_MARK));
        for m in [
            Expr::differs(
                Field::Oifname,
                bridges.iter().map(|b| Val::Name(b.to_string())).collect(),
            ),
            Expr::differs(
                Field::Icmpv6Type,
                vec![Val::Name("nd-router-advert".into())],
            ),
        ] {
            self.nft.rule(
                Family::Inet,
                GUARD_TABLE,
                CHAIN,
                vec![mark.clone(), m, Expr::Counter, Expr::Drop],
            );
        }
    }

    fn finish(mut self) -> Result<PodNetPlan, PlanError> {
        self.guard();
        self.spoof_guard();
        self.ra_guard();
        if !self.handoff.is_empty() {
            self.global_sysctl(
                "net/ipv4/ip_unprivileged_port_start",
                UNPRIVILEGED_PORT_START,
            );
        }
        let ruleset = Ruleset {
            tables: std::mem::take(&mut self.nft.ruleset),
        };
        let order: Vec<RuleRef> = std::mem::take(&mut self.nft.order);
        let commands = ruleset
            .kubevirt_text(&order)
            .lines()
            .map(String::from)
            .collect();
        let meta = &self.vmi.metadata;
        let vmi = match (&meta.namespace, &meta.name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => String::new(),
        };
        // Two links with one name would make apply fight itself; refuse such a plan.
        let mut names = BTreeSet::new();
        for l in &self.links {
            if !names.insert(l.name.clone()) {
                return Err(PlanError::DuplicateLink {
                    network: l.network.clone(),
                    name: l.name.clone(),
                });
            }
        }
        Ok(PodNetPlan {
            version: PLAN_VERSION,
            vmi: vmi.clone(),
            owner: self.opts.owner,
            links: self.links,
            sysctls: self.sysctls,
            nftables: NftPlan { ruleset, commands },
            handoff: Handoff {
                version: HANDOFF_VERSION,
                vmi,
                interfaces: self.handoff,
            },
            router_adverts: self.router_adverts,
            warnings: self.warnings,
        })
    }
}
