//! The CNI protocol as netbind-cni speaks it (spec 1.0.0, and 1.1.0's `STATUS` and `GC`): the
//! environment, the network configuration on stdin, the result and the error. Pure: parsing
//! and composing only, so every rule is unit-tested without a namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netbind_model::admission::ClusterConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The versions whose configuration and result formats this plugin reads and writes.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

/// The pod annotation holding the VirtualMachineInstance (YAML or JSON) whose networking this
/// plugin sets up. It reaches the plugin through the runtime's
/// `io.kubernetes.cri.pod-annotations` capability (declared in the conflist entry).
pub const VMI_ANNOTATION: &str = "netbind.io/vmi";
/// The capability containerd and CRI-O use to pass every pod annotation to a plugin.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// Error codes of the CNI specification (§ "Error") and netbind's own (100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADD now (1.1.0 § STATUS).
    NotAvailable = 50,
    /// Phase 1 failed in the pod's namespace.
    Setup = 100,
    /// CHECK found the namespace different from the plan.
    Drift = 101,
    /// DEL could not remove everything.
    Teardown = 102,
    /// GC could not remove every stale sandbox.
    Collect = 103,
}

/// A CNI error result: printed on stdout, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{msg}")]
pub struct CniError {
    pub cni_version: String,
    pub code: u32,
    /// What failed, on which object.
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: SUPPORTED_VERSIONS[0].into(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// Answer in the version the runtime asked for, when it asked for one we speak.
    pub fn in_version(mut self, version: &str) -> CniError {
        if SUPPORTED_VERSIONS.contains(&version) {
            self.cni_version = version.into();
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    /// GC (1.1.0): remove what belongs to attachments not in the runtime's list.
    Gc,
}

/// The `CNI_*` environment of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// `CNI_CONTAINERID` (the pod sandbox); checked to be a safe file name.
    pub container_id: Option<String>,
    /// `CNI_NETNS`; containerd's second DEL leaves it empty.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`, the pod interface of this network.
    pub ifname: Option<String>,
}

impl Env {
    /// Reads the environment through `var` (`std::env::var` in the binary, a map in tests).
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let bad = |name: &str, why: &str| {
            CniError::new(ErrorCode::InvalidEnvironment, format!("{name}: {why}"))
        };
        let command = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some(other) => return Err(bad("CNI_COMMAND", &format!("unknown command {other:?}"))),
            None => return Err(bad("CNI_COMMAND", "not set")),
        };
        let nonempty = |name: &str| var(name).filter(|v| !v.is_empty());
        let container_id = nonempty("CNI_CONTAINERID");
        if let Some(id) = &container_id
            && !safe_id(id)
        {
            return Err(bad(
                "CNI_CONTAINERID",
                "must be letters, digits, '_', '.' and '-', starting with a letter or digit \
                 (at most 128)",
            ));
        }
        let env = Env {
            command,
            container_id,
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname: nonempty("CNI_IFNAME"),
        };
        // What each command cannot do without (DEL may come with no namespace at all).
        let required: &[(&str, bool)] = match command {
            Command::Add | Command::Check => &[
                ("CNI_CONTAINERID", env.container_id.is_some()),
                ("CNI_NETNS", env.netns.is_some()),
                ("CNI_IFNAME", env.ifname.is_some()),
            ],
            Command::Del => &[("CNI_CONTAINERID", env.container_id.is_some())],
            Command::Version | Command::Status | Command::Gc => &[],
        };
        if let Some((name, _)) = required.iter().find(|(_, present)| !present) {
            return Err(bad(name, "not set"));
        }
        Ok(env)
    }
}

/// The CNI spec's container id and network name: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`; netbind
/// also bounds it, as it becomes a file name (and GC looks only at sandbox directories so
/// named).
pub fn safe_id(id: &str) -> bool {
    id.len() <= 128
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// netbind-cni's own settings in its conflist entry (all optional).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSettings {
    /// Root-owned directory for each sandbox's hand-off record and phase-1 state.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// uid and gid that open the taps (QEMU): KubeVirt's 107.
    #[serde(default = "default_owner")]
    pub vm_user: (u32, u32),
    #[serde(default = "default_nft")]
    pub nft_bin: PathBuf,
    /// The `netbind-ra` responder binary (IPv6 masquerade); by default next to this plugin.
    #[serde(default)]
    pub ra_responder: Option<PathBuf>,
    /// The cluster configuration (feature gates, default binding, ...), as `netbind` and
    /// `netbind-handler` read it.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Or KubeVirt's own CR (a file on the node), read strictly, as `netbind
    /// --kubevirt-config` and `netbind-handler --kubevirt-config` read it.
    #[serde(default)]
    pub kubevirt_config: Option<PathBuf>,
    /// KubeVirt's binding-plugin form: the NetworkAttachmentDefinition of a binding names its
    /// mode here, and KubeVirt passes only the network's name (`logicNetworkName`), no VMI.
    /// The call then serves that pod network with this binding and KubeVirt's defaults.
    #[serde(default)]
    pub binding_mode: Option<BindingMode>,
}

/// The bindings netbind serves as a KubeVirt network binding plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingMode {
    Masquerade,
    Bridge,
}

fn default_run_dir() -> PathBuf {
    PathBuf::from("/run/netbind/cni")
}
fn default_owner() -> (u32, u32) {
    (107, 107)
}
fn default_nft() -> PathBuf {
    PathBuf::from("nft")
}

/// The network configuration on stdin, as far as this plugin reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub settings: PluginSettings,
    /// `args.cni.logicNetworkName` (KubeVirt's binding-plugin convention): the VMI network
    /// this call serves.
    pub logic_network_name: Option<String>,
    /// `runtimeConfig["io.kubernetes.cri.pod-annotations"]`.
    pub pod_annotations: BTreeMap<String, String>,
    /// Whether the runtime passed the pod's annotations at all (it does when the entry
    /// declares the capability; containerd and CRI-O then pass them for every pod).
    pub annotations_passed: bool,
    /// The previous plugin's result, kept whole so nothing it says is lost in ours.
    pub prev_result: Option<Value>,
    /// GC only: `cni.dev/valid-attachments`, the attachments the runtime still has.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// One attachment the runtime still has (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Where GC's list of valid attachments is: the specification's key, and the one libcni
/// also sets for plugins written against the specification's first text.
const VALID_ATTACHMENT_KEYS: [&str; 2] = ["cni.dev/valid-attachments", "cni.dev/attachments"];

/// Keys of the configuration that the specification or runtimes define; any other key must
/// be one of [`PluginSettings`]'s, or the configuration has a typo netbind will not guess at.
const STANDARD_KEYS: [&str; 9] = [
    "cniVersion",
    "name",
    "type",
    "args",
    "runtimeConfig",
    "prevResult",
    "capabilities",
    "dns",
    "ipam",
];

impl NetConf {
    /// Parses stdin. Errors name the field.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let doc: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                format!("network configuration on stdin is not JSON: {e}"),
            )
        })?;
        let Value::Object(map) = &doc else {
            return Err(CniError::new(
                ErrorCode::Decode,
                "network configuration on stdin is not a JSON object",
            ));
        };
        let field = |name: &str| map.get(name);
        let text = |name: &str| -> Result<Option<String>, CniError> {
            match field(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(path_text)) => Ok(Some(path_text.clone())),
                Some(_) => Err(CniError::new(
                    ErrorCode::InvalidConfig,
                    format!("{name}: must be a string"),
                )),
            }
        };
        let cni_version = text("cniVersion")?
            .ok_or_else(|| CniError::new(ErrorCode::InvalidConfig, "cniVersion: missing"))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "cniVersion {cni_version:?}: netbind-cni speaks {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let name = text("name")?.unwrap_or_default();
        let mut own = serde_json::Map::new();
        for (key, value) in map {
            // `cni.dev/` keys are the runtime's (GC's attachments), not this plugin's settings.
            if !STANDARD_KEYS.contains(&key.as_str()) && !key.starts_with("cni.dev/") {
                own.insert(key.clone(), value.clone());
            }
        }
        let mut settings: PluginSettings =
            serde_json::from_value(Value::Object(own)).map_err(|e| {
                CniError::new(
                    ErrorCode::UnsupportedField,
                    format!("netbind-cni settings: {e}"),
                )
                .in_version(&cni_version)
            })?;
        if let Some(path) = settings.kubevirt_config.clone() {
            settings.cluster = kubevirt_cluster(&path, &settings.cluster)
                .map_err(|e| e.in_version(&cni_version))?;
        }
        let logic_network_name = match doc.pointer("/args/cni/logicNetworkName") {
            None | Some(Value::Null) => None,
            Some(Value::String(path_text)) if !path_text.is_empty() => Some(path_text.clone()),
            Some(_) => {
                return Err(CniError::new(
                    ErrorCode::InvalidConfig,
                    "args.cni.logicNetworkName: must be a non-empty string",
                )
                .in_version(&cni_version));
            }
        };
        let annotations_path = format!("/runtimeConfig/{POD_ANNOTATIONS_CAPABILITY}");
        let annotations = doc
            .pointer(&annotations_path)
            .filter(|value| !value.is_null());
        let annotations_passed = annotations.is_some();
        let pod_annotations = match annotations {
            None => BTreeMap::new(),
            Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "runtimeConfig[{POD_ANNOTATIONS_CAPABILITY:?}]: must map names to \
                         strings: {e}"
                    ),
                )
                .in_version(&cni_version)
            })?,
        };
        let prev_result = match field("prevResult") {
            None | Some(Value::Null) => None,
            Some(object @ Value::Object(_)) => Some(object.clone()),
            Some(_) => {
                return Err(CniError::new(
                    ErrorCode::InvalidConfig,
                    "prevResult: must be a JSON object",
                )
                .in_version(&cni_version));
            }
        };
        let valid_attachments = match VALID_ATTACHMENT_KEYS
            .iter()
            .find_map(|key| Some((*key, field(key)?)))
        {
            None => None,
            Some((key, value)) => Some(serde_json::from_value(value.clone()).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "{key}: must be a list of {{\"containerID\": ..., \"ifname\": ...}}: {e}"
                    ),
                )
                .in_version(&cni_version)
            })?),
        };
        Ok(NetConf {
            cni_version,
            name,
            settings,
            logic_network_name,
            pod_annotations,
            annotations_passed,
            prev_result,
            valid_attachments,
        })
    }

    /// The network's `name`, checked to be the specification's form: netbind-cni records,
    /// under it, which network configurations set a sandbox up (GC collects only its own).
    pub fn network_name(&self) -> Result<&str, CniError> {
        if safe_id(&self.name) {
            Ok(&self.name)
        } else {
            Err(CniError::new(
                ErrorCode::InvalidConfig,
                format!(
                    "name {:?}: must be letters, digits, '_', '.' and '-', starting with a letter \
                     or digit (at most 128)",
                    self.name
                ),
            )
            .in_version(&self.cni_version))
        }
    }

    /// GC's list of the attachments the runtime still has; its absence is an error, never
    /// an empty list (which would collect every sandbox).
    pub fn require_valid_attachments(&self) -> Result<&[Attachment], CniError> {
        self.valid_attachments.as_deref().ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!(
                    "{}: missing (GC needs the attachments still in use)",
                    VALID_ATTACHMENT_KEYS[0]
                ),
            )
            .in_version(&self.cni_version)
        })
    }

    /// KubeVirt's binding-plugin form: a `bindingMode` and a `logicNetworkName`, no VMI
    /// annotation (the VMI reaches the hook sidecar instead).
    pub fn is_binding_plugin(&self) -> bool {
        !self.pod_annotations.contains_key(VMI_ANNOTATION)
            && self.settings.binding_mode.is_some()
            && self.logic_network_name.is_some()
    }

    /// The VMI this call sets up: the pod annotation's, or, in KubeVirt's binding-plugin
    /// form (`bindingMode` and `logicNetworkName`, no annotation), one interface of that mode
    /// on the pod network of that name, with KubeVirt's defaults (every port forwarded).
    pub fn vmi(&self) -> Option<(String, String)> {
        if let Some(text) = self.pod_annotations.get(VMI_ANNOTATION) {
            return Some((format!("pod annotation {VMI_ANNOTATION}"), text.clone()));
        }
        let (mode, network) = (
            self.settings.binding_mode?,
            self.logic_network_name.as_ref()?,
        );
        let binding = match mode {
            BindingMode::Masquerade => "masquerade",
            BindingMode::Bridge => "bridge",
        };
        // JSON, which the VMI loader reads as YAML; the name is quoted by serde.
        let vmi = serde_json::json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": self.pod_annotations.get("io.kubernetes.cri.sandbox-name")},
            "spec": {
                "domain": {"devices": {"interfaces": [{"name": network, binding: {}}]}},
                "networks": [{"name": network, "pod": {}}],
            },
        });
        Some((
            format!("bindingMode {binding} for network {network:?}"),
            vmi.to_string(),
        ))
    }

    fn error(&self, code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError::new(code, msg).in_version(&self.cni_version)
    }

    /// The previous result, required by ADD and CHECK of a chained plugin.
    pub fn require_prev_result(&self) -> Result<PrevResult, CniError> {
        let value = self.prev_result.as_ref().ok_or_else(|| {
            self.error(
                ErrorCode::InvalidConfig,
                "prevResult: missing (netbind-cni runs chained after the pod network's plugin)",
            )
        })?;
        serde_json::from_value(value.clone())
            .map_err(|e| self.error(ErrorCode::InvalidConfig, format!("prevResult: {e}")))
    }
}

/// The cluster configuration from a KubeVirt CR file, which may not be combined with an
/// inline `cluster`.
fn kubevirt_cluster(path: &Path, inline: &ClusterConfig) -> Result<ClusterConfig, CniError> {
    if *inline != ClusterConfig::default() {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "kubevirtConfig and cluster: give one cluster configuration, not both",
        ));
    }
    let text = netbind_model::input::read_text(path, 1 << 20)
        .map_err(|e| CniError::new(ErrorCode::Io, format!("kubevirtConfig: {e}")))?;
    netbind_model::cluster_objects::kubevirt_config(&text).map_err(|e| {
        CniError::new(
            ErrorCode::InvalidConfig,
            format!("kubevirtConfig {}: {e}", path.display()),
        )
    })
}

/// The part of a previous result this plugin reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PrevResult {
    #[serde(default)]
    pub interfaces: Vec<ResultInterface>,
    #[serde(default)]
    pub ips: Vec<ResultIp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInterface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResultIp {
    /// CIDR notation, e.g. `10.88.0.5/16`.
    pub address: String,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

impl PrevResult {
    /// The addresses the previous plugin gave the interface `ifname` in namespace `netns`.
    /// Errors name the field: a chained plugin that cannot find its pod interface in the
    /// result must not guess.
    pub fn addresses_of(&self, ifname: &str, netns: &str) -> Result<Vec<String>, String> {
        let index = self
            .interfaces
            .iter()
            .position(|i| i.name == ifname && i.sandbox == netns)
            .ok_or_else(|| {
                format!("prevResult.interfaces: no interface {ifname:?} in sandbox {netns:?}")
            })?;
        let addresses: Vec<String> = self
            .ips
            .iter()
            .filter(|ip| ip.interface == Some(index))
            .map(|ip| ip.address.clone())
            .collect();
        if addresses.is_empty() {
            return Err(format!(
                "prevResult.ips: no address for interfaces[{index}] ({ifname})"
            ));
        }
        Ok(addresses)
    }
}

/// This plugin's result: the previous one, in the runtime's version, with the interfaces
/// phase 1 made appended (indices of earlier interfaces, which `ips` refer to, stay valid).
pub fn compose_result(conf: &NetConf, made: &[ResultInterface]) -> Value {
    let mut result = conf
        .prev_result
        .clone()
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(map) = &mut result {
        map.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
        let interfaces = map
            .entry("interfaces")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = interfaces {
            list.extend(made.iter().filter_map(|i| serde_json::to_value(i).ok()));
        }
    }
    result
}

/// The VERSION answer.
pub fn version_result(cni_version: &str) -> Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests;
