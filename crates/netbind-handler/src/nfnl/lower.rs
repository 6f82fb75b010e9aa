//! A `Ruleset` lowered to nf_tables netlink messages: the registers, loads, compares, anonymous
//! sets and verdicts the `nft` tool itself would send for the same rules (its
//! `--debug=netlink` listing is the reference; a kernel test compares the resulting ruleset,
//! expression by expression, with what libnftables makes of the JSON batch).
//!
//! Only what netbind's planner writes is supported; anything else is a `LowerError` naming
//! the rule, before a byte is sent.

use std::net::IpAddr;

use netbind_plan::nft::{ChainType, Expr, Family, Field, Hook, Rule, Ruleset, Table, Val};

use super::wire::{F_ACK, F_APPEND, F_CREATE, F_REQUEST, Writer};

/// `NFNL_SUBSYS_NFTABLES`, in the high byte of every message type.
const SUBSYS: u16 = 10 << 8;
const NEWTABLE: u16 = SUBSYS;
pub(super) const GETTABLE: u16 = SUBSYS | 1;
const DELTABLE: u16 = SUBSYS | 2;
const NEWCHAIN: u16 = SUBSYS | 3;
const NEWRULE: u16 = SUBSYS | 6;
const NEWSET: u16 = SUBSYS | 9;
const NEWSETELEM: u16 = SUBSYS | 12;
/// `NFNL_MSG_BATCH_BEGIN` / `END` (`NLMSG_MIN_TYPE` and the next).
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;

// Attributes (uapi `linux/netfilter/nf_tables.h`).
const TABLE_NAME: u16 = 1;
const TABLE_FLAGS: u16 = 2;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_POLICY: u16 = 5;
const CHAIN_TYPE: u16 = 7;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_EXPRESSIONS: u16 = 4;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;
const SET_TABLE: u16 = 1;
const SET_NAME: u16 = 2;
const SET_FLAGS: u16 = 3;
const SET_KEY_TYPE: u16 = 4;
const SET_KEY_LEN: u16 = 5;
const SET_DESC: u16 = 9;
const SET_DESC_SIZE: u16 = 1;
const SET_ID: u16 = 10;
const SET_USERDATA: u16 = 13;
const SET_ELEM_LIST_TABLE: u16 = 1;
const SET_ELEM_LIST_SET: u16 = 2;
const SET_ELEM_LIST_ELEMENTS: u16 = 3;
const SET_ELEM_LIST_SET_ID: u16 = 4;
const SET_ELEM_KEY: u16 = 1;
const SET_ELEM_FLAGS: u16 = 3;
const SET_ELEM_USERDATA: u16 = 6;

/// `NFT_SET_ANONYMOUS | NFT_SET_CONSTANT`, and `NFT_SET_INTERVAL`.
const SET_ANONYMOUS_CONSTANT: u32 = 0x1 | 0x2;
const SET_INTERVAL: u32 = 0x4;
/// `NFT_SET_ELEM_INTERVAL_END`.
const ELEM_INTERVAL_END: u32 = 1;
/// The name the kernel turns into `__set<n>`; rules refer to the set by its batch id.
const ANONYMOUS_SET: &str = "__set%d";

/// `NFT_REG_VERDICT` and `NFT_REG_1` (a 16-byte register: every load here fits one).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
/// `NF_DROP`, `NF_ACCEPT`, `NFT_JUMP`, `NFT_RETURN`.
const NF_DROP: i32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;

/// `NFPROTO_*`, the family byte of every message.
pub(super) fn family_number(family: Family) -> u8 {
    match family {
        Family::Inet => 1,
        Family::Ip => 2,
        Family::Bridge => 7,
        Family::Ip6 => 10,
    }
}

fn hook_number(hook: Hook) -> u32 {
    // NF_INET_* and NF_BR_* number these the same way.
    match hook {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

/// A rule (or chain) that cannot be written as nf_tables expressions.
#[derive(Debug, thiserror::Error)]
#[error("{object}: {message}")]
pub struct LowerError {
    pub object: String,
    pub message: String,
}

/// A batch ready to send, and what each acknowledged message does (for errors).
#[derive(Debug)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// The operation of each acknowledged message, in nft's words; message `i` carries
    /// sequence number `i + 1` (the batch's begin and end, unacknowledged, carry 0 and the
    /// next number).
    pub ops: Vec<String>,
    /// Whether it deletes or replaces tables (anything but `Op::Create`).
    pub destroys: bool,
}

impl Batch {
    /// The operation a sequence number belongs to.
    pub fn op(&self, seq: u32) -> Option<&str> {
        self.index(seq).map(|at| self.ops[at].as_str())
    }

    /// Where `seq` is in `ops`.
    pub fn index(&self, seq: u32) -> Option<usize> {
        let at = usize::try_from(seq).ok()?.checked_sub(1)?;
        (at < self.ops.len()).then_some(at)
    }

    /// The sequence number of the message after the last acknowledged one.
    fn next_seq(&self) -> u32 {
        u32::try_from(self.ops.len() + 1).unwrap_or(u32::MAX)
    }
}

/// What a batch does with the ruleset's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create them in a namespace known not to hold them.
    Create,
    /// Replace them whether they exist or not (add, delete, add: one transaction).
    Recreate,
    /// Delete them, tolerating absent ones (add, delete).
    Delete,
}

struct Builder {
    w: Writer,
    next_set: u32,
    batch: Batch,
}

impl Builder {
    fn message(
        &mut self,
        kind: u16,
        flags: u16,
        family: Family,
        what: String,
        body: impl FnOnce(&mut Writer),
    ) {
        let open = self.w.message(
            kind,
            F_REQUEST | F_ACK | flags,
            self.batch.next_seq(),
            family_number(family),
            0,
        );
        body(&mut self.w);
        self.w.end(open);
        self.batch.ops.push(what);
    }
}

/// The batch for `op` on every table of `ruleset`.
pub fn batch(ruleset: &Ruleset, op: Op) -> Result<Batch, LowerError> {
    let mut b = Builder {
        w: Writer::default(),
        next_set: 0,
        batch: Batch {
            bytes: Vec::new(),
            ops: Vec::new(),
            destroys: op != Op::Create,
        },
    };
    let begin = b.w.message(BATCH_BEGIN, F_REQUEST, 0, 0, SUBSYS >> 8);
    b.w.end(begin);
    for table in &ruleset.tables {
        let name = format!("table {} {}", table.family.as_str(), table.name);
        if op != Op::Create {
            // Adding first makes the delete succeed whether or not the table exists.
            add_table(&mut b, table, &name);
            b.message(DELTABLE, 0, table.family, format!("delete {name}"), |w| {
                w.str(TABLE_NAME, &table.name);
            });
        }
        if op != Op::Delete {
            add_table(&mut b, table, &name);
            add_chains_and_rules(&mut b, table)?;
        }
    }
    let end =
        b.w.message(BATCH_END, F_REQUEST, b.batch.next_seq(), 0, SUBSYS >> 8);
    b.w.end(end);
    b.batch.bytes = b.w.into_bytes();
    Ok(b.batch)
}

fn add_table(b: &mut Builder, table: &Table, name: &str) {
    b.message(
        NEWTABLE,
        F_CREATE,
        table.family,
        format!("add {name}"),
        |w| {
            w.str(TABLE_NAME, &table.name);
            w.u32(TABLE_FLAGS, 0);
        },
    );
}

fn add_chains_and_rules(b: &mut Builder, table: &Table) -> Result<(), LowerError> {
    let family = table.family;
    for chain in &table.chains {
        let what = format!(
            "add chain {} {} {}",
            family.as_str(),
            table.name,
            chain.name
        );
        b.message(NEWCHAIN, F_CREATE, family, what, |w| {
            w.str(CHAIN_TABLE, &table.name);
            w.str(CHAIN_NAME, &chain.name);
            if let Some(base) = &chain.base {
                let hook = w.nest(CHAIN_HOOK);
                w.u32(HOOK_HOOKNUM, hook_number(base.hook));
                // The kernel reads the priority as a signed 32-bit number.
                w.attr(HOOK_PRIORITY, &base.priority.to_be_bytes());
                w.end_nest(hook);
                w.u32(CHAIN_POLICY, NF_ACCEPT);
                w.str(
                    CHAIN_TYPE,
                    match base.kind {
                        ChainType::Filter => "filter",
                        ChainType::Nat => "nat",
                    },
                );
            }
        });
    }
    for chain in &table.chains {
        for rule in &chain.rules {
            let object = format!(
                "rule {} {} {} `{}`",
                family.as_str(),
                table.name,
                chain.name,
                rule.text()
            );
            let mut exprs = lower_rule(family, rule).map_err(|message| LowerError {
                object: object.clone(),
                message,
            })?;
            // Anonymous sets go first, in the same transaction; the rule names them by id.
            for expr in &mut exprs {
                if let Ir::Lookup { set, id, .. } = expr {
                    b.next_set += 1;
                    *id = b.next_set;
                    add_set(b, table, set, *id, &object);
                }
            }
            b.message(
                NEWRULE,
                F_CREATE | F_APPEND,
                family,
                format!("add {object}"),
                |w| {
                    w.str(RULE_TABLE, &table.name);
                    w.str(RULE_CHAIN, &chain.name);
                    let list = w.nest(RULE_EXPRESSIONS);
                    for expr in &exprs {
                        let elem = w.nest(LIST_ELEM);
                        expr.encode(w);
                        w.end_nest(elem);
                    }
                    w.end_nest(list);
                },
            );
        }
    }
    Ok(())
}

fn add_set(b: &mut Builder, table: &Table, set: &AnonSet, id: u32, object: &str) {
    let family = table.family;
    let flags = if set.interval {
        SET_ANONYMOUS_CONSTANT | SET_INTERVAL
    } else {
        SET_ANONYMOUS_CONSTANT
    };
    b.message(
        NEWSET,
        F_CREATE,
        family,
        format!("add the set of {object}"),
        |w| {
            w.str(SET_TABLE, &table.name);
            w.str(SET_NAME, ANONYMOUS_SET);
            w.u32(SET_FLAGS, flags);
            w.u32(SET_KEY_TYPE, set.key_type);
            w.u32(SET_KEY_LEN, set.key_len);
            w.u32(SET_ID, id);
            let desc = w.nest(SET_DESC);
            w.u32(
                SET_DESC_SIZE,
                u32::try_from(set.elements.len()).unwrap_or(u32::MAX),
            );
            w.end_nest(desc);
            // nft's user data: the key's byte order (NFTNL_UDATA_SET_KEYBYTEORDER), which its
            // listing uses to print the elements.
            let order: u32 = if set.big_endian { 2 } else { 1 };
            w.attr(SET_USERDATA, &udata_u32(0, order));
        },
    );
    b.message(
        NEWSETELEM,
        F_CREATE,
        family,
        format!("add the elements of the set of {object}"),
        |w| {
            w.str(SET_ELEM_LIST_TABLE, &table.name);
            w.str(SET_ELEM_LIST_SET, ANONYMOUS_SET);
            w.u32(SET_ELEM_LIST_SET_ID, id);
            let list = w.nest(SET_ELEM_LIST_ELEMENTS);
            for element in &set.elements {
                let elem = w.nest(LIST_ELEM);
                let key = w.nest(SET_ELEM_KEY);
                w.attr(DATA_VALUE, &element.key);
                w.end_nest(key);
                if element.end {
                    w.u32(SET_ELEM_FLAGS, ELEM_INTERVAL_END);
                }
                if element.open {
                    // NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN: an interval
                    // that runs to the end of the key space, so it has no end element.
                    w.attr(SET_ELEM_USERDATA, &udata_u32(1, 1));
                }
                w.end_nest(elem);
            }
            w.end_nest(list);
        },
    );
}

/// One entry of nft's user data (libnftnl's `nftnl_udata`: type, length, value): a u32 in host
/// order.
fn udata_u32(kind: u8, value: u32) -> Vec<u8> {
    let mut udata = vec![kind, 4];
    udata.extend_from_slice(&value.to_ne_bytes());
    udata
}

/// One nf_tables expression, always on register 1 (or the verdict register).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ir {
    Meta(u32),
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    Bitwise {
        mask: Vec<u8>,
    },
    RangeNeq {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// `id`: the set's number in the batch, given when the set is added to it.
    Lookup {
        set: AnonSet,
        invert: bool,
        id: u32,
    },
    Counter,
    Immediate(Vec<u8>),
    Verdict {
        code: i32,
        chain: Option<String>,
    },
    Masq,
    Nat {
        dnat: bool,
        family: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AnonSet {
    key_type: u32,
    key_len: u32,
    big_endian: bool,
    interval: bool,
    elements: Vec<Element>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    key: Vec<u8>,
    end: bool,
    open: bool,
}

const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;

fn data_nest(w: &mut Writer, kind: u16, value: &[u8]) {
    let nest = w.nest(kind);
    w.attr(DATA_VALUE, value);
    w.end_nest(nest);
}

impl Ir {
    fn name(&self) -> &'static str {
        match self {
            Ir::Meta(_) => "meta",
            Ir::Payload { .. } => "payload",
            Ir::Cmp { .. } => "cmp",
            Ir::Bitwise { .. } => "bitwise",
            Ir::RangeNeq { .. } => "range",
            Ir::Lookup { .. } => "lookup",
            Ir::Counter => "counter",
            Ir::Immediate(_) | Ir::Verdict { .. } => "immediate",
            Ir::Masq => "masq",
            Ir::Nat { .. } => "nat",
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.str(EXPR_NAME, self.name());
        if matches!(self, Ir::Counter | Ir::Masq) {
            return;
        }
        let data = w.nest(EXPR_DATA);
        match self {
            Ir::Meta(key) => {
                w.u32(1, REG_1); // NFTA_META_DREG
                w.u32(2, *key); // NFTA_META_KEY
            }
            Ir::Payload { base, offset, len } => {
                w.u32(1, REG_1); // NFTA_PAYLOAD_DREG
                w.u32(2, *base);
                w.u32(3, *offset);
                w.u32(4, *len);
            }
            Ir::Cmp { op, data } => {
                w.u32(1, REG_1); // NFTA_CMP_SREG
                w.u32(2, *op);
                data_nest(w, 3, data);
            }
            Ir::Bitwise { mask } => {
                w.u32(1, REG_1); // NFTA_BITWISE_SREG
                w.u32(2, REG_1); // NFTA_BITWISE_DREG
                w.u32(3, u32::try_from(mask.len()).unwrap_or(0));
                data_nest(w, 4, mask);
                data_nest(w, 5, &vec![0; mask.len()]); // XOR
            }
            Ir::RangeNeq { from, to } => {
                w.u32(1, REG_1); // NFTA_RANGE_SREG
                w.u32(2, 1); // NFT_RANGE_NEQ
                data_nest(w, 3, from);
                data_nest(w, 4, to);
            }
            Ir::Lookup { invert, id, .. } => {
                w.str(1, ANONYMOUS_SET); // NFTA_LOOKUP_SET
                w.u32(2, REG_1); // NFTA_LOOKUP_SREG
                w.u32(4, *id); // NFTA_LOOKUP_SET_ID
                w.u32(5, u32::from(*invert)); // NFTA_LOOKUP_FLAGS: NFT_LOOKUP_F_INV
            }
            Ir::Immediate(value) => {
                w.u32(1, REG_1); // NFTA_IMMEDIATE_DREG
                data_nest(w, 2, value);
            }
            Ir::Verdict { code, chain } => {
                w.u32(1, REG_VERDICT);
                let imm = w.nest(2); // NFTA_IMMEDIATE_DATA
                let verdict = w.nest(DATA_VERDICT);
                w.attr(VERDICT_CODE, &code.to_be_bytes());
                if let Some(chain) = chain {
                    w.str(VERDICT_CHAIN, chain);
                }
                w.end_nest(verdict);
                w.end_nest(imm);
            }
            Ir::Nat { dnat, family } => {
                w.u32(1, u32::from(*dnat)); // NFTA_NAT_TYPE: NFT_NAT_SNAT 0, DNAT 1
                w.u32(2, *family);
                w.u32(3, REG_1); // NFTA_NAT_REG_ADDR_MIN
            }
            Ir::Counter | Ir::Masq => {}
        }
        w.end_nest(data);
    }
}

// meta keys (`enum nft_meta_keys`) and payload bases.
const META_PROTOCOL: u32 = 1;
const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const BASE_LINK: u32 = 0;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;

// nft's datatype numbers (its `enum datatypes`), stored in a set's key type for listings.
const TYPE_STRING: u32 = 5;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_ETHERADDR: u32 = 9;
const TYPE_ETHERTYPE: u32 = 10;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_MARK: u32 = 19;
const TYPE_ICMP6_TYPE: u32 = 29;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const IFNAMSIZ: usize = 16;

/// How a field is loaded and what its values look like.
struct Shape {
    load: Ir,
    len: usize,
    key_type: u32,
    big_endian: bool,
    /// (load, value) pairs that must match first: the protocol the field belongs to.
    deps: Vec<(Ir, Vec<u8>)>,
}

fn l4proto(proto: &str) -> Result<u8, String> {
    match proto {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        other => Err(format!("unsupported transport protocol {other:?}")),
    }
}

fn network_dep(table: Family, field: Family) -> Result<Vec<(Ir, Vec<u8>)>, String> {
    match (table, field) {
        (Family::Inet, Family::Ip) => Ok(vec![(Ir::Meta(META_NFPROTO), vec![2])]),
        (Family::Inet, Family::Ip6) => Ok(vec![(Ir::Meta(META_NFPROTO), vec![10])]),
        (Family::Bridge, Family::Ip) => Ok(vec![(
            Ir::Meta(META_PROTOCOL),
            ETH_P_IP.to_be_bytes().to_vec(),
        )]),
        (Family::Bridge, Family::Ip6) => Ok(vec![(
            Ir::Meta(META_PROTOCOL),
            ETH_P_IPV6.to_be_bytes().to_vec(),
        )]),
        (table, field) if table == field => Ok(Vec::new()),
        (table, field) => Err(format!(
            "{} fields in a {} table",
            field.as_str(),
            table.as_str()
        )),
    }
}

fn payload(base: u32, offset: u32, len: u32) -> Ir {
    Ir::Payload { base, offset, len }
}

fn shape(table: Family, field: &Field) -> Result<Shape, String> {
    let meta = |key, len, key_type, big_endian| Shape {
        load: Ir::Meta(key),
        len,
        key_type,
        big_endian,
        deps: Vec::new(),
    };
    Ok(match field {
        Field::Iifname => meta(META_IIFNAME, IFNAMSIZ, TYPE_STRING, false),
        Field::Oifname => meta(META_OIFNAME, IFNAMSIZ, TYPE_STRING, false),
        Field::Mark => meta(META_MARK, 4, TYPE_MARK, false),
        Field::Saddr(fam) | Field::Daddr(fam) => {
            let saddr = matches!(field, Field::Saddr(_));
            let (offset, len, key_type) = match (fam, saddr) {
                (Family::Ip, true) => (12, 4, TYPE_IPADDR),
                (Family::Ip, false) => (16, 4, TYPE_IPADDR),
                (Family::Ip6, true) => (8, 16, TYPE_IP6ADDR),
                (Family::Ip6, false) => (24, 16, TYPE_IP6ADDR),
                (other, _) => return Err(format!("no address field in family {}", other.as_str())),
            };
            Shape {
                load: payload(BASE_NETWORK, offset, len),
                len: len as usize,
                key_type,
                big_endian: true,
                deps: network_dep(table, *fam)?,
            }
        }
        Field::Dport(proto) | Field::Sport(proto) => Shape {
            load: payload(
                BASE_TRANSPORT,
                if matches!(field, Field::Dport(_)) {
                    2
                } else {
                    0
                },
                2,
            ),
            len: 2,
            key_type: TYPE_INET_SERVICE,
            big_endian: true,
            deps: vec![(Ir::Meta(META_L4PROTO), vec![l4proto(proto)?])],
        },
        Field::Icmpv6Type => {
            let mut deps = match table {
                Family::Inet | Family::Ip6 => network_dep(table, Family::Ip6)?,
                other => return Err(format!("icmpv6 in a {} table", other.as_str())),
            };
            deps.push((Ir::Meta(META_L4PROTO), vec![58]));
            Shape {
                load: payload(BASE_TRANSPORT, 0, 1),
                len: 1,
                key_type: TYPE_ICMP6_TYPE,
                big_endian: true,
                deps,
            }
        }
        Field::EtherSaddr | Field::EtherType | Field::ArpSaddrEther | Field::ArpSaddrIp => {
            if table != Family::Bridge {
                return Err(format!("link-layer fields in a {} table", table.as_str()));
            }
            let arp = || vec![(payload(BASE_LINK, 12, 2), ETH_P_ARP.to_be_bytes().to_vec())];
            let (load, len, key_type, deps) = match field {
                Field::EtherSaddr => (payload(BASE_LINK, 6, 6), 6, TYPE_ETHERADDR, Vec::new()),
                Field::EtherType => (payload(BASE_LINK, 12, 2), 2, TYPE_ETHERTYPE, Vec::new()),
                Field::ArpSaddrEther => (payload(BASE_NETWORK, 8, 6), 6, TYPE_ETHERADDR, arp()),
                _ => (payload(BASE_NETWORK, 14, 4), 4, TYPE_IPADDR, arp()),
            };
            Shape {
                load,
                len,
                key_type,
                big_endian: true,
                deps,
            }
        }
    })
}

/// ICMPv6 type names nft knows, as netbind uses them.
fn icmpv6_type(name: &str) -> Option<u8> {
    Some(match name {
        "echo-request" => 128,
        "echo-reply" => 129,
        "nd-router-solicit" => 133,
        "nd-router-advert" => 134,
        "nd-neighbor-solicit" => 135,
        "nd-neighbor-advert" => 136,
        "nd-redirect" => 137,
        _ => return None,
    })
}

/// One value of a field, as key bytes.
fn value_bytes(field: &Field, shape: &Shape, val: &Val) -> Result<Vec<u8>, String> {
    let bytes = match (field, val) {
        (_, Val::Addr(IpAddr::V4(addr))) => addr.octets().to_vec(),
        (_, Val::Addr(IpAddr::V6(addr))) => addr.octets().to_vec(),
        (_, Val::Port(port)) => port.to_be_bytes().to_vec(),
        (_, Val::Mac(mac)) => mac.octets().to_vec(),
        (Field::Mark, Val::Hex(mark)) => mark.to_ne_bytes().to_vec(),
        (Field::Iifname | Field::Oifname, Val::Name(name)) => {
            if name.len() >= IFNAMSIZ || name.contains('\0') {
                return Err(format!("{name:?} is not an interface name"));
            }
            let mut bytes = name.as_bytes().to_vec();
            bytes.resize(IFNAMSIZ, 0);
            bytes
        }
        (Field::EtherType, Val::Name(name)) => match name.as_str() {
            "ip" => ETH_P_IP,
            "arp" => ETH_P_ARP,
            "ip6" => ETH_P_IPV6,
            other => return Err(format!("unknown ether type {other:?}")),
        }
        .to_be_bytes()
        .to_vec(),
        (Field::Icmpv6Type, Val::Name(name)) => {
            vec![icmpv6_type(name).ok_or_else(|| format!("unknown icmpv6 type {name:?}"))?]
        }
        (_, other) => return Err(format!("value {other:?} does not fit this field")),
    };
    if bytes.len() != shape.len {
        return Err(format!(
            "value {val:?} is {} bytes long, the field {}",
            bytes.len(),
            shape.len
        ));
    }
    Ok(bytes)
}

/// A port range's ends as key bytes: only a 16-bit field takes one (a shorter compare than
/// the load would match a prefix of the field instead).
fn range_bytes(shape: &Shape, low: u16, high: u16) -> Result<(Vec<u8>, Vec<u8>), String> {
    if shape.len != 2 {
        return Err(format!("range {low}-{high} on a {}-byte field", shape.len));
    }
    if low > high {
        return Err(format!("range {low}-{high} is empty"));
    }
    Ok((low.to_be_bytes().to_vec(), high.to_be_bytes().to_vec()))
}

/// An interval of key bytes, both ends included.
fn interval(field: &Field, shape: &Shape, val: &Val) -> Result<(Vec<u8>, Vec<u8>), String> {
    match val {
        Val::Prefix(addr, len) => {
            let bytes = value_bytes(field, shape, &Val::Addr(*addr))?;
            let len = usize::from(*len);
            if len > bytes.len() * 8 {
                return Err(format!("prefix {addr}/{len} is longer than the address"));
            }
            let mask = prefix_mask(bytes.len(), len);
            let low = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
            let high = bytes.iter().zip(&mask).map(|(b, m)| b | !m).collect();
            Ok((low, high))
        }
        Val::Range(low, high) => range_bytes(shape, *low, *high),
        other => {
            let bytes = value_bytes(field, shape, other)?;
            Ok((bytes.clone(), bytes))
        }
    }
}

fn prefix_mask(bytes: usize, len: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| {
            let bits = len.saturating_sub(i * 8).min(8);
            // bits is 0..=8: shifting a u16 keeps 8 a valid shift.
            u8::try_from((0xff00u16 >> bits) & 0xff).unwrap_or(0)
        })
        .collect()
}

/// Big-endian increment; `None` when the value is already the largest.
fn successor(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = bytes.to_vec();
    for byte in out.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(out);
        }
    }
    None
}

fn is_interval(val: &Val, shape: &Shape) -> bool {
    match val {
        Val::Range(..) => true,
        Val::Prefix(_, len) => usize::from(*len) < shape.len * 8,
        _ => false,
    }
}

/// The elements of an interval set, as nft writes them: each interval as its start and, after
/// it, the value past its end flagged as an end; a leading end at zero when the first interval
/// does not start there; no end for an interval that reaches the top of the key space.
fn interval_elements(mut ranges: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Element>, String> {
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[1].0 <= pair[0].1 {
            return Err("overlapping elements in a set".into());
        }
    }
    let mut elements = Vec::new();
    if let Some((first, _)) = ranges.first()
        && first.iter().any(|b| *b != 0)
    {
        elements.push(Element {
            key: vec![0; first.len()],
            end: true,
            open: false,
        });
    }
    for (low, high) in ranges {
        match successor(&high) {
            Some(past) => {
                elements.push(Element {
                    key: low,
                    end: false,
                    open: false,
                });
                elements.push(Element {
                    key: past,
                    end: true,
                    open: false,
                });
            }
            None => elements.push(Element {
                key: low,
                end: false,
                open: true,
            }),
        }
    }
    Ok(elements)
}

/// A match (`==`, or `!=` with `invert`) of `field` against `values`.
fn lower_match(
    table: Family,
    field: &Field,
    values: &[Val],
    invert: bool,
    deps_done: &mut Vec<(Ir, Vec<u8>)>,
    out: &mut Vec<Ir>,
) -> Result<(), String> {
    let shape = shape(table, field)?;
    for dep in &shape.deps {
        if !deps_done.contains(dep) {
            out.push(dep.0.clone());
            out.push(Ir::Cmp {
                op: CMP_EQ,
                data: dep.1.clone(),
            });
            deps_done.push(dep.clone());
        }
    }
    let op = if invert { CMP_NEQ } else { CMP_EQ };
    match values {
        [] => Err("a match with no value".into()),
        [Val::Range(low, high)] => {
            let (from, to) = range_bytes(&shape, *low, *high)?;
            out.push(shape.load.clone());
            if invert {
                out.push(Ir::RangeNeq { from, to });
            } else {
                out.push(Ir::Cmp {
                    op: CMP_GTE,
                    data: from,
                });
                out.push(Ir::Cmp {
                    op: CMP_LTE,
                    data: to,
                });
            }
            Ok(())
        }
        [Val::Prefix(addr, len)] if is_interval(&values[0], &shape) => {
            let bytes = value_bytes(field, &shape, &Val::Addr(*addr))?;
            let bits = usize::from(*len);
            let mask = prefix_mask(bytes.len(), bits);
            let network: Vec<u8> = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
            match (&shape.load, bits % 8) {
                // A whole number of bytes: load only those, as nft does.
                (Ir::Payload { base, offset, .. }, 0) if bits > 0 => {
                    let len = bits / 8;
                    out.push(payload(*base, *offset, u32::try_from(len).unwrap_or(0)));
                    out.push(Ir::Cmp {
                        op,
                        data: network[..len].to_vec(),
                    });
                }
                _ => {
                    out.push(shape.load.clone());
                    out.push(Ir::Bitwise { mask });
                    out.push(Ir::Cmp { op, data: network });
                }
            }
            Ok(())
        }
        [val] => {
            let (low, _) = interval(field, &shape, val)?;
            out.push(shape.load.clone());
            out.push(Ir::Cmp { op, data: low });
            Ok(())
        }
        many => {
            let interval_set = many.iter().any(|v| is_interval(v, &shape));
            let elements = if interval_set {
                if !shape.big_endian {
                    return Err("intervals of a host-order field".into());
                }
                let ranges = many
                    .iter()
                    .map(|v| interval(field, &shape, v))
                    .collect::<Result<Vec<_>, _>>()?;
                interval_elements(ranges)?
            } else {
                many.iter()
                    .map(|v| {
                        Ok(Element {
                            key: interval(field, &shape, v)?.0,
                            end: false,
                            open: false,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?
            };
            out.push(shape.load.clone());
            out.push(Ir::Lookup {
                set: AnonSet {
                    key_type: shape.key_type,
                    key_len: u32::try_from(shape.len).unwrap_or(0),
                    big_endian: shape.big_endian,
                    interval: interval_set,
                    elements,
                },
                invert,
                id: 0,
            });
            Ok(())
        }
    }
}

fn nat_target(addr: &IpAddr) -> (Vec<u8>, u32) {
    match addr {
        IpAddr::V4(v4) => (v4.octets().to_vec(), 2),
        IpAddr::V6(v6) => (v6.octets().to_vec(), 10),
    }
}

fn lower_rule(table: Family, rule: &Rule) -> Result<Vec<Ir>, String> {
    let mut out = Vec::new();
    let mut deps_done = Vec::new();
    for expr in &rule.exprs {
        match expr {
            Expr::Match { field, values, .. } => {
                lower_match(table, field, values, false, &mut deps_done, &mut out)?;
            }
            Expr::Differs { field, values } => {
                lower_match(table, field, values, true, &mut deps_done, &mut out)?;
            }
            Expr::Counter => out.push(Ir::Counter),
            Expr::Masquerade => out.push(Ir::Masq),
            Expr::Jump(chain) => out.push(Ir::Verdict {
                code: NFT_JUMP,
                chain: Some(chain.clone()),
            }),
            Expr::Return => out.push(Ir::Verdict {
                code: NFT_RETURN,
                chain: None,
            }),
            Expr::Drop => out.push(Ir::Verdict {
                code: NF_DROP,
                chain: None,
            }),
            Expr::Dnat(addr) | Expr::Snat(addr) => {
                let (bytes, family) = nat_target(addr);
                out.push(Ir::Immediate(bytes));
                out.push(Ir::Nat {
                    dnat: matches!(expr, Expr::Dnat(_)),
                    family,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn prefix_masks_cover_partial_bytes() {
        assert_eq!(prefix_mask(4, 9), [0xff, 0x80, 0, 0]);
        assert_eq!(prefix_mask(2, 10), [0xff, 0xc0]);
        assert_eq!(prefix_mask(4, 32), [0xff; 4]);
        assert_eq!(prefix_mask(4, 0), [0; 4]);
    }

    #[test]
    fn interval_sets_are_written_as_nft_writes_them() {
        let shape = shape(Family::Inet, &Field::Saddr(Family::Ip6)).unwrap();
        let field = Field::Saddr(Family::Ip6);
        let ranges = [
            Val::Prefix(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0).into(), 10),
            Val::Addr(Ipv6Addr::UNSPECIFIED.into()),
        ]
        .iter()
        .map(|v| interval(&field, &shape, v).unwrap())
        .collect();
        let elements = interval_elements(ranges).unwrap();
        let keys: Vec<(String, bool)> = elements
            .iter()
            .map(|e| {
                let addr = Ipv6Addr::from(<[u8; 16]>::try_from(e.key.as_slice()).unwrap());
                (addr.to_string(), e.end)
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("::".to_string(), false),
                ("::1".to_string(), true),
                ("fe80::".to_string(), false),
                ("fec0::".to_string(), true),
            ]
        );
        // Not starting at zero: a leading end; reaching the top: no end, marked open.
        let ports = interval_elements(vec![
            (20u16.to_be_bytes().to_vec(), 30u16.to_be_bytes().to_vec()),
            (
                60000u16.to_be_bytes().to_vec(),
                u16::MAX.to_be_bytes().to_vec(),
            ),
        ])
        .unwrap();
        assert_eq!(
            ports,
            [
                Element {
                    key: vec![0, 0],
                    end: true,
                    open: false
                },
                Element {
                    key: 20u16.to_be_bytes().to_vec(),
                    end: false,
                    open: false
                },
                Element {
                    key: 31u16.to_be_bytes().to_vec(),
                    end: true,
                    open: false
                },
                Element {
                    key: 60000u16.to_be_bytes().to_vec(),
                    end: false,
                    open: true
                },
            ]
        );
        assert!(
            interval_elements(vec![(vec![1], vec![5]), (vec![5], vec![6])]).is_err(),
            "overlap"
        );
    }

    /// How many bytes a load leaves in the register.
    fn load_len(ir: &Ir) -> Option<usize> {
        match ir {
            Ir::Meta(META_IIFNAME | META_OIFNAME) => Some(IFNAMSIZ),
            Ir::Meta(META_MARK) => Some(4),
            Ir::Meta(META_PROTOCOL) => Some(2),
            Ir::Meta(_) => Some(1),
            Ir::Payload { len, .. } => usize::try_from(*len).ok(),
            _ => None,
        }
    }

    fn arb_field() -> impl Strategy<Value = Field> {
        let fam = prop_oneof![
            Just(Family::Ip),
            Just(Family::Ip6),
            Just(Family::Inet),
            Just(Family::Bridge)
        ];
        let proto = prop_oneof![Just("tcp"), Just("udp"), Just("sctp")].prop_map(String::from);
        prop_oneof![
            fam.clone().prop_map(Field::Saddr),
            fam.prop_map(Field::Daddr),
            Just(Field::Iifname),
            Just(Field::Oifname),
            proto.clone().prop_map(Field::Dport),
            proto.prop_map(Field::Sport),
            Just(Field::EtherSaddr),
            Just(Field::EtherType),
            Just(Field::ArpSaddrEther),
            Just(Field::ArpSaddrIp),
            Just(Field::Mark),
            Just(Field::Icmpv6Type),
        ]
    }

    fn arb_val() -> impl Strategy<Value = Val> {
        let addr = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        let name = prop_oneof![
            Just("eth0"),
            Just("k6t-eth0"),
            Just("ip"),
            Just("arp"),
            Just("nd-router-advert"),
            Just("a-name-far-too-long-for-a-link"),
        ]
        .prop_map(String::from);
        prop_oneof![
            addr.clone().prop_map(Val::Addr),
            any::<u16>().prop_map(Val::Port),
            (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Val::Range(a, b)),
            name.prop_map(Val::Name),
            (addr, 0u8..=130).prop_map(|(a, l)| Val::Prefix(a, l)),
            any::<[u8; 6]>().prop_map(|o| Val::Mac(netbind_model::MacAddr(o))),
            any::<u32>().prop_map(Val::Hex),
        ]
    }

    proptest! {
        /// Whatever the planner might hand it, lowering never panics, and what it writes is
        /// coherent: every compare, mask, range and set key is as wide as the load before it
        /// (a narrower one would match a prefix of the field and pass the kernel's checks).
        #[test]
        fn every_compare_is_as_wide_as_its_load(
            table in prop_oneof![Just(Family::Ip), Just(Family::Ip6), Just(Family::Inet), Just(Family::Bridge)],
            field in arb_field(),
            values in proptest::collection::vec(arb_val(), 0..4),
            invert in any::<bool>(),
        ) {
            let expr = if invert {
                Expr::differs(field, values)
            } else {
                Expr::set(field, values)
            };
            let Ok(irs) = lower_rule(table, &Rule { exprs: vec![expr] }) else {
                return Ok(());
            };
            let mut width = None;
            for ir in &irs {
                if let Some(len) = load_len(ir) {
                    width = Some(len);
                    continue;
                }
                let width = width.expect("a compare after a load");
                match ir {
                    Ir::Cmp { data, .. } => prop_assert_eq!(data.len(), width, "{:?}", irs),
                    Ir::Bitwise { mask } => prop_assert_eq!(mask.len(), width),
                    Ir::RangeNeq { from, to } => {
                        prop_assert_eq!(from.len(), width);
                        prop_assert_eq!(to.len(), width);
                    }
                    Ir::Lookup { set, .. } => {
                        prop_assert_eq!(usize::try_from(set.key_len).unwrap(), width);
                        prop_assert!(set.elements.iter().all(|e| e.key.len() == width));
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }

    #[test]
    fn what_cannot_be_written_is_refused_naming_the_rule() {
        let mut ruleset = Ruleset { tables: Vec::new() };
        let mut b = netbind_plan::nft::Builder::default();
        b.table(Family::Ip, "nat");
        b.chain(Family::Ip, "nat", "c", None);
        b.rule(
            Family::Ip,
            "nat",
            "c",
            vec![Expr::one(
                Field::Saddr(Family::Ip6),
                Val::Addr(Ipv4Addr::LOCALHOST.into()),
            )],
        );
        ruleset.tables = b.ruleset;
        let err = batch(&ruleset, Op::Create).unwrap_err().to_string();
        assert!(
            err.starts_with("rule ip nat c `ip6 saddr 127.0.0.1`: ip6 fields in a ip table"),
            "{err}"
        );
    }
}
