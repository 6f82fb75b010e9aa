//! Starting the unprivileged parts of a pod: the launcher, QEMU, or an unprivileged libvirt
//! session daemon. Each runs as uid/gid 107 with every capability set empty (the bounding set
//! cleared before exec) and no_new_privs, inside the pod netns, in a mount namespace of its
//! own where /proc/sys is read-only and /dev/net/tun is a usable 0666 node.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::podsim::SimError;

pub const VM_UID: u32 = 107;
pub const VM_GID: u32 = 107;

/// The mount set-up done (as root, in the fresh mount namespace `ip netns exec` makes)
/// before dropping to the VM uid.
const SANDBOX: &str = r#"mount --bind "$NETBIND_TUN" /dev/net/tun && mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@""#;

/// `program args` as the VM uid, no capabilities, no_new_privs, in `netns`.
pub fn unprivileged(
    netns: &str,
    tun: &Path,
    env: Option<&[(&str, String)]>,
    program: &str,
    args: &[String],
) -> Command {
    unprivileged_with(netns, tun, &[], env, program, args)
}

/// The same sandbox, keeping `grants` (e.g. `NET_ADMIN`) in every capability set: the
/// audit's demonstration of what a launcher with capabilities could do.
pub fn unprivileged_with(
    netns: &str,
    tun: &Path,
    grants: &[String],
    env: Option<&[(&str, String)]>,
    program: &str,
    args: &[String],
) -> Command {
    let extra: String = grants
        .iter()
        .map(|g| format!(",+{}", g.to_lowercase()))
        .collect();
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        netns,
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
    .env("NETBIND_TUN", tun);
    if let Some(vars) = env {
        c.args(["env", "-i"]);
        c.args(vars.iter().map(|(k, v)| format!("{k}={v}")));
    }
    c.arg(program).args(args);
    c
}

/// Starts `cmd` detached from the terminal (its own session), output to `log`.
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<Child, SimError> {
    let io = |e: std::io::Error| SimError::Io {
        op: "open",
        path: log.to_path_buf(),
        source: e,
    };
    let out = File::create(log).map_err(io)?;
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

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// SIGTERM, then SIGKILL after a grace period.
pub fn stop(pid: u32) {
    let Ok(p) = i32::try_from(pid) else { return };
    if p <= 1 {
        return;
    }
    // SAFETY: kill with a pid netbind started.
    unsafe { libc::kill(p, libc::SIGTERM) };
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

/// Waits until `file` holds a line containing `needle`; returns that line.
pub fn wait_for_line(
    file: &Path,
    needle: &str,
    timeout: Duration,
    abort: &dyn Fn() -> bool,
) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < timeout && !abort() {
        if let Ok(text) = std::fs::read(file) {
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

/// The guest's kernel command line: where to listen and which node address to reach.
pub fn cmdline(listen: &[u16], egress: &str) -> String {
    let ports: Vec<String> = listen.iter().map(u16::to_string).collect();
    format!(
        "console=ttyS0 quiet panic=-1 netbind.listen={} netbind.egress={egress}",
        ports.join(",")
    )
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

    pub fn pidfile(&self, daemon: &str) -> PathBuf {
        self.xdg.join(format!("libvirt/{daemon}.pid"))
    }

    pub fn pid(&self, daemon: &str) -> Option<u32> {
        std::fs::read_to_string(self.pidfile(daemon))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}
