//! `netbind-handler`: phase 1, run as root by the node agent (or `netbind up`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use netbind_handler::apply::Injection;
use netbind_handler::netns::NetnsTarget;
use netbind_handler::selinux::SelinuxEnv;
use netbind_handler::{SetupArgs, TeardownArgs, default_state_dir};
use netbind_model::admission::ClusterConfig;
use netbind_plan::Owner;

#[derive(Parser, Debug)]
#[command(
    name = "netbind-handler",
    version,
    about = "netbind phase 1: privileged pod network setup"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct Target {
    /// The pod network namespace (e.g. /run/netns/NAME or /proc/PID/ns/net).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// A process in the pod (the launcher); entered through a pidfd.
    #[arg(long)]
    pid: Option<u32>,
}

impl Target {
    fn get(&self) -> NetnsTarget {
        match (&self.netns, self.pid) {
            (Some(path), _) => NetnsTarget::Path(path.clone()),
            (None, Some(pid)) => NetnsTarget::Pid(pid),
            (None, None) => NetnsTarget::Path(PathBuf::new()),
        }
    }
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the pod's interfaces, addresses and routes (the POD.json format).
    Observe {
        #[command(flatten)]
        target: Target,
    },
    /// Observe, plan and apply phase 1; write the hand-off record.
    Setup {
        #[command(flatten)]
        target: Target,
        /// The VirtualMachineInstance (or VirtualMachine) YAML.
        #[arg(long)]
        vmi: PathBuf,
        /// uid of the VM process: owner of the taps.
        #[arg(long, default_value_t = 107)]
        uid: u32,
        /// gid of the VM process: group of the taps.
        #[arg(long, default_value_t = 107)]
        gid: u32,
        /// Directory for the hand-off record: root-owned, readable (not writable) by the launcher.
        #[arg(long)]
        handoff_dir: PathBuf,
        /// The pod's resolv.conf (DNS servers and search domains for DHCP).
        #[arg(long)]
        resolv_conf: Option<PathBuf>,
        /// The launcher's pid when the namespace is given by path (for its SELinux label).
        #[arg(long)]
        launcher_pid: Option<u32>,
        /// Enable a KubeVirt feature gate (PortRangesSpec, PasstBinding); repeatable.
        #[arg(long = "feature-gate", value_name = "GATE")]
        feature_gates: Vec<String>,
        /// Check the guest's source MAC and addresses on this secondary (Multus) network too
        /// (NetworkAttachmentDefinition `namespace/name` or `name`); repeatable.
        #[arg(long = "spoof-check", value_name = "NAD")]
        spoof_check_networks: Vec<String>,
        /// The router-advertisement responder (default: `netbind-ra` next to this binary).
        #[arg(long)]
        ra_responder: Option<PathBuf>,
        /// The whole cluster configuration as `netbind` writes it (JSON): default binding,
        /// bridge on the pod network, feature gates, spoof-checked networks. Instead of the
        /// flags above, so that netbind and the handler apply the same settings.
        #[arg(long, conflicts_with_all = ["feature_gates", "spoof_check_networks", "kubevirt_config"])]
        cluster_config: Option<PathBuf>,
        /// The cluster configuration as KubeVirt's own CR (a `kubevirt.io/v1` KubeVirt object,
        /// read strictly, as `netbind --kubevirt-config` and netbind-cni's `kubevirtConfig`).
        #[arg(long, value_name = "FILE", conflicts_with = "feature_gates")]
        kubevirt_config: Option<PathBuf>,
        /// On a re-run that takes something away (a network unplugged): give its pod
        /// interface back before returning and leave deleting its links and tables to a
        /// detached helper, as netbind-cni's DEL of one network does.
        #[arg(long)]
        detach_removal: bool,
        #[command(flatten)]
        common: Common,
        /// Test hook: fail after step K (the setup then rolls back).
        #[cfg(feature = "test-hooks")]
        #[arg(long, hide = true)]
        fail_after_step: Option<usize>,
        /// Test hook: exit abruptly after step K, as a crash would (no rollback).
        #[cfg(feature = "test-hooks")]
        #[arg(long, hide = true)]
        crash_after_step: Option<usize>,
    },
    /// Remove everything setup made (also after a partial setup, or when the pod is gone).
    Teardown {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        handoff_dir: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Return at once and let a detached helper do the removal (it holds the pod's lock,
        /// so a setup of the pod waits for it); see "A teardown that does not wait".
        #[arg(long)]
        detach: bool,
        /// The caller deletes the namespace right after: leave the links and tables to that
        /// deletion, and undo only what lives outside the namespace.
        #[arg(long, conflicts_with = "detach")]
        namespace_deleted_next: bool,
    },
}

#[derive(Args, Debug)]
struct Common {
    /// Handler-private state for this pod (default: /run/netbind/handler/<key of handoff dir>).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The nft binary.
    #[arg(long, default_value = "nft")]
    nft: PathBuf,
}

/// `main_ns`: when `main` was entered, for the setup report's clock marks.
fn run(cli: Cli, main_ns: u64) -> Result<String, netbind_handler::HandlerError> {
    match cli.cmd {
        Cmd::Observe { target } => {
            let pod = netbind_handler::observe(&target.get())?;
            Ok(serde_json::to_string_pretty(&pod).unwrap_or_default())
        }
        Cmd::Setup {
            target,
            vmi,
            uid,
            gid,
            handoff_dir,
            resolv_conf,
            launcher_pid,
            feature_gates,
            spoof_check_networks,
            ra_responder,
            cluster_config,
            kubevirt_config,
            detach_removal,
            common,
            #[cfg(feature = "test-hooks")]
            fail_after_step,
            #[cfg(feature = "test-hooks")]
            crash_after_step,
        } => {
            let state_dir = common
                .state_dir
                .unwrap_or_else(|| default_state_dir(&handoff_dir));
            #[cfg(feature = "test-hooks")]
            let inject = match (fail_after_step, crash_after_step) {
                (Some(step), _) => Some(Injection::FailAfter(step)),
                (None, Some(step)) => Some(Injection::CrashAfter(step)),
                _ => None,
            };
            #[cfg(not(feature = "test-hooks"))]
            let inject: Option<Injection> = None;
            let args = SetupArgs {
                target: target.get(),
                vmi: vmi.into(),
                networks: netbind_handler::Networks::All,
                owner: Owner { uid, gid },
                handoff_dir,
                state_dir,
                nft_bin: common.nft,
                resolv_conf,
                cluster: match (cluster_config, kubevirt_config) {
                    (Some(path), _) => netbind_handler::read_cluster_config(&path)?,
                    (None, Some(path)) => {
                        let mut cfg = netbind_handler::read_kubevirt_config(&path)?;
                        cfg.spoof_check_networks = spoof_check_networks.into_iter().collect();
                        cfg
                    }
                    (None, None) => ClusterConfig {
                        feature_gates: feature_gates.into_iter().map(Into::into).collect(),
                        spoof_check_networks: spoof_check_networks.into_iter().collect(),
                        ..Default::default()
                    },
                },
                launcher_pid,
                selinux: SelinuxEnv::default(),
                inject,
                ra_responder: ra_responder.or_else(|| {
                    std::env::current_exe()
                        .ok()
                        .and_then(|e| e.parent().map(|d| d.join("netbind-ra")))
                        .filter(|p| p.is_file())
                }),
                removal: if detach_removal {
                    netbind_handler::Removal::Detached {
                        helper: current_exe()?,
                    }
                } else {
                    netbind_handler::Removal::Now
                },
            };
            let mut report = netbind_handler::setup(&args)?;
            report.clock.main_ns = Some(main_ns);
            for warning in &report.warnings {
                tracing::warn!("{warning}");
            }
            Ok(serde_json::to_string_pretty(&report).unwrap_or_default())
        }
        Cmd::Teardown {
            target,
            handoff_dir,
            common,
            detach,
            namespace_deleted_next,
        } => {
            let state_dir = common
                .state_dir
                .unwrap_or_else(|| default_state_dir(&handoff_dir));
            let args = TeardownArgs {
                target: target.get(),
                handoff_dir,
                state_dir,
                nft_bin: common.nft,
            };
            if namespace_deleted_next {
                netbind_handler::teardown_before_namespace_deletion(&args)?;
            } else if detach {
                netbind_handler::teardown_detached(&args, &current_exe()?, None)?;
            } else {
                netbind_handler::teardown(&args)?;
            }
            Ok(String::new())
        }
    }
}

/// This binary, which is also the detached removal helper.
fn current_exe() -> Result<PathBuf, netbind_handler::HandlerError> {
    std::env::current_exe().map_err(|source| netbind_handler::HandlerError::Helper {
        helper: "/proc/self/exe".into(),
        source,
    })
}

fn main() -> ExitCode {
    let main_ns = netbind_handler::timing::monotonic_ns();
    // Die quietly on a closed pipe (`netbind ... | head`) like other Unix tools, instead of
    // panicking on the failed print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    netbind_log::init("warn");
    if let Some(code) = netbind_handler::run_detached_helper() {
        return code;
    }
    match run(Cli::parse(), main_ns) {
        Ok(mut out) => {
            if !out.is_empty() {
                // One write for the whole report, so that a caller reading the pipe is woken
                // once (`println!` wrote up to the last newline, then the rest with its own).
                out.push('\n');
                if let Err(err) = std::io::stdout().lock().write_all(out.as_bytes()) {
                    eprintln!("netbind-handler: write the report to stdout: {err}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("netbind-handler: {err}");
            ExitCode::FAILURE
        }
    }
}
