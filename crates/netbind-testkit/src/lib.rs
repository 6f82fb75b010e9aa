//! Support shared by the integration tests and benchmarks of the netbind crates, and never by
//! their libraries: the repository root, one policy for missing prerequisites (fail in CI,
//! skip loudly elsewhere), shell helpers, and work done inside a network namespace.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failed step fails the test

pub mod frame;
pub mod golden;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (examples/, testdata/, .e2e/ live there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The tools of `tools` that are not on PATH.
pub fn missing_tools(tools: &[&str]) -> Vec<String> {
    tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|t| t.to_string())
        .collect()
}

/// Whether a root-tier test can run: as root with nothing `missing`. CI runs as root and
/// installs and builds everything, so there a missing piece fails the test; elsewhere the
/// test says loudly that it was skipped and why.
pub fn ready(missing: Vec<String>) -> bool {
    let why = match (is_root(), missing.is_empty()) {
        (true, true) => return true,
        (true, false) => format!("missing {missing:?}"),
        (false, _) => format!("needs root; missing {missing:?}"),
    };
    skip(&why)
}

/// [`ready`] for a test that needs the tools of `tools` but not root.
pub fn tools_ready(tools: &[&str]) -> bool {
    let missing = missing_tools(tools);
    missing.is_empty()
        || skip(&format!(
            "missing {missing:?} (scripts/setup.sh installs them)"
        ))
}

/// Whether a benchmark's peer (`what`) can be measured: `present`, or else the policy for what
/// cannot run (CI, which installs every peer, fails; elsewhere the bench goes on without it,
/// loudly).
pub fn peer_present(present: bool, what: &str) -> bool {
    present
        || skip(&format!(
            "peer {what} is not installed (scripts/setup.sh installs it)"
        ))
}

/// The order in which round `round` runs `count` tools, so that the work a tool leaves behind
/// (a namespace the kernel is still cleaning up, a stopped server's exit) does not always
/// fall on the same next tool.
///
/// Rounds follow a Williams design: the first is `0, 1, n-1, 2, n-2, ...`, round `i` adds `i`
/// to each place (mod `n`), and for an odd `n` the next `n` rounds are those reversed. Over
/// one period (`n` rounds for an even `n`, `2n` for an odd one) each tool takes each place
/// equally often and follows each other tool equally often. Starting each round one tool
/// further on, as the benches did before, balances the places only: tool `a` was always
/// followed by `a + 1`.
pub fn turn_order(round: usize, count: usize) -> impl Iterator<Item = usize> {
    let period = if count.is_multiple_of(2) {
        count
    } else {
        2 * count
    };
    let round = round % period.max(1);
    let (shift, reversed) = (round % count.max(1), round >= count);
    (0..count).map(move |turn| {
        let place = if reversed { count - 1 - turn } else { turn };
        // The first round's place `place`: 0, 1, n-1, 2, n-2, ...
        let first = if place % 2 == 1 {
            place.div_ceil(2)
        } else {
            (count - place / 2) % count
        };
        (first + shift) % count
    })
}

/// The policy for a test that cannot run: a failure in CI, a loud skip elsewhere.
fn skip(why: &str) -> bool {
    assert!(std::env::var_os("CI").is_none(), "CI must run this: {why}");
    eprintln!("SKIPPED: {why}");
    false
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("sh runs")
}

/// Runs `cmd`, fails with its stderr unless it succeeds, returns its stdout.
pub fn ok(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a short-lived thread that entered the network namespace `/run/netns/NS`, so
/// that sockets it opens live there while the test's own threads stay where they were.
pub fn in_netns<T: Send>(ns: &str, file: impl FnOnce() -> T + Send) -> T {
    netbind_netns::Netns::named(ns)
        .and_then(|n| n.run(file))
        .unwrap_or_else(|e| panic!("{ns}: {e}"))
}

/// SO_BINDTODEVICE: a socket of an address-less "guest" sends its limited broadcasts out of
/// `dev`, as a DHCP client's would.
pub fn bind_to_device(sock: &impl AsRawFd, dev: &str) {
    let name = format!("{dev}\0");
    // SAFETY: the option value is a NUL-terminated name, with its length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            libc::socklen_t::try_from(name.len()).unwrap_or(0),
        )
    };
    assert_eq!(
        rc,
        0,
        "SO_BINDTODEVICE {dev}: {}",
        std::io::Error::last_os_error()
    );
}

/// Network namespaces deleted when this drops, the test having passed or not. A name that
/// is already gone (deleted by the test itself) is skipped quietly.
#[derive(Debug, Default)]
pub struct Namespaces(pub Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if !std::path::Path::new("/run/netns").join(name).exists() {
                continue;
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Start of a benchmark's `main`: false when it must not run, that is when the test harness
/// only probes it (`--list`, `--test`), or without root (a loud skip; a failure in CI).
pub fn bench_may_run(name: &str) -> bool {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return false;
    }
    if !is_root() {
        // CI runs every bench once (scripts/test.sh): there, a bench that cannot run fails.
        return skip(&format!("the {name} bench needs root"));
    }
    true
}

/// A count from the environment, or `default`.
pub fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The start of a command run the way the launcher runs in a pod: inside `/run/netns/NETNS`,
/// as uid/gid 107 (the VM user) with no supplementary groups, every capability set empty
/// (the bounding set cleared before exec) and no_new_privs. Add the program and its arguments.
pub fn as_vm_user(netns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "setpriv"])
        .args(VM_USER_SETPRIV);
    cmd
}

/// `setpriv`'s arguments for the VM user: uid/gid 107, no supplementary groups, every
/// capability set empty, no_new_privs.
pub const VM_USER_SETPRIV: [&str; 7] = [
    "--reuid=107",
    "--regid=107",
    "--clear-groups",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
];

/// Total and idle CPU time (all CPUs, in clock ticks) from the text of `/proc/stat`: its
/// first line's user nice system idle iowait irq softirq steal (guest time is inside user),
/// idle being idle + iowait.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total, idle))
}

/// The busy share between two `/proc/stat` readings, `None` if they do not follow each other.
fn busy_between(before: &str, after: &str) -> Option<f64> {
    let (total_before, idle_before) = cpu_times(before)?;
    let (total_after, idle_after) = cpu_times(after)?;
    let total = total_after.checked_sub(total_before)?;
    let idle = idle_after.checked_sub(idle_before)?;
    (total > 0).then(|| 1.0 - idle as f64 / total as f64)
}

/// The share of the machine's CPU time (all CPUs, from `/proc/stat`) that was busy over
/// `over`, while the caller sleeps: what other processes and the kernel's own workers used.
/// `None` if `/proc/stat` cannot be read.
fn background_busy(over: std::time::Duration) -> Option<f64> {
    let before = std::fs::read_to_string("/proc/stat").ok()?;
    std::thread::sleep(over);
    let after = std::fs::read_to_string("/proc/stat").ok()?;
    busy_between(&before, &after)
}

/// A benchmark's line on how busy the machine was while it slept for a second (`when`: before
/// or after the measurements), with a warning when something else used more than a tenth of
/// it: a core kept busy by another process made netbind's setups faster here (a vCPU that
/// does not idle wakes at once) and the CNI plugin's ADD slower, 8.6x against 6.0x in one
/// pair of runs, so such a run's ratios are not comparable.
fn background_line(when: &str) -> String {
    match background_busy(std::time::Duration::from_secs(1)) {
        Some(busy) if busy > 0.10 => format!(
            "WARNING: the machine was {:.0}% busy {when}, with the benchmark asleep: another \
             process is using the CPUs, and this run's figures are not comparable with a quiet \
             machine's.",
            busy * 100.0
        ),
        Some(busy) => format!(
            "The machine {when}, with the benchmark asleep for 1 s: {:.1}% busy.",
            busy * 100.0
        ),
        None => format!("The machine {when}: /proc/stat could not be read."),
    }
}

/// How busy the machine was around a benchmark: taken before its first measurement
/// ([`MachineLoad::before`]) and after its last ([`MachineLoad::report`], both lines).
#[derive(Debug)]
pub struct MachineLoad {
    before: String,
}

impl MachineLoad {
    pub fn before() -> MachineLoad {
        MachineLoad {
            before: background_line("before the run"),
        }
    }

    /// The reading from before and one taken now, a line each.
    pub fn report(self) -> String {
        format!("{}\n{}", self.before, background_line("after the run"))
    }
}

#[cfg(test)]
mod tests {
    use super::{background_busy, busy_between, turn_order};

    /// The busy share counts user, system, interrupt and steal time against all of it, idle
    /// and iowait as idle; readings that do not follow each other give none.
    #[test]
    fn the_busy_share_is_read_from_two_proc_stat_readings() {
        let before = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        // 1000 ticks later: 150 user, 50 system, 50 steal, 700 idle, 50 iowait.
        let after = "cpu  250 0 100 1500 100 0 0 50 0 0\ncpu0 125 0 50 750 50 0 0 25 0 0\n";
        assert_eq!(busy_between(before, after), Some(0.25));
        assert_eq!(busy_between(after, before), None);
        assert_eq!(busy_between(before, before), None);
        assert_eq!(busy_between("intr 1 2 3", after), None);
    }

    /// With every CPU kept busy by a spinning thread, the machine reads as mostly busy (the
    /// idle reading is not asserted: tests run side by side).
    #[test]
    fn a_machine_kept_busy_reads_as_busy() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let spinners: Vec<_> = (0..cpus)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let busy = background_busy(std::time::Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for spinner in spinners {
            spinner.join().expect("spinner");
        }
        let busy = busy.expect("/proc/stat");
        // The spinners fill the CPUs this process may use; /proc/stat counts every CPU.
        let all = std::fs::read_to_string("/proc/stat")
            .expect("/proc/stat")
            .lines()
            .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
            .count()
            .max(cpus);
        let floor = 0.5 * cpus as f64 / all as f64;
        assert!(busy > floor && busy <= 1.0, "busy {busy}, floor {floor}");
    }

    #[test]
    fn turn_order_balances_places_and_predecessors_over_a_period() {
        for count in 1..=9usize {
            let period = if count.is_multiple_of(2) {
                count
            } else {
                2 * count
            };
            let mut at_place = vec![vec![0usize; count]; count];
            let mut follows = vec![vec![0usize; count]; count];
            for round in 0..period {
                let order: Vec<usize> = turn_order(round, count).collect();
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(
                    sorted,
                    (0..count).collect::<Vec<_>>(),
                    "round {round} of {count}"
                );
                for (place, tool) in order.iter().enumerate() {
                    at_place[*tool][place] += 1;
                }
                for pair in order.windows(2) {
                    follows[pair[0]][pair[1]] += 1;
                }
                // The next period repeats this one.
                assert!(turn_order(round + period, count).eq(order.iter().copied()));
            }
            let places = period / count;
            assert!(
                at_place.iter().flatten().all(|n| *n == places),
                "{count}: {at_place:?}"
            );
            let pairs = if count.is_multiple_of(2) { 1 } else { 2 };
            for (a, row) in follows.iter().enumerate() {
                for (b, n) in row.iter().enumerate() {
                    let want = if a == b { 0 } else { pairs };
                    assert_eq!(*n, want, "{count} tools: {a} before {b}: {follows:?}");
                }
            }
        }
    }
}
