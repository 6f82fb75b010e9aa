//! Comparing the kernel with the plan phase 1 applied: what a runtime's CNI `CHECK` asks. Read
//! only: every link, address, sysctl and nftables table of the recorded plan is looked up in
//! the pod's namespace, and each difference is reported as a [`Drift`].

use std::path::{Path, PathBuf};

use netbind_model::pod::LinkType;
use netbind_plan::plan::{LinkKind, LinkPlan, PodNetPlan};

use crate::netlink::{Addr, Link};
use crate::netns::{Netns, NetnsTarget};
use crate::nft::Nft;
use crate::state::{self, Phase};
use crate::{HandlerError, open_netlink, sysctl};

/// One way the pod's namespace differs from the plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    /// What differs: `link k6t-eth0`, `sysctl net/ipv4/ip_forward`, `nft table ip nat`.
    pub object: String,
    pub problem: String,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(out, "{}: {}", self.object, self.problem)
    }
}

#[derive(Debug, Clone)]
pub struct VerifyArgs {
    pub target: NetnsTarget,
    pub state_dir: PathBuf,
    pub nft_bin: PathBuf,
}

/// The differences between the pod's namespace and the plan recorded in `state_dir`; empty
/// when the kernel matches. A pod never set up is an error, not an empty list.
pub fn verify(args: &VerifyArgs) -> Result<Vec<Drift>, HandlerError> {
    let Some(recorded) = state::load(&args.state_dir)? else {
        return Err(HandlerError::NotSetUp(args.state_dir.clone()));
    };
    let mut drift = Vec::new();
    if recorded.phase != Phase::Finished {
        drift.push(Drift {
            object: "phase 1".into(),
            problem: "the last setup did not finish".into(),
        });
    }
    let netns = Netns::open(&args.target)?;
    let found = netns.run(|| -> Result<Vec<Drift>, HandlerError> {
        let mut nl = open_netlink(&args.target)?;
        let dump_err = |source| HandlerError::Netlink {
            target: args.target.to_string(),
            source,
        };
        let links = nl.links().map_err(dump_err)?;
        let addrs = nl.addrs().map_err(dump_err)?;
        let mut drift = links_drift(&recorded.plan, &links, &addrs);
        drift.extend(sysctls_drift(&recorded.plan));
        drift.extend(nft_drift(&recorded.plan, &args.nft_bin));
        Ok(drift)
    })??;
    drift.extend(found);
    Ok(drift)
}

fn links_drift(plan: &PodNetPlan, links: &[Link], addrs: &[Addr]) -> Vec<Drift> {
    let mut drift = Vec::new();
    let by_name = |name: &str| links.iter().find(|l| l.name == name);
    for planned in &plan.links {
        let object = format!("link {}", planned.name);
        let mut differs = |problem: String| {
            drift.push(Drift {
                object: object.clone(),
                problem,
            })
        };
        let Some(link) = by_name(planned.name.as_str()) else {
            differs("missing".into());
            continue;
        };
        if let Some(problem) = kind_problem(planned, link) {
            differs(problem);
        }
        if let Some(mtu) = planned.mtu
            && link.mtu != mtu
        {
            differs(format!("MTU {}, planned {mtu}", link.mtu));
        }
        if link.up != planned.up {
            differs(format!(
                "{}, planned {}",
                updown(link.up),
                updown(planned.up)
            ));
        }
        let master = link
            .master
            .and_then(|index| links.iter().find(|l| l.index == index))
            .map(|l| l.name.as_str());
        if master != planned.master.as_ref().map(|m| m.as_str()) {
            differs(format!(
                "master {}, planned {}",
                master.unwrap_or("none"),
                planned.master.as_ref().map_or("none", |m| m.as_str())
            ));
        }
        for cidr in &planned.addresses {
            if !addrs
                .iter()
                .any(|a| a.index == link.index && a.cidr == *cidr)
            {
                differs(format!("address {cidr} missing"));
            }
        }
    }
    drift
}

fn updown(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

fn kind_problem(planned: &LinkPlan, link: &Link) -> Option<String> {
    let want: &[LinkType] = match planned.kind {
        LinkKind::Bridge => &[LinkType::Bridge],
        // ifb stands in where the dummy driver is missing.
        LinkKind::Dummy => &[LinkType::Dummy, LinkType::Ifb],
        LinkKind::Tap { .. } => &[LinkType::Tun],
        // The pod's own interface, renamed: whatever the pod network made.
        LinkKind::PodInterface { .. } => return None,
    };
    match &link.kind {
        Some(kind) if want.contains(kind) => None,
        found => Some(format!(
            "a {} link, planned {}",
            found.as_ref().map_or("kindless", |k| k.as_str()),
            want[0]
        )),
    }
}

fn sysctls_drift(plan: &PodNetPlan) -> Vec<Drift> {
    plan.sysctls
        .iter()
        .filter_map(|planned| {
            let problem = match sysctl::read(&planned.path) {
                Ok(value) if value == planned.value => return None,
                Ok(value) => format!("{value}, planned {}", planned.value),
                Err(err) => err.to_string(),
            };
            Some(Drift {
                object: format!("sysctl {}", planned.path),
                problem,
            })
        })
        .collect()
}

/// Each table of the plan must exist (its rules are recreated as a whole by every setup, so a
/// present table is netbind's; a missing one is what a `nft flush ruleset` leaves). Asked over
/// netlink, one request per table; with the binary only when the operator chose that backend.
fn nft_drift(plan: &PodNetPlan, nft_bin: &Path) -> Vec<Drift> {
    let backend = Nft::select(nft_bin);
    plan.nftables
        .ruleset
        .tables
        .iter()
        .filter_map(|table| {
            let found = match &backend {
                Some(nft) => nft.table_exists(table.family, &table.name),
                None => Err(format!("{} not found", nft_bin.display())),
            };
            let problem = match found {
                Ok(true) => return None,
                Ok(false) => "missing".to_string(),
                Err(err) => err,
            };
            Some(Drift {
                object: format!("nft table {} {}", table.family.as_str(), table.name),
                problem,
            })
        })
        .collect()
}
