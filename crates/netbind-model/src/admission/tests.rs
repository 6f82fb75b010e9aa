use super::*;
use crate::yaml::load_vmi;

fn spec(yaml_spec: &str) -> VmiSpec {
    let text = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  name: t\nspec:\n{yaml_spec}"
    );
    load_vmi(&text).expect("test YAML decodes").spec
}

fn run(yaml_spec: &str, cfg: &ClusterConfig) -> Vec<(String, String)> {
    let mut spec = spec(yaml_spec);
    if let Err(violation) = apply_defaults(&mut spec, "spec", cfg) {
        return vec![(violation.field, violation.message)];
    }
    validate(&spec, "spec", cfg)
        .into_iter()
        .map(|violation| (violation.field, violation.message))
        .collect()
}

fn one(yaml_spec: &str, cfg: &ClusterConfig) -> (String, String) {
    let mut violations = run(yaml_spec, cfg);
    assert_eq!(
        violations.len(),
        1,
        "expected exactly one violation, got {violations:#?}"
    );
    violations.remove(0)
}

fn pair(field: &str, message: &str) -> (String, String) {
    (field.to_string(), message.to_string())
}

const MASQ: &str = "  domain:\n    devices:\n      interfaces:\n      - name: default\n        masquerade: {}\n  networks:\n  - name: default\n    pod: {}\n";

#[test]
fn valid_masquerade_has_no_violation() {
    assert_eq!(run(MASQ, &ClusterConfig::default()), vec![]);
}

#[test]
fn defaulting_adds_bridge_pod_network() {
    let mut vmi_spec = spec("  domain:\n    devices: {}\n");
    apply_defaults(&mut vmi_spec, "spec", &ClusterConfig::default()).expect("defaults");
    assert_eq!(vmi_spec.networks[0].name, "default");
    assert!(vmi_spec.networks[0].pod.is_some());
    assert_eq!(
        vmi_spec.domain.devices.interfaces[0].binding_kind(),
        Some(BindingKind::Bridge)
    );
    let cfg = ClusterConfig {
        default_network_interface: "masquerade".into(),
        ..Default::default()
    };
    let mut vmi_spec = spec("  domain:\n    devices: {}\n");
    apply_defaults(&mut vmi_spec, "spec", &cfg).expect("defaults");
    assert_eq!(
        vmi_spec.domain.devices.interfaces[0].binding_kind(),
        Some(BindingKind::Masquerade)
    );
    // autoattachPodInterface: false leaves the VM without a NIC.
    let mut vmi_spec = spec("  domain:\n    devices:\n      autoattachPodInterface: false\n");
    apply_defaults(&mut vmi_spec, "spec", &ClusterConfig::default()).expect("defaults");
    assert!(vmi_spec.networks.is_empty());
    let cfg = ClusterConfig {
        permit_bridge_interface_on_pod_network: false,
        ..Default::default()
    };
    assert_eq!(
        one("  domain:\n    devices: {}\n", &cfg).1,
        "bridge interface is not enabled in kubevirt-config"
    );
}

#[test]
fn discontinued_bindings() {
    let yaml = MASQ.replace("masquerade: {}", "slirp: {}");
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.domain.devices.interfaces[0].slirp",
            "Slirp interface support has been discontinued since v1.3"
        )),
        "{violations:?}"
    );
}

#[test]
fn two_pod_networks() {
    let yaml = "  domain:\n    devices:\n      interfaces:\n      - name: a\n        masquerade: {}\n      - name: b\n        bridge: {}\n  networks:\n  - name: a\n    pod: {}\n  - name: b\n    pod: {}\n";
    assert_eq!(
        one(yaml, &ClusterConfig::default()),
        pair(
            "spec.interfaces",
            "more than one interface is connected to a pod network in spec.interfaces"
        )
    );
}

#[test]
fn multus_rules() {
    let yaml = "  domain:\n    devices:\n      interfaces:\n      - name: a\n        bridge: {}\n      - name: b\n        bridge: {}\n  networks:\n  - name: a\n    multus: {default: true, networkName: x}\n  - name: b\n    multus: {default: true}\n";
    let violations = run(yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.networks",
            "Multus CNI should only have one default network"
        )),
        "{violations:?}"
    );
    assert!(
        violations.contains(&pair(
            "spec.networks[1]",
            "CNI delegating plugin must have a networkName"
        )),
        "{violations:?}"
    );
    let yaml = MASQ.replace("  - name: default\n    pod: {}\n", "  - name: default\n    pod: {}\n  - name: m\n    multus: {default: true, networkName: x}\n");
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.networks",
            "Pod network cannot be defined when Multus default network is defined"
        )),
        "{violations:?}"
    );
}

#[test]
fn network_source_counts() {
    let yaml = MASQ.replace("    pod: {}\n", "");
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair("spec.networks[0]", "should have a network type")),
        "{violations:?}"
    );
    let yaml = MASQ.replace(
        "    pod: {}\n",
        "    pod: {}\n    multus: {networkName: x}\n",
    );
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.networks[0]",
            "should have only one network type"
        )),
        "{violations:?}"
    );
}

#[test]
fn state_rules() {
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        state: sleepy");
    assert_eq!(
        one(&yaml, &ClusterConfig::default()),
        pair(
            "spec.domain.devices.interfaces[0].state",
            "logical default interface state value is unsupported: sleepy"
        )
    );
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        state: absent");
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.domain.devices.interfaces[0].state",
            "\"default\" interface's state \"absent\" is supported only for bridge binding"
        )),
        "{violations:?}"
    );
    assert!(
        violations.contains(&pair(
            "spec.domain.devices.interfaces[0].state",
            "\"default\" interface's state \"absent\" is not supported on default networks"
        )),
        "{violations:?}"
    );
    let yaml = MASQ.replace("masquerade: {}", "sriov: {}\n        state: down");
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.domain.devices.interfaces[0].state",
            "\"default\" interface's state \"down\" is not supported for SR-IOV NICs"
        )),
        "{violations:?}"
    );
}

#[test]
fn binding_count_and_masquerade_rules() {
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        bridge: {}");
    assert_eq!(
        one(&yaml, &ClusterConfig::default()),
        pair(
            "spec.domain.devices.interfaces[0]",
            "logical default interface must have exactly one binding method or binding plugin"
        )
    );
    let yaml = MASQ.replace(
        "masquerade: {}",
        "masquerade: {}\n        macAddress: \"02:00:00:00:00:00\"",
    );
    assert_eq!(
        one(&yaml, &ClusterConfig::default()),
        pair(
            "spec.domain.devices.interfaces[0].macAddress",
            "The requested MAC address is reserved for the in-pod bridge. Please choose another one."
        )
    );
    // The compare is exact: another spelling of the same MAC passes, as in KubeVirt.
    let yaml = MASQ.replace(
        "masquerade: {}",
        "masquerade: {}\n        macAddress: \"02-00-00-00-00-00\"",
    );
    assert_eq!(run(&yaml, &ClusterConfig::default()), vec![]);
    let yaml = MASQ.replace("    pod: {}\n", "    multus: {networkName: blue}\n");
    assert_eq!(
        one(&yaml, &ClusterConfig::default()),
        pair(
            "spec.domain.devices.interfaces[0].name",
            "Masquerade interface only implemented with pod network"
        )
    );
    let yaml = MASQ.replace("masquerade: {}", "bridge: {}");
    let cfg = ClusterConfig {
        permit_bridge_interface_on_pod_network: false,
        ..Default::default()
    };
    assert_eq!(
        one(&yaml, &cfg),
        pair(
            "spec.domain.devices.interfaces[0].name",
            "Bridge on pod network configuration is not enabled under kubevirt-config"
        )
    );
    let yaml = MASQ.replace("masquerade: {}", "passtBinding: {}");
    assert_eq!(
        one(&yaml, &ClusterConfig::default()),
        pair(
            "spec.domain.devices.interfaces[0].name",
            "PasstBinding feature gate is not enabled"
        )
    );
}

#[test]
fn names_match_one_to_one() {
    let yaml = MASQ.replace(
        "  - name: default\n    pod: {}\n",
        "  - name: other\n    pod: {}\n",
    );
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.networks[0].name",
            "spec.networks[0].name 'other' not found."
        )),
        "{violations:?}"
    );
    assert!(
        violations.contains(&pair(
            "spec.domain.devices.interfaces[0].name",
            "spec.domain.devices.interfaces[0].name 'default' not found."
        )),
        "{violations:?}"
    );
    let yaml = MASQ.replace(
        "  networks:\n",
        "      - name: default\n        masquerade: {}\n  networks:\n",
    );
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.domain.devices.interfaces[1].name",
            "Only one interface can be connected to one specific network"
        )),
        "{violations:?}"
    );
    let yaml = format!("{MASQ}  - name: default\n    pod: {{}}\n");
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(
        violations.contains(&pair(
            "spec.networks[1].name",
            "Network with name \"default\" already exists, every network must have a unique name"
        )),
        "{violations:?}"
    );
    let yaml = MASQ.replace("name: default", "name: de.fault");
    let violations = run(&yaml, &ClusterConfig::default());
    assert!(violations.contains(&pair("spec.domain.devices.interfaces[0].name", "Network interface name can only contain alphabetical characters, numbers, dashes (-) or underscores (_)")), "{violations:?}");
}

#[test]
fn model_mac_pci() {
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        model: virtio-net\n        macAddress: de:ad:00:00:be\n        pciAddress: \"0000:81:11.9\"");
    let violations = run(&yaml, &ClusterConfig::default());
    assert_eq!(
        violations,
        vec![
            pair(
                "spec.domain.devices.interfaces[0].model",
                "interface spec.domain.devices.interfaces[0].name uses model virtio-net that is not supported."
            ),
            pair(
                "spec.domain.devices.interfaces[0].macAddress",
                "interface spec.domain.devices.interfaces[0].name has malformed MAC address (de:ad:00:00:be)."
            ),
            pair(
                "spec.domain.devices.interfaces[0].pciAddress",
                "interface spec.domain.devices.interfaces[0].name has malformed PCI address (0000:81:11.9)."
            ),
        ]
    );
    let yaml = MASQ.replace(
        "masquerade: {}",
        "masquerade: {}\n        macAddress: 02:00:5e:10:00:00:00:01",
    );
    assert_eq!(
        one(&yaml, &ClusterConfig::default()).1,
        "interface spec.domain.devices.interfaces[0].name has too long MAC address (02:00:5e:10:00:00:00:01)."
    );
    let pci = PciAddress::parse("0000:81:1A.1").expect("valid");
    assert_eq!(
        (pci.domain, pci.bus, pci.slot, pci.function),
        (0, 0x81, 0x1a, 1)
    );
    // As written, for the domain XML (KubeVirt copies the digits).
    assert_eq!(
        pci.written.as_ref().map(|text| text.fields()),
        Some(["0000", "81", "1A", "1"])
    );
}

#[test]
fn port_rules() {
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        ports:\n        - port: 0\n        - port: 70000\n        - {port: 80, protocol: tcp}\n        - {port: 81, name: http}\n        - {port: 82, name: http}\n        - {port: 83, name: Bad--Name}\n        - {port: 80, protocol: UDP}");
    let violations = run(&yaml, &ClusterConfig::default());
    assert_eq!(
        violations,
        vec![
            pair(
                "spec.domain.devices.interfaces[0].ports[0]",
                "Port field is mandatory."
            ),
            pair(
                "spec.domain.devices.interfaces[0].ports[1]",
                "Port field must be in range 0 < x < 65536."
            ),
            pair(
                "spec.domain.devices.interfaces[0].ports[2].protocol",
                "Unknown protocol, only TCP or UDP allowed"
            ),
            pair(
                "spec.domain.devices.interfaces[0].ports[4].name",
                "Duplicate name of the port: http"
            ),
            pair(
                "spec.domain.devices.interfaces[0].ports[5].name",
                "Invalid name of the port: Bad--Name"
            ),
        ]
    );
}

#[test]
fn port_range_rules() {
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        portRanges:\n        - {protocol: TCP, start: 100, end: 200}\n        - {protocol: TCP, start: 200, end: 300}\n        - {protocol: UDP, start: 100, end: 200}");
    assert_eq!(
        one(&yaml, &ClusterConfig::default()).1,
        "portRanges is specified on interface but the PortRangesSpec feature gate is not enabled"
    );
    let cfg = ClusterConfig {
        feature_gates: [FeatureGate::PortRangesSpec].into(),
        ..Default::default()
    };
    assert_eq!(
        one(&yaml, &cfg),
        pair(
            "spec.domain.devices.interfaces[0].portRanges",
            "TCP portRanges [100-200] and [200-300] overlap"
        )
    );
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        ports: [{port: 1}]\n        portRanges:\n        - {protocol: TCP, start: 300, end: 200}");
    let violations = run(&yaml, &cfg);
    assert!(
        violations.contains(&pair(
            "spec.domain.devices.interfaces[0].name",
            "Cannot define both ports and portRanges on interface"
        )),
        "{violations:?}"
    );
    assert!(
        violations.contains(&pair(
            "spec.domain.devices.interfaces[0].portRanges[0]",
            "Port range start must not be greater than end"
        )),
        "{violations:?}"
    );
}

#[test]
fn dhcp_option_rules() {
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        dhcpOptions:\n          ntpServers: [\"010.0.0.1\", \"::1\"]\n          privateOptions:\n          - {option: 240, value: a}\n          - {option: 240, value: b}\n          - {option: 100, value: c}");
    let violations = run(&yaml, &ClusterConfig::default());
    assert_eq!(
        violations,
        vec![
            // At the spec's own path, as KubeVirt's tests expect ("fake" there).
            pair(
                "spec",
                "Found Duplicates: you have provided duplicate DHCPPrivateOptions"
            ),
            pair(
                "spec",
                "provided DHCPPrivateOptions are out of range, must be in range 224 to 254"
            ),
            pair(
                "spec.domain.devices.interfaces[0].dhcpOptions.ntpServers[1]",
                "NTP servers must be a list of valid IPv4 addresses."
            ),
        ]
    );
}

#[test]
fn boot_order_rules() {
    let yaml = MASQ
        .replace(
            "    devices:\n",
            "    devices:\n      disks:\n      - {name: d, bootOrder: 1}\n",
        )
        .replace("masquerade: {}", "masquerade: {}\n        bootOrder: 1");
    assert_eq!(
        one(&yaml, &ClusterConfig::default()),
        pair(
            "spec.domain.devices.interfaces[0].bootOrder",
            "Boot order for spec.domain.devices.interfaces[0].bootOrder already set for a different device."
        )
    );
    let yaml = MASQ.replace("masquerade: {}", "masquerade: {}\n        bootOrder: 0");
    assert_eq!(
        one(&yaml, &ClusterConfig::default()),
        pair(
            "spec.domain.devices.interfaces[0].bootOrder",
            "spec.domain.devices.interfaces[0] must have a boot order > 0, if supplied"
        )
    );
}

#[test]
fn probes_need_pod_network() {
    let yaml = "  domain:\n    devices:\n      interfaces:\n      - name: b\n        bridge: {}\n  networks:\n  - name: b\n    multus: {networkName: blue}\n  readinessProbe:\n    tcpSocket: {port: 22}\n";
    assert_eq!(
        one(yaml, &ClusterConfig::default()),
        pair(
            "spec.readinessProbe.tcpSocket",
            "spec.readinessProbe.tcpSocket is only allowed if the Pod Network is attached"
        )
    );
}

#[test]
fn cidr_checked_up_front() {
    let yaml = MASQ.replace("pod: {}", "pod: {vmNetworkCIDR: 10.0.2.0/31}");
    assert_eq!(
        one(&yaml, &ClusterConfig::default()),
        pair(
            "spec.networks[0].pod.vmNetworkCIDR",
            "VM CIDR subnet is too small, at least 2 host addresses are required"
        )
    );
}

#[test]
fn all_errors_reported_at_once() {
    let yaml = MASQ.replace(
        "masquerade: {}",
        "masquerade: {}\n        model: bad\n        state: weird\n        pciAddress: nope",
    );
    assert_eq!(run(&yaml, &ClusterConfig::default()).len(), 3);
}

#[test]
fn spoof_check_names_a_nad_with_or_without_its_namespace() {
    let cfg = ClusterConfig {
        spoof_check_networks: ["blue-net".to_string(), "team/red".to_string()].into(),
        ..ClusterConfig::default()
    };
    assert!(cfg.spoof_checked("blue-net", "default"));
    assert!(cfg.spoof_checked("default/blue-net", "default"));
    assert!(!cfg.spoof_checked("other/blue-net", "default"));
    assert!(cfg.spoof_checked("red", "team"));
    assert!(!cfg.spoof_checked("red", "default"));
    assert!(!ClusterConfig::default().spoof_checked("blue-net", "default"));
}

/// `launchSecurity`, with KubeVirt's causes and field paths (`spec.launchSecurity`, not
/// `spec.domain.launchSecurity`).
#[test]
fn launch_security_rules() {
    let with = |security: &str| {
        MASQ.replace(
            "  domain:\n",
            &format!("  domain:\n    launchSecurity: {security}\n"),
        )
    };
    let sev_gate = ClusterConfig {
        feature_gates: [FeatureGate::WorkloadEncryptionSEV].into(),
        ..Default::default()
    };
    let both_gates = ClusterConfig {
        feature_gates: [
            FeatureGate::WorkloadEncryptionSEV,
            FeatureGate::WorkloadEncryptionTDX,
        ]
        .into(),
        ..Default::default()
    };
    let efi = |yaml: String, efi: &str| {
        yaml.replace(
            "  domain:\n",
            &format!("  domain:\n    firmware: {{bootloader: {{efi: {efi}}}}}\n"),
        )
    };
    let field = "spec.launchSecurity";
    assert_eq!(
        one(&with("{sev: {}}"), &ClusterConfig::default()),
        pair(
            field,
            "WorkloadEncryptionSEV feature gate is not enabled in kubevirt-config"
        )
    );
    assert_eq!(
        one(&with("{sev: {}, tdx: {}}"), &both_gates),
        pair(field, "One and only one launchSecurity type can be set")
    );
    assert_eq!(
        one(&with("{sev: {}}"), &sev_gate),
        pair(field, "SEV requires OVMF (UEFI)")
    );
    // EFI's Secure Boot is on unless turned off; a bootable NIC is refused too, in that order.
    let bootable = efi(with("{snp: {}}"), "{persistent: true}")
        .replace("masquerade: {}", "masquerade: {}\n        bootOrder: 1");
    assert_eq!(
        run(&bootable, &sev_gate),
        vec![
            pair(field, "SNP does not work along with SecureBoot"),
            pair(
                field,
                "SNP does not work along with Persistent EFI variables"
            ),
            pair(field, "SNP does not work with bootable NICs: default"),
        ]
    );
    let attested = efi(with("{sev: {attestation: {}}}"), "{secureBoot: false}");
    assert_eq!(
        one(&attested, &sev_gate),
        pair(field, "SEV attestation requires VMI StartStrategy 'Paused'")
    );
    assert_eq!(
        run(&format!("{attested}  startStrategy: Paused\n"), &sev_gate),
        vec![]
    );
    let tdx =
        efi(with("{tdx: {}}"), "{}").replace("  domain:\n", "  domain:\n    features: {smm: {}}\n");
    assert_eq!(
        one(&tdx, &both_gates),
        pair(field, "TDX does not work along with SMM")
    );
    assert_eq!(
        one(
            &format!("{}  architecture: arm64\n", with("{sev: {}}")),
            &sev_gate
        ),
        pair(
            "spec.architecture",
            "No launchSecurity support for architecture: arm64"
        )
    );
    // s390x: IBM Secure Execution, with no settings to check.
    assert_eq!(
        run(
            &format!("{}  architecture: s390x\n", with("{}")),
            &ClusterConfig::default()
        ),
        vec![]
    );
}

/// KubeVirt's own expectation (`netiface_test.go`, "non-IPv4 NTP servers"): every bad entry
/// reported at its index; and what the API server sanitises instead of rejecting (an
/// IPv4-mapped IPv6 address, leading zeros) is accepted.
#[test]
fn ntp_servers_as_kubevirt_reads_them() {
    let with = |servers: &str| {
        MASQ.replace(
            "masquerade: {}",
            &format!("masquerade: {{}}\n        dhcpOptions:\n          ntpServers: {servers}"),
        )
    };
    let message = "NTP servers must be a list of valid IPv4 addresses.";
    assert_eq!(
        run(&with("['::1', hostname]"), &ClusterConfig::default()),
        vec![
            pair(
                "spec.domain.devices.interfaces[0].dhcpOptions.ntpServers[0]",
                message
            ),
            pair(
                "spec.domain.devices.interfaces[0].dhcpOptions.ntpServers[1]",
                message
            ),
        ]
    );
    assert_eq!(
        run(
            &with("['::ffff:10.0.0.1', '::ffff:a00:2', 010.000.000.003]"),
            &ClusterConfig::default()
        ),
        vec![]
    );
}

/// KubeVirt's binding admitter (`binding.go`, `passt.go`): the passt causes fire independently,
/// and a masquerade or passt interface with no network of its name is not on the pod network.
#[test]
fn masquerade_and_passt_off_the_pod_network() {
    let multus = "  domain:\n    devices:\n      interfaces:\n      - name: blue\n        passtBinding: {}\n  networks:\n  - name: blue\n    multus: {networkName: blue-net}\n";
    assert_eq!(
        run(multus, &ClusterConfig::default()),
        vec![
            pair(
                "spec.domain.devices.interfaces[0].name",
                "PasstBinding feature gate is not enabled"
            ),
            pair(
                "spec.domain.devices.interfaces[0].name",
                "PasstBinding interface only implemented with pod network"
            ),
        ]
    );
    let orphan = "  domain:\n    devices:\n      interfaces:\n      - name: lonely\n        masquerade: {}\n  networks:\n  - name: default\n    pod: {}\n";
    let causes = run(orphan, &ClusterConfig::default());
    assert!(
        causes.contains(&pair(
            "spec.domain.devices.interfaces[0].name",
            "Masquerade interface only implemented with pod network"
        )),
        "{causes:#?}"
    );
}

/// KubeVirt's port-range configuration causes (`netiface.go`, and its test "Cannot define both
/// ports and portRanges"): at the interface's name, and the gate checked on every interface,
/// whatever its network.
#[test]
fn port_range_configuration_causes_name_the_interface() {
    let multus = "  domain:\n    devices:\n      interfaces:\n      - name: blue\n        bridge: {}\n        portRanges: [{protocol: TCP, start: 1, end: 2}]\n  networks:\n  - name: blue\n    multus: {networkName: blue-net}\n";
    assert_eq!(
        run(multus, &ClusterConfig::default()),
        vec![pair(
            "spec.domain.devices.interfaces[0].name",
            "portRanges is specified on interface but the PortRangesSpec feature gate is not enabled"
        )]
    );
    let gate = ClusterConfig {
        feature_gates: [FeatureGate::PortRangesSpec].into(),
        ..Default::default()
    };
    // With the gate, a non-pod network's ranges are not checked.
    assert_eq!(run(multus, &gate), vec![]);
    let bridge_on_pod = MASQ.replace(
        "masquerade: {}",
        "bridge: {}\n        portRanges: [{protocol: TCP, start: 1, end: 2}]",
    );
    assert_eq!(
        run(&bridge_on_pod, &gate),
        vec![pair(
            "spec.domain.devices.interfaces[0].name",
            "portRanges are only supported on masquerade interfaces"
        )]
    );
}

/// One out-of-range cause per private option, as KubeVirt's loop reports them.
#[test]
fn every_private_option_out_of_range_is_reported() {
    let yaml = MASQ.replace(
        "masquerade: {}",
        "masquerade: {}\n        dhcpOptions:\n          privateOptions:\n          - {option: 223, value: a}\n          - {option: 255, value: b}\n          - {option: 240, value: c}",
    );
    let message = "provided DHCPPrivateOptions are out of range, must be in range 224 to 254";
    assert_eq!(
        run(&yaml, &ClusterConfig::default()),
        vec![pair("spec", message), pair("spec", message)]
    );
}

/// KubeVirt checks each interface's fields in one pass (`validateInterfacesFields`): the first
/// interface's causes, all of them, before the second's.
#[test]
fn interface_field_causes_come_interface_by_interface() {
    let yaml = "  domain:\n    devices:\n      interfaces:\n      - name: default\n        masquerade: {}\n        ports: [{port: 70000}]\n        dhcpOptions: {ntpServers: [nope]}\n      - name: blue\n        bridge: {}\n        model: nope\n  networks:\n  - name: default\n    pod: {}\n  - name: blue\n    multus: {networkName: blue-net}\n";
    let fields: Vec<String> = run(yaml, &ClusterConfig::default())
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.domain.devices.interfaces[0].ports[0]",
            "spec.domain.devices.interfaces[0].dhcpOptions.ntpServers[0]",
            "spec.domain.devices.interfaces[1].model",
        ]
    );
}

/// Go decodes `[]` to a non-nil slice and KubeVirt's admitter tests `PortRanges != nil` and
/// `Ports != nil`: an empty list counts as given.
#[test]
fn an_empty_port_list_counts_as_given() {
    let gated = ClusterConfig {
        feature_gates: [FeatureGate::PortRangesSpec].into(),
        ..Default::default()
    };
    let empty_ranges = MASQ.replace("masquerade: {}", "masquerade: {}\n        portRanges: []");
    assert_eq!(
        run(&empty_ranges, &ClusterConfig::default()),
        [pair(
            "spec.domain.devices.interfaces[0].name",
            "portRanges is specified on interface but the PortRangesSpec feature gate is not enabled"
        )]
    );
    assert_eq!(run(&empty_ranges, &gated), []);
    let empty_ports = MASQ.replace(
        "masquerade: {}",
        "masquerade: {}\n        ports: []\n        portRanges: [{protocol: TCP, start: 1, end: 2}]",
    );
    assert_eq!(
        run(&empty_ports, &gated),
        [pair(
            "spec.domain.devices.interfaces[0].name",
            "Cannot define both ports and portRanges on interface"
        )]
    );
    // Absent or null is not given.
    let null_ranges = MASQ.replace(
        "masquerade: {}",
        "masquerade: {}\n        portRanges: null\n        ports: []",
    );
    assert_eq!(run(&null_ranges, &ClusterConfig::default()), []);
}
