//! DHCP configuration of a planned interface: the lease, the host name, DNS and search
//! domains, the extras KubeVirt adds (NTP, private options).

use super::*;

impl Ctx<'_> {
    pub(super) fn hostname(&self) -> String {
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
    pub(super) fn search(&mut self) -> Vec<String> {
        let mut search = self.dns.search.clone();
        if let Some(sub) = self.vmi.spec.subdomain.as_deref().filter(|s| !s.is_empty())
            && let Some(entry) = dns::subdomain_search_entry(&search, sub)
        {
            search.insert(0, entry);
        }
        dns::sanitize_search(search, &mut self.warnings)
    }

    pub(super) fn mtu16(network: &str, iface: &IfName, mtu: u32) -> Result<u16, PlanError> {
        u16::try_from(mtu).map_err(|_| PlanError::Mtu {
            network: network.into(),
            iface: iface.clone(),
            mtu,
        })
    }

    pub(super) fn dhcp_extras(
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

    pub(super) fn dhcpv4(&mut self, iface: &Interface, l: Lease) -> Dhcpv4Config {
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
}
