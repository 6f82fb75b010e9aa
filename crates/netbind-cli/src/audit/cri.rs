//! `netbind audit` of a pod on a CRI runtime: the probes run as one more container of the
//! audited pod, locked down as its launcher and QEMU containers are (uid/gid 107, every
//! capability dropped, `no_new_privs`, a read-only root, its own PID namespace, the tun device),
//! and their report is read back from the container's log. The victim of the cross-pod
//! attacks is another pod of the same runtime.

use std::time::Instant;

use netbind_cri::client::{ContainerSpec, Cri, PodSpec};
use netbind_cri::node::APP_IMAGE;

use super::*;
use crate::up::containerd::{CriPod, own_node_config};

/// The process a container runs under its PID 1 (`netbind-vm-exec` runs the program as its
/// child), by host pid and start time.
fn program(cri: &mut Cri, container: &str) -> Option<vm::Proc> {
    let init = vm::Proc::of(cri.container_pid(container).ok()??)?;
    let child = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| netbind_handler::process::parent(*pid) == Some(init.pid))
        .and_then(vm::Proc::of);
    Some(child.unwrap_or(init))
}

/// The stdout of a container, from its CRI log (`TIME STREAM P|F TEXT`: `P` is a partial
/// line, continued by the next entry).
fn stdout_of(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, stream, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
        if stream != Some("stdout") {
            continue;
        }
        out.push_str(text.unwrap_or_default());
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

pub(super) fn run(
    rec: &PodRecord,
    pod: &CriPod,
    victim: &CriPod,
    grants: &[String],
) -> Result<AuditReport, UpError> {
    if !grants.is_empty() {
        return Err(err(
            "--grant models KubeVirt's privileged launcher on the simulator only; on a CRI \
             runtime the audit runs as the pod's containers do",
        ));
    }
    let mut cri =
        Cri::connect(&pod.socket.display().to_string()).map_err(|error| err(error.to_string()))?;
    let handoff = vm::read_handoff(&pod.handoff_dir).map_err(err)?;
    let first = handoff
        .interfaces
        .first()
        .ok_or_else(|| err("the pod has no interface"))?;
    let running = |cri: &mut Cri, c: &CriPod| {
        program(cri, &c.launcher).ok_or_else(|| {
            err(format!(
                "the launcher container {} is not running",
                c.launcher
            ))
        })
    };
    let launcher = running(&mut cri, pod)?;
    let vlauncher = running(&mut cri, victim)?;
    let qemu_of = |cri: &mut Cri, c: &CriPod| c.qemu.as_deref().and_then(|q| program(cri, q));
    let (qemu, vqemu) = (qemu_of(&mut cri, pod), qemu_of(&mut cri, victim));
    let marker = format!("NETBIND-AUDIT-A9-{}", std::process::id());
    // Host pids and host paths: from inside the audited pod, neither can be reached, which
    // is what the cross-pod attacks (A33–A35) try.
    let ctx = serde_json::json!({
        "pod_iface": first.pod_interface.to_string(),
        "bridge": first.bridge.to_string(),
        "tap": first.tap.to_string(),
        "pod_ip": rec.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
        "launcher_pid": launcher.pid,
        "marker": marker,
        "victim": {
            "pod": victim.sandbox,
            "launcher": target(vlauncher),
            "vm": target(vqemu.unwrap_or(vlauncher)),
            "vm_is_qemu": vqemu.is_some(),
            "handoff": victim.handoff_dir.join(HANDOFF_FILE),
        },
    });
    let bins = up::sibling("netbind-audit")?
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let node = own_node_config();
    let spec = ContainerSpec {
        name: format!("netbind-audit-{}", std::process::id()),
        image: APP_IMAGE.into(),
        command: vec![
            "/netbind/netbind-audit".into(),
            "--ctx".into(),
            ctx.to_string(),
            "--layers".into(),
            "caps,vm,launcher".into(),
        ],
        mounts: vec![
            ("/usr".into(), "/usr".into(), true),
            (bins.display().to_string(), "/netbind".into(), true),
        ],
        devices: vec![(node.tun_node().display().to_string(), "/dev/net/tun".into())],
        uid: 107,
        gid: 107,
        ..ContainerSpec::default()
    };
    let sandbox_spec = PodSpec {
        name: format!("virt-launcher-{}", rec.name),
        namespace: "default".into(),
        log_directory: up::containerd::cri_work_dir(&rec.name)
            .join("logs")
            .display()
            .to_string(),
        ..PodSpec::default()
    };
    let stop = AtomicBool::new(false);
    let bound = AtomicBool::new(false);
    let (probed, reached) = std::thread::scope(|scope| {
        let listener = scope.spawn(|| node_listener(&node.netns, marker.clone(), &stop, &bound));
        let started = Instant::now();
        while !bound.load(Ordering::SeqCst)
            && !listener.is_finished()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let probed = (|| -> Result<String, UpError> {
            let id = cri
                .start_container(&pod.sandbox, &sandbox_spec, &spec)
                .map_err(|error| err(error.to_string()))?;
            let started = Instant::now();
            let exit = loop {
                if let Some(exit) = cri.exited(&id).map_err(|error| err(error.to_string()))? {
                    break exit;
                }
                if started.elapsed() > Duration::from_secs(120) {
                    return Err(err("the audit container did not finish in 120 s"));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let log_path = cri.log_path(&id).map_err(|error| err(error.to_string()))?;
            let log_path = std::path::Path::new(&log_path);
            if exit.code != 0 {
                // Its last lines only, escaped: the log is the VM side's and may be 16 MiB.
                return Err(err(format!(
                    "the audit container exited {} ({}); its log's last lines:\n{}",
                    exit.code,
                    exit.reason,
                    vm::read_console_tail(log_path, up::LOG_TAIL_LINES).unwrap_or_default()
                )));
            }
            // The report needs the whole log (capped by the reader).
            let log = vm::read_console(log_path).map_err(|error| err(error.to_string()))?;
            Ok(stdout_of(&String::from_utf8_lossy(&log)))
        })();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        (probed, listener.join().unwrap_or_default())
    });
    let run: ProbeRun = serde_json::from_str(&probed?)
        .map_err(|error| err(format!("netbind-audit output: {error}")))?;
    let held = holds_tun(launcher.pid);
    let rows = verdict_rows(&run, grants, reached, held)?;
    let mut environment = run.environment;
    if let Some(fields) = environment.as_object_mut() {
        fields.insert("runtime".into(), serde_json::json!("containerd"));
        fields.insert("launcher_process".into(), process_status(Some(launcher)));
        fields.insert("qemu_process".into(), process_status(qemu));
        fields.insert(
            "victim".into(),
            serde_json::json!({
                "pod": victim.sandbox,
                "launcher": process_status(Some(vlauncher)),
                "qemu": process_status(vqemu),
            }),
        );
    }
    Ok(AuditReport {
        pod: rec.name.clone(),
        grants: Vec::new(),
        launcher_holds_tun_fd: held,
        rogue_dhcp_reached_node: reached.dhcp,
        environment,
        rows,
    })
}
