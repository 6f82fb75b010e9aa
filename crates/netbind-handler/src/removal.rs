//! Removing what setup made, as the caller needs it: synchronously (`teardown`), handed to a
//! detached helper that holds the pod's lock (`teardown_detached`, the runtime's DEL), or
//! only what outlives the namespace when the caller deletes it next
//! (`teardown_before_namespace_deletion`, `netbind down`). The kernel work itself is in
//! `teardown.rs`.

use super::*;

#[derive(Debug, Clone)]
pub struct TeardownArgs {
    pub target: NetnsTarget,
    pub handoff_dir: PathBuf,
    pub state_dir: PathBuf,
    pub nft_bin: PathBuf,
}

/// Removes everything setup made. Works after a partial setup, and succeeds when the
/// namespace is already gone (the kernel removed everything with it).
pub fn teardown(args: &TeardownArgs) -> Result<(), HandlerError> {
    let _lock = lock_if_set_up(args)?;
    teardown_locked(args, NamespaceWork::Now)
}

/// Teardown for a caller that deletes the pod's namespace right after (`netbind down`): the
/// namespace's deletion reclaims every link and table in one batch of the kernel's own, off
/// the caller's path, so only what lives outside it is undone here: the RA responders (whose
/// sockets would keep the namespace alive), the hand-off record and the state.
pub fn teardown_before_namespace_deletion(args: &TeardownArgs) -> Result<(), HandlerError> {
    let _lock = lock_if_set_up(args)?;
    teardown_locked(args, NamespaceWork::LeftToDeletion)
}

/// The pod's lock, unless its state directory is missing: then nothing was set up, no lock is
/// needed, and taking one would create the directory.
fn lock_if_set_up(args: &TeardownArgs) -> Result<Option<files::PodLock>, HandlerError> {
    match std::fs::symlink_metadata(&args.state_dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => files::lock(&args.state_dir)
            .map(Some)
            .map_err(|err| HandlerError::State(err.into())),
    }
}

/// What a teardown does inside the pod's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceWork {
    /// Remove the links, tables and sysctls now.
    Now,
    /// First give whoever deletes the namespace (given by path) this long, then remove what
    /// is still there.
    AfterGrace(std::time::Duration),
    /// Nothing: the caller deletes the namespace next, which reclaims it all.
    LeftToDeletion,
}

/// How long a detached teardown gives the runtime to delete the pod's namespace (every
/// runtime does right after DEL), which takes netbind's links and tables with it in one batch
/// of the kernel's own, before removing them itself. With the removal after it, the links are
/// gone well within a second of the caller's return when the pod lives on.
pub const NETNS_DELETION_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// The teardown, with the pod's lock held by the caller.
pub fn teardown_locked(args: &TeardownArgs, work: NamespaceWork) -> Result<(), HandlerError> {
    let Some(st) = state::load(&args.state_dir)? else {
        // Nothing recorded: nothing of ours can be in the namespace.
        files::remove(&args.handoff_dir, HANDOFF_FILE).map_err(HandlerError::Handoff)?;
        return Ok(());
    };
    // First the responders: each holds a socket in the pod's namespace, which would keep it
    // alive after the runtime deletes it.
    for responder in &st.responders {
        responder.stop(std::time::Duration::from_secs(1));
    }
    if let (NamespaceWork::AfterGrace(grace), NetnsTarget::Path(path)) = (work, &args.target) {
        let deadline = std::time::Instant::now() + grace;
        while path.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let errors = match work {
        NamespaceWork::LeftToDeletion => Vec::new(),
        _ => in_pod_namespace(&args.target, |nl| {
            Ok(remove_recorded(nl, &nft_for(&args.nft_bin), &st))
        })?
        .unwrap_or_default(),
    };
    if !errors.is_empty() {
        // Keep the state so that teardown can be retried.
        return Err(HandlerError::Teardown(errors));
    }
    files::remove(&args.handoff_dir, HANDOFF_FILE).map_err(HandlerError::Handoff)?;
    state::remove(&args.state_dir)?;
    Ok(())
}

fn nft_for(bin: &Path) -> nft::Nft {
    nft::Nft::select(bin).unwrap_or_else(|| nft::Nft::Binary(bin.to_path_buf()))
}

/// Removes everything `st` records in the namespace: what its plan made, and what an earlier
/// run left pending.
pub(crate) fn remove_recorded(
    nl: &mut Netlink,
    nft_bin: &nft::Nft,
    st: &state::HandlerState,
) -> Vec<teardown::TeardownError> {
    let mut errors = teardown::teardown(nl, nft_bin, &st.plan, &st.observed, &st.sysctls_before);
    errors.extend(remove_pending(nl, nft_bin, st));
    errors
}

/// Removes what `st` records as left to a detached helper, if anything.
pub(crate) fn remove_pending(
    nl: &mut Netlink,
    nft_bin: &nft::Nft,
    st: &state::HandlerState,
) -> Vec<teardown::TeardownError> {
    match &st.pending_removal {
        Some(pending) => teardown::teardown_part(
            nl,
            nft_bin,
            &pending.part,
            &st.observed,
            &pending.sysctls_before,
        ),
        None => Vec::new(),
    }
}

/// Removes a sandbox directory (root's: the launcher reads its record through a read-only
/// mount and cannot write there, so removing it follows nothing another user made).
pub fn remove_sandbox_dir(dir: Option<&Path>) -> Result<(), HandlerError> {
    match dir.map(std::fs::remove_dir_all) {
        Some(Err(source)) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(HandlerError::RemoveDir {
                path: dir.map(Path::to_path_buf).unwrap_or_default(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Runs `body` on a netlink socket inside the pod's namespace; `None` when the namespace is
/// gone (the kernel took everything in it along).
fn in_pod_namespace<T: Send>(
    target: &NetnsTarget,
    body: impl FnOnce(&mut Netlink) -> Result<T, HandlerError> + Send,
) -> Result<Option<T>, HandlerError> {
    match Netns::open(target) {
        Err(err) if err.is_gone() => {
            tracing::info!(netns = %target, "network namespace already gone");
            Ok(None)
        }
        Err(err) => Err(err.into()),
        // On this thread: teardown is on the pod-deletion path, as setup is on its creation's.
        Ok(ns) => ns.run_here(|| body(&mut open_netlink(target)?))?.map(Some),
    }
}

fn is_pod_interface(link: &netbind_plan::plan::LinkPlan) -> bool {
    matches!(link.kind, netbind_plan::plan::LinkKind::PodInterface { .. })
}

/// Hands the pod interfaces back (`teardown::hand_back`), if the plan took any over, and
/// records the state without them, so that the helper, or a retry after it failed, does not
/// take them over again.
fn hand_back_now(args: &TeardownArgs, mut st: state::HandlerState) -> Result<(), HandlerError> {
    if !st.plan.links.iter().any(is_pod_interface) {
        return Ok(());
    }
    in_pod_namespace(&args.target, |nl| {
        // What it renames out of the way keeps netbind's link group, which the helper
        // deletes whole.
        teardown::hand_back(nl, &st.plan, &st.observed)
            .map(drop)
            .map_err(|err| HandlerError::Teardown(vec![err.into()]))
    })?;
    st.plan.links.retain(|link| !is_pod_interface(link));
    state::save(&args.state_dir, &st)?;
    Ok(())
}

/// The environment variable that turns netbind-handler or netbind-cni into a detached
/// teardown helper (its value: the job, as JSON; the pod's lock on fd 3).
pub const HELPER_ENV: &str = "NETBIND_TEARDOWN_HELPER";

/// What a detached teardown helper is to do.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HelperJob {
    netns: Option<PathBuf>,
    pid: Option<u32>,
    handoff_dir: PathBuf,
    state_dir: PathBuf,
    nft_bin: PathBuf,
    remove_dir: Option<PathBuf>,
    #[serde(default)]
    work: HelperWork,
}

/// Which removal a helper finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum HelperWork {
    /// The whole pod's (`teardown_detached`), with the pod's lock inherited on fd 3.
    #[default]
    Teardown,
    /// What a re-run left pending (`Removal::Detached`): the helper takes the pod's lock
    /// itself once the run is over, if the pod still has one.
    PendingRemoval,
}

/// Run first by netbind-handler and netbind-cni: `None` unless this process was started as a
/// detached teardown helper, else its exit status (an error is written beside the state).
pub fn run_detached_helper() -> Option<std::process::ExitCode> {
    let done = detached_helper()?;
    Some(match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    })
}

fn detached_helper() -> Option<Result<(), HandlerError>> {
    let text = std::env::var_os(HELPER_ENV)?;
    let job: HelperJob = match serde_json::from_str(&text.to_string_lossy()) {
        Ok(job) => job,
        Err(err) => {
            return Some(Err(HandlerError::Helper {
                helper: HELPER_ENV.into(),
                source: std::io::Error::other(err),
            }));
        }
    };
    // SAFETY: for a whole teardown, fd 3 was put there by `teardown_detached` (dup2 before
    // exec) and nothing else in this process uses it; owning it keeps the pod's lock until
    // the helper is done.
    let _lock = (job.work == HelperWork::Teardown)
        .then(|| unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(3) });
    let args = TeardownArgs {
        target: match (job.netns, job.pid) {
            (Some(path), _) => NetnsTarget::Path(path),
            (None, Some(pid)) => NetnsTarget::Pid(pid),
            (None, None) => NetnsTarget::Path(PathBuf::new()),
        },
        handoff_dir: job.handoff_dir,
        state_dir: job.state_dir,
        nft_bin: job.nft_bin,
    };
    let done = match job.work {
        HelperWork::Teardown => {
            teardown_locked(&args, NamespaceWork::AfterGrace(NETNS_DELETION_GRACE))
                .and_then(|()| remove_sandbox_dir(job.remove_dir.as_deref()))
        }
        HelperWork::PendingRemoval => finish_pending_removal(&args),
    };
    if let Err(err) = &done {
        // Nobody reads the helper's stderr: leave the reason beside the state it kept, for the
        // retry (the runtime's next DEL) and for an operator.
        let _ = std::fs::write(
            args.state_dir.join(state::HELPER_ERROR_FILE),
            format!("{err}\n"),
        );
    }
    Some(done)
}

/// A teardown that does not make its caller wait on the kernel. Each link deletion holds the
/// node's RTNL through an RCU grace period, and the runtime's DEL (like `netbind down`) is on
/// the pod-deletion path: the removal is handed to a detached `helper` (netbind-handler or
/// netbind-cni itself, run with [`HELPER_ENV`]), which inherits the pod's lock. So a setup of
/// the same pod in the meantime waits for it under that lock and starts from a clean pod,
/// and the caller returns as soon as the helper runs. The helper waits
/// [`NETNS_DELETION_GRACE`] for the runtime to delete the namespace, removes whatever is
/// still there, then the record, the state and `remove_dir` (a sandbox directory) if given. A pod interface phase 1 took over (the bridge
/// binding) is handed back before returning: the pod network's DEL, next in the chain,
/// deletes that interface by name. A pod with nothing recorded, or whose interface could not
/// be handed back, is torn down right here.
pub fn teardown_detached(
    args: &TeardownArgs,
    helper: &Path,
    remove_dir: Option<&Path>,
) -> Result<(), HandlerError> {
    if std::fs::symlink_metadata(&args.state_dir).is_err() {
        teardown(args)?;
        return remove_sandbox_dir(remove_dir);
    }
    // Under the lock: an earlier helper still at work holds it, and may leave nothing to do.
    let lock = files::lock(&args.state_dir).map_err(|err| HandlerError::State(err.into()))?;
    // A pod interface phase 1 took over (the bridge binding) goes back now, fast (a rename,
    // its addresses and routes): the pod network's own DEL, which runs after this one,
    // deletes the interface by its name. The rest, the slow deletions, is the helper's. With
    // no state, or if handing back fails, all of it is done here, as a synchronous teardown
    // would.
    let handed_over = match state::load(&args.state_dir)? {
        Some(st) => match hand_back_now(args, st) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "handing the pod interface back failed; removing all of it now");
                false
            }
        },
        None => false,
    };
    if !handed_over {
        teardown_locked(args, NamespaceWork::Now)?;
        drop(lock);
        return remove_sandbox_dir(remove_dir);
    }
    let job = HelperJob {
        remove_dir: remove_dir.map(Path::to_path_buf),
        ..HelperJob::new(&args.target, args, HelperWork::Teardown)
    };
    spawn_helper(helper, &job, Some(&lock))?;
    // The helper holds the lock now; closing our descriptor does not release it.
    drop(lock);
    Ok(())
}

impl HelperJob {
    fn new(target: &NetnsTarget, dirs: &TeardownArgs, work: HelperWork) -> HelperJob {
        HelperJob {
            netns: match target {
                NetnsTarget::Path(path) => Some(path.clone()),
                NetnsTarget::Pid(_) => None,
            },
            pid: match target {
                NetnsTarget::Pid(pid) => Some(*pid),
                NetnsTarget::Path(_) => None,
            },
            handoff_dir: dirs.handoff_dir.clone(),
            state_dir: dirs.state_dir.clone(),
            nft_bin: dirs.nft_bin.clone(),
            remove_dir: None,
            work,
        }
    }
}

/// Starts the helper for what `args`'s run left pending (`Removal::Detached`); the caller
/// holds the pod's lock, which the helper takes after it.
pub(crate) fn start_pending_removal_helper(
    args: &SetupArgs,
    helper: &Path,
) -> Result<(), HandlerError> {
    let dirs = TeardownArgs {
        target: args.target.clone(),
        handoff_dir: args.handoff_dir.clone(),
        state_dir: args.state_dir.clone(),
        nft_bin: args.nft_bin.clone(),
    };
    spawn_helper(
        helper,
        &HelperJob::new(&args.target, &dirs, HelperWork::PendingRemoval),
        None,
    )
}

/// What a pending-removal helper does: give the runtime the grace to delete the namespace
/// (which reclaims it all), then, under the pod's lock if the pod still has one, remove what
/// is still recorded as pending (a run in the meantime may have taken it over) and record it
/// done.
fn finish_pending_removal(args: &TeardownArgs) -> Result<(), HandlerError> {
    if let NetnsTarget::Path(path) = &args.target {
        let deadline = std::time::Instant::now() + NETNS_DELETION_GRACE;
        while path.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let Some(_lock) =
        files::lock_existing(&args.state_dir).map_err(|err| HandlerError::State(err.into()))?
    else {
        // The pod's teardown came first and took everything.
        return Ok(());
    };
    let Some(mut st) = state::load(&args.state_dir)? else {
        return Ok(());
    };
    if st.pending_removal.is_none() {
        return Ok(());
    }
    let errors = in_pod_namespace(&args.target, |nl| {
        Ok(remove_pending(nl, &nft_for(&args.nft_bin), &st))
    })?
    .unwrap_or_default();
    if !errors.is_empty() {
        return Err(HandlerError::Teardown(errors));
    }
    st.pending_removal = None;
    state::save(&args.state_dir, &st)?;
    Ok(())
}

/// Starts `helper` on `job`, detached from the caller's session and output; `lock`, if given,
/// goes to it on fd 3.
fn spawn_helper(
    helper: &Path,
    job: &HelperJob,
    lock: Option<&files::PodLock>,
) -> Result<(), HandlerError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(helper);
    cmd.env(
        HELPER_ENV,
        serde_json::to_string(job).map_err(|err| HandlerError::Helper {
            helper: helper.to_path_buf(),
            source: std::io::Error::other(err),
        })?,
    );
    // Nothing of the caller's: a runtime reads its plugin's stdout until EOF.
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let fd = lock.map(AsRawFd::as_raw_fd);
    // SAFETY: between fork and exec only async-signal-safe calls: setsid detaches the helper
    // from the caller's session, dup2 puts the lock's descriptor (same open file description,
    // so the same flock) on fd 3 without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || fd.is_some_and(|fd| libc::dup2(fd, 3) < 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| HandlerError::Helper {
        helper: helper.to_path_buf(),
        source,
    })?;
    Ok(())
}
