//! Attacks on the pod's network configuration: /proc/sys, links, addresses, nftables,
//! ethtool, marks, the tap's MTU, recon (A10–A19, A27, A30, A31).

use super::tap::tun_attach;
use super::*;

pub(super) fn a10(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    let cpath = CString::new("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or_default();
    // SAFETY: open with a NUL-terminated path.
    match check(unsafe { libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) }) {
        Err(err) => Observed::Errno(err),
        Ok(fd) => {
            // SAFETY: fd was just opened; write reads 1 byte.
            let rc = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let result = if rc < 0 {
                Observed::Errno(errno())
            } else {
                ok("floor set to 0")
            };
            // SAFETY: closing the fd we opened.
            unsafe { libc::close(fd) };
            result
        }
    }
}

pub(super) fn a11(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    let mut body = ifinfomsg(0);
    body.extend(rtattr(3, b"nbaudit0\0"));
    body.extend(rtattr(18, &rtattr(1, b"bridge")));
    let result = netlink(libc::NETLINK_ROUTE, RTM_NEWLINK, NLM_F_CREATE_EXCL, &body);
    if result.is_ok() {
        let idx = ifindex("nbaudit0");
        let _ = netlink(libc::NETLINK_ROUTE, RTM_DELLINK, 0, &ifinfomsg(idx));
    }
    obs(result, "bridge nbaudit0 created (and removed)")
}

pub(super) fn a12(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            let mut req = ifreq(&pod.pod_iface);
            ioctl(&s, libc::SIOCGIFMTU, &mut req)?;
            ioctl(&s, libc::SIOCSIFMTU, &mut req)
        }),
        "MTU set (to its current value)",
    )
}

pub(super) fn a13(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            let mut req = ifreq(&pod.pod_iface);
            ioctl(&s, libc::SIOCGIFHWADDR, &mut req)?;
            ioctl(&s, libc::SIOCSIFHWADDR, &mut req)
        }),
        "MAC set (to its current value)",
    )
}

pub(super) fn a14(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            let mut req = ifreq(&pod.pod_iface);
            ioctl(&s, libc::SIOCGIFFLAGS, &mut req)?;
            // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled in.
            let flags = unsafe { req.ifr_ifru.ifru_flags };
            req.ifr_ifru.ifru_flags = flags | libc::IFF_PROMISC as libc::c_short;
            ioctl(&s, libc::SIOCSIFFLAGS, &mut req)?;
            req.ifr_ifru.ifru_flags = flags;
            ioctl(&s, libc::SIOCSIFFLAGS, &mut req)
        }),
        "promiscuous on (and off again)",
    )
}

pub(super) fn a15(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    let mut body = ifinfomsg(ifindex(&pod.tap));
    body.extend(rtattr(10, &ifindex(&pod.bridge).to_ne_bytes()));
    obs(
        netlink(libc::NETLINK_ROUTE, RTM_NEWLINK, 0, &body),
        "master set (to the bridge it is on)",
    )
}

pub(super) fn a16(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    let mut body = vec![libc::AF_INET as u8, 32, 0, 0];
    body.extend_from_slice(&ifindex("lo").to_ne_bytes());
    body.extend(rtattr(2, &[192, 0, 2, 77]));
    body.extend(rtattr(1, &[192, 0, 2, 77]));
    let result = netlink(libc::NETLINK_ROUTE, RTM_NEWADDR, NLM_F_CREATE_EXCL, &body);
    if result.is_ok() {
        let _ = netlink(libc::NETLINK_ROUTE, RTM_DELADDR, 0, &body);
    }
    obs(result, "192.0.2.77 added to lo (and removed)")
}

pub(super) fn a17(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE, nfgenmsg {AF_UNSPEC, v0, 0}.
    obs(
        netlink(
            libc::NETLINK_NETFILTER,
            (10 << 8) | 1,
            NLM_F_DUMP,
            &[0, 0, 0, 0],
        ),
        "nftables tables dumped",
    )
}

pub(super) fn a18(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| {
            let mut cmd: [u32; 2] = [0x16, 0]; // ETHTOOL_GTXCSUM
            let mut req = ifreq(&pod.pod_iface);
            req.ifr_ifru.ifru_data = cmd.as_mut_ptr().cast();
            ioctl(&s, libc::SIOCETHTOOL, &mut req)?;
            let mut set: [u32; 2] = [0x17, cmd[1]]; // ETHTOOL_STXCSUM, the same value
            req.ifr_ifru.ifru_data = set.as_mut_ptr().cast();
            ioctl(&s, libc::SIOCETHTOOL, &mut req)
        }),
        "tx checksum set (to its current value)",
    )
}

pub(super) fn a19(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        tun_attach("nbaudit1", libc::IFF_TAP | libc::IFF_NO_PI),
        "new tap created (gone when closed)",
    )
}

pub(super) fn a27(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        udp().and_then(|s| setopt(&s, libc::SOL_SOCKET, libc::SO_MARK, &int(1))),
        "SO_MARK set",
    )
}

pub(super) fn a30(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    let mut req = ifreq(&pod.tap);
    let mtu = udp()
        .and_then(|s| ioctl(&s, libc::SIOCGIFMTU, &mut req))
        .map(|_| {
            // SAFETY: ifru_mtu is the member SIOCGIFMTU filled in.
            unsafe { req.ifr_ifru.ifru_mtu }
        });
    let mtu = u32::try_from(mtu.unwrap_or(1500)).unwrap_or(1500);
    let mut body = ifinfomsg(ifindex(&pod.tap));
    body.extend(rtattr(4, &mtu.to_ne_bytes()));
    obs(
        netlink(libc::NETLINK_ROUTE, RTM_NEWLINK, 0, &body),
        "tap MTU set (to its current value)",
    )
}

pub(super) fn a31(_pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    obs(
        netlink(libc::NETLINK_ROUTE, RTM_GETLINK, NLM_F_DUMP, &ifinfomsg(0)),
        "links dumped",
    )
}
