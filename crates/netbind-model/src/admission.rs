//! KubeVirt's defaulting (mutating webhook) and admission rules (validating webhook) for the
//! networking part of a VMI spec, with KubeVirt's messages and field paths.
//!
//! Every rule runs and every violation is returned, so a user sees all problems of a file at
//! once. The evaluation order follows KubeVirt's `pkg/network/admitter` `Validate()`.

use crate::admitted::{InterfaceState, NicModel};
use crate::handoff::PciAddress;
use crate::net::parse_ntp_server;
use crate::types::{MacAddr, MacError};
use crate::vmi::{BindingKind, Interface, Marker, Network, PodNetwork, VmiSpec};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::cluster::{ClusterConfig, FeatureGate};

/// One admission failure: the field path (as KubeVirt prints it) and its message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

const MAX_ITEMS: usize = 256;

/// KubeVirt's `SetDefaultNetworkInterface`: an empty spec gets the pod network with the
/// cluster's default binding.
pub fn apply_defaults(
    spec: &mut VmiSpec,
    spec_path: &str,
    cfg: &ClusterConfig,
) -> Result<(), Violation> {
    let devices = &spec.domain.devices;
    if devices.autoattach_pod_interface == Some(false)
        || !devices.interfaces.is_empty()
        || !spec.networks.is_empty()
    {
        return Ok(());
    }
    let mut iface = Interface {
        name: "default".into(),
        ..Interface::default()
    };
    match cfg.default_network_interface.as_str() {
        "masquerade" => iface.masquerade = Some(Marker {}),
        "slirp" => {
            return Err(Violation {
                field: format!("{spec_path}.domain.devices.interfaces"),
                message: "slirp interface is deprecated as of v1.3".into(),
            });
        }
        // Any other value, valid or not, falls back to bridge as KubeVirt does.
        _ => {
            if !cfg.permit_bridge_interface_on_pod_network {
                return Err(Violation {
                    field: format!("{spec_path}.domain.devices.interfaces"),
                    message: "bridge interface is not enabled in kubevirt-config".into(),
                });
            }
            iface.bridge = Some(Marker {});
        }
    }
    spec.domain.devices.interfaces.push(iface);
    spec.networks.push(Network {
        name: "default".into(),
        pod: Some(PodNetwork::default()),
        ..Network::default()
    });
    Ok(())
}

/// The spec under check, where it lives in the document, and the violations found so far.
struct Rules<'a> {
    spec: &'a VmiSpec,
    root: &'a str,
    out: Vec<Violation>,
}

impl Rules<'_> {
    fn push(&mut self, field: String, message: impl Into<String>) {
        self.out.push(Violation {
            field,
            message: message.into(),
        });
    }
    fn iface(&self, index: usize) -> String {
        format!("{}.domain.devices.interfaces[{index}]", self.root)
    }
    fn net(&self, index: usize) -> String {
        format!("{}.networks[{index}]", self.root)
    }
}

/// Runs every admission rule on an already defaulted spec.
pub fn validate(spec: &VmiSpec, spec_path: &str, cfg: &ClusterConfig) -> Vec<Violation> {
    let mut rules = Rules {
        spec,
        root: spec_path,
        out: Vec::new(),
    };
    max_items(&mut rules);
    discontinued_bindings(&mut rules);
    single_pod_network(&mut rules);
    network_sources(&mut rules);
    interface_state(&mut rules);
    binding_methods(&mut rules, cfg);
    unique_names(&mut rules);
    interface_fields(&mut rules, cfg);
    boot_order(&mut rules);
    probes(&mut rules);
    vm_network_cidrs(&mut rules);
    launch_security(&mut rules, cfg);
    rules.out
}

fn max_items(rules: &mut Rules) {
    let count = rules.spec.domain.devices.interfaces.len();
    if count > MAX_ITEMS {
        let field = format!("{}.domain.devices.interfaces", rules.root);
        rules.push(
            field,
            format!("Too many: {count}: must have at most {MAX_ITEMS} items"),
        );
    }
    let count = rules.spec.networks.len();
    if count > MAX_ITEMS {
        let field = format!("{}.networks", rules.root);
        rules.push(
            field,
            format!("Too many: {count}: must have at most {MAX_ITEMS} items"),
        );
    }
}

fn discontinued_bindings(rules: &mut Rules) {
    for (idx, iface) in rules.spec.domain.devices.interfaces.iter().enumerate() {
        let base = rules.iface(idx);
        if iface.slirp.is_some() {
            rules.push(
                format!("{base}.slirp"),
                "Slirp interface support has been discontinued since v1.3",
            );
        }
        if iface.passt.is_some() {
            rules.push(
                format!("{base}.passt"),
                "Passt network binding has been discontinued since v1.3",
            );
        }
        if iface.macvtap.is_some() {
            rules.push(
                format!("{base}.macvtap"),
                "Macvtap network binding has been discontinued since v1.3",
            );
        }
    }
}

fn single_pod_network(rules: &mut Rules) {
    let pods = rules.spec.networks.iter().filter(|n| n.is_pod()).count();
    let multus_defaults = rules
        .spec
        .networks
        .iter()
        .filter(|n| n.is_multus_default())
        .count();
    if pods > 1 {
        // KubeVirt names `<spec>.interfaces` here (sic), not the devices path.
        let field = format!("{}.interfaces", rules.root);
        rules.push(
            field.clone(),
            format!("more than one interface is connected to a pod network in {field}"),
        );
    }
    if multus_defaults > 1 {
        let field = format!("{}.networks", rules.root);
        rules.push(field, "Multus CNI should only have one default network");
    }
    if pods > 0 && multus_defaults > 0 {
        let field = format!("{}.networks", rules.root);
        rules.push(
            field,
            "Pod network cannot be defined when Multus default network is defined",
        );
    }
}

fn network_sources(rules: &mut Rules) {
    for (idx, net) in rules.spec.networks.iter().enumerate() {
        let sources = [
            net.pod.is_some(),
            net.multus.is_some(),
            net.resource_claim.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources == 0 {
            rules.push(rules.net(idx), "should have a network type");
        } else if sources > 1 {
            rules.push(rules.net(idx), "should have only one network type");
        }
    }
    // KubeVirt reports only the first multus network without a name.
    if let Some(idx) = rules.spec.networks.iter().position(|net| {
        net.multus
            .as_ref()
            .is_some_and(|m| m.network_name.as_deref().unwrap_or("").is_empty())
    }) {
        rules.push(
            rules.net(idx),
            "CNI delegating plugin must have a networkName",
        );
    }
}

fn default_network(spec: &VmiSpec) -> Option<&Network> {
    spec.networks.iter().find(|n| n.is_primary())
}

fn interface_state(rules: &mut Rules) {
    let default_name = default_network(rules.spec).map(|n| n.name.clone());
    for (idx, iface) in rules.spec.domain.devices.interfaces.iter().enumerate() {
        let state = iface.state.as_deref().unwrap_or("");
        let field = format!("{}.state", rules.iface(idx));
        let name = &iface.name;
        if InterfaceState::parse(Some(state)).is_none() {
            rules.push(
                field.clone(),
                format!("logical {name} interface state value is unsupported: {state}"),
            );
        }
        if iface.sriov.is_some() && matches!(state, "up" | "down") {
            rules.push(
                field.clone(),
                format!("{name:?} interface's state {state:?} is not supported for SR-IOV NICs"),
            );
        }
        if state == "absent" && iface.bridge.is_none() {
            rules.push(
                field.clone(),
                format!(
                    "{name:?} interface's state {state:?} is supported only for bridge binding"
                ),
            );
        }
        if state == "absent" && default_name.as_deref() == Some(name.as_str()) {
            rules.push(
                field,
                format!(
                    "{name:?} interface's state {state:?} is not supported on default networks"
                ),
            );
        }
    }
}

fn binding_methods(rules: &mut Rules, cfg: &ClusterConfig) {
    let nets: BTreeMap<&str, &Network> = rules
        .spec
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n))
        .collect();
    for (idx, iface) in rules.spec.domain.devices.interfaces.iter().enumerate() {
        let base = rules.iface(idx);
        if iface.bindings().len() != 1 {
            rules.push(
                base.clone(),
                format!(
                    "logical {} interface must have exactly one binding method or binding plugin",
                    iface.name
                ),
            );
        }
        // KubeVirt looks the network up in a map: an interface without one meets a network
        // with no source, which is not the pod network either.
        let on_pod = nets.get(iface.name.as_str()).is_some_and(|n| n.is_pod());
        if iface.masquerade.is_some() && !on_pod {
            rules.push(
                format!("{base}.name"),
                "Masquerade interface only implemented with pod network",
            );
        }
        if iface.masquerade.is_some() && iface.mac_address.as_deref() == Some("02:00:00:00:00:00") {
            rules.push(
                format!("{base}.macAddress"),
                "The requested MAC address is reserved for the in-pod bridge. Please choose another one.",
            );
        }
        if iface.bridge.is_some() && on_pod && !cfg.permit_bridge_interface_on_pod_network {
            rules.push(
                format!("{base}.name"),
                "Bridge on pod network configuration is not enabled under kubevirt-config",
            );
        }
        // Both causes, independently, as KubeVirt's passt admitter reports them.
        if iface.passt_binding.is_some() && !cfg.gate(FeatureGate::PasstBinding) {
            rules.push(
                format!("{base}.name"),
                "PasstBinding feature gate is not enabled",
            );
        }
        if iface.passt_binding.is_some() && !on_pod {
            rules.push(
                format!("{base}.name"),
                "PasstBinding interface only implemented with pod network",
            );
        }
    }
}

fn unique_names(rules: &mut Rules) {
    let mut seen = BTreeSet::new();
    for (idx, net) in rules.spec.networks.iter().enumerate() {
        if !seen.insert(net.name.as_str()) {
            rules.push(
                format!("{}.name", rules.net(idx)),
                format!(
                    "Network with name {:?} already exists, every network must have a unique name",
                    net.name
                ),
            );
        }
    }
    let ifaces: BTreeSet<&str> = rules
        .spec
        .domain
        .devices
        .interfaces
        .iter()
        .map(|idx| idx.name.as_str())
        .collect();
    for (idx, net) in rules.spec.networks.iter().enumerate() {
        if !ifaces.contains(net.name.as_str()) {
            let field = format!("{}.name", rules.net(idx));
            rules.push(field.clone(), format!("{field} '{}' not found.", net.name));
        }
    }
    let nets: BTreeSet<&str> = rules
        .spec
        .networks
        .iter()
        .map(|net| net.name.as_str())
        .collect();
    let mut seen = BTreeSet::new();
    for (idx, iface) in rules.spec.domain.devices.interfaces.iter().enumerate() {
        let field = format!("{}.name", rules.iface(idx));
        if !nets.contains(iface.name.as_str()) {
            rules.push(
                field.clone(),
                format!("{field} '{}' not found.", iface.name),
            );
        }
        if !seen.insert(iface.name.as_str()) {
            rules.push(
                field,
                "Only one interface can be connected to one specific network",
            );
        }
    }
}

fn valid_iface_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// KubeVirt's `validateInterfacesFields`: per interface, in this order, its name, model, MAC,
/// PCI address, ports, port ranges and DHCP options (so one interface's causes come before the
/// next one's).
fn interface_fields(rules: &mut Rules, cfg: &ClusterConfig) {
    let spec = rules.spec;
    let nets: BTreeMap<&str, &Network> =
        spec.networks.iter().map(|n| (n.name.as_str(), n)).collect();
    for (idx, iface) in spec.domain.devices.interfaces.iter().enumerate() {
        interface_basics(rules, idx, iface);
        let on_pod = nets.get(iface.name.as_str()).is_some_and(|n| n.is_pod());
        ports(rules, idx, iface, on_pod, cfg);
        dhcp_options(rules, idx, iface);
    }
}

fn interface_basics(rules: &mut Rules, idx: usize, iface: &Interface) {
    let base = rules.iface(idx);
    let name_f = format!("{base}.name");
    if !valid_iface_name(&iface.name) {
        rules.push(
                name_f.clone(),
                "Network interface name can only contain alphabetical characters, numbers, dashes (-) or underscores (_)",
            );
    }
    if let Some(model) = iface.model.as_deref().filter(|m| !m.is_empty())
        && NicModel::parse(Some(model)).is_none()
    {
        rules.push(
            format!("{base}.model"),
            format!("interface {name_f} uses model {model} that is not supported."),
        );
    }
    if let Some(mac) = iface.mac_address.as_deref().filter(|m| !m.is_empty()) {
        match MacAddr::parse_go(mac) {
            Ok(_) => {}
            Err(MacError::Malformed(_)) => rules.push(
                format!("{base}.macAddress"),
                format!("interface {name_f} has malformed MAC address ({mac})."),
            ),
            Err(MacError::TooLong(_)) => rules.push(
                format!("{base}.macAddress"),
                format!("interface {name_f} has too long MAC address ({mac})."),
            ),
        }
    }
    if let Some(pci) = iface.pci_address.as_deref().filter(|p| !p.is_empty())
        && PciAddress::parse(pci).is_none()
    {
        rules.push(
            format!("{base}.pciAddress"),
            format!("interface {name_f} has malformed PCI address ({pci})."),
        );
    }
}

fn dhcp_options(rules: &mut Rules, idx: usize, iface: &Interface) {
    let Some(dhcp) = &iface.dhcp_options else {
        return;
    };
    let base = format!("{}.dhcpOptions", rules.iface(idx));
    // KubeVirt reports the private-option causes at the spec's own path (its test expects
    // the bare root), one per option out of range.
    let root = rules.root.to_string();
    let mut codes = BTreeSet::new();
    if dhcp.private_options.iter().any(|o| !codes.insert(o.option)) {
        rules.push(
            root.clone(),
            "Found Duplicates: you have provided duplicate DHCPPrivateOptions",
        );
    }
    for option in &dhcp.private_options {
        if !(224..=254).contains(&option.option) {
            rules.push(
                root.clone(),
                "provided DHCPPrivateOptions are out of range, must be in range 224 to 254",
            );
        }
    }
    for (ntp_idx, ntp) in dhcp.ntp_servers.iter().enumerate() {
        if parse_ntp_server(ntp).is_none() {
            rules.push(
                format!("{base}.ntpServers[{ntp_idx}]"),
                "NTP servers must be a list of valid IPv4 addresses.",
            );
        }
    }
}

fn boot_order(rules: &mut Rules) {
    let mut used = BTreeSet::new();
    for (idx, disk) in rules.spec.domain.devices.disks.iter().enumerate() {
        if let Some(order) = disk.boot_order {
            let field = format!("{}.domain.devices.disks[{idx}].bootOrder", rules.root);
            if order < 1 {
                rules.push(
                    field.clone(),
                    format!(
                        "{} must have a boot order > 0, if supplied",
                        &field[..field.len() - ".bootOrder".len()]
                    ),
                );
            } else if !used.insert(order) {
                rules.push(
                    field.clone(),
                    format!("Boot order for {field} already set for a different device."),
                );
            }
        }
    }
    for (idx, iface) in rules.spec.domain.devices.interfaces.iter().enumerate() {
        if let Some(order) = iface.boot_order {
            let base = rules.iface(idx);
            let field = format!("{base}.bootOrder");
            if order < 1 {
                rules.push(
                    field,
                    format!("{base} must have a boot order > 0, if supplied"),
                );
            } else if !used.insert(order) {
                rules.push(
                    field.clone(),
                    format!("Boot order for {field} already set for a different device."),
                );
            }
        }
    }
}

fn probes(rules: &mut Rules) {
    let has_pod = rules.spec.networks.iter().any(Network::is_pod);
    if has_pod {
        return;
    }
    for (name, probe) in [
        ("readinessProbe", &rules.spec.readiness_probe),
        ("livenessProbe", &rules.spec.liveness_probe),
    ] {
        let Some(found) = probe else { continue };
        for (kind, set) in [
            ("httpGet", found.http_get.is_some()),
            ("tcpSocket", found.tcp_socket.is_some()),
        ] {
            if set {
                let field = format!("{}.{name}.{kind}", rules.root);
                rules.out.push(Violation {
                    message: format!("{field} is only allowed if the Pod Network is attached"),
                    field,
                });
            }
        }
    }
}

/// Not a KubeVirt admission rule (KubeVirt fails the VMI later, in phase 1): netbind checks the
/// masquerade CIDRs up front so `validate` catches what `plan` would refuse.
fn vm_network_cidrs(rules: &mut Rules) {
    let masq_on: BTreeSet<&str> = rules
        .spec
        .domain
        .devices
        .interfaces
        .iter()
        .filter(|idx| idx.binding_kind() == Some(BindingKind::Masquerade))
        .map(|idx| idx.name.as_str())
        .collect();
    for (idx, net) in rules.spec.networks.iter().enumerate() {
        let Some(pod) = &net.pod else { continue };
        if !masq_on.contains(net.name.as_str()) {
            continue;
        }
        let field = format!("{}.pod", rules.net(idx));
        if let Some(v4) = pod.vm_network_cidr.as_deref()
            && let Err(err) = crate::net::MasqueradeAddrs::v4(v4)
        {
            rules.push(format!("{field}.vmNetworkCIDR"), err.to_string());
        }
        if let Some(v6) = pod.vm_ipv6_network_cidr.as_deref()
            && let Err(err) = crate::net::MasqueradeAddrs::v6(v6)
        {
            rules.push(format!("{field}.vmIPv6NetworkCIDR"), err.to_string());
        }
    }
}

mod launch_security;
mod ports;
pub use launch_security::DEFAULT_ARCHITECTURE;
use launch_security::launch_security;
use ports::ports;

#[cfg(test)]
mod tests;
