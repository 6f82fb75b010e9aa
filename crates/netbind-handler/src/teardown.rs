//! Takes away what a plan made in the pod netns and puts the pod interfaces back as the
//! pre-change observation saw them: every step is tried, and all errors are returned.

use netbind_model::pod::ObservedPod;
use netbind_plan::plan::{LinkKind, LinkPlan, PodNetPlan};

use crate::apply::{ApplyError, link_err, nft_what};
use crate::netlink::{Link, LinkChange, NETBIND_GROUP, Netlink, Route};
use crate::nft;
use crate::sysctl::{self, SysctlError};
use netbind_model::pod::LinkType;

/// One thing a teardown could not undo; a teardown tries every step and returns them all.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Link(#[from] ApplyError),
}

/// The errors of one teardown, as one message.
pub fn describe(errors: &[TeardownError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Removes what `plan` made and puts the pod interfaces back as `observed` saw them. Tries
/// every step and returns all errors.
pub fn teardown(
    nl: &mut Netlink,
    nft_bin: &nft::Nft,
    plan: &PodNetPlan,
    observed: &ObservedPod,
    sysctls_before: &[(String, Option<String>)],
) -> Vec<TeardownError> {
    remove(
        nl,
        nft_bin,
        plan,
        observed,
        sysctls_before,
        Scope::Everything,
    )
}

/// Removes only `part` of what a pod has (what a re-run's new plan no longer has, e.g. a
/// hot-unplugged interface): its links one by one, never netbind's whole link group, so the
/// links that stay are untouched.
pub fn teardown_part(
    nl: &mut Netlink,
    nft_bin: &nft::Nft,
    part: &PodNetPlan,
    observed: &ObservedPod,
    sysctls_before: &[(String, Option<String>)],
) -> Vec<TeardownError> {
    remove(nl, nft_bin, part, observed, sysctls_before, Scope::Part)
}

/// Whether a teardown takes away everything netbind made in the namespace or a part of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Everything,
    Part,
}

fn remove(
    nl: &mut Netlink,
    nft_bin: &nft::Nft,
    plan: &PodNetPlan,
    observed: &ObservedPod,
    sysctls_before: &[(String, Option<String>)],
    scope: Scope,
) -> Vec<TeardownError> {
    let mut errors = Vec::new();
    // Deleting tables and deleting links each wait for an RCU grace period in the kernel; run
    // the nft transaction concurrently with the link work so the waits overlap.
    let pending = if plan.nftables.ruleset.is_empty() {
        None
    } else {
        let what = format!("delete {}", nft_what(plan));
        match nft_bin.start(&plan.nftables.ruleset, nft::Op::Delete, &what) {
            Ok(child) => Some(child),
            Err(err) => {
                errors.push(err.into());
                None
            }
        }
    };
    for (path, old) in sysctls_before {
        let Some(old) = old else { continue };
        match sysctl::write(path, old) {
            Ok(()) => {}
            // A per-link sysctl of a link that is already gone.
            Err(SysctlError::Read { ref source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => errors.push(err.into()),
        }
    }
    // Everything netbind created goes in one batch; the per-link pass below then only finds
    // what a crash left unmarked, and restores the pod interfaces.
    if scope == Scope::Everything
        && let Err(err) = nl.del_group(NETBIND_GROUP)
    {
        errors.push(link_err("delete link group", "netbind")(err).into());
    }
    for link in plan.links.iter().rev() {
        if let Err(err) = teardown_link(nl, link, observed) {
            errors.push(err.into());
        }
    }
    if let Some(Err(err)) = pending.map(nft::Pending::wait) {
        errors.push(err.into());
    }
    errors
}

/// Gives the pod interfaces a plan took over (the bridge binding's) back as `observed` saw
/// them, and nothing else: the runtime's DEL of the pod network, which runs right after
/// netbind's, deletes its interface by that name. A placeholder netbind made under the
/// original name (the link holding the pod IPs) is renamed out of the way, down, instead of
/// deleted: a deletion waits for RCU grace periods, and netbind's link group still marks it
/// for the detached removal (or the namespace's deletion) that takes the rest. Returns what
/// it renamed: (the name in the plan, the name now).
pub fn hand_back(
    nl: &mut Netlink,
    plan: &PodNetPlan,
    observed: &ObservedPod,
) -> Result<Vec<(String, String)>, ApplyError> {
    let mut renamed = Vec::new();
    for link in &plan.links {
        let LinkKind::PodInterface { original_name, .. } = &link.kind else {
            continue;
        };
        let links = nl.links().map_err(link_err("dump", "links"))?;
        if let Some(placeholder) = links.iter().find(|k| {
            k.name == original_name.as_str()
                && k.kind.as_ref().is_some_and(LinkType::netbind_creates)
        }) {
            let idx = placeholder.index;
            set_up(nl, idx, false, original_name.as_str())?;
            // Unique in the namespace: "nbgone" and the ifindex in hex (at most 14).
            let out_of_the_way = format!("nbgone{idx:x}");
            nl.change_link(
                idx,
                &LinkChange {
                    name: Some(out_of_the_way.clone()),
                    ..Default::default()
                },
            )
            .map_err(link_err("rename out of the way", original_name.as_str()))?;
            renamed.push((original_name.to_string(), out_of_the_way));
        }
        // The dump still names the placeholder as it was; the pod interface is found by its
        // own index and names, which the rename did not touch.
        restore_pod_interface(nl, link, observed, &links)?;
    }
    Ok(renamed)
}

/// Brings a link up or down; `name` names it in the error.
fn set_up(nl: &mut Netlink, idx: u32, up: bool, name: &str) -> Result<(), ApplyError> {
    nl.change_link(
        idx,
        &LinkChange {
            up: Some(up),
            ..Default::default()
        },
    )
    .map_err(link_err(if up { "set up" } else { "set down" }, name))
}

fn teardown_link(
    nl: &mut Netlink,
    link: &LinkPlan,
    observed: &ObservedPod,
) -> Result<(), ApplyError> {
    let links = nl.links().map_err(link_err("dump", "links"))?;
    if matches!(link.kind, LinkKind::PodInterface { .. }) {
        return restore_pod_interface(nl, link, observed, &links);
    }
    let Some(cur) = links.iter().find(|k| k.name == link.name.as_str()) else {
        return Ok(());
    };
    if !cur.kind.as_ref().is_some_and(LinkType::netbind_creates) {
        // Same name, not ours (e.g. the pod's eth0 before the dummy replaced it).
        return Ok(());
    }
    match nl.del_link(cur.index) {
        Ok(()) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(err) => Err(link_err("delete", link.name.as_str())(err)),
    }
}

/// Puts a pod interface back as `observed` saw it (name, MAC, MTU, out of the bridge, its
/// addresses and routes), found in `links` by its index and names; gone is fine.
fn restore_pod_interface(
    nl: &mut Netlink,
    link: &LinkPlan,
    observed: &ObservedPod,
    links: &[Link],
) -> Result<(), ApplyError> {
    let LinkKind::PodInterface {
        index,
        original_name,
        original_mac,
    } = &link.kind
    else {
        return Ok(());
    };
    let Some(cur) = links
        .iter()
        .find(|k| {
            k.index == *index && (k.name == link.name.as_str() || k.name == original_name.as_str())
        })
        .or_else(|| links.iter().find(|k| k.name == link.name.as_str()))
    else {
        return Ok(());
    };
    let idx = cur.index;
    let orig = observed.get(original_name.as_str());
    let change = LinkChange {
        name: (cur.name != original_name.as_str()).then(|| original_name.to_string()),
        mac: Some(*original_mac).filter(|m| cur.mac != Some(*m)),
        mtu: orig
            .map(|orig_link| orig_link.mtu)
            .filter(|m| *m != cur.mtu),
        master: cur.master.map(|_| 0),
        up: None,
        group: None,
        alias: None,
    };
    // A link must be down to be renamed (EBUSY otherwise).
    set_up(nl, idx, false, &cur.name)?;
    nl.change_link(idx, &change)
        .map_err(link_err("restore", original_name.as_str()))?;
    let Some(orig_link) = orig else { return Ok(()) };
    for addr in &orig_link.addresses {
        match nl.add_addr(idx, *addr) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(ApplyError::Addr {
                    op: "restore address",
                    name: original_name.to_string(),
                    cidr: *addr,
                    source,
                });
            }
        }
    }
    set_up(nl, idx, true, original_name.as_str())?;
    // Routes the kernel does not recreate with the addresses (gateways, extra routes).
    for orig_route in &orig_link.routes {
        let route = Route {
            oif: idx,
            dst: orig_route.dst,
            gateway: orig_route.gateway,
        };
        match nl.add_route(&route) {
            Ok(()) => {}
            Err(err) if matches!(err.raw_os_error(), Some(libc::EEXIST)) => {}
            Err(err) => {
                tracing::debug!(dst = %orig_route.dst, error = %err, "route not restored")
            }
        }
    }
    Ok(())
}
