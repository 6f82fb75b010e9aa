//! The whole DHCPv6 receive path: guest bytes to a reply or a drop. Must never panic.
#![no_main]

use std::net::SocketAddrV6;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netbind_launcher::dhcp6::{Outcome, Server};
use netbind_model::MacAddr;
use netbind_model::handoff::Dhcpv6Config;

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        Server::new(Dhcpv6Config {
            interface: netbind_model::IfName::new("k6t-eth0").expect("ifname"),
            server_mac: MacAddr([2, 0, 0, 0, 0, 0]),
            client_ip: "fd10:0:2::2".parse().expect("ip"),
            dns: vec!["fd00::a".parse().expect("ip")],
            lease_seconds: 86_313_600,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let src = SocketAddrV6::new("fe80::1".parse().expect("ip"), 546, 0, 2);
    if let Outcome::Reply { bytes, .. } = server().handle(data, src) {
        assert!(bytes.len() >= 4 && (bytes[0] == 2 || bytes[0] == 7));
    }
});
