//! The contract between netbind's two phases: what the trusted handler writes and the
//! unprivileged launcher (and the RA responder) reads, with the newtypes it uses, the renderer
//! of the domain's `<interface>` elements, the DHCP search-list encoder, and bounded reading of
//! input files. The launcher depends on this crate alone, so the planner, the YAML parser and
//! admission never enter its build.
#![forbid(unsafe_code)]

pub mod dns;
pub mod domxml;
pub mod handoff;
pub mod input;
pub mod net;
pub mod ra;
pub mod types;

pub use net::Cidr;
pub use types::{IfName, MacAddr};
