//! `netbind-cni`: netbind's phase 1 as a CNI plugin, chained after the pod network's plugin
//! (e.g. `bridge` + `host-local`). The runtime (containerd's CRI plugin, CRI-O, Multus) calls
//! it with the pod's namespace and the previous result; the VMI comes from the pod annotation
//! [`protocol::VMI_ANNOTATION`]. It is the handler's library behind the CNI protocol: no
//! second implementation of phase 1.

pub mod plugin;
pub mod protocol;
