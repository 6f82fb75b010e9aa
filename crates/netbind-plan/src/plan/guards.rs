//! netbind's own nftables chains (table `netbind`), beyond KubeVirt's: the DHCP-leak
//! guard, the guest anti-spoofing chain, and the RA socket's guard.

use super::*;

/// What a guest may send from, per bridge (item of the anti-spoofing chains).
pub(super) enum SpoofGuard {
    /// Masquerade: the guest's packets are routed by the pod, entering on `bridge`.
    Routed { bridge: IfName, guest: Vec<IpAddr> },
    /// Bridge binding: the guest's frames enter the pod's bridge from its `tap`.
    Bridged {
        tap: IfName,
        mac: MacAddr,
        addrs: Vec<IpAddr>,
    },
}

impl Planner<'_> {
    /// netbind's DHCP-leak guard: nothing the pod netns sends from UDP port 67/547 or to UDP
    /// port 68/546 may leave through the pod interface, so a compromised launcher cannot answer DHCP on the
    /// pod network (routed: `inet` output hook; bridged: `bridge` output hook on the port).
    pub(super) fn guard(&mut self) {
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
                Some((ChainType::Filter, Hook::Output, PRIORITY_FILTER)),
            );
            for iface in ifaces {
                // A server reply is what a client accepts: anything to the client ports, from
                // whatever source port (clients do not check it), and anything from the server
                // ports (relay-style replies to port 67).
                for (match_expr, ports) in [
                    (Field::Sport("udp".into()), [67, 547]),
                    (Field::Dport("udp".into()), [68, 546]),
                ] {
                    let ports = ports.into_iter().map(Val::Port).collect();
                    self.nft.rule(
                        fam,
                        GUARD_TABLE,
                        "dhcp_guard",
                        vec![
                            Expr::one(Field::Oifname, Val::Name(iface.to_string())),
                            Expr::set(match_expr, ports),
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
    pub(super) fn spoof_guard(&mut self) {
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
        for guard in std::mem::take(&mut self.spoof) {
            let (fam, prefix, v4, v6, rules) = match &guard {
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
                    Some((ChainType::Filter, Hook::Prerouting, PRIORITY_RAW)),
                );
            }
            let sources = [
                vec![Expr::differs(Field::Saddr(Family::Ip), v4)],
                vec![Expr::differs(Field::Saddr(Family::Ip6), v6)],
            ];
            for rule in rules.into_iter().chain(sources) {
                let mut exprs = prefix.clone();
                exprs.extend(rule);
                exprs.extend([Expr::Counter, Expr::Drop]);
                self.nft.rule(fam, GUARD_TABLE, CHAIN, exprs);
            }
        }
    }

    /// The RA responder's socket is bound to the bridge, but a bound raw socket still sends
    /// out of another interface when given its scope: what carries the socket's mark leaves
    /// only through the bridge, and only as a router advertisement (so no forged neighbour
    /// advertisement reaches the pod network, nor the guest).
    pub(super) fn ra_guard(&mut self) {
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
            Some((ChainType::Filter, Hook::Output, PRIORITY_FILTER)),
        );
        let mark = Expr::one(Field::Mark, Val::Hex(RA_SOCKET_MARK));
        for rule in [
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
                vec![mark.clone(), rule, Expr::Counter, Expr::Drop],
            );
        }
    }
}
