//! The pod record (`/run/netbind/pods/NAME/pod.json`): everything `up` made, written as
//! soon as it exists, and what `status` reads from it.

use super::*;

/// What `down` needs to remove a pod, filled in as `up` goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodRecord {
    pub name: String,
    pub vmi: String,
    pub netns: String,
    pub binding: BindingKind,
    /// The allocator's address: the pod's IPv4 address, unless its family is IPv6 only.
    pub pod_ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub family: podsim::IpFamily,
    #[serde(default)]
    pub pod_ip6: Option<Ipv6Addr>,
    pub phase1: bool,
    /// The launcher and the VM's first process (QEMU or libvirtd), as root recorded them at
    /// spawn: `down` signals these and the pod netns's own processes, never a pid from a file.
    pub launcher: Option<vm::Proc>,
    pub boot: Option<Boot>,
    pub vm: Option<vm::Proc>,
    /// passt, for the passt binding (a sandbox of its own, started before QEMU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passt: Option<vm::Proc>,
    pub domain: Option<String>,
    pub lease: Option<String>,
    #[serde(default)]
    pub runtime: Runtime,
    /// On a CRI runtime: the sandbox and its containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri: Option<containerd::CriPod>,
}

pub(super) fn pods_dir() -> PathBuf {
    podsim::run_dir().join("pods")
}

impl PodRecord {
    pub(crate) fn dir(&self) -> PathBuf {
        pods_dir().join(&self.name)
    }

    pub(super) fn save(&self) -> Result<(), UpError> {
        let path = self.dir().join("pod.json");
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| step_err("save the pod record", e.to_string()))?;
        std::fs::write(&path, json).map_err(|source| {
            UpError::Sim(SimError::Io {
                op: "write",
                path,
                source,
            })
        })
    }

    pub fn load(name: &str) -> Option<PodRecord> {
        serde_json::from_slice(&std::fs::read(pods_dir().join(name).join("pod.json")).ok()?).ok()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PodStatus {
    pub name: String,
    /// `running`, or `failed: WHY` when a process the pod needs is gone. A dead launcher
    /// means no DHCP for the guest, so the pod is failed (as KubeVirt fails a VMI whose
    /// virt-launcher died), even though the guest may still run.
    pub phase: String,
    pub vmi: String,
    pub runtime: Runtime,
    pub binding: BindingKind,
    pub pod_ip: Option<Ipv4Addr>,
    pub launcher: String,
    pub vm: String,
    pub lease: Option<String>,
}

/// The pod's phase from its recorded processes (or, on a CRI runtime, its containers).
pub fn phase(rec: &PodRecord) -> String {
    if let Some(cri) = &rec.cri {
        return containerd::phase(cri);
    }
    match (rec.launcher, rec.boot, rec.vm) {
        (Some(launcher), _, _) if !launcher.alive() => {
            format!("failed: the launcher (pid {}) exited", launcher.pid)
        }
        (_, Some(boot), Some(vm)) if !vm.alive() => {
            format!("failed: the VM ({boot:?}, pid {}) exited", vm.pid).to_lowercase()
        }
        (None, _, _) => "pending".into(),
        _ => "running".into(),
    }
}

/// Every pod with a record.
pub fn records() -> Vec<PodRecord> {
    let Ok(entries) = std::fs::read_dir(pods_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| PodRecord::load(&e.file_name().to_string_lossy()))
        .collect()
}

pub fn status() -> Vec<PodStatus> {
    let mut out = Vec::new();
    for rec in records() {
        // The pid shown is the program's (the launcher, QEMU, libvirtd), inside its sandbox.
        let state = |process: Option<vm::Proc>| match process {
            Some(process) if process.alive() => format!(
                "running (pid {})",
                vm::sandbox_program(process).map_or(process.pid, |q| q.pid)
            ),
            Some(process) => format!("exited (pid {})", process.pid),
            None => "-".into(),
        };
        let short = |id: &str| format!("container {}", id.chars().take(12).collect::<String>());
        let (launcher, vm) = match &rec.cri {
            Some(cri) => (
                short(&cri.launcher),
                cri.qemu
                    .as_deref()
                    .map_or_else(|| "-".into(), |q| format!("qemu {}", short(q))),
            ),
            None => (
                state(rec.launcher),
                match rec.boot {
                    Some(boot) => format!("{boot:?} {}", state(rec.vm)).to_lowercase(),
                    None => "-".into(),
                },
            ),
        };
        out.push(PodStatus {
            phase: phase(&rec),
            name: rec.name.clone(),
            vmi: rec.vmi.clone(),
            runtime: rec.runtime,
            binding: rec.binding,
            pod_ip: rec.pod_ip,
            launcher,
            vm,
            lease: rec.lease.clone(),
        });
    }
    out.sort_by(|a, boot| a.name.cmp(&boot.name));
    out
}

/// Creates the pod's directory under the run directory, claiming the name: mkdir is atomic, so
/// of two `up` of one name exactly one gets it; the other fails without touching (or cleaning
/// up) the winner's pod.
pub(super) fn claim_pod_dir(name: &str) -> Result<PathBuf, UpError> {
    let dir = pods_dir().join(name);
    // The launcher (uid 107) must reach its hand-off directory: every level is 0755.
    for base in [podsim::run_dir(), pods_dir()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&base).map_err(|source| SimError::Io {
            op: "create",
            path: base.clone(),
            source,
        })?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).map_err(
            |source| SimError::Io {
                op: "chmod",
                path: base.clone(),
                source,
            },
        )?;
    }
    match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
        Ok(()) => {
            use std::os::unix::fs::PermissionsExt;
            // The umask may have narrowed the mode; the launcher must be able to traverse.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(
                |source| SimError::Io {
                    op: "chmod",
                    path: dir.clone(),
                    source,
                },
            )?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(UpError::Invalid(format!(
                "pod {name} is already up (netbind down {name})"
            )));
        }
        Err(source) => {
            return Err(UpError::Sim(SimError::Io {
                op: "create",
                path: dir.clone(),
                source,
            }));
        }
    }
    Ok(dir)
}
