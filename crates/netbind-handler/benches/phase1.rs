//! Phase-1 benchmark, side by side in one run (root only):
//!
//! - setup + teardown cycles of `netbind-handler` (bridge binding and masquerade binding) on a
//!   pod namespace made the way a CNI plugin would;
//! - the same cycle count of the CNI bridge plugin (Debian containernetworking-plugins:
//!   bridge + host-local + ipMasq, driven by hand with CNI_COMMAND=ADD/DEL);
//! - the same for netavark (`netavark setup` / `teardown`, iptables driver);
//! - where a setup's time goes, step by step (the handler's own report), against the floor of
//!   starting the same binary the same way (back to back, and after the same quiet as the
//!   cycles' calls, in their order);
//! - a pod that lives on after `teardown --detach`: how long the caller waits and how long
//!   until every link and table is gone;
//! - 200 pods set up one after another with the masquerade binding: per-pod time (and steps)
//!   of the first and last 50, and the handler's peak memory; then 50 at once.
//!
//! Every tool is started as a process per call, as a container runtime would. Everything runs
//! in namespaces made here (`nbb-*`); nothing touches the host's root namespace.
//! Run: `cargo bench -p netbind-handler --bench phase1` (env: NETBIND_BENCH_CYCLES,
//! NETBIND_BENCH_PODS).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)] // benchmark driver: failures abort the run; percentile indices are small

use netbind_handler::timing::monotonic_ns;
use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sh(cmd: &str) {
    netbind_testkit::ok(cmd);
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const HANDLER: &str = env!("CARGO_BIN_EXE_netbind-handler");

struct Stats {
    samples: Vec<Duration>,
}

/// One tool's cycles: (setup, teardown) per cycle.
struct Cycles {
    name: String,
    setup: Stats,
    teardown: Stats,
    total: Stats,
}

impl Stats {
    fn pct(&self, quantile: f64) -> f64 {
        let mut ms: Vec<f64> = self.samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let idx = ((ms.len() as f64 - 1.0) * quantile).round() as usize;
        ms[idx.min(ms.len() - 1)]
    }
}

/// One tool's setup + teardown cycle: (setup, teardown) times.
type Cycle<'a> = Box<dyn FnMut() -> (Duration, Duration) + 'a>;

/// `cycles` rounds, each running every tool's cycle once, after one warm-up round (page
/// cache, module loading) that is not counted.
///
/// A teardown leaves kernel work behind it: a deleted namespace is cleaned up by a kernel
/// worker over the next ~50 ms (RCU barriers, the RTNL lock), a deleted link's memory after a
/// grace period. With the tools in a fixed order, that work would always land on the same
/// next tool's setup (the CNI plugin's ADD ran right after netbind's namespace deletion, and
/// took longer for it). So every cycle starts after a pause (`settle`), and the rounds run the
/// tools in `turn_order`'s balanced order: each tool follows each other tool equally often.
fn interleaved(tools: &mut [(String, Cycle<'_>)], cycles: usize, settle: Duration) -> Vec<Cycles> {
    for (_, cycle) in tools.iter_mut() {
        std::thread::sleep(settle);
        cycle();
    }
    let count = tools.len();
    let mut pairs: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); count];
    for round in 0..cycles {
        for tool in netbind_testkit::turn_order(round, count) {
            std::thread::sleep(settle);
            pairs[tool].push((tools[tool].1)());
        }
    }
    tools
        .iter()
        .zip(pairs)
        .map(|((name, _), pairs)| {
            let st = |f: &dyn Fn(&(Duration, Duration)) -> Duration| Stats {
                samples: pairs.iter().map(f).collect(),
            };
            Cycles {
                name: name.clone(),
                setup: st(&|p| p.0),
                teardown: st(&|p| p.1),
                total: st(&|p| p.0 + p.1),
            }
        })
        .collect()
}

/// Times two commands run one after the other.
fn timed_pair(mut first: impl FnMut(), mut second: impl FnMut()) -> (Duration, Duration) {
    let started = Instant::now();
    first();
    let mark = Instant::now();
    second();
    (mark - started, mark.elapsed())
}

/// A pod netns `<name>` with eth0 (veth to `<node>`), `10.<net>.0.2/24`, default route.
fn make_pod(name: &str, node: &str, veth: &str, net: u32) {
    sh(&format!(
        "ip netns add {name} && ip -n {name} link set lo up && \
         ip -n {node} link add {veth} type veth peer name eth0 netns {name} && \
         ip -n {node} addr add 10.{net}.0.1/24 dev {veth} && ip -n {node} link set {veth} up && \
         ip -n {name} addr add 10.{net}.0.2/24 dev eth0 && ip -n {name} link set eth0 up && \
         ip -n {name} route add default via 10.{net}.0.1"
    ));
}

/// Every tool is started the same way: exec'd directly by this process, whose main thread
/// is in the node namespace (a `NetnsGuard` held by `main`), as a runtime on the node execs a CNI plugin (the
/// CNI plugins need the node namespace for their bridge; netbind-handler enters the pod's
/// namespace itself). No `nsenter` or `ip netns exec` in front: each would add a process
/// start of its own to every call (about 1.2 ms and 2.6 ms here).
fn on_node(tool: &str) -> Command {
    Command::new(tool)
}

/// A setup's own account of its steps (the handler's report), with the wall time the caller
/// saw for the whole process.
struct StepSample {
    wall: Duration,
    /// (step, µs, ran beside the others).
    steps: Vec<(String, u64, bool)>,
    /// The time outside the steps, split by the report's clock marks between the spawn and
    /// the reap on the same monotonic clock: (exec to `main`, `main` to the first step, the
    /// report built to the process reaped), µs.
    outside: Option<[f64; 3]>,
}

/// A process the bench spawned and reaped, on `monotonic_ns`'s clock.
#[derive(Clone, Copy)]
struct Spawned {
    spawned_ns: u64,
    reaped_ns: u64,
}

impl Spawned {
    /// The process as its caller saw it, spawn to reap.
    fn wall(&self) -> Duration {
        Duration::from_nanos(self.reaped_ns.saturating_sub(self.spawned_ns))
    }
}

/// Runs `cmd` as `run` does, noting when it was spawned and reaped.
fn run_marked(cmd: &mut Command) -> (String, Spawned) {
    let spawned_ns = monotonic_ns();
    let out = run(cmd, None);
    let reaped_ns = monotonic_ns();
    (
        out,
        Spawned {
            spawned_ns,
            reaped_ns,
        },
    )
}

fn record_steps(report: &str, process: Spawned, into: &RefCell<Vec<StepSample>>) {
    let report: serde_json::Value = serde_json::from_str(report).expect("setup report");
    let mark = |name: &str| report["clock"][name].as_u64();
    let outside = match (mark("main_ns"), mark("steps_started_ns"), mark("report_ns")) {
        (Some(main), Some(steps), Some(built)) => {
            let micros = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e3;
            Some([
                micros(process.spawned_ns, main),
                micros(main, steps),
                micros(built, process.reaped_ns),
            ])
        }
        _ => None,
    };
    let steps = report["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|step| {
                    (
                        step["step"].as_str().unwrap_or("?").to_string(),
                        step["micros"].as_u64().unwrap_or(0),
                        step["beside"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    into.borrow_mut().push(StepSample {
        wall: process.wall(),
        steps,
        outside,
    });
}

/// `netbind-handler setup` of `vmi` in pod `pod`, its files under `dir`, started as every tool
/// is (`on_node`).
fn setup_cmd(pod: &str, vmi: &str, dir: &Path) -> Command {
    // The VMI by absolute path, not a working directory for the child: with one, the
    // standard library's spawn falls back from posix_spawn to fork + exec in a static
    // program (it finds posix_spawn_file_actions_addchdir_np through dlsym, which a static
    // program does not have), and copying this process's page tables cost the setup ~0.5 ms
    // that no other tool paid.
    let mut cmd = on_node(HANDLER);
    cmd.args(["setup", "--netns", &format!("/run/netns/{pod}"), "--vmi"])
        .arg(netbind_testkit::repo_root().join(vmi))
        .arg("--handoff-dir")
        .arg(dir.join("handoff"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    cmd
}

/// `netbind-handler teardown [extra]` of the pod `setup_cmd` set up.
fn teardown_cmd(pod: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = on_node(HANDLER);
    cmd.arg("teardown")
        .args(extra)
        .args(["--netns", &format!("/run/netns/{pod}")])
        .arg("--handoff-dir")
        .arg(dir.join("handoff"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    cmd
}

/// One setup + teardown (`teardown` its extra arguments, e.g. `--detach`), timed; the setup's
/// own report of its steps goes to `steps`.
fn netbind_cycle(
    pod: &str,
    vmi: &str,
    dir: &Path,
    teardown: &[&str],
    steps: Option<&RefCell<Vec<StepSample>>>,
) -> (Duration, Duration) {
    let mut report = String::new();
    let mut process = None;
    let times = timed_pair(
        || {
            let (out, marks) = run_marked(&mut setup_cmd(pod, vmi, dir));
            report = out;
            process = Some(marks);
        },
        || {
            run(&mut teardown_cmd(pod, dir, teardown), None);
        },
    );
    if let (Some(steps), Some(process)) = (steps, process) {
        record_steps(&report, process, steps);
    }
    times
}

fn cni_cycle(pod: &str, ipam_dir: &Path) -> (Duration, Duration) {
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"nbbnet","type":"bridge","bridge":"nbb-cnibr0","isGateway":true,"ipMasq":true,"mtu":1450,
"ipam":{{"type":"host-local","subnet":"10.13.0.0/24","routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}"#,
        ipam_dir.display()
    );
    let call = |command: &str| {
        run(
            on_node("/usr/lib/cni/bridge")
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", "nbb-ctr1")
                .env("CNI_NETNS", format!("/run/netns/{pod}"))
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", "/usr/lib/cni"),
            Some(&conf),
        );
    };
    timed_pair(|| call("ADD"), || call("DEL"))
}

fn netavark_cycle(pod: &str, cfg_dir: &Path) -> (Duration, Duration) {
    let conf = r#"{
 "container_id": "nbb0000000000000000000000000000000000000000000000000000000000c1",
 "container_name": "nbb-c1",
 "networks": {"nbbnet": {"interface_name": "eth0", "static_ips": ["10.14.0.2"]}},
 "network_info": {"nbbnet": {
    "name": "nbbnet", "driver": "bridge", "network_interface": "nbb-nvbr0",
    "id": "nbb00000000000000000000000000000000000000000000000000000000beef",
    "subnets": [{"subnet": "10.14.0.0/24", "gateway": "10.14.0.1"}],
    "ipv6_enabled": false, "internal": false, "dns_enabled": false,
    "options": {"mtu": "1450"}}}
}"#;
    let call = |sub: &str| {
        run(
            on_node("/usr/lib/podman/netavark")
                .env("NETAVARK_FW", "iptables")
                .arg("--config")
                .arg(cfg_dir)
                .args([sub, &format!("/run/netns/{pod}")]),
            Some(conf),
        );
    };
    timed_pair(|| call("setup"), || call("teardown"))
}

/// The median of each step over a binding's setups, in µs, in the order the handler reports
/// them; then the sum and what lies outside the steps (process start and exit).
fn step_medians(samples: &[StepSample]) -> Vec<(String, f64)> {
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut names: Vec<String> = Vec::new();
    for sample in samples {
        for (name, _, _) in &sample.steps {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let mut rows: Vec<(String, f64)> = names
        .iter()
        .map(|name| {
            let values = samples
                .iter()
                .map(|sample| {
                    sample
                        .steps
                        .iter()
                        .find(|(step, _, _)| step == name)
                        .map_or(0.0, |(_, micros, _)| *micros as f64)
                })
                .collect();
            (name.clone(), median(values))
        })
        .collect();
    // What ran beside the other steps is inside their time already.
    let inside = |sample: &StepSample| {
        sample
            .steps
            .iter()
            .filter(|(_, _, beside)| !beside)
            .map(|(_, us, _)| *us as f64)
            .sum::<f64>()
    };
    rows.push((
        "sum of the steps (not counting what ran beside them)".into(),
        median(samples.iter().map(inside).collect()),
    ));
    rows.push((
        "outside the steps: process start and exit".into(),
        median(
            samples
                .iter()
                .map(|sample| sample.wall.as_secs_f64() * 1e6 - inside(sample))
                .collect(),
        ),
    ));
    let parts = [
        "of which: exec to `main` (the process start)",
        "of which: `main` to the first step (logger, arguments)",
        "of which: the report built to the process reaped (printing, exit)",
    ];
    for (part, name) in parts.iter().enumerate() {
        let values: Vec<f64> = samples
            .iter()
            .filter_map(|sample| sample.outside.map(|outside| outside[part]))
            .collect();
        if !values.is_empty() {
            rows.push(((*name).into(), median(values)));
        }
    }
    rows.push((
        "setup as the caller sees it".into(),
        median(
            samples
                .iter()
                .map(|sample| sample.wall.as_secs_f64() * 1e6)
                .collect(),
        ),
    ));
    rows
}

/// The name under which the floor runs among the interleaved tools.
const QUIET_FLOOR: &str = "netbind-handler --version after the same quiet";

/// Where a setup's time goes, per step (the handler's own report), against the floor of
/// starting the same binary the same way and doing nothing, timed twice: back to back, and
/// interleaved with the tools after the same quiet as their calls (`quiet_floor`, in ms).
///
/// With the CNI plugin's ADD median (`cni_add_ms`), also the ceiling those figures put on the
/// ratio: no tool that makes the same kernel objects from one process started the same way
/// can take less than the floor plus the steps that are kernel work (the nftables transaction,
/// the links and addresses, the sysctls). Against the back-to-back floor that ceiling is a generous one; against the
/// quiet floor it is the one that holds for calls made as the cycles make them.
fn print_steps(
    cycles: usize,
    bridge: &[StepSample],
    masquerade: &[StepSample],
    quiet_floor: &Stats,
    cni_add_ms: Option<f64>,
) {
    let mut floor = Vec::new();
    for _ in 0..cycles.max(10) {
        let started = Instant::now();
        run(on_node(HANDLER).arg("--version"), None);
        floor.push(started.elapsed());
    }
    let floor = Stats { samples: floor };
    println!(
        "\n## Setup step by step (median µs over the {cycles} rounds above; the handler's own clock)\n"
    );
    println!("| step | bridge binding | masquerade binding |");
    println!("|---|---:|---:|");
    let bridge = step_medians(bridge);
    let masquerade = step_medians(masquerade);
    let mut names: Vec<&String> = bridge.iter().map(|(name, _)| name).collect();
    for (name, _) in &masquerade {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let cell = |rows: &[(String, f64)], name: &str| {
        rows.iter()
            .find(|(step, _)| step == name)
            .map_or("-".to_string(), |(_, us)| format!("{us:.0}"))
    };
    for name in names {
        println!(
            "| {name} | {} | {} |",
            cell(&bridge, name),
            cell(&masquerade, name)
        );
    }
    println!(
        "\nFloor: `netbind-handler --version` started the same way (exec'd from the node namespace), doing nothing: back to back, median {:.0} µs, p10–p90 {:.0}–{:.0} µs; after the same quiet as every call in the cycles, in their order, median {:.0} µs, p10–p90 {:.0}–{:.0} µs.",
        floor.pct(0.5) * 1e3,
        floor.pct(0.1) * 1e3,
        floor.pct(0.9) * 1e3,
        quiet_floor.pct(0.5) * 1e3,
        quiet_floor.pct(0.1) * 1e3,
        quiet_floor.pct(0.9) * 1e3,
    );
    if let Some(cni_add_ms) = cni_add_ms {
        let kernel_work = |rows: &[(String, f64)]| {
            let step = |name: &str| {
                rows.iter()
                    .find(|(step, _)| step == name)
                    .map_or(0.0, |(_, us)| *us)
            };
            step("nftables transaction") + step("links and addresses") + step("sysctls")
        };
        let (bridge_kernel, masquerade_kernel) = (kernel_work(&bridge), kernel_work(&masquerade));
        for (which, floor_us) in [
            ("back to back", floor.pct(0.5) * 1e3),
            ("after the same quiet", quiet_floor.pct(0.5) * 1e3),
        ] {
            let (bridge_floor, masquerade_floor) =
                (floor_us + bridge_kernel, floor_us + masquerade_kernel);
            println!(
                "\nCeiling, with the floor {which}: the floor plus the kernel work (the nftables transaction, links and addresses, sysctls) is {bridge_floor:.0} µs for the bridge binding and {masquerade_floor:.0} µs for masquerade; against the CNI plugin's ADD median in this run ({cni_add_ms:.1} ms), no tool making the same kernel objects from one process started the same way could be more than {:.1}x / {:.1}x faster.",
                cni_add_ms * 1e3 / bridge_floor,
                cni_add_ms * 1e3 / masquerade_floor,
            );
        }
    }
}

/// A pod that lives on after `teardown --detach` (a re-run, a hot-unplug): how long the caller
/// waits, and how long until the helper has removed every link and table netbind made (the
/// issue's bound: 1 s). Polled every millisecond through rtnetlink and `nft list tables`.
fn living_pod_removal(pod: &str, dir: &Path, rounds: usize) {
    let target = netbind_handler::netns::NetnsTarget::Path(format!("/run/netns/{pod}").into());
    let mut returned = Vec::new();
    let mut gone = Vec::new();
    // The same pod every round, so the same directories: its lock makes a setup wait for the
    // detached removal still finishing (links gone is not the helper done; another pod's
    // state in the same namespace would race it).
    for _ in 0..rounds {
        run(
            &mut setup_cmd(pod, "examples/vmi-masquerade.yaml", dir),
            None,
        );
        let started = Instant::now();
        run(&mut teardown_cmd(pod, dir, &["--detach"]), None);
        returned.push(started.elapsed());
        loop {
            let links = netbind_handler::links(&target).expect("dump the pod's links");
            let ours = links
                .iter()
                .any(|link| link.name == "k6t-eth0" || link.name == "tap0");
            let tables = run(
                Command::new("ip").args(["netns", "exec", pod, "nft", "list", "tables"]),
                None,
            );
            if !ours && tables.trim().is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the detached removal left {links:?} / {tables}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        gone.push(started.elapsed());
    }
    let returned = Stats { samples: returned };
    let gone = Stats { samples: gone };
    println!(
        "\n## A pod that lives on: `teardown --detach`, {rounds} rounds (masquerade binding)\n"
    );
    println!("| | median ms | p10–p90 ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| the caller waits | {:.1} | {:.1}–{:.1} | {:.1} |",
        returned.pct(0.5),
        returned.pct(0.1),
        returned.pct(0.9),
        returned.pct(1.0)
    );
    println!(
        "| until every link and table is gone | {:.1} | {:.1}–{:.1} | {:.1} |",
        gone.pct(0.5),
        gone.pct(0.1),
        gone.pct(0.9),
        gone.pct(1.0)
    );
}

/// A network unplugged from a running pod (Multus's DEL of one network, or a pod deleted one
/// network at a time): the re-run without it, with the removal before returning and with it
/// detached (`--detach-removal`, what netbind-cni's DEL of one network does), in alternate
/// rounds; how long the caller waits, and for the detached one how long until the network's
/// links are gone (polled every millisecond; the pod lives on, so the helper first waits out
/// the grace for a namespace deletion). Each round plugs the network again first, untimed.
fn unplug_rounds(pod: &str, node: &str, dir: &Path, rounds: usize) {
    let target = netbind_handler::netns::NetnsTarget::Path(format!("/run/netns/{pod}").into());
    // What Multus adds for the VMI's network "blue": a veth named after the network's hash.
    sh(&format!(
        "ip -n {node} link add vblue type veth peer name pod16477688c0e netns {pod} && \
         ip -n {pod} link set pod16477688c0e mtu 9000 && \
         ip -n {pod} addr add 192.168.100.10/30 dev pod16477688c0e && \
         ip -n {pod} link set pod16477688c0e up"
    ));
    // blue's bridge, tap and renamed pod interface, and the placeholder holding its
    // addresses once it is renamed out of the way.
    let blue_links = || {
        netbind_handler::links(&target)
            .expect("dump the pod's links")
            .iter()
            .filter(|link| {
                ["k6t-16477688c0e", "tap16477688c0e", "pod16477688c0e-nic"]
                    .contains(&link.name.as_str())
                    || link.name.starts_with("nbgone")
            })
            .count()
    };
    let plugged = "examples/vmi-masquerade-multus.yaml";
    let absent = netbind_testkit::repo_root().join("testdata/vmi/multus-blue-absent.yaml");
    let (mut sync, mut detached, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds * 2 {
        std::thread::sleep(Duration::from_millis(200));
        run(&mut setup_cmd(pod, plugged, dir), None);
        assert!(blue_links() > 0, "blue plugged");
        std::thread::sleep(Duration::from_millis(200));
        let mut unplug = on_node(HANDLER);
        unplug
            .args(["setup", "--netns", &format!("/run/netns/{pod}"), "--vmi"])
            .arg(&absent)
            .arg("--handoff-dir")
            .arg(dir.join("handoff"))
            .arg("--state-dir")
            .arg(dir.join("state"));
        let detach = round % 2 == 1;
        if detach {
            unplug.arg("--detach-removal");
        }
        let started = Instant::now();
        run(&mut unplug, None);
        let returned = started.elapsed();
        if detach {
            detached.push(returned);
            while blue_links() > 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the helper left blue's links"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            gone.push(started.elapsed());
        } else {
            assert_eq!(blue_links(), 0, "removed before returning");
            sync.push(returned);
        }
    }
    println!(
        "\n## A network unplugged from a running pod ({rounds} rounds each, alternating; masquerade default network, bridge-bound secondary network)\n"
    );
    println!("| | median ms | p10–p90 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (label, samples) in [
        ("removal before returning: the caller waits", sync),
        ("`--detach-removal`: the caller waits", detached),
        (
            "`--detach-removal`: until the network's links are gone",
            gone,
        ),
    ] {
        let stats = Stats { samples };
        println!(
            "| {label} | {:.1} | {:.1}–{:.1} | {:.1} |",
            stats.pct(0.5),
            stats.pct(0.1),
            stats.pct(0.9),
            stats.pct(1.0)
        );
    }
}

/// A tmpfs directory for the run's files: /dev/shm where it is tmpfs, else the default.
fn shm_dir() -> std::path::PathBuf {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            line.split_whitespace()
                .skip(1)
                .take(2)
                .eq(["/dev/shm", "tmpfs"])
        })
    });
    if on_tmpfs {
        shm.to_path_buf()
    } else {
        eprintln!("/dev/shm is not tmpfs here: the run's files go to the default temp dir");
        std::env::temp_dir()
    }
}

/// The node namespace's netfilter hooks, shaped like kube-proxy's nftables ruleset (its base
/// chains, without services): for both families, because kubelet and kube-proxy set up IPv6
/// rules beside the IPv4 ones whenever the node's kernel has IPv6, whether or not the cluster
/// uses it (kubernetes/kubernetes#94474, #99127).
///
/// Why the bench needs it: the kernel tracks whether any namespace has a netfilter hook at
/// each (family, hook) point with a static key, and turning a key on or off rewrites the
/// kernel's code on every CPU (`static_key_slow_inc` → text poking → an IPI to each CPU,
/// each a VM exit here). On a node these keys are always on. In a bench whose node has no
/// rules, every pod's ruleset turned some on and its teardown turned them off again: about
/// 0.25-0.4 ms of a masquerade setup (paired medians of 30 fresh pods), charged to whichever
/// tool's ruleset came first, that no node ever pays.
const NODE_RULESET: &str = "
table ip kube-proxy {
    chain filter-prerouting { type filter hook prerouting priority -110; }
    chain filter-input { type filter hook input priority -110; }
    chain filter-forward { type filter hook forward priority -110; }
    chain filter-output { type filter hook output priority -110; }
    chain filter-output-post-dnat { type filter hook output priority -90; }
    chain nat-prerouting { type nat hook prerouting priority dstnat; }
    chain nat-output { type nat hook output priority -100; }
    chain nat-postrouting { type nat hook postrouting priority srcnat; }
}
table ip6 kube-proxy {
    chain filter-prerouting { type filter hook prerouting priority -110; }
    chain filter-input { type filter hook input priority -110; }
    chain filter-forward { type filter hook forward priority -110; }
    chain filter-output { type filter hook output priority -110; }
    chain filter-output-post-dnat { type filter hook output priority -90; }
    chain nat-prerouting { type nat hook prerouting priority dstnat; }
    chain nat-output { type nat hook output priority -100; }
    chain nat-postrouting { type nat hook postrouting priority srcnat; }
}
";

fn main() {
    if !netbind_testkit::bench_may_run("phase1") {
        return;
    }
    let cycles = netbind_testkit::env_count("NETBIND_BENCH_CYCLES", 30);
    let pods = netbind_testkit::env_count("NETBIND_BENCH_PODS", 200);
    // Every tool's files (netbind's state and hand-off, host-local's leases, netavark's
    // config) on tmpfs, as /run is on a node: on this machine / and /run are one ext4
    // disk, whose journal made the file steps swing between 0.3 and 1.3 ms from one minute to
    // the next.
    let tmp = tempfile::tempdir_in(shm_dir()).unwrap();
    let id = std::process::id();
    let node = format!("nbb-{id}-node");
    let mut cleanup = netbind_testkit::Namespaces(vec![node.clone()]);
    sh(&format!(
        "ip netns add {node} && ip -n {node} link set lo up"
    ));
    // The node's own ruleset, as on every Kubernetes node (`NODE_RULESET`): without one, each
    // pod's first netfilter hook of a kind switches the kernel's static keys and each last one
    // switches them back, which no node does.
    run(
        Command::new("ip").args(["netns", "exec", &node, "nft", "-f", "-"]),
        Some(NODE_RULESET),
    );
    // This (main) thread moves into the node namespace: every process it starts, and every
    // thread it creates, starts there. Nothing is done to the host's namespace; the guard
    // brings the thread back when `main` ends.
    let _on_node = netbind_handler::netns::NetnsGuard::enter(
        &netbind_handler::netns::Netns::named(&node).expect("open the node netns"),
    )
    .expect("enter the node netns");
    // Another process using the CPUs biases the ratios (netbind_testkit::MachineLoad):
    // measured before the first measurement and after the last, both printed at the end.
    let machine = netbind_testkit::MachineLoad::before();

    // The tools, each a setup + teardown cycle on a pod of its own; rounds interleave them
    // so that a slow moment of the machine hits every tool alike.
    let masquerade_steps = RefCell::new(Vec::new());
    let bridge_steps = RefCell::new(Vec::new());
    let mut tools: Vec<(String, Cycle)> = Vec::new();
    for (label, vmi, net, steps) in [
        (
            "netbind bridge binding",
            "examples/vmi-bridge.yaml",
            21,
            &bridge_steps,
        ),
        (
            "netbind masquerade binding",
            "examples/vmi-masquerade.yaml",
            22,
            &masquerade_steps,
        ),
    ] {
        let pod = format!("nbb-{id}-{net}");
        cleanup.0.push(pod.clone());
        make_pod(&pod, &node, &format!("v{net}"), net);
        let dir = tmp.path().join(&pod);
        tools.push((
            label.into(),
            Box::new(move || netbind_cycle(&pod, vmi, &dir, &[], Some(steps))),
        ));
    }
    // As a runtime's DEL sees it: teardown --detach returns once its helper holds the pod's
    // lock (the bridge binding's pod interface handed back first), and the runtime deletes
    // the namespace right after (untimed here, as is making a fresh pod each round), whose
    // deletion reclaims the links.
    for (label, vmi, tag, net) in [
        (
            "netbind bridge binding, teardown --detach + namespace deleted",
            "examples/vmi-bridge.yaml",
            "b",
            25,
        ),
        (
            "netbind masquerade, teardown --detach + namespace deleted",
            "examples/vmi-masquerade.yaml",
            "d",
            23,
        ),
    ] {
        let node = node.clone();
        let dir = tmp.path().join(format!("detached-{tag}"));
        // A fresh pod each round, made at the end of the round before (the first one here),
        // so that its setup starts after the same quiet as every other tool's. Made right
        // before its setup, as until this version, the setup ran on CPUs the `ip` calls had
        // just woken: 3.8 against 4.6 ms for the same masquerade setup in one run, which
        // flattered these two rows.
        let pod_name = move |round: u32| format!("nbb-{id}-{tag}{round}");
        let mut round = 1u32;
        make_pod(&pod_name(round), &node, &format!("{tag}{round}"), net);
        // The warm-up round, the counted ones and the pod made after the last.
        for made in 1..=cycles + 2 {
            cleanup.0.push(pod_name(u32::try_from(made).unwrap()));
        }
        tools.push((
            label.into(),
            Box::new(move || {
                let pod = pod_name(round);
                let times = netbind_cycle(&pod, vmi, &dir.join(&pod), &["--detach"], None);
                sh(&format!("ip netns del {pod}"));
                round += 1;
                make_pod(&pod_name(round), &node, &format!("{tag}{round}"), net);
                times
            }),
        ));
    }
    let have_cni = netbind_testkit::peer_present(
        Path::new("/usr/lib/cni/bridge").exists(),
        "containernetworking-plugins",
    );
    if have_cni {
        let pod = format!("nbb-{id}-cni");
        cleanup.0.push(pod.clone());
        sh(&format!("ip netns add {pod}"));
        let ipam = tmp.path().join("cni-ipam");
        tools.push((
            "CNI bridge plugin (bridge+host-local+ipMasq)".into(),
            Box::new(move || cni_cycle(&pod, &ipam)),
        ));
    }
    let have_netavark =
        netbind_testkit::peer_present(Path::new("/usr/lib/podman/netavark").exists(), "netavark");
    if have_netavark {
        let pod = format!("nbb-{id}-nv");
        cleanup.0.push(pod.clone());
        sh(&format!("ip netns add {pod}"));
        let cfg = tmp.path().join("netavark");
        std::fs::create_dir_all(&cfg).unwrap();
        tools.push((
            "netavark 1.4 (bridge, iptables)".into(),
            Box::new(move || netavark_cycle(&pod, &cfg)),
        ));
    }
    // The floor started the way the setups above are: `--version` after the same quiet, in
    // the same order. It is kept out of the table (it has no teardown) and bounds what any
    // one-process tool could do in the ceiling below.
    tools.push((
        QUIET_FLOOR.into(),
        Box::new(|| {
            let started = Instant::now();
            run(on_node(HANDLER).arg("--version"), None);
            (started.elapsed(), Duration::ZERO)
        }),
    ));
    let settle =
        Duration::from_millis(netbind_testkit::env_count("NETBIND_BENCH_SETTLE_MS", 200) as u64);
    let mut results = interleaved(&mut tools, cycles, settle);
    let quiet_floor = results
        .iter()
        .position(|stats| stats.name == QUIET_FLOOR)
        .map(|at| results.remove(at).setup)
        .expect("the quiet floor ran");
    let cni = results.iter().find(|stats| stats.name.starts_with("CNI"));
    println!(
        "## Phase 1: setup + teardown cycle ({cycles} interleaved rounds in a balanced order, each tool after each other equally often, {} ms of quiet before every cycle, one process per call, every tool exec'd directly from a thread in the node namespace)\n",
        settle.as_millis()
    );
    println!(
        "| tool | setup median ms | setup p10–p90 | teardown median ms | cycle median ms | cycle p10–p90 | CNI cycle / this | CNI ADD / this setup |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for stats in &results {
        let ratio =
            |a: Option<f64>, b: f64| a.map_or("-".to_string(), |a| format!("{:.1}x", a / b));
        println!(
            "| {} | {:.1} | {:.1}–{:.1} | {:.1} | {:.1} | {:.1}–{:.1} | {} | {} |",
            stats.name,
            stats.setup.pct(0.5),
            stats.setup.pct(0.1),
            stats.setup.pct(0.9),
            stats.teardown.pct(0.5),
            stats.total.pct(0.5),
            stats.total.pct(0.1),
            stats.total.pct(0.9),
            ratio(cni.map(|c| c.total.pct(0.5)), stats.total.pct(0.5)),
            ratio(cni.map(|c| c.setup.pct(0.5)), stats.setup.pct(0.5)),
        );
    }
    if !have_cni || !have_netavark {
        println!("\n(missing peers: install containernetworking-plugins and netavark)");
    }
    print_steps(
        cycles,
        &bridge_steps.borrow(),
        &masquerade_steps.borrow(),
        &quiet_floor,
        cni.map(|c| c.setup.pct(0.5)),
    );
    {
        let pod = format!("nbb-{id}-live");
        cleanup.0.push(pod.clone());
        make_pod(&pod, &node, "vlive", 24);
        living_pod_removal(&pod, &tmp.path().join("live"), cycles.min(20));
    }
    {
        let pod = format!("nbb-{id}-unplug");
        cleanup.0.push(pod.clone());
        make_pod(&pod, &node, "vunplug", 26);
        unplug_rounds(&pod, &node, &tmp.path().join("unplug"), cycles.min(20));
    }

    // 200 pods, masquerade binding, set up one after another and kept.
    let mut per_pod = Vec::new();
    // The floor, timed right before each pod's setup: a control for whatever grows on the
    // machine as pods accumulate (or drifts with the host) without being netbind's work.
    let mut floor_per_pod = Vec::new();
    let series_steps = RefCell::new(Vec::new());
    let mut peak_kib = 0u64;
    let mut pod_names = Vec::new();
    for pod_idx in 0..pods {
        let pod = format!("nbb-{id}-p{pod_idx}");
        let net = 30 + u32::try_from(pod_idx / 200).unwrap();
        sh(&format!(
            "ip netns add {pod} && ip -n {pod} link set lo up && \
             ip -n {node} link add p{pod_idx} type veth peer name eth0 netns {pod} && \
             ip -n {node} link set p{pod_idx} up && ip -n {pod} addr add 10.{net}.{}.{}/16 dev eth0 && \
             ip -n {pod} link set eth0 up && ip -n {pod} route add default via 10.{net}.255.254",
            (pod_idx + 1) / 250,
            (pod_idx + 1) % 250 + 1
        ));
        cleanup.0.push(pod.clone());
        pod_names.push(pod.clone());
        let dir = tmp.path().join(&pod);
        let started = Instant::now();
        run(on_node(HANDLER).arg("--version"), None);
        floor_per_pod.push(started.elapsed());
        let (out, process) = run_marked(&mut setup_cmd(&pod, "examples/vmi-masquerade.yaml", &dir));
        per_pod.push(process.wall());
        record_steps(&out, process, &series_steps);
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        peak_kib = peak_kib.max(report["peak_rss_kib"].as_u64().unwrap_or(0));
    }
    if pods >= 2 {
        let window = (pods / 4).clamp(1, 50);
        let first = Stats {
            samples: per_pod[..window].to_vec(),
        };
        let last = Stats {
            samples: per_pod[pods - window..].to_vec(),
        };
        let floor_first = Stats {
            samples: floor_per_pod[..window].to_vec(),
        };
        let floor_last = Stats {
            samples: floor_per_pod[pods - window..].to_vec(),
        };
        // Each setup in units of the floor timed just before it: what the machine's drift
        // (seen in the floor itself, either way, by up to 20% over a series) does to every
        // process alike cancels out, and what grows with netbind's pods remains.
        let relative = |range: std::ops::Range<usize>| {
            let mut ratios: Vec<f64> = range
                .map(|idx| per_pod[idx].as_secs_f64() / floor_per_pod[idx].as_secs_f64())
                .collect();
            ratios.sort_by(f64::total_cmp);
            ratios[ratios.len() / 2]
        };
        let (relative_first, relative_last) = (relative(0..window), relative(pods - window..pods));
        println!("\n## {pods} pods set up one after another (masquerade binding)\n");
        println!(
            "| pods | median ms per setup | p90 ms | floor before each setup, median ms | setup / its floor, median |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (label, setups, floor, ratio) in [
            (
                format!("first {window}"),
                &first,
                &floor_first,
                relative_first,
            ),
            (format!("last {window}"), &last, &floor_last, relative_last),
        ] {
            println!(
                "| {label} | {:.1} | {:.1} | {:.2} | {ratio:.2} |",
                setups.pct(0.5),
                setups.pct(0.9),
                floor.pct(0.5)
            );
        }
        println!(
            "\nlast / first: setup {:+.1}%, floor {:+.1}%, setup / its floor {:+.1}%",
            (last.pct(0.5) / first.pct(0.5) - 1.0) * 100.0,
            (floor_last.pct(0.5) / floor_first.pct(0.5) - 1.0) * 100.0,
            (relative_last / relative_first - 1.0) * 100.0
        );
        let series = series_steps.borrow();
        let first_steps = step_medians(&series[..window]);
        let last_steps = step_medians(&series[pods - window..]);
        println!("\n| step (median µs) | first {window} | last {window} |");
        println!("|---|---:|---:|");
        for ((name, first), (_, last)) in first_steps.iter().zip(&last_steps) {
            println!("| {name} | {first:.0} | {last:.0} |");
        }
        println!(
            "\nnetbind-handler peak resident memory (VmHWM, max over all setups): {peak_kib} KiB"
        );
    }

    // 50 pods set up at once, as a node runtime starting many pods does.
    let concurrent = netbind_testkit::env_count("NETBIND_BENCH_CONCURRENT", 50);
    let mut batch = Vec::new();
    for pod_idx in 0..concurrent {
        let pod = format!("nbb-{id}-c{pod_idx}");
        sh(&format!(
            "ip netns add {pod} && ip -n {pod} link set lo up && \
             ip -n {node} link add c{pod_idx} type veth peer name eth0 netns {pod} && \
             ip -n {node} link set c{pod_idx} up && ip -n {pod} addr add 10.40.{}.{}/16 dev eth0 && \
             ip -n {pod} link set eth0 up && ip -n {pod} route add default via 10.40.255.254",
            (pod_idx + 1) / 250,
            (pod_idx + 1) % 250 + 1
        ));
        cleanup.0.push(pod.clone());
        batch.push(pod);
    }
    let started = Instant::now();
    let failures = std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .iter()
            .map(|pod| {
                let dir = tmp.path().join(pod);
                scope.spawn(move || {
                    setup_cmd(pod, "examples/vmi-masquerade.yaml", &dir)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|stats| stats.success())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .filter(|ok| !ok)
            .count()
    });
    println!(
        "\n## {concurrent} pods set up concurrently (masquerade binding)\n\nwall time {:.1} ms, {failures} failed",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("\n## The machine around the run\n\n{}", machine.report());
    drop(cleanup);
}
