//! `netbind up` / `down` / `status`: one machine plays container runtime and CNI, runs phase 1
//! (root) and phase 2 (uid 107, no capability), and optionally boots a real guest.
//!
//! Every resource is written to the pod's record (`/run/netbind/pods/NAME/pod.json`) as soon as
//! it exists, so `down` — and the clean-up after a failed step or Ctrl-C — removes exactly what
//! was made, whatever point was reached.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netbind_model::admission::ClusterConfig;
use netbind_model::check::{CheckError, check_vmi};
use netbind_model::handoff::{HANDOFF_FILE, Handoff};
use netbind_model::vmi::BindingKind;
use netbind_model::yaml::MAX_INPUT_BYTES;
use serde::{Deserialize, Serialize};

use crate::podsim::{self, SimError};
use crate::vm::{self, GuestImage, Libvirt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Boot {
    Qemu,
    Libvirt,
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

fn step_err(step: &'static str, detail: impl Into<String>) -> UpError {
    UpError::Step {
        step,
        detail: detail.into(),
    }
}

/// What `down` needs to remove a pod, filled in as `up` goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodRecord {
    pub name: String,
    pub vmi: String,
    pub netns: String,
    pub binding: String,
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
    pub domain: Option<String>,
    pub lease: Option<String>,
}

fn pods_dir() -> PathBuf {
    podsim::run_dir().join("pods")
}

impl PodRecord {
    pub(crate) fn dir(&self) -> PathBuf {
        pods_dir().join(&self.name)
    }

    fn save(&self) -> Result<(), UpError> {
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

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(crate) fn sibling(bin: &str) -> Result<PathBuf, UpError> {
    let exe = std::env::current_exe().map_err(|e| step_err("locate binaries", e.to_string()))?;
    let p = exe
        .parent()
        .map(|d| d.join(bin))
        .unwrap_or_else(|| PathBuf::from(bin));
    if !p.is_file() {
        return Err(step_err(
            "locate binaries",
            format!(
                "{} not found next to netbind (cargo build --bins)",
                p.display()
            ),
        ));
    }
    Ok(p)
}

/// One line of progress.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub at_ms: u64,
    pub detail: String,
}

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

/// The guest's listeners: the port the node reaches through the pod IP, and for masquerade
/// with `ports` one more that the spec does not forward.
#[derive(Debug, Clone, Copy)]
struct Listen {
    forwarded: u16,
    unlisted: Option<u16>,
}

impl Listen {
    fn ports(self) -> Vec<u16> {
        std::iter::once(self.forwarded)
            .chain(self.unlisted)
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub name: String,
    pub netns: String,
    pub binding: String,
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
        let s = StepReport {
            step: step.into(),
            at_ms: u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            detail: detail.into(),
        };
        if !self.json {
            eprintln!(
                "[{:>7.3}s] {:<10} {}",
                s.at_ms as f64 / 1000.0,
                s.step,
                s.detail
            );
        }
        self.steps.push(s);
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
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 40
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
}

pub fn up(a: &UpArgs) -> Result<UpReport, UpError> {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    let mut p = Progress {
        t0: Instant::now(),
        json: a.json,
        steps: Vec::new(),
    };
    let text = netbind_model::input::read_text(&a.file, MAX_INPUT_BYTES as u64)
        .map_err(|e| UpError::Invalid(e.to_string()))?;
    let vmi = check_vmi(&text, &a.cluster).map_err(|e| {
        UpError::Invalid(match e {
            CheckError::Load(l) => format!("{}:{l}", a.file.display()),
            CheckError::Invalid(fs) => fs
                .iter()
                .map(|f| format!("{}:{f}", a.file.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    })?;
    let name = a
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
        .spec
        .domain
        .devices
        .interfaces
        .first()
        .ok_or_else(|| UpError::Invalid("the VMI has no interface".into()))?;
    let binding = match first.binding_kind() {
        Some(BindingKind::Masquerade) => "masquerade",
        Some(BindingKind::Bridge) => "bridge",
        other => {
            return Err(UpError::Invalid(format!(
                "netbind up runs bridge and masquerade bindings, not {other:?}"
            )));
        }
    };
    // The port the guest serves for the ingress check: the first forwarded TCP port, if the
    // spec lists ports; any port otherwise.
    let tcp: Vec<u16> = first
        .ports
        .iter()
        .filter(|p| matches!(p.protocol.as_deref(), None | Some("TCP")))
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    let listen = Listen {
        forwarded: tcp.first().copied().unwrap_or(8080),
        // Port ranges and the bridge binding forward more than a list: nothing to check there.
        unlisted: (binding == "masquerade" && !tcp.is_empty() && first.port_ranges.is_empty())
            .then(|| (8080..9000).find(|p| !tcp.contains(p)))
            .flatten(),
    };
    let dir = pods_dir().join(&name);
    // The launcher (uid 107) must reach its hand-off directory: every level is 0755.
    for d in [podsim::run_dir(), pods_dir()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&d).map_err(|source| SimError::Io {
            op: "create",
            path: d.clone(),
            source,
        })?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
            SimError::Io {
                op: "chmod",
                path: d.clone(),
                source,
            }
        })?;
    }
    // Claim the name: mkdir is atomic, so of two `up` of one name exactly one gets here; the
    // other fails without touching (or cleaning up) the winner's pod.
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
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(UpError::Invalid(format!(
                "pod {name} is already up (netbind down {name})"
            )));
        }
        Err(source) => {
            return Err(UpError::Sim(SimError::Io {
                op: "create",
                path: dir,
                source,
            }));
        }
    }
    let wants_v6 = vmi.spec.networks.iter().any(|n| {
        n.pod
            .as_ref()
            .is_some_and(|p| p.vm_ipv6_network_cidr.is_some())
    });
    let family = a.ip_family.unwrap_or(if wants_v6 {
        podsim::IpFamily::Dual
    } else {
        podsim::IpFamily::Ipv4
    });
    if binding == "bridge" && family == podsim::IpFamily::Ipv6 {
        return Err(UpError::Invalid(
            "--ip-family ipv6: the bridge binding gives the guest no IPv6 (as KubeVirt's does \
             not); use ipv4 or dual"
                .into(),
        ));
    }
    let mut rec = PodRecord {
        name: name.clone(),
        vmi: a.file.display().to_string(),
        netns: format!("netbind-{name}"),
        binding: binding.into(),
        family,
        ..Default::default()
    };
    rec.save()?;
    p.done(
        "validate",
        format!("{}: {binding} binding, pod {name}", a.file.display()),
    );
    let result = bring_up(a, &mut rec, &mut p, listen);
    match result {
        Ok(guest) => Ok(UpReport {
            name,
            netns: rec.netns.clone(),
            binding: binding.into(),
            pod_ip: rec.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
            launcher_pid: rec.launcher.map(|p| p.pid),
            steps: p.steps,
            guest,
        }),
        Err(e) => {
            let console = console_path(&dir, a.boot);
            if let Ok(c) =
                vm::read_console(&console).map(|b| String::from_utf8_lossy(&b).into_owned())
            {
                let tail: Vec<&str> = c.lines().rev().take(15).collect();
                eprintln!("guest console (last lines):");
                for l in tail.iter().rev() {
                    eprintln!("  {l}");
                }
            }
            if !a.json {
                eprintln!("netbind up: {e}; cleaning up");
            }
            down_record(&rec);
            Err(e)
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
    p: &mut Progress,
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
    p.done(
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
    let mut h = Command::new(sibling("netbind-handler")?);
    h.arg("setup")
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
    h.arg("--cluster-config").arg(&cluster);
    rec.phase1 = true;
    rec.save()?;
    podsim::run("phase 1 (netbind-handler setup)", &mut h)?;
    let record = Handoff::from_json(&std::fs::read(handoff.join(HANDOFF_FILE)).unwrap_or_default())
        .map_err(|e| step_err("phase 1", e.to_string()))?;
    let first = record
        .interfaces
        .first()
        .ok_or_else(|| step_err("phase 1", "no interface in the hand-off"))?;
    p.done(
        "phase1",
        format!(
            "{} via {}, tap {} owned by {}:{}",
            first.bridge,
            first.pod_interface,
            first.tap,
            vm::VM_UID,
            vm::VM_GID
        ),
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
    let sandbox = vm::Sandbox {
        netns: &rec.netns,
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
                std::fs::read_to_string(&launcher_log)
                    .unwrap_or_default()
                    .trim()
            ),
        )
    })?;
    p.done(
        "phase2",
        format!(
            "launcher pid {} (uid {}, no capabilities, own PID namespace) serving DHCP on {}",
            launcher
                .and_then(vm::sandbox_program)
                .map_or(child.id(), |p| p.pid),
            vm::VM_UID,
            first.bridge
        ),
    );
    check_interrupt()?;

    let Some(boot) = a.boot else {
        return Ok(GuestReport::default());
    };
    let img = GuestImage::locate()?.copy_to(&dir)?;
    let egress = format!("{}:{}", podsim::NODE_IP, podsim::NODE_LISTEN_PORT);
    let egress6 = format!("{},{}", podsim::NODE_IP6, podsim::NODE_LISTEN_PORT);
    let cmdline = vm::cmdline(
        &listen.ports(),
        rec.family.v4().then_some(egress.as_str()),
        guest_v6(rec).then_some(egress6.as_str()),
    );
    let started = Instant::now();
    match boot {
        Boot::Qemu => {
            let d = &first.domain;
            let args = vm::qemu_args(
                &img,
                &console,
                first.tap.as_str(),
                &d.mac.to_string(),
                d.mtu,
                d.rom_disabled,
                &cmdline,
            );
            let cmd = sandbox.command(None, "qemu-system-x86_64", &args);
            let child = vm::spawn_detached(cmd, &dir.join("qemu.log"))?;
            rec.boot = Some(Boot::Qemu);
            rec.vm = vm::Proc::of(child.id());
            rec.save()?;
            p.done(
                "boot",
                format!(
                    "qemu in sandbox pid {} (TCG, uid {}, no capabilities) on {}",
                    child.id(),
                    vm::VM_UID,
                    first.tap
                ),
            );
        }
        Boot::Libvirt => {
            let lv = Libvirt::new(&vm_dir);
            let env = lv.env();
            let child = vm::spawn_detached(
                sandbox.command(Some(&env), "sh", &Libvirt::daemon_args()),
                &dir.join("libvirtd.log"),
            )?;
            rec.boot = Some(Boot::Libvirt);
            rec.vm = vm::Proc::of(child.id());
            rec.domain = Some(rec.name.clone());
            rec.save()?;
            let t = Instant::now();
            while !lv.socket().exists() {
                check_interrupt()?;
                if t.elapsed() > Duration::from_secs(20) {
                    return Err(step_err(
                        "libvirt",
                        "session libvirtd did not open its socket",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The launcher's output goes back to the VM side (libvirt, uid 107) unchanged;
            // root only reads it from the file root made, capped.
            let interfaces = netbind_model::input::read_text(&domain_out, vm::MAX_LOG_BYTES)
                .map_err(|e| step_err("libvirt", e.to_string()))?;
            let xml = vm::libvirt_domain(&rec.name, &img, &interfaces, &cmdline, &console);
            let xml_path = dir.join("domain.xml");
            vm::create_new(&xml_path, 0o644)
                .and_then(|mut f| f.write_all(xml.as_bytes()))
                .map_err(|source| SimError::Io {
                    op: "write",
                    path: xml_path.clone(),
                    source,
                })?;
            let virsh = |args: &[&str]| {
                let mut a: Vec<String> = vec!["-q".into(), "-c".into(), "qemu:///session".into()];
                a.extend(args.iter().map(|s| s.to_string()));
                sandbox.command(Some(&env), "virsh", &a)
            };
            podsim::run(
                "virsh define",
                &mut virsh(&["define", &xml_path.display().to_string()]),
            )?;
            podsim::run("virsh start", &mut virsh(&["start", &rec.name]))?;
            p.done("boot", format!("libvirt session daemon in sandbox pid {} (uid {}, no capabilities) started domain {} from the launcher's <interface>", child.id(), vm::VM_UID, rec.name));
        }
    }
    guest_checks(
        rec,
        p,
        &console,
        started,
        listen,
        (
            first.dhcpv4.as_ref().map(|d| d.client_ip),
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
    let f = vm::create_new(path, 0o620).map_err(io("create"))?;
    std::os::unix::fs::fchown(&f, Some(0), Some(vm::VM_GID)).map_err(io("chown"))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o620))
        .map_err(io("chmod"))?;
    Ok(())
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

fn guest_checks(
    rec: &mut PodRecord,
    p: &mut Progress,
    console: &Path,
    started: Instant,
    listen: Listen,
    (want_ip, want_ip6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
) -> Result<GuestReport, UpError> {
    let mut g = GuestReport {
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
    g.time_to_lease_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let secs = g.time_to_lease_ms.unwrap_or(0) as f64 / 1000.0;
    if v4 {
        g.lease_ip = field(&lease, "ip").map(String::from);
        g.lease_router = field(&lease, "router").map(String::from);
        g.lease_mtu = field(&lease, "mtu").and_then(|m| m.parse().ok());
        p.done(
            "lease",
            format!(
                "guest {} router {} mtu {} ({secs:.1} s after boot)",
                g.lease_ip.as_deref().unwrap_or("?"),
                g.lease_router.as_deref().unwrap_or("?"),
                g.lease_mtu.unwrap_or(0),
            ),
        );
        if let Some(w) = want_ip
            && g.lease_ip.as_deref() != Some(&w.to_string())
        {
            return Err(step_err(
                "lease",
                format!("the guest leased {:?}, expected {w}", g.lease_ip),
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
        g.lease6_ip = field(&lease6, "ip").map(String::from);
        g.lease6_router = field(&lease6, "router")
            .filter(|r| *r != "none")
            .map(String::from);
        p.done(
            "lease6",
            format!(
                "guest {} (DHCPv6), default router {} (router advertisement)",
                g.lease6_ip.as_deref().unwrap_or("?"),
                g.lease6_router.as_deref().unwrap_or("NONE"),
            ),
        );
        if let Some(w) = want_ip6
            && g.lease6_ip.as_deref() != Some(&w.to_string())
        {
            return Err(step_err(
                "lease6",
                format!("the guest leased {:?}, expected {w}", g.lease6_ip),
            ));
        }
    }
    rec.lease = g.lease_ip.clone().or_else(|| g.lease6_ip.clone());
    rec.save()?;
    vm::wait_for_line(
        console,
        "NETBIND-GUEST ready",
        Duration::from_secs(60),
        &interrupted,
    )
    .ok_or_else(|| step_err("guest", "the guest did not finish its checks"))?;
    let text = vm::read_console(console)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let port = listen.forwarded;
    if v4 {
        g.ping_gateway = Some(text.contains("NETBIND-GUEST ping-gateway ok"));
        p.done(
            "ping",
            format!(
                "guest → gateway {}: {}",
                g.lease_router.as_deref().unwrap_or("?"),
                ok_str(g.ping_gateway)
            ),
        );
        g.egress = Some(text.contains("NETBIND-GUEST egress ok"));
        p.done(
            "egress",
            format!(
                "guest → node {}:{}: {}",
                podsim::NODE_IP,
                podsim::NODE_LISTEN_PORT,
                ok_str(g.egress)
            ),
        );
        let pod_ip = rec.pod_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        g.ingress_target = Some(format!("{pod_ip}:{port}"));
        g.ingress = Some(reaches_guest(
            podsim::NODE_NS,
            pod_ip.into(),
            port,
            Duration::from_secs(15),
        ));
        p.done(
            "ingress",
            format!("node → pod {pod_ip}:{port} → guest: {}", ok_str(g.ingress)),
        );
    }
    if v6 {
        g.ping6_gateway = Some(text.contains("NETBIND-GUEST ping6-gateway ok"));
        p.done(
            "ping6",
            format!(
                "guest → gateway {}: {}",
                g.lease6_router.as_deref().unwrap_or("?"),
                ok_str(g.ping6_gateway)
            ),
        );
        g.egress6 = Some(text.contains("NETBIND-GUEST egress6 ok"));
        p.done(
            "egress6",
            format!(
                "guest → node [{}]:{}: {}",
                podsim::NODE_IP6,
                podsim::NODE_LISTEN_PORT,
                ok_str(g.egress6)
            ),
        );
        let pod_ip6 = rec.pod_ip6.unwrap_or(Ipv6Addr::UNSPECIFIED);
        g.ingress6_target = Some(format!("[{pod_ip6}]:{port}"));
        g.ingress6 = Some(reaches_guest(
            podsim::NODE_NS,
            pod_ip6.into(),
            port,
            Duration::from_secs(15),
        ));
        p.done(
            "ingress6",
            format!(
                "node → pod [{pod_ip6}]:{port} → guest: {}",
                ok_str(g.ingress6)
            ),
        );
    }
    if let Some(port) = listen.unlisted {
        // Proof that the port is served (from inside the pod, straight to the guest), then
        // that the node cannot get to it through the pod IP (IPv4, or IPv6 on an IPv6 pod).
        let (guest_ip, pod_ip): (IpAddr, IpAddr) = if v4 {
            (
                g.lease_ip
                    .as_deref()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(Ipv4Addr::UNSPECIFIED.into()),
                rec.pod_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).into(),
            )
        } else {
            (
                g.lease6_ip
                    .as_deref()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(Ipv6Addr::UNSPECIFIED.into()),
                rec.pod_ip6.unwrap_or(Ipv6Addr::UNSPECIFIED).into(),
            )
        };
        let served = reaches_guest(&rec.netns, guest_ip, port, Duration::from_secs(15));
        let leaked = reaches_guest(podsim::NODE_NS, pod_ip, port, Duration::from_secs(3));
        let at = std::net::SocketAddr::new(pod_ip, port);
        g.unlisted_target = Some(at.to_string());
        g.unlisted_blocked = Some(served && !leaked);
        p.done(
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
        g.ping_gateway,
        g.egress,
        g.ingress,
        g.ping6_gateway,
        g.egress6,
        g.ingress6,
        g.unlisted_blocked,
    ]
    .into_iter()
    .any(failed)
        || (v6 && g.lease6_router.is_none())
    {
        return Err(step_err(
            "connectivity",
            "a connectivity check failed (see above)",
        ));
    }
    Ok(g)
}

/// Whether the guest configures and checks IPv6: on an IPv6 pod network with the masquerade
/// binding (DHCPv6 and router advertisements; the bridge binding serves IPv4 only, as
/// KubeVirt's).
fn guest_v6(rec: &PodRecord) -> bool {
    rec.family.v6() && rec.binding == "masquerade"
}

fn ok_str(b: Option<bool>) -> &'static str {
    if b == Some(true) { "ok" } else { "FAILED" }
}

/// From the network namespace `ns`: whether an HTTP GET to `ip:port` gets the guest's page
/// within `patience`.
fn reaches_guest(ns: &str, ip: IpAddr, port: u16, patience: Duration) -> bool {
    std::thread::scope(|s| {
        s.spawn(|| {
            if podsim::enter_netns(ns).is_err() {
                return false;
            }
            let t = Instant::now();
            while t.elapsed() < patience {
                if let Ok(mut c) = TcpStream::connect_timeout(
                    &std::net::SocketAddr::new(ip, port),
                    Duration::from_secs(2),
                ) {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                    let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    let mut body = String::new();
                    let _ = c.read_to_string(&mut body);
                    if body.contains("netbind-guest-ok") {
                        return true;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            false
        })
        .join()
        .unwrap_or(false)
    })
}

/// Removes everything the record says exists; never stops at the first error.
pub fn down_record(rec: &PodRecord) {
    let dir = rec.dir();
    let tun = podsim::run_dir().join("tun");
    if rec.boot == Some(Boot::Libvirt)
        && let Some(d) = &rec.domain
    {
        // As the VM uid: whatever its directory holds, virsh acts with its rights only.
        let lv = Libvirt::new(&dir.join("vm"));
        let args: Vec<String> = ["-q", "-c", "qemu:///session", "destroy", d]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Ok(vm_exec) = sibling("netbind-vm-exec") {
            let sandbox = vm::Sandbox {
                netns: &rec.netns,
                tun: &tun,
                pod_dir: &dir,
                vm_exec: &vm_exec,
            };
            let _ = sandbox.command(Some(&lv.env()), "virsh", &args).output();
        }
    }
    for p in [rec.vm, rec.launcher].into_iter().flatten() {
        vm::stop_sandbox(p);
    }
    // What the VM side started by itself (virtlogd, QEMU under libvirt) lives in the pod's
    // network namespace: found there by the kernel's record, not by its pid files.
    vm::stop_netns_processes(&rec.netns);
    if rec.phase1
        && let Ok(h) = sibling("netbind-handler")
    {
        let o = Command::new(h)
            .args(["teardown", "--netns", &format!("/run/netns/{}", rec.netns)])
            .arg("--handoff-dir")
            .arg(dir.join("handoff"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .output();
        if let Ok(o) = o
            && !o.status.success()
        {
            eprintln!(
                "netbind down: phase-1 teardown: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    if let Some(ip) = rec.pod_ip {
        podsim::delete_pod(&rec.netns, ip);
        podsim::release(ip);
    } else if podsim::netns_exists(&rec.netns) {
        let _ = Command::new("ip")
            .args(["netns", "del", &rec.netns])
            .output();
    }
    remove_pod_dir(&dir);
    // After a signal, do not wait for another `up` to release the lock: the node it shares
    // is left for the last pod's `down` to remove.
    if let Ok(_lock) = podsim::Lock::take_unless(&interrupted) {
        let _ = podsim::remove_node_if_unused();
    }
}

/// Removes the pod's directory even while a VM-uid process keeps writing into `vm/`: the
/// directory is first renamed out of every path the VM side knows and closed to it (0700),
/// then removed. remove_dir_all never follows a symlink.
fn remove_pod_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let trash = dir.with_file_name(format!(
        ".removing-{}-{}",
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let target = match std::fs::rename(dir, &trash) {
        Ok(()) => {
            let _ = std::fs::set_permissions(&trash, std::fs::Permissions::from_mode(0o700));
            trash
        }
        Err(_) => dir.to_path_buf(),
    };
    for _ in 0..5 {
        if std::fs::remove_dir_all(&target).is_ok() || !target.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn down(name: &str) -> Result<(), UpError> {
    let rec = PodRecord::load(name).ok_or_else(|| {
        UpError::Invalid(format!("no pod named {name} (netbind status lists them)"))
    })?;
    down_record(&rec);
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct PodStatus {
    pub name: String,
    /// `running`, or `failed: WHY` when a process the pod needs is gone. A dead launcher
    /// means no DHCP for the guest, so the pod is failed (as KubeVirt fails a VMI whose
    /// virt-launcher died), even though the guest may still run.
    pub phase: String,
    pub vmi: String,
    pub binding: String,
    pub pod_ip: Option<Ipv4Addr>,
    pub launcher: String,
    pub vm: String,
    pub lease: Option<String>,
}

/// The pod's phase from its recorded processes.
pub fn phase(r: &PodRecord) -> String {
    match (r.launcher, r.boot, r.vm) {
        (Some(l), _, _) if !l.alive() => format!("failed: the launcher (pid {}) exited", l.pid),
        (_, Some(b), Some(v)) if !v.alive() => {
            format!("failed: the VM ({b:?}, pid {}) exited", v.pid).to_lowercase()
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
    for r in records() {
        // The pid shown is the program's (the launcher, QEMU, libvirtd), inside its sandbox.
        let state = |p: Option<vm::Proc>| match p {
            Some(p) if p.alive() => format!(
                "running (pid {})",
                vm::sandbox_program(p).map_or(p.pid, |q| q.pid)
            ),
            Some(p) => format!("exited (pid {})", p.pid),
            None => "-".into(),
        };
        out.push(PodStatus {
            phase: phase(&r),
            name: r.name.clone(),
            vmi: r.vmi.clone(),
            binding: r.binding.clone(),
            pod_ip: r.pod_ip,
            launcher: state(r.launcher),
            vm: match r.boot {
                Some(b) => format!("{b:?} {}", state(r.vm)).to_lowercase(),
                None => "-".into(),
            },
            lease: r.lease.clone(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
