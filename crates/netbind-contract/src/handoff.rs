//! The hand-off record: the only data phase 1 (handler, root) passes to phase 2 (launcher,
//! unprivileged). Versioned, strict on read (unknown fields are an error: a newer handler
//! talking to an older launcher must fail loudly, not half-work), validated after decode.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::types::{IfName, MacAddr};

/// Which binding an interface asked for (admission guarantees exactly one).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum BindingKind {
    /// KubeVirt's default (`defaultNetworkInterface` unset).
    #[default]
    Bridge,
    Masquerade,
    Sriov,
    PasstBinding,
    Plugin,
}

impl BindingKind {
    /// The name as KubeVirt's API and the hand-off record spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingKind::Bridge => "bridge",
            BindingKind::Masquerade => "masquerade",
            BindingKind::Sriov => "sriov",
            BindingKind::PasstBinding => "passtBinding",
            BindingKind::Plugin => "plugin",
        }
    }
}

impl std::fmt::Display for BindingKind {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.pad(self.as_str())
    }
}

pub const HANDOFF_VERSION: u32 = 1;
/// File name inside the hand-off directory.
pub const HANDOFF_FILE: &str = "handoff.json";
/// KubeVirt's lease: 999 days, in seconds.
pub const LEASE_SECONDS: u32 = 86_313_600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    pub version: u32,
    /// `namespace/name` of the VMI, for logs.
    pub vmi: String,
    pub interfaces: Vec<HandoffInterface>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffInterface {
    /// The VMI network name.
    pub network: String,
    pub binding: BindingKind,
    /// The pod interface name as the CNI made it (`eth0`, `pod16477688c0e`).
    pub pod_interface: IfName,
    /// The in-pod bridge the DHCP servers listen on.
    pub bridge: IfName,
    pub tap: IfName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcpv4: Option<Dhcpv4Config>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcpv6: Option<Dhcpv6Config>,
    pub domain: DomainInterface,
}

/// Everything the DHCPv4 server answers with (KubeVirt §9.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcpv4Config {
    /// Listen (IP_PKTINFO filter) and reply on this interface.
    pub interface: IfName,
    /// Option 54.
    pub server_id: Ipv4Addr,
    /// `yiaddr`.
    pub client_ip: Ipv4Addr,
    /// Option 1 as a prefix length.
    pub prefix_len: u8,
    /// Answer only this client hardware address (bridge binding); any client when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mac: Option<MacAddr>,
    /// Option 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv4Addr>,
    /// Option 6 (may be empty: sent with zero length, as KubeVirt does).
    pub dns: Vec<Ipv4Addr>,
    /// Option 12.
    pub hostname: String,
    /// Option 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// Option 119, already validated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Option 26.
    pub mtu: u16,
    /// Option 121, default route(s) last; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route4>,
    /// Option 42.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<Ipv4Addr>,
    /// Option 66.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tftp_server: Option<String>,
    /// Option 67.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_file: Option<String>,
    /// Options 224..=254.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private: Vec<PrivateOption>,
    /// Option 51.
    pub lease_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    /// `0.0.0.0` (on-link) when the route has no next hop.
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateOption {
    pub code: u8,
    pub value: String,
}

/// DHCPv6 for masquerade with IPv6 (KubeVirt §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcpv6Config {
    pub interface: IfName,
    /// The server DUID is DUID-LL of this MAC (the bridge's).
    pub server_mac: MacAddr,
    pub client_ip: Ipv6Addr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv6Addr>,
    pub lease_seconds: u32,
}

/// One libvirt `<interface type='ethernet'>` (KubeVirt §11), as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainInterface {
    /// `ua-<network name>`.
    pub alias: String,
    pub tap: IfName,
    pub mac: MacAddr,
    /// libvirt model type, e.g. `virtio-non-transitional`, `e1000e`.
    pub model: String,
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    /// `<rom enabled='no'/>`: when no boot order is set.
    pub rom_disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<PciAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acpi_index: Option<u32>,
    /// `<driver name='vhost' queues='N'/>` when multiqueue applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<u32>,
    /// `iommu='on'` on the vhost driver: launch security (SEV, SNP, Secure Execution) needs
    /// the device's DMA to go through the guest's IOMMU.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub iommu: bool,
    pub link_down: bool,
    /// KubeVirt's core passt binding: the domain's NIC is `<interface type='vhostuser'>` on
    /// the pod interface with passt as its backend, not the tap. Then `tap`, `mtu`,
    /// `boot_order`, `link_down` and `rom_disabled` are not written (KubeVirt's converter sets
    /// those for tap attachments only), nor `mac` unless the VMI gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passt: Option<PasstAttachment>,
}

/// The passt parts of a `<interface type='vhostuser'>` (KubeVirt's `passtBindingOptions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasstAttachment {
    /// `<source dev=…>`: the pod interface passt connects the guest to.
    pub source: IfName,
    /// `<backend type='passt' logFile=…>`.
    pub log_file: String,
    /// The VMI's `macAddress`, when it set one: without it libvirt picks the MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// The `<portForward>` elements, in KubeVirt's order.
    pub port_forward: Vec<PortForward>,
}

/// One `<portForward proto=…>`: with no range, every port of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    pub proto: PortProto,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<PortForwardRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    Tcp,
    Udp,
}

impl PortProto {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        }
    }
}

/// `<range start=… [exclude='yes']/>`: one port (KubeVirt writes no `end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForwardRange {
    pub start: u16,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
    /// The address as the VMI wrote it: KubeVirt's converter copies the hex digits into the
    /// domain XML as written (`0000:81:0A.0` gives `slot='0x0A'`), so their case is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<PciText>,
}

/// The 12 characters of a valid `DDDD:BB:SS.F` PCI address, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciText([u8; 12]);

impl PciText {
    pub fn as_str(&self) -> &str {
        // Only built from a parsed address, whose 12 bytes are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
    /// Domain, bus, slot and function, as written.
    pub fn fields(&self) -> [&str; 4] {
        let text = self.as_str();
        [&text[0..4], &text[5..7], &text[8..10], &text[11..12]]
    }
}

impl Serialize for PciText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PciText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PciAddress::parse(&text)
            .and_then(|pci| pci.written)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a PCI address")))
    }
}

impl PciAddress {
    /// KubeVirt's `^([\da-fA-F]{4}):([\da-fA-F]{2}):([\da-fA-F]{2})\.([0-7])$`.
    pub fn parse(text: &str) -> Option<PciAddress> {
        let bytes = text.as_bytes();
        if bytes.len() != 12 || bytes[4] != b':' || bytes[7] != b':' || bytes[10] != b'.' {
            return None;
        }
        let hex = |r: std::ops::Range<usize>| {
            let part = text.get(r)?;
            part.bytes()
                .all(|c| c.is_ascii_hexdigit())
                .then(|| u16::from_str_radix(part, 16).ok())?
        };
        let function = char::from(bytes[11]).to_digit(8)?;
        Some(PciAddress {
            domain: hex(0..4)?,
            bus: u8::try_from(hex(5..7)?).ok()?,
            slot: u8::try_from(hex(8..10)?).ok()?,
            function: u8::try_from(function).ok()?,
            written: Some(PciText(bytes.try_into().ok()?)),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("hand-off record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("hand-off record: version {found}, this launcher reads version {HANDOFF_VERSION}")]
    Version { found: u32 },
    #[error("hand-off record: interface {network}: {what}")]
    Invalid { network: String, what: String },
}

impl Handoff {
    pub fn from_json(bytes: &[u8]) -> Result<Self, HandoffError> {
        let handoff: Handoff = serde_json::from_slice(bytes)?;
        if handoff.version != HANDOFF_VERSION {
            return Err(HandoffError::Version {
                found: handoff.version,
            });
        }
        for iface in &handoff.interfaces {
            let bad = |what: &str| HandoffError::Invalid {
                network: iface.network.clone(),
                what: what.into(),
            };
            if let Some(dhcp) = &iface.dhcpv4 {
                if dhcp.prefix_len > 32 {
                    return Err(bad("dhcpv4.prefix_len is more than 32"));
                }
                if dhcp.mtu < 68 {
                    return Err(bad("dhcpv4.mtu is below the IPv4 minimum of 68"));
                }
                if dhcp.routes.iter().any(|r| r.prefix_len > 32) {
                    return Err(bad("dhcpv4.routes has a prefix length over 32"));
                }
                if dhcp.private.iter().any(|p| !(224..=254).contains(&p.code)) {
                    return Err(bad("dhcpv4.private has a code outside 224..=254"));
                }
            }
            if iface.domain.tap != iface.tap {
                return Err(bad("domain.tap differs from tap"));
            }
        }
        Ok(handoff)
    }

    /// The record as written to disk. A failure is an error, never an empty record.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self).map(|s| s + "\n")
    }
}
