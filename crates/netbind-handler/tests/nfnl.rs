//! Kernel tier: the rulesets netbind writes over nfnetlink are the rulesets libnftables (inside
//! `nft`) makes of the same rules. For every golden case's ruleset
//! (`testdata/golden/CASE/plan.json`, which the planner's golden test keeps equal to the
//! planner's output), the JSON batch goes through `nft -j -f -` in one namespace and the
//! netlink batch through netbind in another; both are read
//! back with `nft` (the listing, and `--debug=netlink`: every expression, register and set
//! element) and must be identical. Needs root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use netbind_handler::nft::{Nft, Op};
use std::net::{Ipv4Addr, Ipv6Addr};

use netbind_plan::nft::{Builder, ChainType, Expr, Family, Field, Hook, Ruleset, Val};
use netbind_testkit::{Namespaces, in_netns, ok, repo_root};

fn ready() -> bool {
    // `nft` is the reference side too.
    netbind_testkit::ready(netbind_testkit::missing_tools(&["ip", "nft"]))
}

fn golden_rulesets() -> Vec<(String, Ruleset)> {
    let dir = repo_root().join("testdata/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("plan.json").is_file())
        .collect();
    cases.sort();
    cases
        .into_iter()
        .filter_map(|case| {
            let plan: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(case.join("plan.json")).unwrap())
                    .unwrap();
            let ruleset: Ruleset =
                serde_json::from_value(plan["nftables"]["ruleset"].clone()).unwrap();
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            (!ruleset.is_empty()).then_some((name, ruleset))
        })
        .collect()
}

/// Forms the golden cases do not reach: intervals that do not start at zero or that reach the
/// top of the key space, a range or a prefix of partial bytes compared on its own, a set of
/// one, a mark, both nat families.
fn edge_ruleset() -> Ruleset {
    let mut b = Builder::default();
    for family in [Family::Inet, Family::Ip, Family::Ip6] {
        b.table(family, "edges");
        b.chain(
            family,
            "edges",
            "c",
            Some((ChainType::Filter, Hook::Prerouting, -5)),
        );
        b.chain(family, "edges", "d", None);
    }
    let v4 = |a, b, c, d| Ipv4Addr::new(a, b, c, d).into();
    let rules = [
        (
            Family::Inet,
            vec![Expr::set(
                Field::Dport("tcp".into()),
                vec![Val::Range(20, 30), Val::Port(443), Val::Range(60000, 65535)],
            )],
        ),
        (
            Family::Inet,
            vec![Expr::differs(
                Field::Dport("udp".into()),
                vec![Val::Range(5000, 5010)],
            )],
        ),
        (
            Family::Inet,
            vec![Expr::one(
                Field::Saddr(Family::Ip),
                Val::Prefix(v4(10, 128, 0, 0), 9),
            )],
        ),
        (
            Family::Inet,
            vec![Expr::differs(
                Field::Daddr(Family::Ip),
                vec![
                    Val::Prefix(v4(10, 0, 0, 0), 8),
                    Val::Addr(v4(192, 168, 1, 1)),
                    Val::Addr(v4(255, 255, 255, 255)),
                ],
            )],
        ),
        (
            Family::Inet,
            vec![Expr::set(
                Field::Saddr(Family::Ip6),
                vec![Val::Addr(Ipv6Addr::LOCALHOST.into())],
            )],
        ),
        (
            Family::Inet,
            vec![
                Expr::one(Field::Mark, Val::Hex(0x1234_5678)),
                Expr::Counter,
                Expr::Return,
            ],
        ),
        (
            Family::Inet,
            vec![
                Expr::set(
                    Field::Iifname,
                    vec![Val::Name("eth0".into()), Val::Name("tap0".into())],
                ),
                Expr::Jump("d".into()),
            ],
        ),
        (
            Family::Ip,
            vec![
                Expr::one(Field::Dport("tcp".into()), Val::Range(8000, 8080)),
                Expr::Drop,
            ],
        ),
        (
            Family::Ip6,
            vec![Expr::differs(
                Field::Icmpv6Type,
                vec![
                    Val::Name("nd-router-advert".into()),
                    Val::Name("echo-request".into()),
                ],
            )],
        ),
    ];
    for (family, exprs) in rules {
        b.rule(family, "edges", "c", exprs);
    }
    for (family, to) in [
        (Family::Ip, v4(10, 0, 2, 2)),
        (Family::Ip6, Ipv6Addr::LOCALHOST.into()),
    ] {
        b.chain(
            family,
            "edges",
            "nat",
            Some((ChainType::Nat, Hook::Prerouting, -100)),
        );
        b.rule(family, "edges", "nat", vec![Expr::Counter, Expr::Dnat(to)]);
        b.chain(
            family,
            "edges",
            "snat",
            Some((ChainType::Nat, Hook::Postrouting, 100)),
        );
        b.rule(family, "edges", "snat", vec![Expr::Snat(to)]);
        b.rule(family, "edges", "snat", vec![Expr::Masquerade]);
    }
    assert!(b.unknown.is_empty(), "{:?}", b.unknown);
    Ruleset { tables: b.ruleset }
}

/// `nft list ruleset` and its `--debug=netlink` form (expressions as the kernel holds them).
fn read_back(ns: &str) -> (String, String) {
    (
        ok(&format!("ip netns exec {ns} nft list ruleset")),
        sorted_elements(&ok(&format!(
            "ip netns exec {ns} nft --debug=netlink list ruleset"
        ))),
    )
}

/// The debug listing with each set's elements sorted: a hash set's dump order follows its
/// random hash seed, so it differs between two namespaces holding the same set.
fn sorted_elements(listing: &str) -> String {
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in listing.lines() {
        if line.starts_with("\telement ") {
            run.push(line);
            continue;
        }
        run.sort_unstable();
        out.append(&mut run);
        out.push(line);
    }
    run.sort_unstable();
    out.append(&mut run);
    out.join("\n")
}

fn apply(ns: &str, backend: Nft, ruleset: &Ruleset, op: Op) {
    in_netns(ns, || backend.apply(ruleset, op, "golden ruleset"))
        .unwrap_or_else(|e| panic!("{ns} {op:?}: {e}"));
}

#[test]
fn every_golden_ruleset_over_netlink_equals_what_nft_makes_of_it() {
    if !ready() {
        return;
    }
    let reference_tool = Nft::Binary("nft".into());
    let mut cases = golden_rulesets();
    assert!(
        cases.len() >= 10,
        "golden cases with rules: {}",
        cases.len()
    );
    cases.push(("edge cases".into(), edge_ruleset()));
    let mut differences = Vec::new();
    for (n, (case, ruleset)) in cases.iter().enumerate() {
        let reference = format!("nbt-{}-nfl{n}", std::process::id());
        let ours = format!("nbt-{}-nfn{n}", std::process::id());
        let _cleanup = Namespaces(vec![reference.clone(), ours.clone()]);
        ok(&format!("ip netns add {reference} && ip netns add {ours}"));
        apply(&reference, reference_tool.clone(), ruleset, Op::Create);
        apply(&ours, Nft::Netlink, ruleset, Op::Create);
        let expected = read_back(&reference);
        let got = read_back(&ours);
        if got != expected {
            differences.push(format!(
                "{case}:\n--- nft -j -f\n{}\n{}\n--- netlink\n{}\n{}",
                expected.0, expected.1, got.0, got.1
            ));
            continue;
        }
        // Applying again replaces the tables (one transaction): the same state, not twice
        // the rules; deleting leaves nothing.
        apply(&ours, Nft::Netlink, ruleset, Op::Recreate);
        let again = read_back(&ours);
        // Recreated sets and rules get new handles and set numbers; the listing is the same.
        if again.0 != expected.0 {
            differences.push(format!(
                "{case} after a re-apply:\n{}\nexpected\n{}",
                again.0, expected.0
            ));
        }
        apply(&ours, Nft::Netlink, ruleset, Op::Delete);
        apply(&ours, Nft::Netlink, ruleset, Op::Delete);
        let left = read_back(&ours).0;
        if !left.trim().is_empty() {
            differences.push(format!("{case}: left after delete:\n{left}"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n\n"));
}

/// A VMI with many ports gives a ruleset of thousands of messages: the batch is larger than a
/// socket's default send buffer and its answers than the default receive buffer. It still
/// goes as one transaction, every message is acknowledged (none lost, no timeout), and every
/// rule is there.
#[test]
fn a_ruleset_of_thousands_of_rules_is_one_acknowledged_transaction() {
    if !ready() {
        return;
    }
    let mut b = Builder::default();
    b.table(Family::Inet, "many");
    b.chain(
        Family::Inet,
        "many",
        "c",
        Some((ChainType::Nat, Hook::Prerouting, -100)),
    );
    let rules = 3000u16;
    for port in 1..=rules {
        // Each rule brings an anonymous set: three acknowledged messages per rule.
        b.rule(
            Family::Inet,
            "many",
            "c",
            vec![
                Expr::set(
                    Field::Dport("tcp".into()),
                    vec![Val::Port(port), Val::Port(port + 10_000)],
                ),
                Expr::Counter,
            ],
        );
    }
    let ruleset = Ruleset { tables: b.ruleset };
    let batch = netbind_handler::nfnl::batch(&ruleset, Op::Create).unwrap();
    assert!(
        batch.bytes.len() > 212_992 && batch.ops.len() * 1024 > 212_992,
        "the batch ({} bytes, {} answers) must outgrow the default buffers",
        batch.bytes.len(),
        batch.ops.len()
    );
    let ns = format!("nbt-{}-nfbig", std::process::id());
    let _cleanup = Namespaces(vec![ns.clone()]);
    ok(&format!("ip netns add {ns}"));
    apply(&ns, Nft::Netlink, &ruleset, Op::Create);
    let listed = ok(&format!("ip netns exec {ns} nft list chain inet many c"));
    let counted = listed.lines().filter(|l| l.contains("tcp dport {")).count();
    assert_eq!(counted, usize::from(rules), "rules listed");
    assert!(
        listed.contains("tcp dport { 3000, 13000 }"),
        "the last rule"
    );
}

/// CHECK's read-back: a table is found over netlink exactly when `nft` lists it, for each
/// family netbind uses, and a table deleted behind netbind's back is reported missing.
#[test]
fn tables_are_found_over_netlink_as_nft_lists_them() {
    if !ready() {
        return;
    }
    let pod = format!("nbt-{}-tables", std::process::id());
    let _cleanup = Namespaces(vec![pod.clone()]);
    ok(&format!("ip netns add {pod}"));
    let mut b = Builder::default();
    for (family, name) in [
        (Family::Ip, "nat"),
        (Family::Ip6, "nat"),
        (Family::Inet, "netbind"),
    ] {
        b.table(family, name);
    }
    let ruleset = Ruleset { tables: b.ruleset };
    apply(&pod, Nft::Netlink, &ruleset, Op::Create);
    let exists =
        |family, name: &str| in_netns(&pod, || Nft::Netlink.table_exists(family, name)).unwrap();
    let listed = |family: Family, name: &str| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod,
                "nft",
                "list",
                "table",
                family.as_str(),
                name,
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    for (family, name) in [
        (Family::Ip, "nat"),
        (Family::Ip6, "nat"),
        (Family::Inet, "netbind"),
        (Family::Ip, "netbind"),
        (Family::Inet, "nat"),
        (Family::Bridge, "nat"),
    ] {
        assert_eq!(
            exists(family, name),
            listed(family, name),
            "{} {name}",
            family.as_str()
        );
    }
    ok(&format!("ip netns exec {pod} nft delete table ip nat"));
    assert!(!exists(Family::Ip, "nat"));
    assert!(exists(Family::Ip6, "nat"));
}
