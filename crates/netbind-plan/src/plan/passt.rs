//! KubeVirt's core passt binding (feature gate `PasstBinding`): passt, started as the VM's
//! user, connects the guest to the pod interface itself, with its own DHCP, NDP and port
//! forwarding. Phase 1 makes no link and no rule for it; it sets the two pod sysctls KubeVirt
//! sets (passt answers pings through ICMP echo sockets and binds the forwarded ports, below
//! 1024 too, without capabilities), and the domain gets KubeVirt's vhost-user interface with
//! a passt backend. The launcher serves no DHCP on it.

use super::*;
use netbind_model::admitted::{PasstBinding, Protocol};
use netbind_model::handoff::{PasstAttachment, PortForward, PortForwardRange, PortProto};

/// KubeVirt's log file for passt in the launcher pod.
pub const PASST_LOG_FILE: &str = "/var/run/kubevirt/passt.log";

/// Istio's reserved TCP ports, which passt must not forward when the proxy is injected.
pub const ISTIO_RESERVED_PORTS: [u16; 10] = [
    15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090,
];

impl Planner<'_> {
    pub(super) fn passt(
        &mut self,
        iface: &AdmittedInterface,
        binding: &PasstBinding,
        pod_iface: &IfName,
    ) -> Result<(), PlanError> {
        let net = iface.name.as_str();
        let link = self.pod_link(net, pod_iface)?.clone();
        // KubeVirt's netpod for the passt binding: ping_group_range [107, 107] (the launcher's
        // group; here the VM user's) and ip_unprivileged_port_start 0. The range is written as
        // the kernel reads it back, so CHECK compares like with like.
        let gid = self.opts.owner.gid;
        self.global_sysctl("net/ipv4/ping_group_range", &format!("{gid}\t{gid}"));
        self.global_sysctl("net/ipv4/ip_unprivileged_port_start", "0");
        let istio = self
            .vmi
            .annotation("sidecar.istio.io/inject")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut domain = self.domain(iface, pod_iface, link.mac, link.mtu);
        // KubeVirt's converter sets boot order, link state and ROM tuning for tap attachments
        // only; the passt interface gets none of them.
        domain.boot_order = None;
        domain.link_down = false;
        domain.rom_disabled = false;
        domain.passt = Some(PasstAttachment {
            source: pod_iface.clone(),
            log_file: PASST_LOG_FILE.into(),
            mac: iface.mac,
            port_forward: port_forward(binding, istio),
        });
        self.handoff.push(HandoffInterface {
            network: net.into(),
            binding: BindingKind::PasstBinding,
            pod_interface: pod_iface.clone(),
            bridge: pod_iface.clone(),
            tap: pod_iface.clone(),
            dhcpv4: None,
            dhcpv6: None,
            domain,
        });
        Ok(())
    }
}

/// KubeVirt's `generatePasstPortForward`: Istio's reserved ports excluded first, then each
/// listed port under its protocol (TCP when none is given); with no port at all, every TCP and
/// every UDP port.
fn port_forward(binding: &PasstBinding, istio: bool) -> Vec<PortForward> {
    let mut tcp: Vec<PortForwardRange> = Vec::new();
    let mut udp: Vec<PortForwardRange> = Vec::new();
    if istio {
        tcp.extend(ISTIO_RESERVED_PORTS.map(|start| PortForwardRange {
            start,
            exclude: true,
        }));
    }
    for port in &binding.ports {
        let range = PortForwardRange {
            start: port.port,
            exclude: false,
        };
        match port.protocol {
            Protocol::Tcp => tcp.push(range),
            Protocol::Udp => udp.push(range),
        }
    }
    if tcp.is_empty() && udp.is_empty() {
        return vec![
            PortForward {
                proto: PortProto::Tcp,
                ranges: Vec::new(),
            },
            PortForward {
                proto: PortProto::Udp,
                ranges: Vec::new(),
            },
        ];
    }
    [(PortProto::Tcp, tcp), (PortProto::Udp, udp)]
        .into_iter()
        .filter(|(_, ranges)| !ranges.is_empty())
        .map(|(proto, ranges)| PortForward { proto, ranges })
        .collect()
}
