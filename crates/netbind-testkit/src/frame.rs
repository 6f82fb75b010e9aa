//! Frames as a guest's NIC puts them on the wire, written into a tap the way QEMU writes
//! them: what a hostile guest can send, byte for byte, with no kernel in between to refuse a
//! forged source.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

pub type Mac = [u8; 6];

pub const ETH_IP: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IP6: u16 = 0x86dd;

pub fn ether(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(14 + payload.len());
    buf.extend_from_slice(&dst);
    buf.extend_from_slice(&src);
    buf.extend_from_slice(&ethertype.to_be_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts`, each of even length
/// except possibly the last.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let bytes = parts
        .iter()
        .flat_map(|p| p.iter().copied())
        .collect::<Vec<u8>>();
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

fn udp_header(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("small datagram");
    let mut buf = Vec::with_capacity(usize::from(len));
    buf.extend_from_slice(&sport.to_be_bytes());
    buf.extend_from_slice(&dport.to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(payload);
    buf
}

/// An IPv4 packet carrying one UDP datagram (TTL 64, checksums filled in).
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = udp_header(sport, dport, payload);
    let ulen = u16::try_from(udp.len()).expect("small datagram");
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &[0, 17],
        &ulen.to_be_bytes()[..],
    ]
    .concat();
    let sum = checksum(&[&pseudo, &udp]);
    udp[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
    let total = 20 + ulen;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&udp);
    ip
}

/// An IPv6 packet carrying one UDP datagram (hop limit 64, checksum filled in).
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = udp_header(sport, dport, payload);
    let ulen = u32::try_from(udp.len()).expect("small datagram");
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &ulen.to_be_bytes()[..],
        &[0, 0, 0, 17],
    ]
    .concat();
    let sum = checksum(&[&pseudo, &udp]);
    udp[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&u16::try_from(ulen).expect("small").to_be_bytes());
    ip.extend_from_slice(&[17, 64]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&udp);
    ip
}

/// An ARP request "who has `tpa`? tell `spa` (at `sha`)": a neighbour that owns `tpa` learns
/// `spa` is at `sha` from it.
pub fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&sha);
    arp.extend_from_slice(&spa.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&tpa.octets());
    arp
}

/// The guest's end of a tap: frames written here enter the pod's bridge from the tap, as
/// QEMU's do.
#[derive(Debug)]
pub struct Tap(File);

impl Tap {
    /// Attaches to the existing single-queue tap `name` of `/run/netns/NETNS` (as root, which
    /// may attach whatever the tap's owner).
    pub fn attach(netns: &str, name: &str) -> Tap {
        let fd = crate::in_netns(netns, || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .expect("open /dev/net/tun");
            // SAFETY: an all-zero ifreq is a valid value; the name is copied below, NUL-kept.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
                *dst = src as libc::c_char;
            }
            ifr.ifr_ifru.ifru_flags =
                libc::c_short::try_from(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_ONE_QUEUE)
                    .expect("tap flags fit ifr_flags");
            // SAFETY: TUNSETIFF with a valid ifreq on the tun fd.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
            assert_eq!(
                rc,
                0,
                "TUNSETIFF {name}: {}",
                std::io::Error::last_os_error()
            );
            file
        });
        Tap(fd)
    }

    pub fn send(&mut self, frame: &[u8]) {
        self.0.write_all(frame).expect("write a frame into the tap");
    }
}
