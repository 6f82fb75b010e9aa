//! DHCP configuration of a planned interface: the lease, the host name, DNS and search
//! domains, the extras KubeVirt adds (NTP, private options).

use super::*;

impl Planner<'_> {
    pub(super) fn hostname(&self) -> String {
        let host = self.vmi.hostname.clone().unwrap_or_else(|| {
            let name = self.vmi.metadata.name.clone().unwrap_or_default();
            name.split('.').next().unwrap_or_default().to_string()
        });
        host.chars().take(63).collect()
    }

    /// The search list after the subdomain entry is prepended, then sanitised.
    pub(super) fn search(&mut self) -> Vec<String> {
        let mut search = self.dns.search.clone();
        if let Some(sub) = self.vmi.subdomain.as_deref()
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

    pub(super) fn dhcpv4(&mut self, iface: &AdmittedInterface, lease: Lease) -> Dhcpv4Config {
        let Lease {
            listen,
            server_id,
            client,
            client_mac,
            router,
            routes,
            mtu,
        } = lease;
        let search = self.search();
        let domain_name = dns::longest(search.iter()).cloned();
        let extras = &iface.dhcp;
        let client_ip = match client.addr() {
            IpAddr::V4(v4) => v4,
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
            ntp: extras.ntp_servers.clone(),
            tftp_server: extras.tftp_server_name.clone(),
            boot_file: extras.boot_file_name.clone(),
            private: extras.private_options.clone(),
            lease_seconds: LEASE_SECONDS,
        }
    }
}
