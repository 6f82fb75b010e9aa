//! An address with its prefix length, as the pod and the plan carry it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("invalid CIDR address: {0}")]
    InvalidCidr(String),
    #[error("{0} is not an IPv4 CIDR")]
    NotV4(String),
    #[error("{0} is not an IPv6 CIDR")]
    NotV6(String),
    #[error("VM CIDR subnet is too small, at least 2 host addresses are required")]
    TooSmall,
}

/// An address with its prefix length, e.g. `10.0.2.1/24` (host bits kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, AddrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(AddrError::InvalidCidr(format!("{addr}/{prefix}")));
        }
        Ok(Self { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address (host bits cleared), with the same prefix.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(ip) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask))
            }
            IpAddr::V6(ip) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask))
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// `network + n` with this prefix (n small; wraps inside the address family).
    pub fn nth(&self, index: u32) -> Cidr {
        let net = self.network();
        let addr = match net.addr {
            IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip).wrapping_add(index))),
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(
                u128::from(ip).wrapping_add(u128::from(index)),
            )),
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr {
            addr: ip,
            prefix: self.prefix,
        }
        .network()
            == self.network()
            && ip.is_ipv4() == self.is_ipv4()
    }

    /// The IPv4 netmask, e.g. /30 → 255.255.255.252.
    pub fn v4_mask(&self) -> Option<Ipv4Addr> {
        self.is_ipv4().then(|| {
            Ipv4Addr::from(
                u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0),
            )
        })
    }

    /// Global unicast in Go's sense (`net.IP.IsGlobalUnicast`): not loopback, link-local,
    /// multicast or unspecified. Private ranges count as global, as in Go.
    pub fn is_global_unicast(&self) -> bool {
        match self.addr {
            IpAddr::V4(ip) => {
                !(ip.is_loopback()
                    || ip.is_link_local()
                    || ip.is_multicast()
                    || ip.is_unspecified()
                    || ip.is_broadcast())
            }
            IpAddr::V6(ip) => {
                !(ip.is_loopback()
                    || ip.is_multicast()
                    || ip.is_unspecified()
                    || (ip.segments()[0] & 0xffc0) == 0xfe80)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = AddrError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || AddrError::InvalidCidr(text.to_string());
        let (addr_part, prefix_part) = text.split_once('/').ok_or_else(bad)?;
        if prefix_part.is_empty()
            || prefix_part.len() > 3
            || !prefix_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let prefix: u8 = prefix_part.parse().map_err(|_| bad())?;
        let addr: IpAddr = addr_part.parse().map_err(|_| bad())?;
        Cidr::new(addr, prefix).map_err(|_| bad())
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_helpers() {
        let cidr: Cidr = "10.244.0.5/30".parse().expect("cidr");
        assert_eq!(cidr.v4_mask(), Some(Ipv4Addr::new(255, 255, 255, 252)));
        assert_eq!(cidr.network().to_string(), "10.244.0.4/30");
        assert!(cidr.contains("10.244.0.6".parse().expect("ip")));
        assert!(!cidr.contains("10.244.0.8".parse().expect("ip")));
        assert!(
            !"fe80::1/64"
                .parse::<Cidr>()
                .expect("ll")
                .is_global_unicast()
        );
        assert!("10.0.0.1/8".parse::<Cidr>().expect("p").is_global_unicast());
        assert!(
            !"169.254.75.10/32"
                .parse::<Cidr>()
                .expect("ll")
                .is_global_unicast()
        );
    }
}
