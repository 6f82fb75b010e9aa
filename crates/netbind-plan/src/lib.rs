//! netbind's pure planner: KubeVirt's naming and addressing schemes, the phase-1 plan (links,
//! addresses, sysctls, nftables), the DHCP configuration and the libvirt interface XML.
#![forbid(unsafe_code)]

pub mod dns;
pub use netbind_contract::domxml;
pub mod naming;
pub mod nft;
pub mod plan;

pub use plan::{Owner, PlanError, PlanOptions, PodNetPlan, plan};
