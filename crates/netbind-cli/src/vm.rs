//! Starting the unprivileged parts of a pod: the launcher, QEMU, or an unprivileged libvirt
//! session daemon, each in the pod's sandbox ([`Sandbox`]), and stopping them.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::podsim::SimError;

pub const VM_UID: u32 = 107;
pub const VM_GID: u32 = 107;

/// The sandbox set-up, done as root in the fresh mount and PID namespaces of the sandbox
/// before dropping to the VM uid: the 0666 tun node on /dev/net/tun, /proc/sys read-only
/// (on the sandbox's own /proc), netbind's run directory hidden under an empty tmpfs except
/// for this pod's directory (bound back at its own path through a descriptor opened before
/// the tmpfs covered it; `--no-canonicalize` keeps mount(8) from resolving that descriptor's
/// path, which now names the empty tmpfs). /tmp stays shared: the binaries may live there (a
/// checkout in /tmp), and no pod keeps anything in it. Each step must succeed (`set -e`).
const SANDBOX: &str = r#"set -e
mount --bind "$NETBIND_TUN" /dev/net/tun
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
exec 3<"$NETBIND_POD_DIR"
mount -t tmpfs -o mode=0755,size=64k netbind-run "$NETBIND_RUN_DIR"
mkdir -p "$NETBIND_POD_DIR"
mount --no-canonicalize --bind /proc/self/fd/3 "$NETBIND_POD_DIR"
exec 3<&-
exec "$@""#;

/// Where the VM side of one pod runs. Every process started through it (launcher, QEMU,
/// libvirtd, virsh, the audit's probes) gets, as a container runtime would give a container:
/// the pod's network namespace; a PID namespace of its own with its own /proc (no other
/// pod's process can be named, signalled or traced, nor this one from another pod); a mount
/// namespace where the only pod directory is its own; uid/gid 107 with every capability set
/// empty and no_new_privs; and the VM syscall filter (`netbind-vm-exec`).
#[derive(Debug, Clone, Copy)]
pub struct Sandbox<'a> {
    pub netns: &'a str,
    /// The 0666 tun node bound on /dev/net/tun.
    pub tun: &'a Path,
    /// The pod's directory, the only part of netbind's run directory the sandbox sees.
    pub pod_dir: &'a Path,
    /// The `netbind-vm-exec` binary.
    pub vm_exec: &'a Path,
}

impl Sandbox<'_> {
    /// `program args` in the sandbox; `env`: the program's whole environment.
    pub fn command(
        &self,
        env: Option<&[(&str, String)]>,
        program: &str,
        args: &[String],
    ) -> Command {
        self.command_with(&[], true, env, program, args)
    }

    /// The same, keeping `grants` (e.g. `NET_ADMIN`) in every capability set, and without the
    /// syscall filter unless `filtered`: the audit's measurements of each layer alone.
    pub fn command_with(
        &self,
        grants: &[String],
        filtered: bool,
        env: Option<&[(&str, String)]>,
        program: &str,
        args: &[String],
    ) -> Command {
        let extra: String = grants
            .iter()
            .map(|g| format!(",+{}", g.to_lowercase()))
            .collect();
        let mut c = Command::new("ip");
        // `--kill-child`: the sandbox dies with the `unshare` that root recorded at spawn.
        c.args([
            "netns",
            "exec",
            self.netns,
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
            SANDBOX,
            "netbind-sandbox",
            "setpriv",
        ])
        .arg(format!("--reuid={VM_UID}"))
        .arg(format!("--regid={VM_GID}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps=-all{extra}"))
        .arg(format!("--ambient-caps=-all{extra}"))
        .arg(format!("--bounding-set=-all{extra}"))
        .arg("--no-new-privs")
        .env("NETBIND_TUN", self.tun)
        .env("NETBIND_POD_DIR", self.pod_dir)
        .env("NETBIND_RUN_DIR", crate::podsim::run_dir());
        if filtered {
            c.arg(self.vm_exec);
        }
        if let Some(vars) = env {
            c.args(["env", "-i"]);
            c.args(vars.iter().map(|(k, v)| format!("{k}={v}")));
        }
        c.arg(program).args(args);
        c
    }
}

/// Starts `cmd` detached from the terminal (its own session), output to `log`, a new file in a
/// root-owned directory (never an existing file or a symlink).
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<Child, SimError> {
    let io = |e: std::io::Error| SimError::Io {
        op: "create",
        path: log.to_path_buf(),
        source: e,
    };
    let out = create_new(log, 0o644).map_err(io)?;
    let err = out.try_clone().map_err(io)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid has no preconditions and is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| SimError::Cmd {
        what: "start a process".into(),
        detail: e.to_string(),
    })
}

/// Creates `path` (which must not exist; a symlink there is not followed) with `mode`.
pub fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

pub use netbind_handler::process::Proc;
use netbind_handler::process::{parent, signal};

/// Stops a sandbox that root recorded at spawn: SIGTERM, then SIGKILL after 3 s, through
/// pidfds only. The recorded process is the sandbox's `unshare`, which blocks SIGTERM and
/// waits for its child, the sandbox's PID 1 (`netbind-vm-exec`, which passes SIGTERM on to
/// the program): that child gets the SIGTERM, and the SIGKILL, if needed, goes to `unshare`,
/// whose death kills the child (`--kill-child`) and with it the whole PID namespace.
pub fn stop_sandbox(p: Proc) {
    if !p.alive() {
        return;
    }
    for child in children(p.pid) {
        if let Some(cfd) = child.pidfd()
            && parent(child.pid) == Some(p.pid)
        {
            signal(&cfd, libc::SIGTERM);
        }
    }
    p.stop(Duration::from_secs(3));
}

/// The program a sandbox runs: below its recorded `unshare` is the sandbox's PID 1
/// (`netbind-vm-exec`, or the audit's probe binary, which runs without it), and below that
/// the program.
pub fn sandbox_program(p: Proc) -> Option<Proc> {
    if !p.alive() {
        return None;
    }
    let init = children(p.pid).into_iter().next()?;
    Some(children(init.pid).into_iter().next().unwrap_or(init))
}

/// The processes of network namespace `/run/netns/NETNS` whose command name starts with
/// `comm` (QEMU under libvirt: started by the VM side itself, found by the kernel's record).
pub fn netns_processes(netns: &str, comm: &str) -> Vec<Proc> {
    let Some(in_pod) = netns_member(netns) else {
        return Vec::new();
    };
    pids()
        .filter(|pid| {
            in_pod(*pid)
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.starts_with(comm))
        })
        .filter_map(Proc::of)
        .collect()
}

/// The live children of `pid`, by a scan of /proc (this kernel may lack
/// /proc/PID/task/TID/children).
fn children(pid: u32) -> Vec<Proc> {
    pids()
        .filter(|c| parent(*c) == Some(pid))
        .filter_map(Proc::of)
        .collect()
}

/// Stops every process whose network namespace is the pod's (`/run/netns/NETNS`): what the
/// VM side started on its own (virtlogd, QEMU under libvirt). Membership is the kernel's
/// (the namespace inode), not a pid file; each process is signalled through a pidfd taken
/// before the check, so a recycled pid is never hit.
pub fn stop_netns_processes(netns: &str) {
    let Some(in_pod) = netns_member(netns) else {
        return;
    };
    for p in pids()
        .filter(|pid| in_pod(*pid))
        .filter_map(Proc::of)
        .collect::<Vec<_>>()
    {
        // Re-checked once the pidfd pins the process: still the same one, still in the pod.
        if let Some(fd) = p.pidfd()
            && in_pod(p.pid)
        {
            signal(&fd, libc::SIGKILL);
        }
    }
}

/// Whether a pid's network namespace is `/run/netns/NETNS` (by the namespace's inode).
fn netns_member(netns: &str) -> Option<impl Fn(u32) -> bool> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(Path::new("/run/netns").join(netns)).ok()?;
    Some(move |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
    })
}

/// Every pid in /proc (this PID namespace's: the node's, for root).
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Reads the hand-off record phase 1 wrote under `dir` (root-owned): a read error and a parse
/// error are told apart, each naming the file.
pub fn read_handoff(dir: &Path) -> Result<netbind_model::handoff::Handoff, String> {
    let path = dir.join(netbind_model::handoff::HANDOFF_FILE);
    let bytes =
        netbind_model::input::read_regular(&path, 1 << 20).map_err(|e| format!("read {e}"))?;
    netbind_model::handoff::Handoff::from_json(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// How much of a log or console root reads (the guest decides how much it writes).
pub const MAX_LOG_BYTES: u64 = 16 << 20;

/// Reads a log or console (capped, a regular file with one name, never through a symlink).
pub fn read_console(file: &Path) -> Result<Vec<u8>, netbind_model::input::InputError> {
    netbind_model::input::read_untrusted(file, MAX_LOG_BYTES)
}

/// Waits until `file` holds a line containing `needle`; returns that line. `file` is one root
/// created in a root-owned directory; it is read as a regular file, and at most
/// [`MAX_LOG_BYTES`] of it.
pub fn wait_for_line(
    file: &Path,
    needle: &str,
    timeout: Duration,
    abort: &dyn Fn() -> bool,
) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < timeout && !abort() {
        if let Ok(text) = read_console(file) {
            let text = String::from_utf8_lossy(&text);
            if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn chown_vm(path: &Path) -> Result<(), SimError> {
    std::os::unix::fs::chown(path, Some(VM_UID), Some(VM_GID)).map_err(|source| SimError::Io {
        op: "chown",
        path: path.to_path_buf(),
        source,
    })
}

/// The guest image: Debian's cloud kernel and netbind's busybox initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// `NETBIND_GUEST_DIR`, else `.e2e/guest` next to the source tree the binary was built in.
    pub fn locate() -> Result<GuestImage, SimError> {
        let dir = std::env::var_os("NETBIND_GUEST_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.e2e/guest"),
            PathBuf::from,
        );
        let g = GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
        };
        if !g.kernel.is_file() || !g.initrd.is_file() {
            return Err(SimError::Cmd {
                what: "find the guest image".into(),
                detail: format!(
                    "{} has no vmlinuz / initrd.gz: run scripts/build-guest.sh",
                    dir.display()
                ),
            });
        }
        Ok(g)
    }

    /// Copies the image where the VM uid can read it.
    pub fn copy_to(&self, dir: &Path) -> Result<GuestImage, SimError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| SimError::Io {
                op: "copy",
                path: p,
                source,
            }
        };
        let k = dir.join("vmlinuz");
        let i = dir.join("initrd.gz");
        std::fs::copy(&self.kernel, &k).map_err(io(&k))?;
        std::fs::copy(&self.initrd, &i).map_err(io(&i))?;
        Ok(GuestImage {
            kernel: k,
            initrd: i,
        })
    }
}

/// The guest's kernel command line: where to listen, which families to configure, and which
/// node address to reach over each (`egress`: IPv4 `ADDR:PORT`; `egress6`: IPv6 `ADDR,PORT`).
pub fn cmdline(listen: &[u16], egress: Option<&str>, egress6: Option<&str>) -> String {
    let ports: Vec<String> = listen.iter().map(u16::to_string).collect();
    let mut c = format!(
        "console=ttyS0 quiet panic=-1 netbind.listen={} netbind.ipv4={} netbind.ipv6={}",
        ports.join(","),
        u8::from(egress.is_some()),
        u8::from(egress6.is_some()),
    );
    if let Some(e) = egress {
        c.push_str(&format!(" netbind.egress={e}"));
    }
    if let Some(e) = egress6 {
        c.push_str(&format!(" netbind.egress6={e}"));
    }
    c
}

/// QEMU under TCG (no usable KVM here) on the pre-created tap, as the VM uid.
pub fn qemu_args(
    img: &GuestImage,
    console: &Path,
    tap: &str,
    mac: &str,
    mtu: u32,
    rom_disabled: bool,
    cmdline: &str,
) -> Vec<String> {
    let mut dev = format!("virtio-net-pci,netdev=n0,mac={mac},host_mtu={mtu}");
    if rom_disabled {
        dev.push_str(",romfile=");
    }
    [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "256",
        "-smp",
        "1",
        "-no-reboot",
        // QEMU's own syscall filter, on top of the sandbox's (the settings libvirt uses when
        // `seccomp_sandbox` is on, its default).
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "-serial".into(),
        format!("file:{}", console.display()),
        "-kernel".into(),
        img.kernel.display().to_string(),
        "-initrd".into(),
        img.initrd.display().to_string(),
        "-append".into(),
        cmdline.into(),
        "-netdev".into(),
        format!("tap,id=n0,ifname={tap},script=no,downscript=no,vhost=off"),
        "-device".into(),
        dev,
    ])
    .collect()
}

/// A complete libvirt domain around the launcher's `<interface>` elements.
pub fn libvirt_domain(
    name: &str,
    img: &GuestImage,
    interfaces: &str,
    cmdline: &str,
    console: &Path,
) -> String {
    let e = netbind_plan::domxml::escape;
    let ifaces: String = interfaces.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "<domain type='qemu'>\n  <name>{}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n    <kernel>{}</kernel>\n    <initrd>{}</initrd>\n    <cmdline>{}</cmdline>\n  </os>\n  <features><acpi/></features>\n  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n{ifaces}    <serial type='file'>\n      <source path='{}'/>\n      <target port='0'/>\n    </serial>\n    <memballoon model='none'/>\n  </devices>\n</domain>\n",
        e(name),
        e(&img.kernel.display().to_string()),
        e(&img.initrd.display().to_string()),
        e(cmdline),
        e(&console.display().to_string()),
    )
}

/// Paths of a session libvirt for the VM uid inside one pod.
#[derive(Debug, Clone)]
pub struct Libvirt {
    pub home: PathBuf,
    pub xdg: PathBuf,
}

impl Libvirt {
    pub fn new(vm_dir: &Path) -> Libvirt {
        Libvirt {
            home: vm_dir.join("libvirt-home"),
            xdg: vm_dir.join("libvirt-xdg"),
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HOME", self.home.display().to_string()),
            ("XDG_RUNTIME_DIR", self.xdg.display().to_string()),
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ]
    }

    pub fn socket(&self) -> PathBuf {
        self.xdg.join("libvirt/libvirt-sock")
    }

    /// The daemon's command: the VM uid creates its own home and runtime directories (root
    /// never creates or chowns anything inside the VM's directory), then becomes libvirtd.
    pub fn daemon_args() -> Vec<String> {
        vec![
            "-c".into(),
            r#"mkdir -p -m 0700 "$HOME" "$XDG_RUNTIME_DIR" && exec libvirtd"#.into(),
        ]
    }
}
