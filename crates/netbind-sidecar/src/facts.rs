//! What the sidecar knows of its pod: the namespace as phase 1 found it, rebuilt from what is
//! there now and the pod records `netbind-cni` left on its taps.
//!
//! After phase 1 the masquerade binding's pod interface is untouched. The bridge binding's pod
//! interface is the bridge's port now, and a dummy with the pod interface's name keeps its
//! MAC, MTU and addresses; its routes went with the addresses, so the record carries them.

use netbind_model::pod::ObservedPod;
use netbind_model::pod_record::{PodRecord, RecordError};
use netbind_netlink::netlink::Netlink;

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("open an rtnetlink socket in the sidecar's namespace: {0}")]
    Netlink(std::io::Error),
    #[error(transparent)]
    Observe(#[from] netbind_netlink::observe::ObserveError),
    #[error("link {link}: {source}")]
    Record { link: String, source: RecordError },
}

/// The pod as phase 1 observed it, and the records found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub pod: ObservedPod,
    pub records: Vec<PodRecord>,
}

impl PodFacts {
    /// Puts back what phase 1 took from each recorded pod interface (its routes).
    pub fn new(mut pod: ObservedPod, records: Vec<PodRecord>) -> PodFacts {
        for record in &records {
            if record.routes.is_empty() {
                continue;
            }
            if let Some(iface) = pod
                .interfaces
                .iter_mut()
                .find(|iface| iface.name == record.pod_interface)
            {
                iface.routes = record.routes.clone();
            }
        }
        PodFacts { pod, records }
    }

    /// The record of VMI network `network`.
    pub fn record(&self, network: &str) -> Option<&PodRecord> {
        self.records.iter().find(|record| record.network == network)
    }
}

/// Observes the namespace the sidecar runs in (a dump needs no capability). Aliases that are
/// not netbind records are ignored; one that claims to be and does not parse is an error.
pub fn observe_own() -> Result<PodFacts, FactsError> {
    let mut nl = Netlink::open().map_err(FactsError::Netlink)?;
    let pod = netbind_netlink::observe::observe(&mut nl)?;
    let links = nl.links().map_err(|source| {
        FactsError::Observe(netbind_netlink::observe::ObserveError::Dump {
            what: "links",
            source,
        })
    })?;
    let mut records = Vec::new();
    for link in links {
        let Some(alias) = link.alias else { continue };
        match PodRecord::decode(&alias) {
            Ok(record) => records.push(record),
            Err(RecordError::NotOurs) => {}
            Err(source) => {
                return Err(FactsError::Record {
                    link: link.name,
                    source,
                });
            }
        }
    }
    Ok(PodFacts::new(pod, records))
}
