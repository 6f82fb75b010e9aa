use std::net::{Ipv4Addr, SocketAddrV4};

use netbind_contract::MacAddr;
use netbind_contract::handoff::{Dhcpv4Config, PrivateOption, Route4};

use super::*;
use crate::dhcp4::codec::{HEADER_LEN, MAGIC, parse};

const MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0, 5];

fn cfg() -> Dhcpv4Config {
    Dhcpv4Config {
        interface: netbind_contract::IfName::new("k6t-eth0").expect("ifname"),
        server_id: Ipv4Addr::new(169, 254, 75, 10),
        client_ip: Ipv4Addr::new(10, 244, 0, 5),
        prefix_len: 24,
        client_mac: Some(MacAddr(MAC)),
        router: Some(Ipv4Addr::new(10, 244, 0, 1)),
        dns: vec![Ipv4Addr::new(10, 96, 0, 10)],
        hostname: "vmi".into(),
        domain_name: Some("default.svc.cluster.local".into()),
        search: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
        mtu: 1450,
        routes: vec![
            Route4 {
                dst: Ipv4Addr::new(10, 96, 0, 0),
                prefix_len: 12,
                gateway: Ipv4Addr::new(10, 244, 0, 1),
            },
            Route4 {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Ipv4Addr::new(10, 244, 0, 1),
            },
        ],
        ntp: vec![Ipv4Addr::new(10, 0, 0, 1)],
        tftp_server: Some("tftp".into()),
        boot_file: Some("pxe".into()),
        private: vec![PrivateOption {
            code: 240,
            value: "x".into(),
        }],
        lease_seconds: 86_313_600,
    }
}

/// A client message: type, ciaddr, flags, options.
fn msg(byte: u8, ciaddr: [u8; 4], flags: u16, mac: [u8; 6], extra: &[(u8, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN];
    buf[0] = 1;
    buf[1] = 1;
    buf[2] = 6;
    buf[4..8].copy_from_slice(&42u32.to_be_bytes());
    buf[10..12].copy_from_slice(&flags.to_be_bytes());
    buf[12..16].copy_from_slice(&ciaddr);
    buf[28..34].copy_from_slice(&mac);
    buf[236..240].copy_from_slice(&MAGIC);
    buf.extend_from_slice(&[53, 1, byte]);
    for (code, data) in extra {
        buf.push(*code);
        buf.push(u8::try_from(data.len()).expect("short"));
        buf.extend_from_slice(data);
    }
    buf.push(255);
    buf
}

fn from_nothing() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)
}

/// Parses a reply's options (the codec's parser wants op=1; flip it for inspection).
fn reply_options(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut buf = bytes.to_vec();
    buf[0] = 1;
    let msg_type = buf[242];
    buf[242] = if msg_type == 2 || msg_type == 5 || msg_type == 6 {
        1
    } else {
        msg_type
    };
    parse(&buf).expect("reply parses").options
}

#[test]
fn discover_gets_offer_with_every_option_in_order() {
    let server = Server::new(cfg());
    let Outcome::Reply { bytes, to, kind } =
        server.handle(&msg(1, [0; 4], 0, MAC, &[]), from_nothing())
    else {
        panic!("no reply")
    };
    assert_eq!(kind, MessageType::Offer);
    assert_eq!(to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(&bytes[16..20], &[10, 244, 0, 5], "yiaddr");
    assert!(bytes.len() >= 300);
    let codes: Vec<u8> = reply_options(&bytes).iter().map(|(c, _)| *c).collect();
    assert_eq!(
        codes,
        vec![53, 54, 51, 1, 3, 6, 12, 15, 26, 42, 66, 67, 119, 121, 240]
    );
    let options = reply_options(&bytes);
    let get = |c: u8| {
        options
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.clone())
            .expect("option")
    };
    assert_eq!(get(54), vec![169, 254, 75, 10]);
    assert_eq!(
        get(51),
        vec![0x05, 0x25, 0x0a, 0x80],
        "KubeVirt's 86313600 s"
    );
    assert_eq!(get(1), vec![255, 255, 255, 0]);
    assert_eq!(get(3), vec![10, 244, 0, 1]);
    assert_eq!(get(26), 1450u16.to_be_bytes().to_vec());
    assert_eq!(get(12), b"vmi".to_vec());
    assert_eq!(
        &get(119)[..9],
        &[7, b'd', b'e', b'f', b'a', b'u', b'l', b't', 3]
    );
    // 10.96.0.0/12 via 10.244.0.1, then the default route last.
    assert_eq!(get(121), vec![12, 10, 96, 10, 244, 0, 1, 0, 10, 244, 0, 1]);
}

#[test]
fn request_for_own_address_is_acked_and_other_is_naked() {
    let server = Server::new(cfg());
    let ok = server.handle(
        &msg(
            3,
            [0; 4],
            0,
            MAC,
            &[(50, &[10, 244, 0, 5]), (54, &[169, 254, 75, 10])],
        ),
        from_nothing(),
    );
    assert!(
        matches!(
            ok,
            Outcome::Reply {
                kind: MessageType::Ack,
                ..
            }
        ),
        "{ok:?}"
    );
    // A guest asking for its old address (pod IP changed): NAK, broadcast (KubeVirt ACKs).
    let nak = server.handle(
        &msg(3, [0; 4], 0, MAC, &[(50, &[10, 244, 0, 99])]),
        from_nothing(),
    );
    let Outcome::Reply { bytes, to, kind } = nak else {
        panic!("no NAK")
    };
    assert_eq!(kind, MessageType::Nak);
    assert_eq!(to.ip(), &Ipv4Addr::BROADCAST);
    assert_eq!(&bytes[16..20], &[0, 0, 0, 0], "a NAK carries no address");
    // RENEW (ciaddr, unicast) of a wrong address: NAK too.
    let renew = server.handle(
        &msg(3, [10, 244, 0, 7], 0, MAC, &[]),
        SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 7), 68),
    );
    assert!(matches!(
        renew,
        Outcome::Reply {
            kind: MessageType::Nak,
            ..
        }
    ));
    // RENEW of the right address: ACK, unicast back to the client.
    let renew = server.handle(
        &msg(3, [10, 244, 0, 5], 0, MAC, &[]),
        SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 68),
    );
    let Outcome::Reply { to, kind, .. } = renew else {
        panic!()
    };
    assert_eq!(
        (kind, to),
        (
            MessageType::Ack,
            SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 68)
        )
    );
}

#[test]
fn request_to_another_server_is_ignored() {
    let server = Server::new(cfg());
    let outcome = server.handle(
        &msg(
            3,
            [0; 4],
            0,
            MAC,
            &[(50, &[10, 244, 0, 5]), (54, &[10, 0, 0, 9])],
        ),
        from_nothing(),
    );
    assert!(
        matches!(outcome, Outcome::Drop(ref why) if why.contains("REQUEST for server 10.0.0.9")),
        "{outcome:?}"
    );
}

#[test]
fn bridge_binding_filters_by_client_mac_masquerade_does_not() {
    let other = [0x52, 0x54, 0, 1, 2, 3];
    let server = Server::new(cfg());
    assert!(matches!(
        server.handle(&msg(1, [0; 4], 0, other, &[]), from_nothing()),
        Outcome::Drop(_)
    ));
    let mut config = cfg();
    config.client_mac = None;
    let server = Server::new(config);
    assert!(matches!(
        server.handle(&msg(1, [0; 4], 0, other, &[]), from_nothing()),
        Outcome::Reply { .. }
    ));
}

#[test]
fn release_decline_inform() {
    let server = Server::new(cfg());
    assert!(
        matches!(server.handle(&msg(7, [10, 244, 0, 5], 0, MAC, &[]), from_nothing()), Outcome::Drop(ref w) if w.starts_with("RELEASE"))
    );
    assert!(
        matches!(server.handle(&msg(4, [0; 4], 0, MAC, &[(50, &[10, 244, 0, 5])]), from_nothing()), Outcome::Drop(ref w) if w.starts_with("DECLINE"))
    );
    let src = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 68);
    let Outcome::Reply { bytes, to, kind } =
        server.handle(&msg(8, [10, 244, 0, 5], 0, MAC, &[]), src)
    else {
        panic!()
    };
    assert_eq!((kind, to), (MessageType::Ack, src));
    assert_eq!(&bytes[16..20], &[0, 0, 0, 0], "INFORM: no yiaddr");
    assert!(
        !reply_options(&bytes).iter().any(|(c, _)| *c == 51),
        "INFORM: no lease time"
    );
}

#[test]
fn broadcast_flag_and_relay_destinations() {
    let server = Server::new(cfg());
    let Outcome::Reply { to, .. } = server.handle(
        &msg(1, [0; 4], 0x8000, MAC, &[]),
        SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 68),
    ) else {
        panic!()
    };
    assert_eq!(to.ip(), &Ipv4Addr::BROADCAST);
    let mut relayed = msg(1, [0; 4], 0, MAC, &[]);
    relayed[24..28].copy_from_slice(&[10, 1, 2, 3]);
    let Outcome::Reply { to, bytes, .. } =
        server.handle(&relayed, SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 67))
    else {
        panic!()
    };
    assert_eq!(to, SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 67));
    assert_eq!(&bytes[24..28], &[10, 1, 2, 3], "giaddr copied");
}

/// The malformed-packet corpus of the regular tests: each is dropped, and the server still
/// answers a good DISCOVER afterwards.
#[test]
fn malformed_corpus_is_dropped_and_serving_continues() {
    let server = Server::new(cfg());
    let good = msg(1, [0; 4], 0, MAC, &[]);
    let mut corpus: Vec<Vec<u8>> = vec![
        vec![],
        vec![0u8; 1],
        good[..239].to_vec(),
        good[..240].to_vec(),
        msg(1, [0; 4], 0, MAC, &[(12, &[])]),
    ];
    let mut zero_type = good.clone();
    zero_type[241] = 0; // option 53 with length 0
    corpus.push(zero_type);
    let mut overlong = good.clone();
    overlong.truncate(243);
    overlong.extend_from_slice(&[12, 255, b'a']); // option longer than the packet
    corpus.push(overlong);
    let mut bad_op = good.clone();
    bad_op[0] = 2;
    corpus.push(bad_op);
    let mut bad_htype = good.clone();
    bad_htype[1] = 6;
    corpus.push(bad_htype);
    let mut bad_hlen = good.clone();
    bad_hlen[2] = 17;
    corpus.push(bad_hlen);
    corpus.push(msg(1, [0; 4], 0, MAC, &[(52, &[3])])); // overload with empty sname/file
    corpus.push(msg(1, [0; 4], 0, MAC, &[(52, &[9])])); // invalid overload value
    let mut ovl_trunc = msg(1, [0; 4], 0, MAC, &[(52, &[1])]);
    ovl_trunc[108] = 12;
    ovl_trunc[109] = 200; // option in `file` runs past its field
    corpus.push(ovl_trunc);
    corpus.push(msg(0, [0; 4], 0, MAC, &[]));
    corpus.push(msg(200, [0; 4], 0, MAC, &[]));
    corpus.push(msg(3, [0; 4], 0, MAC, &[(50, &[10, 244])])); // short requested IP
    let mut no_end = good.clone();
    no_end.pop();
    corpus.push(no_end);
    let mut bad_magic = good.clone();
    bad_magic[239] = 0;
    corpus.push(bad_magic);
    corpus.push(vec![0xff; 1500]);
    for (idx, packet) in corpus.iter().enumerate() {
        let outcome = server.handle(packet, from_nothing());
        // A short option 50 is not an address: the REQUEST is ACKed like one without it.
        if idx == 15 {
            assert!(
                matches!(
                    outcome,
                    Outcome::Reply {
                        kind: MessageType::Ack,
                        ..
                    }
                ),
                "{idx}: {outcome:?}"
            );
            continue;
        }
        if idx == 4 || idx == 10 {
            // Zero-length hostname and an overload with empty areas are legal.
            assert!(
                matches!(outcome, Outcome::Reply { .. }),
                "{idx}: {outcome:?}"
            );
            continue;
        }
        assert!(
            matches!(outcome, Outcome::Drop(_)),
            "corpus {idx} must be dropped: {outcome:?}"
        );
        assert!(
            matches!(server.handle(&good, from_nothing()), Outcome::Reply { .. }),
            "serving after {idx}"
        );
    }
}
