//! Kernel tier: phase 1 converges. Re-runs, crashes after every step, failures after every
//! step (rollback), teardown after partial setups and of vanished namespaces, bad input, and
//! the hand-off directory's safety. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;

#[test]
fn helper_op() {
    helper_op_body();
}

const CASES: [(&str, Stack); 3] = [
    ("examples/vmi-bridge.yaml", Stack::V4),
    ("examples/vmi-dual-stack.yaml", Stack::Dual),
    ("examples/vmi-ports.yaml", Stack::V4),
];

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The command's stderr names what failed: `needle` must be in it (shown whole otherwise).
#[track_caller]
fn assert_stderr_has(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert!(
        err.contains(needle),
        "expected {needle:?} in stderr:\n{err}"
    );
}

#[test]
fn setup_twice_gives_the_same_state_without_duplicates() {
    if !require_root() {
        return;
    }
    for (vmi, stack) in CASES {
        let pod = Pod::new(stack);
        pod.setup_ok(vmi, &[]);
        let once = snapshot(&pod.name);
        pod.setup_ok(vmi, &[]);
        assert_eq!(
            snapshot(&pod.name),
            once,
            "{vmi}: second setup changed the state"
        );
        pod.setup_ok(vmi, &[]);
        assert_eq!(
            snapshot(&pod.name),
            once,
            "{vmi}: third setup changed the state"
        );
    }
}

fn steps(vmi: &str, stack: Stack) -> usize {
    let pod = Pod::new(stack);
    let plan = plan_for(vmi, &pod.observed(), &[]);
    netbind_handler::apply::steps(&plan).len()
}

#[test]
fn crash_after_each_step_then_rerun_converges() {
    if !require_root() {
        return;
    }
    for (vmi, stack) in CASES {
        let clean = Pod::new(stack);
        clean.setup_ok(vmi, &[]);
        let want = snapshot(&clean.name);
        let steps_total = steps(vmi, stack);
        assert!(steps_total >= 4, "{vmi}: only {steps_total} steps");
        for step in 1..=steps_total {
            let pod = Pod::new(stack);
            let out = pod.setup(vmi, &["--crash-after-step", &step.to_string()]);
            assert_eq!(
                out.status.code(),
                Some(netbind_handler::apply::CRASH_EXIT),
                "{vmi} step {step}: {}",
                stderr(&out)
            );
            assert!(
                !pod.handoff_dir().join("handoff.json").exists(),
                "no hand-off before the end"
            );
            pod.setup_ok(vmi, &[]);
            assert_eq!(
                snapshot(&pod.name),
                want,
                "{vmi}: crash after step {step} then re-run"
            );
        }
    }
}

#[test]
fn failure_after_each_step_rolls_back_to_the_pristine_pod() {
    if !require_root() {
        return;
    }
    for (vmi, stack) in CASES {
        let steps_total = steps(vmi, stack);
        for step in 1..=steps_total {
            let pod = Pod::new(stack);
            let pristine = snapshot(&pod.name);
            let out = pod.setup(vmi, &["--fail-after-step", &step.to_string()]);
            assert!(!out.status.success());
            let err = stderr(&out);
            assert!(
                err.contains(&format!("failure injected after step {step}"))
                    && err.contains("(rolled back)"),
                "{err}"
            );
            assert_eq!(
                snapshot(&pod.name),
                pristine,
                "{vmi}: failure after step {step} must leave nothing"
            );
            // And a later clean run works as if nothing had happened.
            pod.setup_ok(vmi, &[]);
        }
    }
}

#[test]
fn teardown_after_partial_setup_removes_everything() {
    if !require_root() {
        return;
    }
    for (vmi, stack) in CASES {
        let steps_total = steps(vmi, stack);
        for step in 1..=steps_total {
            let pod = Pod::new(stack);
            let pristine = snapshot(&pod.name);
            let _ = pod.setup(vmi, &["--crash-after-step", &step.to_string()]);
            let out = pod.teardown();
            assert!(out.status.success(), "{vmi} k={step}: {}", stderr(&out));
            assert_eq!(
                snapshot(&pod.name),
                pristine,
                "{vmi}: teardown after crash at step {step}"
            );
            assert!(!pod.state_dir().join("state.json").exists());
        }
        // After a complete setup too.
        let pod = Pod::new(stack);
        let pristine = snapshot(&pod.name);
        pod.setup_ok(vmi, &[]);
        assert!(pod.teardown().status.success());
        assert_eq!(
            snapshot(&pod.name),
            pristine,
            "{vmi}: teardown after full setup"
        );
        assert!(
            !pod.handoff_dir().join("handoff.json").exists(),
            "hand-off removed"
        );
    }
}

#[test]
fn teardown_when_the_netns_is_already_gone() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    pod.setup_ok("examples/vmi-masquerade.yaml", &[]);
    ok(&format!("ip netns del {}", pod.name));
    let out = pod.teardown();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!pod.state_dir().join("state.json").exists());
    assert!(!pod.handoff_dir().join("handoff.json").exists());
}

#[test]
fn bad_input_names_the_operation_and_object_and_changes_nothing() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    let vmi = "examples/vmi-masquerade.yaml";
    // A missing namespace.
    let cmd = std::process::Command::new(env!("CARGO_BIN_EXE_netbind-handler"))
        .current_dir(root())
        .args([
            "setup",
            "--netns",
            "/run/netns/netbind-no-such-ns",
            "--vmi",
            vmi,
            "--handoff-dir",
        ])
        .arg(pod.dir.path().join("h2"))
        .output()
        .unwrap();
    assert_stderr_has(
        &cmd,
        "open network namespace /run/netns/netbind-no-such-ns: No such file",
    );
    // A pid that does not exist.
    let cmd = std::process::Command::new(env!("CARGO_BIN_EXE_netbind-handler"))
        .current_dir(root())
        .args(["setup", "--pid", "999999999", "--vmi", vmi, "--handoff-dir"])
        .arg(pod.dir.path().join("h3"))
        .output()
        .unwrap();
    assert_stderr_has(&cmd, "open network namespace pid 999999999");
    // An invalid VMI is refused before anything is touched.
    let bad = pod.dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nspec:\n  domain:\n    devices:\n      interfaces:\n      - name: x\n        masquerade: {}\n").unwrap();
    let pristine = snapshot(&pod.name);
    let cmd = pod.setup(bad.to_str().unwrap(), &[]);
    assert_stderr_has(
        &cmd,
        "spec.domain.devices.interfaces[0].name 'x' not found.",
    );
    assert_eq!(snapshot(&pod.name), pristine);

    // A pod without its pod interface.
    let empty = Pod::with_eth0(Stack::V4, false);
    let pristine = snapshot(&empty.name);
    let cmd = empty.setup(vmi, &[]);
    assert!(!cmd.status.success());
    assert_stderr_has(&cmd, "pod link (eth0) is missing");
    assert_eq!(snapshot(&empty.name), pristine);
    assert!(
        !empty.state_dir().join("state.json").exists(),
        "nothing recorded"
    );
}

#[test]
fn kernel_without_nftables_nat_fails_cleanly() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    let pristine = snapshot(&pod.name);
    // A kernel without nf_tables NAT (KubeVirt issues #8719, #10798): nft refuses any batch
    // with a nat chain, with the message it prints there; everything else reaches the real nft.
    let fake = pod.dir.path().join("nft");
    std::fs::write(
        &fake,
        "#!/bin/sh\nin=$(cat)\nif printf '%s' \"$in\" | grep -q '\"type\": *\"nat\"'; then\n  echo 'Error: Could not process rule: Operation not supported' >&2; exit 1\nfi\nprintf '%s' \"$in\" | exec nft \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = pod.setup(
        "examples/vmi-masquerade.yaml",
        &["--nft", fake.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("nftables transaction (tables ip nat, inet netbind) failed: Error: Could not process rule: Operation not supported")
            && err.contains("(rolled back)"),
        "{err}"
    );
    assert_eq!(snapshot(&pod.name), pristine, "nothing half-applied");
    // No nft binary at all: refused before the first change.
    let out = pod.setup(
        "examples/vmi-masquerade.yaml",
        &["--nft", "/nonexistent/nft"],
    );
    assert_stderr_has(
        &out,
        "the plan needs nftables but /nonexistent/nft was not found",
    );
    assert_eq!(snapshot(&pod.name), pristine);
}

#[test]
fn handoff_is_readable_not_writable_by_the_launcher() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    pod.setup_ok("examples/vmi-masquerade.yaml", &[]);
    let dir = pod.handoff_dir();
    let file = dir.join("handoff.json");
    let dm = std::fs::metadata(&dir).unwrap();
    let fm = std::fs::metadata(&file).unwrap();
    assert_eq!((dm.uid(), dm.mode() & 0o777), (0, 0o755));
    assert_eq!((fm.uid(), fm.mode() & 0o777), (0, 0o644));
    // The temp dir above it is 0700; open it for traversal as a real pod mount would be.
    std::fs::set_permissions(pod.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        run_unprivileged(&pod, 107, 107, &format!("read:{}", file.display())),
        Outcome::Ok
    );
    assert_eq!(
        run_unprivileged(&pod, 107, 107, &format!("write:{}", file.display())),
        Outcome::Errno(libc::EACCES)
    );
    assert_eq!(
        run_unprivileged(
            &pod,
            107,
            107,
            &format!("write:{}", dir.join("planted").display())
        ),
        Outcome::Errno(libc::EACCES)
    );
}

#[test]
fn handoff_never_follows_a_symlink() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    let dir = pod.handoff_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = pod.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("handoff.json")).unwrap();
    pod.setup_ok("examples/vmi-masquerade.yaml", &[]);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious",
        "the symlink target is untouched"
    );
    let meta = std::fs::symlink_metadata(dir.join("handoff.json")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the symlink was replaced by the record"
    );

    // A hand-off directory that is itself a symlink, or writable by others, is refused.
    let pod2 = Pod::new(Stack::V4);
    let real = pod2.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, pod2.handoff_dir()).unwrap();
    let out = pod2.setup("examples/vmi-masquerade.yaml", &[]);
    assert_stderr_has(&out, "is not safe: it is a symlink");
    let pod3 = Pod::new(Stack::V4);
    std::fs::create_dir(pod3.handoff_dir()).unwrap();
    std::fs::set_permissions(pod3.handoff_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let pristine = snapshot(&pod3.name);
    let out = pod3.setup("examples/vmi-masquerade.yaml", &[]);
    assert_stderr_has(&out, "lets group or others write");
    // The record could not be written after every step had been applied: rolled back like any
    // failed step, and no state is left that claims a pod.
    assert_stderr_has(&out, "(rolled back)");
    assert_eq!(
        snapshot(&pod3.name),
        pristine,
        "failed hand-off write rolled back"
    );
    assert!(!pod3.state_dir().join("state.json").exists());
}

#[test]
fn temp_files_of_a_crashed_run_are_removed() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    for (dir, mode, name) in [
        (pod.handoff_dir(), 0o755, ".handoff.json.4242.tmp"),
        (pod.state_dir(), 0o700, ".state.json.4242.tmp"),
    ] {
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::write(dir.join(name), "half-written").unwrap();
    }
    pod.setup_ok("examples/vmi-masquerade.yaml", &[]);
    for dir in [pod.handoff_dir(), pod.state_dir()] {
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", dir.display());
    }
}

/// Several setups of one pod at once, and teardowns racing setups: the per-pod lock makes
/// them take turns, so the pod ends in the state of one clean run (no rule twice) or, after
/// a teardown that came last, in its state before netbind — never in between.
#[test]
fn concurrent_runs_of_one_pod_take_turns() {
    if !require_root() {
        return;
    }
    let vmi = "examples/vmi-ports.yaml";
    let clean = Pod::new(Stack::V4);
    let pristine = snapshot(&clean.name);
    clean.setup_ok(vmi, &[]);
    let want = snapshot(&clean.name);
    let pod = Pod::new(Stack::V4);
    let outs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| pod.setup(vmi, &[])))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        assert!(out.status.success(), "concurrent setup: {}", stderr(out));
    }
    assert_eq!(snapshot(&pod.name), want, "four setups at once");
    for round in 0..4 {
        let (setup_out, teardown_out) = std::thread::scope(|scope| {
            let setup_out = scope.spawn(|| pod.setup(vmi, &[]));
            let teardown_out = scope.spawn(|| pod.teardown());
            (setup_out.join().unwrap(), teardown_out.join().unwrap())
        });
        assert!(
            setup_out.status.success(),
            "round {round}: setup: {}",
            stderr(&setup_out)
        );
        assert!(
            teardown_out.status.success(),
            "round {round}: teardown: {}",
            stderr(&teardown_out)
        );
        let got = snapshot(&pod.name);
        if pod.state_dir().join("state.json").exists() {
            assert_eq!(got, want, "round {round}: setup came last");
        } else {
            assert_eq!(got, pristine, "round {round}: teardown came last");
        }
    }
}

/// `teardown --detach` returns once its helper holds the pod's lock. A setup of the same pod
/// right after waits for the helper and starts from a clean pod; a pod that lives on (no
/// runtime deletes its namespace) is back to pristine shortly after.
#[test]
fn a_detached_teardown_hands_over_under_the_pods_lock() {
    if !require_root() {
        return;
    }
    let vmi = "examples/vmi-masquerade.yaml";
    let pod = Pod::new(Stack::V4);
    let pristine = snapshot(&pod.name);
    pod.setup_ok(vmi, &[]);
    let set_up = snapshot(&pod.name);
    let out = pod.handler("teardown", &["--detach"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // At once: the helper holds the lock, so this setup runs after the removal.
    pod.setup_ok(vmi, &[]);
    assert_eq!(
        snapshot(&pod.name),
        set_up,
        "a clean setup after the removal"
    );
    let out = pod.handler("teardown", &["--detach"]);
    assert!(out.status.success(), "{}", stderr(&out));
    detached_removal_done(&pod, &pristine, "");
}

/// Waits (up to 5 s each) for a detached teardown's helper to leave the pod as `pristine`
/// and to remove the state, then checks the record is gone too.
fn detached_removal_done(pod: &Pod, pristine: &str, context: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while snapshot(&pod.name) != pristine && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(snapshot(&pod.name), pristine, "{context}everything removed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pod.state_dir().join("state.json").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !pod.state_dir().join("state.json").exists(),
        "{context}the state removed"
    );
    assert!(
        !pod.handoff_dir().join("handoff.json").exists(),
        "{context}the record removed"
    );
}

/// The bridge binding's pod interface: `teardown --detach` gives it back before returning
/// (the pod network's DEL, next in a runtime's chain, deletes it by name), and leaves only the
/// slow deletions to its helper: the interface is as it was, with its addresses and routes, the
/// moment the caller gets control back, and the rest is gone shortly after.
#[test]
fn a_detached_teardown_of_the_bridge_binding_hands_the_pod_interface_back_first() {
    if !require_root() {
        return;
    }
    let vmi = "examples/vmi-bridge.yaml";
    let pod = Pod::new(Stack::V4);
    let pristine = snapshot(&pod.name);
    let eth0 = |view: &str| lines_about(view, "eth0");
    assert!(
        eth0(&pristine).contains("addr eth0 ") && eth0(&pristine).contains("route "),
        "{pristine}"
    );
    for round in 0..2 {
        pod.setup_ok(vmi, &[]);
        assert_ne!(eth0(&snapshot(&pod.name)), eth0(&pristine), "taken over");
        let out = pod.handler("teardown", &["--detach"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            eth0(&snapshot(&pod.name)),
            eth0(&pristine),
            "round {round}: the pod interface is back when the caller returns"
        );
        detached_removal_done(&pod, &pristine, &format!("round {round}: "));
    }
}

/// `teardown --namespace-deleted-next` (what `netbind down` runs before deleting the pod's
/// namespace): the links and tables are left for that deletion to reclaim; what lives outside
/// the namespace (the RA responders, the record, the state) is gone when it returns.
#[test]
fn teardown_before_namespace_deletion_undoes_only_what_outlives_it() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::Dual);
    pod.setup_ok("examples/vmi-dual-stack.yaml", &[]);
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pod.state_dir().join("state.json")).unwrap())
            .unwrap();
    let pids: Vec<u64> = st["responders"]
        .as_array()
        .expect("no responders in the state: is netbind-ra built next to netbind-handler?")
        .iter()
        .filter_map(|r| r["pid"].as_u64())
        .collect();
    assert!(
        !pids.is_empty(),
        "an IPv6 masquerade pod has an RA responder"
    );
    let out = pod.handler("teardown", &["--namespace-deleted-next"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        pod.exec("ip -br link").contains("k6t-eth0"),
        "the links are left to the namespace's deletion"
    );
    for pid in pids {
        // Gone, or a zombie its parent has not reaped yet.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ")?.1.chars().next());
        assert!(
            matches!(state, None | Some('Z')),
            "responder {pid} stopped: {state:?}"
        );
    }
    assert!(!pod.state_dir().join("state.json").exists());
    assert!(!pod.handoff_dir().join("handoff.json").exists());
}

#[test]
fn a_failed_hot_plug_goes_back_to_the_previous_run() {
    if !require_root() {
        return;
    }
    let before = "testdata/vmi/multus-before-hotplug.yaml";
    let plugged = "examples/vmi-masquerade-multus.yaml";
    let steps_total = {
        let pod = Pod::new(Stack::V4);
        add_multus_blue(&pod);
        netbind_handler::apply::steps(&plan_for(plugged, &pod.observed(), &[])).len()
    };
    for step in 1..=steps_total {
        let pod = Pod::new(Stack::V4);
        pod.setup_ok(before, &[]);
        add_multus_blue(&pod);
        let running = snapshot(&pod.name);
        let handoff = std::fs::read(pod.handoff_dir().join("handoff.json")).unwrap();
        let out = pod.setup(plugged, &["--fail-after-step", &step.to_string()]);
        assert!(!out.status.success());
        assert_stderr_has(&out, "(rolled back)");
        assert_eq!(
            snapshot(&pod.name),
            running,
            "a hot-plug failing after step {step} must leave the pod as the first run left it"
        );
        assert_eq!(
            std::fs::read(pod.handoff_dir().join("handoff.json")).unwrap(),
            handoff,
            "the hand-off record changed"
        );
        // The pod is still known: a later hot-plug works, and teardown gives the pristine pod.
        pod.setup_ok(plugged, &[]);
        assert!(pod.teardown().status.success());
    }
}

/// The lines of a `snapshot` about link `name`: the link, its addresses and its routes.
fn lines_about(view: &str, name: &str) -> String {
    view.lines()
        .filter(|line| {
            line.starts_with(&format!("link {name} "))
                || line.starts_with(&format!("addr {name} "))
                || line.ends_with(&format!("dev \"{name}\""))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of a `snapshot` about the hot-plugged network's pod interface.
fn blue_lines(view: &str) -> String {
    lines_about(view, "pod16477688c0e")
}

/// The networks of the pod's hand-off record, in order.
fn handoff_networks(pod: &Pod) -> Vec<String> {
    let text = std::fs::read_to_string(pod.handoff_dir().join("handoff.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|iface| iface["network"].as_str().unwrap().to_string())
        .collect()
}

fn pending_removal(pod: &Pod) -> bool {
    std::fs::read_to_string(pod.state_dir().join("state.json"))
        .unwrap()
        .contains("pending_removal")
}

/// A running pod (default network, masquerade) with the secondary network "blue" hot-plugged,
/// its guest spoof-checked so that blue has nftables rules of its own: (the pod, the snapshot
/// and the ruleset before blue was plugged, with Multus's interface already there).
fn pod_with_blue_plugged() -> (Pod, String, String) {
    let pod = Pod::new(Stack::V4);
    pod.setup_ok("testdata/vmi/multus-before-hotplug.yaml", &SPOOF_BLUE);
    add_multus_blue(&pod);
    let before = (snapshot(&pod.name), pod.exec("nft -s list ruleset"));
    pod.setup_ok("examples/vmi-masquerade-multus.yaml", &SPOOF_BLUE);
    assert_eq!(handoff_networks(&pod), ["default", "blue"]);
    (pod, before.0, before.1)
}

const SPOOF_BLUE: [&str; 2] = ["--spoof-check", "default/blue-net"];
const BLUE_ABSENT: &str = "testdata/vmi/multus-blue-absent.yaml";

/// A network unplugged with its removal detached (`setup --detach-removal`, what netbind-cni's
/// DEL of one network does): when the caller gets control back, the network's pod interface
/// is as Multus made it (the network's own plugin deletes it by name next) and the hand-off
/// record is without it; its links and rules are gone shortly after, by the helper, and the
/// pod is exactly as before the plug.
#[test]
fn a_detached_unplug_gives_the_pod_interface_back_and_its_helper_removes_the_rest() {
    if !require_root() {
        return;
    }
    let (pod, before, rules_before) = pod_with_blue_plugged();
    assert_ne!(blue_lines(&snapshot(&pod.name)), blue_lines(&before));
    let unplug = [SPOOF_BLUE[0], SPOOF_BLUE[1], "--detach-removal"];
    pod.setup_ok(BLUE_ABSENT, &unplug);
    assert_eq!(
        blue_lines(&snapshot(&pod.name)),
        blue_lines(&before),
        "the pod interface is back when the caller returns"
    );
    assert_eq!(handoff_networks(&pod), ["default"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let done = || {
        snapshot(&pod.name) == before
            && pod.exec("nft -s list ruleset") == rules_before
            && !pending_removal(&pod)
    };
    while !done() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(snapshot(&pod.name), before, "blue's links removed");
    assert_eq!(
        pod.exec("nft -s list ruleset"),
        rules_before,
        "blue's rules"
    );
    assert!(!pending_removal(&pod), "the removal recorded as done");
}

/// A detached removal whose helper never does it (it died, or has not run yet: here a helper
/// that exits at once): the pod's next phase-1 run takes it over under the pod's lock before
/// observing, so plugging the network again makes it afresh (the same pod as the first plug,
/// nothing of the old one left under another name), and a teardown removes it with the rest.
#[test]
fn a_pending_removal_is_taken_over_by_the_next_run_and_by_teardown() {
    if !require_root() {
        return;
    }
    let (pod, _, _) = pod_with_blue_plugged();
    let plugged = snapshot(&pod.name);
    let unplug_with_a_dead_helper = || {
        let mut args = netbind_handler::SetupArgs::new(
            netbind_handler::netns::NetnsTarget::Path(pod.netns().into()),
            root().join(BLUE_ABSENT),
            netbind_plan::Owner { uid: 107, gid: 107 },
            pod.handoff_dir(),
            pod.state_dir(),
        );
        args.cluster.spoof_check_networks = [SPOOF_BLUE[1].to_string()].into();
        args.removal = netbind_handler::Removal::Detached {
            helper: "/bin/true".into(),
        };
        netbind_handler::setup(&args).expect("unplug blue");
        assert!(pending_removal(&pod));
        assert!(
            links_json(&pod.name)
                .iter()
                .any(|link| link["ifname"] == "k6t-16477688c0e"),
            "left to the helper"
        );
    };
    unplug_with_a_dead_helper();
    pod.setup_ok("examples/vmi-masquerade-multus.yaml", &SPOOF_BLUE);
    assert!(!pending_removal(&pod));
    assert_eq!(snapshot(&pod.name), plugged, "blue plugged again afresh");

    unplug_with_a_dead_helper();
    let out = pod.teardown();
    assert!(out.status.success(), "{}", stderr(&out));
    let left: Vec<String> = links_json(&pod.name)
        .iter()
        .map(|link| link["ifname"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !left.iter().any(|name| name.starts_with("k6t-")
            || name.starts_with("tap")
            || name.starts_with("nbgone")),
        "{left:?}"
    );
    assert_eq!(pod.exec("nft list tables"), "");
    assert!(!pod.state_dir().join("state.json").exists());
}

/// A detached unplug that fails after any step of its apply goes back to the plugged pod:
/// what it had left pending (blue's links, its pod interface already given back) is removed
/// and the previous plan made again, so the pod, its record and its state are as the plug
/// left them, with nothing pending and no helper started.
#[test]
fn a_failed_detached_unplug_goes_back_to_the_plugged_pod() {
    if !require_root() {
        return;
    }
    let steps_total = {
        let pod = Pod::new(Stack::V4);
        add_multus_blue(&pod);
        netbind_handler::apply::steps(&plan_for(BLUE_ABSENT, &pod.observed(), &[])).len()
    };
    assert!(steps_total > 0);
    for step in 1..=steps_total {
        let (pod, _, _) = pod_with_blue_plugged();
        let plugged = snapshot(&pod.name);
        let rules = pod.exec("nft -s list ruleset");
        let step_arg = step.to_string();
        let out = pod.setup(
            BLUE_ABSENT,
            &[
                SPOOF_BLUE[0],
                SPOOF_BLUE[1],
                "--detach-removal",
                "--fail-after-step",
                &step_arg,
            ],
        );
        assert!(!out.status.success());
        assert_stderr_has(&out, "(rolled back)");
        assert_eq!(snapshot(&pod.name), plugged, "after step {step}");
        assert_eq!(pod.exec("nft -s list ruleset"), rules, "after step {step}");
        assert_eq!(handoff_networks(&pod), ["default", "blue"]);
        assert!(!pending_removal(&pod), "after step {step}");
    }
}
