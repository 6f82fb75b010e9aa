//! Where the VM side of a pod runs (the launcher, QEMU, libvirt's session daemon, the audit's
//! probes): the sandbox `netbind up` and the end-to-end tests start them in, and how root
//! finds and stops what runs there (through pidfds only).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::SimError;

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
        let mut cmd = Command::new("ip");
        // `--kill-child`: the sandbox dies with the `unshare` that root recorded at spawn. It
        // sets a parent-death signal on the sandbox's PID 1, which the kernel clears when that
        // process changes its credentials (setpriv's uid 107); `--pdeathsig keep` sets it again
        // after the change, and it survives the exec of the (unprivileged) program. Without
        // it, a killed `unshare` left PID 1 and the program running, unrecorded.
        cmd.args([
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
        .args(["--pdeathsig", "keep"])
        .env("NETBIND_TUN", self.tun)
        .env("NETBIND_POD_DIR", self.pod_dir)
        .env("NETBIND_RUN_DIR", crate::run_dir());
        if filtered {
            cmd.arg(self.vm_exec);
        }
        if let Some(vars) = env {
            cmd.args(["env", "-i"]);
            cmd.args(vars.iter().map(|(k, v)| format!("{k}={v}")));
        }
        cmd.arg(program).args(args);
        cmd
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
pub fn stop_sandbox(proc: Proc) {
    if !proc.alive() {
        return;
    }
    for child in children(proc.pid) {
        if let Some(cfd) = child.pidfd()
            && parent(child.pid) == Some(proc.pid)
        {
            signal(&cfd, libc::SIGTERM);
        }
    }
    proc.stop(Duration::from_secs(3));
}

/// The program a sandbox runs: below its recorded `unshare` is the sandbox's PID 1
/// (`netbind-vm-exec`, or the audit's probe binary, which runs without it), and below that
/// the program.
pub fn sandbox_program(proc: Proc) -> Option<Proc> {
    let init = sandbox_init(proc)?;
    Some(children(init.pid).into_iter().next().unwrap_or(init))
}

/// The sandbox's PID 1, the child of its recorded `unshare`.
pub fn sandbox_init(proc: Proc) -> Option<Proc> {
    if !proc.alive() {
        return None;
    }
    children(proc.pid).into_iter().next()
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
    for pid_entry in pids()
        .filter(|pid| in_pod(*pid))
        .filter_map(Proc::of)
        .collect::<Vec<_>>()
    {
        // Re-checked once the pidfd pins the process: still the same one, still in the pod.
        if let Some(fd) = pid_entry.pidfd()
            && in_pod(pid_entry.pid)
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
