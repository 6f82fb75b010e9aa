//! ADD, DEL, CHECK, STATUS and GC on the handler's library: the same observe, plan, apply,
//! reconcile and hand-off as `netbind-handler setup`, with the VMI from the pod's annotation
//! and the pod interface checked against the previous plugin's result.

use std::path::{Path, PathBuf};

use netbind_handler::netns::NetnsTarget;
use netbind_handler::verify::{VerifyArgs, verify};
use netbind_handler::{HandlerError, Networks, SetupArgs, TeardownArgs, VmiSource};
use netbind_model::handoff::BindingKind;
use netbind_model::pod_record::PodRecord;
use netbind_plan::Owner;
use netbind_plan::plan::LinkKind;
use serde_json::Value;

use crate::protocol::{
    CniError, Command, Env, ErrorCode, NetConf, POD_ANNOTATIONS_CAPABILITY, ResultInterface,
    compose_result, version_result,
};

/// Where one sandbox's files live: `RUN_DIR/CONTAINER_ID/` holds `handoff/` (the record the
/// launcher reads, mounted into it read-only), `state/` (root's alone) and `networks/` (root's
/// alone: one empty file per network configuration, by its `name`, that set the sandbox up).
#[derive(Debug, Clone)]
pub struct SandboxDirs {
    pub root: PathBuf,
}

impl SandboxDirs {
    pub fn new(run_dir: &Path, container_id: &str) -> SandboxDirs {
        SandboxDirs {
            root: run_dir.join(container_id),
        }
    }
    pub fn handoff(&self) -> PathBuf {
        self.root.join("handoff")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn networks(&self) -> PathBuf {
        self.root.join("networks")
    }

    /// Notes that network configuration `name` uses this sandbox, before phase 1 changes
    /// anything: GC of one configuration then collects only the sandboxes it set up, and
    /// leaves one another configuration (a Multus network) still uses.
    fn mark(&self, name: &str) -> Result<(), String> {
        netbind_handler::files::write_atomic(&self.networks(), 0o700, name, b"", 0o600)
            .map_err(|error| error.to_string())
    }

    /// Configuration `name` no longer uses this sandbox.
    fn unmark(&self, name: &str) -> Result<(), String> {
        netbind_handler::files::remove(&self.networks(), name).map_err(|error| error.to_string())
    }

    fn marked(&self, name: &str) -> Result<bool, String> {
        let mark = self.networks().join(name);
        match std::fs::symlink_metadata(&mark) {
            Ok(meta) => Ok(meta.is_file()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(format!("stat {}: {error}", mark.display())),
        }
    }

    /// Whether a configuration other than `name` still uses the sandbox.
    fn marked_by_others(&self, name: &str) -> Result<bool, String> {
        let dir = self.networks();
        let read = |error: std::io::Error| format!("read {}: {error}", dir.display());
        for entry in std::fs::read_dir(&dir).map_err(read)? {
            let other = entry.map_err(read)?.file_name();
            // A temporary file of an interrupted mark starts with a dot.
            if other != name && !other.as_encoded_bytes().starts_with(b".") {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Runs one call. `Ok(Some(json))` is printed as the result; `Ok(None)` prints nothing.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        // VERSION reads only `cniVersion` (and answers even for one it does not speak).
        let asked = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(String::from))
            .unwrap_or_else(|| crate::protocol::SUPPORTED_VERSIONS[0].into());
        return Ok(Some(version_result(&asked)));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command {
        Command::Add => add(env, &conf).map(Some),
        Command::Del => del(env, &conf).map(|()| None),
        Command::Check => check(env, &conf).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Gc => gc(&conf).map(|()| None),
        Command::Version => Ok(None),
    }
}

/// The values ADD and CHECK cannot run without (checked present by [`Env::read`]).
fn required(env: &Env) -> (&str, &Path, &str) {
    (
        env.container_id.as_deref().unwrap_or_default(),
        env.netns.as_deref().unwrap_or(Path::new("")),
        env.ifname.as_deref().unwrap_or_default(),
    )
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let (id, netns, ifname) = required(env);
    let prev = conf.require_prev_result()?;
    let Some((origin, vmi)) = conf.vmi() else {
        // Not a VM's pod: nothing for phase 1; the chain's result passes through.
        if !conf.annotations_passed && conf.settings.binding_mode.is_none() {
            // Then no pod ever is: a VM would start with no network and nothing saying why.
            // Runtimes keep a plugin's stderr in their log.
            tracing::warn!(
                "ADD of {id}: the runtime passed no pod annotations, so no pod can be a VM's: \
                 declare the capability in this plugin's conflist entry \
                 (\"capabilities\": {{\"{POD_ANNOTATIONS_CAPABILITY}\": true}})"
            );
        }
        return Ok(compose_result(conf, &[]));
    };
    let fail = |code, msg: String| CniError::new(code, msg).in_version(&conf.cni_version);
    let dirs = SandboxDirs::new(&conf.settings.run_dir, id);
    // Refused before any change, and with nothing removed: the networks already set up stay.
    if let Some(msg) = second_plugin_network(conf, &dirs) {
        return Err(fail(ErrorCode::InvalidConfig, msg));
    }
    let network_name = conf.network_name()?;
    let pod_addresses = prev
        .addresses_of(ifname, &netns.to_string_lossy())
        .map_err(|error| fail(ErrorCode::InvalidConfig, error))?;
    let target = NetnsTarget::Path(netns.to_path_buf());
    // The previous plugin's addresses must be on the pod interface: the plan is made from the
    // kernel's view, and a disagreement means this call would set up something else.
    let links_before = netbind_handler::observe(&target).map_err(|error| {
        fail(
            ErrorCode::UnknownContainer,
            format!("ADD: observe {}: {error}", netns.display()),
        )
    })?;
    let on_pod = links_before.get(ifname);
    for address in &pod_addresses {
        let present = on_pod.is_some_and(|i| i.addresses.iter().any(|a| a.to_string() == *address));
        if !present {
            return Err(fail(
                ErrorCode::InvalidConfig,
                format!(
                    "prevResult.ips: {address} is not on {ifname} in {}",
                    netns.display()
                ),
            ));
        }
    }
    let networks = match &conf.logic_network_name {
        Some(network) => Networks::With(network.clone()),
        None => Networks::All,
    };
    let args = setup_args(conf, target.clone(), (origin, vmi), &dirs, networks);
    let before = Before {
        first: std::fs::symlink_metadata(&dirs.root).is_err(),
        marked: dirs.marked(network_name).unwrap_or(false),
    };
    if let Err(error) = dirs.mark(network_name) {
        if before.first {
            let _ = netbind_handler::remove_sandbox_dir(Some(&dirs.root));
        }
        return Err(fail(
            ErrorCode::Io,
            format!("ADD: note network {network_name:?}: {error}"),
        ));
    }
    let report = match netbind_handler::setup(&args) {
        Ok(report) => report,
        Err(error) => {
            let cleanup = undo_add(&target, &dirs, conf, network_name, before).err();
            let code = match error {
                HandlerError::Vmi { .. } => ErrorCode::InvalidConfig,
                HandlerError::Netns(_) => ErrorCode::UnknownContainer,
                _ => ErrorCode::Setup,
            };
            let mut err = fail(code, format!("ADD in {}: {error}", netns.display()));
            if let Some(undo) = cleanup {
                err = err.with_details(format!("and cleaning up: {}", undo.msg));
            }
            return Err(err);
        }
    };
    // KubeVirt's plugin form: the hook sidecar cannot read the hand-off directory, so leave it
    // the pod record in the namespace itself (see `netbind_model::pod_record`).
    if conf.is_binding_plugin()
        && let Err(error) = record_for_sidecar(&target, &dirs, conf, ifname, on_pod)
    {
        let cleanup = undo_add(&target, &dirs, conf, network_name, before).err();
        let mut err = fail(
            ErrorCode::Setup,
            format!("ADD in {}: {error}", netns.display()),
        );
        if let Some(undo) = cleanup {
            err = err.with_details(format!("and cleaning up: {}", undo.msg));
        }
        return Err(err);
    }
    let made = made_interfaces(&target, &dirs, netns, conf.logic_network_name.as_deref()).map_err(
        |error| {
            fail(
                ErrorCode::Setup,
                format!(
                    "ADD: read back the links made in {}: {error}",
                    netns.display()
                ),
            )
        },
    )?;
    let mut result = compose_result(conf, &made);
    if !report.warnings.is_empty()
        && let Value::Object(map) = &mut result
    {
        // Not part of the CNI result format: runtimes ignore it, logs keep it.
        map.insert("netbindWarnings".into(), report.warnings.into());
    }
    Ok(result)
}

/// The sandbox as an ADD found it.
#[derive(Debug, Clone, Copy)]
struct Before {
    /// No earlier call had made it.
    first: bool,
    /// This configuration had marked it already.
    marked: bool,
}

/// After a failed ADD. Phase 1 has rolled its own changes back, to the sandbox as it was
/// before this call. A sandbox this call made goes whole, so a failed ADD leaves nothing
/// (containerd still sends DEL, which finds nothing). A sandbox earlier calls set up (the
/// pod's other networks; a network hot-plugged into a running pod) stays as the rollback left
/// it, with only this call's mark taken back: removing it would take a running VM's other
/// networks with a call that was not about them. Unless nothing is left to keep: when
/// phase 1 could not go back to the earlier run and undid the whole pod (its state is gone),
/// the files go too. `name` is the configuration's (checked) name.
fn undo_add(
    target: &NetnsTarget,
    dirs: &SandboxDirs,
    conf: &NetConf,
    name: &str,
    before: Before,
) -> Result<(), CniError> {
    let kept = matches!(netbind_handler::state::load(&dirs.state()), Ok(Some(_)));
    if before.first || !kept {
        return remove_sandbox(target, dirs, conf);
    }
    if before.marked {
        return Ok(());
    }
    dirs.unmark(name).map_err(|error| {
        CniError::new(ErrorCode::Setup, format!("ADD: drop network mark: {error}"))
            .in_version(&conf.cni_version)
    })
}

/// In KubeVirt's binding-plugin form the VMI is made from `bindingMode` and
/// `logicNetworkName` alone, with that network as the pod network: it cannot say where a
/// second network of the same pod attaches, so a call for another network than the one
/// already set up would plan it in the first one's place and take the first one's links. The
/// reason such a call is refused, if it is one.
fn second_plugin_network(conf: &NetConf, dirs: &SandboxDirs) -> Option<String> {
    let network = conf.logic_network_name.as_ref()?;
    if !conf.is_binding_plugin() {
        return None;
    }
    // No state (or unreadable state, which phase 1 itself reports) is a first call.
    let state = netbind_handler::state::load(&dirs.state()).ok()??;
    // One hand-off entry per network (admission refuses a network named twice).
    let served: Vec<&str> = state
        .plan
        .handoff
        .interfaces
        .iter()
        .map(|iface| iface.network.as_str())
        .filter(|served| served != network)
        .collect();
    (!served.is_empty()).then(|| {
        format!(
            "ADD of network {network:?} in the binding-plugin form: this pod's netbind binding \
             already serves {served:?}; the plugin form serves one network per pod (its VMI is \
             made from bindingMode and logicNetworkName, with that network as the pod \
             network). Give the pod the VMI in the netbind.io/vmi annotation for more networks"
        )
    })
}

/// Phase 1 for this sandbox as the entry configures it: the VMI (`origin`, text) in `target`,
/// the sandbox's directories, the `networks` to plan.
fn setup_args(
    conf: &NetConf,
    target: NetnsTarget,
    (origin, vmi): (String, String),
    dirs: &SandboxDirs,
    networks: Networks,
) -> SetupArgs {
    SetupArgs {
        networks,
        nft_bin: conf.settings.nft_bin.clone(),
        cluster: conf.settings.cluster.clone(),
        ra_responder: Some(ra_responder(conf)),
        ..SetupArgs::new(
            target,
            VmiSource::Inline { origin, text: vmi },
            Owner {
                uid: conf.settings.vm_user.0,
                gid: conf.settings.vm_user.1,
            },
            dirs.handoff(),
            dirs.state(),
        )
    }
}

/// Writes the pod record as the alias of the network's tap.
fn record_for_sidecar(
    target: &NetnsTarget,
    dirs: &SandboxDirs,
    conf: &NetConf,
    ifname: &str,
    pod_before: Option<&netbind_model::pod::PodInterface>,
) -> Result<(), String> {
    let (Some(mode), Some(network)) = (conf.settings.binding_mode, &conf.logic_network_name) else {
        return Ok(());
    };
    let state = netbind_handler::state::load(&dirs.state())
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("no phase-1 state in {}", dirs.state().display()))?;
    let tap = state
        .plan
        .links
        .iter()
        .find(|link| matches!(link.kind, LinkKind::Tap { .. }))
        .ok_or("the plan has no tap to carry the pod record")?;
    let (mode, routes) = match mode {
        crate::protocol::BindingMode::Masquerade => (BindingKind::Masquerade, Vec::new()),
        crate::protocol::BindingMode::Bridge => (
            BindingKind::Bridge,
            pod_before.map(|pod| pod.routes.clone()).unwrap_or_default(),
        ),
    };
    let record = PodRecord {
        network: network.clone(),
        pod_interface: netbind_model::IfName::new(ifname).map_err(|error| error.to_string())?,
        mode,
        routes,
    }
    .encode()
    .map_err(|error| error.to_string())?;
    netbind_handler::set_link_alias(target, tap.name.as_str(), &record)
        .map_err(|error| error.to_string())
}

/// The bridges and taps of the applied plan, as the kernel reports them now.
fn made_interfaces(
    target: &NetnsTarget,
    dirs: &SandboxDirs,
    netns: &Path,
    network: Option<&str>,
) -> Result<Vec<ResultInterface>, HandlerError> {
    let Some(state) = netbind_handler::state::load(&dirs.state())? else {
        return Err(HandlerError::NotSetUp(dirs.state()));
    };
    let links = netbind_handler::links(target)?;
    Ok(state
        .plan
        .links
        .iter()
        .filter(|l| matches!(l.kind, LinkKind::Bridge | LinkKind::Tap { .. }))
        // A call for one network reports that network's links, not those of earlier calls.
        .filter(|l| network.is_none_or(|only| l.network.as_str() == only))
        .map(|l| ResultInterface {
            name: l.name.to_string(),
            mac: links
                .iter()
                .find(|k| k.name == l.name.as_str())
                .and_then(|k| k.mac)
                .map(|m| m.to_string())
                .unwrap_or_default(),
            sandbox: netns.to_string_lossy().into_owned(),
        })
        .collect())
}

fn ra_responder(conf: &NetConf) -> PathBuf {
    conf.settings.ra_responder.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("netbind-ra")))
            .unwrap_or_else(|| PathBuf::from("netbind-ra"))
    })
}

/// DEL: idempotent. containerd sends it on StopPodSandbox (with the namespace) and again on
/// RemovePodSandbox (namespace empty, no previous result); a sandbox never set up, or already
/// removed, is a success.
fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let id = env.container_id.as_deref().unwrap_or_default();
    let dirs = SandboxDirs::new(&conf.settings.run_dir, id);
    // With no namespace the kernel already removed everything that lived in it; teardown
    // treats a namespace it cannot open as gone.
    let target = NetnsTarget::Path(env.netns.clone().unwrap_or_default());
    // The runtime deletes the namespace right after DEL, and the pod is on its deletion path:
    // hand the removal to a detached helper (this binary again) instead of waiting on the
    // kernel's grace periods here. Where it cannot start, the removal runs here.
    if std::fs::symlink_metadata(&dirs.root).is_err() {
        return Ok(());
    }
    if let Some(done) = del_one_network(env, conf, &dirs) {
        return done;
    }
    let args = TeardownArgs {
        target: target.clone(),
        handoff_dir: dirs.handoff(),
        state_dir: dirs.state(),
        nft_bin: conf.settings.nft_bin.clone(),
    };
    match std::env::current_exe() {
        Ok(me) => netbind_handler::teardown_detached(&args, &me, Some(&dirs.root)).map_err(|err| {
            CniError::new(
                ErrorCode::Teardown,
                format!("DEL of {}: {err}", dirs.root.display()),
            )
            .in_version(&conf.cni_version)
        }),
        Err(_) => remove_sandbox(&target, &dirs, conf),
    }
}

/// DEL of one network while the pod's other networks stay (Multus calls DEL per network; a
/// network removed from a running pod is a hot-unplug): phase 1 runs again without it, which
/// takes away only its hand-off entry and pod interface at once and leaves deleting its
/// links and rules to a detached helper. `None` when the whole sandbox goes:
/// no network named, no VMI to plan from, no namespace any more, or no other network set up.
fn del_one_network(env: &Env, conf: &NetConf, dirs: &SandboxDirs) -> Option<Result<(), CniError>> {
    let network = conf.logic_network_name.as_ref()?;
    let netns = env
        .netns
        .as_ref()
        .filter(|path| !path.as_os_str().is_empty())?;
    let (origin, vmi) = conf.vmi()?;
    let state = netbind_handler::state::load(&dirs.state()).ok()??;
    // A network this sandbox never set up (its ADD was refused or rolled back): nothing of
    // it to take away, and a re-run without it could only disturb the others.
    if !state
        .plan
        .handoff
        .interfaces
        .iter()
        .any(|iface| iface.network == *network)
    {
        return Some(Ok(()));
    }
    let others = state
        .plan
        .handoff
        .interfaces
        .iter()
        .any(|iface| iface.network != *network);
    if !others {
        return None;
    }
    let target = NetnsTarget::Path(netns.clone());
    let mut args = setup_args(
        conf,
        target,
        (origin, vmi),
        dirs,
        Networks::Without(network.clone()),
    );
    // The network's pod interface goes back before this returns (the network's own plugin,
    // next in the chain, deletes it by name); its links and tables are deleted by a detached
    // helper (this binary again), not on the pod-deletion path. Where this binary cannot be
    // found, they go before returning.
    if let Ok(helper) = std::env::current_exe() {
        args.removal = netbind_handler::Removal::Detached { helper };
    }
    let done = netbind_handler::setup(&args).map(drop).map_err(|err| {
        CniError::new(
            ErrorCode::Teardown,
            format!("DEL of network {network:?} in {}: {err}", netns.display()),
        )
        .in_version(&conf.cni_version)
    });
    // This configuration no longer uses the sandbox (a name GC could not have marked has
    // nothing to drop).
    if done.is_ok()
        && let Ok(name) = conf.network_name()
        && let Err(error) = dirs.unmark(name)
    {
        return Some(Err(CniError::new(
            ErrorCode::Teardown,
            format!("DEL of network {network:?}: {error}"),
        )
        .in_version(&conf.cni_version)));
    }
    Some(done)
}

fn remove_sandbox(
    target: &NetnsTarget,
    dirs: &SandboxDirs,
    conf: &NetConf,
) -> Result<(), CniError> {
    let fail = |msg: String| CniError::new(ErrorCode::Teardown, msg).in_version(&conf.cni_version);
    if std::fs::symlink_metadata(&dirs.root).is_err() {
        return Ok(());
    }
    netbind_handler::teardown(&TeardownArgs {
        target: target.clone(),
        handoff_dir: dirs.handoff(),
        state_dir: dirs.state(),
        nft_bin: conf.settings.nft_bin.clone(),
    })
    .map_err(|err| fail(format!("DEL of {}: {err}", dirs.root.display())))?;
    // The directory is root's (the launcher reads the record through a read-only mount of
    // `handoff/` and cannot write here), so removing it follows nothing another user made.
    match std::fs::remove_dir_all(&dirs.root) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(fail(format!("DEL: remove {}: {err}", dirs.root.display()))),
    }
}

/// CHECK: the namespace must still be what phase 1 made.
fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let (id, netns, _) = required(env);
    conf.require_prev_result()?;
    if conf.vmi().is_none() {
        return Ok(());
    }
    let fail = |code, msg: String| CniError::new(code, msg).in_version(&conf.cni_version);
    let dirs = SandboxDirs::new(&conf.settings.run_dir, id);
    let drift = verify(&VerifyArgs {
        target: NetnsTarget::Path(netns.to_path_buf()),
        state_dir: dirs.state(),
        nft_bin: conf.settings.nft_bin.clone(),
    })
    .map_err(|e| {
        fail(
            ErrorCode::UnknownContainer,
            format!("CHECK in {}: {e}", netns.display()),
        )
    })?;
    if drift.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = drift.iter().map(ToString::to_string).collect();
    Err(fail(
        ErrorCode::Drift,
        format!(
            "CHECK in {}: {} difference(s) from the plan: {}",
            netns.display(),
            list.len(),
            list.join("; ")
        ),
    )
    .with_details(serde_json::to_string(&drift).unwrap_or_default()))
}

/// GC (1.1.0): removes the sandboxes this network configuration set up for attachments the
/// runtime no longer has (`cni.dev/valid-attachments`): a DEL that never came (a runtime
/// restarted, a DEL that failed for good) leaves the sandbox's state and hand-off record, and
/// the RA responders it started. The namespace is taken to be gone, as the specification
/// allows: what lived in it went with it.
///
/// A sandbox is this configuration's only if its ADD marked it (`networks/NAME`); one that
/// another configuration also marked loses only this configuration's mark, since that other
/// configuration may still use it (the list a GC gets is of its own network's attachments).
/// A sandbox with any attachment in the list is kept whole. Errors do not stop the
/// collection: every stale sandbox is tried, and every failure reported.
fn gc(conf: &NetConf) -> Result<(), CniError> {
    let name = conf.network_name()?;
    let valid = conf.require_valid_attachments()?;
    let run_dir = &conf.settings.run_dir;
    let fail = |msg: String| CniError::new(ErrorCode::Collect, msg).in_version(&conf.cni_version);
    let entries = match std::fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(fail(format!("GC: read {}: {error}", run_dir.display()))),
    };
    let mut errors = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                errors.push(format!("read {}: {error}", run_dir.display()));
                continue;
            }
        };
        // Only what an ADD made: a directory (never a link) named as a container id.
        let Some(id) = entry.file_name().to_str().map(String::from) else {
            continue;
        };
        if !crate::protocol::safe_id(&id)
            || !entry.file_type().is_ok_and(|kind| kind.is_dir())
            || valid.iter().any(|attachment| attachment.container_id == id)
        {
            continue;
        }
        let dirs = SandboxDirs::new(run_dir, &id);
        if let Err(error) = collect(conf, &dirs, name) {
            errors.push(format!("sandbox {id}: {error}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(fail(format!(
            "GC in {}: {} stale sandbox(es) not removed: {}",
            run_dir.display(),
            errors.len(),
            errors.join("; ")
        )))
    }
}

/// One sandbox no attachment in GC's list uses: this configuration's mark goes, and with the
/// last mark the sandbox (its teardown first, then its directory).
fn collect(conf: &NetConf, dirs: &SandboxDirs, name: &str) -> Result<(), String> {
    if !dirs.marked(name)? {
        return Ok(());
    }
    if dirs.marked_by_others(name)? {
        return dirs.unmark(name);
    }
    // An empty path is a namespace that cannot be opened: teardown takes it as gone, stops the
    // responders, and removes the state under the pod's lock (waiting for a detached DEL
    // still finishing).
    remove_sandbox(&NetnsTarget::Path(PathBuf::new()), dirs, conf).map_err(|error| error.msg)
}

/// STATUS (1.1.0): ready unless the `nft` binary was chosen for rulesets (`nftBin` as a path,
/// or `NETBIND_NFT=exec`) and is not there; over netlink, the default, nothing is needed.
fn status(conf: &NetConf) -> Result<(), CniError> {
    match netbind_handler::nft::Nft::select(&conf.settings.nft_bin) {
        Some(_) => Ok(()),
        None => Err(CniError::new(
            ErrorCode::NotAvailable,
            format!("STATUS: {} not found", conf.settings.nft_bin.display()),
        )
        .in_version(&conf.cni_version)),
    }
}
