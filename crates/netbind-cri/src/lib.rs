//! netbind on a real node runtime. [`client`] speaks the CRI (v1) to containerd as the kubelet
//! does; [`node`] runs a private containerd that leaves the host alone (its own network and
//! mount namespaces, root, state, socket, CNI configuration and IPAM), with images built
//! locally (no registry), so that the CRI tier runs netbind-cni, the launcher and QEMU
//! exactly as a Kubernetes node would.

pub mod client;
pub mod node;
pub mod pluginpod;
pub mod vmpod;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("CRI {op}: {status}")]
    Rpc {
        op: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("connect to the CRI socket {socket}: {detail}")]
    Connect { socket: String, detail: String },
    #[error("{what}: {detail}")]
    Node { what: String, detail: String },
}
