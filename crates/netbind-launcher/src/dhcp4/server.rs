//! The DHCPv4 answer logic (KubeVirt §9, with RFC 2131 behaviour where KubeVirt deviates):
//! one client address per server, no lease database, pure bytes-in / bytes-out.

use std::net::{Ipv4Addr, SocketAddrV4};

use netbind_contract::handoff::Dhcpv4Config;

use super::codec::{self, FLAG_BROADCAST, MessageType, Packet, Reply, opt};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// What to do with one received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply {
        bytes: Vec<u8>,
        to: SocketAddrV4,
        kind: MessageType,
    },
    Drop(String),
}

#[derive(Debug, Clone)]
pub struct Server {
    cfg: Dhcpv4Config,
    /// The configured options (§9.3), encoded once at start, in a fixed order.
    options: Vec<(u8, Vec<u8>)>,
}

fn ips(addrs: &[Ipv4Addr]) -> Vec<u8> {
    addrs.iter().flat_map(|a| a.octets()).collect()
}

/// RFC 3442: per route `width, ceil(width/8) destination octets, gateway`.
pub fn encode_routes(cfg: &Dhcpv4Config) -> Vec<u8> {
    let mut out = Vec::new();
    for route in &cfg.routes {
        let width = route.prefix_len.min(32);
        out.push(width);
        out.extend_from_slice(&route.dst.octets()[..usize::from(width.div_ceil(8))]);
        out.extend_from_slice(&route.gateway.octets());
    }
    out
}

fn mask(prefix: u8) -> [u8; 4] {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
        .to_be_bytes()
}

impl Server {
    pub fn new(cfg: Dhcpv4Config) -> Self {
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        options.push((opt::SUBNET_MASK, mask(cfg.prefix_len).to_vec()));
        if let Some(router) = cfg.router {
            options.push((opt::ROUTER, router.octets().to_vec()));
        }
        // Sent even when empty (only IPv6 servers in resolv.conf), as KubeVirt does.
        options.push((opt::DNS, ips(&cfg.dns)));
        if !cfg.hostname.is_empty() {
            options.push((opt::HOSTNAME, cfg.hostname.as_bytes().to_vec()));
        }
        if let Some(domain) = cfg
            .domain_name
            .as_deref()
            .filter(|domain| !domain.is_empty())
        {
            options.push((opt::DOMAIN_NAME, domain.as_bytes().to_vec()));
        }
        options.push((opt::MTU, cfg.mtu.to_be_bytes().to_vec()));
        if !cfg.ntp.is_empty() {
            options.push((opt::NTP, ips(&cfg.ntp)));
        }
        if let Some(tftp) = &cfg.tftp_server {
            options.push((opt::TFTP_SERVER, tftp.as_bytes().to_vec()));
        }
        if let Some(file) = &cfg.boot_file {
            options.push((opt::BOOT_FILE, file.as_bytes().to_vec()));
        }
        if !cfg.search.is_empty() {
            options.push((
                opt::DOMAIN_SEARCH,
                netbind_contract::dns::encode_search(&cfg.search),
            ));
        }
        let routes = encode_routes(&cfg);
        if !routes.is_empty() {
            options.push((opt::CLASSLESS_ROUTES, routes));
        }
        for private in &cfg.private {
            options.push((private.code, private.value.as_bytes().to_vec()));
        }
        Self { cfg, options }
    }

    pub fn config(&self) -> &Dhcpv4Config {
        &self.cfg
    }

    fn reply(&self, req: &Packet, kind: MessageType) -> Reply {
        let mut options = vec![(opt::SERVER_ID, self.cfg.server_id.octets().to_vec())];
        let (yiaddr, ciaddr) = match kind {
            MessageType::Offer | MessageType::Ack if req.msg_type != MessageType::Inform => {
                options.push((
                    opt::LEASE_TIME,
                    self.cfg.lease_seconds.to_be_bytes().to_vec(),
                ));
                options.extend(self.options.iter().cloned());
                (self.cfg.client_ip, Ipv4Addr::UNSPECIFIED)
            }
            // RFC 2131 §4.3.5: an INFORM is answered without address or lease time.
            MessageType::Ack => {
                options.extend(self.options.iter().cloned());
                (Ipv4Addr::UNSPECIFIED, req.ciaddr)
            }
            _ => {
                options.push((opt::MESSAGE, b"requested address is not yours".to_vec()));
                (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
            }
        };
        Reply {
            msg_type: kind,
            xid: req.xid,
            flags: req.flags,
            ciaddr,
            yiaddr,
            giaddr: req.giaddr,
            hlen: req.hlen,
            chaddr: req.chaddr,
            options,
        }
    }

    /// RFC 2131 §4.1 destinations, except that a client without an address always gets a
    /// broadcast: a unicast to it would need an ARP entry, i.e. CAP_NET_ADMIN.
    fn destination(req: &Packet, kind: MessageType, src: SocketAddrV4) -> SocketAddrV4 {
        let port = if src.port() == 0 {
            CLIENT_PORT
        } else {
            src.port()
        };
        if !req.giaddr.is_unspecified() {
            return SocketAddrV4::new(req.giaddr, SERVER_PORT);
        }
        let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, port);
        if kind == MessageType::Nak || req.flags & FLAG_BROADCAST != 0 {
            return broadcast;
        }
        if !req.ciaddr.is_unspecified() {
            return SocketAddrV4::new(req.ciaddr, port);
        }
        if src.ip().is_unspecified() {
            return broadcast;
        }
        SocketAddrV4::new(*src.ip(), port)
    }

    /// Bytes in, reply or drop out. Never panics (fuzzed).
    pub fn handle(&self, datagram: &[u8], src: SocketAddrV4) -> Outcome {
        let req = match codec::parse(datagram) {
            Ok(packet) => packet,
            Err(err) => return Outcome::Drop(format!("malformed: {err}")),
        };
        if let Some(mac) = self.cfg.client_mac
            && req.mac() != mac.octets()
        {
            return Outcome::Drop("not our client (hardware address differs)".into());
        }
        let kind = match req.msg_type {
            MessageType::Discover => MessageType::Offer,
            MessageType::Request => {
                if let Some(sid) = req.option_ip(opt::SERVER_ID)
                    && sid != self.cfg.server_id
                {
                    return Outcome::Drop(format!("REQUEST for server {sid}"));
                }
                let wanted = req
                    .option_ip(opt::REQUESTED_IP)
                    .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr));
                // KubeVirt ACKs any REQUEST; RFC 2131 says NAK an address that is not the
                // client's (e.g. the old pod IP after a restart, KubeVirt issue #13601).
                match wanted {
                    Some(ip) if ip != self.cfg.client_ip => MessageType::Nak,
                    _ => MessageType::Ack,
                }
            }
            MessageType::Inform => MessageType::Ack,
            MessageType::Decline => {
                let ip = req
                    .option_ip(opt::REQUESTED_IP)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                return Outcome::Drop(format!("DECLINE: the client reports {ip} already in use"));
            }
            MessageType::Release => return Outcome::Drop(format!("RELEASE of {}", req.ciaddr)),
            other => return Outcome::Drop(format!("{other:?} is not a client message")),
        };
        let reply = self.reply(&req, kind);
        Outcome::Reply {
            bytes: reply.encode(),
            to: Self::destination(&req, kind, src),
            kind,
        }
    }
}

#[cfg(test)]
mod tests;
