//! Reads the pod netns into the `ObservedPod` format the planner takes (POD.json).

use netbind_model::IfName;
use netbind_model::pod::{ObservedPod, POD_FORMAT_VERSION, PodInterface, PodRoute};

use crate::netlink::{Addr, Link, Netlink};

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("netlink dump of {what}: {source}")]
    Dump {
        what: &'static str,
        source: std::io::Error,
    },
}

pub fn observe(nl: &mut Netlink) -> Result<ObservedPod, ObserveError> {
    Ok(observe_with_dumps(nl)?.0)
}

/// The link and address dumps an observation was made from, with the kernel details
/// `ObservedPod` leaves out (the master's ifindex, tun attributes, group, the loopback).
#[derive(Debug, Clone)]
pub struct Dumps {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
}

/// `observe`, and the dumps it was made from, so that a setup that goes on to change the
/// namespace starts from them instead of dumping again.
pub fn observe_with_dumps(nl: &mut Netlink) -> Result<(ObservedPod, Dumps), ObserveError> {
    let links = nl.links().map_err(|source| ObserveError::Dump {
        what: "links",
        source,
    })?;
    let addrs = nl.addrs().map_err(|source| ObserveError::Dump {
        what: "addresses",
        source,
    })?;
    let routes = nl.routes().map_err(|source| ObserveError::Dump {
        what: "routes",
        source,
    })?;
    let mut interfaces = Vec::new();
    for link in &links {
        if link.name == "lo" {
            continue;
        }
        // A name the kernel accepted always fits IfName; skip anything odd rather than fail.
        let (Ok(name), Some(mac)) = (IfName::new(link.name.clone()), link.mac) else {
            continue;
        };
        interfaces.push(PodInterface {
            name,
            index: link.index,
            kind: link.kind.clone(),
            mac,
            mtu: link.mtu,
            addresses: addrs
                .iter()
                .filter(|a| a.index == link.index)
                .map(|a| a.cidr)
                .collect(),
            routes: routes
                .iter()
                .filter(|r| r.oif == link.index)
                .map(|r| PodRoute {
                    dst: r.dst,
                    gateway: r.gateway,
                })
                .collect(),
        });
    }
    let pod = ObservedPod {
        version: POD_FORMAT_VERSION,
        interfaces,
    };
    Ok((pod, Dumps { links, addrs }))
}
