//! A VM pod shaped as KubeVirt creates it for a VMI whose interface uses netbind's binding
//! plugin (`binding: {name: ...}`): no netbind annotation; KubeVirt's own annotations; the
//! binding's NetworkAttachmentDefinition in the CNI chain (see `NodeConfig::binding_plugin`);
//! and two containers, the hook sidecar (`hook-sidecar-0`, netbind-sidecar, with KubeVirt's hook
//! directory as its only writable mount) and `compute` (QEMU). The caller plays virt-launcher:
//! it calls the sidecar's `Info` and `OnDefineDomain` over the hook socket, as virt-launcher
//! does from inside `compute`, and boots QEMU on the interface the returned XML names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use netbind_podsim::vm::GuestImage;
use netbind_sidecar::client::HookClient;

use crate::CriError;
use crate::client::{Cri, PodSpec};
use crate::vmpod::{
    Console, Nic, compute_container, launcher_pod, locked_down, node_err, show, vm_dir, wait_ready,
};

/// KubeVirt's name of the first hook sidecar container.
pub const SIDECAR_CONTAINER: &str = "hook-sidecar-0";

#[derive(Debug, Clone)]
pub struct PluginPodConfig {
    pub name: String,
    pub namespace: String,
    /// The binding's name in the KubeVirt CR (`NETWORK_BINDING_PLUGIN_NAME`).
    pub plugin: String,
    /// The VMI network bound to it.
    pub network: String,
    /// The VMI as JSON, as virt-launcher passes it to the hook.
    pub vmi_json: String,
    /// The domain XML virt-launcher hands the hook (its `<interface>` for the network, as
    /// KubeVirt writes it for `domainAttachmentType: tap`).
    pub domain_xml: String,
    pub bins: PathBuf,
    pub guest: GuestImage,
    pub cmdline: String,
    pub work_dir: PathBuf,
    pub tun: PathBuf,
}

#[derive(Debug)]
pub struct PluginPod {
    pub sandbox: String,
    pub pod: PodSpec,
    pub ip: String,
    pub sidecar: String,
    pub qemu: String,
    /// `Info`'s answer: the sidecar's name, versions and hook points.
    pub info: netbind_sidecar::proto::info::InfoResult,
    /// The domain XML `OnDefineDomain` returned.
    pub domain_xml: String,
    /// The guest's serial console.
    pub console: Console,
}

/// The interface QEMU needs from the domain XML: (tap, MAC, MTU, ROM disabled).
fn interface_of(xml: &str, network: &str) -> Result<(String, String, u32, bool), CriError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| node_err("parse the domain XML", e))?;
    let alias = format!("ua-{network}");
    let iface = doc
        .descendants()
        .find(|node| {
            node.has_tag_name("interface")
                && node
                    .children()
                    .any(|c| c.has_tag_name("alias") && c.attribute("name") == Some(&alias))
        })
        .ok_or_else(|| node_err("the domain XML", format!("no interface {alias}")))?;
    let attr = |tag: &str, name: &str| {
        iface
            .children()
            .find(|c| c.has_tag_name(tag))
            .and_then(|c| c.attribute(name))
            .map(String::from)
    };
    let tap = attr("target", "dev").ok_or_else(|| node_err("the interface", "no target"))?;
    let mac = attr("mac", "address").ok_or_else(|| node_err("the interface", "no MAC"))?;
    let mtu = attr("mtu", "size")
        .and_then(|size| size.parse().ok())
        .unwrap_or(1500);
    let rom_disabled = attr("rom", "enabled").as_deref() == Some("no");
    Ok((tap, mac, mtu, rom_disabled))
}

impl PluginPod {
    /// RunPodSandbox, the sidecar, the hook calls, then QEMU. On an error after
    /// RunPodSandbox the sandbox is removed again.
    pub fn start(cri: &mut Cri, config: &PluginPodConfig) -> Result<PluginPod, CriError> {
        let logs = config.work_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| node_err("create the log directory", e))?;
        let networks = serde_json::json!([{
            "name": config.plugin,
            "namespace": config.namespace,
            "cni-args": {"logicNetworkName": config.network},
        }]);
        // What virt-controller puts on a launcher pod for such a VMI (Multus reads the networks
        // annotation; here the node's chain holds the same NAD config).
        let pod = launcher_pod(
            &config.name,
            &config.namespace,
            HashMap::from([
                ("kubevirt.io/domain".to_string(), config.name.clone()),
                (
                    "k8s.v1.cni.cncf.io/networks".to_string(),
                    networks.to_string(),
                ),
                (
                    "kubectl.kubernetes.io/default-container".to_string(),
                    "compute".to_string(),
                ),
            ]),
            &logs,
        );
        let (sandbox, _) = cri.run_pod(&pod)?;
        let made = Self::containers(cri, config, pod, sandbox.clone());
        if made.is_err() {
            let _ = cri.remove_pod(&sandbox);
        }
        made
    }

    fn containers(
        cri: &mut Cri,
        config: &PluginPodConfig,
        pod: PodSpec,
        sandbox: String,
    ) -> Result<PluginPod, CriError> {
        let ip = cri.pod_network(&sandbox)?.ip;
        // KubeVirt's hook directory (an emptyDir), the sidecar's subdirectory of it.
        let hooks = vm_dir(config.work_dir.join("hooks"))?;
        let own = vm_dir(hooks.join(SIDECAR_CONTAINER))?;
        let mut sidecar_spec = locked_down(
            SIDECAR_CONTAINER,
            vec![
                "/netbind/netbind-vm-exec".into(),
                "/netbind/netbind-sidecar".into(),
                "--socket".into(),
                "/var/run/kubevirt-hooks/netbind.sock".into(),
            ],
            vec![
                (show(&config.bins), "/netbind".into(), true),
                (show(&own), "/var/run/kubevirt-hooks".into(), false),
            ],
        );
        sidecar_spec.env = vec![
            ("CONTAINER_NAME".into(), SIDECAR_CONTAINER.into()),
            ("NETWORK_BINDING_PLUGIN_NAME".into(), config.plugin.clone()),
        ];
        let sidecar = cri.start_container(&sandbox, &pod, &sidecar_spec)?;
        wait_ready(
            cri,
            &sidecar,
            &Path::new(&pod.log_directory).join(format!("{SIDECAR_CONTAINER}.log")),
            "the hook sidecar",
        )?;
        // virt-launcher's part: Info, then OnDefineDomain with its domain and the VMI.
        let client = HookClient::connect(&own.join("netbind.sock"))
            .map_err(|e| node_err("dial the hook socket", e))?;
        let info = client
            .info()
            .map_err(|e| node_err("Info", e.message().to_string()))?;
        let domain_xml = client
            .on_define_domain(config.domain_xml.as_bytes(), config.vmi_json.as_bytes())
            .map_err(|e| node_err("OnDefineDomain", e.message().to_string()))?;
        let domain_xml = String::from_utf8(domain_xml)
            .map_err(|e| node_err("OnDefineDomain", format!("not UTF-8: {e}")))?;
        let (tap, mac, mtu, rom_disabled) = interface_of(&domain_xml, &config.network)?;
        let vm_work = vm_dir(config.work_dir.join("vm"))?;
        let nic = Nic {
            tap: &tap,
            mac: &mac,
            mtu,
            rom_disabled,
        };
        let compute = compute_container(
            &config.bins,
            &config.guest,
            &vm_work,
            &config.tun,
            &nic,
            &config.cmdline,
        );
        let qemu = cri.start_container(&sandbox, &pod, &compute)?;
        Ok(PluginPod {
            sandbox,
            pod,
            ip,
            sidecar,
            qemu,
            info,
            domain_xml,
            console: Console(vm_work.join("console")),
        })
    }
}
