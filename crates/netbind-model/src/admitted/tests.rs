use super::*;
use crate::check::check_vmi;

const VMI: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: t, namespace: ns}
spec:
  domain:
    devices:
      interfaces:
      - name: default
        masquerade: {}
        macAddress: 02-00-00-AB-CD-EF
        pciAddress: 0000:81:1f.7
        model: e1000e
        state: down
        bootOrder: 2
        ports: [{port: 80}, {port: 53, protocol: UDP}]
        dhcpOptions:
          ntpServers: [010.000.002.001]
          privateOptions: [{option: 240, value: x}]
      - name: blue
        bridge: {}
        state: absent
  networks:
  - name: default
    pod: {vmIPv6NetworkCIDR: 'fd20::/64'}
  - name: blue
    multus: {networkName: blue-net}
";

#[test]
fn admission_hands_the_planner_parsed_values() {
    let vmi = check_vmi(VMI, &ClusterConfig::default()).expect("admitted");
    assert_eq!(vmi.qualified_name(), "ns/t");
    let first = vmi.interface("default").expect("default");
    assert_eq!(
        first.mac.map(|mac| mac.to_string()).as_deref(),
        Some("02:00:00:ab:cd:ef")
    );
    assert_eq!(first.pci_address, PciAddress::parse("0000:81:1f.7"));
    assert_eq!(
        first
            .pci_address
            .map(|pci| (pci.domain, pci.bus, pci.slot, pci.function)),
        Some((0, 0x81, 0x1f, 7))
    );
    assert_eq!(first.model, NicModel::E1000e);
    assert_eq!(first.state, InterfaceState::Down);
    assert_eq!(first.boot_order, Some(2));
    assert_eq!(first.dhcp.ntp_servers, vec![Ipv4Addr::new(10, 0, 2, 1)]);
    assert_eq!(first.dhcp.private_options[0].code, 240);
    let Binding::Masquerade(masq) = &first.binding else {
        panic!("masquerade expected, got {:?}", first.binding);
    };
    assert_eq!(masq.v4.guest.to_string(), "10.0.2.2/24");
    assert_eq!(masq.v6.gateway.to_string(), "fd20::1/64");
    assert!(masq.v6_requested);
    assert_eq!(
        masq.forward,
        Forward::Ports(vec![
            ForwardPort {
                protocol: Protocol::Tcp,
                port: 80
            },
            ForwardPort {
                protocol: Protocol::Udp,
                port: 53
            },
        ])
    );
    let blue = vmi.interface("blue").expect("blue");
    assert_eq!(blue.binding, Binding::Bridge);
    assert_eq!(blue.state, InterfaceState::Absent);
    assert!(!blue.network.is_primary());
    assert_eq!(
        blue.network.source,
        NetworkSource::Multus {
            network_name: "blue-net".into(),
            default: false
        }
    );
}

#[test]
fn defaults_give_the_pod_network_the_cluster_binding() {
    let text =
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: t}\nspec: {}\n";
    let cfg = ClusterConfig {
        default_network_interface: "masquerade".into(),
        ..ClusterConfig::default()
    };
    let vmi = check_vmi(text, &cfg).expect("admitted");
    assert_eq!(vmi.interfaces.len(), 1);
    assert!(matches!(
        &vmi.interfaces[0].binding,
        Binding::Masquerade(m) if m.forward == Forward::All && !m.v6_requested
    ));
    assert!(vmi.interfaces[0].network.is_primary());
}

/// KubeVirt's guest CPU topology, which sizes the NIC queues.
#[test]
fn cpu_topology_is_derived_as_kubevirt_derives_it() {
    let topology = |domain: &str| {
        let text = format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: t}}\nspec:\n  domain:\n{domain}    devices: {{}}\n"
        );
        check_vmi(&text, &ClusterConfig::default())
            .map(|vmi| {
                let cpu = vmi.cpu;
                (cpu.sockets, cpu.cores, cpu.threads)
            })
            .map_err(|err| format!("{err:?}"))
    };
    assert_eq!(topology(""), Ok((1, 1, 1)));
    // Counts given: a missing (or zero) one is 1, and resources are not read.
    assert_eq!(
        topology("    cpu: {cores: 2, threads: 0}\n    resources: {limits: {cpu: 8}}\n"),
        Ok((1, 2, 1))
    );
    // None given: sockets from the limit before the request, rounded up.
    assert_eq!(
        topology("    resources: {requests: {cpu: 2}, limits: {cpu: 3500m}}\n"),
        Ok((4, 1, 1))
    );
    assert_eq!(
        topology("    cpu: {sockets: 0}\n    resources: {requests: {cpu: '1.2'}}\n"),
        Ok((2, 1, 1))
    );
    assert_eq!(
        topology("    resources: {requests: {cpu: 0}}\n"),
        Ok((0, 1, 1))
    );
    let refused = topology("    resources: {limits: {cpu: lots}}\n").expect_err("bad quantity");
    assert!(
        refused.contains("spec.domain.resources.limits.cpu"),
        "{refused}"
    );
}

#[test]
fn launch_security_reaches_the_planner_typed() {
    let admitted = |extra: &str| {
        let text = format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: t}}\nspec:\n{extra}  domain:\n    launchSecurity: {{}}\n    devices: {{}}\n"
        );
        let vmi = check_vmi(&text, &ClusterConfig::default()).expect("admitted");
        (vmi.launch_security, vmi.rom_tuning)
    };
    // On s390x any launchSecurity is Secure Execution, and there is no ROM to tune.
    assert_eq!(
        admitted("  architecture: s390x\n"),
        (Some(LaunchSecurityKind::SecureExecution), false)
    );
    assert!(LaunchSecurityKind::SecureExecution.protects_devices());
    assert!(!LaunchSecurityKind::Tdx.protects_devices());
}

#[test]
fn sanitised_ntp_servers_reach_the_planner_as_ipv4() {
    let text = VMI.replace(
        "ntpServers: [010.000.002.001]",
        "ntpServers: ['::ffff:10.0.0.1', 010.000.002.001]",
    );
    assert_ne!(text, VMI);
    let vmi = check_vmi(&text, &ClusterConfig::default()).expect("admitted");
    let ntp = &vmi.interface("default").expect("default").dhcp.ntp_servers;
    let shown: Vec<String> = ntp.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.0.0.1", "10.0.2.1"]);
}
