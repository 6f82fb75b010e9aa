//! Router advertisements (RFC 4861 §4.2, §6.2) for a masquerade guest: the message built
//! from the plan's [`RaConfig`], the validation of a router solicitation (§6.1.1), and when
//! to send (§6.2.4 initial and periodic advertisements, §6.2.6 answers to solicitations,
//! never two multicast advertisements within MIN_DELAY_BETWEEN_RAS). Pure: the responder
//! binary (`netbind-ra`) does the I/O on a socket phase 1 opened.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use netbind_contract::ra::{
    MAX_INITIAL_RTR_ADVERT_INTERVAL_S, MAX_INITIAL_RTR_ADVERTISEMENTS, MAX_RA_DELAY_TIME_MS,
    MIN_DELAY_BETWEEN_RAS_MS, RaConfig,
};

pub const ICMPV6_ROUTER_SOLICITATION: u8 = 133;
pub const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_PREFIX_INFO: u8 = 3;
const OPT_MTU: u8 = 5;

/// The ICMPv6 Router Advertisement for `c` (checksum left 0: the kernel fills it in for
/// ICMPv6 raw sockets).
pub fn advertisement(config: &RaConfig) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + 8 + 8 + 32);
    buf.extend_from_slice(&[ICMPV6_ROUTER_ADVERTISEMENT, 0, 0, 0, config.cur_hop_limit]);
    buf.push(u8::from(config.managed) << 7 | u8::from(config.other) << 6);
    buf.extend_from_slice(&config.router_lifetime_s.to_be_bytes());
    buf.extend_from_slice(&config.reachable_time_ms.to_be_bytes());
    buf.extend_from_slice(&config.retrans_timer_ms.to_be_bytes());
    buf.extend_from_slice(&[OPT_SOURCE_LLADDR, 1]);
    buf.extend_from_slice(&config.source_mac.0);
    buf.extend_from_slice(&[OPT_MTU, 1, 0, 0]);
    buf.extend_from_slice(&config.mtu.to_be_bytes());
    let IpAddr::V6(prefix) = config.prefix.addr() else {
        return buf;
    };
    // On-link (L), not autonomous (A clear): the guest's address comes from DHCPv6.
    buf.extend_from_slice(&[OPT_PREFIX_INFO, 4, config.prefix.prefix(), 0x80]);
    buf.extend_from_slice(&config.valid_lifetime_s.to_be_bytes());
    buf.extend_from_slice(&config.preferred_lifetime_s.to_be_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&prefix.octets());
    buf
}

/// Why a datagram is not a valid router solicitation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RsError {
    #[error("{0} bytes: shorter than a solicitation (8)")]
    Short(usize),
    #[error("ICMPv6 type {0}, not a router solicitation")]
    Type(u8),
    #[error("ICMPv6 code {0}, not 0")]
    Code(u8),
    #[error("hop limit {0}, not 255: it was forwarded, so it is not from this link")]
    HopLimit(u8),
    #[error("no hop limit with the datagram")]
    NoHopLimit,
    #[error("option at byte {0} has length 0")]
    ZeroLengthOption(usize),
    #[error("option at byte {0} runs past the end")]
    Truncated(usize),
    #[error("source link-layer option from the unspecified address")]
    SllaoFromUnspecified,
}

/// Checks a solicitation as RFC 4861 §6.1.1 requires (the kernel has checked the ICMPv6
/// checksum). `unspecified_source`: it came from `::`.
pub fn check_solicitation(
    msg: &[u8],
    hop_limit: Option<u8>,
    unspecified_source: bool,
) -> Result<(), RsError> {
    if msg.len() < 8 {
        return Err(RsError::Short(msg.len()));
    }
    if msg[0] != ICMPV6_ROUTER_SOLICITATION {
        return Err(RsError::Type(msg[0]));
    }
    if msg[1] != 0 {
        return Err(RsError::Code(msg[1]));
    }
    match hop_limit {
        None => return Err(RsError::NoHopLimit),
        Some(255) => {}
        Some(hops) => return Err(RsError::HopLimit(hops)),
    }
    let mut at = 8;
    while at < msg.len() {
        let (Some(&kind), Some(&len)) = (msg.get(at), msg.get(at + 1)) else {
            return Err(RsError::Truncated(at));
        };
        if len == 0 {
            return Err(RsError::ZeroLengthOption(at));
        }
        let end = at + usize::from(len) * 8;
        if end > msg.len() {
            return Err(RsError::Truncated(at));
        }
        if kind == OPT_SOURCE_LLADDR && unspecified_source {
            return Err(RsError::SllaoFromUnspecified);
        }
        at = end;
    }
    Ok(())
}

/// A small PRNG (xorshift64*), seeded once from the kernel before the syscall filter.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut state = self.0;
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        self.0 = state;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi] milliseconds.
    fn between(&mut self, lo: u64, hi: u64) -> Duration {
        let span = hi.saturating_sub(lo) + 1;
        Duration::from_millis(lo + self.next() % span)
    }
}

/// When to send the next multicast advertisement.
#[derive(Debug, Clone)]
pub struct Schedule {
    min: u64,
    max: u64,
    initial_left: u32,
    next: Instant,
    last_sent: Option<Instant>,
    rng: Rng,
}

impl Schedule {
    /// The first advertisement goes out at once (RFC 4861 §6.2.4: a router's interface
    /// becoming an advertising interface).
    pub fn new(config: &RaConfig, now: Instant, rng: Rng) -> Schedule {
        Schedule {
            min: u64::from(config.min_interval_s) * 1000,
            max: u64::from(config.max_interval_s) * 1000,
            initial_left: MAX_INITIAL_RTR_ADVERTISEMENTS,
            next: now,
            last_sent: None,
            rng,
        }
    }

    /// When the next advertisement is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Time until the next advertisement, from `now`.
    pub fn wait(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }

    /// Never two multicast advertisements closer than MIN_DELAY_BETWEEN_RAS.
    fn not_before(&self) -> Option<Instant> {
        self.last_sent
            .map(|t| t + Duration::from_millis(MIN_DELAY_BETWEEN_RAS_MS))
    }

    /// An advertisement went out at `now`: the next unsolicited one is MinRtrAdvInterval to
    /// MaxRtrAdvInterval away, and at most MAX_INITIAL_RTR_ADVERT_INTERVAL for the first few.
    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        let mut wait = self.rng.between(self.min, self.max);
        if self.initial_left > 0 {
            self.initial_left -= 1;
            if self.initial_left > 0 {
                wait = wait.min(Duration::from_secs(u64::from(
                    MAX_INITIAL_RTR_ADVERT_INTERVAL_S,
                )));
            }
        }
        self.next = now + wait;
    }

    /// Sending failed (the bridge's link-local address may still be tentative): try again
    /// in a second.
    pub fn retry(&mut self, now: Instant) {
        self.next = now + Duration::from_secs(1);
    }

    /// A valid solicitation arrived at `now`: answer with a multicast advertisement after a
    /// random delay of up to MAX_RA_DELAY_TIME, and not within MIN_DELAY_BETWEEN_RAS of the
    /// last one. A flood of solicitations moves nothing once an answer is scheduled.
    pub fn solicited(&mut self, now: Instant) {
        let mut at = now + self.rng.between(0, MAX_RA_DELAY_TIME_MS);
        if let Some(nb) = self.not_before() {
            at = at.max(nb);
        }
        if at < self.next {
            self.next = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbind_contract::{Cidr, IfName, MacAddr};

    fn cfg() -> RaConfig {
        RaConfig::masquerade(
            IfName::new("k6t-eth0").unwrap(),
            MacAddr::MASQUERADE_BRIDGE,
            "fd10:0:2::1/120".parse::<Cidr>().unwrap(),
            1450,
        )
    }

    #[test]
    fn advertisement_bytes() {
        let msg = advertisement(&cfg());
        assert_eq!(msg.len(), 16 + 8 + 8 + 32);
        assert_eq!(&msg[..4], &[134, 0, 0, 0]);
        assert_eq!(msg[4], 64, "cur hop limit");
        assert_eq!(msg[5], 0xc0, "M and O");
        assert_eq!(
            u16::from_be_bytes([msg[6], msg[7]]),
            1800,
            "router lifetime"
        );
        assert_eq!(
            &msg[16..24],
            &[1, 1, 2, 0, 0, 0, 0, 0],
            "source link-layer address"
        );
        assert_eq!(&msg[24..32], &[5, 1, 0, 0, 0, 0, 0x05, 0xaa], "MTU 1450");
        let pio = &msg[32..];
        assert_eq!(
            &pio[..4],
            &[3, 4, 120, 0x80],
            "/120, on-link, not autonomous"
        );
        assert_eq!(u32::from_be_bytes(pio[4..8].try_into().unwrap()), 2_592_000);
        assert_eq!(u32::from_be_bytes(pio[8..12].try_into().unwrap()), 604_800);
        assert_eq!(
            &pio[16..],
            &"fd10:0:2::".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
    }

    #[test]
    fn solicitations_are_checked() {
        let rs = [133, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(check_solicitation(&rs, Some(255), true), Ok(()));
        let mut with_sllao = rs.to_vec();
        with_sllao.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        assert_eq!(check_solicitation(&with_sllao, Some(255), false), Ok(()));
        assert_eq!(
            check_solicitation(&with_sllao, Some(255), true),
            Err(RsError::SllaoFromUnspecified)
        );
        assert_eq!(
            check_solicitation(&rs, Some(64), false),
            Err(RsError::HopLimit(64))
        );
        assert_eq!(
            check_solicitation(&rs, None, false),
            Err(RsError::NoHopLimit)
        );
        assert_eq!(
            check_solicitation(&rs[..7], Some(255), false),
            Err(RsError::Short(7))
        );
        assert_eq!(
            check_solicitation(&[135, 0, 0, 0, 0, 0, 0, 0], Some(255), false),
            Err(RsError::Type(135))
        );
        assert_eq!(
            check_solicitation(&[133, 1, 0, 0, 0, 0, 0, 0], Some(255), false),
            Err(RsError::Code(1))
        );
        let mut zero = rs.to_vec();
        zero.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            check_solicitation(&zero, Some(255), false),
            Err(RsError::ZeroLengthOption(8))
        );
        let mut long = rs.to_vec();
        long.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            check_solicitation(&long, Some(255), false),
            Err(RsError::Truncated(8))
        );
        let mut odd = rs.to_vec();
        odd.push(1);
        assert_eq!(
            check_solicitation(&odd, Some(255), false),
            Err(RsError::Truncated(8))
        );
    }

    #[test]
    fn schedule_follows_rfc_4861() {
        let config = cfg();
        let t0 = Instant::now();
        let mut schedule = Schedule::new(&config, t0, Rng::new(7));
        assert_eq!(schedule.next(), t0, "the first one at once");
        // The initial ones are at most 16 s apart; afterwards 198-600 s.
        let mut now = t0;
        for idx in 0..6 {
            schedule.sent(now);
            let gap = schedule.next() - now;
            if idx < 2 {
                assert!(gap <= Duration::from_secs(16), "initial gap {gap:?}");
            } else {
                assert!(
                    gap >= Duration::from_secs(198) && gap <= Duration::from_secs(600),
                    "periodic gap {gap:?}"
                );
            }
            now = schedule.next();
        }
        // A solicitation is answered within 0.5 s, but never within 3 s of the last one.
        let mut schedule = Schedule::new(&config, t0, Rng::new(9));
        schedule.sent(t0);
        let asked = t0 + Duration::from_secs(10);
        schedule.solicited(asked);
        assert!(schedule.next() >= asked && schedule.next() <= asked + Duration::from_millis(500));
        let answered = schedule.next();
        schedule.sent(answered);
        let again = answered + Duration::from_secs(1);
        schedule.solicited(again);
        assert!(
            schedule.next() >= answered + Duration::from_secs(3),
            "3 s between answers"
        );
        // A flood: a thousand solicitations in the same instant schedule one answer.
        let mut schedule = Schedule::new(&config, t0, Rng::new(11));
        schedule.sent(t0);
        let flood = t0 + Duration::from_millis(100);
        for _ in 0..1000 {
            schedule.solicited(flood);
        }
        assert!(
            schedule.next() >= t0 + Duration::from_secs(3),
            "rate limit: {:?}",
            schedule.next() - t0
        );
        assert!(schedule.next() <= t0 + Duration::from_millis(3500));
    }
}
