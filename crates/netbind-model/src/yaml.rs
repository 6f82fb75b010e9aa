//! Reading KubeVirt YAML: size limit, typed decode, and a field-path → line:column index so
//! semantic (admission) errors can point at the offending node like decode errors do.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::vmi::{ObjectMeta, VmiSpec, VmiStatus};

/// Larger inputs are refused before parsing: a VMI is a few KiB, and the parser's own
/// budget (on by default in serde-saphyr) guards against alias bombs inside the limit.
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// A 1-based line and column in the source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Pos {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}:{}", self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("input is {size} bytes, more than the {MAX_INPUT_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("{pos}: {message}")]
    Yaml { pos: Pos, message: String },
    #[error("{pos}: {field}: {message}")]
    Header {
        pos: Pos,
        field: &'static str,
        message: String,
    },
}

impl LoadError {
    pub fn pos(&self) -> Pos {
        match self {
            LoadError::TooLarge { .. } => Pos::default(),
            LoadError::Yaml { pos, .. } | LoadError::Header { pos, .. } => *pos,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    VirtualMachineInstance,
    VirtualMachine,
}

/// A decoded VMI (or a VirtualMachine's template) with what admission needs to report
/// positions.
#[derive(Debug, Clone)]
pub struct LoadedVmi {
    pub kind: ObjectKind,
    pub metadata: ObjectMeta,
    pub spec: VmiSpec,
    pub status: VmiStatus,
    /// Where the VMI spec lives in the document: `spec` or `spec.template.spec`.
    pub spec_path: &'static str,
    pub positions: PositionIndex,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    kind: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct VmiDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<VmiSpec>,
    #[serde(default)]
    status: Option<VmiStatus>,
}

/// A VirtualMachineInstance's header and body in one pass (`load_vmi`'s common case).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VmiDocWithHeader {
    #[serde(default)]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    kind: Option<Spanned<String>>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<VmiSpec>,
    #[serde(default)]
    status: Option<VmiStatus>,
}

/// The API versions a VMI or VM document may have.
fn supported_api(api: &str) -> bool {
    matches!(api, "kubevirt.io/v1" | "kubevirt.io/v1alpha3")
}

#[derive(Deserialize)]
struct VmDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<VmSpec>,
}

#[derive(Deserialize)]
struct VmSpec {
    #[serde(default)]
    template: Option<VmTemplate>,
}

#[derive(Deserialize)]
struct VmTemplate {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<VmiSpec>,
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, LoadError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or_default();
        LoadError::Yaml {
            pos,
            message: message_of(&e),
        }
    })
}

/// A decoding error in a VMI author's terms. The position goes in front, by the caller.
pub(crate) fn message_of(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error;
    // An error with a source snippet, or inside an alias's value, comes wrapped; the wrapper
    // of an alias knows where its anchor is, which the message then names.
    let mut inner = err;
    let mut anchor = None;
    loop {
        match inner {
            Error::WithSnippet { error, .. } => inner = error,
            Error::AliasError {
                error, locations, ..
            } => {
                anchor.get_or_insert(locations.defined_location);
                inner = error;
            }
            _ => break,
        }
    }
    let limit = match inner {
        Error::Budget { breach, .. } => budget_breach(breach),
        _ => None,
    };
    let mut message = if let Error::RecursiveReferencesRequireWeakTypes { .. } = inner {
        // The crate's own wording speaks of its recursive Rust types, which a VMI's author
        // has never heard of.
        "an alias refers to the node that contains it (a recursive alias)".to_string()
    } else if let Some(what) = limit {
        format!(
            "the document goes over the YAML loader's limits (counted with its aliases expanded): {what}"
        )
    } else {
        // The crate's Display carries a source snippet over several lines; the first line is
        // the message a user needs.
        strip_location_prefix(inner.to_string().lines().next().unwrap_or("invalid YAML"))
    };
    if let Some(at) = anchor.filter(|at| at.line() > 0) {
        message.push_str(&format!(
            " (in the value anchored at line {}, column {})",
            at.line(),
            at.column()
        ));
    }
    message
}

/// What a loader limit counted when it was reached (the crate prints its own Rust value).
fn budget_breach(breach: &serde_saphyr::budget::BudgetBreach) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach as Breach;
    Some(match breach {
        Breach::Events { events } => format!("{events} parser events"),
        Breach::Aliases { aliases } => format!("{aliases} aliases"),
        Breach::Anchors { anchors } => format!("{anchors} anchors"),
        Breach::Depth { depth } => format!("nested {depth} deep"),
        Breach::Documents { documents } => format!("{documents} documents"),
        Breach::Nodes { nodes } => format!("{nodes} nodes"),
        Breach::ScalarBytes { total_scalar_bytes } => {
            format!("{total_scalar_bytes} bytes of scalars")
        }
        Breach::MergeKeys { merge_keys } => format!("{merge_keys} merge keys"),
        Breach::AliasAnchorRatio { aliases, anchors } => {
            format!("{aliases} aliases of {anchors} anchors")
        }
        _ => return None,
    })
}

/// serde-saphyr appends " at line L, column C" (and a hint about its own options to duplicate
/// keys); we print the position ourselves, in front.
fn strip_location_prefix(msg: &str) -> String {
    let msg = msg.rsplit_once(" at line ").map_or(msg, |(head, _)| head);
    let msg = msg.split(", set DuplicateKeyPolicy").next().unwrap_or(msg);
    msg.to_string()
}

/// Decodes a KubeVirt `VirtualMachineInstance` or `VirtualMachine` (its template).
pub fn load_vmi(text: &str) -> Result<LoadedVmi, LoadError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(LoadError::TooLarge { size: text.len() });
    }
    // The common case, a VMI that decodes, in one pass of the parser. Reading the header
    // alone is a whole pass too (the parser skips the rest of the document event by event):
    // 13% of a setup's instructions (callgrind), though only about 15 µs of its time, the
    // first pass paying for the parser's code coming in cold either way. Anything else (a
    // VirtualMachine, a missing or unsupported header, a decoding error) goes the way it
    // always did, header first, so its result and its errors are the same.
    if let Ok(doc) = decode::<VmiDocWithHeader>(text)
        && doc
            .api_version
            .as_ref()
            .is_some_and(|api| supported_api(&api.value))
        && doc
            .kind
            .as_ref()
            .is_some_and(|kind| kind.value == "VirtualMachineInstance")
    {
        return Ok(LoadedVmi {
            kind: ObjectKind::VirtualMachineInstance,
            metadata: doc.metadata,
            spec: doc.spec.unwrap_or_default(),
            status: doc.status.unwrap_or_else(VmiStatus::new_vmi),
            spec_path: "spec",
            positions: PositionIndex::of(text),
        });
    }
    load_by_header(text)
}

/// `load_vmi` the way that works for every document: its header decoded first, then the
/// document as its kind says.
fn load_by_header(text: &str) -> Result<LoadedVmi, LoadError> {
    let header: Header = decode(text)?;
    let api = header.api_version.ok_or(LoadError::Header {
        pos: Pos { line: 1, column: 1 },
        field: "apiVersion",
        message: "Required value: expected kubevirt.io/v1".into(),
    })?;
    if !supported_api(&api.value) {
        return Err(LoadError::Header {
            pos: spanned_pos(&api),
            field: "apiVersion",
            message: format!(
                "Unsupported value: {:?}: expected kubevirt.io/v1",
                api.value
            ),
        });
    }
    let kind_s = header.kind.ok_or(LoadError::Header {
        pos: Pos { line: 1, column: 1 },
        field: "kind",
        message: "Required value: expected VirtualMachineInstance or VirtualMachine".into(),
    })?;
    let positions = PositionIndex::of(text);
    match kind_s.value.as_str() {
        "VirtualMachineInstance" => {
            let doc: VmiDoc = decode(text)?;
            Ok(LoadedVmi {
                kind: ObjectKind::VirtualMachineInstance,
                metadata: doc.metadata,
                spec: doc.spec.unwrap_or_default(),
                status: doc.status.unwrap_or_else(VmiStatus::new_vmi),
                spec_path: "spec",
                positions,
            })
        }
        "VirtualMachine" => {
            let doc: VmDoc = decode(text)?;
            let template = doc.spec.and_then(|s| s.template).ok_or(LoadError::Header {
                pos: positions.lookup("spec"),
                field: "spec.template",
                message: "Required value: a VirtualMachine needs spec.template".into(),
            })?;
            let mut metadata = template.metadata;
            if metadata.name.is_none() {
                metadata.name = doc.metadata.name;
            }
            if metadata.namespace.is_none() {
                metadata.namespace = doc.metadata.namespace;
            }
            Ok(LoadedVmi {
                kind: ObjectKind::VirtualMachine,
                metadata,
                spec: template.spec.unwrap_or_default(),
                status: VmiStatus::new_vmi(),
                spec_path: "spec.template.spec",
                positions,
            })
        }
        other => Err(LoadError::Header {
            pos: spanned_pos(&kind_s),
            field: "kind",
            message: format!(
                "Unsupported value: {other:?}: expected VirtualMachineInstance or VirtualMachine"
            ),
        }),
    }
}

fn spanned_pos<T>(spanned: &Spanned<T>) -> Pos {
    Pos {
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
    }
}

/// Field path (`spec.domain.devices.interfaces[0].name`) → position of that node.
///
/// Built from the document on the first lookup: only a finding needs a position, and an
/// admitted VMI (every setup's case) then parses its document once less.
#[derive(Debug, Clone, Default)]
pub struct PositionIndex {
    text: String,
    map: OnceLock<BTreeMap<String, Pos>>,
}

impl PositionIndex {
    fn of(text: &str) -> Self {
        Self {
            text: text.to_string(),
            map: OnceLock::new(),
        }
    }

    /// The document has been decoded (its header at least) before this is built, so it is
    /// valid YAML; should it fail anyway, every path points at the start.
    fn map(&self) -> &BTreeMap<String, Pos> {
        self.map.get_or_init(|| {
            let mut map = BTreeMap::new();
            if let Ok(root) = decode::<PosNode>(&self.text) {
                root.walk(String::new(), &mut map);
            }
            map
        })
    }

    /// The position of `path`, or of its nearest ancestor that exists in the document
    /// (a defaulted field points at the object it would live in).
    pub fn lookup(&self, path: &str) -> Pos {
        let map = self.map();
        let mut rest = path;
        loop {
            if let Some(pos) = map.get(rest) {
                return *pos;
            }
            match rest.rfind(['.', '[']) {
                Some(cut) => rest = &rest[..cut],
                None => {
                    return map.get("").copied().unwrap_or(Pos { line: 1, column: 1 });
                }
            }
        }
    }
}

struct PosNode {
    pos: Pos,
    kind: NodeKind,
}

enum NodeKind {
    Scalar,
    Seq(Vec<PosNode>),
    Map(Vec<(String, PosNode)>),
}

impl PosNode {
    fn walk(self, path: String, out: &mut BTreeMap<String, Pos>) {
        out.insert(path.clone(), self.pos);
        match self.kind {
            NodeKind::Scalar => {}
            NodeKind::Seq(items) => {
                for (idx, node) in items.into_iter().enumerate() {
                    node.walk(format!("{path}[{idx}]"), out);
                }
            }
            NodeKind::Map(entries) => {
                for (key, node) in entries {
                    let child = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    node.walk(child, out);
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for PosNode {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<NodeKind>::deserialize(de)?;
        Ok(PosNode {
            pos: spanned_pos(&spanned),
            kind: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! scalar {
    ($($f:ident: $t:ty),*) => {$(
        fn $f<E: de::Error>(self, _: $t) -> Result<NodeKind, E> { Ok(NodeKind::Scalar) }
    )*};
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeKind;
    fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str("any YAML node")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str,
            visit_i128: i128, visit_u128: u128, visit_bytes: &[u8]);
    fn visit_unit<E: de::Error>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Scalar)
    }
    fn visit_none<E: de::Error>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<NodeKind, D::Error> {
        NodeKind::deserialize(de)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element::<PosNode>()? {
            items.push(node);
        }
        Ok(NodeKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<KeyText>()? {
            entries.push((key.0, map.next_value::<PosNode>()?));
        }
        Ok(NodeKind::Map(entries))
    }
}

/// A mapping key rendered as text, whatever its YAML type.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                out.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<KeyText, E> {
                Ok(KeyText(text.to_string()))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<KeyText, E> {
                Ok(KeyText(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<KeyText, E> {
                Ok(KeyText(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<KeyText, E> {
                Ok(KeyText(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<KeyText, E> {
                Ok(KeyText(value.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".into()))
            }
        }
        de.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMI: &str = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  name: a\nspec:\n  domain:\n    devices:\n      interfaces:\n      - name: default\n        masquerade: {}\n  networks:\n  - name: default\n    pod: {}\n";

    #[test]
    fn loads_vmi_and_indexes_positions() {
        let loaded = load_vmi(VMI).expect("valid VMI");
        assert_eq!(loaded.kind, ObjectKind::VirtualMachineInstance);
        assert_eq!(loaded.spec.domain.devices.interfaces[0].name, "default");
        assert_eq!(
            loaded
                .positions
                .lookup("spec.domain.devices.interfaces[0].name")
                .line,
            9
        );
        assert_eq!(loaded.positions.lookup("spec.networks[0].pod").line, 13);
        // A missing field resolves to its nearest present ancestor.
        assert_eq!(
            loaded
                .positions
                .lookup("spec.networks[0].pod.vmNetworkCIDR")
                .line,
            13
        );
    }

    #[test]
    fn type_errors_carry_position() {
        let bad = VMI.replace("name: a", "name: [1]");
        let err = load_vmi(&bad).expect_err("metadata.name is not a string");
        assert_eq!(err.pos().line, 4, "{err}");
    }

    #[test]
    fn duplicate_keys_rejected() {
        let bad = VMI.replace("  name: a\n", "  name: a\n  name: b\n");
        let err = load_vmi(&bad).expect_err("duplicate key");
        assert!(
            err.to_string().to_lowercase().contains("duplicate"),
            "{err}"
        );
    }

    #[test]
    fn a_recursive_alias_is_named_as_such() {
        let bad = VMI.replace("metadata:\n", "metadata: &meta\n  labels: *meta\n");
        let err = load_vmi(&bad).expect_err("recursive alias");
        assert!(
            err.to_string().contains("a recursive alias"),
            "{err}: {bad}"
        );
        assert_eq!(err.pos().line, 4, "{err}");
    }

    #[test]
    fn an_error_inside_an_aliased_value_names_the_anchor() {
        let bad = VMI.replace(
            "metadata:\n  name: a\n",
            "x-list: &list [1, 2]\nmetadata:\n  name: *list\n",
        );
        let err = load_vmi(&bad).expect_err("a list as the name");
        let text = err.to_string();
        assert!(
            text.contains("(in the value anchored at line 3, column 15)"),
            "{text}"
        );
        // The crate's own "(defined at ...) (used at ...)" tail, cut in the middle before.
        assert!(!text.contains("(used"), "{text}");
        assert_eq!(err.pos().line, 5, "{text}");
    }

    #[test]
    fn an_alias_bomb_is_refused_in_words() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let refs = vec![format!("*a{}", level - 1); 10].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        let err = load_vmi(&bomb).expect_err("a billion laughs");
        let text = err.to_string();
        assert!(text.contains("the YAML loader's limits"), "{text}");
        assert!(text.contains(" nodes"), "{text}");
        // No Rust value printed for a user.
        assert!(!text.contains('{'), "{text}");
    }

    #[test]
    fn wrong_kind_and_size() {
        let err = load_vmi(&VMI.replace("VirtualMachineInstance", "Pod")).expect_err("kind");
        assert!(
            err.to_string().contains("kind: Unsupported value: \"Pod\""),
            "{err}"
        );
        assert_eq!(err.pos().line, 2);
        let big = "a".repeat(MAX_INPUT_BYTES + 1);
        assert!(matches!(load_vmi(&big), Err(LoadError::TooLarge { .. })));
    }

    /// The one-pass common case gives what the header-first way gives, value and error alike:
    /// every VMI, VM and broken document the repository has, and each example mutated.
    #[test]
    fn one_pass_and_header_first_agree() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut texts = vec![VMI.to_string()];
        for dir in ["examples", "testdata/vmi", "fuzz/seeds/vmi_yaml"] {
            let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
                .expect(dir)
                .map(|entry| entry.expect(dir).path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
                .collect();
            entries.sort();
            for path in entries {
                texts.push(std::fs::read_to_string(&path).expect("read a VMI"));
            }
        }
        assert!(texts.len() > 20, "found only {} documents", texts.len());
        let mut variants = Vec::new();
        for text in &texts {
            variants.push(text.clone());
            variants.push(text.replace("kubevirt.io/v1", "kubevirt.io/v2"));
            variants.push(text.replace("kind: VirtualMachineInstance", "kind: Pod"));
            variants.push(text.replace("apiVersion:", "apiVersionX:"));
            variants.push(text.replace("name: default", "name: [default]"));
            variants.push(format!("{text}\nkind: VirtualMachineInstance\n"));
        }
        for text in &variants {
            let one = format!("{:?}", load_vmi(text));
            let two = format!("{:?}", load_by_header(text));
            assert_eq!(one, two, "{text}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,300}") {
            let _ = load_vmi(&s);
        }

        #[test]
        fn never_panics_on_mutated_vmi(pos in 0usize..VMI.len(), ins in "[\\[\\]{}:&*!|>'\" \n-]{1,4}") {
            let mut mutated = VMI.to_string();
            let cut = (0..=pos).rev().find(|cut| mutated.is_char_boundary(*cut)).unwrap_or(0);
            mutated.insert_str(cut, &ins);
            let _ = load_vmi(&mutated);
        }

        #[test]
        fn one_pass_agrees_on_mutated_vmi(pos in 0usize..VMI.len(), ins in "[\\[\\]{}:&*!|>'\" \n-]{1,4}") {
            let mut mutated = VMI.to_string();
            let cut = (0..=pos).rev().find(|cut| mutated.is_char_boundary(*cut)).unwrap_or(0);
            mutated.insert_str(cut, &ins);
            proptest::prop_assert_eq!(
                format!("{:?}", load_vmi(&mutated)),
                format!("{:?}", load_by_header(&mutated))
            );
        }
    }
}
