//! netbind as KubeVirt's network binding sidecar.
//!
//! In KubeVirt's plugin form (`spec.configuration.network.binding.<name>` in the KubeVirt CR)
//! the pod's namespace is set up by `netbind-cni`, chained after the network's own CNI, and
//! this sidecar runs in the launcher pod with no capability. It:
//!
//! - answers KubeVirt's hook API on a unix socket (`Info`; `OnDefineDomain`, `Shutdown` of
//!   `v1alpha3` and `v1alpha2`): it puts netbind's `<interface type='ethernet'>` for each
//!   interface bound to the plugin into the domain XML virt-launcher is about to define;
//! - serves DHCP to the guest on the interfaces `netbind-cni` made, with the launcher's
//!   servers, once the first `OnDefineDomain` has brought it the VMI.
//!
//! Its mounts are KubeVirt's to choose, so it reads no hand-off record: it plans the guest's
//! side itself, with netbind's planner, from the VMI of the hook call, its pod namespace
//! (observed over rtnetlink, which needs no capability) and the pod record `netbind-cni` left
//! on the tap (`netbind_model::pod_record`). The trusted side never reads what it writes.

pub mod client;
pub mod define;
pub mod dhcp;
pub mod domain;
pub mod facts;
pub mod service;

/// The generated gRPC code of KubeVirt's hook API (`proto/`).
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod proto {
    pub mod info {
        tonic::include_proto!("kubevirt.hooks.info");
    }
    pub mod v1alpha2 {
        tonic::include_proto!("kubevirt.hooks.v1alpha2");
    }
    pub mod v1alpha3 {
        tonic::include_proto!("kubevirt.hooks.v1alpha3");
    }
}

/// The name the sidecar reports in `Info` (virt-launcher logs it).
pub const HOOK_NAME: &str = "netbind";
/// KubeVirt's `NETWORK_BINDING_PLUGIN_NAME`: the binding's name in the KubeVirt CR.
pub const PLUGIN_NAME_ENV: &str = "NETWORK_BINDING_PLUGIN_NAME";
/// KubeVirt's hook socket directory (the sidecar sees its own subdirectory there).
pub const HOOK_SOCKET_DIR: &str = "/var/run/kubevirt-hooks";
