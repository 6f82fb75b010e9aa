//! The cluster objects netbind reads besides VMIs, read strictly (an unknown field is an
//! error, named with its path): the `KubeVirt` CR, whose `spec.configuration` is the cluster
//! configuration, and a `NetworkAttachmentDefinition`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::{ClusterConfig, FeatureGate};

/// A strict-read failure: the document's field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ObjectError {
    pub path: String,
    pub message: String,
}

fn object_err(path: impl Into<String>, message: impl Into<String>) -> ObjectError {
    ObjectError {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields netbind does not act on are known by name, so that a misspelt one is an error.
#[allow(dead_code)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// The metadata is read (strictly) but not used.
#[allow(dead_code)]
struct KubeVirtObject {
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: KubeVirtSpec,
}

/// `spec` of the KubeVirt CR: what netbind reads is typed; KubeVirt's other fields are known
/// by name and accepted as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields netbind does not act on are known by name, so that a misspelt one is an error.
#[allow(dead_code)]
struct KubeVirtSpec {
    #[serde(default)]
    configuration: Configuration,
    certificate_rotate_strategy: Option<Value>,
    customize_components: Option<Value>,
    image_pull_policy: Option<Value>,
    image_pull_secrets: Option<Value>,
    image_registry: Option<Value>,
    image_tag: Option<Value>,
    infra: Option<Value>,
    monitor_account: Option<Value>,
    monitor_namespace: Option<Value>,
    product_component: Option<Value>,
    product_name: Option<Value>,
    product_version: Option<Value>,
    service_monitor_namespace: Option<Value>,
    uninstall_strategy: Option<Value>,
    workload_update_strategy: Option<Value>,
    workloads: Option<Value>,
}

/// `spec.configuration`: the network part and the feature gates typed, KubeVirt's other
/// settings known by name.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields netbind does not act on are known by name, so that a misspelt one is an error.
#[allow(dead_code)]
struct Configuration {
    #[serde(default)]
    developer_configuration: DeveloperConfiguration,
    #[serde(default)]
    network: NetworkConfiguration,
    additional_guest_memory_overhead_ratio: Option<Value>,
    api_configuration: Option<Value>,
    architecture_configuration: Option<Value>,
    auto_cpu_limit_namespace_label_selector: Option<Value>,
    common_instancetypes_deployment: Option<Value>,
    controller_configuration: Option<Value>,
    cpu_model: Option<Value>,
    cpu_request: Option<Value>,
    default_runtime_class: Option<Value>,
    emulated_machines: Option<Value>,
    eviction_strategy: Option<Value>,
    handler_configuration: Option<Value>,
    image_pull_policy: Option<Value>,
    instancetype: Option<Value>,
    ksm_configuration: Option<Value>,
    live_update_configuration: Option<Value>,
    machine_type: Option<Value>,
    mediated_devices_configuration: Option<Value>,
    mem_balloon_stats_period: Option<Value>,
    migrations: Option<Value>,
    min_cpu_model: Option<Value>,
    obsolete_cpu_models: Option<Value>,
    ovmf_path: Option<Value>,
    permitted_host_devices: Option<Value>,
    seccomp_configuration: Option<Value>,
    selinux_launcher_type: Option<Value>,
    smbios: Option<Value>,
    support_container_resources: Option<Value>,
    supported_guest_agent_versions: Option<Value>,
    tls_configuration: Option<Value>,
    virtual_machine_instances_per_node: Option<Value>,
    virtual_machine_options: Option<Value>,
    vm_rollout_strategy: Option<Value>,
    vm_state_storage_class: Option<Value>,
    webhook_configuration: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields netbind does not act on are known by name, so that a misspelt one is an error.
#[allow(dead_code)]
struct DeveloperConfiguration {
    #[serde(default)]
    feature_gates: Vec<String>,
    #[serde(default)]
    disabled_feature_gates: Vec<String>,
    cpu_allocation_ratio: Option<Value>,
    disk_verification: Option<Value>,
    log_verbosity: Option<Value>,
    memory_overcommit: Option<Value>,
    minimum_cluster_tsc_frequency: Option<Value>,
    minimum_reserve_pvc_bytes: Option<Value>,
    node_selectors: Option<Value>,
    pvc_tolerate_less_space_up_to_percent: Option<Value>,
    use_emulation: Option<Value>,
    cluster_profiler: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields netbind does not act on are known by name, so that a misspelt one is an error.
#[allow(dead_code)]
struct NetworkConfiguration {
    default_network_interface: Option<String>,
    permit_bridge_interface_on_pod_network: Option<bool>,
    permit_slirp_interface: Option<bool>,
    #[serde(default)]
    binding: BTreeMap<String, BindingPlugin>,
}

/// `spec.configuration.network.binding.<name>`: a network binding plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindingPlugin {
    /// `namespace/name` of the binding's CNI NetworkAttachmentDefinition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_attachment_definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_image: Option<String>,
    /// `tap` or `managedTap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_attachment_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Value>,
    #[serde(
        rename = "downwardAPI",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub downward_api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_resource_overhead: Option<Value>,
}

/// Reads a `kubevirt.io/v1` KubeVirt object strictly and returns its cluster configuration.
pub fn kubevirt_config(text: &str) -> Result<ClusterConfig, ObjectError> {
    let object: KubeVirtObject = decode(text)?;
    if object.api_version != "kubevirt.io/v1" {
        return Err(object_err(
            "apiVersion",
            format!("{:?}: expected kubevirt.io/v1", object.api_version),
        ));
    }
    if object.kind != "KubeVirt" {
        return Err(object_err(
            "kind",
            format!("{:?}: expected KubeVirt", object.kind),
        ));
    }
    let network = object.spec.configuration.network;
    let dev = object.spec.configuration.developer_configuration;
    for (name, plugin) in &network.binding {
        if let Some(kind) = &plugin.domain_attachment_type
            && !matches!(kind.as_str(), "tap" | "managedTap")
        {
            return Err(object_err(
                format!("spec.configuration.network.binding.{name}.domainAttachmentType"),
                format!("{kind:?}: expected tap or managedTap"),
            ));
        }
        if let Some(nad) = &plugin.network_attachment_definition
            && (nad.is_empty() || nad.split('/').count() > 2)
        {
            return Err(object_err(
                format!("spec.configuration.network.binding.{name}.networkAttachmentDefinition"),
                format!("{nad:?}: expected NAME or NAMESPACE/NAME"),
            ));
        }
    }
    let disabled: BTreeSet<&String> = dev.disabled_feature_gates.iter().collect();
    let defaults = ClusterConfig::default();
    Ok(ClusterConfig {
        default_network_interface: network
            .default_network_interface
            .unwrap_or(defaults.default_network_interface),
        permit_bridge_interface_on_pod_network: network
            .permit_bridge_interface_on_pod_network
            .unwrap_or(defaults.permit_bridge_interface_on_pod_network),
        feature_gates: dev
            .feature_gates
            .iter()
            .filter(|g| !disabled.contains(g))
            .map(|g| FeatureGate::from(g.as_str()))
            .collect(),
        spoof_check_networks: defaults.spoof_check_networks,
        bindings: network.binding,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NadObject {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: NadSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NadSpec {
    /// The CNI configuration (a network config or a conflist), as a JSON string.
    config: String,
}

/// Reads a `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition strictly, including its CNI
/// configuration (JSON with a `cniVersion`, a `name`, and a `type` or `plugins` with types);
/// returns `namespace/name`.
pub fn network_attachment_definition(text: &str) -> Result<String, ObjectError> {
    let object: NadObject = decode(text)?;
    if object.api_version != "k8s.cni.cncf.io/v1" {
        return Err(object_err(
            "apiVersion",
            format!("{:?}: expected k8s.cni.cncf.io/v1", object.api_version),
        ));
    }
    if object.kind != "NetworkAttachmentDefinition" {
        return Err(object_err(
            "kind",
            format!("{:?}: expected NetworkAttachmentDefinition", object.kind),
        ));
    }
    let name = object
        .metadata
        .name
        .ok_or_else(|| object_err("metadata.name", "required"))?;
    let config: Value = serde_json::from_str(&object.spec.config)
        .map_err(|e| object_err("spec.config", format!("not JSON: {e}")))?;
    for key in ["cniVersion", "name"] {
        if !config.get(key).is_some_and(Value::is_string) {
            return Err(object_err(
                format!("spec.config.{key}"),
                "required (a string)",
            ));
        }
    }
    let typed = |v: &Value| v.get("type").is_some_and(Value::is_string);
    let ok = match config.get("plugins") {
        Some(Value::Array(plugins)) => !plugins.is_empty() && plugins.iter().all(typed),
        Some(_) => false,
        None => typed(&config),
    };
    if !ok {
        return Err(object_err(
            "spec.config",
            "needs a \"type\", or \"plugins\" each with a \"type\"",
        ));
    }
    Ok(format!(
        "{}/{name}",
        object
            .metadata
            .namespace
            .unwrap_or_else(|| "default".into())
    ))
}

/// Decodes YAML (or JSON) into `T`, an unknown field reported with its path.
fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ObjectError> {
    if text.len() > crate::yaml::MAX_INPUT_BYTES {
        return Err(object_err("", "the document is too large"));
    }
    serde_saphyr::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| {
                // Written as the VMI loader writes a place ("3:5"), so one reader's errors read
                // alike whichever document they come from.
                crate::yaml::Pos {
                    line: l.line(),
                    column: l.column(),
                }
                .to_string()
            })
            .unwrap_or_default();
        object_err(at, crate::yaml::message_of(&e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CR: &str = "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {name: kubevirt, namespace: kubevirt}\nspec:\n  imagePullPolicy: IfNotPresent\n  configuration:\n    developerConfiguration:\n      featureGates: [NetworkBindingPlugins, PortRangesSpec]\n    network:\n      defaultNetworkInterface: masquerade\n      permitBridgeInterfaceOnPodNetwork: false\n      binding:\n        netbind-bridge:\n          networkAttachmentDefinition: default/netbind-bridge\n          domainAttachmentType: tap\n";

    #[test]
    fn the_cr_becomes_the_cluster_configuration() {
        let cfg = kubevirt_config(CR).expect("reads");
        assert_eq!(cfg.default_network_interface, "masquerade");
        assert!(!cfg.permit_bridge_interface_on_pod_network);
        assert!(cfg.gate(FeatureGate::PortRangesSpec));
        assert_eq!(
            cfg.bindings["netbind-bridge"]
                .network_attachment_definition
                .as_deref(),
            Some("default/netbind-bridge")
        );
    }

    #[test]
    fn unknown_fields_and_values_are_errors_with_their_place() {
        let err =
            kubevirt_config(&CR.replace("permitBridgeInterfaceOnPodNetwork", "permitBridgeOnPod"))
                .expect_err("a typo");
        assert!(err.message.contains("permitBridgeOnPod"), "{err}");
        let err = kubevirt_config(
            &CR.replace("domainAttachmentType: tap", "domainAttachmentType: macvtap"),
        )
        .expect_err("unknown attachment");
        assert_eq!(
            err.path,
            "spec.configuration.network.binding.netbind-bridge.domainAttachmentType"
        );
        let err =
            kubevirt_config(&CR.replace("kind: KubeVirt", "kind: KubeVirtt")).expect_err("kind");
        assert_eq!(err.path, "kind");
        // The VMI loader's wording for YAML's own errors: an error inside an aliased value
        // names the value's place, whole (it used to end in "(used").
        let aliased = CR
            .replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: &p [1]")
            .replace(
                "defaultNetworkInterface: masquerade",
                "defaultNetworkInterface: *p",
            );
        let err = kubevirt_config(&aliased).expect_err("a list for a string");
        assert!(
            err.message.contains("(in the value anchored at line 5"),
            "{err}"
        );
        assert!(!err.message.contains("(used"), "{err}");
        // A syntax error is placed as the VMI loader places one: "line:column".
        let err = kubevirt_config(&CR.replace("kind: KubeVirt", "kind: [KubeVirt"))
            .expect_err("an unclosed flow sequence");
        let (line, column) = err.path.split_once(':').expect("line:column");
        assert!(
            line.parse::<u64>().is_ok() && column.parse::<u64>().is_ok(),
            "{err}"
        );
    }

    #[test]
    fn network_attachment_definitions_are_read_strictly() {
        let nad = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: netbind, namespace: default}\nspec:\n  config: '{\"cniVersion\":\"1.0.0\",\"name\":\"netbind\",\"plugins\":[{\"type\":\"netbind-cni\"}]}'\n";
        assert_eq!(
            network_attachment_definition(nad).expect("reads"),
            "default/netbind"
        );
        let err =
            network_attachment_definition(&nad.replace("config:", "configs:")).expect_err("typo");
        assert!(err.message.contains("configs"), "{err}");
        let err = network_attachment_definition(&nad.replace("\"type\"", "\"typ\""))
            .expect_err("no type");
        assert_eq!(err.path, "spec.config");
        let err = network_attachment_definition(&nad.replace("{\"cniVersion", "{cniVersion"))
            .expect_err("not JSON");
        assert!(err.message.starts_with("not JSON"), "{err}");
    }
}
