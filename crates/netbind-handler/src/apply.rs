//! The thin adapter: makes the kernel state of the pod netns equal to a `PodNetPlan` (taking
//! it away again is `teardown`).
//!
//! Every step reconciles rather than creates: it reads the current state, changes only what
//! differs and accepts what is already right. Running the same plan twice, or after a crash at
//! any step, converges to the state of one clean run.

use std::collections::BTreeSet;

use netbind_model::pod::LinkType;
use netbind_model::{Cidr, IfName};
use netbind_plan::plan::{LinkKind, LinkPlan, MacPlan, PodNetPlan};
use netlink_packet_route::link::InfoKind;

use crate::netlink::{Addr, Link, LinkChange, NETBIND_GROUP, Netlink, TunInfo};
use crate::nft::{self, NftError};
use crate::observe::Dumps;
use crate::selinux::{LabelDecision, SelinuxEnv, SelinuxError};
use crate::sysctl::{self, SysctlError};
use crate::tap::{self, TapError, TapSpec};
use crate::timing::StepClock;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("netlink {op} on {name}: {source}")]
    Link {
        op: &'static str,
        name: String,
        source: std::io::Error,
    },
    #[error("netlink {op} {cidr} on {name}: {source}")]
    Addr {
        op: &'static str,
        name: String,
        cidr: Cidr,
        source: std::io::Error,
    },
    #[error("pod interface {name} (ifindex {index}) is missing from the pod network namespace")]
    PodLinkMissing { name: IfName, index: u32 },
    #[error(
        "link {name} exists as {found}, expected {want}; refusing to replace a link netbind did not create"
    )]
    TypeCollision {
        name: String,
        found: LinkType,
        want: LinkType,
    },
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Selinux(#[from] SelinuxError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("failure injected after step {step} ({what})")]
    Injected { step: usize, what: String },
}

/// Test hooks: stop after step K as if that step's successor had failed, or as if the process
/// had been killed there (no rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    FailAfter(usize),
    CrashAfter(usize),
}

/// Exit status of an injected crash.
pub const CRASH_EXIT: i32 = 99;

pub struct Applier<'a> {
    pub nl: &'a mut Netlink,
    pub nft_bin: &'a nft::Nft,
    pub label: &'a LabelDecision,
    pub selinux: &'a SelinuxEnv,
    pub inject: Option<Injection>,
    /// No earlier run recorded state for this pod, so none of netbind's tables can exist yet
    /// and the ruleset is created without the delete-and-recreate prefix (whose table
    /// deletion makes the kernel wait for an RCU grace period).
    pub fresh: bool,
    step: usize,
    /// The namespace's links as this run knows them, so that each link step does not dump them
    /// all again: seeded by a dump of this run (the observation's, on a first run, via `seed`)
    /// or by the first dump needed, then kept current with what the applier does itself. A link
    /// it makes is read back alone and a change it makes is applied here; `None` after a
    /// deletion (the next need dumps).
    view: Option<Vec<Link>>,
    /// The addresses, likewise (kept by what the applier adds and deletes; `None` after a
    /// link is deleted). The kernel adds IPv6 link-local ones on its own, which address sync
    /// leaves alone anyway.
    addrs: Option<Vec<Addr>>,
    /// Links in `view` that the kernel may have changed behind one of our changes (a bridge
    /// that gained or lost a port adjusts its MTU and MAC to its ports; a new port's learning
    /// flag takes the default): read again, each alone, before the view is next used.
    stale: BTreeSet<u32>,
}

impl std::fmt::Debug for Applier<'_> {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Applier")
            .field("step", &self.step)
            .finish()
    }
}

pub(crate) fn link_err<'a>(
    op: &'static str,
    name: &'a str,
) -> impl FnOnce(std::io::Error) -> ApplyError + 'a {
    move |source| ApplyError::Link {
        op,
        name: name.to_string(),
        source,
    }
}

/// Kernel-generated IPv6 link-local addresses come back whenever a link goes up; they are not
/// part of the managed address set unless the plan lists them.
fn is_auto_link_local(cidr: &Cidr) -> bool {
    !cidr.is_ipv4()
        && cidr.prefix() == 64
        && !cidr.is_global_unicast()
        && !cidr.addr().is_loopback()
}

/// The names of the steps of a plan, in order (used for logs and failure injection).
pub fn steps(plan: &PodNetPlan) -> Vec<String> {
    let mut lines: Vec<String> = plan
        .links
        .iter()
        .map(|l| format!("link {}", l.name))
        .collect();
    lines.extend(plan.sysctls.iter().map(|s| format!("sysctl {}", s.path)));
    if !plan.nftables.ruleset.is_empty() {
        lines.push("nftables".into());
    }
    lines
}

pub fn nft_what(plan: &PodNetPlan) -> String {
    let tables: Vec<String> = plan
        .nftables
        .ruleset
        .tables
        .iter()
        .map(|tables| format!("{} {}", tables.family.as_str(), tables.name))
        .collect();
    format!("tables {}", tables.join(", "))
}

/// A link as `ensure_exists` left it.
struct Existing {
    link: Link,
    /// Made by this step.
    created: bool,
}

impl<'a> Applier<'a> {
    pub fn new(
        nl: &'a mut Netlink,
        nft_bin: &'a nft::Nft,
        label: &'a LabelDecision,
        selinux: &'a SelinuxEnv,
    ) -> Self {
        Self {
            nl,
            nft_bin,
            label,
            selinux,
            inject: None,
            fresh: false,
            step: 0,
            view: None,
            addrs: None,
            stale: BTreeSet::new(),
        }
    }

    /// Starts from `dumps`, made in this run with nothing changed since (a first run's
    /// observation, made under the pod's lock), instead of dumping again at the first link.
    pub fn seed(&mut self, dumps: Dumps) {
        self.view = Some(dumps.links);
        self.addrs = Some(dumps.addrs);
        self.stale.clear();
    }

    /// A link was deleted: its addresses went with it, and its ports lost their master.
    fn forget(&mut self) {
        self.view = None;
        self.addrs = None;
    }

    fn done(&mut self, what: &str) -> Result<(), ApplyError> {
        self.step += 1;
        tracing::debug!(step = self.step, what, "applied");
        match self.inject {
            Some(Injection::CrashAfter(crash_step)) if crash_step == self.step => {
                tracing::warn!(step = crash_step, what, "injected crash");
                std::process::exit(CRASH_EXIT);
            }
            Some(Injection::FailAfter(crash_step)) if crash_step == self.step => {
                Err(ApplyError::Injected {
                    step: crash_step,
                    what: what.into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Applies `plan`, charging links, sysctls and nftables to `clock`.
    ///
    /// The ruleset matches interfaces by name only (`iifname`, `oifname`), never by index, so
    /// it does not need the links to exist. Over netlink its transaction runs first, on this
    /// thread: a ruleset the kernel refuses then fails before any link is made. It used to run
    /// on a thread of its own beside the links, but the kernel serialises the two anyway
    /// (nf_tables takes its commit lock for every new device's notification while a
    /// transaction holds it), and the thread and that contention cost more than the overlap
    /// gave: 0.1 ms (masquerade) to 0.25 ms (bridge binding) more a setup, paired medians of
    /// 30-40 fresh pods. An `nft` child, a process of its own, still runs beside the links; it
    /// is waited for before this returns, whatever happened meanwhile, so a rollback always
    /// finds it finished.
    pub fn apply(&mut self, plan: &PodNetPlan, clock: &mut StepClock) -> Result<(), ApplyError> {
        let op = if self.fresh {
            nft::Op::Create
        } else {
            nft::Op::Recreate
        };
        let ruleset = &plan.nftables.ruleset;
        let beside = if ruleset.is_empty() {
            None
        } else if self.nft_bin.is_process() {
            Some(self.nft_bin.start(ruleset, op, &nft_what(plan))?)
        } else {
            self.nft_bin.apply(ruleset, op, &nft_what(plan))?;
            clock.mark("nftables transaction");
            self.done("nftables")?;
            None
        };
        let links_and_sysctls = self.links_and_sysctls(plan, clock);
        let ruleset = beside.map(|pending| {
            let (done, took) = pending.wait_timed();
            clock.mark("nftables transaction (beyond the links)");
            clock.beside(
                "nftables transaction (its own time, beside the links)",
                took,
            );
            done
        });
        links_and_sysctls?;
        if ruleset.transpose()?.is_some() {
            self.done("nftables")?;
        }
        Ok(())
    }

    fn links_and_sysctls(
        &mut self,
        plan: &PodNetPlan,
        clock: &mut StepClock,
    ) -> Result<(), ApplyError> {
        for link in &plan.links {
            self.link(link)?;
            self.done(&format!("link {}", link.name))?;
        }
        clock.mark("links and addresses");
        for sysctl in &plan.sysctls {
            sysctl::write(&sysctl.path, &sysctl.value)?;
            self.done(&format!("sysctl {}", sysctl.path))?;
        }
        clock.mark("sysctls");
        Ok(())
    }

    /// The namespace's links as they are now: the view, its stale entries read again (each
    /// alone); one dump when there is no view.
    fn links(&mut self) -> Result<Vec<Link>, ApplyError> {
        let mut view = match self.view.take() {
            Some(view) => view,
            None => {
                self.stale.clear();
                self.nl.links().map_err(link_err("dump", "links"))?
            }
        };
        for idx in std::mem::take(&mut self.stale) {
            let Some(pos) = view.iter().position(|l| l.index == idx) else {
                continue;
            };
            let name = view[pos].name.clone();
            match self
                .nl
                .link_named(&name)
                .map_err(link_err("read back", &name))?
            {
                Some(now) if now.index == idx => view[pos] = now,
                _ => {
                    view.remove(pos);
                }
            }
        }
        self.view = Some(view.clone());
        Ok(view)
    }

    /// The namespace's links as this applier holds them (its stale entries read again): after
    /// `apply`, what the kernel has, without a dump if it had a view.
    pub fn view(&mut self) -> Result<Vec<Link>, ApplyError> {
        self.links()
    }

    /// Puts `link`, just read from the kernel, into the view in place of what it had for that
    /// index or that name.
    fn remember(&mut self, link: Link) {
        if let Some(view) = &mut self.view {
            view.retain(|l| l.index != link.index && l.name != link.name);
            self.stale.remove(&link.index);
            view.push(link);
        }
    }

    /// Applies a change the kernel accepted to the view.
    fn note_change(&mut self, idx: u32, change: &LinkChange) {
        let Some(link) = self.viewed(idx) else {
            return;
        };
        if let Some(name) = &change.name {
            link.name.clone_from(name);
        }
        if let Some(mac) = change.mac {
            link.mac = Some(mac);
        }
        if let Some(mtu) = change.mtu {
            link.mtu = mtu;
        }
        if let Some(up) = change.up {
            link.up = up;
        }
        if let Some(group) = change.group {
            link.group = group;
        }
        if let Some(alias) = &change.alias {
            link.alias = Some(alias.clone());
        }
        if let Some(master) = change.master {
            let new = (master != 0).then_some(master);
            let old = std::mem::replace(&mut link.master, new);
            self.stale
                .extend([Some(idx), old, new].into_iter().flatten());
        }
    }

    /// The link named `name` as it is now.
    fn find(&mut self, name: &str) -> Result<Option<Link>, ApplyError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// The view's entry for link `idx`, to change along with the kernel.
    fn viewed(&mut self, idx: u32) -> Option<&mut Link> {
        self.view.as_mut()?.iter_mut().find(|l| l.index == idx)
    }

    /// The existing link for `l`, created if missing, and whether it was created now.
    fn ensure_exists(&mut self, link: &LinkPlan) -> Result<Existing, ApplyError> {
        let name = link.name.as_str();
        let want = match link.kind {
            LinkKind::Bridge => LinkType::Bridge,
            LinkKind::Dummy => LinkType::Dummy,
            LinkKind::Tap { .. } => LinkType::Tun,
            LinkKind::PodInterface { .. } => return self.pod_interface(link),
        };
        let mut cur = self.find(name)?;
        if let Some(current) = &cur {
            let found = current
                .kind
                .clone()
                .unwrap_or_else(|| LinkType::Other("unknown".into()));
            let matches = found == want || (want == LinkType::Dummy && found == LinkType::Ifb);
            if !matches {
                if !found.netbind_creates() {
                    return Err(ApplyError::TypeCollision {
                        name: name.into(),
                        found,
                        want,
                    });
                }
                self.nl
                    .del_link(current.index)
                    .map_err(link_err("delete (wrong kind)", name))?;
                self.forget();
                cur = None;
            }
        }
        let created = cur.is_none();
        match (&link.kind, cur) {
            (
                LinkKind::Tap {
                    owner,
                    group,
                    multi_queue,
                    ..
                },
                cur,
            ) => {
                let spec = TapSpec {
                    owner: *owner,
                    group: *group,
                    multi_queue: *multi_queue,
                };
                let right = TunInfo {
                    owner: Some(*owner),
                    group: Some(*group),
                    multi_queue: *multi_queue,
                    persist: true,
                };
                match cur {
                    // Already right: attaching again would only flap its carrier.
                    Some(current) if current.tun == Some(right) => {
                        return Ok(Existing {
                            link: current,
                            created: false,
                        });
                    }
                    cur => self.tap(&link.name, spec, cur.is_some())?,
                }
            }
            (_, Some(current)) => {
                return Ok(Existing {
                    link: current,
                    created: false,
                });
            }
            (LinkKind::Bridge, None) => {
                self.nl
                    .add_link(name, InfoKind::Bridge)
                    .map_err(link_err("create bridge", name))?;
            }
            (_, None) => self.dummy(name)?,
        }
        // Only this link changed since the view above (a wrong-kind one it replaces is gone
        // from the kernel, and the others are found by name): ask for it alone.
        let link = self
            .nl
            .link_named(name)
            .map_err(link_err("find after create", name))?
            .ok_or_else(|| ApplyError::Link {
                op: "find after create",
                name: name.into(),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            })?;
        self.remember(link.clone());
        Ok(Existing { link, created })
    }

    /// KubeVirt uses a dummy; kernels built without CONFIG_DUMMY (this CI machine's among them)
    /// get an ifb, which equally just holds addresses while down.
    fn dummy(&mut self, name: &str) -> Result<(), ApplyError> {
        match self.nl.add_link(name, InfoKind::Dummy) {
            Ok(()) => Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                tracing::info!(ifname = name, "kernel has no dummy links; using ifb");
                self.nl
                    .add_link(name, InfoKind::Ifb)
                    .map_err(link_err("create ifb", name))
            }
            Err(err) => Err(link_err("create dummy", name)(err)),
        }
    }

    fn tap(&mut self, name: &IfName, spec: TapSpec, exists: bool) -> Result<(), ApplyError> {
        // The tun socket takes the calling thread's socket-creation label.
        let _label = match self.label {
            LabelDecision::Label(label) => Some(self.selinux.sockcreate(label)?),
            _ => None,
        };
        match tap::ensure(name, spec, exists) {
            // An existing tap with the other queue mode: EINVAL on attach. Recreate it.
            Err(err) if exists && err.errno() == Some(libc::EINVAL) => {
                let idx = self
                    .find(name.as_str())?
                    .map(|link| link.index)
                    .unwrap_or(0);
                self.nl
                    .del_link(idx)
                    .map_err(link_err("delete (queue mode changed)", name.as_str()))?;
                self.forget();
                tap::ensure(name, spec, false)?;
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// The pod interface: by ifindex first (it may already carry its new name), then by name.
    fn pod_interface(&mut self, link: &LinkPlan) -> Result<Existing, ApplyError> {
        let LinkKind::PodInterface {
            index,
            original_name,
            ..
        } = &link.kind
        else {
            return Err(ApplyError::PodLinkMissing {
                name: link.name.clone(),
                index: 0,
            });
        };
        let links = self.links()?;
        let names = [link.name.as_str(), original_name.as_str()];
        let found = links
            .iter()
            .find(|k| *index > 0 && k.index == *index && names.contains(&k.name.as_str()))
            .or_else(|| links.iter().find(|k| k.name == link.name.as_str()))
            .or_else(|| {
                links.iter().find(|k| {
                    k.name == original_name.as_str()
                        && !k.kind.as_ref().is_some_and(LinkType::netbind_creates)
                })
            });
        let found = found.cloned().ok_or_else(|| ApplyError::PodLinkMissing {
            name: original_name.clone(),
            index: *index,
        })?;
        Ok(Existing {
            link: found,
            created: false,
        })
    }

    fn link(&mut self, link: &LinkPlan) -> Result<(), ApplyError> {
        let Existing { link: cur, created } = self.ensure_exists(link)?;
        // The other links this step refers to (the bridge to copy a MAC from, the master) come
        // earlier in the plan: the view holds them as they are now (no dump, unless a link
        // was just deleted and remade).
        let others = self.links()?;
        let name = link.name.as_str();
        let idx = cur.index;
        let find = |n: &str| others.iter().find(|k| k.name == n);
        let want_mac = match (&link.mac, &link.kind) {
            (Some(MacPlan::Fixed(mac)), _) => Some(*mac),
            // Only move off the original MAC once: later runs keep whatever the first gave.
            (Some(MacPlan::CopyFrom(src)), LinkKind::PodInterface { original_mac, .. })
                if cur.mac == Some(*original_mac) =>
            {
                find(src.as_str()).and_then(|s| s.mac)
            }
            _ => None,
        }
        .filter(|mac| cur.mac != Some(*mac))
        // ifb (the stand-in for a missing dummy driver) cannot change its MAC (EOPNOTSUPP);
        // nothing reads the placeholder's MAC: the guest's comes from the hand-off record.
        .filter(|_| cur.kind != Some(LinkType::Ifb));
        let ours = !matches!(link.kind, LinkKind::PodInterface { .. });
        let want_master = match &link.master {
            Some(master) => Some(
                find(master.as_str())
                    .ok_or_else(|| ApplyError::Link {
                        op: "find master",
                        name: master.to_string(),
                        source: std::io::Error::from_raw_os_error(libc::ENODEV),
                    })?
                    .index,
            ),
            None => None,
        };
        let master_changed = want_master != cur.master;
        let mtu = link.mtu.filter(|mtu| *mtu != cur.mtu);
        // Taps come from an ioctl that cannot set the group; mark them here.
        let group = (ours && cur.group != NETBIND_GROUP).then_some(NETBIND_GROUP);
        let master = master_changed.then(|| want_master.unwrap_or(0));
        if created {
            // Made just now, by its own name, down and without addresses: add them, then
            // everything else in one change (each change is a notification and a pass over
            // the netdev notifiers in the kernel).
            self.add_addrs(idx, name, &link.addresses)?;
            let change = LinkChange {
                mac: want_mac,
                mtu,
                master,
                up: (link.up && !cur.up).then_some(true),
                group,
                ..Default::default()
            };
            self.change(idx, change, "set mac/mtu/master/up", name)?;
            return self.learning(link, idx, master_changed, cur.learning);
        }
        let rename = (cur.name != name).then(|| name.to_string());
        let down_first = (rename.is_some() || want_mac.is_some()) && cur.up;
        let set_down = LinkChange {
            up: down_first.then_some(false),
            ..Default::default()
        };
        self.change(idx, set_down, "set down", &cur.name)?;
        let change = LinkChange {
            name: rename,
            mac: want_mac,
            mtu,
            group,
            ..Default::default()
        };
        self.change(idx, change, "set name/mac/mtu", name)?;
        let change = LinkChange {
            master,
            ..Default::default()
        };
        self.change(idx, change, "set master", name)?;
        // (A link made just now returned above: it holds no address yet, so its addresses
        // are added without dumping them first.)
        self.sync_addrs(idx, name, &link.addresses)?;
        let now_up = if cur.name != name || want_mac.is_some() {
            false
        } else {
            cur.up
        };
        let change = LinkChange {
            up: (now_up != link.up).then_some(link.up),
            ..Default::default()
        };
        self.change(
            idx,
            change,
            if link.up { "set up" } else { "set down" },
            name,
        )?;
        self.learning(link, idx, master_changed, cur.learning)
    }

    /// Sends `change` to link `idx` as one message; nothing when it changes nothing.
    fn change(
        &mut self,
        idx: u32,
        change: LinkChange,
        op: &'static str,
        name: &str,
    ) -> Result<(), ApplyError> {
        if change == LinkChange::default() {
            return Ok(());
        }
        self.nl
            .change_link(idx, &change)
            .map_err(link_err(op, name))?;
        self.note_change(idx, &change);
        Ok(())
    }

    /// A bridge port's learning flag, as planned. A new bridge port starts with the kernel's
    /// default: set it then whatever it was before.
    fn learning(
        &mut self,
        link: &LinkPlan,
        idx: u32,
        master_changed: bool,
        cur: Option<bool>,
    ) -> Result<(), ApplyError> {
        let Some(on) = link.learning else {
            return Ok(());
        };
        let cur = if master_changed { None } else { cur };
        if cur != Some(on) {
            self.nl
                .set_learning(idx, on)
                .map_err(link_err("set bridge-port learning", link.name.as_str()))?;
            if let Some(port) = self.viewed(idx) {
                port.learning = Some(on);
            }
        }
        Ok(())
    }

    /// Makes the address set of link `idx` exactly `want` (auto link-local excepted).
    fn sync_addrs(&mut self, idx: u32, name: &str, want: &[Cidr]) -> Result<(), ApplyError> {
        if self.addrs.is_none() {
            self.addrs = Some(self.nl.addrs().map_err(link_err("dump addresses", name))?);
        }
        let have: Vec<Cidr> = self
            .addrs
            .iter()
            .flatten()
            .filter(|a| a.index == idx)
            .map(|a| a.cidr)
            .collect();
        let want_set: BTreeSet<&Cidr> = want.iter().collect();
        for stale in have
            .iter()
            .filter(|stale| !want_set.contains(stale) && !is_auto_link_local(stale))
        {
            match self.nl.del_addr(idx, *stale) {
                Ok(()) => self.note_addr(idx, *stale, false),
                Err(err) if err.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                    self.note_addr(idx, *stale, false)
                }
                Err(source) => {
                    return Err(ApplyError::Addr {
                        op: "delete address",
                        name: name.into(),
                        cidr: *stale,
                        source,
                    });
                }
            }
        }
        let missing: Vec<Cidr> = want
            .iter()
            .filter(|cidr| !have.contains(cidr))
            .copied()
            .collect();
        self.add_addrs(idx, name, &missing)
    }

    /// Address `cidr` of link `idx` is now there (`present`) or gone: so in the view too.
    fn note_addr(&mut self, idx: u32, cidr: Cidr, present: bool) {
        if let Some(addrs) = &mut self.addrs {
            addrs.retain(|a| a.index != idx || a.cidr != cidr);
            if present {
                addrs.push(Addr { index: idx, cidr });
            }
        }
    }

    fn add_addrs(&mut self, idx: u32, name: &str, want: &[Cidr]) -> Result<(), ApplyError> {
        for cidr in want {
            match self.nl.add_addr(idx, *cidr) {
                Ok(()) => self.note_addr(idx, *cidr, true),
                Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
                    self.note_addr(idx, *cidr, true)
                }
                Err(source) => {
                    return Err(ApplyError::Addr {
                        op: "add address",
                        name: name.into(),
                        cidr: *cidr,
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Current value of each planned sysctl, before any change.
pub fn sysctls_before(plan: &PodNetPlan) -> Vec<(String, Option<String>)> {
    plan.sysctls
        .iter()
        .map(|s| (s.path.clone(), sysctl::read(&s.path).ok()))
        .collect()
}
