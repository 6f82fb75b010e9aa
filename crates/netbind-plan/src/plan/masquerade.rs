//! The masquerade binding (KubeVirt §6): the guest on an in-pod bridge behind NAT, its
//! DHCP and router advertisements, and KubeVirt's nftables rules for it.

use super::*;
use netbind_model::admitted::{Forward, MasqueradeBinding};

/// Envoy's reserved ports, skipped by the Istio rule set.
const ISTIO_RESERVED_PORTS: [u16; 10] = [
    15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090,
];
const ISTIO_NON_PROXIED_PORT: u16 = 22;
const LIVE_MIGRATION_PORTS: [u16; 2] = [49152, 49153];

impl Planner<'_> {
    pub(super) fn masquerade(
        &mut self,
        iface: &AdmittedInterface,
        spec: &MasqueradeBinding,
        pod_iface: &IfName,
    ) -> Result<(), PlanError> {
        let net = iface.name.as_str();
        let link = self.pod_link(net, pod_iface)?.clone();
        let cidr_err = |field, source| PlanError::Cidr {
            network: net.into(),
            field,
            source,
        };
        // The guest gets a family only where the pod has one.
        let v4 = link.global_v4().map(|pod_ip| (spec.v4, pod_ip));
        let v6 = link.global_v6().map(|_| spec.v6);
        let bridge = naming::bridge_name(net, pod_iface)?;
        let tap = naming::tap_name(net, pod_iface, true)?;
        let mtu = Self::mtu16(net, pod_iface, link.mtu)?;
        let mut addresses = Vec::new();
        addresses.extend(v4.map(|(masq, _)| masq.gateway));
        addresses.extend(v6.map(|masq| masq.gateway));
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
            Some((masq, _)) => {
                let (IpAddr::V4(gw), IpAddr::V4(_)) = (masq.gateway.addr(), masq.guest.addr())
                else {
                    return Err(cidr_err(
                        "vmNetworkCIDR",
                        AddrError::NotV4(masq.gateway.to_string()),
                    ));
                };
                Some(self.dhcpv4(
                    iface,
                    Lease {
                        listen: bridge.clone(),
                        server_id: gw,
                        client: masq.guest,
                        client_mac: None,
                        router: Some(gw),
                        routes: vec![],
                        mtu,
                    },
                ))
            }
            None => None,
        };
        let dhcpv6 = v6.and_then(|masq| match masq.guest.addr() {
            IpAddr::V6(client_ip) => Some(Dhcpv6Config {
                interface: bridge.clone(),
                server_mac: MacAddr::MASQUERADE_BRIDGE,
                client_ip,
                dns: self.dns.v6.clone(),
                lease_seconds: LEASE_SECONDS,
            }),
            IpAddr::V4(_) => None,
        });
        if let Some((masq, pod_ip)) = v4 {
            self.masquerade_nft(
                Family::Ip,
                &spec.forward,
                pod_iface,
                &bridge,
                masq,
                Some(pod_ip.addr()),
            );
        }
        if let Some(masq) = v6 {
            self.masquerade_nft(Family::Ip6, &spec.forward, pod_iface, &bridge, masq, None);
            self.router_adverts.push(RaConfig::masquerade(
                bridge.clone(),
                MacAddr::MASQUERADE_BRIDGE,
                masq.gateway,
                link.mtu,
            ));
        }
        self.guard_inet.push(pod_iface.clone());
        let mut guest: Vec<IpAddr> = v4.map(|(masq, _)| masq.guest.addr()).into_iter().collect();
        guest.extend(v6.map(|masq| masq.guest.addr()));
        self.spoof.push(SpoofGuard::Routed {
            bridge: bridge.clone(),
            guest,
        });
        let mac = iface.mac.unwrap_or(link.mac);
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
    pub(super) fn masquerade_nft(
        &mut self,
        fam: Family,
        forward: &Forward,
        pod_iface: &IfName,
        bridge: &IfName,
        match_expr: MasqueradeAddrs,
        pod_ipv4: Option<IpAddr>,
    ) {
        let (guest, gw) = (match_expr.guest.addr(), match_expr.gateway.addr());
        let lo: IpAddr = if fam == Family::Ip {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        };
        let istio = self
            .vmi
            .annotation("sidecar.istio.io/inject")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let nft = &mut self.nft;
        nft.table(fam, "nat");
        nft.chain(
            fam,
            "nat",
            "prerouting",
            Some((ChainType::Nat, Hook::Prerouting, PRIORITY_DSTNAT)),
        );
        nft.chain(
            fam,
            "nat",
            "input",
            Some((ChainType::Nat, Hook::Input, PRIORITY_SRCNAT)),
        );
        nft.chain(
            fam,
            "nat",
            "output",
            Some((ChainType::Nat, Hook::Output, PRIORITY_DSTNAT)),
        );
        nft.chain(
            fam,
            "nat",
            "postrouting",
            Some((ChainType::Nat, Hook::Postrouting, PRIORITY_SRCNAT)),
        );
        nft.chain(fam, "nat", "KUBEVIRT_PREINBOUND", None);
        nft.chain(fam, "nat", "KUBEVIRT_POSTINBOUND", None);
        nft.rule(
            fam,
            "nat",
            "postrouting",
            vec![
                Expr::one(Field::Saddr(fam), Val::Addr(guest)),
                Expr::Counter,
                Expr::Masquerade,
            ],
        );
        nft.rule(
            fam,
            "nat",
            "prerouting",
            vec![
                Expr::one(Field::Iifname, Val::Name(pod_iface.to_string())),
                Expr::Counter,
                Expr::Jump("KUBEVIRT_PREINBOUND".into()),
            ],
        );
        nft.rule(
            fam,
            "nat",
            "postrouting",
            vec![
                Expr::one(Field::Oifname, Val::Name(bridge.to_string())),
                Expr::Counter,
                Expr::Jump("KUBEVIRT_POSTINBOUND".into()),
            ],
        );
        let skip = |nft: &mut Builder, ports: &[u16]| {
            for chain in ["output", "KUBEVIRT_POSTINBOUND"] {
                nft.rule(
                    fam,
                    "nat",
                    chain,
                    vec![
                        Expr::set(
                            Field::Dport("tcp".into()),
                            ports.iter().map(|proto| Val::Port(*proto)).collect(),
                        ),
                        Expr::one(Field::Saddr(fam), Val::Addr(lo)),
                        Expr::Counter,
                        Expr::Return,
                    ],
                );
            }
        };
        // A legacy launcher migrates over TCP on 49152/49153 through loopback; keep them out of
        // the DNAT. A new VMI migrates over a unix socket (see `VmiStatus::new_vmi`).
        if self.vmi.status.migration_transport.as_deref()
            != Some(netbind_model::vmi::MIGRATION_TRANSPORT_UNIX)
        {
            skip(nft, &LIVE_MIGRATION_PORTS);
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
        let loopback = |nft: &mut Builder, dport: Option<Expr>| {
            let mut post = dport.clone().into_iter().collect::<Vec<_>>();
            post.extend([
                Expr::set(Field::Saddr(fam), snat_src.clone()),
                Expr::Counter,
                Expr::Snat(gw),
            ]);
            nft.rule(fam, "nat", "KUBEVIRT_POSTINBOUND", post);
            let mut out = vec![Expr::set(Field::Daddr(fam), dnat_dst.clone())];
            out.extend(dport);
            out.extend([Expr::Counter, Expr::Dnat(guest)]);
            nft.rule(fam, "nat", "output", out);
        };
        // (protocol, port or range, is-range)
        let targets: Vec<(&str, Val, bool)> = match forward {
            Forward::All => vec![],
            Forward::Ports(ports) => ports
                .iter()
                .map(|proto| (proto.protocol.nft(), Val::Port(proto.port), false))
                .collect(),
            Forward::Ranges(ranges) => ranges
                .iter()
                .map(|r| (r.protocol.nft(), Val::Range(r.start, r.end), true))
                .collect(),
        };
        if targets.is_empty() {
            if istio {
                skip(nft, &ISTIO_RESERVED_PORTS);
                nft.rule(
                    fam,
                    "nat",
                    "KUBEVIRT_PREINBOUND",
                    vec![
                        Expr::set(
                            Field::Dport("tcp".into()),
                            vec![Val::Port(ISTIO_NON_PROXIED_PORT)],
                        ),
                        Expr::Counter,
                        Expr::Dnat(guest),
                    ],
                );
            } else {
                nft.rule(
                    fam,
                    "nat",
                    "KUBEVIRT_PREINBOUND",
                    vec![Expr::Counter, Expr::Dnat(guest)],
                );
            }
            loopback(nft, None);
            return;
        }
        for (proto, val, is_range) in targets {
            let dport = Field::Dport(proto.into());
            let inbound = if istio {
                // With the Istio proxy only the non-proxied port (SSH) goes straight to the
                // guest, when the port is it or the range holds it; KubeVirt forwards it as TCP
                // whatever the port's protocol.
                let holds = match val {
                    Val::Port(port) => port == ISTIO_NON_PROXIED_PORT,
                    Val::Range(start, end) => (start..=end).contains(&ISTIO_NON_PROXIED_PORT),
                    _ => false,
                };
                holds.then(|| {
                    Expr::set(
                        Field::Dport("tcp".into()),
                        vec![Val::Port(ISTIO_NON_PROXIED_PORT)],
                    )
                })
            } else if is_range {
                Some(Expr::one(dport.clone(), val.clone()))
            } else {
                Some(Expr::set(dport.clone(), vec![val.clone()]))
            };
            if let Some(match_expr) = inbound {
                nft.rule(
                    fam,
                    "nat",
                    "KUBEVIRT_PREINBOUND",
                    vec![match_expr, Expr::Counter, Expr::Dnat(guest)],
                );
            }
            loopback(nft, Some(Expr::one(dport, val)));
        }
    }
}
