//! DHCPv4 wire format (RFC 2131, RFC 2132): a pure, bounds-checked parser of guest bytes and an
//! encoder for replies. No sockets here; the fuzz target drives `parse` with arbitrary bytes.

use std::net::Ipv4Addr;

/// Fixed BOOTP header up to and including the magic cookie.
pub const HEADER_LEN: usize = 240;
pub const MAGIC: [u8; 4] = [0x63, 0x82, 0x53, 0x63];
/// RFC 2131 minimum message size: replies are zero-padded to this length (KubeVirt pads to
/// 272 bytes of DHCP payload = 300 bytes of BOOTP message).
pub const MIN_REPLY_LEN: usize = 300;

pub const OP_REQUEST: u8 = 1;
pub const OP_REPLY: u8 = 2;
pub const FLAG_BROADCAST: u16 = 0x8000;

pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const NTP: u8 = 42;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAM_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER: u8 = 66;
    pub const BOOT_FILE: u8 = 67;
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    pub fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// Why a datagram was dropped (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0} bytes is shorter than the 240-byte BOOTP header")]
    Short(usize),
    #[error("op {0} is not BOOTREQUEST")]
    Op(u8),
    #[error("htype {0} is not Ethernet")]
    Htype(u8),
    #[error("hlen {0} is not 6")]
    Hlen(u8),
    #[error("bad magic cookie")]
    Magic,
    #[error("option {code} at offset {at}: length {len} runs past the end of the packet")]
    Truncated { code: u8, at: usize, len: usize },
    #[error("no END option")]
    NoEnd,
    #[error("option 53 (message type) missing")]
    NoType,
    #[error("option 53 has length {0}, not 1")]
    TypeLen(usize),
    #[error("message type {0} is not 1..8")]
    Type(u8),
    #[error("option 52 (overload) value {0} is not 1..3")]
    Overload(u8),
}

/// A parsed DHCPv4 request (the fields the server uses; options kept raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub msg_type: MessageType,
    /// Options in wire order (concatenated per RFC 3396 when repeated), END and PAD removed.
    pub options: Vec<(u8, Vec<u8>)>,
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([bytes[offset], bytes[offset + 1]])
}

fn ip_at(bytes: &[u8], offset: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    )
}

/// Walks one option area; stops at END. `require_end` for the main area only.
fn walk(
    area: &[u8],
    base: usize,
    out: &mut Vec<(u8, Vec<u8>)>,
    require_end: bool,
) -> Result<(), ParseError> {
    let mut pos = 0;
    while pos < area.len() {
        let code = area[pos];
        match code {
            opt::PAD => {
                pos += 1;
                continue;
            }
            opt::END => return Ok(()),
            _ => {}
        }
        let Some(&len) = area.get(pos + 1) else {
            return Err(ParseError::Truncated {
                code,
                at: base + pos,
                len: 0,
            });
        };
        let len = usize::from(len);
        let Some(data) = area.get(pos + 2..pos + 2 + len) else {
            return Err(ParseError::Truncated {
                code,
                at: base + pos,
                len,
            });
        };
        // RFC 3396: a repeated option is the concatenation of its instances.
        match out.iter_mut().find(|(c, _)| *c == code) {
            Some((_, existing)) => existing.extend_from_slice(data),
            None => out.push((code, data.to_vec())),
        }
        pos += 2 + len;
    }
    if require_end {
        Err(ParseError::NoEnd)
    } else {
        Ok(())
    }
}

pub fn parse(bytes: &[u8]) -> Result<Packet, ParseError> {
    if bytes.len() < HEADER_LEN {
        return Err(ParseError::Short(bytes.len()));
    }
    if bytes[0] != OP_REQUEST {
        return Err(ParseError::Op(bytes[0]));
    }
    if bytes[1] != 1 {
        return Err(ParseError::Htype(bytes[1]));
    }
    if bytes[2] != 6 {
        return Err(ParseError::Hlen(bytes[2]));
    }
    if bytes[236..240] != MAGIC {
        return Err(ParseError::Magic);
    }
    let mut options = Vec::new();
    walk(&bytes[HEADER_LEN..], HEADER_LEN, &mut options, true)?;
    // Option overload (52): sname and/or file carry more options.
    if let Some((_, overload)) = options.iter().find(|(c, _)| *c == opt::OVERLOAD) {
        let ov = overload.first().copied().unwrap_or(0);
        if overload.len() != 1 || !(1..=3).contains(&ov) {
            return Err(ParseError::Overload(ov));
        }
        if ov & 1 != 0 {
            walk(&bytes[108..236], 108, &mut options, false)?;
        }
        if ov & 2 != 0 {
            walk(&bytes[44..108], 44, &mut options, false)?;
        }
    }
    let msg_kind = options
        .iter()
        .find(|(c, _)| *c == opt::MESSAGE_TYPE)
        .ok_or(ParseError::NoType)?;
    if msg_kind.1.len() != 1 {
        return Err(ParseError::TypeLen(msg_kind.1.len()));
    }
    let msg_type = MessageType::from_u8(msg_kind.1[0]).ok_or(ParseError::Type(msg_kind.1[0]))?;
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&bytes[28..44]);
    Ok(Packet {
        htype: bytes[1],
        hlen: bytes[2],
        hops: bytes[3],
        xid: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        secs: u16_at(bytes, 8),
        flags: u16_at(bytes, 10),
        ciaddr: ip_at(bytes, 12),
        yiaddr: ip_at(bytes, 16),
        giaddr: ip_at(bytes, 24),
        chaddr,
        msg_type,
        options,
    })
}

impl Packet {
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    pub fn option_ip(&self, code: u8) -> Option<Ipv4Addr> {
        match self.option(code)? {
            [b0, b1, b2, b3] => Some(Ipv4Addr::new(*b0, *b1, *b2, *b3)),
            _ => None,
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        let mut octets = [0u8; 6];
        octets.copy_from_slice(&self.chaddr[..6]);
        octets
    }
}

/// A reply under construction.
#[derive(Debug, Clone)]
pub struct Reply {
    pub msg_type: MessageType,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub hlen: u8,
    pub chaddr: [u8; 16],
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Reply {
    /// `op=2, htype=1, hops=0, secs=0`, then options in insertion order, END, zero padding.
    /// Options longer than 255 bytes are split into consecutive instances (RFC 3396).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN];
        buf[0] = OP_REPLY;
        buf[1] = 1;
        buf[2] = self.hlen;
        buf[4..8].copy_from_slice(&self.xid.to_be_bytes());
        buf[10..12].copy_from_slice(&self.flags.to_be_bytes());
        buf[12..16].copy_from_slice(&self.ciaddr.octets());
        buf[16..20].copy_from_slice(&self.yiaddr.octets());
        buf[24..28].copy_from_slice(&self.giaddr.octets());
        buf[28..44].copy_from_slice(&self.chaddr);
        buf[236..240].copy_from_slice(&MAGIC);
        buf.push(opt::MESSAGE_TYPE);
        buf.push(1);
        buf.push(self.msg_type as u8);
        for (code, data) in &self.options {
            if data.is_empty() {
                buf.extend_from_slice(&[*code, 0]);
            }
            for chunk in data.chunks(255) {
                buf.push(*code);
                buf.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                buf.extend_from_slice(chunk);
            }
        }
        buf.push(opt::END);
        if buf.len() < MIN_REPLY_LEN {
            buf.resize(MIN_REPLY_LEN, 0);
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn request(msg: u8, extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN];
        buf[0] = 1;
        buf[1] = 1;
        buf[2] = 6;
        buf[4..8].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
        buf[28..34].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        buf[236..240].copy_from_slice(&MAGIC);
        buf.extend_from_slice(&[53, 1, msg]);
        for (code, data) in extra {
            buf.push(*code);
            buf.push(u8::try_from(data.len()).expect("test option fits"));
            buf.extend_from_slice(data);
        }
        buf.push(255);
        buf
    }

    #[test]
    fn parses_a_discover() {
        let packet = parse(&request(1, &[(55, &[1, 3, 6])])).expect("valid");
        assert_eq!(packet.msg_type, MessageType::Discover);
        assert_eq!(packet.xid, 0xdead_beef);
        assert_eq!(packet.mac(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(packet.option(55), Some(&[1u8, 3, 6][..]));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse(&[0u8; 10]), Err(ParseError::Short(10)));
        let mut packet = request(1, &[]);
        packet[0] = 2;
        assert_eq!(parse(&packet), Err(ParseError::Op(2)));
        let mut packet = request(1, &[]);
        packet[2] = 16;
        assert_eq!(parse(&packet), Err(ParseError::Hlen(16)));
        let mut packet = request(1, &[]);
        packet[236] = 0;
        assert_eq!(parse(&packet), Err(ParseError::Magic));
        let mut packet = request(1, &[]);
        packet.pop();
        assert_eq!(parse(&packet), Err(ParseError::NoEnd));
        let mut packet = request(1, &[]);
        packet.pop();
        packet.extend_from_slice(&[12, 200, b'x']);
        assert!(matches!(
            parse(&packet),
            Err(ParseError::Truncated {
                code: 12,
                len: 200,
                ..
            })
        ));
        assert_eq!(parse(&request(9, &[])), Err(ParseError::Type(9)));
        let mut packet = vec![0u8; HEADER_LEN];
        packet[0] = 1;
        packet[1] = 1;
        packet[2] = 6;
        packet[236..240].copy_from_slice(&MAGIC);
        packet.extend_from_slice(&[53, 0, 255]);
        assert_eq!(parse(&packet), Err(ParseError::TypeLen(0)));
    }

    #[test]
    fn overload_reads_file_and_sname() {
        let mut packet = request(3, &[(52, &[3])]);
        packet[108] = 50;
        packet[109] = 4;
        packet[110..114].copy_from_slice(&[10, 0, 2, 2]);
        packet[114] = 255;
        packet[44] = 12;
        packet[45] = 2;
        packet[46..48].copy_from_slice(b"vm");
        packet[48] = 255;
        let parsed = parse(&packet).expect("overloaded");
        assert_eq!(parsed.option_ip(50), Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(parsed.option(12), Some(&b"vm"[..]));
        assert_eq!(
            parse(&request(3, &[(52, &[7])])),
            Err(ParseError::Overload(7))
        );
    }

    #[test]
    fn repeated_options_concatenate() {
        let packet = parse(&request(1, &[(119, b"ab"), (119, b"cd")])).expect("valid");
        assert_eq!(packet.option(119), Some(&b"abcd"[..]));
    }

    #[test]
    fn encode_pads_and_splits_long_options() {
        let reply = Reply {
            msg_type: MessageType::Offer,
            xid: 7,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 2, 2),
            giaddr: Ipv4Addr::UNSPECIFIED,
            hlen: 6,
            chaddr: [0; 16],
            options: vec![(121, vec![1u8; 300])],
        };
        let bytes = reply.encode();
        assert!(bytes.len() >= MIN_REPLY_LEN);
        assert_eq!(&bytes[240..243], &[53, 1, 2]);
        assert_eq!(&bytes[243..245], &[121, 255]);
        assert_eq!(&bytes[500..502], &[121, 45]);
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[16..20], &[10, 0, 2, 2]);
    }
}
