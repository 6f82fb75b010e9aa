//! The pod record phase 1 leaves in the pod's own namespace for KubeVirt's hook sidecar, as the
//! alias (`IFLA_IFALIAS`) of the tap it made. In KubeVirt's plugin form the sidecar's mounts are
//! KubeVirt's to choose, so no host path can carry the hand-off record; a link alias can be
//! read by anyone in the namespace (the sidecar holds no capability) and written only with
//! CAP_NET_ADMIN there (the sidecar cannot forge one for the trusted side, which never reads it
//! anyway). It carries what phase 1 moved out of the sidecar's sight: the binding mode, and for
//! the bridge binding the pod interface's routes (its addresses, MAC and MTU stay on the dummy
//! that keeps the pod interface's name).
//!
//! Text form, at most 255 bytes (the kernel's limit):
//! `netbind/1 net=<network> pod=<pod interface> mode=<masquerade|bridge> [rt=<dst>[>gw],...]`.

use std::net::IpAddr;

use crate::handoff::BindingKind;
use crate::net::Cidr;
use crate::pod::PodRoute;
use crate::types::IfName;

/// The record's version tag.
pub const RECORD_TAG: &str = "netbind/1";
/// `IFALIASZ - 1`.
pub const MAX_RECORD_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    /// The VMI network (KubeVirt's `logicNetworkName`).
    pub network: String,
    pub pod_interface: IfName,
    /// `Masquerade` or `Bridge`.
    pub mode: BindingKind,
    /// The pod interface's routes before phase 1 (bridge binding only).
    pub routes: Vec<PodRoute>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("pod record: {0} bytes, over the {MAX_RECORD_BYTES}-byte link alias")]
    TooLong(usize),
    #[error("pod record: not a netbind record (no {RECORD_TAG:?} tag)")]
    NotOurs,
    #[error("pod record: field {field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

fn field_err(field: &'static str, message: impl Into<String>) -> RecordError {
    RecordError::Field {
        field,
        message: message.into(),
    }
}

impl PodRecord {
    pub fn encode(&self) -> Result<String, RecordError> {
        if self.network.is_empty()
            || self
                .network
                .contains(|ch: char| ch.is_whitespace() || ch == '=' || ch.is_control())
        {
            return Err(field_err(
                "net",
                format!("{:?} cannot be recorded", self.network),
            ));
        }
        let mode = match self.mode {
            BindingKind::Masquerade | BindingKind::Bridge => self.mode.as_str(),
            other => return Err(field_err("mode", format!("{other} is not served"))),
        };
        let mut text = format!(
            "{RECORD_TAG} net={} pod={} mode={mode}",
            self.network, self.pod_interface
        );
        if !self.routes.is_empty() {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|route| match route.gateway {
                    Some(gw) => format!("{}>{gw}", route.dst),
                    None => route.dst.to_string(),
                })
                .collect();
            text.push_str(" rt=");
            text.push_str(&routes.join(","));
        }
        if text.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLong(text.len()));
        }
        Ok(text)
    }

    /// Reads a record; `Err(NotOurs)` for any other alias (a link may carry someone else's).
    pub fn decode(text: &str) -> Result<PodRecord, RecordError> {
        if text.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLong(text.len()));
        }
        let mut words = text.split(' ');
        if words.next() != Some(RECORD_TAG) {
            return Err(RecordError::NotOurs);
        }
        let (mut network, mut pod, mut mode, mut routes) = (None, None, None, Vec::new());
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| field_err("record", format!("{word:?} is not key=value")))?;
            match key {
                "net" if !value.is_empty() => network = Some(value.to_string()),
                "pod" => {
                    pod = Some(IfName::new(value).map_err(|err| field_err("pod", err.to_string()))?)
                }
                "mode" => {
                    mode = Some(match value {
                        "masquerade" => BindingKind::Masquerade,
                        "bridge" => BindingKind::Bridge,
                        other => return Err(field_err("mode", format!("{other:?} is not served"))),
                    })
                }
                "rt" => {
                    for route in value.split(',') {
                        let (dst, gateway) = match route.split_once('>') {
                            Some((dst, gw)) => (dst, Some(gw)),
                            None => (route, None),
                        };
                        let dst: Cidr = dst
                            .parse()
                            .map_err(|_| field_err("rt", format!("{dst:?} is not a CIDR")))?;
                        let gateway = gateway
                            .map(|gw| gw.parse::<IpAddr>())
                            .transpose()
                            .map_err(|_| field_err("rt", format!("{route:?}: bad gateway")))?;
                        routes.push(PodRoute { dst, gateway });
                    }
                }
                other => return Err(field_err("record", format!("unknown key {other:?}"))),
            }
        }
        Ok(PodRecord {
            network: network.ok_or_else(|| field_err("net", "missing"))?,
            pod_interface: pod.ok_or_else(|| field_err("pod", "missing"))?,
            mode: mode.ok_or_else(|| field_err("mode", "missing"))?,
            routes,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code
    use super::*;

    fn bridge() -> PodRecord {
        PodRecord {
            network: "default".into(),
            pod_interface: IfName::new("eth0").unwrap(),
            mode: BindingKind::Bridge,
            routes: vec![
                PodRoute {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gateway: Some("10.244.0.1".parse().unwrap()),
                },
                PodRoute {
                    dst: "10.244.0.0/24".parse().unwrap(),
                    gateway: None,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_reads_as_documented() {
        let text = bridge().encode().unwrap();
        assert_eq!(
            text,
            "netbind/1 net=default pod=eth0 mode=bridge rt=0.0.0.0/0>10.244.0.1,10.244.0.0/24"
        );
        assert_eq!(PodRecord::decode(&text).unwrap(), bridge());
        let masq = "netbind/1 net=blue pod=pod16477688c0e mode=masquerade";
        assert_eq!(PodRecord::decode(masq).unwrap().encode().unwrap(), masq);
    }

    #[test]
    fn refuses_what_it_cannot_hold_or_read() {
        let mut long = bridge();
        long.routes = (0..20).map(|_| long.routes[0].clone()).collect();
        assert!(matches!(long.encode(), Err(RecordError::TooLong(_))));
        assert_eq!(PodRecord::decode("my own alias"), Err(RecordError::NotOurs));
        for bad in [
            "netbind/1 net=default pod=eth0",
            "netbind/1 net=default pod=eth0 mode=sriov",
            "netbind/1 net=default pod=eth0 mode=bridge rt=nonsense",
            "netbind/1 net=default pod=eth0 mode=bridge extra",
            "netbind/1 net=default pod=a/b mode=bridge",
        ] {
            assert!(
                matches!(PodRecord::decode(bad), Err(RecordError::Field { .. })),
                "{bad}"
            );
        }
    }
}
