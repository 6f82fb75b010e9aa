//! Attacks with packets: sniffing and forging on the pod segment, raw and ping sockets,
//! source forgery, rogue DHCP (A1–A9).

use super::*;

/// Ethernet-less IPv4/UDP datagram 67 → 68 to the limited broadcast, for an AF_PACKET dgram
/// socket (the kernel adds the Ethernet header).
pub(super) fn dhcp_frame(src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(0).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&[255, 255, 255, 255]);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !u16::try_from(sum).unwrap_or(0);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let mut frame = ip;
    frame.extend_from_slice(&67u16.to_be_bytes());
    frame.extend_from_slice(&68u16.to_be_bytes());
    frame.extend_from_slice(&u16::try_from(udp_len).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

pub(super) fn packet_send(ifname: &str, proto: u16, payload: &[u8]) -> Result<(), i32> {
    let fd = sock(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(htons(proto)))?;
    // SAFETY: sockaddr_ll is plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = htons(proto);
    sll.sll_ifindex = i32::try_from(ifindex(ifname)).unwrap_or(0);
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: sendto reads the payload and the sockaddr_ll for their sizes.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            std::ptr::from_ref(&sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

pub(super) fn udp_broadcast_via(fd: RawFd, ifname: &str, payload: &[u8]) -> Result<(), i32> {
    // SAFETY: plain data structures for sendmsg, all alive for the call.
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = htons(68);
        sa.sin_addr.s_addr = u32::MAX;
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut cbuf = [0u8; 64];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = std::ptr::from_mut(&mut sa).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IP;
        (*cmsg).cmsg_type = libc::IP_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as _;
        let pi = libc::in_pktinfo {
            ipi_ifindex: i32::try_from(ifindex(ifname)).unwrap_or(0),
            ipi_spec_dst: libc::in_addr { s_addr: 0 },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(&pi).cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            std::mem::size_of::<libc::in_pktinfo>(),
        );
        if libc::sendmsg(fd, &msg, 0) < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }
}

pub(super) fn a1(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        sock(libc::AF_PACKET, libc::SOCK_RAW, i32::from(htons(0x0003))).map(|_| ()),
        "packet socket",
    )
}

pub(super) fn a2(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    let mac = mac_of(&pod.pod_iface);
    let ip = pod.pod_ip.octets();
    // ARP reply: the pod's own address at its own MAC (harmless if it goes out).
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&ip);
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&ip);
    obs(
        packet_send(&pod.pod_iface, 0x0806, &arp),
        "gratuitous ARP sent",
    )
}

pub(super) fn a3(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        sock(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW).map(|_| ()),
        "raw socket",
    )
}

pub(super) fn a4(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        sock(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6).map(|_| ()),
        "raw ICMPv6 socket",
    )
}

pub(super) fn a5(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        sock(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP).map(|_| ()),
        "ping socket",
    )
}

pub(super) fn a6(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| setopt(&s, libc::SOL_IP, libc::IP_TRANSPARENT, &int(1))),
        "IP_TRANSPARENT set",
    )
}

pub(super) fn a7(_pod: &PodUnderTest, pre: &Pre, _id: &str) -> Observed {
    match pre.fds.first() {
        Some(fd) => obs(
            setopt(fd, libc::SOL_IPV6, libc::IPV6_FREEBIND, &int(1)),
            "IPV6_FREEBIND set: any source address",
        ),
        None => Observed::Errno(libc::EAFNOSUPPORT),
    }
}

pub(super) fn a8(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            setopt(
                &s,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                pod.pod_iface.as_bytes(),
            )?;
            setopt(
                &s,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                pod.bridge.as_bytes(),
            )
        }),
        "re-bound",
    )
}

pub(super) fn a9(pod: &PodUnderTest, pre: &Pre, _id: &str) -> Observed {
    let payload = pod.marker.as_bytes();
    match packet_send(&pod.pod_iface, 0x0800, &dhcp_frame(pod.pod_ip, payload)) {
        Ok(()) => ok("sent through a packet socket"),
        Err(_) => {
            // Every source port that could send: one success is enough to try.
            let mut sent = Vec::new();
            let mut last = libc::EACCES;
            for (fd, port) in pre.fds.iter().zip(&pre.ports) {
                match udp_broadcast_via(fd.as_raw_fd(), &pod.pod_iface, payload) {
                    Ok(()) => sent.push(format!(":{port}")),
                    Err(err) => last = err,
                }
            }
            if sent.is_empty() {
                Observed::Errno(last)
            } else {
                ok(&format!("sent from UDP {} on eth0", sent.join(", ")))
            }
        }
    }
}
