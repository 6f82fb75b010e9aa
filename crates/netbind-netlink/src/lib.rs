//! The rtnetlink client netbind uses on both sides of the privilege boundary: phase 1
//! (`netbind-handler`, `netbind-cni`) dumps and changes links, addresses and routes in a pod's
//! namespace; the KubeVirt hook sidecar only dumps them (a dump needs no capability).
//! Which side may change what is the kernel's to enforce, not this crate's.

pub mod netlink;
pub mod observe;
