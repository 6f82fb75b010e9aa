//! `up --runtime containerd`: the same job on a real node runtime. containerd (netbind's own
//! private node, or the one at `--cri-socket`) runs the pod through the CRI: RunPodSandbox
//! with the VMI annotation runs the CNI chain and with it netbind-cni (phase 1); the launcher
//! and QEMU run as locked-down containers of the pod. The record keeps the sandbox and
//! container ids, so that `status` asks the runtime and `down` removes the sandbox (the
//! runtime's CNI DEL runs phase 1's teardown).

use netbind_cri::client::Cri;
use netbind_cri::node::{NODE_LISTEN_PORT, Node, NodeConfig};
use netbind_cri::vmpod::{VmPod, VmPodConfig};

use super::*;

/// What the record keeps of a pod on a CRI runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriPod {
    /// The runtime's CRI socket.
    pub socket: PathBuf,
    pub sandbox: String,
    /// The hand-off directory netbind-cni wrote (root's).
    pub handoff_dir: PathBuf,
    pub launcher: String,
    pub qemu: Option<String>,
    /// The pod runs on netbind's own node, which the last `down` stops.
    pub own_node: bool,
}

/// netbind's own node: one per machine, shared by every `up --runtime containerd`. Its
/// directory is not under /run, which containerd's mount namespace covers with a tmpfs.
pub(crate) fn own_node_config() -> NodeConfig {
    NodeConfig {
        dir: PathBuf::from("/var/lib/netbind/cri-node"),
        netns: "netbind-cri".into(),
        subnet_prefix: "10.253.0".into(),
        netbind_bins: sibling("netbind-cni")
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
        binding_plugin: None,
    }
}

/// The record of the own node's containerd (outside its directory, which stopping removes).
fn own_node_record() -> PathBuf {
    podsim::run_dir().join("cri-node.json")
}

/// Starts netbind's own node unless it runs already (caller holds the simulator's lock).
fn ensure_own_node(progress: &mut Progress) -> Result<NodeConfig, UpError> {
    let config = own_node_config();
    if Node::running(&config) {
        return Ok(config);
    }
    // A node whose containerd is gone (machine restarted, killed): clear it first.
    stop_own_node();
    let node = Node::start(config.clone()).map_err(|e| step_err("node", e.to_string()))?;
    let pid = node.detach();
    let proc = pid.and_then(vm::Proc::of);
    let json = serde_json::to_vec(&proc).map_err(|e| step_err("node", e.to_string()))?;
    std::fs::write(own_node_record(), json).map_err(|source| SimError::Io {
        op: "write",
        path: own_node_record(),
        source,
    })?;
    progress.done(
        "node",
        format!(
            "private containerd (pid {}) in netns {}, socket {}",
            pid.unwrap_or(0),
            config.netns,
            config.socket().display()
        ),
    );
    Ok(config)
}

/// Stops netbind's own node (its pods are removed first).
pub(super) fn stop_own_node() {
    let record: Option<vm::Proc> = std::fs::read(own_node_record())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .flatten();
    let config = own_node_config();
    if record.is_none() && !config.dir.exists() {
        return;
    }
    Node::stop_detached(config, || {
        if let Some(containerd) = record {
            containerd.stop(Duration::from_secs(5));
        }
    });
    let _ = std::fs::remove_file(own_node_record());
}

/// The pod's directories the containers mount (the launcher's and the VM's writable ones,
/// the logs): not under /run, which netbind's own node covers with a tmpfs of its own.
pub(crate) fn cri_work_dir(name: &str) -> PathBuf {
    PathBuf::from("/var/lib/netbind/cri-pods").join(name)
}

/// Whether any other pod still runs on the own node.
fn own_node_in_use(except: &str) -> bool {
    record::records()
        .iter()
        .any(|r| r.name != except && r.cri.as_ref().is_some_and(|c| c.own_node))
}

pub(super) fn bring_up(
    args: &UpArgs,
    rec: &mut PodRecord,
    progress: &mut Progress,
    listen: Listen,
    vmi_text: &str,
) -> Result<GuestReport, UpError> {
    let (socket, own) = match &args.cri_socket {
        Some(sock_path) => (sock_path.clone(), None),
        None => {
            let _lock = podsim::Lock::take_unless(&interrupted)?;
            let config = ensure_own_node(progress)?;
            (config.socket(), Some(config))
        }
    };
    let mut cri =
        Cri::connect(&socket.display().to_string()).map_err(|e| step_err("node", e.to_string()))?;
    let version = cri.version().map_err(|e| step_err("node", e.to_string()))?;
    progress.done("runtime", format!("{version} at {}", socket.display()));
    let gateway = own.as_ref().map(NodeConfig::gateway);
    let config = VmPodConfig {
        name: format!("virt-launcher-{}", rec.name),
        namespace: "default".into(),
        vmi: vmi_text.into(),
        bins: sibling("netbind-launcher")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        guest: vm::GuestImage::locate()?,
        // The guest configures IPv4 when given an egress target. On a runtime that is not
        // ours there is no listener of ours to reach: the guest's attempt at its own loopback
        // fails at once, and egress is not checked.
        cmdline: vm::cmdline(
            &listen.ports(),
            Some(&gateway.as_ref().map_or_else(
                || "127.0.0.1:9".into(),
                |report| format!("{report}:{NODE_LISTEN_PORT}"),
            )),
            None,
        ),
        netbind_run_dir: own
            .as_ref()
            .map_or_else(|| args.cni_run_dir.clone(), NodeConfig::netbind_run_dir),
        work_dir: cri_work_dir(&rec.name),
        // Not under /run: a runtime may give containerd a /run of its own.
        tun: match &own {
            Some(node) => node.tun_node(),
            None => podsim::tun_node_in(Path::new("/var/lib/netbind"))?,
        },
        boot: args.boot.is_some(),
    };
    let pod = VmPod::start(&mut cri, &config).map_err(|e| step_err("pod", e.to_string()))?;
    rec.cri = Some(CriPod {
        socket: socket.clone(),
        sandbox: pod.sandbox.clone(),
        handoff_dir: config.netbind_run_dir.join(&pod.sandbox).join("handoff"),
        launcher: pod.launcher.clone(),
        qemu: pod.qemu.clone(),
        own_node: own.is_some(),
    });
    rec.pod_ip = pod.ip.parse().ok();
    rec.phase1 = true;
    rec.boot = args.boot;
    rec.save()?;
    let short = |id: &str| id.chars().take(12).collect::<String>();
    progress.done(
        "sandbox",
        format!(
            "RunPodSandbox {} ({} ms): pod IP {}, CNI chain bridge + host-local + netbind-cni",
            short(&pod.sandbox),
            pod.run_pod_sandbox.as_millis(),
            pod.ip
        ),
    );
    let first = &pod.handoff.interfaces[0];
    progress.done(
        "phase1",
        format!(
            "netbind-cni: {} via {}, tap {} owned by {}:{}",
            first.bridge,
            first.pod_interface,
            first.tap,
            vm::VM_UID,
            vm::VM_GID
        ),
    );
    progress.done(
        "launcher",
        format!(
            "container {} (uid 107, no capability, read-only root, hand-off mounted read-only): ready",
            short(&pod.launcher)
        ),
    );
    let Some(qemu) = &pod.qemu else {
        return Ok(GuestReport::default());
    };
    progress.done(
        "boot",
        format!("QEMU container {} on {}", short(qemu), first.tap),
    );
    check_interrupt()?;
    let mut report = GuestReport {
        boot: args.boot,
        ..GuestReport::default()
    };
    let lease = vm::wait_for_line(
        pod.console.path(),
        "NETBIND-GUEST lease ",
        Duration::from_secs(180),
        &interrupted,
    )
    .ok_or_else(|| step_err("lease", "the guest got no DHCP lease within 180 s"))?;
    report.time_to_lease_ms =
        Some(u64::try_from(pod.started.elapsed().as_millis()).unwrap_or(u64::MAX));
    report.lease_ip = checks::field(&lease, "ip").map(String::from);
    report.lease_router = checks::field(&lease, "router").map(String::from);
    report.lease_mtu = checks::field(&lease, "mtu").and_then(|m| m.parse().ok());
    rec.lease = report.lease_ip.clone();
    rec.save()?;
    progress.done(
        "lease",
        format!(
            "guest {} router {} mtu {} ({:.1} s after RunPodSandbox)",
            report.lease_ip.as_deref().unwrap_or("?"),
            report.lease_router.as_deref().unwrap_or("?"),
            report.lease_mtu.unwrap_or(0),
            report.time_to_lease_ms.unwrap_or(0) as f64 / 1000.0
        ),
    );
    let line = |needle: &str, secs| {
        vm::wait_for_line(
            pod.console.path(),
            needle,
            Duration::from_secs(secs),
            &interrupted,
        )
        .is_some()
    };
    report.ping_gateway = Some(line("NETBIND-GUEST ping-gateway ok", 30));
    progress.done(
        "ping",
        format!(
            "guest → gateway {}: {}",
            report.lease_router.as_deref().unwrap_or("?"),
            checks::ok_str(report.ping_gateway)
        ),
    );
    if let (Some(own), Some(gw)) = (&own, &gateway) {
        report.egress = Some(line("NETBIND-GUEST egress ok", 60));
        progress.done(
            "egress",
            format!(
                "guest → node {gw}:{NODE_LISTEN_PORT}: {}",
                checks::ok_str(report.egress)
            ),
        );
        let ip: IpAddr = pod.ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED.into());
        report.ingress = Some(checks::reaches_guest(
            &own.netns,
            ip,
            listen.forwarded,
            Duration::from_secs(15),
        ));
        let target = std::net::SocketAddr::new(ip, listen.forwarded);
        report.ingress_target = Some(target.to_string());
        progress.done(
            "ingress",
            format!(
                "node → pod {target} → guest: {}",
                checks::ok_str(report.ingress)
            ),
        );
    }
    if cri.exited(&pod.launcher).ok().flatten().is_some() {
        return Err(step_err("supervise", "the launcher container exited"));
    }
    if [report.ping_gateway, report.egress, report.ingress].contains(&Some(false)) {
        return Err(step_err(
            "connectivity",
            "a connectivity check failed (see above)",
        ));
    }
    Ok(report)
}

/// The pod's phase, from the runtime's container states.
pub(super) fn phase(cri_pod: &CriPod) -> String {
    let Ok(mut cri) = Cri::connect(&cri_pod.socket.display().to_string()) else {
        return format!(
            "failed: the runtime at {} does not answer",
            cri_pod.socket.display()
        );
    };
    let state = |cri: &mut Cri, id: &str| cri.exited(id);
    match state(&mut cri, &cri_pod.launcher) {
        Ok(Some(err)) => return format!("failed: the launcher container exited ({})", err.code),
        Err(err) => return format!("failed: {err}"),
        Ok(None) => {}
    }
    if let Some(qemu) = &cri_pod.qemu
        && let Ok(Some(err)) = state(&mut cri, qemu)
    {
        return format!("failed: the VM container exited ({})", err.code);
    }
    "running".into()
}

/// Removes the pod through the runtime (StopPodSandbox and RemovePodSandbox run the CNI DELs,
/// and with them phase 1's teardown), and the own node when no pod is left on it.
pub(super) fn down(rec: &PodRecord, cri_pod: &CriPod) {
    match Cri::connect(&cri_pod.socket.display().to_string()) {
        Ok(mut cri) => {
            if let Err(err) = cri.remove_pod(&cri_pod.sandbox) {
                eprintln!("netbind down: {err}");
            }
        }
        Err(err) => eprintln!("netbind down: {err}"),
    }
    down::remove_pod_dir(&cri_work_dir(&rec.name));
    if cri_pod.own_node
        && !own_node_in_use(&rec.name)
        && let Ok(_lock) = podsim::Lock::take_unless(&interrupted)
    {
        stop_own_node();
    }
}
