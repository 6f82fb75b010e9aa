//! Admission of `ports` and `portRanges` on pod-network interfaces.

use std::collections::{BTreeMap, BTreeSet};

use super::{ClusterConfig, FeatureGate, Rules};
use crate::vmi::Interface;

/// Kubernetes `IsValidPortName` (IANA_SVC_NAME).
fn valid_port_name(text: &str) -> bool {
    text.len() <= 15
        && !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && text.bytes().any(|b| b.is_ascii_lowercase())
        && !text.starts_with('-')
        && !text.ends_with('-')
        && !text.contains("--")
}

fn valid_port(port: i64) -> bool {
    0 < port && port < 65536
}

pub(super) fn ports(
    rules: &mut Rules,
    idx: usize,
    iface: &Interface,
    on_pod: bool,
    cfg: &ClusterConfig,
) {
    let base = rules.iface(idx);
    // KubeVirt checks the gate on every interface, whatever its network, and reports the
    // configuration causes at the interface's name.
    let gated = iface.port_ranges.is_some() && !cfg.gate(FeatureGate::PortRangesSpec);
    if gated {
        rules.push(
            format!("{base}.name"),
            "portRanges is specified on interface but the PortRangesSpec feature gate is not enabled",
        );
    }
    if !on_pod {
        return;
    }
    let mut names = BTreeSet::new();
    for (port_idx, port) in iface.port_list().iter().enumerate() {
        let pf = format!("{base}.ports[{port_idx}]");
        if port.port == 0 {
            rules.push(pf.clone(), "Port field is mandatory.");
        } else if !valid_port(port.port) {
            rules.push(pf.clone(), "Port field must be in range 0 < x < 65536.");
        }
        if !matches!(port.protocol.as_deref().unwrap_or(""), "" | "TCP" | "UDP") {
            rules.push(
                format!("{pf}.protocol"),
                "Unknown protocol, only TCP or UDP allowed",
            );
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            if !names.insert(name) {
                rules.push(
                    format!("{pf}.name"),
                    format!("Duplicate name of the port: {name}"),
                );
            } else if !valid_port_name(name) {
                rules.push(
                    format!("{pf}.name"),
                    format!("Invalid name of the port: {name}"),
                );
            }
        }
    }
    let Some(port_ranges) = &iface.port_ranges else {
        return;
    };
    let rf = format!("{base}.portRanges");
    if gated {
        return;
    }
    if iface.ports.is_some() {
        rules.push(
            format!("{base}.name"),
            "Cannot define both ports and portRanges on interface",
        );
    }
    if iface.masquerade.is_none() {
        rules.push(
            format!("{base}.name"),
            "portRanges are only supported on masquerade interfaces",
        );
    }
    if port_ranges.len() > 10 {
        rules.push(rf.clone(), "No more than 10 portRanges are allowed");
    }
    let mut by_proto: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (port_idx, range) in port_ranges.iter().enumerate() {
        let field = format!("{rf}[{port_idx}]");
        let proto = range.protocol.as_deref().unwrap_or("");
        let mut ok = true;
        if !matches!(proto, "TCP" | "UDP") {
            rules.push(
                format!("{field}.protocol"),
                "Unknown protocol, only TCP or UDP allowed",
            );
            ok = false;
        }
        if !valid_port(range.start) {
            rules.push(
                format!("{field}.start"),
                "Port range start must be in range 0 < x < 65536.",
            );
            ok = false;
        }
        if !valid_port(range.end) {
            rules.push(
                format!("{field}.end"),
                "Port range end must be in range 0 < x < 65536.",
            );
            ok = false;
        }
        if range.start > range.end {
            rules.push(
                field.clone(),
                "Port range start must not be greater than end",
            );
            ok = false;
        }
        if ok {
            by_proto
                .entry(proto)
                .or_default()
                .push((range.start, range.end));
        }
    }
    for (proto, mut ranges) in by_proto {
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            let (prev, curr) = (pair[0], pair[1]);
            // Touching ranges overlap too: KubeVirt compares `curr.start <= prev.end`.
            if curr.0 <= prev.1 {
                rules.push(
                    rf.clone(),
                    format!(
                        "{proto} portRanges [{}-{}] and [{}-{}] overlap",
                        prev.0, prev.1, curr.0, curr.1
                    ),
                );
            }
        }
    }
}
