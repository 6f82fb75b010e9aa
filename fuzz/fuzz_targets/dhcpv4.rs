//! The whole DHCPv4 receive path: guest bytes (and the source address they came from) to a
//! reply or a drop. Must never panic; a reply is always a well-formed BOOTREPLY.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netbind_launcher::dhcp4::server::{Outcome, Server};
use netbind_model::handoff::{Dhcpv4Config, PrivateOption, Route4};

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        Server::new(Dhcpv4Config {
            interface: netbind_model::IfName::new("k6t-eth0").expect("ifname"),
            server_id: Ipv4Addr::new(10, 0, 2, 1),
            client_ip: Ipv4Addr::new(10, 0, 2, 2),
            prefix_len: 24,
            client_mac: None,
            router: Some(Ipv4Addr::new(10, 0, 2, 1)),
            dns: vec![Ipv4Addr::new(10, 96, 0, 10)],
            hostname: "vm".into(),
            domain_name: Some("cluster.local".into()),
            search: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
            mtu: 1500,
            routes: vec![Route4 { dst: Ipv4Addr::UNSPECIFIED, prefix_len: 0, gateway: Ipv4Addr::new(10, 0, 2, 1) }],
            ntp: vec![],
            tftp_server: None,
            boot_file: None,
            private: vec![PrivateOption { code: 240, value: "x".into() }],
            lease_seconds: 86_313_600,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let (src, pkt) = match data {
        [a, b, c, d, rest @ ..] => (SocketAddrV4::new(Ipv4Addr::new(*a, *b, *c, *d), 68), rest),
        _ => (SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), data),
    };
    if let Outcome::Reply { bytes, .. } = server().handle(pkt, src) {
        assert!(bytes.len() >= 300 && bytes[0] == 2 && bytes[236..240] == [0x63, 0x82, 0x53, 0x63]);
    }
});
