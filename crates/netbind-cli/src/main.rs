//! `netbind`: the operator's command line.

mod audit;
use netbind_podsim as podsim;
mod up;
use netbind_podsim::vm;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use netbind_model::admission::{ClusterConfig, FeatureGate};
use netbind_model::admitted::AdmittedVmi;
use netbind_model::check::{CheckError, check_vmi};
use netbind_model::pod::ObservedPod;
use netbind_model::yaml::MAX_INPUT_BYTES;
use netbind_plan::{Owner, PlanOptions, PodNetPlan, domxml};

/// Exit codes shared by every subcommand.
const EXIT_INVALID: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "netbind",
    version,
    about = "KubeVirt-compatible, privilege-separated VM networking"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check VirtualMachineInstance / VirtualMachine YAML with KubeVirt's defaulting and
    /// admission rules. Exit 0 valid, 1 invalid, 2 unreadable.
    Validate {
        /// YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print the phase-1 plan (links, addresses, sysctls, nftables, DHCP, hand-off) as JSON.
    Plan {
        #[command(flatten)]
        input: PlanArgs,
        /// Print KubeVirt's nft commands instead of the JSON plan.
        #[arg(long)]
        nft_text: bool,
    },
    /// Run the VMI on this machine: a simulated pod, phase 1 (root), phase 2 (uid 107, no
    /// capabilities) and, with --boot, a real guest whose lease and connectivity are checked.
    Up {
        /// The VMI (or VM) YAML.
        file: PathBuf,
        /// Boot a real guest on the pre-created tap.
        #[arg(long, value_enum)]
        boot: Option<up::Boot>,
        /// Pod name (default: the VMI's metadata.name).
        #[arg(long)]
        name: Option<String>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// The simulated pod network's IP families (default: dual for a VMI that sets
        /// vmIPv6NetworkCIDR, ipv4 otherwise).
        #[arg(long, value_enum)]
        ip_family: Option<podsim::IpFamily>,
        /// Who runs the pod: netbind's simulator, or containerd through the CRI (netbind's own
        /// private containerd, unless --cri-socket names one whose CNI chain has netbind-cni).
        #[arg(long, value_enum, default_value = "sim")]
        runtime: up::Runtime,
        /// The CRI socket of a running containerd (with --runtime containerd).
        #[arg(long)]
        cri_socket: Option<PathBuf>,
        /// netbind-cni's runDir in that runtime's CNI chain (with --cri-socket).
        #[arg(long, default_value = "/run/netbind/cni")]
        cni_run_dir: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove a pod started by `netbind up`, and every trace of it.
    Down { name: String },
    /// Try every attack of a compromised launcher or QEMU (A1–A39) from inside a pod, in the
    /// VM side's own sandbox, and report each verdict.
    Audit {
        /// A pod started by `netbind up` (default: a fresh dual-stack masquerade pod, removed
        /// afterwards).
        pod: Option<String>,
        /// Demo: keep these capabilities (e.g. NET_ADMIN,NET_RAW) and no seccomp filter, as
        /// KubeVirt's launcher had them.
        #[arg(long, value_delimiter = ',')]
        grant: Vec<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the pods `netbind up` started.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the libvirt `<interface>` elements of the domain.
    Domxml {
        #[command(flatten)]
        input: PlanArgs,
        /// Wrap the interfaces in a minimal complete `<domain>` (for virt-xml-validate / virsh).
        #[arg(long)]
        full: bool,
    },
}

#[derive(Args, Debug)]
struct ClusterArgs {
    /// The cluster configuration as KubeVirt's own CR: a `kubevirt.io/v1` KubeVirt object,
    /// read strictly (its feature gates, network settings and binding plugins). The flags
    /// below are shorthands for a cluster without one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["default_network_interface", "no_bridge_on_pod_network", "feature_gates"])]
    kubevirt_config: Option<PathBuf>,
    /// KubeVirt's `defaultNetworkInterface` (bridge or masquerade).
    #[arg(long, default_value = "bridge")]
    default_network_interface: String,
    /// Reject bridge binding on the pod network (`permitBridgeInterfaceOnPodNetwork: false`).
    #[arg(long)]
    no_bridge_on_pod_network: bool,
    /// Enable a KubeVirt feature gate (PortRangesSpec, PasstBinding); repeatable.
    #[arg(long = "feature-gate", value_name = "GATE")]
    feature_gates: Vec<String>,
    /// Drop what a bridge-bound guest sends from another MAC or address on this secondary
    /// network (NetworkAttachmentDefinition `namespace/name` or `name`); repeatable. The pod
    /// network is always checked.
    #[arg(long = "spoof-check", value_name = "NAD")]
    spoof_check_networks: Vec<String>,
}

impl ClusterArgs {
    fn config(&self) -> Result<ClusterConfig, Failure> {
        let mut cfg = match &self.kubevirt_config {
            Some(path) => {
                let text = read_text(path)?;
                netbind_model::cluster_objects::kubevirt_config(&text).map_err(|e| Failure {
                    code: EXIT_INVALID,
                    message: format!("{}: {e}", path.display()),
                })?
            }
            None => ClusterConfig {
                default_network_interface: self.default_network_interface.clone(),
                permit_bridge_interface_on_pod_network: !self.no_bridge_on_pod_network,
                feature_gates: self
                    .feature_gates
                    .iter()
                    .map(|g| FeatureGate::from(g.as_str()))
                    .collect::<BTreeSet<_>>(),
                ..ClusterConfig::default()
            },
        };
        // The CR has no such setting: the flag applies either way.
        cfg.spoof_check_networks = self.spoof_check_networks.iter().cloned().collect();
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
struct PlanArgs {
    /// The VMI (or VM) YAML.
    file: PathBuf,
    /// The observed pod interfaces (POD.json, as `netbind-handler observe` prints it).
    #[arg(long)]
    pod: PathBuf,
    /// The pod's resolv.conf for DHCP DNS servers and search domains (default: none, which
    /// gives KubeVirt's fallback 8.8.8.8 / cluster.local).
    #[arg(long)]
    resolv_conf: Option<PathBuf>,
    /// uid that owns the tap (the VM process).
    #[arg(long, default_value_t = 107)]
    uid: u32,
    /// gid that owns the tap.
    #[arg(long, default_value_t = 107)]
    gid: u32,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

fn unreadable(path: &Path, cause: impl std::fmt::Display) -> Failure {
    Failure {
        code: EXIT_UNREADABLE,
        message: format!("{}: {cause}", path.display()),
    }
}

fn read_text(path: &Path) -> Result<String, Failure> {
    netbind_model::input::read_text(path, MAX_INPUT_BYTES as u64).map_err(|e| Failure {
        code: EXIT_UNREADABLE,
        message: e.to_string(),
    })
}

/// Reports one file; returns its exit code. A file may hold several documents (`---`); each
/// is checked by its kind: a VMI or VM (KubeVirt's admission), a KubeVirt CR or a
/// NetworkAttachmentDefinition (read strictly).
fn validate_file(path: &Path, cfg: &ClusterConfig) -> u8 {
    let text = match read_text(path) {
        Ok(content) => content,
        Err(failure) => {
            eprintln!("{}", failure.message);
            return failure.code;
        }
    };
    let docs = split_documents(&text);
    let many = docs.len() > 1;
    let mut worst = 0;
    for (index, doc) in docs.iter().enumerate() {
        let at = if many {
            format!("{} (document {})", path.display(), index + 1)
        } else {
            path.display().to_string()
        };
        let kind = serde_saphyr::from_str::<KindOnly>(doc)
            .ok()
            .and_then(|k| k.kind)
            .unwrap_or_default();
        let code = match kind.as_str() {
            "KubeVirt" => strict(&at, netbind_model::cluster_objects::kubevirt_config(doc)),
            "NetworkAttachmentDefinition" => strict(
                &at,
                netbind_model::cluster_objects::network_attachment_definition(doc),
            ),
            _ => match check_vmi(doc, cfg) {
                Ok(_) => 0,
                Err(CheckError::Load(err)) => {
                    eprintln!("{at}:{err}");
                    EXIT_UNREADABLE
                }
                Err(CheckError::Invalid(findings)) => {
                    for failure in findings {
                        eprintln!("{at}:{failure}");
                    }
                    EXIT_INVALID
                }
            },
        };
        worst = worst.max(code);
    }
    if worst == 0 {
        println!("{}: valid", path.display());
    }
    worst
}

#[derive(serde::Deserialize)]
struct KindOnly {
    #[serde(default)]
    kind: Option<String>,
}

fn strict<T>(at: &str, read: Result<T, netbind_model::cluster_objects::ObjectError>) -> u8 {
    match read {
        Ok(_) => 0,
        Err(err) => {
            eprintln!("{at}: {err}");
            EXIT_INVALID
        }
    }
}

/// The documents of a YAML stream (separated by `---` lines); one document without any.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    if docs.is_empty() {
        docs.push(String::new());
    }
    docs
}

fn load_admitted(path: &Path, cfg: &ClusterConfig) -> Result<AdmittedVmi, Failure> {
    let text = read_text(path)?;
    check_vmi(&text, cfg).map_err(|err| match err {
        CheckError::Load(err) => Failure {
            code: EXIT_UNREADABLE,
            message: format!("{}:{err}", path.display()),
        },
        CheckError::Invalid(fs) => Failure {
            code: EXIT_INVALID,
            message: fs
                .iter()
                .map(|f| format!("{}:{f}", path.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        },
    })
}

fn make_plan(args: &PlanArgs) -> Result<PodNetPlan, Failure> {
    let cfg = args.cluster.config()?;
    let vmi = load_admitted(&args.file, &cfg)?;
    let pod =
        ObservedPod::from_json(&read_text(&args.pod)?).map_err(|e| unreadable(&args.pod, e))?;
    let resolv = match &args.resolv_conf {
        Some(path) => read_text(path)?,
        None => String::new(),
    };
    let opts = PlanOptions {
        owner: Owner {
            uid: args.uid,
            gid: args.gid,
        },
        resolv_conf: &resolv,
        cluster: &cfg,
        networks: None,
    };
    let plan = netbind_plan::plan(&vmi, &pod, &opts).map_err(|e| Failure {
        code: EXIT_INVALID,
        message: format!("{}: {e}", args.file.display()),
    })?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(plan)
}

/// A minimal domain around the interfaces: enough for libvirt's schema and for `virsh define`.
pub fn wrap_domain(name: &str, interfaces: &str) -> String {
    format!(
        "<domain type='qemu'>\n  <name>{}</name>\n  <memory unit='MiB'>128</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n  </os>\n  <devices>\n{interfaces}  </devices>\n</domain>\n",
        domxml::escape(name)
    )
}

fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.cmd {
        Cmd::Up {
            file,
            boot,
            name,
            json,
            ip_family,
            runtime,
            cri_socket,
            cni_run_dir,
            cluster,
        } => {
            let args = up::UpArgs {
                file,
                boot,
                name,
                json,
                ip_family,
                runtime,
                cri_socket,
                cni_run_dir,
                cluster: cluster.config()?,
            };
            match up::up(&args) {
                Ok(report) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).unwrap_or_default()
                        );
                    } else {
                        println!(
                            "pod {} is up: netbind down {} removes it",
                            report.name, report.name
                        );
                    }
                    Ok(0)
                }
                Err(up::UpError::Invalid(reason)) => Err(Failure {
                    code: EXIT_INVALID,
                    message: reason,
                }),
                Err(err) => {
                    if json {
                        println!("{}", serde_json::json!({ "error": err.to_string() }));
                    }
                    Err(Failure {
                        code: EXIT_INVALID,
                        message: err.to_string(),
                    })
                }
            }
        }
        Cmd::Down { name } => {
            up::down(&name).map_err(|err| Failure {
                code: EXIT_INVALID,
                message: err.to_string(),
            })?;
            println!("pod {name} removed");
            Ok(0)
        }
        Cmd::Audit { pod, grant, json } => {
            let audit_report = audit::audit(pod, grant).map_err(|err| Failure {
                code: EXIT_INVALID,
                message: err.to_string(),
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&audit_report).unwrap_or_default()
                );
            } else {
                audit::print_table(&audit_report);
            }
            Ok(0)
        }
        Cmd::Status { json } => {
            let pods = up::status();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&pods).unwrap_or_default()
                );
            } else if pods.is_empty() {
                println!("no pods");
            } else {
                println!(
                    "{:<20} {:<11} {:<11} {:<12} {:<26} {:<30} {:<15} PHASE",
                    "NAME", "RUNTIME", "BINDING", "POD IP", "LAUNCHER", "VM", "LEASE"
                );
                for pod_name in pods {
                    println!(
                        "{:<20} {:<11} {:<11} {:<12} {:<26} {:<30} {:<15} {}",
                        pod_name.name,
                        format!("{:?}", pod_name.runtime).to_lowercase(),
                        pod_name.binding,
                        pod_name.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
                        pod_name.launcher,
                        pod_name.vm,
                        pod_name.lease.unwrap_or_default(),
                        pod_name.phase
                    );
                }
            }
            Ok(0)
        }
        Cmd::Validate { files, cluster } => {
            let cfg = cluster.config()?;
            // The worst outcome wins: unreadable (2) over invalid (1) over valid (0).
            Ok(files
                .iter()
                .map(|f| validate_file(f, &cfg))
                .max()
                .unwrap_or(0))
        }
        Cmd::Plan { input, nft_text } => {
            let plan = make_plan(&input)?;
            if nft_text {
                for command in &plan.nftables.commands {
                    println!("{command}");
                }
            } else {
                let json = serde_json::to_string_pretty(&plan).map_err(|err| Failure {
                    code: EXIT_INVALID,
                    message: err.to_string(),
                })?;
                println!("{json}");
            }
            Ok(0)
        }
        Cmd::Domxml { input, full } => {
            let plan = make_plan(&input)?;
            let ds: Vec<_> = plan
                .handoff
                .interfaces
                .iter()
                .map(|i| i.domain.clone())
                .collect();
            if full {
                let name = plan.vmi.rsplit('/').next().unwrap_or("vmi").to_string();
                print!(
                    "{}",
                    wrap_domain(
                        if name.is_empty() { "vmi" } else { &name },
                        &domxml::render_interfaces(&ds, 4)
                    )
                );
            } else {
                print!("{}", domxml::render_interfaces(&ds, 0));
            }
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`netbind ... | head`) like other Unix tools, instead of
    // panicking on the failed print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("netbind: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
