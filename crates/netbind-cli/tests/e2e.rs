//! End-to-end tier: `netbind up --boot ...` on one machine, with a real guest under QEMU (TCG)
//! or through an unprivileged libvirt session daemon, asserting the lease and the
//! connectivity it reports; then `netbind down` must leave nothing behind. Needs root, QEMU,
//! libvirt and the guest image (scripts/setup.sh installs and builds them; CI has them).
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::path::Path;
use std::process::Command;

fn ready(tools: &[&str]) -> bool {
    common::ready_with(&common::POD_BINS, tools, common::guest_missing())
}

fn netbind(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netbind"))
        .current_dir(common::root())
        .args(args)
        .output()
        .expect("netbind runs")
}

/// /proc/PID/status of the QEMU running in pod `name`'s network namespace.
fn qemu_status(name: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(format!("/run/netns/netbind-{name}")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .find(|e| {
            std::fs::metadata(e.path().join("ns/net")).is_ok_and(|m| m.ino() == ns.ino())
                && std::fs::read_to_string(e.path().join("comm"))
                    .is_ok_and(|c| c.starts_with("qemu"))
        })
        .and_then(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .expect("a QEMU in the pod's network namespace")
}

/// Brings a pod up with a real guest, checks the report, brings it down, checks no trace.
/// `unlisted`: the spec lists ports, so a port it does not list must not reach the guest.
struct Case<'a> {
    vmi: &'a str,
    boot: &'a str,
    name: String,
    /// The IPv4 lease expected (`None`: an IPv6-only pod, no IPv4 at all).
    want_lease: Option<fn(&str) -> bool>,
    /// The guest's IPv6 lease and default router expected (masquerade on an IPv6 pod).
    ipv6: bool,
    unlisted: bool,
    kill_launcher: bool,
    extra: &'a [&'a str],
    /// The passt binding: no egress check (Debian 12's passt crashes on a guest's outbound
    /// TCP connection here), and passt itself must run with no capability.
    passt: bool,
}

impl Case<'_> {
    fn new<'a>(vmi: &'a str, boot: &'a str, tag: &str) -> Case<'a> {
        Case {
            vmi,
            boot,
            name: format!("e2e-{tag}-{}", std::process::id()),
            want_lease: Some(|l| l == "10.0.2.2"),
            ipv6: false,
            unlisted: false,
            kill_launcher: false,
            extra: &[],
            passt: false,
        }
    }
}

fn up_and_down(case: &Case) {
    let (vmi, boot, name, unlisted, kill_launcher) = (
        case.vmi,
        case.boot,
        case.name.as_str(),
        case.unlisted,
        case.kill_launcher,
    );
    let _ = netbind(&["down", name]);
    // A compromised VM uid races `up` and `down`, planting symlinks to root's files wherever
    // root used to write, chown or read in its directory.
    // Under libvirt the VM's own home, runtime directory and console are libvirt's to create
    // (planting there only breaks the attacker's own VM), so those names are left alone.
    let own: &[&str] = if boot == "libvirt" {
        &["libvirt-home", "libvirt-xdg", "console.log"]
    } else {
        &[]
    };
    let attacker = Planter::start(name, own);
    let mut args = vec!["up", vmi, "--boot", boot, "--name", name, "--json"];
    args.extend_from_slice(case.extra);
    let out = netbind(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Leave nothing behind even if an assertion below fails.
    struct Down<'a>(&'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = netbind(&["down", self.0]);
        }
    }
    let _down = Down(name);
    assert!(
        out.status.success(),
        "netbind up failed:\n{stdout}\n{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let guest = &doc["guest"];
    assert!(
        guest["time_to_lease_ms"]
            .as_u64()
            .is_some_and(|started| started > 0),
        "{doc:#}"
    );
    match case.want_lease {
        Some(want) => {
            let lease = guest["lease_ip"].as_str().unwrap_or("");
            assert!(want(lease), "lease {lease:?} in {doc:#}");
            assert_eq!(guest["ping_gateway"], true, "{doc:#}");
            if case.passt {
                assert!(guest["egress"].is_null(), "{doc:#}");
            } else {
                assert_eq!(guest["egress"], true, "{doc:#}");
            }
            assert_eq!(guest["ingress"], true, "{doc:#}");
        }
        None => assert!(
            guest["lease_ip"].is_null() && guest["egress"].is_null(),
            "{doc:#}"
        ),
    }
    if case.ipv6 {
        // DHCPv6 gave the address; only the router advertisements give the default route,
        // without which neither egress nor the ingress replies get out of the guest.
        assert_eq!(guest["lease6_ip"], "fd10:0:2::2", "{doc:#}");
        assert_eq!(guest["lease6_router"], "fe80::ff:fe00:0", "{doc:#}");
        assert_eq!(guest["ping6_gateway"], true, "{doc:#}");
        assert_eq!(guest["egress6"], true, "{doc:#}");
        assert_eq!(guest["ingress6"], true, "{doc:#}");
    } else {
        assert!(guest["lease6_ip"].is_null(), "{doc:#}");
    }
    if unlisted {
        assert_eq!(guest["unlisted_blocked"], true, "{doc:#}");
    } else {
        assert!(guest["unlisted_blocked"].is_null(), "{doc:#}");
    }
    let pod_ip = doc["pod_ip"].as_str().unwrap().to_string();
    // QEMU runs in a sandbox of its own: its own PID namespace (two PIDs: the node's and its
    // namespace's), no capability, and three syscall filters (netbind's two and its own
    // -sandbox, as given by netbind or by libvirt's default seccomp_sandbox).
    let qemu = qemu_status(name);
    for key in [
        "Seccomp:\t2",
        "Seccomp_filters:\t3",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(
            qemu.lines().any(|l| l == key),
            "QEMU lacks {key:?}:\n{qemu}"
        );
    }
    if case.passt {
        // passt: the VM uid, no capability, no_new_privs (its own sandboxing comes on top).
        let passt = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .find(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.starts_with("passt") && c.contains(&format!("pods/{name}/vm/passt.sock"))
                })
            })
            .and_then(|e| std::fs::read_to_string(e.path().join("status")).ok())
            .expect("passt runs for the pod");
        for key in ["CapEff:\t0000000000000000", "NoNewPrivs:\t1"] {
            assert!(
                passt.lines().any(|l| l == key),
                "passt lacks {key:?}:\n{passt}"
            );
        }
        assert!(
            passt.lines().any(|l| l.starts_with("Uid:\t107\t")),
            "passt is not the VM uid:\n{passt}"
        );
        let domain = std::fs::read_to_string(format!("/run/netbind/pods/{name}/interfaces.xml"))
            .unwrap_or_default();
        assert!(
            domain.contains("<interface type='vhostuser'>")
                && domain.contains("<backend type='passt'"),
            "{domain}"
        );
    }
    let nspid = qemu
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or_default();
    assert_eq!(
        nspid.split_whitespace().count(),
        3,
        "QEMU's own PID namespace: {nspid}"
    );

    // libvirt's pid files are the VM uid's to write: point them at a process of root's.
    let mut bystander = Command::new("sleep").arg("300").spawn().unwrap();
    if boot == "libvirt" {
        let run = format!("/run/netbind/pods/{name}/vm/libvirt-xdg/libvirt");
        for dir in ["libvirtd", "virtlogd", "qemu/run/e2e"] {
            let _ = std::fs::write(format!("{run}/{dir}.pid"), bystander.id().to_string());
        }
    }
    let me = common::pod_status(name).expect("listed by status");
    assert!(
        me["launcher"].as_str().unwrap().starts_with("running"),
        "{me}"
    );
    assert!(me["vm"].as_str().unwrap().contains("running"), "{me}");

    if kill_launcher {
        // Supervision: a dead launcher makes the pod failed, in status and in its phase.
        assert_eq!(
            me["phase"],
            "running",
            "{me}\n{}",
            std::fs::read_to_string(format!("/run/netbind/pods/{name}/launcher.log"))
                .unwrap_or_default()
        );
        let pid: i32 = me["launcher"]
            .as_str()
            .unwrap()
            .trim_start_matches("running (pid ")
            .trim_end_matches(')')
            .parse()
            .unwrap();
        // SAFETY: SIGKILL to the launcher the pod runs (found through netbind status).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let started = std::time::Instant::now();
        loop {
            let me = common::pod_status(name).expect("still listed");
            if me["phase"]
                .as_str()
                .unwrap()
                .starts_with("failed: the launcher")
            {
                assert!(me["vm"].as_str().unwrap().contains("running"), "{me}");
                break;
            }
            assert!(started.elapsed().as_secs() < 10, "still not failed: {me}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    let dir = netbind(&["down", name]);
    assert!(
        dir.status.success(),
        "{}",
        String::from_utf8_lossy(&dir.stderr)
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "down signalled the root process named in the VM's pid files"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    attacker.check();
    assert!(
        !Path::new(&format!("/run/netns/netbind-{name}")).exists(),
        "pod namespace removed"
    );
    assert!(
        !Path::new(&format!("/run/netbind/pods/{name}")).exists(),
        "pod record removed"
    );
    assert_eq!(
        common::address_held_by(name),
        None,
        "down released the pod's address ({pod_ip})"
    );
    let ps = String::from_utf8_lossy(
        &Command::new("ps")
            .args(["-eo", "stat,args"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !ps.lines()
            .any(|l| !l.starts_with('Z') && l.contains(&format!("/run/netbind/pods/{name}/"))),
        "no process of the pod is left:\n{ps}"
    );
}

#[test]
fn masquerade_with_qemu() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox"]) {
        up_and_down(&Case {
            kill_launcher: true,
            ..Case::new("examples/vmi-masquerade.yaml", "qemu", "mq")
        });
    }
}

#[test]
fn masquerade_dual_stack_with_qemu() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox"]) {
        // The VMI configures IPv6, so the simulated pod network is dual stack.
        up_and_down(&Case {
            ipv6: true,
            ..Case::new("examples/vmi-dual-stack.yaml", "qemu", "md")
        });
    }
}

#[test]
fn masquerade_ipv6_only_with_qemu() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox"]) {
        up_and_down(&Case {
            want_lease: None,
            ipv6: true,
            extra: &["--ip-family", "ipv6"],
            ..Case::new("examples/vmi-masquerade.yaml", "qemu", "m6")
        });
    }
}

#[test]
fn bridge_with_qemu() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox"]) {
        // The guest takes over the pod IP.
        up_and_down(&Case {
            want_lease: Some(|l| l.starts_with("10.244.0.")),
            ..Case::new("examples/vmi-bridge.yaml", "qemu", "bq")
        });
    }
}

#[test]
fn passt_with_qemu() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox", "passt"]) {
        // passt gives the guest the pod IP and forwards only the listed port 8080.
        up_and_down(&Case {
            want_lease: Some(|l| l.starts_with("10.244.0.")),
            unlisted: true,
            passt: true,
            extra: &["--feature-gate", "PasstBinding"],
            ..Case::new("examples/vmi-passt.yaml", "qemu", "pa")
        });
    }
}

#[test]
fn masquerade_with_libvirt() {
    if ready(&[
        "qemu-system-x86_64",
        "setpriv",
        "busybox",
        "libvirtd",
        "virsh",
    ]) {
        up_and_down(&Case::new("examples/vmi-masquerade.yaml", "libvirt", "ml"));
    }
}

#[test]
fn forwarded_port_from_the_spec() {
    if ready(&["qemu-system-x86_64", "setpriv", "busybox"]) {
        // vmi-ports.yaml forwards only TCP 80 (and UDP 53): the guest serves 80 and 8080, the
        // node reaches 80 through the pod IP and not 8080 (which the guest does serve: reached
        // from inside the pod).
        up_and_down(&Case {
            unlisted: true,
            ..Case::new("examples/vmi-ports.yaml", "qemu", "pt")
        });
    }
}

/// Names root used to write, copy, chown or read inside the VM uid's directory.
const PLANTED: &[&str] = &[
    "vmlinuz",
    "initrd.gz",
    "console.log",
    "qemu.log",
    "domain.xml",
    "interfaces.xml",
    "libvirt-home",
    "libvirt-xdg",
];

/// A uid-107 process that, in a loop while `up` and `down` run, replaces every name above in
/// the pod's `vm/` directory with a symlink to a root-owned decoy.
struct Planter {
    decoys: tempfile::TempDir,
    child: std::process::Child,
}

impl Planter {
    fn start(pod: &str, skip: &[&str]) -> Planter {
        use std::os::unix::fs::PermissionsExt;
        let decoys = tempfile::tempdir().unwrap();
        std::fs::set_permissions(decoys.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for name in PLANTED {
            let path = decoys.path().join(name);
            std::fs::write(&path, "decoy").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let vm = format!("/run/netbind/pods/{pod}/vm");
        let script = format!(
            "while [ ! -e {dir}/stop ]; do if [ -d {vm} ]; then for n in {names}; do \
             ln -sfn {dir}/$n {vm}/$n 2>/dev/null; done; fi; usleep 5000; done",
            dir = decoys.path().display(),
            names = PLANTED
                .iter()
                .filter(|name| !skip.contains(name))
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        );
        let child = Command::new("setpriv")
            .args([
                "--reuid=107",
                "--regid=107",
                "--clear-groups",
                "busybox",
                "sh",
                "-c",
            ])
            .arg(script)
            .spawn()
            .unwrap();
        Planter { decoys, child }
    }

    /// Stops the loop and checks that no decoy changed: content, owner, mode.
    fn check(mut self) {
        use std::os::unix::fs::MetadataExt;
        std::fs::write(self.decoys.path().join("stop"), "").unwrap();
        let _ = self.child.wait();
        for name in PLANTED {
            let path = self.decoys.path().join(name);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(
                (
                    std::fs::read_to_string(&path).unwrap().as_str(),
                    meta.uid(),
                    meta.gid(),
                    meta.mode() & 0o7777
                ),
                ("decoy", 0, 0, 0o644),
                "root acted on {name} through the VM uid's symlink"
            );
        }
    }
}

impl Drop for Planter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn passt_refuses_what_cannot_run_here() {
    if !ready(&["setpriv"]) {
        return;
    }
    // libvirt 9.0 would start passt from the session daemon, under the VM sandbox's syscall
    // filter, which refuses passt's user namespace; the CRI tier has no passt container.
    for (extra, says) in [
        (["--boot", "libvirt"], "libvirt 9.0 starts passt itself"),
        (
            ["--runtime", "containerd"],
            "the passt binding runs on the simulator",
        ),
    ] {
        let name = format!("e2e-pr-{}", std::process::id());
        let mut args = vec![
            "up",
            "examples/vmi-passt.yaml",
            "--feature-gate",
            "PasstBinding",
            "--name",
            &name,
        ];
        args.extend_from_slice(&extra);
        let out = netbind(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{stderr}");
        assert!(
            !std::path::Path::new(&format!("/run/netbind/pods/{name}")).exists(),
            "a refused up left its pod"
        );
    }
}
