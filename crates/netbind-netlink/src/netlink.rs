//! A blocking rtnetlink client: one socket, one request at a time, ACK or dump.
//!
//! A netlink socket belongs to the network namespace of the thread that created it, so open
//! it inside the pod netns (see `netns`); it keeps talking to that netns afterwards.

use std::io;
use std::net::IpAddr;

use netbind_model::pod::LinkType;
use netbind_model::{Cidr, MacAddr};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoKind, InfoPortData, InfoPortKind, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// One link as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`.
    pub kind: Option<LinkType>,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub master: Option<u32>,
    pub up: bool,
    /// Bridge-port learning, when the link is a bridge port.
    pub learning: Option<bool>,
    /// tun/tap attributes, when the link is one.
    pub tun: Option<TunInfo>,
    /// `IFLA_GROUP`: netbind marks the links it creates (see `NETBIND_GROUP`).
    pub group: u32,
    /// `IFLA_IFALIAS`: readable by anyone in the namespace, settable only with CAP_NET_ADMIN.
    pub alias: Option<String>,
}

/// The link group of every link netbind creates ("nb"), so that teardown can remove them all
/// with one `RTM_DELLINK`: the kernel then unregisters them as one batch and waits for one
/// RCU grace period instead of one per link (tens of milliseconds each on a busy host).
pub const NETBIND_GROUP: u32 = 0x6e62;

/// `IFLA_TUN_*` as the kernel reports them (an unset owner or group is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunInfo {
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub multi_queue: bool,
    pub persist: bool,
}

fn parse_tun(nlas: &[netlink_packet_route::link::InfoTun]) -> TunInfo {
    use netlink_packet_core::Nla;
    const IFLA_TUN_OWNER: u16 = 1;
    const IFLA_TUN_GROUP: u16 = 2;
    const IFLA_TUN_PERSIST: u16 = 6;
    const IFLA_TUN_MULTI_QUEUE: u16 = 7;
    let mut info = TunInfo::default();
    for attr in nlas {
        let mut buf = vec![0u8; attr.value_len()];
        attr.emit_value(&mut buf);
        let u32v = buf
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes);
        let flag = buf.first().is_some_and(|b| *b != 0);
        match attr.kind() {
            IFLA_TUN_OWNER => info.owner = u32v,
            IFLA_TUN_GROUP => info.group = u32v,
            IFLA_TUN_PERSIST => info.persist = flag,
            IFLA_TUN_MULTI_QUEUE => info.multi_queue = flag,
            _ => {}
        }
    }
    info
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub cidr: Cidr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub oif: u32,
    pub dst: Cidr,
    pub gateway: Option<IpAddr>,
}

/// Attribute changes for `RTM_NEWLINK` on an existing link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    pub name: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// `Some(0)` removes the link from its master.
    pub master: Option<u32>,
    pub up: Option<bool>,
    pub group: Option<u32>,
    /// `IFLA_IFALIAS` (at most 255 bytes; the kernel refuses more).
    pub alias: Option<String>,
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
    dumps: u32,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

fn nl_err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno.abs())
}

impl Netlink {
    /// Opens a route socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Strict checking makes the kernel honour dump filters (e.g. by family).
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Self {
            sock,
            seq: 0,
            dumps: 0,
        })
    }

    /// How many dump requests this socket has sent: what a test reads to hold a caller to one
    /// dump per need.
    pub fn dumps(&self) -> u32 {
        self.dumps
    }

    /// Sends one request and collects the replies until the ACK (or DONE for dumps).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.dumps += u32::from(dump);
        let mut out = Vec::new();
        let mut rx: Vec<u8> = Vec::with_capacity(1 << 16);
        loop {
            rx.clear();
            let got = self.sock.recv(&mut rx, 0)?;
            let mut off = 0usize;
            while off < got {
                let bytes = &rx[off..got];
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(
                    |nl_error| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("netlink reply: {nl_error}"),
                        )
                    },
                )?;
                let len = usize::try_from(reply.header.length).unwrap_or(0);
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink reply of length 0",
                    ));
                }
                off += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(nl_error) => match nl_error.code {
                        Some(code) => return Err(nl_err(code.get())),
                        None if !dump => return Ok(out),
                        None => {}
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, extra: u16) -> io::Result<()> {
        self.request(msg, NLM_F_ACK | extra).map(|_| ())
    }

    /// Sends `msg` with `flags` and keeps what `pick` makes of each reply (a reply it does not
    /// want, or cannot parse, gives `None`).
    fn collect<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        pick: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        Ok(self
            .request(msg, flags)?
            .into_iter()
            .filter_map(pick)
            .collect())
    }

    /// `RTM_GETLINK` with `flags`: the links the kernel answered with.
    fn get_links(&mut self, msg: LinkMessage, flags: u16) -> io::Result<Vec<Link>> {
        self.collect(RouteNetlinkMessage::GetLink(msg), flags, |m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(parse_link(link)),
            _ => None,
        })
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        self.get_links(LinkMessage::default(), NLM_F_DUMP)
    }

    /// The link named `name` (one request, not a dump); `None` when there is none.
    pub fn link_named(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        // With an ACK after the reply: `request` reads until it.
        match self.get_links(msg, NLM_F_ACK) {
            Ok(links) => Ok(links.into_iter().next()),
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub fn addrs(&mut self) -> io::Result<Vec<Addr>> {
        let msg = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        self.collect(msg, NLM_F_DUMP, |m| match m {
            RouteNetlinkMessage::NewAddress(addr) => parse_addr(addr),
            _ => None,
        })
    }

    /// Main-table unicast routes of both families, in one dump: with no family, the kernel
    /// dumps every family's routes (multicast routing tables too, which `parse_route` drops
    /// with everything outside the main table).
    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let msg = RouteNetlinkMessage::GetRoute(RouteMessage::default());
        self.collect(msg, NLM_F_DUMP, |m| match m {
            RouteNetlinkMessage::NewRoute(route) => parse_route(route),
            _ => None,
        })
    }

    /// Creates a link of a kind the kernel makes over rtnetlink (bridge, dummy), already in
    /// netbind's link group.
    pub fn add_link(&mut self, name: &str, kind: InfoKind) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes.push(LinkAttribute::Group(NETBIND_GROUP));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Deletes every link of `group` in one batch.
    pub fn del_group(&mut self, group: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(group));
        match self.ack(RouteNetlinkMessage::DelLink(msg), 0) {
            // No link in that group.
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(msg), 0)
    }

    /// Applies `change` as one message. The kernel applies its parts in a fixed order (MAC,
    /// MTU, group, name, master, then the up/down flag), so a link can be renamed, enslaved
    /// and brought up at once; renaming or changing the MAC still needs it down first.
    pub fn change_link(&mut self, index: u32, change: &LinkChange) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = change.up {
            msg.header.change_mask = LinkFlags::Up;
            msg.header.flags = if up {
                LinkFlags::Up
            } else {
                LinkFlags::empty()
            };
        }
        if let Some(name) = &change.name {
            msg.attributes.push(LinkAttribute::IfName(name.clone()));
        }
        if let Some(mac) = change.mac {
            msg.attributes
                .push(LinkAttribute::Address(mac.octets().to_vec()));
        }
        if let Some(mtu) = change.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = change.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        if let Some(group) = change.group {
            msg.attributes.push(LinkAttribute::Group(group));
        }
        if let Some(alias) = &change.alias {
            msg.attributes.push(LinkAttribute::IfAlias(alias.clone()));
        }
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// `ip link set X type bridge_slave learning on|off`.
    pub fn set_learning(&mut self, index: u32, on: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Learning(on)])),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(msg), 0)
    }

    fn addr_msg(index: u32, cidr: Cidr) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = cidr.prefix();
        msg.header.family = if cidr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.attributes.push(AddressAttribute::Local(cidr.addr()));
        msg.attributes.push(AddressAttribute::Address(cidr.addr()));
        msg
    }

    pub fn add_addr(&mut self, index: u32, cidr: Cidr) -> io::Result<()> {
        self.ack(
            RouteNetlinkMessage::NewAddress(Self::addr_msg(index, cidr)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_addr(&mut self, index: u32, cidr: Cidr) -> io::Result<()> {
        self.ack(
            RouteNetlinkMessage::DelAddress(Self::addr_msg(index, cidr)),
            0,
        )
    }

    /// Adds a main-table route (used to restore the pod's routes on teardown).
    pub fn add_route(&mut self, route: &Route) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        let v4 = route.dst.is_ipv4();
        msg.header.address_family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.header.destination_prefix_length = route.dst.prefix();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if route.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if route.dst.prefix() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    route.dst.network().addr(),
                )));
        }
        if let Some(gw) = route.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(route.oif));
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }
}

fn parse_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: 0,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        learning: None,
        tun: None,
        group: 0,
        alias: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Controller(master) => link.master = Some(master),
            LinkAttribute::Group(group) => link.group = group,
            LinkAttribute::Address(mac) if mac.len() == 6 => {
                let mut buf = [0u8; 6];
                buf.copy_from_slice(&mac);
                link.mac = Some(MacAddr(buf));
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(LinkType::from(kind.to_string())),
                        LinkInfo::Data(netlink_packet_route::link::InfoData::Tun(tun)) => {
                            link.tun = Some(parse_tun(&tun));
                        }
                        LinkInfo::PortData(InfoPortData::BridgePort(ps)) => {
                            for port in ps {
                                if let InfoBridgePort::Learning(on) = port {
                                    link.learning = Some(on);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn parse_addr(msg: AddressMessage) -> Option<Addr> {
    let ip = msg.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = ip.or_else(|| {
        msg.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Some(Addr {
        index: msg.header.index,
        cidr: Cidr::new(ip, msg.header.prefix_len).ok()?,
    })
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn parse_route(msg: RouteMessage) -> Option<Route> {
    if msg.header.table != RouteHeader::RT_TABLE_MAIN || msg.header.kind != RouteType::Unicast {
        return None;
    }
    let v4 = match msg.header.address_family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        // MPLS, multicast routing and any other family a dump of all of them returns.
        _ => return None,
    };
    let mut dst_ip: IpAddr = if v4 {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    let mut oif = None;
    let mut gateway = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(dst) => dst_ip = route_ip(dst)?,
            RouteAttribute::Gateway(gw) => gateway = route_ip(gw),
            RouteAttribute::Oif(oif_index) => oif = Some(*oif_index),
            _ => {}
        }
    }
    Some(Route {
        oif: oif?,
        dst: Cidr::new(dst_ip, msg.header.destination_prefix_length).ok()?,
        gateway,
    })
}
