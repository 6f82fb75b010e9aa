//! netbind phase 1: the privileged handler. It enters a pod's network namespace, observes it,
//! plans (pure, `netbind-plan`), applies the plan through netlink, the tun ioctls, sysctls and
//! one nftables transaction, and writes the hand-off record for the unprivileged launcher.
//!
//! Order of a setup: validate the VMI and open the namespace (nothing changed yet) → observe
//! (or reuse the pre-change observation of an earlier run) → plan → record state → apply →
//! hand-off → mark finished. A failed step rolls back; a crash leaves state that the next
//! setup converges from or that teardown removes.

pub mod apply;
mod fd;
pub mod files;
pub use netbind_netlink::netlink;
/// Entering the pod's network namespace (its own crate, shared with the simulator and tests).
pub use netbind_netns as netns;
pub mod nfnl;
pub mod nft;
pub use netbind_netlink::observe;
pub mod process;
pub mod ra;
mod removal;
mod rerun;
pub mod selinux;
pub mod state;
pub mod sysctl;
pub mod tap;
pub mod teardown;
pub mod timing;
pub use removal::{
    HELPER_ENV, NETNS_DELETION_GRACE, NamespaceWork, TeardownArgs, remove_sandbox_dir,
    run_detached_helper, teardown, teardown_before_namespace_deletion, teardown_detached,
    teardown_locked,
};
pub mod verify;

use std::path::{Path, PathBuf};

use netbind_model::admission::ClusterConfig;
use netbind_model::check::{CheckError, check_vmi};
use netbind_model::handoff::HANDOFF_FILE;
use netbind_model::pod::ObservedPod;
use netbind_plan::{Owner, PlanOptions, PodNetPlan};

use crate::apply::{Applier, ApplyError, Injection};
use crate::netlink::Netlink;
use crate::netns::{Netns, NetnsError, NetnsTarget};
use crate::selinux::{LabelDecision, SelinuxEnv};
use crate::state::{HandlerState, Phase, StateError};
use crate::timing::{StepClock, StepTime};

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("VMI {origin}: {message}")]
    Vmi { origin: String, message: String },
    #[error("read {0}")]
    Input(netbind_model::input::InputError),
    #[error("cluster configuration {path}: {message}")]
    ClusterConfig { path: PathBuf, message: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("open rtnetlink socket in {target}: {source}")]
    Netlink {
        target: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Observe(#[from] observe::ObserveError),
    #[error("remove {path}: {source}")]
    RemoveDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("start the teardown helper {helper}: {source}")]
    Helper {
        helper: PathBuf,
        source: std::io::Error,
    },
    #[error("plan: {0}")]
    Plan(#[from] netbind_plan::PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Selinux(#[from] selinux::SelinuxError),
    #[error("the plan needs nftables but {0} was not found")]
    NftMissing(PathBuf),
    #[error("setup step failed: {source}{}", rollback_note(.rollback))]
    Apply {
        source: ApplyError,
        rollback: Vec<teardown::TeardownError>,
    },
    #[error("write hand-off record: {0}")]
    Handoff(files::FileError),
    #[error("write hand-off record: {source}{}", rollback_note(.rollback))]
    HandoffRolledBack {
        source: files::FileError,
        rollback: Vec<teardown::TeardownError>,
    },
    #[error("no phase-1 state in {0}: the pod was not set up")]
    NotSetUp(PathBuf),
    #[error("teardown left errors: {}", teardown::describe(.0))]
    Teardown(Vec<teardown::TeardownError>),
    #[error("{source}{}", rollback_note(.rollback))]
    RouterAdverts {
        source: ra::RaError,
        rollback: Vec<teardown::TeardownError>,
    },
}

fn rollback_note(errors: &[teardown::TeardownError]) -> String {
    if errors.is_empty() {
        " (rolled back)".into()
    } else {
        format!(" (rollback also failed: {})", teardown::describe(errors))
    }
}

/// Where the VMI comes from: a file (`netbind-handler --vmi`), or text a runtime passed (the
/// CNI plugin's pod annotation), named by where it came from for error messages.
#[derive(Debug, Clone)]
pub enum VmiSource {
    File(PathBuf),
    Inline { origin: String, text: String },
}

impl From<PathBuf> for VmiSource {
    fn from(path: PathBuf) -> Self {
        VmiSource::File(path)
    }
}

impl std::fmt::Display for VmiSource {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmiSource::File(path) => write!(out, "{}", path.display()),
            VmiSource::Inline { origin, .. } => out.write_str(origin),
        }
    }
}

/// Everything `setup` needs.
#[derive(Debug, Clone)]
pub struct SetupArgs {
    pub target: NetnsTarget,
    pub vmi: VmiSource,
    /// Which of the VMI's networks to plan.
    pub networks: Networks,
    pub owner: Owner,
    pub handoff_dir: PathBuf,
    pub state_dir: PathBuf,
    pub nft_bin: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    pub cluster: ClusterConfig,
    /// The launcher process, for its SELinux label (implied by `NetnsTarget::Pid`).
    pub launcher_pid: Option<u32>,
    pub selinux: SelinuxEnv,
    pub inject: Option<Injection>,
    /// The `netbind-ra` binary, for plans with router advertisements (masquerade with IPv6);
    /// without it such a pod gets none, with a warning.
    pub ra_responder: Option<PathBuf>,
    /// How a re-run takes away what its new plan no longer has.
    pub removal: Removal,
}

/// How a re-run takes away what the new plan no longer has (a network's links, tables and
/// sysctls).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Removal {
    /// Before the setup returns: every link deletion waits for the kernel's RCU grace periods
    /// on the caller's path.
    #[default]
    Now,
    /// The pod interfaces are given back before returning (what the runtime's next call needs)
    /// and the rest is recorded as pending and left to a detached `helper` (netbind-handler or
    /// netbind-cni itself, started with [`HELPER_ENV`]): a network's CNI DEL, on the
    /// pod-deletion path as much as a hot-unplug's. Until the helper has done it, any phase-1
    /// run of the pod takes the pending removal over under the pod's lock.
    Detached { helper: PathBuf },
}

impl SetupArgs {
    /// A setup of `vmi` in `target` for the VM's `owner`, with everything else as the command
    /// line defaults it: `nft` from PATH, no resolv.conf, no feature gates, no launcher pid,
    /// SELinux as found, no injected failure.
    pub fn new(
        target: NetnsTarget,
        vmi: impl Into<VmiSource>,
        owner: Owner,
        handoff_dir: PathBuf,
        state_dir: PathBuf,
    ) -> SetupArgs {
        SetupArgs {
            target,
            vmi: vmi.into(),
            networks: Networks::All,
            owner,
            handoff_dir,
            state_dir,
            nft_bin: "nft".into(),
            resolv_conf: None,
            cluster: ClusterConfig::default(),
            launcher_pid: None,
            selinux: SelinuxEnv::default(),
            inject: None,
            ra_responder: None,
            removal: Removal::Now,
        }
    }
}

/// Which of the VMI's networks a setup plans.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Networks {
    /// Every one.
    #[default]
    All,
    /// This one, beside those earlier calls set up (a runtime that calls phase 1 once per
    /// network, e.g. Multus with KubeVirt's `logicNetworkName`).
    With(String),
    /// Those earlier calls set up, but this one (its CNI DEL while the others stay: a
    /// hot-unplug through the runtime).
    Without(String),
}

/// What a finished setup reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetupReport {
    pub handoff: PathBuf,
    pub links: usize,
    pub sysctls: usize,
    pub nft_tables: usize,
    pub reused_observation: bool,
    pub selinux: String,
    pub warnings: Vec<String>,
    /// The handler's peak resident memory (VmHWM) at the end of the setup, in KiB.
    pub peak_rss_kib: Option<u64>,
    /// Where the setup's time went, step by step (process start and exit are not in it).
    pub steps: Vec<StepTime>,
    /// When the steps started and the report was built (and `main` was entered, set by the
    /// binary), on the machine's monotonic clock.
    pub clock: timing::ClockMarks,
}

/// The peak resident memory of this process (the kernel's VmHWM, as `getrusage` reports it):
/// one system call, instead of the kernel generating all of /proc/self/status for one line.
pub fn peak_rss_kib() -> Option<u64> {
    // SAFETY: rusage is plain integers and timevals, for which all zeroes is a valid value;
    // getrusage fills the one it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointer is to a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    u64::try_from(usage.ru_maxrss).ok()
}

/// The default per-pod state directory: derived from the hand-off directory, which is unique
/// per VMI and known even when the pod's namespace is already gone.
pub fn default_state_dir(handoff_dir: &Path) -> PathBuf {
    PathBuf::from("/run/netbind/handler").join(dir_key(handoff_dir))
}

/// A stable, file-name-safe key for a directory path (FNV-1a 64, hex).
fn dir_key(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in abs.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn read_to_string(path: &Path) -> Result<String, HandlerError> {
    netbind_model::input::read_text(path, netbind_model::yaml::MAX_INPUT_BYTES as u64)
        .map_err(HandlerError::Input)
}

fn open_netlink(target: &NetnsTarget) -> Result<Netlink, HandlerError> {
    Netlink::open().map_err(|source| HandlerError::Netlink {
        target: target.to_string(),
        source,
    })
}

/// Sets the alias of link `name` in the namespace (the pod record of
/// `netbind_model::pod_record`, which netbind-cni leaves for KubeVirt's hook sidecar).
pub fn set_link_alias(target: &NetnsTarget, name: &str, alias: &str) -> Result<(), HandlerError> {
    let ns = Netns::open(target)?;
    // On this thread: netbind-cni's ADD calls it right after the setup.
    ns.run_here(|| {
        let mut nl = open_netlink(target)?;
        let fail = |source| HandlerError::Netlink {
            target: format!("{target}: set the alias of {name}"),
            source,
        };
        let link = nl
            .links()
            .map_err(fail)?
            .into_iter()
            .find(|link| link.name == name)
            .ok_or_else(|| {
                fail(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such link",
                ))
            })?;
        let change = netlink::LinkChange {
            alias: Some(alias.to_string()),
            ..Default::default()
        };
        nl.change_link(link.index, &change).map_err(fail)
    })?
}

/// Reads a KubeVirt CR (`kubevirt.io/v1` KubeVirt, strictly) as the cluster configuration.
pub fn read_kubevirt_config(path: &Path) -> Result<ClusterConfig, HandlerError> {
    let text = read_to_string(path)?;
    netbind_model::cluster_objects::kubevirt_config(&text).map_err(|e| {
        HandlerError::ClusterConfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })
}

/// Reads the cluster configuration `netbind` wrote (strict JSON: an unknown field is an error).
pub fn read_cluster_config(path: &Path) -> Result<ClusterConfig, HandlerError> {
    let text = read_to_string(path)?;
    ClusterConfig::from_json(text.as_bytes()).map_err(|e| HandlerError::ClusterConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Prints the observed pod (the POD.json format).
pub fn observe(target: &NetnsTarget) -> Result<ObservedPod, HandlerError> {
    let ns = Netns::open(target)?;
    ns.run(|| {
        let mut nl = open_netlink(target)?;
        Ok(observe::observe(&mut nl)?)
    })?
}

/// The links of the namespace as the kernel reports them (names, types, MACs).
pub fn links(target: &NetnsTarget) -> Result<Vec<netlink::Link>, HandlerError> {
    let ns = Netns::open(target)?;
    ns.run(|| {
        open_netlink(target)?
            .links()
            .map_err(|source| HandlerError::Netlink {
                target: target.to_string(),
                source,
            })
    })?
}

pub fn setup(args: &SetupArgs) -> Result<SetupReport, HandlerError> {
    let mut clock = StepClock::new();
    // Everything that can be checked without touching the pod is checked first.
    let text = match &args.vmi {
        VmiSource::File(path) => read_to_string(path)?,
        VmiSource::Inline { text, .. } => text.clone(),
    };
    let vmi = check_vmi(&text, &args.cluster).map_err(|e| HandlerError::Vmi {
        origin: args.vmi.to_string(),
        message: match e {
            CheckError::Load(load_err) => load_err.to_string(),
            CheckError::Invalid(fs) => fs
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        },
    })?;
    let resolv = match &args.resolv_conf {
        Some(path) => read_to_string(path)?,
        None => String::new(),
    };
    clock.mark("read and admit the VMI");
    let ns = Netns::open(&args.target)?;
    let launcher_pid = match args.target {
        NetnsTarget::Pid(pid) => Some(pid),
        NetnsTarget::Path(_) => args.launcher_pid,
    };
    let label = args.selinux.decide(launcher_pid)?;
    match &label {
        LabelDecision::Disabled => {
            tracing::info!("SELinux is not enabled on this host; taps get no label")
        }
        LabelDecision::NoLauncher => {
            tracing::info!("no launcher label known; taps get the default label")
        }
        LabelDecision::Label(label) => {
            tracing::info!(label = %label, "creating taps under the launcher's label")
        }
    }
    // One phase-1 run per pod at a time: a second setup, or a teardown, waits for this one.
    clock.mark("open the namespace, SELinux");
    let _lock = files::lock(&args.state_dir).map_err(|e| HandlerError::State(e.into()))?;
    let previous = state::load(&args.state_dir)?;
    clock.mark("lock and read the state");
    let (report, pending) =
        ns.run_here(|| setup_in_netns(args, &vmi, &resolv, &label, previous, clock))??;
    if let (true, Removal::Detached { helper }) = (pending, &args.removal) {
        // Started from here, outside the pod's namespace (a process inside it would keep the
        // namespace alive), once the state it reads is saved; it takes the pod's lock after
        // this run lets go. Where it cannot start, the pod's next run (or its teardown) takes
        // the removal over.
        if let Err(err) = removal::start_pending_removal_helper(args, helper) {
            tracing::warn!(error = %err, "the removal is left to the pod's next phase-1 run");
        }
    }
    Ok(report)
}

/// The setup's work inside the pod's namespace: its report, and whether it left a removal
/// pending for a detached helper.
fn setup_in_netns(
    args: &SetupArgs,
    vmi: &netbind_model::admitted::AdmittedVmi,
    resolv: &str,
    label: &LabelDecision,
    previous: Option<HandlerState>,
    mut clock: StepClock,
) -> Result<(SetupReport, bool), HandlerError> {
    clock.mark("enter the namespace");
    let mut nl = open_netlink(&args.target)?;
    let nft_backend = nft::Nft::select(&args.nft_bin);
    let nft_bin = nft_backend
        .clone()
        .unwrap_or_else(|| nft::Nft::Binary(args.nft_bin.clone()));
    let mut previous = previous;
    if let Some(prev) = previous.as_mut() {
        take_over_pending_removal(&mut nl, &nft_bin, &args.state_dir, prev)?;
    }
    let reused = previous.is_some();
    let (now, dumps) = observe::observe_with_dumps(&mut nl)?;
    let observed = match &previous {
        // Planned from before netbind's changes, plus what appeared since (a hot-plug).
        Some(state) => rerun::observation(&state.observed, &now, &state.plan),
        None => now,
    };
    clock.mark("observe");
    let earlier = previous.as_ref().map(|p| &p.plan);
    let networks = match &args.networks {
        Networks::All => None,
        Networks::With(network) => Some(rerun::networks(network, earlier, vmi)),
        Networks::Without(network) => Some(rerun::networks_without(network, earlier, vmi)),
    };
    let opts = PlanOptions {
        owner: args.owner,
        resolv_conf: resolv,
        cluster: &args.cluster,
        networks: networks.as_deref(),
    };
    let plan = netbind_plan::plan(vmi, &observed, &opts)?;
    clock.mark("plan");
    if !plan.nftables.ruleset.is_empty() && nft_backend.is_none() {
        return Err(HandlerError::NftMissing(args.nft_bin.clone()));
    }
    // A changed VMI (an interface hot-plugged or unplugged, a binding changed): take away
    // what only the old plan has; what both have is kept and converged in place, so a running
    // guest's links are not disturbed.
    let mut pending_removal = None;
    let sysctls_before = match &previous {
        Some(prev) if prev.plan != plan => {
            let (gone, restore) = rerun::removal(&prev.plan, &plan, &prev.sysctls_before);
            match &args.removal {
                Removal::Now => {
                    let errs =
                        teardown::teardown_part(&mut nl, &nft_bin, &gone, &prev.observed, &restore);
                    if !errs.is_empty() {
                        return Err(HandlerError::Teardown(errs));
                    }
                }
                Removal::Detached { .. } => {
                    let renamed = teardown::hand_back(&mut nl, &gone, &prev.observed)
                        .map_err(|err| HandlerError::Teardown(vec![err.into()]))?;
                    pending_removal = Some(state::PendingRemoval {
                        part: rerun::left_after_hand_back(gone, &renamed),
                        sysctls_before: restore,
                    })
                    .filter(|pending| !pending.is_empty());
                }
            }
            rerun::sysctls_before(&prev.sysctls_before, &plan, |path| sysctl::read(path).ok())
        }
        Some(prev) => prev.sysctls_before.clone(),
        None => apply::sysctls_before(&plan),
    };
    let mut st = HandlerState {
        version: state::STATE_VERSION,
        phase: Phase::Started,
        observed: observed.clone(),
        sysctls_before,
        plan: plan.clone(),
        responders: Vec::new(),
        pending_removal,
    };
    state::save(&args.state_dir, &st)?;
    clock.mark("record the state");
    let mut applier = Applier::new(&mut nl, &nft_bin, label, &args.selinux);
    applier.inject = args.inject;
    applier.fresh = !reused;
    // Nothing has changed the links since the observation, unless this re-run has just taken
    // away what only the previous plan had.
    if !previous.as_ref().is_some_and(|prev| prev.plan != plan) {
        applier.seed(dumps);
    }
    if let Err(source) = applier.apply(&plan, &mut clock) {
        let rollback = undo(&mut nl, &nft_bin, args, label, &st, previous.as_ref())?;
        return Err(HandlerError::Apply { source, rollback });
    }
    let written = plan
        .handoff
        .to_json()
        .map_err(|err| files::FileError::Io {
            op: "serialise",
            path: args.handoff_dir.join(HANDOFF_FILE),
            source: std::io::Error::other(err),
        })
        .and_then(|json| {
            files::write_atomic(
                &args.handoff_dir,
                0o755,
                HANDOFF_FILE,
                json.as_bytes(),
                0o644,
            )
        });
    if let Err(err) = written {
        // Without its record the pod is useless to phase 2: undo it like any failed step.
        let rollback = undo(&mut nl, &nft_bin, args, label, &st, previous.as_ref())?;
        return Err(HandlerError::HandoffRolledBack {
            source: err,
            rollback,
        });
    }
    clock.mark("write the hand-off record");
    let mut warnings = Vec::new();
    match start_responders(args, &plan, &mut st, &mut warnings) {
        Ok(()) => {}
        Err(source) => {
            for responder in std::mem::take(&mut st.responders) {
                responder.stop(std::time::Duration::from_secs(1));
            }
            let rollback = undo(&mut nl, &nft_bin, args, label, &st, previous.as_ref())?;
            return Err(HandlerError::RouterAdverts { source, rollback });
        }
    }
    // A re-run replaces the responders of the previous one once its own run (the previous
    // ones keep serving until then, so a failed re-run can go back to them).
    for responder in previous.map(|p| p.responders).unwrap_or_default() {
        responder.stop(std::time::Duration::from_secs(1));
    }
    clock.mark("start responders");
    st.phase = Phase::Finished;
    state::save(&args.state_dir, &st)?;
    clock.mark("record the state as finished");
    let mut finished = report(args, &plan, reused, label);
    finished.warnings.extend(warnings);
    (finished.steps, finished.clock) = clock.finish();
    Ok((finished, st.pending_removal.is_some()))
}

/// Removes what an earlier run left pending (`Removal::Detached`) if its helper has not yet,
/// and records that it is done, before this run observes the pod: the pending links are
/// nothing the new plan may keep, and a plan made with them still there could collide with
/// them (the same network plugged again).
fn take_over_pending_removal(
    nl: &mut Netlink,
    nft_bin: &nft::Nft,
    state_dir: &Path,
    st: &mut HandlerState,
) -> Result<(), HandlerError> {
    let Some(pending) = st.pending_removal.take() else {
        return Ok(());
    };
    let errs = teardown::teardown_part(
        nl,
        nft_bin,
        &pending.part,
        &st.observed,
        &pending.sysctls_before,
    );
    if !errs.is_empty() {
        return Err(HandlerError::Teardown(errs));
    }
    state::save(state_dir, st)?;
    Ok(())
}

/// Undoes a setup whose apply, hand-off record or responders failed, and returns what could
/// not be undone. A first run goes back to the pristine pod and forgets it. A re-run goes back
/// to what the previous run left: what only the new plan has is taken away and the previous
/// plan is applied again (its hand-off record and responders were never replaced), so a failed
/// hot-plug does not take the running interfaces down with it; only if that fails too is the
/// whole pod undone.
fn undo(
    nl: &mut Netlink,
    nft_bin: &nft::Nft,
    args: &SetupArgs,
    label: &LabelDecision,
    failed: &HandlerState,
    previous: Option<&HandlerState>,
) -> Result<Vec<teardown::TeardownError>, HandlerError> {
    // What this run left pending (its pod interfaces already given back) goes first: the
    // previous plan, applied again, makes it afresh.
    let mut errors = removal::remove_pending(nl, nft_bin, failed);
    if let Some(previous) = previous
        && errors.is_empty()
    {
        let (gone, restore) = rerun::removal(&failed.plan, &previous.plan, &failed.sysctls_before);
        errors = teardown::teardown_part(nl, nft_bin, &gone, &failed.observed, &restore);
        if errors.is_empty() {
            let mut applier = Applier::new(nl, nft_bin, label, &args.selinux);
            match applier.apply(&previous.plan, &mut StepClock::new()) {
                Ok(()) => {
                    let back = HandlerState {
                        phase: Phase::Finished,
                        observed: failed.observed.clone(),
                        ..previous.clone()
                    };
                    state::save(&args.state_dir, &back)?;
                    return Ok(Vec::new());
                }
                Err(err) => errors.push(err.into()),
            }
        }
    }
    if previous.is_some() {
        tracing::warn!(
            errors = %teardown::describe(&errors),
            "could not go back to the previous run; undoing the whole pod"
        );
    }
    let rollback = removal::remove_recorded(nl, nft_bin, failed);
    if rollback.is_empty() {
        state::remove(&args.state_dir)?;
    }
    Ok(rollback)
}

/// Opens each planned advertisement's socket (in the pod's namespace: the caller is there)
/// and starts its responder, recording each in the state as soon as it runs.
fn start_responders(
    args: &SetupArgs,
    plan: &PodNetPlan,
    st: &mut HandlerState,
    warnings: &mut Vec<String>,
) -> Result<(), ra::RaError> {
    for cfg in &plan.router_adverts {
        let Some(bin) = &args.ra_responder else {
            warnings.push(format!(
                "no RA responder (netbind-ra) given: {} gets no router advertisements, so an \
                 IPv6 guest has no default route",
                cfg.interface
            ));
            continue;
        };
        let socket = ra::open_socket(&cfg.interface)?;
        let log_path = args.state_dir.join(format!("ra-{}.log", cfg.interface));
        let log = files::create_log(&log_path).map_err(|source| ra::RaError::Spawn {
            bin: log_path.display().to_string(),
            iface: cfg.interface.clone(),
            source,
        })?;
        st.responders.push(ra::spawn(bin, &socket, cfg, log)?);
        // Saved at once: a crash from here on leaves a responder that teardown finds.
        state::save(&args.state_dir, st).map_err(|e| ra::RaError::Record {
            iface: cfg.interface.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

fn report(args: &SetupArgs, plan: &PodNetPlan, reused: bool, label: &LabelDecision) -> SetupReport {
    SetupReport {
        handoff: args.handoff_dir.join(HANDOFF_FILE),
        links: plan.links.len(),
        sysctls: plan.sysctls.len(),
        nft_tables: plan.nftables.ruleset.tables.len(),
        reused_observation: reused,
        selinux: match label {
            LabelDecision::Disabled => "disabled".into(),
            LabelDecision::NoLauncher => "default label".into(),
            LabelDecision::Label(context) => context.clone(),
        },
        warnings: plan.warnings.clone(),
        peak_rss_kib: peak_rss_kib(),
        steps: Vec::new(),
        clock: timing::ClockMarks::default(),
    }
}
