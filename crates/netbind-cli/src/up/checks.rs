//! The guest checks `up` reports: leases (DHCPv4, DHCPv6 and the advertised router), pings,
//! egress through the NAT and ingress through the pod's addresses.

use super::*;
use netbind_handler::netns::Netns;

#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestReport {
    pub boot: Option<Boot>,
    pub lease_ip: Option<String>,
    pub lease_router: Option<String>,
    pub lease_mtu: Option<u32>,
    pub time_to_lease_ms: Option<u64>,
    pub ping_gateway: Option<bool>,
    pub egress: Option<bool>,
    pub ingress: Option<bool>,
    pub ingress_target: Option<String>,
    /// IPv6 (a pod network with IPv6): the DHCPv6 address, the default router the guest
    /// learnt from the router advertisements, and the same checks as over IPv4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease6_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease6_router: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping6_gateway: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress6: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress6: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress6_target: Option<String>,
    /// Masquerade with `ports`: a port the guest serves but the spec does not list, at the pod
    /// IP. KubeVirt forwards only the listed ports, so the node must not reach the guest there.
    pub unlisted_target: Option<String>,
    /// The guest serves the unlisted port (reached from inside the pod) and the node does not
    /// reach it through the pod IP.
    pub unlisted_blocked: Option<bool>,
}

pub(super) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

pub(super) fn guest_checks(
    rec: &mut PodRecord,
    progress: &mut Progress,
    console: &Path,
    started: Instant,
    listen: Listen,
    (want_ip, want_ip6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
) -> Result<GuestReport, UpError> {
    let mut report = GuestReport {
        boot: rec.boot,
        ..Default::default()
    };
    let (v4, v6) = (rec.family.v4(), guest_v6(rec));
    // The first lease the guest reports: IPv4's if the pod has it, else IPv6's.
    let first = if v4 {
        "NETBIND-GUEST lease "
    } else {
        "NETBIND-GUEST lease6 "
    };
    let lease = vm::wait_for_line(console, first, Duration::from_secs(180), &interrupted);
    check_interrupt()?;
    let lease =
        lease.ok_or_else(|| step_err("lease", "the guest got no DHCP lease within 180 s"))?;
    report.time_to_lease_ms =
        Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let secs = report.time_to_lease_ms.unwrap_or(0) as f64 / 1000.0;
    if v4 {
        report.lease_ip = field(&lease, "ip").map(String::from);
        report.lease_router = field(&lease, "router").map(String::from);
        report.lease_mtu = field(&lease, "mtu").and_then(|m| m.parse().ok());
        progress.done(
            "lease",
            format!(
                "guest {} router {} mtu {} ({secs:.1} s after boot)",
                report.lease_ip.as_deref().unwrap_or("?"),
                report.lease_router.as_deref().unwrap_or("?"),
                report.lease_mtu.unwrap_or(0),
            ),
        );
        if let Some(want) = want_ip
            && report.lease_ip.as_deref() != Some(&want.to_string())
        {
            return Err(step_err(
                "lease",
                format!("the guest leased {:?}, expected {want}", report.lease_ip),
            ));
        }
    }
    if v6 {
        let lease6 = vm::wait_for_line(
            console,
            "NETBIND-GUEST lease6 ",
            Duration::from_secs(60),
            &interrupted,
        )
        .ok_or_else(|| step_err("lease6", "the guest got no DHCPv6 lease"))?;
        report.lease6_ip = field(&lease6, "ip").map(String::from);
        report.lease6_router = field(&lease6, "router")
            .filter(|r| *r != "none")
            .map(String::from);
        progress.done(
            "lease6",
            format!(
                "guest {} (DHCPv6), default router {} (router advertisement)",
                report.lease6_ip.as_deref().unwrap_or("?"),
                report.lease6_router.as_deref().unwrap_or("NONE"),
            ),
        );
        if let Some(want) = want_ip6
            && report.lease6_ip.as_deref() != Some(&want.to_string())
        {
            return Err(step_err(
                "lease6",
                format!("the guest leased {:?}, expected {want}", report.lease6_ip),
            ));
        }
    }
    rec.lease = report.lease_ip.clone().or_else(|| report.lease6_ip.clone());
    rec.save()?;
    vm::wait_for_line(
        console,
        "NETBIND-GUEST ready",
        Duration::from_secs(60),
        &interrupted,
    )
    .ok_or_else(|| step_err("guest", "the guest did not finish its checks"))?;
    // The guest's own reports, from a console of any size (a guest that printed more than
    // root reads whole must not fail checks it passed).
    let text = vm::lines_containing(console, "NETBIND-GUEST ", 1000)
        .unwrap_or_default()
        .join("\n");
    let port = listen.forwarded;
    if v4 {
        let pod_ip = rec.pod_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let checks = family_checks(
            progress,
            &text,
            "",
            report.lease_router.as_deref(),
            Targets {
                node: podsim::NODE_IP.into(),
                pod: pod_ip.into(),
                port,
            },
            egress_skipped(rec),
        );
        (report.ping_gateway, report.egress, report.ingress) =
            (Some(checks.ping), checks.egress, Some(checks.ingress));
        report.ingress_target = Some(checks.target);
    }
    if v6 {
        let pod_ip6 = rec.pod_ip6.unwrap_or(Ipv6Addr::UNSPECIFIED);
        let checks = family_checks(
            progress,
            &text,
            "6",
            report.lease6_router.as_deref(),
            Targets {
                node: podsim::NODE_IP6.into(),
                pod: pod_ip6.into(),
                port,
            },
            None,
        );
        (report.ping6_gateway, report.egress6, report.ingress6) =
            (Some(checks.ping), checks.egress, Some(checks.ingress));
        report.ingress6_target = Some(checks.target);
    }
    if let Some(port) = listen.unlisted {
        // Proof that the port is served (from inside the pod, straight to the guest), then
        // that the node cannot get to it through the pod IP (IPv4, or IPv6 on an IPv6 pod).
        let (guest_ip, pod_ip): (IpAddr, IpAddr) = if v4 {
            (
                report
                    .lease_ip
                    .as_deref()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(Ipv4Addr::UNSPECIFIED.into()),
                rec.pod_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).into(),
            )
        } else {
            (
                report
                    .lease6_ip
                    .as_deref()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(Ipv6Addr::UNSPECIFIED.into()),
                rec.pod_ip6.unwrap_or(Ipv6Addr::UNSPECIFIED).into(),
            )
        };
        // With passt the guest has the pod's own address, so from inside the pod that address
        // is the pod itself: the guest's own report that it listens is the proof there.
        let served = if rec.binding == BindingKind::PasstBinding {
            text.contains(&format!("NETBIND-GUEST listening port={port}"))
        } else {
            reaches_guest(&rec.netns, guest_ip, port, Duration::from_secs(15))
        };
        let leaked = reaches_guest(podsim::NODE_NS, pod_ip, port, Duration::from_secs(3));
        let at = std::net::SocketAddr::new(pod_ip, port);
        report.unlisted_target = Some(at.to_string());
        report.unlisted_blocked = Some(served && !leaked);
        progress.done(
            "unlisted",
            format!(
                "guest serves {port} (pod → {}: {}), node → pod {at} (not in ports): {}",
                std::net::SocketAddr::new(guest_ip, port),
                if served { "ok" } else { "FAILED" },
                if leaked {
                    "REACHED THE GUEST"
                } else {
                    "blocked"
                }
            ),
        );
    }
    // The launcher must have outlived the checks: a pod without its DHCP server is failed.
    let ph = phase(rec);
    if ph != "running" {
        return Err(step_err("supervise", ph));
    }
    let failed = |b: Option<bool>| b == Some(false);
    if [
        report.ping_gateway,
        report.egress,
        report.ingress,
        report.ping6_gateway,
        report.egress6,
        report.ingress6,
        report.unlisted_blocked,
    ]
    .into_iter()
    .any(failed)
        || (v6 && report.lease6_router.is_none())
    {
        return Err(step_err(
            "connectivity",
            "a connectivity check failed (see above)",
        ));
    }
    Ok(report)
}

/// The checks of one IP family: the guest's ping of its gateway and its egress to the node
/// (as its console reports them), and ingress from the node through the pod's address.
struct FamilyChecks {
    ping: bool,
    /// `None`: not checked (see `egress_skipped`).
    egress: Option<bool>,
    ingress: bool,
    /// Where ingress went (`ADDR:PORT`, `[ADDR]:PORT`).
    target: String,
}

/// Where a family's checks go: the node's listener address, the pod IP and the forwarded
/// port the node reaches the guest on.
struct Targets {
    node: IpAddr,
    pod: IpAddr,
    port: u16,
}

/// Runs and reports the checks of the family whose console lines and steps end in `suffix`
/// ("" for IPv4, "6" for IPv6); egress not when `egress_skipped` says why.
fn family_checks(
    progress: &mut Progress,
    console: &str,
    suffix: &str,
    router: Option<&str>,
    Targets { node, pod, port }: Targets,
    egress_skipped: Option<&str>,
) -> FamilyChecks {
    let ping = console.contains(&format!("NETBIND-GUEST ping{suffix}-gateway ok"));
    progress.done(
        &format!("ping{suffix}"),
        format!(
            "guest → gateway {}: {}",
            router.unwrap_or("?"),
            ok_str(Some(ping))
        ),
    );
    let listener = std::net::SocketAddr::new(node, podsim::NODE_LISTEN_PORT);
    let egress = egress_skipped
        .is_none()
        .then(|| console.contains(&format!("NETBIND-GUEST egress{suffix} ok")));
    progress.done(
        &format!("egress{suffix}"),
        format!(
            "guest → node {listener}: {}",
            egress_skipped.map_or_else(
                || ok_str(egress).to_string(),
                |why| { format!("not checked: {why}") }
            )
        ),
    );
    let target = std::net::SocketAddr::new(pod, port);
    let ingress = reaches_guest(podsim::NODE_NS, pod, port, Duration::from_secs(15));
    progress.done(
        &format!("ingress{suffix}"),
        format!("node → pod {target} → guest: {}", ok_str(Some(ingress))),
    );
    FamilyChecks {
        ping,
        egress,
        ingress,
        target: target.to_string(),
    }
}

/// Why the guest does not try to reach the node (IPv4), if it does not: with the passt
/// binding, Debian 12's passt (0.0~git20230309) segfaults in libc on a guest's first outbound
/// TCP connection on this machine (kernel 6.18), whatever the destination, MTU or build (AVX2
/// or not), and takes the guest's network down with it; tried by hand, recorded in the README.
pub(super) fn egress_skipped(rec: &PodRecord) -> Option<&'static str> {
    (rec.binding == BindingKind::PasstBinding)
        .then_some("Debian 12's passt crashes on a guest's outbound TCP connection here")
}

/// Whether the guest configures and checks IPv6: on an IPv6 pod network with the masquerade
/// binding (DHCPv6 and router advertisements; the bridge binding serves IPv4 only, as
/// KubeVirt's).
pub(super) fn guest_v6(rec: &PodRecord) -> bool {
    rec.family.v6() && rec.binding == BindingKind::Masquerade
}

pub(super) fn ok_str(passed: Option<bool>) -> &'static str {
    if passed == Some(true) { "ok" } else { "FAILED" }
}

/// From the network namespace `ns`: whether an HTTP GET to `ip:port` gets the guest's page
/// within `patience`.
pub(super) fn reaches_guest(ns: &str, ip: IpAddr, port: u16, patience: Duration) -> bool {
    let addr = std::net::SocketAddr::new(ip, port);
    Netns::named(ns)
        .and_then(|n| n.run(|| vm::guest_page_answers(addr, patience)))
        .unwrap_or(false)
}

/// The guest's listeners: the port the node reaches through the pod IP, and for masquerade
/// with `ports` one more that the spec does not forward.
#[derive(Debug, Clone, Copy)]
pub(super) struct Listen {
    pub(super) forwarded: u16,
    pub(super) unlisted: Option<u16>,
}

impl Listen {
    /// The ports for a masquerade interface's forwarding (`None`: the bridge binding). The
    /// forwarded port is the first TCP port the spec lists, 8080 when it lists none; port
    /// ranges and the bridge binding forward more than a list, so nothing is unlisted there.
    pub(super) fn for_forward(forward: Option<&Forward>) -> Listen {
        let tcp: Vec<u16> = match forward {
            Some(Forward::Ports(ports)) => ports
                .iter()
                .filter(|p| p.protocol == Protocol::Tcp)
                .map(|p| p.port)
                .collect(),
            _ => vec![],
        };
        Listen {
            forwarded: tcp.first().copied().unwrap_or(8080),
            unlisted: (!tcp.is_empty())
                .then(|| (8080..9000).find(|p| !tcp.contains(p)))
                .flatten(),
        }
    }

    pub(super) fn ports(self) -> Vec<u16> {
        std::iter::once(self.forwarded)
            .chain(self.unlisted)
            .collect()
    }
}
