//! The CRI benchmark, side by side in one run (root only):
//!
//! - RunPodSandbox and StopPodSandbox + RemovePodSandbox on two private containerd nodes
//!   started the same way, one whose CNI chain is `bridge` + `host-local` and one whose chain
//!   adds `netbind-cni` (masquerade VMI in the annotation); rounds interleaved, the same pod
//!   (with the annotation) on both;
//! - the time from RunPodSandbox to the guest's DHCP lease for a whole VM pod (launcher and
//!   QEMU containers, TCG guest).
//!
//! Needs release binaries: `cargo build --release --bins && cargo bench -p netbind-cri --bench
//! cri` (env: NETBIND_BENCH_ROUNDS, default 60; NETBIND_BENCH_VMS, default 3).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)] // benchmark driver: failures abort the run; percentile indices are small

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netbind_cri::client::PodSpec;
use netbind_cri::node::{NODE_LISTEN_PORT, Node, NodeConfig};
use netbind_cri::vmpod::{VmPod, VmPodConfig};
use netbind_podsim::vm::{self, GuestImage};

/// A quantile of values in ms.
fn pct(ms: &[f64], quantile: f64) -> f64 {
    let mut ms = ms.to_vec();
    ms.sort_by(f64::total_cmp);
    let idx = ((ms.len() as f64 - 1.0) * quantile).round() as usize;
    ms[idx.min(ms.len() - 1)]
}

fn ms(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}

/// A row of median, p10 and p90 of values in ms.
fn print_row(name: &str, ms: &[f64]) {
    println!(
        "{name:<50} {:>9.1} {:>9.1} {:>9.1}",
        pct(ms, 0.5),
        pct(ms, 0.1),
        pct(ms, 0.9)
    );
}

fn row(name: &str, samples: &[Duration]) {
    print_row(name, &ms(samples));
}

/// The per-round differences `with - without` (paired by round), in ms.
fn diff_row(name: &str, with: &[Duration], without: &[Duration]) {
    let diffs: Vec<f64> = ms(with)
        .iter()
        .zip(ms(without))
        .map(|(a, b)| a - b)
        .collect();
    print_row(name, &diffs);
}

fn bins() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn node(tag: &str, with_netbind: bool) -> Node {
    let dir = std::env::temp_dir().join(format!("netbind-cri-bench-{}-{tag}", std::process::id()));
    Node::start(NodeConfig {
        dir,
        netns: format!("nbcrib-{}-{tag}", std::process::id()),
        subnet_prefix: "10.252.7".into(),
        netbind_bins: with_netbind.then(bins),
        binding_plugin: None,
    })
    .expect("node")
}

fn main() {
    if !netbind_testkit::bench_may_run("cri") {
        return;
    }
    // Another process using the CPUs biases the comparison (netbind_testkit::MachineLoad).
    let machine = netbind_testkit::MachineLoad::before();
    for bin in [
        "netbind-cni",
        "netbind-ra",
        "netbind-launcher",
        "netbind-vm-exec",
    ] {
        if !bins().join(bin).is_file() {
            eprintln!(
                "cri bench: {} is missing: run `cargo build --release --bins` first",
                bins().join(bin).display()
            );
            std::process::exit(1);
        }
    }
    let rounds = netbind_testkit::env_count("NETBIND_BENCH_ROUNDS", 60);
    let vms = netbind_testkit::env_count("NETBIND_BENCH_VMS", 3);
    // Looked for before the rounds, which take minutes, so that a missing image stops the
    // bench at once.
    let guest = GuestImage::locate().unwrap_or_else(|e| {
        eprintln!("cri bench: {e}");
        std::process::exit(1)
    });
    let vmi =
        std::fs::read_to_string(netbind_testkit::repo_root().join("examples/vmi-masquerade.yaml"))
            .unwrap();
    let plain = node("plain", false);
    let chained = node("netbind", true);
    let mut clients = [
        (plain.client().unwrap(), Vec::new(), Vec::new()),
        (chained.client().unwrap(), Vec::new(), Vec::new()),
    ];
    let pod = |node: &Node, round: usize| PodSpec {
        name: format!("bench-{round}"),
        namespace: "default".into(),
        uid: format!("bench-{round}-{}", std::process::id()),
        annotations: HashMap::from([("netbind.io/vmi".to_string(), vmi.clone())]),
        labels: HashMap::new(),
        log_directory: node.config.logs_dir().display().to_string(),
    };
    // One warm-up round each (images, page cache), not counted; then interleaved rounds.
    for round in 0..=rounds {
        // The two chains alternate which goes first, so that neither always runs right after
        // the other's removal (the kernel's cleanup of a deleted namespace outlasts the call).
        for side in netbind_testkit::turn_order(round, 2) {
            let node = [&plain, &chained][side];
            let (cri, run, remove) = &mut clients[side];
            let (id, took) = cri.run_pod(&pod(node, round)).expect("RunPodSandbox");
            let started = Instant::now();
            cri.remove_pod(&id).expect("Stop + RemovePodSandbox");
            if round > 0 {
                run.push(took);
                remove.push(started.elapsed());
            }
        }
    }
    println!("\nCRI benchmark: {rounds} interleaved rounds per chain (ms)");
    println!("{:<50} {:>9} {:>9} {:>9}", "", "median", "p10", "p90");
    row("RunPodSandbox, bridge + host-local", &clients[0].1);
    row(
        "RunPodSandbox, bridge + host-local + netbind-cni",
        &clients[1].1,
    );
    row("Stop+Remove, bridge + host-local", &clients[0].2);
    row(
        "Stop+Remove, bridge + host-local + netbind-cni",
        &clients[1].2,
    );
    // Each round ran both chains back to back: the per-round difference pairs them under the
    // same machine state, where a difference of medians mixes rounds of different speed (the
    // containerd path is 100-200 ms here and drifts by more than netbind adds).
    println!("\nWhat netbind-cni adds, round by round (chained minus plain, ms)");
    println!("{:<50} {:>9} {:>9} {:>9}", "", "median", "p10", "p90");
    diff_row("RunPodSandbox", &clients[1].1, &clients[0].1);
    diff_row("Stop+Remove", &clients[1].2, &clients[0].2);

    let mut to_lease = Vec::new();
    let cri = &mut clients[1].0;
    for round in 0..vms {
        let config = VmPodConfig {
            name: format!("bench-vm-{round}"),
            namespace: "default".into(),
            vmi: vmi.clone(),
            bins: bins(),
            guest: guest.clone(),
            cmdline: vm::cmdline(
                &[8080],
                Some(&format!("{}:{NODE_LISTEN_PORT}", chained.config.gateway())),
                None,
            ),
            netbind_run_dir: chained.config.netbind_run_dir(),
            work_dir: chained.config.dir.join(format!("pods/vm-{round}")),
            tun: chained.config.tun_node(),
            boot: true,
        };
        let pod = VmPod::start(cri, &config).expect("VM pod");
        pod.console
            .line("NETBIND-GUEST lease ", Duration::from_secs(180))
            .expect("lease");
        to_lease.push(pod.started.elapsed());
        cri.remove_pod(&pod.sandbox).expect("remove");
    }
    println!("\nWhole VM pod (masquerade, TCG guest), {vms} runs (ms)");
    row("RunPodSandbox → guest's DHCP lease", &to_lease);
    println!("\n{}", machine.report());
}
