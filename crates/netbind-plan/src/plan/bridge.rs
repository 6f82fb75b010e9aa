//! The bridge binding (KubeVirt §5): the pod interface moves under an in-pod bridge as
//! `<suffix>-nic`, the guest takes over the pod's addresses through DHCP. A binding plugin with
//! `domainAttachmentType: managedTap` gets the same links without the fake bridge address and
//! without DHCP (KubeVirt's `managedTapSpec`: the plugin serves its guest).

use super::*;
use netbind_model::admitted::NetworkSource;

impl Planner<'_> {
    pub(super) fn bridge(
        &mut self,
        index: usize,
        iface: &AdmittedInterface,
        pod_iface: &IfName,
        flavor: BridgeFlavor,
    ) -> Result<(), PlanError> {
        let managed_tap = flavor == BridgeFlavor::ManagedTap;
        let net = iface.name.as_str();
        let primary = iface.network.is_primary();
        let link = self.pod_link(net, pod_iface)?.clone();
        let bridge = naming::bridge_name(net, pod_iface)?;
        let nic = naming::nic_name(net, pod_iface)?;
        let tap = naming::tap_name(net, pod_iface, primary)?;
        let v4 = link.global_v4();
        let fake = match v4 {
            Some(_) if !managed_tap => Some(naming::fake_bridge_ip(net, index)?),
            _ => None,
        };
        // Discovery first (KubeVirt §5.1), so nothing is planned for a pod we cannot serve.
        let dhcp = match v4 {
            _ if managed_tap => None,
            None => None,
            Some(ip) => {
                let routes: Vec<_> = link.routes.iter().filter(|r| r.dst.is_ipv4()).collect();
                let first = routes.first().ok_or_else(|| PlanError::NoGateway {
                    network: net.into(),
                    iface: pod_iface.clone(),
                })?;
                let router = match first.gateway {
                    Some(IpAddr::V4(gw)) => Some(gw),
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
                            Some(IpAddr::V4(gw)) => gw,
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
                let mac = iface
                    .mac
                    .or_else(|| self.status_mac(net))
                    .unwrap_or(link.mac);
                let mtu = Self::mtu16(net, pod_iface, link.mtu)?;
                let server_id = match fake.map(|f| f.addr()) {
                    Some(IpAddr::V4(v4_addr)) => v4_addr,
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
        let mac = iface.mac.unwrap_or(link.mac);
        let checked = match &iface.network.source {
            NetworkSource::Multus { network_name, .. } if !primary => {
                let ns = self.vmi.metadata.namespace.as_deref().unwrap_or("default");
                self.opts.cluster.spoof_checked(network_name, ns)
            }
            _ => true,
        };
        // A plugin owns what its guest may send.
        if checked && !managed_tap {
            self.spoof.push(SpoofGuard::Bridged {
                tap: tap.clone(),
                mac,
                addrs: link
                    .addresses
                    .iter()
                    .filter(|cidr| cidr.is_global_unicast())
                    .map(|cidr| cidr.addr())
                    .collect(),
            });
        }
        let domain = self.domain(iface, &tap, mac, link.mtu);
        self.handoff.push(HandoffInterface {
            network: net.into(),
            binding: if managed_tap {
                BindingKind::Plugin
            } else {
                BindingKind::Bridge
            },
            pod_interface: pod_iface.clone(),
            bridge,
            tap,
            dhcpv4: dhcp,
            dhcpv6: None,
            domain,
        });
        Ok(())
    }
}

/// Which of the two users of the bridge layout is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BridgeFlavor {
    /// KubeVirt's bridge binding.
    Binding,
    /// A binding plugin with `domainAttachmentType: managedTap`.
    ManagedTap,
}

impl Planner<'_> {
    /// A binding plugin with `domainAttachmentType: tap`: its CNI made everything, so phase 1
    /// has no link work; the domain gets KubeVirt's `TapLibvirtSpecGenerator` interface: the
    /// tap named as KubeVirt names it when it exists (else the pod interface itself), the VMI's
    /// MAC or the pod interface's, the pod interface's MTU.
    pub(super) fn plugin_tap(
        &mut self,
        iface: &AdmittedInterface,
        pod_iface: &IfName,
    ) -> Result<(), PlanError> {
        let net = iface.name.as_str();
        let link = self.pod_link(net, pod_iface)?.clone();
        let tap_name = naming::tap_name(net, pod_iface, iface.network.is_primary())?;
        let target = if self.pod.get(tap_name.as_str()).is_some() {
            tap_name
        } else {
            pod_iface.clone()
        };
        let mac = iface.mac.unwrap_or(link.mac);
        let domain = self.domain(iface, &target, mac, link.mtu);
        self.handoff.push(HandoffInterface {
            network: net.into(),
            binding: BindingKind::Plugin,
            pod_interface: pod_iface.clone(),
            bridge: pod_iface.clone(),
            tap: target,
            dhcpv4: None,
            dhcpv6: None,
            domain,
        });
        Ok(())
    }
}
