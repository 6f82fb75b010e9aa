//! A private containerd "node" that leaves the host alone.
//!
//! containerd runs in a network namespace of its own (the node: the CNI bridge and the pods'
//! veth ends live there) and in a mount namespace of its own (a tmpfs on `/run` holds its
//! shims' sockets and the pods' namespace mounts; `/var/lib/cni`, libcni's cache, is bound to
//! a private directory). Its root, state, socket, CNI configuration and binaries, IPAM and
//! logs are all under one directory. Images are built locally with buildah (`FROM scratch`,
//! private vfs storage) and imported with `ctr`: no registry. Facts behind each setting:
//! `restrict_oom_score_adj` because this machine lacks CAP_SYS_RESOURCE (runc fails to lower
//! the sandbox's oom_score_adj otherwise); `nsenter`, not `ip netns exec`, which remounts /sys
//! and so hides the cgroup tree from containerd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::CriError;
use crate::client::Cri;

/// The image every pod's infra ("pause") container runs: catatonit, as podman's.
pub const PAUSE_IMAGE: &str = "localhost/netbind-pause:1";
/// The image of the launcher and QEMU containers: an empty root (mount points and the usual
/// merged-/usr symlinks); programs come from read-only mounts of the host's `/usr`.
pub const APP_IMAGE: &str = "localhost/netbind-app:1";
/// The node's HTTP listener port (the guest's egress check), at the bridge's gateway.
pub const NODE_LISTEN_PORT: u16 = 8081;
/// What the node's listener serves (the test guest looks for it).
pub const NODE_BODY: &str = "netbind-node-ok";

/// How to build the node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Everything of this node lives here (created; removed on drop). Not under `/run`, which
    /// containerd's mount namespace covers with a tmpfs of its own.
    pub dir: PathBuf,
    /// The node's network namespace (`/run/netns/NAME`, created; removed on drop).
    pub netns: String,
    /// The pod network (host-local), e.g. `10.251.0.0/24`; the bridge takes `.1`.
    pub subnet_prefix: String,
    /// netbind's binaries (netbind-cni, netbind-ra, netbind-launcher): chained after
    /// bridge + host-local when `Some`.
    pub netbind_bins: Option<PathBuf>,
    /// KubeVirt's binding-plugin form: netbind-cni's entry carries the binding's
    /// NetworkAttachmentDefinition config (`bindingMode`) and the `cni-args` virt-controller
    /// gives it through Multus (`logicNetworkName`), as Multus would run it for every VM pod.
    pub binding_plugin: Option<BindingPluginNet>,
}

/// A binding plugin's NetworkAttachmentDefinition as Multus runs it for one network.
#[derive(Debug, Clone)]
pub struct BindingPluginNet {
    /// `masquerade` or `bridge` (the NAD's `bindingMode`).
    pub mode: String,
    /// The VMI network (`cni-args.logicNetworkName`).
    pub network: String,
}

/// A running private containerd; stopped, with every pod removed, on drop, unless
/// [`Node::detach`]ed (`netbind up` leaves it running for the pods it starts; the last
/// `netbind down` stops it with [`Node::stop_detached`]).
#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    containerd: Option<Child>,
    detached: bool,
}

fn node_err(what: impl Into<String>, detail: impl std::fmt::Display) -> CriError {
    CriError::Node {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// Runs a command to completion; its stderr names the failure.
fn run(what: &str, cmd: &mut Command) -> Result<String, CriError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| node_err(what, e))?;
    if !out.status.success() {
        return Err(node_err(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write(path: &Path, text: &str) -> Result<(), CriError> {
    std::fs::write(path, text).map_err(|e| node_err(format!("write {}", path.display()), e))
}

impl NodeConfig {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    /// netbind-cni's `runDir`: one directory per sandbox, holding its hand-off record.
    pub fn netbind_run_dir(&self) -> PathBuf {
        self.dir.join("netbind")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    /// The 0666 tun node given to QEMU containers as `/dev/net/tun`, as a device plugin
    /// (KubeVirt's `devices.kubevirt.io/tun`) provides it; the host's own node is untouched.
    pub fn tun_node(&self) -> PathBuf {
        self.dir.join("tun")
    }
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet_prefix)
    }
    fn bridge(&self) -> String {
        "nbcri0".into()
    }

    fn conflist(&self) -> Value {
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.bridge(),
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("{}.0/24", self.subnet_prefix)}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir(),
            },
        })];
        if self.netbind_bins.is_some() {
            let mut netbind = json!({
                "type": "netbind-cni",
                "runDir": self.netbind_run_dir(),
                "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            });
            if let Some(plugin) = &self.binding_plugin {
                netbind["bindingMode"] = json!(plugin.mode);
                netbind["args"] = json!({"cni": {"logicNetworkName": plugin.network}});
            }
            plugins.push(netbind);
        }
        json!({"cniVersion": "1.0.0", "name": "netbind-pods", "plugins": plugins})
    }

    fn containerd_config(&self, runc: &str) -> String {
        let dir = self.dir.display();
        format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/conf"
    max_conf_num = 1
"#
        )
    }
}

impl Node {
    /// Creates the node's directories, namespace and configuration, starts containerd, waits
    /// for its CRI to answer, and imports the two images.
    pub fn start(config: NodeConfig) -> Result<Node, CriError> {
        let dir = &config.dir;
        for sub in [
            "root",
            "state",
            "cni/bin",
            "cni/conf",
            "ipam",
            "logs",
            "var-lib-cni",
            "opt",
            "netbind",
            "www",
            "images",
        ] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|e| node_err(format!("create {}", path.display()), e))?;
        }
        let cni_bin = dir.join("cni/bin");
        for entry in std::fs::read_dir("/usr/lib/cni")
            .map_err(|e| node_err("list /usr/lib/cni (containernetworking-plugins)", e))?
            .flatten()
        {
            let _ = std::os::unix::fs::symlink(entry.path(), cni_bin.join(entry.file_name()));
        }
        if let Some(bins) = &config.netbind_bins {
            for name in ["netbind-cni", "netbind-ra"] {
                let _ = std::os::unix::fs::symlink(bins.join(name), cni_bin.join(name));
            }
        }
        write(
            &dir.join("cni/conf/10-netbind.conflist"),
            &config.conflist().to_string(),
        )?;
        let runc = run(
            "find runc",
            Command::new("sh").args(["-c", "command -v runc"]),
        )?;
        write(
            &dir.join("config.toml"),
            &config.containerd_config(runc.trim()),
        )?;
        write(&dir.join("www/index.html"), &format!("{NODE_BODY}\n"))?;
        let tun = config.tun_node();
        if !tun.exists() {
            run(
                "create the tun node",
                Command::new("mknod")
                    .args(["-m", "666"])
                    .arg(&tun)
                    .args(["c", "10", "200"]),
            )?;
        }
        // libcni's cache lives in /var/lib/cni: containerd gets a private directory bound
        // there, which needs the mount point (created once, empty, and left in place: another
        // node may be using it as a mount point in its own namespace).
        let _ = std::fs::create_dir_all("/var/lib/cni");
        run(
            "create the node namespace",
            Command::new("ip").args(["netns", "add", &config.netns]),
        )?;
        let mut node = Node {
            config,
            containerd: None,
            detached: false,
        };
        node.spawn_containerd()?;
        node.import_images()?;
        node.start_listener()?;
        Ok(node)
    }

    fn spawn_containerd(&mut self) -> Result<(), CriError> {
        let cfg = &self.config;
        run(
            "bring the node's loopback up",
            Command::new("ip").args(["-n", &cfg.netns, "link", "set", "lo", "up"]),
        )?;
        let log = std::fs::File::create(cfg.dir.join("containerd.log"))
            .map_err(|e| node_err("create containerd.log", e))?;
        let err = log
            .try_clone()
            .map_err(|e| node_err("create containerd.log", e))?;
        let script = format!(
            "mount -t tmpfs -o mode=755 netbind-cri-run /run && \
             mount --bind {var} /var/lib/cni && exec containerd --config {config}",
            var = cfg.dir.join("var-lib-cni").display(),
            config = cfg.dir.join("config.toml").display(),
        );
        // nsenter and unshare both exec: the child is containerd itself, in a session of its
        // own so that it outlives a detaching caller's terminal.
        let mut command = Command::new("nsenter");
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid between fork and exec is async-signal-safe.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        let child = command
            .arg(format!("--net=/run/netns/{}", cfg.netns))
            .args(["--", "unshare", "--mount", "--propagation", "slave", "--"])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| node_err("start containerd", e))?;
        self.containerd = Some(child);
        let socket = cfg.socket().display().to_string();
        let started = Instant::now();
        loop {
            if let Ok(mut cri) = Cri::connect(&socket)
                && cri.version().is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.containerd.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(node_err(
                    "containerd exited",
                    format!("{status}; log: {}", self.log_tail()),
                ));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(node_err(
                    "containerd did not answer on its socket in 30 s",
                    self.log_tail(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.config.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn client(&self) -> Result<Cri, CriError> {
        Cri::connect(&self.config.socket().display().to_string())
    }

    /// Builds the pause and app images (`FROM scratch`) and imports them into containerd.
    fn import_images(&self) -> Result<(), CriError> {
        let dir = &self.config.dir;
        let storage = [
            "--root".to_string(),
            dir.join("buildah/root").display().to_string(),
            "--runroot".into(),
            dir.join("buildah/run").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
        ];
        let buildah = |what: &str, args: &[&str]| {
            run(what, Command::new("buildah").args(&storage).args(args))
                .map(|out| out.trim().to_string())
        };
        // The app image's root: mount points, and the merged-/usr symlinks so that the host's
        // `/usr` mounted read-only provides every program and library.
        let rootfs = dir.join("images/app-root");
        for sub in [
            "usr", "etc", "tmp", "dev", "proc", "sys", "run", "netbind", "handoff", "work", "guest",
        ] {
            std::fs::create_dir_all(rootfs.join(sub))
                .map_err(|e| node_err("create the app image's root", e))?;
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            let _ = std::os::unix::fs::symlink(target, rootfs.join(link));
        }
        write(
            &rootfs.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nqemu:x:107:107::/:/bin/sh\n",
        )?;
        write(&rootfs.join("etc/group"), "root:x:0:\nqemu:x:107:\n")?;
        let images = [(PAUSE_IMAGE, "pause"), (APP_IMAGE, "app")];
        for (image, kind) in images {
            let ctr = buildah(
                &format!("buildah from scratch ({kind})"),
                &["from", "scratch"],
            )?;
            if kind == "pause" {
                buildah(
                    "copy catatonit",
                    &["copy", &ctr, "/usr/bin/catatonit", "/catatonit"],
                )?;
                buildah(
                    "configure the pause image",
                    &[
                        "config",
                        "--entrypoint",
                        r#"["/catatonit","-P"]"#,
                        "--cmd",
                        "",
                        &ctr,
                    ],
                )?;
            } else {
                buildah(
                    "copy the app image's root",
                    &["copy", &ctr, &rootfs.display().to_string(), "/"],
                )?;
                buildah(
                    "configure the app image",
                    &["config", "--env", "PATH=/usr/sbin:/usr/bin", &ctr],
                )?;
            }
            buildah("commit", &["commit", "-q", "--rm", &ctr, image])?;
            let archive = dir.join(format!("images/{kind}.tar"));
            let _ = std::fs::remove_file(&archive);
            buildah(
                "push to an archive",
                &[
                    "push",
                    "-q",
                    image,
                    &format!("docker-archive:{}:{image}", archive.display()),
                ],
            )?;
            run(
                "import the image",
                Command::new("ctr")
                    .arg("-a")
                    .arg(self.config.socket())
                    .args(["-n", "k8s.io", "images", "import"])
                    .arg(&archive),
            )?;
        }
        Ok(())
    }

    /// busybox httpd at the bridge's gateway address: what the guest's egress check fetches.
    fn start_listener(&self) -> Result<(), CriError> {
        let cfg = &self.config;
        // The bridge (and with it the gateway address) appears with the first pod; the
        // listener binds the wildcard address of the node namespace instead.
        run(
            "start the node's HTTP listener",
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", cfg.netns))
                .args(["--", "busybox", "httpd", "-p"])
                .arg(format!("0.0.0.0:{NODE_LISTEN_PORT}"))
                .arg("-h")
                .arg(cfg.dir.join("www")),
        )
        .map(drop)
    }

    /// The links of the node namespace (bridge, pods' veth ends).
    pub fn links(&self) -> Vec<String> {
        run(
            "list node links",
            Command::new("ip").args(["-n", &self.config.netns, "-o", "link", "show"]),
        )
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
    }

    /// Addresses host-local still holds for pods (files named by address).
    pub fn allocated_addresses(&self) -> Vec<String> {
        let net = self.config.ipam_dir().join("netbind-pods");
        std::fs::read_dir(net)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Leaves containerd running after this value is dropped; returns its pid (for the
    /// caller's record, with its start time).
    pub fn detach(mut self) -> Option<u32> {
        self.detached = true;
        self.containerd.take().map(|c| c.id())
    }

    /// Whether a node with this configuration answers on its socket (a detached one).
    pub fn running(config: &NodeConfig) -> bool {
        Cri::connect(&config.socket().display().to_string())
            .and_then(|mut cri| cri.version())
            .is_ok()
    }

    /// Stops a detached node: removes every pod, stops containerd (`stop`: SIGTERM through a
    /// pidfd taken from the caller's record, so a recycled pid is never hit), kills what is
    /// left in its namespace, removes the namespace and the directory.
    pub fn stop_detached(config: NodeConfig, stop: impl FnOnce()) {
        let node = Node {
            config,
            containerd: None,
            detached: false,
        };
        node.remove_pods();
        stop();
        // Drop does the rest (namespace, directory).
    }

    fn remove_pods(&self) {
        if let Ok(mut cri) = self.client() {
            for id in cri.sandboxes().unwrap_or_default() {
                let _ = cri.remove_pod(&id);
            }
        }
    }

    fn stop(&mut self) {
        self.remove_pods();
        if let Some(mut child) = self.containerd.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill with the pid of our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // What is left in the node namespace (the listener, a shim whose pod could not be
        // removed) dies with it.
        let netns = &self.config.netns;
        if let Ok(pids) = run(
            "list node pids",
            Command::new("ip").args(["netns", "pids", netns]),
        ) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill with a pid the kernel lists in the node namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = run(
            "delete the node namespace",
            Command::new("ip").args(["netns", "del", netns]),
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.stop();
        // The overlay mounts were in containerd's mount namespace, gone with it.
        let _ = std::fs::remove_dir_all(&self.config.dir);
    }
}
