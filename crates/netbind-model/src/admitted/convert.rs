//! From a spec that passed admission to the typed [`AdmittedVmi`](super::AdmittedVmi).

use super::*;

/// Applies KubeVirt's defaulting, runs every admission rule, and on success returns the typed
/// spec. `spec_path` is where the spec lives in the document (`spec`, `spec.template.spec`).
pub fn admit(
    metadata: ObjectMeta,
    mut spec: VmiSpec,
    status: &VmiStatus,
    spec_path: &str,
    cfg: &ClusterConfig,
) -> Result<AdmittedVmi, Vec<Violation>> {
    if let Err(violation) = apply_defaults(&mut spec, spec_path, cfg) {
        return Err(vec![violation]);
    }
    let violations = validate(&spec, spec_path, cfg);
    if !violations.is_empty() {
        return Err(violations);
    }
    convert(metadata, &spec, status, spec_path, cfg).map_err(|violation| vec![violation])
}

/// The typed form of a spec that passed `validate`. Each step uses the parser the matching
/// admission rule used, so a failure here is a rule missing from admission: it is reported as a
/// violation of that field, never a panic.
fn convert(
    metadata: ObjectMeta,
    spec: &VmiSpec,
    status: &VmiStatus,
    spec_path: &str,
    cfg: &ClusterConfig,
) -> Result<AdmittedVmi, Violation> {
    let networks: Vec<AdmittedNetwork> = spec
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| network(n, &format!("{spec_path}.networks[{i}]")))
        .collect::<Result<_, _>>()?;
    let interfaces = spec
        .domain
        .devices
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, iface)| {
            let path = format!("{spec_path}.domain.devices.interfaces[{i}]");
            let Some((net_idx, (net, raw))) = networks
                .iter()
                .zip(&spec.networks)
                .enumerate()
                .find(|(_, (n, _))| n.name == iface.name)
            else {
                return Err(violation(
                    format!("{path}.name"),
                    "has no network of that name",
                ));
            };
            let net_path = format!("{spec_path}.networks[{net_idx}]");
            interface(iface, net.clone(), (raw, &net_path), &path, cfg)
        })
        .collect::<Result<_, _>>()?;
    let cpu = cpu_topology(spec, spec_path)?;
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    Ok(AdmittedVmi {
        metadata,
        hostname: nonempty(&spec.hostname),
        subdomain: nonempty(&spec.subdomain),
        networks,
        interfaces,
        multiqueue: spec.domain.devices.network_interface_multiqueue == Some(true),
        virtio_transitional: spec.domain.devices.use_virtio_transitional == Some(true),
        cpu,
        launch_security: launch_security_kind(spec),
        rom_tuning: architecture(spec) != "s390x",
        status: AdmittedStatus {
            migration_transport: status.migration_transport.clone(),
            interfaces: status
                .interfaces
                .iter()
                .filter_map(|s| {
                    Some(StatusInterface {
                        network: s.name.clone()?,
                        mac: s.mac.as_deref().and_then(|m| MacAddr::parse_go(m).ok()),
                        pod_interface_name: s.pod_interface_name.clone(),
                    })
                })
                .collect(),
        },
    })
}

/// KubeVirt's guest CPU topology (the mutating webhook's `SetDefaultGuestCPUTopology`, repeated
/// by the converter's `GetCPUTopology`): the counts given, a missing one being 1; with none
/// given, that many sockets as the CPU limit, else the CPU request, rounded up.
fn cpu_topology(spec: &VmiSpec, spec_path: &str) -> Result<CpuTopology, Violation> {
    let cpu = spec.domain.cpu.clone().unwrap_or_default();
    let given = |count: Option<u32>| count.filter(|&n| n != 0);
    let (sockets, cores, threads) = (given(cpu.sockets), given(cpu.cores), given(cpu.threads));
    if sockets.is_some() || cores.is_some() || threads.is_some() {
        return Ok(CpuTopology {
            sockets: sockets.unwrap_or(1),
            cores: cores.unwrap_or(1),
            threads: threads.unwrap_or(1),
        });
    }
    let resources = spec.domain.resources.clone().unwrap_or_default();
    let derived = [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ]
    .into_iter()
    .find_map(|(kind, list)| list.get("cpu").map(|quantity| (kind, quantity)));
    let sockets = match derived {
        None => 1,
        Some((kind, quantity)) => {
            let field = format!("{spec_path}.domain.resources.{kind}.cpu");
            let value = quantity
                .ceil_value()
                .ok_or_else(|| violation(field.clone(), crate::quantity::QUANTITY_SYNTAX))?;
            if value < 0 {
                return Err(violation(field, "must be greater than or equal to 0"));
            }
            u32::try_from(value).unwrap_or(u32::MAX)
        }
    };
    Ok(CpuTopology {
        sockets,
        cores: 1,
        threads: 1,
    })
}

fn architecture(spec: &VmiSpec) -> &str {
    spec.architecture
        .as_deref()
        .filter(|arch| !arch.is_empty())
        .unwrap_or(crate::admission::DEFAULT_ARCHITECTURE)
}

/// KubeVirt's `IsSEVVMI` / `IsSecureExecutionVMI` / `IsTDXVMI` on an admitted spec (admission
/// allowed exactly one type on amd64).
fn launch_security_kind(spec: &VmiSpec) -> Option<LaunchSecurityKind> {
    let security = spec.domain.launch_security.as_ref()?;
    Some(if architecture(spec) == "s390x" {
        LaunchSecurityKind::SecureExecution
    } else if security.snp.is_some() {
        LaunchSecurityKind::Snp
    } else if security.sev.is_some() {
        LaunchSecurityKind::Sev
    } else {
        LaunchSecurityKind::Tdx
    })
}

fn violation(field: String, message: impl Into<String>) -> Violation {
    Violation {
        field,
        message: message.into(),
    }
}

fn network(net: &Network, path: &str) -> Result<AdmittedNetwork, Violation> {
    let source = match (&net.pod, &net.multus, &net.resource_claim) {
        (Some(_), None, None) => NetworkSource::Pod,
        (None, Some(multus), None) => NetworkSource::Multus {
            network_name: multus.network_name.clone().unwrap_or_default(),
            default: multus.default == Some(true),
        },
        (None, None, Some(_)) => NetworkSource::ResourceClaim,
        _ => return Err(violation(path.into(), "should have only one network type")),
    };
    Ok(AdmittedNetwork {
        name: net.name.clone(),
        source,
    })
}

fn interface(
    iface: &Interface,
    network: AdmittedNetwork,
    raw_network: (&Network, &str),
    path: &str,
    cfg: &ClusterConfig,
) -> Result<AdmittedInterface, Violation> {
    let binding = match iface.bindings().as_slice() {
        [BindingKind::Bridge] => Binding::Bridge,
        [BindingKind::Masquerade] => {
            Binding::Masquerade(masquerade(iface, raw_network, path, cfg)?)
        }
        [BindingKind::Sriov] => Binding::Sriov,
        [BindingKind::PasstBinding] => Binding::PasstBinding(PasstBinding {
            ports: iface
                .port_list()
                .iter()
                .enumerate()
                .map(|(j, p)| forward_port(p, &format!("{path}.ports[{j}]")))
                .collect::<Result<_, _>>()?,
        }),
        [BindingKind::Plugin] => {
            let name = iface.binding.clone().unwrap_or_default().name;
            // KubeVirt's `DomainAttachmentByInterfaceName`: the plugin's declared type; an
            // unknown one is as none (the CR's schema allows only these two).
            let attachment = cfg
                .bindings
                .get(&name)
                .and_then(|plugin| plugin.domain_attachment_type.as_deref())
                .and_then(|kind| match kind {
                    "tap" => Some(DomainAttachment::Tap),
                    "managedTap" => Some(DomainAttachment::ManagedTap),
                    _ => None,
                });
            Binding::Plugin { name, attachment }
        }
        _ => {
            return Err(violation(
                path.into(),
                "must have exactly one binding method or binding plugin",
            ));
        }
    };
    let field = |name: &str| format!("{path}.{name}");
    let model = NicModel::parse(iface.model.as_deref())
        .ok_or_else(|| violation(field("model"), "unsupported model"))?;
    let mac = iface
        .mac_address
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| MacAddr::parse_go(m).map_err(|e| violation(field("macAddress"), e.to_string())))
        .transpose()?;
    let pci_address = iface
        .pci_address
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| PciAddress::parse(p).ok_or_else(|| violation(field("pciAddress"), "malformed")))
        .transpose()?;
    let state = InterfaceState::parse(iface.state.as_deref())
        .ok_or_else(|| violation(field("state"), "unsupported"))?;
    let positive = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
    Ok(AdmittedInterface {
        name: iface.name.clone(),
        network,
        binding,
        model,
        mac,
        pci_address,
        boot_order: positive(iface.boot_order),
        acpi_index: positive(iface.acpi_index),
        dhcp: dhcp_extras(iface, &field("dhcpOptions"))?,
        state,
    })
}

fn masquerade(
    iface: &Interface,
    (network, network_path): (&Network, &str),
    path: &str,
    cfg: &ClusterConfig,
) -> Result<MasqueradeBinding, Violation> {
    let pod = network.pod.clone().unwrap_or_default();
    let net_field = |name: &str| format!("{network_path}.pod.{name}");
    let v4 = MasqueradeAddrs::v4(pod.vm_network_cidr.as_deref().unwrap_or(DEFAULT_VM_CIDR_V4))
        .map_err(|e| violation(net_field("vmNetworkCIDR"), e.to_string()))?;
    let v6 = MasqueradeAddrs::v6(
        pod.vm_ipv6_network_cidr
            .as_deref()
            .unwrap_or(DEFAULT_VM_CIDR_V6),
    )
    .map_err(|e| violation(net_field("vmIPv6NetworkCIDR"), e.to_string()))?;
    let forward = if !iface.port_range_list().is_empty() {
        if !cfg.gate(FeatureGate::PortRangesSpec) {
            return Err(violation(
                format!("{path}.portRanges"),
                "the PortRangesSpec feature gate is not enabled",
            ));
        }
        Forward::Ranges(
            iface
                .port_range_list()
                .iter()
                .enumerate()
                .map(|(j, r)| forward_range(r, &format!("{path}.portRanges[{j}]")))
                .collect::<Result<_, _>>()?,
        )
    } else if !iface.port_list().is_empty() {
        Forward::Ports(
            iface
                .port_list()
                .iter()
                .enumerate()
                .map(|(j, p)| forward_port(p, &format!("{path}.ports[{j}]")))
                .collect::<Result<_, _>>()?,
        )
    } else {
        Forward::All
    };
    Ok(MasqueradeBinding {
        v4,
        v6,
        v6_requested: pod.vm_ipv6_network_cidr.is_some(),
        forward,
    })
}

fn forward_port(port: &Port, path: &str) -> Result<ForwardPort, Violation> {
    Ok(ForwardPort {
        protocol: Protocol::parse(port.protocol.as_deref(), Some(Protocol::Tcp))
            .ok_or_else(|| violation(format!("{path}.protocol"), "only TCP or UDP"))?,
        port: port_number(port.port).ok_or_else(|| violation(path.into(), "out of range"))?,
    })
}

fn forward_range(range: &PortRange, path: &str) -> Result<ForwardRange, Violation> {
    let protocol = Protocol::parse(range.protocol.as_deref(), None)
        .ok_or_else(|| violation(format!("{path}.protocol"), "only TCP or UDP"))?;
    let start = port_number(range.start)
        .ok_or_else(|| violation(format!("{path}.start"), "out of range"))?;
    let end =
        port_number(range.end).ok_or_else(|| violation(format!("{path}.end"), "out of range"))?;
    if start > end {
        return Err(violation(path.into(), "start greater than end"));
    }
    Ok(ForwardRange {
        protocol,
        start,
        end,
    })
}

/// `0 < port < 65536`, as admission checks it.
fn port_number(number: i64) -> Option<u16> {
    u16::try_from(number).ok().filter(|p| *p > 0)
}

fn dhcp_extras(iface: &Interface, path: &str) -> Result<DhcpExtras, Violation> {
    let Some(dhcp) = &iface.dhcp_options else {
        return Ok(DhcpExtras::default());
    };
    let ntp_servers = dhcp
        .ntp_servers
        .iter()
        .enumerate()
        .map(|(k, s)| {
            crate::net::parse_ntp_server(s)
                .ok_or_else(|| violation(format!("{path}.ntpServers[{k}]"), "not an IPv4 address"))
        })
        .collect::<Result<_, _>>()?;
    let private_options = dhcp
        .private_options
        .iter()
        .map(|o| {
            u8::try_from(o.option)
                .ok()
                .filter(|c| (224..=254).contains(c))
                .map(|code| PrivateOption {
                    code,
                    value: o.value.clone(),
                })
                .ok_or_else(|| violation(format!("{path}.privateOptions"), "out of range"))
        })
        .collect::<Result<_, _>>()?;
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    Ok(DhcpExtras {
        boot_file_name: nonempty(&dhcp.boot_file_name),
        tftp_server_name: nonempty(&dhcp.tftp_server_name),
        ntp_servers,
        private_options,
    })
}
