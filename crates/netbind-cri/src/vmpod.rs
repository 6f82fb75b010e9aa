//! A VM pod on a CRI runtime, shaped as KubeVirt's launcher pod: RunPodSandbox with the VMI
//! in the `netbind.io/vmi` annotation (the CNI chain runs netbind-cni), then the launcher and
//! QEMU as two locked-down containers of that pod (uid/gid 107, every capability dropped,
//! `no_new_privs`, a read-only root filesystem, their own PID namespace), the launcher
//! reading its hand-off record from a read-only mount and QEMU given `/dev/net/tun` as a
//! CRI device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netbind_model::handoff::Handoff;
use netbind_podsim::vm::{self, GuestImage};

use crate::CriError;
use crate::client::{ContainerSpec, Cri, PodSpec};
use crate::node::APP_IMAGE;

/// The VM user (KubeVirt's qemu).
pub const VM_UID: i64 = 107;

/// What a VM pod needs.
#[derive(Debug, Clone)]
pub struct VmPodConfig {
    pub name: String,
    pub namespace: String,
    /// The VMI (YAML or JSON) for the annotation.
    pub vmi: String,
    /// netbind's binaries on the host (the launcher is mounted from here).
    pub bins: PathBuf,
    /// The guest image on the host.
    pub guest: GuestImage,
    /// The guest's kernel command line (`vm::cmdline`).
    pub cmdline: String,
    /// netbind-cni's `runDir` in the runtime's chain (where each sandbox's hand-off is).
    pub netbind_run_dir: PathBuf,
    /// Where this pod's writable directories and logs go (created; owned by the VM user
    /// where the containers write).
    pub work_dir: PathBuf,
    /// The 0666 tun node passed as the CRI device `/dev/net/tun`.
    pub tun: PathBuf,
    /// Whether to boot the guest (the QEMU container); without it, the pod runs phase 1 and
    /// the launcher only.
    pub boot: bool,
}

/// A guest's serial console: the file QEMU writes in the pod's VM directory (the VM pod's
/// and the binding plugin's pod alike).
#[derive(Debug, Clone)]
pub struct Console(pub PathBuf);

impl Console {
    /// The file (for a caller that waits on it with its own interruption check).
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The console line containing `needle`, waiting up to `patience`.
    pub fn line(&self, needle: &str, patience: Duration) -> Option<String> {
        vm::wait_for_line(&self.0, needle, patience, &|| false)
    }

    /// The console's last lines (for a failure's message), control characters escaped.
    pub fn tail(&self) -> String {
        vm::read_console_tail(&self.0, 60).unwrap_or_default()
    }
}

/// A running VM pod.
#[derive(Debug, Clone)]
pub struct VmPod {
    pub sandbox: String,
    pub pod: PodSpec,
    /// The pod IP (from the pod network's plugin).
    pub ip: String,
    pub handoff: Handoff,
    pub launcher: String,
    pub qemu: Option<String>,
    /// The guest's serial console (a file in the VM's writable directory).
    pub console: Console,
    /// The `<interface>` elements the launcher wrote for libvirt.
    pub domain_xml: String,
    /// When RunPodSandbox was called, and how long it took.
    pub started: Instant,
    pub run_pod_sandbox: Duration,
}

pub(crate) fn node_err(what: &str, detail: impl std::fmt::Display) -> CriError {
    CriError::Node {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// A directory the VM user writes in.
pub(crate) fn vm_dir(path: PathBuf) -> Result<PathBuf, CriError> {
    std::fs::create_dir_all(&path).map_err(|e| node_err("create a pod directory", e))?;
    std::os::unix::fs::chown(&path, Some(107), Some(107))
        .map_err(|e| node_err("chown a pod directory", e))?;
    Ok(path)
}

pub(crate) fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Waits for a container's ready line (`"event":"ready"`) in its CRI log; its exit, or 30 s
/// without one, is an error quoting the log's last lines.
pub(crate) fn wait_ready(
    cri: &mut Cri,
    container: &str,
    log_path: &Path,
    what: &str,
) -> Result<(), CriError> {
    // Followed as it grows: each look reads only what the container wrote since the last.
    let mut log = vm::Follow::new(log_path);
    let mut is_ready = || matches!(log.next_containing("\"event\":\"ready\""), Ok(Some(_)));
    let started_at = Instant::now();
    while !is_ready() {
        if let Some(exit) = cri.exited(container)? {
            // The container's log (CRI format: time, stream, tag, text) says why.
            let text = vm::read_console_tail(log_path, 5).unwrap_or_default();
            let tail: Vec<&str> = text
                .lines()
                .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l))
                .collect();
            return Err(node_err(
                &format!("{what} exited before it was ready"),
                format!("exit {} {}: {}", exit.code, exit.reason, tail.join(" | ")),
            ));
        }
        if started_at.elapsed() > Duration::from_secs(30) {
            return Err(node_err(what, "not ready in 30 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A virt-launcher pod's sandbox: KubeVirt's label, these annotations, its logs in `logs`.
pub(crate) fn launcher_pod(
    name: &str,
    namespace: &str,
    annotations: HashMap<String, String>,
    logs: &Path,
) -> PodSpec {
    PodSpec {
        name: name.into(),
        namespace: namespace.into(),
        uid: format!("{name}-{}", std::process::id()),
        annotations,
        labels: HashMap::from([("kubevirt.io".to_string(), "virt-launcher".to_string())]),
        log_directory: show(logs),
    }
}

/// The guest's NIC as QEMU opens it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Nic<'a> {
    pub tap: &'a str,
    pub mac: &'a str,
    pub mtu: u32,
    pub rom_disabled: bool,
}

/// KubeVirt's `compute` container: QEMU (TCG) under the VM sandbox's PID 1, on the
/// pre-created tap, with `/dev/net/tun` as a CRI device and the console in `vm_work`.
pub(crate) fn compute_container(
    bins: &Path,
    guest: &GuestImage,
    vm_work: &Path,
    tun: &Path,
    nic: &Nic,
    cmdline: &str,
) -> ContainerSpec {
    let guest_dir = guest
        .kernel
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let in_container = GuestImage {
        kernel: "/guest/vmlinuz".into(),
        initrd: "/guest/initrd.gz".into(),
    };
    let mut command = vec![
        "/netbind/netbind-vm-exec".to_string(),
        "/usr/bin/qemu-system-x86_64".to_string(),
    ];
    command.extend(vm::qemu_args(
        &in_container,
        Path::new("/work/console"),
        vm::QemuNet::Tap {
            name: nic.tap,
            mtu: nic.mtu,
            rom_disabled: nic.rom_disabled,
        },
        nic.mac,
        cmdline,
    ));
    let mut compute = locked_down(
        "compute",
        command,
        vec![
            (show(bins), "/netbind".into(), true),
            (show(&guest_dir), "/guest".into(), true),
            (show(vm_work), "/work".into(), false),
        ],
    );
    compute.devices = vec![(show(tun), "/dev/net/tun".into())];
    compute
}

/// A container of the pod as KubeVirt's non-root launcher pod runs them, with the host's
/// `/usr` read-only (the image is an empty root).
pub(crate) fn locked_down(
    name: &str,
    command: Vec<String>,
    mounts: Vec<(String, String, bool)>,
) -> ContainerSpec {
    let mut all = vec![("/usr".to_string(), "/usr".to_string(), true)];
    all.extend(mounts);
    ContainerSpec {
        name: name.into(),
        image: APP_IMAGE.into(),
        command,
        mounts: all,
        uid: VM_UID,
        gid: VM_UID,
        ..ContainerSpec::default()
    }
}

impl VmPod {
    /// RunPodSandbox, then the launcher (waited for until it wrote the domain XML), then
    /// QEMU. On an error after RunPodSandbox the sandbox is removed again.
    pub fn start(cri: &mut Cri, config: &VmPodConfig) -> Result<VmPod, CriError> {
        let logs = config.work_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| node_err("create the log directory", e))?;
        let pod = launcher_pod(
            &config.name,
            &config.namespace,
            HashMap::from([("netbind.io/vmi".to_string(), config.vmi.clone())]),
            &logs,
        );
        let started = Instant::now();
        let (sandbox, run_pod_sandbox) = cri.run_pod(&pod)?;
        let made = Self::containers(cri, config, pod, sandbox.clone(), started, run_pod_sandbox);
        if made.is_err() {
            let _ = cri.remove_pod(&sandbox);
        }
        made
    }

    /// The containers of a pod whose sandbox runs.
    fn containers(
        cri: &mut Cri,
        config: &VmPodConfig,
        pod: PodSpec,
        sandbox: String,
        started: Instant,
        run_pod_sandbox: Duration,
    ) -> Result<VmPod, CriError> {
        let ip = cri.pod_network(&sandbox)?.ip;
        let handoff_dir = config.netbind_run_dir.join(&sandbox).join("handoff");
        let handoff = vm::read_handoff(&handoff_dir)
            .map_err(|e| node_err("read the hand-off netbind-cni wrote", e))?;
        let iface = handoff
            .interfaces
            .first()
            .ok_or_else(|| node_err("read the hand-off", "it lists no interface"))?
            .clone();
        let launcher_dir = vm_dir(config.work_dir.join("launcher"))?;
        let launcher = cri.start_container(
            &sandbox,
            &pod,
            &locked_down(
                "netbind-launcher",
                vec![
                    // As on the simulator: PID 1 of the container installs the VM side's
                    // syscall deny-list, then runs the program (and reaps, and passes
                    // SIGTERM on).
                    "/netbind/netbind-vm-exec".into(),
                    "/netbind/netbind-launcher".into(),
                    "--handoff".into(),
                    "/handoff".into(),
                    "--domain-out".into(),
                    "/work/domain.xml".into(),
                ],
                vec![
                    (show(&config.bins), "/netbind".into(), true),
                    (show(&handoff_dir), "/handoff".into(), true),
                    (show(&launcher_dir), "/work".into(), false),
                ],
            ),
        )?;
        let xml_path = launcher_dir.join("domain.xml");
        // Ready once it says so (after writing the domain XML): the file's mere existence
        // could be seen half-written.
        wait_ready(
            cri,
            &launcher,
            &Path::new(&pod.log_directory).join("netbind-launcher.log"),
            "the launcher",
        )?;
        let domain_xml = String::from_utf8_lossy(
            &vm::read_console(&xml_path).map_err(|e| node_err("read the domain XML", e))?,
        )
        .into_owned();
        let vm_work = vm_dir(config.work_dir.join("vm"))?;
        let qemu = if config.boot {
            let domain = &iface.domain;
            let nic = Nic {
                tap: iface.tap.as_str(),
                mac: &domain.mac.to_string(),
                mtu: domain.mtu,
                rom_disabled: domain.rom_disabled,
            };
            let compute = compute_container(
                &config.bins,
                &config.guest,
                &vm_work,
                &config.tun,
                &nic,
                &config.cmdline,
            );
            Some(cri.start_container(&sandbox, &pod, &compute)?)
        } else {
            None
        };
        Ok(VmPod {
            sandbox,
            pod,
            ip,
            handoff,
            launcher,
            qemu,
            console: Console(vm_work.join("console")),
            domain_xml,
            started,
            run_pod_sandbox,
        })
    }
}
