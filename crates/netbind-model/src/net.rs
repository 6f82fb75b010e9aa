//! CIDR newtypes and the masquerade addressing scheme (KubeVirt §6.1).

use std::net::{Ipv4Addr, Ipv6Addr};

pub use netbind_contract::net::{AddrError, Cidr};

/// The masquerade binding's in-pod subnet: the gateway (on the bridge) and the guest address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasqueradeAddrs {
    pub gateway: Cidr,
    pub guest: Cidr,
}

pub const DEFAULT_VM_CIDR_V4: &str = "10.0.2.0/24";
pub const DEFAULT_VM_CIDR_V6: &str = "fd10:0:2::/120";

impl MasqueradeAddrs {
    /// IPv4: gateway = network + 1, guest = network + 2; host bits in the input are ignored.
    /// KubeVirt sanitises `vmNetworkCIDR` sloppily (leading zeros allowed).
    pub fn v4(cidr: &str) -> Result<Self, AddrError> {
        let (addr_text, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| AddrError::InvalidCidr(cidr.into()))?;
        let addr = parse_ipv4_sloppy(addr_text).ok_or_else(|| {
            if addr_text.parse::<Ipv6Addr>().is_ok() {
                AddrError::NotV4(cidr.into())
            } else {
                AddrError::InvalidCidr(cidr.into())
            }
        })?;
        let parsed: Cidr = format!("{addr}/{prefix}")
            .parse()
            .map_err(|_| AddrError::InvalidCidr(cidr.into()))?;
        Self::from_cidr(parsed, 30)
    }

    /// IPv6: gateway = network + 1, guest = network + 2.
    pub fn v6(cidr: &str) -> Result<Self, AddrError> {
        let parsed: Cidr = cidr.parse()?;
        if parsed.is_ipv4() {
            return Err(AddrError::NotV6(cidr.into()));
        }
        Self::from_cidr(parsed, 126)
    }

    fn from_cidr(cidr: Cidr, max_prefix: u8) -> Result<Self, AddrError> {
        if cidr.prefix() > max_prefix {
            return Err(AddrError::TooSmall);
        }
        Ok(Self {
            gateway: cidr.nth(1),
            guest: cidr.nth(2),
        })
    }
}

/// KubeVirt parses NTP servers and `vmNetworkCIDR` "sloppily" (leading zeros allowed: `010.000.002.001`).
pub fn parse_ipv4_sloppy(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut buf = [0u8; 4];
    for (slot, part) in buf.iter_mut().zip(parts) {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    Some(Ipv4Addr::from(buf))
}

/// An NTP server as KubeVirt reads it: the API server's decoding sanitises each entry with
/// `ParseIPSloppy(...).String()` (leading zeros allowed; an IPv4-mapped IPv6 address such as
/// `::ffff:10.0.0.1` or `::ffff:a00:1` becomes its IPv4 address), then admission requires an
/// IPv4 address.
pub fn parse_ntp_server(text: &str) -> Option<Ipv4Addr> {
    parse_ipv4_sloppy(text).or_else(|| text.parse::<std::net::Ipv6Addr>().ok()?.to_ipv4_mapped())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_servers_are_sanitised_as_kubevirt_does() {
        for (text, want) in [
            ("10.0.0.1", Some([10, 0, 0, 1])),
            ("010.000.000.001", Some([10, 0, 0, 1])),
            ("::ffff:10.0.0.1", Some([10, 0, 0, 1])),
            ("::ffff:a00:1", Some([10, 0, 0, 1])),
            ("::1", None),
            ("fd00::1", None),
            ("hostname", None),
            ("10.0.0", None),
        ] {
            assert_eq!(parse_ntp_server(text), want.map(Ipv4Addr::from), "{text}");
        }
    }

    #[test]
    fn masquerade_defaults() {
        let addrs = MasqueradeAddrs::v4(DEFAULT_VM_CIDR_V4).expect("default v4");
        assert_eq!(addrs.gateway.to_string(), "10.0.2.1/24");
        assert_eq!(addrs.guest.to_string(), "10.0.2.2/24");
        let addrs = MasqueradeAddrs::v6(DEFAULT_VM_CIDR_V6).expect("default v6");
        assert_eq!(addrs.gateway.to_string(), "fd10:0:2::1/120");
        assert_eq!(addrs.guest.to_string(), "fd10:0:2::2/120");
    }

    #[test]
    fn masquerade_host_bits_and_sloppy_zeros() {
        let addrs = MasqueradeAddrs::v4("010.000.002.077/24").expect("sloppy");
        assert_eq!(addrs.gateway.to_string(), "10.0.2.1/24");
        let addrs = MasqueradeAddrs::v4("192.168.7.200/30").expect("/30 fits");
        assert_eq!(
            (
                addrs.gateway.to_string().as_str(),
                addrs.guest.to_string().as_str()
            ),
            ("192.168.7.201/30", "192.168.7.202/30")
        );
    }

    #[test]
    fn masquerade_too_small_and_invalid() {
        assert_eq!(MasqueradeAddrs::v4("10.0.2.0/31"), Err(AddrError::TooSmall));
        assert_eq!(MasqueradeAddrs::v6("fd10::/127"), Err(AddrError::TooSmall));
        assert!(MasqueradeAddrs::v6("fd10::/126").is_ok());
        assert!(matches!(
            MasqueradeAddrs::v4("10.0.2.0"),
            Err(AddrError::InvalidCidr(_))
        ));
        assert!(matches!(
            MasqueradeAddrs::v4("10.0.2.0/33"),
            Err(AddrError::InvalidCidr(_))
        ));
        assert!(matches!(
            MasqueradeAddrs::v4("fd10::/64"),
            Err(AddrError::NotV4(_))
        ));
        assert!(matches!(
            MasqueradeAddrs::v6("10.0.0.0/8"),
            Err(AddrError::NotV6(_))
        ));
    }
}
