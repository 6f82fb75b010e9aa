//! `OnDefineDomain` without the gRPC: from the domain XML and the VMI of the hook call, and the
//! pod's facts, the domain XML to define and what the sidecar's DHCP servers must serve.

use netbind_contract::handoff::{HANDOFF_VERSION, Handoff};
use netbind_model::admission::ClusterConfig;
use netbind_model::check::{CheckError, check_vmi};
use netbind_model::cluster::FeatureGate;
use netbind_model::handoff::BindingKind;
use netbind_plan::{Owner, PlanOptions};
use serde_json::{Map, Value};

use crate::domain::{DomainXmlError, splice};
use crate::facts::PodFacts;

/// The sidecar's settings that shape its plan.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The binding's name in the KubeVirt CR: interfaces with `binding: {name: <plugin>}` are
    /// this sidecar's.
    pub plugin: &'a str,
    /// The pod's `/etc/resolv.conf` (kubelet gives every container of the pod the same one).
    pub resolv_conf: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defined {
    pub domain_xml: String,
    /// The guest side of every interface this sidecar serves (its DHCP configuration and
    /// domain interface), in the hand-off record's form.
    pub handoff: Handoff,
}

#[derive(Debug, thiserror::Error)]
pub enum DefineError {
    #[error("vmi: not a JSON object: {0}")]
    VmiJson(String),
    #[error("vmi: {0}")]
    Vmi(String),
    #[error(
        "vmi: interface {network:?} is bound to {plugin:?} but its pod has no netbind pod record for it (was netbind-cni chained with bindingMode and logicNetworkName for this network?)"
    )]
    NoRecord { network: String, plugin: String },
    #[error("plan for network {network:?}: {message}")]
    Plan { network: String, message: String },
    #[error(transparent)]
    Domain(#[from] DomainXmlError),
}

/// The owner of the taps; the sidecar's plan only reads the guest side, where it never shows.
const TAP_OWNER: Owner = Owner { uid: 107, gid: 107 };

pub fn define(
    domain_xml: &[u8],
    vmi_json: &[u8],
    facts: &PodFacts,
    ctx: &Context,
) -> Result<Defined, DefineError> {
    let mut vmi: Value =
        serde_json::from_slice(vmi_json).map_err(|err| DefineError::VmiJson(err.to_string()))?;
    let object = vmi
        .as_object_mut()
        .ok_or_else(|| DefineError::VmiJson("the top level is not an object".into()))?;
    // Go's json.Marshal of an object read from the API often leaves TypeMeta empty.
    for (key, value) in [
        ("apiVersion", "kubevirt.io/v1"),
        ("kind", "VirtualMachineInstance"),
    ] {
        if object
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            object.insert(key.into(), value.into());
        }
    }
    let served = bind_to_recorded_modes(object, facts, ctx.plugin)?;
    let name = object
        .get("metadata")
        .and_then(|meta| {
            Some(format!(
                "{}/{}",
                meta.get("namespace")?.as_str()?,
                meta.get("name")?.as_str()?
            ))
        })
        .unwrap_or_default();
    let mut handoff = Handoff {
        version: HANDOFF_VERSION,
        vmi: name,
        interfaces: Vec::new(),
    };
    if served.is_empty() {
        return Ok(Defined {
            domain_xml: String::from_utf8(domain_xml.to_vec())
                .map_err(|_| DomainXmlError::NotUtf8)?,
            handoff,
        });
    }
    // KubeVirt admitted the VMI already, under the cluster's gates: admission here is for the
    // typed spec, so no feature gate it knows is held against the VMI.
    let cluster = ClusterConfig {
        feature_gates: [
            FeatureGate::PortRangesSpec,
            FeatureGate::PasstBinding,
            FeatureGate::WorkloadEncryptionSEV,
            FeatureGate::WorkloadEncryptionTDX,
        ]
        .into(),
        ..ClusterConfig::default()
    };
    let admitted = check_vmi(&vmi.to_string(), &cluster).map_err(|err| {
        DefineError::Vmi(match err {
            CheckError::Invalid(findings) => findings
                .iter()
                .map(|finding| format!("{}: {}", finding.field, finding.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })
    })?;
    handoff.vmi = admitted.qualified_name();
    for network in &served {
        let opts = PlanOptions {
            owner: TAP_OWNER,
            resolv_conf: ctx.resolv_conf,
            cluster: &cluster,
            networks: Some(std::slice::from_ref(network)),
        };
        let plan =
            netbind_plan::plan(&admitted, &facts.pod, &opts).map_err(|err| DefineError::Plan {
                network: network.clone(),
                message: err.to_string(),
            })?;
        handoff.interfaces.extend(plan.handoff.interfaces);
    }
    let ifaces: Vec<_> = handoff
        .interfaces
        .iter()
        .map(|iface| iface.domain.clone())
        .collect();
    Ok(Defined {
        domain_xml: splice(domain_xml, &ifaces)?,
        handoff,
    })
}

/// Rewrites each interface bound to `plugin` to the core binding its pod record names (what
/// phase 1 set up), and returns their network names.
fn bind_to_recorded_modes(
    vmi: &mut Map<String, Value>,
    facts: &PodFacts,
    plugin: &str,
) -> Result<Vec<String>, DefineError> {
    let mut served = Vec::new();
    let Some(interfaces) = vmi
        .get_mut("spec")
        .and_then(|spec| spec.get_mut("domain"))
        .and_then(|domain| domain.get_mut("devices"))
        .and_then(|devices| devices.get_mut("interfaces"))
        .and_then(Value::as_array_mut)
    else {
        return Ok(served);
    };
    for iface in interfaces.iter_mut().filter_map(Value::as_object_mut) {
        let ours = iface
            .get("binding")
            .and_then(|binding| binding.get("name"))
            .and_then(Value::as_str)
            == Some(plugin);
        if !ours {
            continue;
        }
        let network = iface
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let record = facts
            .record(&network)
            .ok_or_else(|| DefineError::NoRecord {
                network: network.clone(),
                plugin: plugin.into(),
            })?;
        let key = match record.mode {
            BindingKind::Bridge => "bridge",
            _ => "masquerade",
        };
        iface.remove("binding");
        iface.insert(key.into(), Value::Object(Map::new()));
        served.push(network);
    }
    Ok(served)
}
