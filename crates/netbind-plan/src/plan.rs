//! `plan(spec, observed pod) -> PodNetPlan`: the whole of phase 1 and the phase-2 hand-off as
//! data. Pure; the handler is a thin adapter that applies it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netbind_model::admission::ClusterConfig;
use netbind_model::admitted::{
    AdmittedInterface, AdmittedVmi, Binding, DomainAttachment, InterfaceState,
};
use netbind_model::handoff::BindingKind;
use netbind_model::handoff::{
    Dhcpv4Config, Dhcpv6Config, DomainInterface, HANDOFF_VERSION, Handoff, HandoffInterface,
    LEASE_SECONDS, Route4,
};
use netbind_model::net::{AddrError, MasqueradeAddrs};
use netbind_model::pod::{ObservedPod, PodInterface};
use netbind_model::ra::RaConfig;
use netbind_model::{Cidr, IfName, MacAddr};
use serde::{Deserialize, Serialize};

use crate::dns::{self, DnsConfig};
use crate::naming::{self, NamingError};
use crate::nft::{
    Builder, ChainType, Expr, Family, Field, Hook, PRIORITY_DSTNAT, PRIORITY_FILTER, PRIORITY_RAW,
    PRIORITY_SRCNAT, RuleRef, Ruleset, Val,
};

mod bridge;
mod dhcp;
mod domain;
mod guards;
mod masquerade;
mod passt;

use bridge::BridgeFlavor;
use guards::SpoofGuard;

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
    /// the compatibility golden files; the handler applies `ruleset` as one nf_tables batch).
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
    #[error("network {0:?}: the VMI has no interface on a network of that name")]
    UnknownNetwork(String),
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
    #[error("network {network:?}: link {name} is also planned for another network")]
    DuplicateLink { network: String, name: IfName },
    #[error("nftables ruleset: {0} (a netbind bug)")]
    Ruleset(String),
}

/// Everything `plan` reads besides the VMI and the pod.
#[derive(Debug, Clone)]
pub struct PlanOptions<'a> {
    pub owner: Owner,
    /// Contents of the launcher's `/etc/resolv.conf`.
    pub resolv_conf: &'a str,
    pub cluster: &'a ClusterConfig,
    /// Plan only the interfaces of these VMI networks (phase 1 called once per network, or
    /// the hook sidecar serving one); `None`: all of them.
    pub networks: Option<&'a [String]>,
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

/// The planner's working state: its inputs and what it has planned so far.
struct Planner<'a> {
    vmi: &'a AdmittedVmi,
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

pub fn plan(
    vmi: &AdmittedVmi,
    pod: &ObservedPod,
    opts: &PlanOptions,
) -> Result<PodNetPlan, PlanError> {
    let mut warnings = Vec::new();
    let dns = dns::parse_resolv_conf(opts.resolv_conf, &mut warnings);
    let mut planner = Planner {
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
    let status_name = |net: &str| {
        vmi.status
            .interfaces
            .iter()
            .find(|s| s.network == net)
            .and_then(|s| s.pod_interface_name.clone())
    };
    if let Some(unknown) = opts
        .networks
        .unwrap_or_default()
        .iter()
        .find(|only| vmi.interface(only).is_none())
    {
        return Err(PlanError::UnknownNetwork(unknown.clone()));
    }
    let ordinal = naming::uses_ordinal_scheme(pod.interfaces.iter().map(|i| i.name.as_str()));
    let pod_names = naming::pod_iface_names(&vmi.networks, &status_name, ordinal)?;
    for (index, iface) in vmi.interfaces.iter().enumerate() {
        if opts
            .networks
            .is_some_and(|only| !only.contains(&iface.name))
        {
            continue;
        }
        // Admission pairs every interface with one network; naming covers every network.
        let Some((_, pod_iface)) = pod_names.iter().find(|(n, _)| *n == iface.name) else {
            continue;
        };
        if iface.state == InterfaceState::Absent {
            planner.warnings.push(format!(
                "interface {:?}: state absent (hot-unplug): nothing planned, and a re-run takes away \
                 what an earlier run made for it",
                iface.name
            ));
            continue;
        }
        match &iface.binding {
            Binding::Bridge => planner.bridge(index, iface, pod_iface, BridgeFlavor::Binding)?,
            Binding::Masquerade(masq) => planner.masquerade(iface, masq, pod_iface)?,
            Binding::PasstBinding(passt) => planner.passt(iface, passt, pod_iface)?,
            Binding::Plugin {
                attachment: Some(DomainAttachment::ManagedTap),
                ..
            } => planner.bridge(index, iface, pod_iface, BridgeFlavor::ManagedTap)?,
            Binding::Plugin {
                attachment: Some(DomainAttachment::Tap),
                ..
            } => planner.plugin_tap(iface, pod_iface)?,
            other => planner.warnings.push(format!(
                "interface {:?}: binding {:?} has no phase-1 work in netbind; skipped",
                iface.name,
                other.kind()
            )),
        }
    }
    planner.finish()
}

impl Planner<'_> {
    fn pod_link(&self, network: &str, iface: &IfName) -> Result<&PodInterface, PlanError> {
        self.pod
            .get(iface.as_str())
            .ok_or_else(|| PlanError::PodLinkMissing {
                network: network.into(),
                iface: iface.clone(),
            })
    }

    fn status_mac(&self, network: &str) -> Option<MacAddr> {
        self.vmi
            .status
            .interfaces
            .iter()
            .find(|s| s.network == network)
            .and_then(|s| s.mac)
    }

    fn global_sysctl(&mut self, path: &str, value: &str) {
        if !self.sysctls.iter().any(|s| s.path == path) {
            self.sysctls.push(Sysctl {
                path: path.into(),
                value: value.into(),
            });
        }
    }

    fn finish(mut self) -> Result<PodNetPlan, PlanError> {
        self.guard();
        self.spoof_guard();
        self.ra_guard();
        // Only the launcher's DHCP servers need the low ports; a plugin serves its own.
        if self
            .handoff
            .iter()
            .any(|iface| iface.dhcpv4.is_some() || iface.dhcpv6.is_some())
        {
            self.global_sysctl(
                "net/ipv4/ip_unprivileged_port_start",
                UNPRIVILEGED_PORT_START,
            );
        }
        if !self.nft.unknown.is_empty() {
            return Err(PlanError::Ruleset(self.nft.unknown.join("; ")));
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
        let vmi = self.vmi.qualified_name();
        // Two links with one name would make apply fight itself; refuse such a plan.
        let mut names = BTreeSet::new();
        for link in &self.links {
            if !names.insert(link.name.clone()) {
                return Err(PlanError::DuplicateLink {
                    network: link.network.clone(),
                    name: link.name.clone(),
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
