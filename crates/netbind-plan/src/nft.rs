//! nftables rulesets as data. One value renders to:
//! - KubeVirt's `nft add ...` command text (golden-tested against KubeVirt's rule text and order);
//! - a libnftables JSON batch (what `nft -j -f -` or libnftables apply as ONE transaction, the
//!   handler's fallbacks); the handler's default lowers the same value to nf_tables netlink
//!   messages itself (`netbind-handler`'s `nfnl`).
//!
//! Each table we own is (re)created inside the batch with `add` + `delete` + `add`, so applying
//! the same ruleset twice converges to the same state instead of duplicating rules.

use std::fmt::Write as _;
use std::net::IpAddr;

use netbind_model::MacAddr;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ip,
    Ip6,
    Inet,
    Bridge,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChain {
    #[serde(rename = "type")]
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

/// A base chain's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainType {
    Filter,
    Nat,
}

/// The netfilter hook a base chain is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl std::fmt::Display for ChainType {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str(match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        })
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str(match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub exprs: Vec<Expr>,
}

/// What a match compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// `ip saddr` / `ip6 saddr` (family from the value's table).
    Saddr(Family),
    Daddr(Family),
    Iifname,
    Oifname,
    /// `tcp dport`, `udp dport`.
    Dport(String),
    Sport(String),
    /// `ether saddr`, `ether type` (bridge family).
    EtherSaddr,
    EtherType,
    /// `arp saddr ether`, `arp saddr ip`: the sender fields of an ARP packet.
    ArpSaddrEther,
    ArpSaddrIp,
    /// `meta mark`: the packet's mark (set from its socket's SO_MARK).
    Mark,
    /// `icmpv6 type`.
    Icmpv6Type,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Val {
    Addr(IpAddr),
    Port(u16),
    Range(u16, u16),
    Name(String),
    /// An address prefix, e.g. `fe80::/10`.
    Prefix(IpAddr, u8),
    Mac(MacAddr),
    /// A 32-bit value written in hex (marks).
    Hex(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// `<field> <value>` or, with `braces`, `<field> { v1, v2 }` (an anonymous set).
    Match {
        field: Field,
        values: Vec<Val>,
        braces: bool,
    },
    /// `<field> != <value>` or `<field> != { v1, v2 }`: the field is none of the values.
    Differs {
        field: Field,
        values: Vec<Val>,
    },
    Counter,
    Masquerade,
    Jump(String),
    Dnat(IpAddr),
    Snat(IpAddr),
    Return,
    Drop,
}

impl Expr {
    pub fn one(field: Field, val: Val) -> Expr {
        Expr::Match {
            field,
            values: vec![val],
            braces: false,
        }
    }
    pub fn set(field: Field, values: Vec<Val>) -> Expr {
        Expr::Match {
            field,
            values,
            braces: true,
        }
    }
    pub fn differs(field: Field, values: Vec<Val>) -> Expr {
        Expr::Differs { field, values }
    }
}

fn val_text(val: &Val) -> String {
    match val {
        Val::Addr(value) => value.to_string(),
        Val::Port(port) => port.to_string(),
        Val::Range(value, upper) => format!("{value}-{upper}"),
        Val::Name(name) => name.clone(),
        Val::Prefix(value, len) => format!("{value}/{len}"),
        Val::Mac(mac) => mac.to_string(),
        Val::Hex(val) => format!("0x{val:08x}"),
    }
}

fn field_text(field: &Field) -> String {
    match field {
        Field::Saddr(fam) => format!("{} saddr", fam.as_str()),
        Field::Daddr(fam) => format!("{} daddr", fam.as_str()),
        Field::Iifname => "iifname".into(),
        Field::Oifname => "oifname".into(),
        Field::Dport(proto) => format!("{proto} dport"),
        Field::Sport(proto) => format!("{proto} sport"),
        Field::EtherSaddr => "ether saddr".into(),
        Field::EtherType => "ether type".into(),
        Field::ArpSaddrEther => "arp saddr ether".into(),
        Field::ArpSaddrIp => "arp saddr ip".into(),
        Field::Mark => "meta mark".into(),
        Field::Icmpv6Type => "icmpv6 type".into(),
    }
}

impl Rule {
    /// The rule body as KubeVirt passes it to `nft add rule`.
    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .exprs
            .iter()
            .map(|e| match e {
                Expr::Match {
                    field,
                    values,
                    braces,
                } => {
                    let vals: Vec<String> = values.iter().map(val_text).collect();
                    if *braces {
                        format!("{} {{ {} }}", field_text(field), vals.join(", "))
                    } else {
                        format!("{} {}", field_text(field), vals.join(", "))
                    }
                }
                Expr::Differs { field, values } => {
                    let vals: Vec<String> = values.iter().map(val_text).collect();
                    if values.len() > 1 {
                        format!("{} != {{ {} }}", field_text(field), vals.join(", "))
                    } else {
                        format!("{} != {}", field_text(field), vals.join(", "))
                    }
                }
                Expr::Counter => "counter".into(),
                Expr::Masquerade => "masquerade".into(),
                Expr::Jump(target) => format!("jump {target}"),
                Expr::Dnat(addr) => format!("dnat to {addr}"),
                Expr::Snat(addr) => format!("snat to {addr}"),
                Expr::Return => "return".into(),
                Expr::Drop => "drop".into(),
            })
            .collect();
        parts.join(" ")
    }

    fn json_exprs(&self) -> Vec<Value> {
        self.exprs.iter().map(expr_json).collect()
    }
}

fn val_json(val: &Val) -> Value {
    match val {
        Val::Addr(value) => json!(value.to_string()),
        Val::Port(port) => json!(port),
        Val::Range(value, upper) => json!({ "range": [value, upper] }),
        Val::Name(name) => json!(name),
        Val::Prefix(value, len) => json!({ "prefix": { "addr": value.to_string(), "len": len } }),
        Val::Mac(mac) => json!(mac.to_string()),
        Val::Hex(val) => json!(val),
    }
}

fn field_json(field: &Field) -> Value {
    match field {
        Field::Saddr(fam) => json!({ "payload": { "protocol": fam.as_str(), "field": "saddr" } }),
        Field::Daddr(fam) => json!({ "payload": { "protocol": fam.as_str(), "field": "daddr" } }),
        Field::Iifname => json!({ "meta": { "key": "iifname" } }),
        Field::Oifname => json!({ "meta": { "key": "oifname" } }),
        Field::Dport(proto) => json!({ "payload": { "protocol": proto, "field": "dport" } }),
        Field::Sport(proto) => json!({ "payload": { "protocol": proto, "field": "sport" } }),
        Field::EtherSaddr => json!({ "payload": { "protocol": "ether", "field": "saddr" } }),
        Field::EtherType => json!({ "payload": { "protocol": "ether", "field": "type" } }),
        Field::ArpSaddrEther => json!({ "payload": { "protocol": "arp", "field": "saddr ether" } }),
        Field::ArpSaddrIp => json!({ "payload": { "protocol": "arp", "field": "saddr ip" } }),
        Field::Mark => json!({ "meta": { "key": "mark" } }),
        Field::Icmpv6Type => json!({ "payload": { "protocol": "icmpv6", "field": "type" } }),
    }
}

fn expr_json(expr: &Expr) -> Value {
    match expr {
        Expr::Match {
            field,
            values,
            braces,
        } => {
            let right = if *braces || values.len() > 1 {
                json!({ "set": values.iter().map(val_json).collect::<Vec<_>>() })
            } else {
                values.first().map(val_json).unwrap_or(Value::Null)
            };
            json!({ "match": { "op": "==", "left": field_json(field), "right": right } })
        }
        Expr::Differs { field, values } => {
            let right = if values.len() > 1 {
                json!({ "set": values.iter().map(val_json).collect::<Vec<_>>() })
            } else {
                values.first().map(val_json).unwrap_or(Value::Null)
            };
            json!({ "match": { "op": "!=", "left": field_json(field), "right": right } })
        }
        Expr::Counter => json!({ "counter": null }),
        Expr::Masquerade => json!({ "masquerade": null }),
        Expr::Jump(target) => json!({ "jump": { "target": target } }),
        Expr::Dnat(addr) => json!({ "dnat": { "addr": addr.to_string() } }),
        Expr::Snat(addr) => json!({ "snat": { "addr": addr.to_string() } }),
        Expr::Return => json!({ "return": null }),
        Expr::Drop => json!({ "drop": null }),
    }
}

impl Ruleset {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// KubeVirt's command sequence (`add table`, `add chain`, `add rule`), one per line. Rules
    /// are listed in the order KubeVirt appends them, which may interleave chains.
    pub fn kubevirt_text(&self, order: &[RuleRef]) -> String {
        let mut out = String::new();
        for table in &self.tables {
            let (family, name) = (table.family.as_str(), &table.name);
            let _ = writeln!(out, "add table {family} {name}");
            for chain in &table.chains {
                match &chain.base {
                    Some(base) => {
                        let _ = writeln!(
                            out,
                            "add chain {family} {name} {} {{ type {} hook {} priority {}; }}",
                            chain.name, base.kind, base.hook, base.priority
                        );
                    }
                    None => {
                        let _ = writeln!(out, "add chain {family} {name} {}", chain.name);
                    }
                }
            }
            for rule_name in order.iter().filter(|rule_name| {
                rule_name.family == table.family && rule_name.table == table.name
            }) {
                if let Some(rule) = self.rule(rule_name) {
                    let _ = writeln!(
                        out,
                        "add rule {family} {name} {} {}",
                        rule_name.chain,
                        rule.text()
                    );
                }
            }
        }
        out
    }

    fn rule(&self, rule: &RuleRef) -> Option<&Rule> {
        self.tables
            .iter()
            .find(|t| t.family == rule.family && t.name == rule.table)?
            .chains
            .iter()
            .find(|c| c.name == rule.chain)?
            .rules
            .get(rule.index)
    }

    /// One libnftables JSON batch that (re)creates every table of this ruleset atomically.
    pub fn json_batch(&self) -> Value {
        self.batch(true)
    }

    /// The same batch for a namespace known not to hold these tables yet: no delete prefix.
    pub fn json_create_batch(&self) -> Value {
        self.batch(false)
    }

    fn batch(&self, recreate: bool) -> Value {
        let mut cmds = Vec::new();
        for table_plan in &self.tables {
            let table = json!({ "family": table_plan.family.as_str(), "name": table_plan.name });
            if recreate {
                // add-then-delete makes "delete" succeed whether or not the table exists.
                cmds.push(json!({ "add": { "table": table } }));
                cmds.push(json!({ "delete": { "table": table } }));
            }
            cmds.push(json!({ "add": { "table": table } }));
            for chain_plan in &table_plan.chains {
                let mut chain = json!({ "family": table_plan.family.as_str(), "table": table_plan.name, "name": chain_plan.name });
                if let (Some(base), Some(obj)) = (&chain_plan.base, chain.as_object_mut()) {
                    obj.insert("type".into(), json!(base.kind));
                    obj.insert("hook".into(), json!(base.hook));
                    obj.insert("prio".into(), json!(base.priority));
                    obj.insert("policy".into(), json!("accept"));
                }
                cmds.push(json!({ "add": { "chain": chain } }));
            }
            for chain_plan in &table_plan.chains {
                for rule in &chain_plan.rules {
                    cmds.push(json!({ "add": { "rule": {
                        "family": table_plan.family.as_str(), "table": table_plan.name, "chain": chain_plan.name,
                        "expr": rule.json_exprs(),
                    } } }));
                }
            }
        }
        json!({ "nftables": cmds })
    }

    /// A batch that deletes every table of this ruleset (tolerating absent ones).
    pub fn json_delete_batch(&self) -> Value {
        let mut cmds = Vec::new();
        for table_plan in &self.tables {
            let table = json!({ "family": table_plan.family.as_str(), "name": table_plan.name });
            cmds.push(json!({ "add": { "table": table } }));
            cmds.push(json!({ "delete": { "table": table } }));
        }
        json!({ "nftables": cmds })
    }
}

/// Points at one rule; used to keep KubeVirt's global append order across chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub index: usize,
}

/// Base-chain priorities, by name, with the kernel's values (`enum nf_ip_hook_priorities` in
/// uapi `linux/netfilter_ipv4.h`; nft(8) names them raw, dstnat, filter, srcnat).
pub const PRIORITY_RAW: i32 = -300;
pub const PRIORITY_DSTNAT: i32 = -100;
pub const PRIORITY_FILTER: i32 = 0;
pub const PRIORITY_SRCNAT: i32 = 100;

/// Builds a ruleset while recording the order rules were appended in.
#[derive(Debug, Default)]
pub struct Builder {
    pub ruleset: Vec<Table>,
    pub order: Vec<RuleRef>,
    /// Chains or rules added to a table or chain that does not exist: a planner bug, reported
    /// by `plan()` instead of a rule silently left out.
    pub unknown: Vec<String>,
}

impl Builder {
    pub fn has_table(&self, family: Family, name: &str) -> bool {
        self.ruleset
            .iter()
            .any(|t| t.family == family && t.name == name)
    }

    pub fn has_chain(&self, family: Family, table: &str, chain: &str) -> bool {
        self.ruleset.iter().any(|t| {
            t.family == family && t.name == table && t.chains.iter().any(|c| c.name == chain)
        })
    }

    pub fn table(&mut self, family: Family, name: &str) {
        self.ruleset.push(Table {
            family,
            name: name.into(),
            chains: Vec::new(),
        });
    }

    pub fn chain(
        &mut self,
        family: Family,
        table: &str,
        name: &str,
        base: Option<(ChainType, Hook, i32)>,
    ) {
        let Some(found) = self
            .ruleset
            .iter_mut()
            .find(|found| found.family == family && found.name == table)
        else {
            self.unknown.push(format!(
                "chain {name} in unknown table {} {table}",
                family.as_str()
            ));
            return;
        };
        found.chains.push(Chain {
            name: name.into(),
            base: base.map(|(kind, hook, priority)| BaseChain {
                kind,
                hook,
                priority,
            }),
            rules: Vec::new(),
        });
    }

    pub fn rule(&mut self, family: Family, table: &str, chain: &str, exprs: Vec<Expr>) {
        let Some(found) = self
            .ruleset
            .iter_mut()
            .find(|t| t.family == family && t.name == table)
            .and_then(|t| t.chains.iter_mut().find(|found| found.name == chain))
        else {
            self.unknown.push(format!(
                "rule in unknown chain {} {table} {chain}",
                family.as_str()
            ));
            return;
        };
        found.rules.push(Rule { exprs });
        self.order.push(RuleRef {
            family,
            table: table.into(),
            chain: chain.into(),
            index: found.rules.len() - 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_or_chain_without_its_table_is_reported_not_dropped() {
        let mut builder = Builder::default();
        builder.table(Family::Inet, "t");
        builder.chain(
            Family::Inet,
            "t",
            "c",
            Some((ChainType::Filter, Hook::Output, PRIORITY_FILTER)),
        );
        builder.rule(Family::Inet, "t", "c", vec![Expr::Counter]);
        assert!(builder.unknown.is_empty());
        builder.rule(Family::Inet, "t", "missing", vec![Expr::Counter]);
        builder.chain(Family::Ip6, "t", "c", None);
        assert_eq!(
            builder.unknown,
            [
                "rule in unknown chain inet t missing",
                "chain c in unknown table ip6 t"
            ]
        );
        assert_eq!(builder.ruleset[0].chains[0].rules.len(), 1);
    }
}
