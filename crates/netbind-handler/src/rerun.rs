//! A setup of a pod that phase 1 already set up, with a VMI that may have changed: what it
//! keeps, what it adds and what it takes away.
//!
//! KubeVirt hot-plugs and hot-unplugs secondary bridge interfaces on a running pod, so a re-run
//! must not disturb what stays: a running guest's tap, bridge and NAT rules are kept (the new
//! plan's apply converges them in place), and only what the old plan has and the new one does
//! not is taken away. The pod interfaces are planned from the observation made before netbind
//! first touched the pod; an interface that appeared since (what Multus adds for a hot-plugged
//! network) is taken from a fresh observation.

use netbind_model::pod::ObservedPod;
use netbind_plan::PodNetPlan;
use netbind_plan::plan::LinkPlan;

/// The pre-change observation, plus every interface of `now` it does not know that netbind did
/// not make (`made`: the links of the plan applied so far, found by name, or of a kind netbind
/// creates).
pub fn observation(before: &ObservedPod, now: &ObservedPod, made: &PodNetPlan) -> ObservedPod {
    let mut merged = before.clone();
    for iface in &now.interfaces {
        let known = before.get(iface.name.as_str()).is_some();
        let ours = made
            .links
            .iter()
            .any(|link| link.name.as_str() == iface.name.as_str())
            || iface
                .kind
                .as_ref()
                .is_some_and(netbind_model::pod::LinkType::netbind_creates);
        if !known && !ours {
            merged.interfaces.push(iface.clone());
        }
    }
    merged
}

/// What `old` applied that `new` does not have: its links (by name), its nftables tables (by
/// family and name) and its sysctls (by path), as a plan of their own for the teardown. The
/// tables `new` keeps are replaced by its apply in one transaction, not taken away here.
pub fn removed(old: &PodNetPlan, new: &PodNetPlan) -> PodNetPlan {
    let mut gone = old.clone();
    gone.links
        .retain(|link: &LinkPlan| !new.links.iter().any(|kept| kept.name == link.name));
    gone.sysctls
        .retain(|sysctl| !new.sysctls.iter().any(|kept| kept.path == sysctl.path));
    gone.nftables.ruleset.tables.retain(|table| {
        !new.nftables
            .ruleset
            .tables
            .iter()
            .any(|kept| kept.family == table.family && kept.name == table.name)
    });
    gone.router_adverts.clear();
    gone
}

/// The networks a call for one network plans: those the pod's earlier calls planned (still
/// in the VMI), then this one. A runtime calling phase 1 once per network (Multus, KubeVirt's
/// `logicNetworkName`) reaches the second network with the first set up: planning both keeps
/// the first in place, as a hot-plug does, instead of taking it away as a plan without it.
pub fn networks(
    network: &str,
    previous: Option<&PodNetPlan>,
    vmi: &netbind_model::admitted::AdmittedVmi,
) -> Vec<String> {
    let mut planned = networks_without(network, previous, vmi);
    planned.push(network.to_string());
    planned
}

/// The networks earlier calls planned (still in the VMI), but `network`: what stays when its
/// DEL comes while the pod lives on.
pub fn networks_without(
    network: &str,
    previous: Option<&PodNetPlan>,
    vmi: &netbind_model::admitted::AdmittedVmi,
) -> Vec<String> {
    previous
        .map(|plan| {
            plan.handoff
                .interfaces
                .iter()
                .map(|iface| iface.network.clone())
                .filter(|earlier| earlier != network && vmi.interface(earlier).is_some())
                .collect()
        })
        .unwrap_or_default()
}

/// What `old` applied that `new` does not have (`removed`), with the values to put back for
/// its sysctls, taken from `sysctls_before` (the values recorded before `old` was applied).
pub fn removal(
    old: &PodNetPlan,
    new: &PodNetPlan,
    sysctls_before: &[(String, Option<String>)],
) -> (PodNetPlan, Vec<(String, Option<String>)>) {
    let gone = removed(old, new);
    let restore = sysctls_before
        .iter()
        .filter(|(path, _)| gone.sysctls.iter().any(|s| s.path == *path))
        .cloned()
        .collect();
    (gone, restore)
}

/// What is left of `gone` (a removal) once its pod interfaces were given back
/// (`teardown::hand_back`): its other links, the placeholders under the names `renamed` gave
/// them, its tables and sysctls. A detached helper removes it.
pub fn left_after_hand_back(mut gone: PodNetPlan, renamed: &[(String, String)]) -> PodNetPlan {
    gone.links
        .retain(|link| !matches!(link.kind, netbind_plan::plan::LinkKind::PodInterface { .. }));
    for link in &mut gone.links {
        if let Some((_, now)) = renamed.iter().find(|(was, _)| *was == link.name.as_str())
            && let Ok(name) = netbind_model::IfName::new(now.clone())
        {
            link.name = name;
        }
    }
    gone
}

/// The sysctl values to restore at teardown after a re-run: the first run's value for a path
/// both plans set, the value read now (`read`) for a path only the new plan sets.
pub fn sysctls_before(
    old: &[(String, Option<String>)],
    new: &PodNetPlan,
    read: impl Fn(&str) -> Option<String>,
) -> Vec<(String, Option<String>)> {
    new.sysctls
        .iter()
        .map(|sysctl| {
            old.iter()
                .find(|(path, _)| *path == sysctl.path)
                .cloned()
                .unwrap_or_else(|| (sysctl.path.clone(), read(&sysctl.path)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code
    use super::*;
    use netbind_model::admission::ClusterConfig;
    use netbind_plan::{Owner, PlanOptions};

    fn pod(text: &str) -> ObservedPod {
        ObservedPod::from_json(text).unwrap()
    }

    fn plan(vmi: &str, observed: &ObservedPod) -> PodNetPlan {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join(vmi)).unwrap();
        let cfg = ClusterConfig::default();
        let vmi = netbind_model::check::check_vmi(&text, &cfg).unwrap();
        let opts = PlanOptions {
            owner: Owner { uid: 107, gid: 107 },
            resolv_conf: "",
            cluster: &cfg,
            networks: None,
        };
        netbind_plan::plan(&vmi, observed, &opts).unwrap()
    }

    const BEFORE: &str = r#"{"version":1,"interfaces":[
        {"name":"eth0","index":2,"kind":"veth","mac":"0a:58:0a:f4:00:05","mtu":1450,
         "addresses":["10.244.0.5/24"],"routes":[]}]}"#;

    /// What the kernel shows after the first run, plus the veth Multus added for "blue".
    const NOW: &str = r#"{"version":1,"interfaces":[
        {"name":"eth0","index":2,"kind":"veth","mac":"0a:58:0a:f4:00:05","mtu":1450,
         "addresses":["10.244.0.5/24"],"routes":[]},
        {"name":"k6t-eth0","index":3,"kind":"bridge","mac":"02:00:00:00:00:01","mtu":1450,
         "addresses":["10.0.2.1/24"],"routes":[]},
        {"name":"tap0","index":4,"kind":"tun","mac":"02:00:00:00:00:02","mtu":1450,
         "addresses":[],"routes":[]},
        {"name":"pod16477688c0e","index":5,"kind":"veth","mac":"02:00:00:00:00:03","mtu":9000,
         "addresses":["192.168.100.10/30"],
         "routes":[{"dst":"192.168.100.8/30"},{"dst":"172.16.0.0/16","gateway":"192.168.100.9"}]}]}"#;

    #[test]
    fn a_hot_plugged_interface_joins_the_pre_change_observation_and_netbinds_links_do_not() {
        let before = pod(BEFORE);
        let first = plan("examples/vmi-masquerade.yaml", &before);
        let merged = observation(&before, &pod(NOW), &first);
        let names: Vec<&str> = merged.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "pod16477688c0e"]);
        // The first run's eth0 is kept as it was before netbind, not as it is now.
        assert_eq!(merged.get("eth0"), before.get("eth0"));
    }

    #[test]
    fn a_hot_plug_removes_nothing_and_an_unplug_removes_only_that_interface() {
        let before = pod(BEFORE);
        let merged = observation(
            &before,
            &pod(NOW),
            &plan("examples/vmi-masquerade.yaml", &before),
        );
        let one = plan("examples/vmi-masquerade.yaml", &merged);
        let two = plan("examples/vmi-masquerade-multus.yaml", &merged);
        let plugged = removed(&one, &two);
        assert!(plugged.links.is_empty(), "{:?}", plugged.links);
        assert!(plugged.nftables.ruleset.is_empty());
        assert!(plugged.sysctls.is_empty());

        let unplugged = removed(&two, &one);
        let names: Vec<&str> = unplugged.links.iter().map(|l| l.name.as_str()).collect();
        assert!(!names.is_empty());
        assert!(
            names.iter().all(|name| name.contains("16477688c0e")),
            "only blue's links go: {names:?}"
        );
        assert!(
            one.links
                .iter()
                .all(|kept| !names.contains(&kept.name.as_str())),
            "nothing the default interface uses goes"
        );
    }

    #[test]
    fn sysctls_keep_the_first_runs_value_and_read_new_ones() {
        let before = pod(BEFORE);
        let merged = observation(
            &before,
            &pod(NOW),
            &plan("examples/vmi-masquerade.yaml", &before),
        );
        let two = plan("examples/vmi-masquerade-multus.yaml", &merged);
        let first: Vec<(String, Option<String>)> = two
            .sysctls
            .iter()
            .take(1)
            .map(|s| (s.path.clone(), Some("first".to_string())))
            .collect();
        let before = sysctls_before(&first, &two, |_| Some("now".into()));
        assert_eq!(before.len(), two.sysctls.len());
        assert_eq!(before[0].1.as_deref(), Some("first"));
        assert!(before[1..].iter().all(|(_, v)| v.as_deref() == Some("now")));
    }
}
