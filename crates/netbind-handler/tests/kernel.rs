//! Kernel tier: phase 1 applied to real network namespaces, read back with `ip -j` /
//! `nft` / procfs and compared with the plan. Needs root (CI runs as root).
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use common::*;
use netbind_plan::plan::{LinkKind, MacPlan, PodNetPlan};

#[test]
fn helper_op() {
    helper_op_body();
}

/// `ip -j` prints a tap's owner as a number, or as the name when the id has one.
fn id_is(doc: &serde_json::Value, db: &str, id: u32) -> bool {
    if let Some(num) = doc.as_u64() {
        return num == u64::from(id);
    }
    let Some(name) = doc.as_str() else {
        return false;
    };
    std::fs::read_to_string(db)
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            fields.first() == Some(&name) && fields.get(2) == Some(&id.to_string().as_str())
        })
}

fn find<'a>(links: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    links
        .iter()
        .find(|l| l["ifname"] == name)
        .unwrap_or_else(|| panic!("link {name} missing"))
}

/// The kernel state of the pod equals the plan: links, addresses, taps, sysctls, nftables.
fn assert_matches_plan(pod: &Pod, plan: &PodNetPlan) {
    let links = links_json(&pod.name);
    let addrs = addrs_json(&pod.name);
    for lp in &plan.links {
        let link = find(&links, lp.name.as_str());
        let kind = link["linkinfo"]["info_kind"].as_str().unwrap_or("-");
        let want_kind = match &lp.kind {
            LinkKind::Bridge => vec!["bridge"],
            LinkKind::Dummy => vec!["dummy", "ifb"],
            LinkKind::Tap { .. } => vec!["tun"],
            LinkKind::PodInterface { .. } => vec!["veth"],
        };
        assert!(
            want_kind.contains(&kind),
            "{}: kind {kind}, want {want_kind:?}",
            lp.name
        );
        if let Some(mtu) = lp.mtu {
            assert_eq!(link["mtu"], mtu, "{} mtu", lp.name);
        }
        assert_eq!(
            link.get("master").and_then(|m| m.as_str()),
            lp.master.as_ref().map(|m| m.as_str()),
            "{} master",
            lp.name
        );
        let up = link["flags"].as_array().unwrap().iter().any(|f| f == "UP");
        assert_eq!(up, lp.up, "{} up", lp.name);
        match &lp.mac {
            Some(MacPlan::Fixed(m)) if kind != "ifb" => {
                assert_eq!(link["address"], m.to_string(), "{} mac", lp.name)
            }
            Some(MacPlan::CopyFrom(_)) => {
                let LinkKind::PodInterface { original_mac, .. } = &lp.kind else {
                    panic!()
                };
                assert_ne!(
                    link["address"],
                    original_mac.to_string(),
                    "{}: the pod MAC must be freed for the guest",
                    lp.name
                );
            }
            _ => {}
        }
        if let Some(on) = lp.learning {
            assert_eq!(
                link["linkinfo"]["info_slave_data"]["learning"], on,
                "{} learning",
                lp.name
            );
        }
        if let LinkKind::Tap {
            owner,
            group,
            multi_queue,
            ..
        } = &lp.kind
        {
            let data = &link["linkinfo"]["info_data"];
            assert!(
                id_is(&data["user"], "/etc/passwd", *owner)
                    && id_is(&data["group"], "/etc/group", *group),
                "{} owner/group: {data}",
                lp.name
            );
            assert_eq!(data["persist"], true, "{} persistent", lp.name);
            assert_eq!(data["multi_queue"], *multi_queue, "{} multi_queue", lp.name);
            assert_eq!(data["type"], "tap");
        }
        let got_addrs = addrs
            .iter()
            .find(|got_addrs| got_addrs["ifname"] == lp.name.as_str())
            .expect("addr entry");
        let mut have: Vec<String> = got_addrs["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| {
                !(up && x["family"] == "inet6"
                    && x["local"].as_str().unwrap().starts_with("fe80:")
                    && x["prefixlen"] == 64
                    && !lp
                        .addresses
                        .iter()
                        .any(|c| c.addr().to_string() == x["local"].as_str().unwrap()))
            })
            .map(|x| format!("{}/{}", x["local"].as_str().unwrap(), x["prefixlen"]))
            .collect();
        have.sort();
        let mut want: Vec<String> = lp.addresses.iter().map(|c| c.to_string()).collect();
        want.sort();
        assert_eq!(have, want, "{} addresses", lp.name);
    }
    for sysctl in &plan.sysctls {
        assert_eq!(
            pod.exec(&format!("cat /proc/sys/{}", sysctl.path)).trim(),
            sysctl.value,
            "sysctl {}",
            sysctl.path
        );
    }
    // The ruleset in the pod is exactly the plan's: the same batch applied to an empty
    // scratch namespace lists identically (and nothing else is in the pod).
    let scratch = Pod::with_eth0(Stack::V4, false);
    let batch = scratch.dir.path().join("batch.json");
    std::fs::write(&batch, plan.nftables.ruleset.json_batch().to_string()).unwrap();
    if !plan.nftables.ruleset.is_empty() {
        scratch.exec(&format!("nft -j -f {}", batch.display()));
    }
    assert_eq!(
        pod.exec("nft -s list ruleset"),
        scratch.exec("nft -s list ruleset"),
        "nftables ruleset"
    );
}

fn check_binding(vmi: &str, stack: Stack, gates: &[&str]) -> Pod {
    let pod = Pod::new(stack);
    let plan = plan_for(vmi, &pod.observed(), gates);
    let mut extra = Vec::new();
    for gate in gates {
        extra.extend(["--feature-gate", gate]);
    }
    pod.setup_ok(vmi, &extra);
    assert_matches_plan(&pod, &plan);
    let path = std::fs::read(pod.handoff_dir().join("handoff.json")).expect("hand-off written");
    assert_eq!(
        netbind_model::handoff::Handoff::from_json(&path).expect("valid hand-off"),
        plan.handoff
    );
    pod
}

#[test]
fn masquerade_ipv4_matches_plan() {
    if require_root() {
        check_binding("examples/vmi-masquerade.yaml", Stack::V4, &[]);
    }
}

#[test]
fn masquerade_ipv6_matches_plan() {
    if require_root() {
        check_binding("examples/vmi-masquerade.yaml", Stack::V6, &[]);
    }
}

#[test]
fn masquerade_dual_stack_matches_plan() {
    if require_root() {
        check_binding("examples/vmi-dual-stack.yaml", Stack::Dual, &[]);
    }
}

#[test]
fn masquerade_ports_matches_plan() {
    if require_root() {
        check_binding("examples/vmi-ports.yaml", Stack::V4, &[]);
    }
}

#[test]
fn masquerade_port_ranges_matches_plan() {
    if require_root() {
        check_binding(
            "testdata/vmi/port-ranges.yaml",
            Stack::Dual,
            &["PortRangesSpec"],
        );
    }
}

#[test]
fn masquerade_multiqueue_tap() {
    if require_root() {
        check_binding("testdata/vmi/multiqueue.yaml", Stack::V4, &[]);
    }
}

#[test]
fn bridge_on_pod_network_matches_plan() {
    if require_root() {
        let pod = check_binding("examples/vmi-bridge.yaml", Stack::V4, &[]);
        // The pod IP moved to the placeholder `eth0`; the bridge has the fake address.
        let addrs = pod.exec("ip -br addr show eth0");
        assert!(addrs.contains("10.244.0.5/24"), "{addrs}");
    }
}

#[test]
fn multus_secondary_bridge_matches_plan() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    add_multus_blue(&pod);
    let vmi = "examples/vmi-masquerade-multus.yaml";
    let plan = plan_for(vmi, &pod.observed(), &[]);
    pod.setup_ok(vmi, &[]);
    assert_matches_plan(&pod, &plan);
    let tap = find(&links_json(&pod.name), "tap16477688c0e").clone();
    assert_eq!(tap["master"], "k6t-16477688c0e");
    assert_eq!(tap["mtu"], 9000);
}

#[test]
fn tap_owner_and_group_are_enforced() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    pod.setup_ok("examples/vmi-masquerade.yaml", &[]);
    assert_eq!(
        run_unprivileged(&pod, 107, 107, "tap:tap0:0"),
        Outcome::Ok,
        "uid 107 with no capability attaches"
    );
    assert_eq!(
        run_unprivileged(&pod, 108, 108, "tap:tap0:0"),
        Outcome::Errno(libc::EPERM),
        "uid 108 is refused"
    );
    // Owner AND group: the right uid with another group is refused too.
    assert_eq!(
        run_unprivileged(&pod, 107, 108, "tap:tap0:0"),
        Outcome::Errno(libc::EPERM)
    );
    // A multi-queue attach on the single-queue tap fails (the flags must match).
    assert_eq!(
        run_unprivileged(&pod, 107, 107, "tap:tap0:1"),
        Outcome::Errno(libc::EINVAL)
    );
}

#[test]
fn launcher_binds_dhcp_ports_without_capability() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::Dual);
    assert_eq!(
        run_unprivileged(&pod, 107, 107, "bind:0.0.0.0:67"),
        Outcome::Errno(libc::EACCES),
        "before setup"
    );
    pod.setup_ok("examples/vmi-dual-stack.yaml", &[]);
    assert_eq!(
        run_unprivileged(&pod, 107, 107, "bind:0.0.0.0:67"),
        Outcome::Ok
    );
    assert_eq!(
        run_unprivileged(&pod, 107, 107, "bind:[::]:547"),
        Outcome::Ok
    );
    assert_eq!(
        run_unprivileged(&pod, 107, 107, "bind:0.0.0.0:53"),
        Outcome::Errno(libc::EACCES),
        "ports below 67 stay privileged"
    );
}

/// Starts a rogue DHCP server (dnsmasq, plain UDP) in the pod on `iface` and asks for a lease
/// from the node side of the veth with busybox udhcpc. True if a lease arrived.
fn node_gets_lease_from_pod(pod: &Pod, iface: &str, range: &str) -> bool {
    let pidfile = pod.dir.path().join("dnsmasq.pid");
    let leases = pod.dir.path().join("dnsmasq.leases");
    pod.exec(&format!(
        "dnsmasq --no-resolv --no-hosts --conf-file=/dev/null --port=0 --interface={iface} --bind-interfaces \
         --no-ping --dhcp-range={range} --dhcp-leasefile={} --pid-file={}",
        leases.display(),
        pidfile.display()
    ));
    let got = sh(&format!(
        "ip netns exec {}-node busybox udhcpc -i veth-n -f -q -n -t 3 -T 1 -s /bin/true",
        pod.name
    ))
    .status
    .success();
    let _ = sh(&format!("kill $(cat {})", pidfile.display()));
    got
}

#[test]
fn dhcp_leak_guard_masquerade() {
    if !(require_root() && require_tool("dnsmasq") && require_tool("busybox")) {
        return;
    }
    let pod = Pod::new(Stack::V4);
    let range = "10.244.0.100,10.244.0.200,255.255.255.0";
    assert!(
        node_gets_lease_from_pod(&pod, "eth0", range),
        "control: without netbind the pod can answer DHCP"
    );
    pod.setup_ok("examples/vmi-masquerade.yaml", &[]);
    assert!(
        !node_gets_lease_from_pod(&pod, "eth0", range),
        "the guard must drop DHCP replies leaving the pod"
    );
}

#[test]
fn dhcp_leak_guard_bridge() {
    if !(require_root() && require_tool("dnsmasq") && require_tool("busybox")) {
        return;
    }
    let pod = Pod::new(Stack::V4);
    pod.setup_ok("examples/vmi-bridge.yaml", &[]);
    // A rogue server on the in-pod bridge: its broadcast replies would flood to eth0-nic.
    pod.exec("ip addr add 10.99.0.1/24 dev k6t-eth0");
    let range = "10.99.0.100,10.99.0.200,255.255.255.0";
    assert!(
        !node_gets_lease_from_pod(&pod, "k6t-eth0", range),
        "the guard must drop DHCP replies on eth0-nic"
    );
    pod.exec("nft delete table bridge netbind");
    assert!(
        node_gets_lease_from_pod(&pod, "k6t-eth0", range),
        "control: without the guard the lease leaks"
    );
}

#[test]
fn the_cluster_configuration_can_be_kubevirts_cr() {
    if !require_root() {
        return;
    }
    // A VMI with no interface takes the CR's defaultNetworkInterface: masquerade, whose
    // gateway 10.0.2.1 phase 1 puts on the bridge.
    let pod = Pod::new(Stack::V4);
    let cr = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cr.path(),
        "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {name: kubevirt}\nspec:\n  configuration:\n    network:\n      defaultNetworkInterface: masquerade\n",
    )
    .unwrap();
    let cr_path = cr.path().display().to_string();
    pod.setup_ok(
        "testdata/vmi/no-interfaces.yaml",
        &["--kubevirt-config", &cr_path],
    );
    let gateway = addrs_json(&pod.name).iter().any(|l| {
        l["ifname"] == "k6t-eth0"
            && l["addr_info"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["local"] == "10.0.2.1"))
    });
    assert!(
        gateway,
        "masquerade from the CR: {:#?}",
        addrs_json(&pod.name)
    );
    // A misspelt field is refused before anything changes.
    std::fs::write(
        cr.path(),
        "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {name: kubevirt}\nspec:\n  configuration:\n    network:\n      defaultNetworkInterfaces: masquerade\n",
    )
    .unwrap();
    let other = Pod::new(Stack::V4);
    let out = other.setup(
        "testdata/vmi/no-interfaces.yaml",
        &["--kubevirt-config", &cr_path],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("defaultNetworkInterfaces"), "{err}");
}

/// A binding plugin with `domainAttachmentType: managedTap` (declared in the KubeVirt CR):
/// phase 1 makes the bridge binding's links without the fake bridge address, and no DHCP.
#[test]
fn managed_tap_plugin_matches_plan() {
    if !require_root() {
        return;
    }
    let vmi = "testdata/vmi/plugin-managed-tap.yaml";
    let cr = root().join("testdata/kubevirt/binding-plugins.yaml");
    let pod = Pod::new(Stack::V4);
    let cluster =
        netbind_model::cluster_objects::kubevirt_config(&std::fs::read_to_string(&cr).expect("CR"))
            .expect("valid CR");
    let text = std::fs::read_to_string(root().join(vmi)).expect("vmi");
    let admitted = netbind_model::check::check_vmi(&text, &cluster).expect("valid vmi");
    let observed = pod.observed();
    let opts = netbind_plan::PlanOptions {
        owner: netbind_plan::Owner { uid: 107, gid: 107 },
        resolv_conf: "",
        cluster: &cluster,
        networks: None,
    };
    let plan = netbind_plan::plan(&admitted, &observed, &opts).expect("plan");
    pod.setup_ok(vmi, &["--kubevirt-config", &cr.display().to_string()]);
    assert_matches_plan(&pod, &plan);
    let bridge = addrs_json(&pod.name)
        .into_iter()
        .find(|link| link["ifname"] == "k6t-eth0")
        .expect("the bridge");
    assert_eq!(
        bridge["addr_info"]
            .as_array()
            .map(|addrs| addrs.iter().filter(|a| a["family"] == "inet").count()),
        Some(0),
        "no fake address on a managedTap bridge: {bridge:#}"
    );
    let handoff = std::fs::read(pod.handoff_dir().join("handoff.json")).expect("hand-off");
    let handoff = netbind_model::handoff::Handoff::from_json(&handoff).expect("valid hand-off");
    assert!(
        handoff.interfaces.iter().all(|i| i.dhcpv4.is_none()),
        "{handoff:?}"
    );
}

/// nftables go over netlink from the handler's own process: with no `nft` on PATH phase 1
/// still applies its tables; asked for the binary (`NETBIND_NFT=exec`), it refuses up front.
#[test]
fn nftables_need_no_nft_process() {
    if !require_root() {
        return;
    }
    let run = |pod: &Pod, exec: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_netbind-handler"));
        cmd.current_dir(root())
            .env("PATH", "/nonexistent")
            .args(["setup", "--netns", &pod.netns()])
            .arg("--handoff-dir")
            .arg(pod.handoff_dir())
            .arg("--state-dir")
            .arg(pod.state_dir())
            .args(["--vmi", "examples/vmi-masquerade.yaml"]);
        if exec {
            cmd.env("NETBIND_NFT", "exec");
        }
        cmd.output().expect("handler runs")
    };
    let pod = Pod::new(Stack::V4);
    let out = run(&pod, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = pod.exec("nft list tables");
    assert!(
        tables.contains("table ip nat") && tables.contains("table inet netbind"),
        "{tables}"
    );
    let other = Pod::new(Stack::V4);
    let out = run(&other, true);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs nftables but nft was not found"),
        "{err}"
    );
    assert_eq!(other.exec("nft list tables"), "");
}

/// The ifindex of each named link (the same index after a re-run: the link was not remade).
fn indexes(ns: &str, names: &[&str]) -> Vec<u64> {
    let links = links_json(ns);
    names
        .iter()
        .map(|name| find(&links, name)["ifindex"].as_u64().unwrap())
        .collect()
}

#[test]
fn hot_plug_and_unplug_of_a_secondary_bridge_leave_the_running_interface_alone() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    // blue's guest is checked against spoofing, so blue has nftables rules of its own.
    let spoof = ["--spoof-check", "default/blue-net"];
    let before = "testdata/vmi/multus-before-hotplug.yaml";
    pod.setup_ok(before, &spoof);
    let running = ["k6t-eth0", "tap0"];
    let first = indexes(&pod.name, &running);
    let nat = pod.exec("nft -s list table ip nat");

    // Multus adds the hot-plugged network's pod interface to the running pod, then the VMI
    // gains the interface and phase 1 runs again.
    add_multus_blue(&pod);
    let pristine_blue = pod.exec("ip -br addr show pod16477688c0e");
    let blue_routes = pod.exec("ip route show dev pod16477688c0e");
    let plugged = "examples/vmi-masquerade-multus.yaml";
    pod.setup_ok(plugged, &spoof);
    assert_eq!(
        indexes(&pod.name, &running),
        first,
        "the running interface's links were remade"
    );
    assert_eq!(
        pod.exec("nft -s list table ip nat"),
        nat,
        "its NAT rules changed"
    );
    let links = links_json(&pod.name);
    let tap = find(&links, "tap16477688c0e");
    assert_eq!(tap["master"], "k6t-16477688c0e");
    assert_eq!(tap["mtu"], 9000);
    let rules = pod.exec("nft -s list ruleset");
    assert!(
        rules.contains("tap16477688c0e"),
        "no spoof rules for blue: {rules}"
    );
    let handoff = std::fs::read_to_string(pod.handoff_dir().join("handoff.json")).unwrap();
    let handoff: serde_json::Value = serde_json::from_str(&handoff).unwrap();
    let names = |handoff: &serde_json::Value| -> Vec<String> {
        handoff["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|iface| iface["network"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&handoff), ["default", "blue"]);

    // Hot-unplug: `state: absent` takes away blue's links and hand-off entry and gives the
    // pod interface back as Multus made it, still without touching the running interface.
    pod.setup_ok("testdata/vmi/multus-blue-absent.yaml", &spoof);
    assert_eq!(indexes(&pod.name, &running), first);
    assert_eq!(pod.exec("nft -s list table ip nat"), nat);
    let links = links_json(&pod.name);
    for gone in ["k6t-16477688c0e", "tap16477688c0e", "pod16477688c0e-nic"] {
        assert!(
            !links.iter().any(|link| link["ifname"] == gone),
            "{gone} is left after the unplug"
        );
    }
    let rules = pod.exec("nft -s list ruleset");
    assert!(
        !rules.contains("16477688c0e"),
        "blue's rules are left: {rules}"
    );
    assert_eq!(pod.exec("ip -br addr show pod16477688c0e"), pristine_blue);
    assert_eq!(pod.exec("ip route show dev pod16477688c0e"), blue_routes);
    let handoff = std::fs::read_to_string(pod.handoff_dir().join("handoff.json")).unwrap();
    assert_eq!(names(&serde_json::from_str(&handoff).unwrap()), ["default"]);
    let out = pod.teardown();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn passt_binding_sets_the_pod_sysctls_and_makes_no_link() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    let sysctls = "sysctl -n net.ipv4.ping_group_range net.ipv4.ip_unprivileged_port_start";
    let before = pod.exec(sysctls);
    let links: Vec<String> = links_json(&pod.name)
        .iter()
        .map(|link| link["ifname"].as_str().unwrap().to_string())
        .collect();
    let vmi = "testdata/vmi/passt.yaml";
    pod.setup_ok(vmi, &["--feature-gate", "PasstBinding"]);
    assert_eq!(pod.exec(sysctls), "107\t107\n0\n");
    let after: Vec<String> = links_json(&pod.name)
        .iter()
        .map(|link| link["ifname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after, links, "the passt binding needs no link of netbind's");
    assert!(pod.exec("nft list ruleset").trim().is_empty());
    let handoff = std::fs::read_to_string(pod.handoff_dir().join("handoff.json")).unwrap();
    assert!(handoff.contains("\"passt\""), "{handoff}");
    let out = pod.teardown();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pod.exec(sysctls), before, "teardown restores the sysctls");
}

#[test]
fn setup_reports_where_its_time_went() {
    if !require_root() {
        return;
    }
    let pod = Pod::new(Stack::V4);
    let out = pod.setup("examples/vmi-masquerade.yaml", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = report["steps"].as_array().expect("steps in the report");
    let step = |name: &str| {
        steps
            .iter()
            .find(|step| step["step"] == name)
            .unwrap_or_else(|| panic!("no step {name:?} in {steps:?}"))
    };
    for name in [
        "read and admit the VMI",
        "observe",
        "plan",
        "nftables transaction",
        "links and addresses",
    ] {
        assert!(step(name)["beside"].is_null(), "{name} is a step in line");
    }
    // Over netlink the transaction runs in line, before the links: nothing ran beside them.
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    let at = |name: &str| names.iter().position(|n| *n == name);
    assert!(
        at("nftables transaction") < at("links and addresses"),
        "the ruleset goes first: {names:?}"
    );
    assert!(
        steps.iter().all(|step| step["beside"].is_null()),
        "{steps:?}"
    );
    let nft = step("nftables transaction");
    assert!(nft["micros"].as_u64().is_some_and(|us| us > 0), "{nft}");
}

/// "One dump per need": a first setup applies its plan from the link dump its observation
/// made, keeping that view current with what it changes (a link it makes is read back alone),
/// instead of dumping every link again before each link step. The view it ends with must be
/// what the kernel has, field for field; for the bridge binding that includes the bridge's
/// MTU and MAC, which the kernel adjusts when a port joins.
#[test]
fn a_first_setup_dumps_the_links_once_and_ends_with_the_kernels_view() {
    use netbind_handler::apply::Applier;
    use netbind_handler::netns::{Netns, NetnsTarget};
    use netbind_handler::{netlink::Netlink, nft::Nft, observe, selinux, timing::StepClock};
    if !require_root() {
        return;
    }
    for vmi in ["examples/vmi-masquerade.yaml", "examples/vmi-bridge.yaml"] {
        let pod = Pod::new(Stack::V4);
        let ns = Netns::open(&NetnsTarget::Path(pod.netns().into())).expect("open netns");
        let (dumped, view, kernel) = ns
            .run_here(|| {
                let mut nl = Netlink::open().expect("netlink");
                let (observed, dumps) = observe::observe_with_dumps(&mut nl).expect("observe");
                let plan = plan_for(vmi, &observed, &[]);
                let before = nl.dumps();
                let nft = Nft::select(std::path::Path::new("nft")).expect("nftables");
                let env = selinux::SelinuxEnv::default();
                let label = selinux::LabelDecision::Disabled;
                let mut applier = Applier::new(&mut nl, &nft, &label, &env);
                applier.fresh = true;
                applier.seed(dumps);
                applier.apply(&plan, &mut StepClock::new()).expect("apply");
                let mut view = applier.view().expect("view");
                drop(applier);
                let dumped = nl.dumps() - before;
                let mut kernel = nl.links().expect("dump");
                view.sort_by_key(|l| l.index);
                kernel.sort_by_key(|l| l.index);
                (dumped, view, kernel)
            })
            .expect("in the pod");
        assert_eq!(dumped, 0, "{vmi}: link or address dumps while applying");
        assert_eq!(view, kernel, "{vmi}: the applier's view against the kernel");
        assert!(view.len() >= 3, "{vmi}: {view:?}");
    }
}
