//! The pod simulator: what a container runtime and a CNI bridge plugin would do on one
//! machine, in namespaces of netbind's own (the host's root namespace is never touched).
//!
//! - a "node" namespace `netbind-node` with bridge `nb-node0` at 10.244.0.1/24 and
//!   fd00:10:244::1/64 and a small HTTP listener on both (port 8081) that guests reach
//!   through the masquerade NAT;
//! - per pod a namespace `netbind-<name>` whose `eth0` is a veth to that bridge, with the
//!   addresses of its IP family (IPv4, IPv6 or both, as a dual-stack CNI gives them) from a
//!   host-local-style allocator (one file per address under /run/netbind/ipam, created with
//!   O_EXCL under a lock; the IPv6 address has the same host number) and default routes.

pub mod sandbox;
pub mod vm;

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const NODE_NS: &str = "netbind-node";
pub const NODE_BRIDGE: &str = "nb-node0";
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const NODE_PREFIX: u8 = 24;
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 1);
pub const NODE_PREFIX6: u8 = 64;

/// The pod network's IP families, as the cluster's CNI configures them.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    #[default]
    Ipv4,
    Ipv6,
    Dual,
}

impl IpFamily {
    pub fn v4(self) -> bool {
        self != IpFamily::Ipv6
    }
    pub fn v6(self) -> bool {
        self != IpFamily::Ipv4
    }
}

/// A pod's addresses: IPv4 and / or IPv6 with the same host number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// The allocator's address (the host number), whatever the family.
    pub slot: Ipv4Addr,
}

impl PodAddrs {
    pub fn of(slot: Ipv4Addr, family: IpFamily) -> PodAddrs {
        let host = u16::from(slot.octets()[3]);
        PodAddrs {
            v4: family.v4().then_some(slot),
            v6: family
                .v6()
                .then(|| Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, host)),
            slot,
        }
    }
}
pub const NODE_LISTEN_PORT: u16 = 8081;
pub const NODE_BODY: &str = "netbind-node-ok";
/// The node bridge's MAC, set explicitly. A Linux bridge without an assigned MAC takes the
/// lowest MAC of its ports and changes it whenever a pod's veth with a lower one joins or
/// leaves; a bridge-bound guest, which caches the gateway's MAC from its first ARP, then sends
/// to a MAC the node no longer answers to until its neighbour entry expires (tens of seconds).
/// An assigned address (addr_assign_type 3) is never recalculated.
pub const NODE_BRIDGE_MAC: &str = "02:6e:62:00:00:01";

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{what}: {detail}")]
    Cmd { what: String, detail: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no free pod address left in 10.244.0.0/24")]
    Exhausted,
    #[error("interrupted while waiting for the pod simulator's lock")]
    Interrupted,
}

pub fn run_dir() -> PathBuf {
    std::env::var_os("NETBIND_RUN_DIR").map_or_else(|| PathBuf::from("/run/netbind"), PathBuf::from)
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SimError + 'a {
    move |source| SimError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs a command; an error carries its stderr, [`vm::printable`] (some commands run in the
/// VM side's sandbox, whose output an operator's terminal must not take as escapes).
pub fn run(what: &str, cmd: &mut Command) -> Result<String, SimError> {
    let out = cmd.output().map_err(|e| SimError::Cmd {
        what: what.into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(SimError::Cmd {
            what: what.into(),
            detail: vm::printable(String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(what: &str, args: &[&str]) -> Result<String, SimError> {
    run(what, Command::new("ip").args(args))
}

pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// An exclusive lock on the run directory for node creation and address allocation, so
/// several `netbind up` at once do not collide.
pub struct Lock(#[allow(dead_code)] std::fs::File); // held for its flock

/// The lock file: root's alone (0600 from its creation, never a symlink), since anyone who can
/// open a file can flock it and so stop every `netbind up` on the machine.
pub const LOCK_FILE: &str = "lock.root";

impl Lock {
    /// Waits for the lock, giving up with [`SimError::Interrupted`] as soon as `interrupted`
    /// says so (a blocking flock would sit through SIGTERM, which restarts it).
    pub fn take_unless(interrupted: &dyn Fn() -> bool) -> Result<Lock, SimError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = run_dir();
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io("open", &path))?;
        let meta = file.metadata().map_err(io("stat", &path))?;
        if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io("chmod", &path))?;
        }
        loop {
            // SAFETY: flock on an open fd; released when the file is closed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Lock(file));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io("lock", &path)(err));
            }
            if interrupted() {
                return Err(SimError::Interrupted);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str("Lock")
    }
}

/// Creates the node namespace, bridge and listener if missing (caller holds the lock).
pub fn ensure_node() -> Result<(), SimError> {
    if netns_exists(NODE_NS) {
        // A node made by an older netbind may still have a port-derived MAC, and no IPv6.
        pin_bridge_mac()?;
        address_node6()?;
        // A node left by an interrupted run may have lost its listener: start it again.
        let pids = run(
            "list node processes",
            Command::new("ip").args(["netns", "pids", NODE_NS]),
        )?;
        if pids.trim().is_empty() {
            start_node_listener()?;
        }
        return Ok(());
    }
    ip("create the node namespace", &["netns", "add", NODE_NS])?;
    let cidr = format!("{NODE_IP}/{NODE_PREFIX}");
    ip("node lo up", &["-n", NODE_NS, "link", "set", "lo", "up"])?;
    ip(
        "create the node bridge",
        &["-n", NODE_NS, "link", "add", NODE_BRIDGE, "type", "bridge"],
    )?;
    pin_bridge_mac()?;
    ip(
        "address the node bridge",
        &["-n", NODE_NS, "addr", "add", &cidr, "dev", NODE_BRIDGE],
    )?;
    address_node6()?;
    ip(
        "node bridge up",
        &["-n", NODE_NS, "link", "set", NODE_BRIDGE, "up"],
    )?;
    start_node_listener()
}

/// The node bridge's IPv6 address (also on a node made by an older netbind).
fn address_node6() -> Result<(), SimError> {
    let cidr = format!("{NODE_IP6}/{NODE_PREFIX6}");
    let have = ip(
        "list the node's addresses",
        &["-n", NODE_NS, "-6", "addr", "show", "dev", NODE_BRIDGE],
    )?;
    if have.contains(&cidr) {
        return Ok(());
    }
    ip(
        "address the node bridge (IPv6)",
        &[
            "-n",
            NODE_NS,
            "addr",
            "add",
            &cidr,
            "dev",
            NODE_BRIDGE,
            "nodad",
        ],
    )
    .map(drop)
}

fn pin_bridge_mac() -> Result<(), SimError> {
    ip(
        "set the node bridge MAC",
        &[
            "-n",
            NODE_NS,
            "link",
            "set",
            NODE_BRIDGE,
            "address",
            NODE_BRIDGE_MAC,
        ],
    )
    .map(drop)
}

/// The node's HTTP listener that guests reach through the masquerade NAT (egress check).
fn start_node_listener() -> Result<(), SimError> {
    let www = run_dir().join("node-www");
    std::fs::create_dir_all(&www).map_err(io("create", &www))?;
    std::fs::write(www.join("index.html"), format!("{NODE_BODY}\n")).map_err(io("write", &www))?;
    for listen in [
        format!("{NODE_IP}:{NODE_LISTEN_PORT}"),
        format!("[{NODE_IP6}]:{NODE_LISTEN_PORT}"),
    ] {
        run(
            "start the node listener",
            Command::new("ip")
                .args([
                    "netns", "exec", NODE_NS, "busybox", "httpd", "-p", &listen, "-h",
                ])
                .arg(&www),
        )?;
    }
    Ok(())
}

/// Removes the node when no pod is left (caller holds the lock).
pub fn remove_node_if_unused() -> Result<(), SimError> {
    let ipam = run_dir().join("ipam");
    let used = std::fs::read_dir(&ipam).map(|d| d.count()).unwrap_or(0);
    if used > 0 || !netns_exists(NODE_NS) {
        return Ok(());
    }
    // The listener is the only process in the node namespace.
    let _ = Command::new("ip")
        .args(["netns", "pids", NODE_NS])
        .output()
        .map(|o| {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(pid_num) = pid.parse::<i32>() {
                    // SAFETY: kill with a pid listed for the node namespace.
                    unsafe { libc::kill(pid_num, libc::SIGTERM) };
                }
            }
        });
    ip("delete the node namespace", &["netns", "del", NODE_NS])?;
    let _ = std::fs::remove_dir_all(run_dir().join("node-www"));
    Ok(())
}

/// Allocates the first free address .2–.254 for `pod` (caller holds the lock).
pub fn allocate(pod: &str) -> Result<Ipv4Addr, SimError> {
    let dir = run_dir().join("ipam");
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    for host in 2..=254u8 {
        let addr = Ipv4Addr::new(10, 244, 0, host);
        let path = dir.join(addr.to_string());
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(pod.as_bytes()).map_err(io("write", &path))?;
                return Ok(addr);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(io("create", &path)(err)),
        }
    }
    Err(SimError::Exhausted)
}

pub fn release(addr: Ipv4Addr) {
    let _ = std::fs::remove_file(run_dir().join("ipam").join(addr.to_string()));
}

/// The node-side veth name: short enough for IFNAMSIZ whatever the pod name.
pub fn node_veth(addr: Ipv4Addr) -> String {
    format!("nbv{}", addr.octets()[3])
}

/// Creates the pod namespace with `eth0` as a CNI bridge plugin would, with the addresses
/// and default routes of `addrs`.
pub fn create_pod(netns: &str, addrs: PodAddrs, mtu: u32) -> Result<(), SimError> {
    let veth = node_veth(addrs.slot);
    let mtu = mtu.to_string();
    ip("create the pod namespace", &["netns", "add", netns])?;
    ip("pod lo up", &["-n", netns, "link", "set", "lo", "up"])?;
    ip(
        "create the pod veth",
        &[
            "-n", NODE_NS, "link", "add", &veth, "mtu", &mtu, "type", "veth", "peer", "name",
            "eth0", "mtu", &mtu, "netns", netns,
        ],
    )?;
    ip(
        "attach the veth to the node bridge",
        &[
            "-n",
            NODE_NS,
            "link",
            "set",
            &veth,
            "master",
            NODE_BRIDGE,
            "up",
        ],
    )?;
    if let Some(v4) = addrs.v4 {
        let cidr = format!("{v4}/{NODE_PREFIX}");
        ip(
            "address the pod",
            &["-n", netns, "addr", "add", &cidr, "dev", "eth0"],
        )?;
    }
    if let Some(v6) = addrs.v6 {
        // nodad: the allocator guarantees uniqueness, and the address is usable at once.
        let cidr = format!("{v6}/{NODE_PREFIX6}");
        ip(
            "address the pod (IPv6)",
            &["-n", netns, "addr", "add", &cidr, "dev", "eth0", "nodad"],
        )?;
    }
    ip("pod eth0 up", &["-n", netns, "link", "set", "eth0", "up"])?;
    if addrs.v4.is_some() {
        let via = NODE_IP.to_string();
        ip(
            "pod default route",
            &["-n", netns, "route", "add", "default", "via", &via],
        )?;
    }
    if addrs.v6.is_some() {
        let via = NODE_IP6.to_string();
        ip(
            "pod default route (IPv6)",
            &["-n", netns, "-6", "route", "add", "default", "via", &via],
        )?;
    }
    Ok(())
}

pub fn delete_pod(netns: &str, addr: Ipv4Addr) {
    let _ = Command::new("ip")
        .args(["-n", NODE_NS, "link", "del", &node_veth(addr)])
        .output();
    let _ = Command::new("ip").args(["netns", "del", netns]).output();
}

/// A 0666 /dev/net/tun node for the VM's mount namespace (as a device plugin provides it);
/// the host's own node is never changed.
pub fn tun_node() -> Result<PathBuf, SimError> {
    tun_node_in(&run_dir())
}

/// The same node in `dir`.
pub fn tun_node_in(dir: &Path) -> Result<PathBuf, SimError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let path = dir.join("tun");
    if !path.exists() {
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: mknod with a NUL-terminated path; 10:200 is /dev/net/tun.
        if unsafe {
            libc::mknod(
                cpath.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(10, 200),
            )
        } != 0
        {
            let err = std::io::Error::last_os_error();
            // Another `up` (or test) made it between the check and here.
            if err.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(io("mknod", &path)(err));
            }
        }
    }
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: chmod with a NUL-terminated path (mknod's mode was narrowed by the umask).
    unsafe { libc::chmod(cpath.as_ptr(), 0o666) };
    Ok(path)
}
