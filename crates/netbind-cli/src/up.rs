//! `netbind up` / `down` / `status`: one machine plays container runtime and CNI, runs phase 1
//! (root) and phase 2 (uid 107, no capability), and optionally boots a real guest.
//!
//! Every resource is written to the pod's record (`/run/netbind/pods/NAME/pod.json`) as soon as
//! it exists, so `down` — and the clean-up after a failed step or Ctrl-C — removes exactly what
//! was made, whatever point was reached.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netbind_model::admission::ClusterConfig;
use netbind_model::admitted::{Binding, Forward, Protocol};
use netbind_model::check::{CheckError, check_vmi};
use netbind_model::handoff::BindingKind;
use netbind_model::yaml::MAX_INPUT_BYTES;
use serde::{Deserialize, Serialize};

use crate::podsim::{self, SimError};
use crate::vm::{self, GuestImage, Libvirt};

mod boot;
mod checks;
pub(crate) mod containerd;
mod down;
mod record;

pub use checks::GuestReport;
use checks::{Listen, egress_skipped, guest_checks, guest_v6};
pub use down::{down, down_record};
pub use record::{PodRecord, phase, status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Boot {
    Qemu,
    Libvirt,
}

/// Who runs the pod: netbind's simulator (a runtime and a CNI plugin done by hand), or a
/// real containerd through the CRI (netbind's own private one, or `--cri-socket`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    #[default]
    Sim,
    Containerd,
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("interrupted")]
    Interrupted,
    #[error("{step}: {detail}")]
    Step { step: &'static str, detail: String },
}

/// How many of a log's last lines an error quotes (a launcher or passt that did not start):
/// enough to say why, never a whole log the VM side wrote.
pub(crate) const LOG_TAIL_LINES: usize = 20;

fn step_err(step: &'static str, detail: impl Into<String>) -> UpError {
    UpError::Step {
        step,
        detail: detail.into(),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(crate) fn sibling(bin: &str) -> Result<PathBuf, UpError> {
    let exe = std::env::current_exe().map_err(|e| step_err("locate binaries", e.to_string()))?;
    let path = exe
        .parent()
        .map(|d| d.join(bin))
        .unwrap_or_else(|| PathBuf::from(bin));
    if !path.is_file() {
        return Err(step_err(
            "locate binaries",
            format!(
                "{} not found next to netbind (cargo build --bins)",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// One line of progress.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub at_ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub name: String,
    pub netns: String,
    pub binding: BindingKind,
    pub pod_ip: String,
    pub launcher_pid: Option<u32>,
    pub steps: Vec<StepReport>,
    pub guest: GuestReport,
}

struct Progress {
    t0: Instant,
    json: bool,
    steps: Vec<StepReport>,
}

impl Progress {
    fn done(&mut self, step: &str, detail: impl Into<String>) {
        let step_report = StepReport {
            step: step.into(),
            at_ms: u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            detail: detail.into(),
        };
        if !self.json {
            eprintln!(
                "[{:>7.3}s] {:<10} {}",
                step_report.at_ms as f64 / 1000.0,
                step_report.step,
                step_report.detail
            );
        }
        self.steps.push(step_report);
    }
}

#[derive(Debug, Clone)]
pub struct UpArgs {
    pub file: PathBuf,
    pub boot: Option<Boot>,
    pub name: Option<String>,
    pub json: bool,
    pub cluster: ClusterConfig,
    /// The pod network's families; `None`: dual stack for a VMI that configures IPv6
    /// (`vmIPv6NetworkCIDR`), IPv4 otherwise.
    pub ip_family: Option<podsim::IpFamily>,
    pub runtime: Runtime,
    /// A CRI runtime's socket (with `Runtime::Containerd`); `None`: netbind's own node.
    pub cri_socket: Option<PathBuf>,
    /// netbind-cni's `runDir` in that runtime's chain (where each sandbox's hand-off is).
    pub cni_run_dir: PathBuf,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

pub fn up(args: &UpArgs) -> Result<UpReport, UpError> {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    let mut progress = Progress {
        t0: Instant::now(),
        json: args.json,
        steps: Vec::new(),
    };
    let text = netbind_model::input::read_text(&args.file, MAX_INPUT_BYTES as u64)
        .map_err(|err| UpError::Invalid(err.to_string()))?;
    let vmi = check_vmi(&text, &args.cluster).map_err(|err| {
        UpError::Invalid(match err {
            CheckError::Load(line) => format!("{}:{line}", args.file.display()),
            CheckError::Invalid(fs) => fs
                .iter()
                .map(|f| format!("{}:{f}", args.file.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    })?;
    let name = args
        .name
        .clone()
        .or_else(|| vmi.metadata.name.clone())
        .unwrap_or_else(|| "vmi".into());
    if !valid_name(&name) {
        return Err(UpError::Invalid(format!(
            "--name {name:?}: use 1-40 of a-z, 0-9 and '-'"
        )));
    }
    let first = vmi
        .interfaces
        .first()
        .ok_or_else(|| UpError::Invalid("the VMI has no interface".into()))?;
    let (binding, forward) = match &first.binding {
        Binding::Masquerade(masq) => (BindingKind::Masquerade, Some(masq.forward.clone())),
        Binding::Bridge => (BindingKind::Bridge, None),
        // passt forwards the listed ports, or every port when none is listed.
        Binding::PasstBinding(passt) => (
            BindingKind::PasstBinding,
            Some(if passt.ports.is_empty() {
                Forward::All
            } else {
                Forward::Ports(passt.ports.clone())
            }),
        ),
        other => {
            return Err(UpError::Invalid(format!(
                "netbind up runs the bridge, masquerade and passt bindings, not {:?}",
                other.kind()
            )));
        }
    };
    if binding == BindingKind::PasstBinding {
        if args.runtime == Runtime::Containerd {
            return Err(UpError::Invalid(
                "the passt binding runs on the simulator (--runtime sim): the CRI tier's pods \
                 have no passt container"
                    .into(),
            ));
        }
        if args.boot == Some(Boot::Libvirt) {
            return Err(UpError::Invalid(
                "the passt binding boots with --boot qemu: libvirt 9.0 starts passt itself, \
                 from the session daemon under the VM sandbox's syscall filter, which refuses \
                 the user namespace passt confines itself in (and KubeVirt's vhost-user passt \
                 interface needs libvirt 11)"
                    .into(),
            ));
        }
    }
    let listen = Listen::for_forward(forward.as_ref());
    let wants_v6 = matches!(&first.binding, Binding::Masquerade(masq) if masq.v6_requested);
    let family = args.ip_family.unwrap_or(if wants_v6 {
        podsim::IpFamily::Dual
    } else {
        podsim::IpFamily::Ipv4
    });
    if args.cri_socket.is_some() && args.runtime != Runtime::Containerd {
        return Err(UpError::Invalid(
            "--cri-socket needs --runtime containerd".into(),
        ));
    }
    if args.runtime == Runtime::Containerd {
        if family != podsim::IpFamily::Ipv4 {
            return Err(UpError::Invalid(
                "--runtime containerd: the node's pod network (bridge + host-local) is IPv4 \
                 only; use --ip-family ipv4 and a VMI without vmIPv6NetworkCIDR"
                    .into(),
            ));
        }
        if args.boot == Some(Boot::Libvirt) {
            return Err(UpError::Invalid(
                "--runtime containerd boots the guest with QEMU in a container: use --boot qemu"
                    .into(),
            ));
        }
    }
    if binding == BindingKind::Bridge && family == podsim::IpFamily::Ipv6 {
        return Err(UpError::Invalid(
            "--ip-family ipv6: the bridge binding gives the guest no IPv6 (as KubeVirt's does \
             not); use ipv4 or dual"
                .into(),
        ));
    }
    // Everything checked: only now claim the name (a refused `up` leaves nothing behind).
    let dir = record::claim_pod_dir(&name)?;
    let mut rec = PodRecord {
        name: name.clone(),
        vmi: args.file.display().to_string(),
        netns: format!("netbind-{name}"),
        binding,
        family,
        runtime: args.runtime,
        ..Default::default()
    };
    rec.save()?;
    progress.done(
        "validate",
        format!("{}: {binding} binding, pod {name}", args.file.display()),
    );
    let result = match args.runtime {
        Runtime::Sim => bring_up(args, &mut rec, &mut progress, listen),
        Runtime::Containerd => containerd::bring_up(args, &mut rec, &mut progress, listen, &text),
    };
    match result {
        Ok(guest) => Ok(UpReport {
            name,
            netns: rec.netns.clone(),
            binding,
            pod_ip: rec.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
            launcher_pid: rec.launcher.map(|progress| progress.pid),
            steps: progress.steps,
            guest,
        }),
        Err(err) => {
            let console = console_path(&dir, args.boot);
            if let Ok(tail) = vm::read_console_tail(&console, 15) {
                eprintln!("guest console (last lines):");
                for line in tail.lines() {
                    eprintln!("  {line}");
                }
            }
            if !args.json {
                eprintln!("netbind up: {err}; cleaning up");
            }
            down_record(&rec);
            Err(err)
        }
    }
}

fn check_interrupt() -> Result<(), UpError> {
    if interrupted() {
        Err(UpError::Interrupted)
    } else {
        Ok(())
    }
}

fn bring_up(
    a: &UpArgs,
    rec: &mut PodRecord,
    progress: &mut Progress,
    listen: Listen,
) -> Result<GuestReport, UpError> {
    let dir = rec.dir();
    let (ip, mtu) = {
        let _lock = podsim::Lock::take_unless(&interrupted)?;
        podsim::ensure_node()?;
        let slot = podsim::allocate(&rec.name)?;
        let addrs = podsim::PodAddrs::of(slot, rec.family);
        rec.pod_ip = Some(slot);
        rec.pod_ip6 = addrs.v6;
        rec.save()?;
        podsim::create_pod(&rec.netns, addrs, 1500)?;
        (addrs, 1500u32)
    };
    let mut shown = Vec::new();
    if let Some(v4) = ip.v4 {
        shown.push(format!(
            "{v4}/{} via {}",
            podsim::NODE_PREFIX,
            podsim::NODE_IP
        ));
    }
    if let Some(v6) = ip.v6 {
        shown.push(format!(
            "{v6}/{} via {}",
            podsim::NODE_PREFIX6,
            podsim::NODE_IP6
        ));
    }
    progress.done(
        "pod",
        format!("netns {} eth0 {} mtu {mtu}", rec.netns, shown.join(", ")),
    );
    check_interrupt()?;

    // Phase 1, as root.
    let resolv = dir.join("resolv.conf");
    let ns = "default";
    std::fs::write(
        &resolv,
        format!(
            "nameserver 10.96.0.10\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\n"
        ),
    )
    .map_err(|source| SimError::Io {
        op: "write",
        path: resolv.clone(),
        source,
    })?;
    let handoff = dir.join("handoff");
    let mut handler = Command::new(sibling("netbind-handler")?);
    handler
        .arg("setup")
        .args([
            "--netns",
            &format!("/run/netns/{}", rec.netns),
            "--uid",
            &vm::VM_UID.to_string(),
            "--gid",
            &vm::VM_GID.to_string(),
        ])
        .arg("--vmi")
        .arg(&a.file)
        .arg("--handoff-dir")
        .arg(&handoff)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--resolv-conf")
        .arg(&resolv);
    // The whole cluster configuration, typed, so that phase 1 applies what `up` checked
    // (a default binding given to `up` reaches the handler too).
    let cluster = dir.join("cluster.json");
    let json = serde_json::to_vec_pretty(&a.cluster)
        .map_err(|e| step_err("write the cluster configuration", e.to_string()))?;
    vm::create_new(&cluster, 0o644)
        .and_then(|mut f| f.write_all(&json))
        .map_err(|source| SimError::Io {
            op: "write",
            path: cluster.clone(),
            source,
        })?;
    handler.arg("--cluster-config").arg(&cluster);
    rec.phase1 = true;
    rec.save()?;
    podsim::run("phase 1 (netbind-handler setup)", &mut handler)?;
    let record = vm::read_handoff(&handoff).map_err(|e| step_err("phase 1", e))?;
    let first = record
        .interfaces
        .first()
        .ok_or_else(|| step_err("phase 1", "no interface in the hand-off"))?;
    progress.done(
        "phase1",
        match &first.domain.passt {
            Some(_) => format!(
                "no link (passt connects the guest to {}): ping_group_range and unprivileged \
                 ports for uid {}",
                first.pod_interface,
                vm::VM_UID
            ),
            None => format!(
                "{} via {}, tap {} owned by {}:{}",
                first.bridge,
                first.pod_interface,
                first.tap,
                vm::VM_UID,
                vm::VM_GID
            ),
        },
    );
    check_interrupt()?;

    // Phase 2, as uid 107 with nothing. Root writes only in the pod's root-owned directory;
    // the VM uid's own directory `vm/` is made empty (a fresh mkdir in a root-owned parent,
    // so no one can have swapped it) and root never creates, writes or reads inside it.
    let vm_dir = dir.join("vm");
    std::fs::create_dir(&vm_dir).map_err(|source| SimError::Io {
        op: "create",
        path: vm_dir.clone(),
        source,
    })?;
    vm::chown_vm(&vm_dir)?;
    let tun = podsim::tun_node()?;
    let vm_exec = sibling("netbind-vm-exec")?;
    // The sandbox's own copy of the namespace name: the record is updated while it is used.
    let netns = rec.netns.clone();
    let sandbox = vm::Sandbox {
        netns: &netns,
        tun: &tun,
        pod_dir: &dir,
        vm_exec: &vm_exec,
    };
    // Files the VM side writes into and root reads back: created here by root (so each is a
    // regular file that cannot be swapped for a symlink), writable by the VM's group only.
    let domain_out = dir.join("interfaces.xml");
    vm_writable(&domain_out)?;
    let console = console_path(&dir, a.boot);
    if a.boot != Some(Boot::Libvirt) {
        vm_writable(&console)?;
    }
    let launcher_log = dir.join("launcher.log");
    let cmd = sandbox.command(
        None,
        &sibling("netbind-launcher")?.display().to_string(),
        &[
            "--handoff".into(),
            handoff.display().to_string(),
            "--domain-out".into(),
            domain_out.display().to_string(),
        ],
    );
    let child = vm::spawn_detached(cmd, &launcher_log)?;
    let launcher = vm::Proc::of(child.id());
    rec.launcher = launcher;
    rec.save()?;
    vm::wait_for_line(
        &launcher_log,
        "\"event\":\"ready\"",
        Duration::from_secs(10),
        &|| interrupted() || !launcher.is_some_and(vm::Proc::alive),
    )
    .ok_or_else(|| {
        step_err(
            "phase 2",
            format!(
                "launcher not ready: {}",
                vm::read_console_tail(&launcher_log, LOG_TAIL_LINES)
                    .unwrap_or_default()
                    .trim()
            ),
        )
    })?;
    progress.done(
        "phase2",
        format!(
            "launcher pid {} (uid {}, no capabilities, own PID namespace) {}",
            launcher
                .and_then(vm::sandbox_program)
                .map_or(child.id(), |progress| progress.pid),
            vm::VM_UID,
            match &first.domain.passt {
                Some(_) => "wrote the domain's interface (passt serves the passt binding's DHCP)"
                    .to_string(),
                None => format!("serving DHCP on {}", first.bridge),
            }
        ),
    );
    check_interrupt()?;

    let Some(boot) = a.boot else {
        return Ok(GuestReport::default());
    };
    let started = boot::boot(
        boot,
        rec,
        progress,
        &boot::BootEnv {
            dir: &dir,
            vm_dir: &vm_dir,
            console: &console,
            domain_out: &domain_out,
            sandbox: &sandbox,
            first,
        },
        listen,
    )?;
    guest_checks(
        rec,
        progress,
        &console,
        started,
        listen,
        (
            // passt gives the guest the pod's own address.
            first
                .dhcpv4
                .as_ref()
                .map(|d| d.client_ip)
                .or(rec.pod_ip.filter(|_| first.domain.passt.is_some())),
            first.dhcpv6.as_ref().map(|d| d.client_ip),
        ),
    )
}

/// Where the guest's console goes: a file root makes in the pod's directory for QEMU; in the
/// VM's own directory under libvirt, which deletes and re-creates it (root then reads it with
/// O_NOFOLLOW as a single-link regular file, see `vm::read_console`).
fn console_path(dir: &Path, boot: Option<Boot>) -> PathBuf {
    match boot {
        Some(Boot::Libvirt) => dir.join("vm/console.log"),
        _ => dir.join("console.log"),
    }
}

/// Creates `path` (new, in the pod's root-owned directory) as root:VM-gid 0620: the VM side
/// can write it, cannot replace, chmod or remove it, and root reads it back as itself.
fn vm_writable(path: &Path) -> Result<(), UpError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |op: &'static str| {
        move |source| SimError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = vm::create_new(path, 0o620).map_err(io("create"))?;
    std::os::unix::fs::fchown(&file, Some(0), Some(vm::VM_GID)).map_err(io("chown"))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o620))
        .map_err(io("chmod"))?;
    Ok(())
}
