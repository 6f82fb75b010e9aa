//! Router advertisements for a masquerade guest's IPv6 (RFC 4861), as data: what phase 1
//! plans and the unprivileged responder (`netbind-ra`) sends. DHCPv6 gives the guest its
//! address but carries no router; the advertisement gives it the default route, with the M
//! and O flags so that it keeps using DHCPv6, and the masquerade prefix as on-link but not
//! for autoconfiguration (the address is the one DHCPv6 leases).

use serde::{Deserialize, Serialize};

use crate::net::Cidr;
use crate::types::{IfName, MacAddr};

/// RFC 4861 §6.2.1 default: MaxRtrAdvInterval.
pub const MAX_RTR_ADV_INTERVAL_S: u32 = 600;
/// RFC 4861 §6.2.1 default: MinRtrAdvInterval = 0.33 × MaxRtrAdvInterval.
pub const MIN_RTR_ADV_INTERVAL_S: u32 = MAX_RTR_ADV_INTERVAL_S * 33 / 100;
/// RFC 4861 §6.2.1 default: AdvDefaultLifetime = 3 × MaxRtrAdvInterval.
pub const ADV_DEFAULT_LIFETIME_S: u16 = 1800;
/// RFC 4861 §6.2.1 defaults for the Prefix Information option: 30 days valid, 7 preferred.
pub const ADV_VALID_LIFETIME_S: u32 = 2_592_000;
pub const ADV_PREFERRED_LIFETIME_S: u32 = 604_800;
/// RFC 4861 §6.2.1: AdvCurHopLimit is the Assigned Numbers value (RFC 8200 and IANA: 64).
pub const ADV_CUR_HOP_LIMIT: u8 = 64;
/// RFC 4861 §10 router constants.
pub const MAX_INITIAL_RTR_ADVERT_INTERVAL_S: u32 = 16;
pub const MAX_INITIAL_RTR_ADVERTISEMENTS: u32 = 3;
pub const MIN_DELAY_BETWEEN_RAS_MS: u64 = 3_000;
pub const MAX_RA_DELAY_TIME_MS: u64 = 500;

/// One interface's advertisements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaConfig {
    /// The bridge the guest's tap is on: the advertisements go out there, from its
    /// link-local address, and solicitations are answered only from there.
    pub interface: IfName,
    /// Source link-layer address option: the bridge's MAC.
    pub source_mac: MacAddr,
    /// MTU option (the pod interface's).
    pub mtu: u32,
    /// Prefix Information: on-link (L=1), not autonomous (A=0).
    pub prefix: Cidr,
    /// M flag: addresses from DHCPv6.
    pub managed: bool,
    /// O flag: other configuration (DNS) from DHCPv6.
    pub other: bool,
    pub cur_hop_limit: u8,
    pub router_lifetime_s: u16,
    pub reachable_time_ms: u32,
    pub retrans_timer_ms: u32,
    pub valid_lifetime_s: u32,
    pub preferred_lifetime_s: u32,
    /// Unsolicited advertisements every [min, max] seconds, at random.
    pub min_interval_s: u32,
    pub max_interval_s: u32,
}

impl RaConfig {
    /// The advertisement of a masquerade gateway on `bridge` (MAC `mac`) for the guest
    /// prefix `prefix`, with RFC 4861's defaults.
    pub fn masquerade(bridge: IfName, mac: MacAddr, prefix: Cidr, mtu: u32) -> RaConfig {
        RaConfig {
            interface: bridge,
            source_mac: mac,
            mtu,
            prefix: prefix.network(),
            managed: true,
            other: true,
            cur_hop_limit: ADV_CUR_HOP_LIMIT,
            router_lifetime_s: ADV_DEFAULT_LIFETIME_S,
            reachable_time_ms: 0,
            retrans_timer_ms: 0,
            valid_lifetime_s: ADV_VALID_LIFETIME_S,
            preferred_lifetime_s: ADV_PREFERRED_LIFETIME_S,
            min_interval_s: MIN_RTR_ADV_INTERVAL_S,
            max_interval_s: MAX_RTR_ADV_INTERVAL_S,
        }
    }
}
