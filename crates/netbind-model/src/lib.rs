//! netbind's pure data model: KubeVirt's VMI networking API, its defaulting and admission
//! rules, the admitted (typed) spec the planner takes, kernel-limit newtypes, the observed pod, and the versioned hand-off record that
//! phase 1 writes for phase 2.
#![forbid(unsafe_code)]

pub use netbind_contract::types;
pub mod vmi;
pub mod yaml;

pub use types::{IfName, MacAddr};
pub mod admission;
pub mod admitted;
pub mod cluster;
pub mod cluster_objects;
pub mod net;

pub use net::Cidr;
pub mod check;
pub use netbind_contract::{handoff, input};
pub mod pod;
pub mod pod_record;
pub mod quantity;
pub use netbind_contract::ra;
