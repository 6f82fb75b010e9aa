//! DHCPv6 for the masquerade binding with IPv6 (KubeVirt §10): a pure, bounds-checked codec
//! and the answer logic. One address (IA_NA) per server, no lease database.

use std::net::{Ipv6Addr, SocketAddrV6};

use netbind_contract::handoff::Dhcpv6Config;

pub const SERVER_PORT: u16 = 547;
pub const CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

pub mod msg {
    pub const SOLICIT: u8 = 1;
    pub const ADVERTISE: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const CONFIRM: u8 = 4;
    pub const RENEW: u8 = 5;
    pub const REBIND: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const RELEASE: u8 = 8;
    pub const DECLINE: u8 = 9;
    pub const INFORMATION_REQUEST: u8 = 11;
}

pub mod opt {
    pub const CLIENT_ID: u16 = 1;
    pub const SERVER_ID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_ADDR: u16 = 5;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const DNS_SERVERS: u16 = 23;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0} bytes is shorter than the 4-byte header")]
    Short(usize),
    #[error("message type {0} is not a client message (relay messages are not served)")]
    Type(u8),
    #[error("option {code} at offset {at}: length {len} runs past the end")]
    Truncated { code: u16, at: usize, len: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub msg_type: u8,
    pub xid: [u8; 3],
    pub options: Vec<(u16, Vec<u8>)>,
}

impl Message {
    pub fn option(&self, code: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }
}

pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.len() < 4 {
        return Err(ParseError::Short(bytes.len()));
    }
    let msg_type = bytes[0];
    if !matches!(msg_type, 1 | 3..=6 | 8 | 9 | 11) {
        return Err(ParseError::Type(msg_type));
    }
    let mut options = Vec::new();
    let mut pos = 4;
    while pos < bytes.len() {
        let Some(hdr) = bytes.get(pos..pos + 4) else {
            return Err(ParseError::Truncated {
                code: 0,
                at: pos,
                len: 0,
            });
        };
        let code = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        let Some(data) = bytes.get(pos + 4..pos + 4 + len) else {
            return Err(ParseError::Truncated { code, at: pos, len });
        };
        options.push((code, data.to_vec()));
        pos += 4 + len;
    }
    Ok(Message {
        msg_type,
        xid: [bytes[1], bytes[2], bytes[3]],
        options,
    })
}

fn put(out: &mut Vec<u8>, code: u16, data: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(data);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply {
        bytes: Vec<u8>,
        to: SocketAddrV6,
        kind: u8,
    },
    Drop(String),
}

#[derive(Debug, Clone)]
pub struct Server {
    cfg: Dhcpv6Config,
    duid: Vec<u8>,
}

impl Server {
    pub fn new(cfg: Dhcpv6Config) -> Self {
        // DUID-LL (type 3), hardware type 1 (Ethernet), the bridge's MAC.
        let mut duid = vec![0, 3, 0, 1];
        duid.extend_from_slice(&cfg.server_mac.octets());
        Self { cfg, duid }
    }

    pub fn config(&self) -> &Dhcpv6Config {
        &self.cfg
    }

    fn ia_na(&self, req: &Message) -> Vec<u8> {
        // IAID copied from the client's IA_NA (0 if it sent none); T1 = T2 = 0.
        let iaid: [u8; 4] = req
            .option(opt::IA_NA)
            .and_then(|v| v.get(..4))
            .and_then(|s| s.try_into().ok())
            .unwrap_or([0; 4]);
        let mut ia = iaid.to_vec();
        ia.extend_from_slice(&[0; 8]);
        let mut addr = self.cfg.client_ip.octets().to_vec();
        addr.extend_from_slice(&self.cfg.lease_seconds.to_be_bytes());
        addr.extend_from_slice(&self.cfg.lease_seconds.to_be_bytes());
        put(&mut ia, opt::IA_ADDR, &addr);
        ia
    }

    /// Bytes in, reply or drop out. Never panics (fuzzed).
    pub fn handle(&self, datagram: &[u8], src: SocketAddrV6) -> Outcome {
        let req = match parse(datagram) {
            Ok(msg) => msg,
            Err(err) => return Outcome::Drop(format!("malformed: {err}")),
        };
        let client_id = req.option(opt::CLIENT_ID);
        if client_id.is_none() && req.msg_type != msg::INFORMATION_REQUEST {
            return Outcome::Drop("no client identifier".into());
        }
        if let Some(sid) = req.option(opt::SERVER_ID) {
            if req.msg_type == msg::SOLICIT {
                return Outcome::Drop("SOLICIT with a server identifier".into());
            }
            if sid != self.duid.as_slice() {
                return Outcome::Drop("message for another server".into());
            }
        }
        let rapid = req.msg_type == msg::SOLICIT && req.option(opt::RAPID_COMMIT).is_some();
        let (kind, with_ia, status) = match req.msg_type {
            msg::SOLICIT if rapid => (msg::REPLY, true, false),
            msg::SOLICIT => (msg::ADVERTISE, true, false),
            msg::REQUEST | msg::CONFIRM | msg::RENEW | msg::REBIND => (msg::REPLY, true, false),
            msg::RELEASE => (msg::REPLY, false, true),
            msg::INFORMATION_REQUEST => (msg::REPLY, false, false),
            msg::DECLINE => {
                return Outcome::Drop("DECLINE: the client reports its address in use".into());
            }
            other => return Outcome::Drop(format!("message type {other} not served")),
        };
        let mut out = vec![kind, req.xid[0], req.xid[1], req.xid[2]];
        if let Some(cid) = client_id {
            put(&mut out, opt::CLIENT_ID, cid);
        }
        if with_ia {
            put(&mut out, opt::IA_NA, &self.ia_na(&req));
        }
        put(&mut out, opt::SERVER_ID, &self.duid);
        if status {
            // Status Success (0) for a RELEASE (RFC 8415 §18.3.7).
            put(&mut out, opt::STATUS_CODE, &[0, 0]);
        }
        if !self.cfg.dns.is_empty() {
            let dns: Vec<u8> = self.cfg.dns.iter().flat_map(|a| a.octets()).collect();
            put(&mut out, opt::DNS_SERVERS, &dns);
        }
        if rapid {
            put(&mut out, opt::RAPID_COMMIT, &[]);
        }
        let port = if src.port() == 0 {
            CLIENT_PORT
        } else {
            src.port()
        };
        Outcome::Reply {
            bytes: out,
            to: SocketAddrV6::new(*src.ip(), port, 0, src.scope_id()),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbind_contract::{IfName, MacAddr};

    fn server() -> Server {
        Server::new(Dhcpv6Config {
            interface: IfName::new("k6t-eth0").expect("ifname"),
            server_mac: MacAddr([2, 0, 0, 0, 0, 0]),
            client_ip: "fd10:0:2::2".parse().expect("ip"),
            dns: vec!["fd00::a".parse().expect("ip")],
            lease_seconds: 86_313_600,
        })
    }

    fn solicit(extra: &[(u16, &[u8])]) -> Vec<u8> {
        let mut buf = vec![msg::SOLICIT, 1, 2, 3];
        put(
            &mut buf,
            opt::CLIENT_ID,
            &[0, 3, 0, 1, 0x52, 0x54, 0, 1, 2, 3],
        );
        put(&mut buf, opt::IA_NA, &[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
        for (code, data) in extra {
            put(&mut buf, *code, data);
        }
        buf
    }

    fn src() -> SocketAddrV6 {
        SocketAddrV6::new("fe80::1".parse().expect("ip"), 546, 0, 3)
    }

    #[test]
    fn solicit_gets_advertise_and_rapid_commit_gets_reply() {
        let server = server();
        let Outcome::Reply { bytes, to, kind } = server.handle(&solicit(&[]), src()) else {
            panic!()
        };
        assert_eq!(kind, msg::ADVERTISE);
        assert_eq!(to, src());
        let msg = parse(&{
            let mut buf = bytes.clone();
            buf[0] = msg::REQUEST;
            buf
        })
        .expect("parses");
        assert_eq!(&bytes[1..4], &[1, 2, 3]);
        let ia = msg.option(opt::IA_NA).expect("IA_NA");
        assert_eq!(&ia[..4], &[0, 0, 0, 9], "IAID copied");
        assert_eq!(
            &ia[16..32],
            &"fd10:0:2::2".parse::<Ipv6Addr>().expect("ip").octets()
        );
        assert_eq!(
            msg.option(opt::SERVER_ID),
            Some(&[0, 3, 0, 1, 2, 0, 0, 0, 0, 0][..])
        );
        assert_eq!(msg.option(opt::DNS_SERVERS).map(<[u8]>::len), Some(16));
        let Outcome::Reply { kind, bytes, .. } =
            server.handle(&solicit(&[(opt::RAPID_COMMIT, &[])]), src())
        else {
            panic!()
        };
        assert_eq!(kind, msg::REPLY);
        assert!(
            parse(&{
                let mut buf = bytes;
                buf[0] = 1;
                buf
            })
            .expect("parses")
            .option(opt::RAPID_COMMIT)
            .is_some()
        );
    }

    #[test]
    fn requests_and_renewals_get_reply() {
        let server = server();
        for kind in [
            msg::REQUEST,
            msg::RENEW,
            msg::REBIND,
            msg::CONFIRM,
            msg::INFORMATION_REQUEST,
            msg::RELEASE,
        ] {
            let mut buf = solicit(&[(opt::SERVER_ID, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 0])]);
            buf[0] = kind;
            assert!(
                matches!(
                    server.handle(&buf, src()),
                    Outcome::Reply {
                        kind: msg::REPLY,
                        ..
                    }
                ),
                "type {kind}"
            );
        }
    }

    #[test]
    fn drops_what_it_must() {
        let server = server();
        assert!(matches!(server.handle(&[1, 2], src()), Outcome::Drop(_)));
        assert!(
            matches!(
                server.handle(&[12, 0, 0, 0, 0, 9, 0, 4], src()),
                Outcome::Drop(_)
            ),
            "relay-forw"
        );
        assert!(
            matches!(server.handle(&[msg::SOLICIT, 0, 0, 0], src()), Outcome::Drop(ref w) if w.contains("client identifier"))
        );
        let mut for_other_server = solicit(&[]);
        for_other_server[0] = msg::REQUEST;
        put(
            &mut for_other_server,
            opt::SERVER_ID,
            &[0, 3, 0, 1, 9, 9, 9, 9, 9, 9],
        );
        assert!(
            matches!(server.handle(&for_other_server, src()), Outcome::Drop(ref w) if w.contains("another server"))
        );
        let mut truncated = solicit(&[]);
        truncated.extend_from_slice(&[0, 1, 0, 200, 1]);
        assert!(
            matches!(server.handle(&truncated, src()), Outcome::Drop(ref w) if w.contains("runs past"))
        );
        let mut decline = solicit(&[]);
        decline[0] = msg::DECLINE;
        assert!(matches!(server.handle(&decline, src()), Outcome::Drop(_)));
        // Still serving.
        assert!(matches!(
            server.handle(&solicit(&[]), src()),
            Outcome::Reply { .. }
        ));
    }
}
