//! netbind-cni fed as a runtime feeds it (root): a "node" namespace runs the real CNI
//! `bridge` + `host-local` plugins for a pod namespace, then netbind-cni with their result as
//! `prevResult` and the VMI as a pod annotation; ADD, CHECK, DEL and the second DEL
//! containerd sends are checked against the kernel. Each test makes its own namespaces and
//! removes them, even when it fails.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed step is a failed test

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use netbind_testkit::{ok, repo_root, sh};
use serde_json::{Value, json};

const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The pod interface KubeVirt names for the VMI network "blue".
const BLUE_IFNAME: &str = "pod16477688c0e";

fn ready() -> bool {
    let mut missing = netbind_testkit::missing_tools(&["nsenter", "nft", "ip"]);
    for plugin in ["bridge", "host-local"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            missing.push(format!(
                "{CNI_BIN_DIR}/{plugin} (containernetworking-plugins)"
            ));
        }
    }
    netbind_testkit::ready(missing)
}

/// A node namespace, a pod namespace and a private directory; all removed on drop.
struct Node {
    tag: String,
    dir: tempfile::TempDir,
    subnet: String,
    /// Another node's netbind-cni run directory, for sandboxes of one node's plugin.
    shared_run_dir: Option<PathBuf>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Node {
    fn new() -> Node {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("nbc{}x{seq}", std::process::id() % 100_000);
        ok(&format!(
            "ip netns add {tag}-node && ip netns add {tag}-pod"
        ));
        ok(&format!("ip -n {tag}-node link set lo up"));
        Node {
            subnet: format!("10.{}.{}.0/24", 100 + seq % 100, std::process::id() % 250),
            tag,
            dir: tempfile::tempdir().unwrap(),
            shared_run_dir: None,
        }
    }
    fn pod_netns(&self) -> String {
        format!("/run/netns/{}-pod", self.tag)
    }
    fn pod(&self) -> String {
        format!("{}-pod", self.tag)
    }
    fn run_dir(&self) -> PathBuf {
        self.shared_run_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join("run"))
    }
    fn container_id(&self) -> String {
        format!("{}-sandbox", self.tag)
    }

    /// Runs a plugin in the node namespace as a runtime does; (exit success, stdout JSON).
    fn plugin(&self, bin: &Path, command: &str, netns: &str, stdin: &Value) -> (bool, Value) {
        self.plugin_on(bin, command, netns, "eth0", stdin)
    }

    /// The same for the pod interface `ifname` (`CNI_IFNAME`).
    fn plugin_on(
        &self,
        bin: &Path,
        command: &str,
        netns: &str,
        ifname: &str,
        stdin: &Value,
    ) -> (bool, Value) {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}",
            self.tag
        );
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &self.container_id()),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", CNI_BIN_DIR),
            ("CNI_ARGS", &args),
        ];
        self.run_plugin(bin, &env, stdin)
    }

    /// netbind-cni's GC as a runtime calls it: no attachment parameters, the attachments
    /// still in use in the configuration (`valid`: container id and interface).
    fn gc(&self, conf: &Value, valid: &[(String, &str)]) -> (bool, Value) {
        let mut conf = conf.clone();
        conf["cniVersion"] = json!("1.1.0");
        conf["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        let env = [("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_BIN_DIR)];
        self.run_plugin(Path::new(env!("CARGO_BIN_EXE_netbind-cni")), &env, &conf)
    }

    /// Runs a plugin in the node namespace with exactly the `CNI_*` variables `env`.
    fn run_plugin(&self, bin: &Path, env: &[(&str, &str)], stdin: &Value) -> (bool, Value) {
        let (ok, value, _) = self.run_plugin_logged(bin, env, stdin);
        (ok, value)
    }

    /// The same, with what the plugin wrote to stderr (which a runtime keeps in its log).
    fn run_plugin_logged(
        &self,
        bin: &Path,
        env: &[(&str, &str)],
        stdin: &Value,
    ) -> (bool, Value, String) {
        let command = env
            .iter()
            .find(|(name, _)| *name == "CNI_COMMAND")
            .map_or("", |(_, value)| value);
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}-node", self.tag))
            .arg("--")
            .arg(bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("plugin runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!(
                    "{} {command}: stdout is not JSON ({e}): {text}\nstderr: {}",
                    bin.display(),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        };
        (
            out.status.success(),
            value,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The pod network's plugins: bridge + host-local, as the conflist's first entry.
    fn bridge_conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "nbtest",
            "type": "bridge",
            "bridge": format!("{}br", &self.tag[..self.tag.len().min(11)]),
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.dir.path().join("ipam"),
            },
        })
    }

    fn pod_network_add(&self) -> Value {
        let (ok, result) = self.plugin(
            &Path::new(CNI_BIN_DIR).join("bridge"),
            "ADD",
            &self.pod_netns(),
            &self.bridge_conf(),
        );
        assert!(ok, "bridge ADD: {result}");
        result
    }

    fn netbind_conf(&self, vmi: Option<&str>, prev: Option<&Value>) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": "nbtest",
            "type": "netbind-cni",
            "runDir": self.run_dir(),
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
        });
        if let Some(text) = vmi {
            conf["runtimeConfig"] = json!({
                "io.kubernetes.cri.pod-annotations": {
                    "netbind.io/vmi": text,
                    "io.kubernetes.cri.sandbox-name": self.tag,
                }
            });
        }
        if let Some(prev_result) = prev {
            conf["prevResult"] = prev_result.clone();
        }
        conf
    }

    /// The sandbox's hand-off record, where the launcher reads it.
    fn handoff_file(&self) -> PathBuf {
        self.run_dir()
            .join(self.container_id())
            .join("handoff/handoff.json")
    }

    fn handoff_record(&self) -> String {
        std::fs::read_to_string(self.handoff_file()).expect("hand-off")
    }

    /// The pod network, then netbind-cni's ADD in KubeVirt's binding-plugin form for it (as
    /// `plugin_form_conf` makes it), asserted to succeed: (the entry, the pod network's
    /// result, netbind-cni's result).
    fn plugin_form_add(&self, mode: &str, network: &str) -> (Value, Value, Value) {
        let prev = self.pod_network_add();
        let conf = self.plugin_form_conf(&prev, mode, network);
        let (ok_add, result) = self.netbind("ADD", &self.pod_netns(), &conf);
        assert!(ok_add, "ADD of {network} ({mode}): {result}");
        (conf, prev, result)
    }

    /// The entry in KubeVirt's binding-plugin form: no VMI, the binding's mode from its
    /// NetworkAttachmentDefinition and the network's name in the CNI args.
    fn plugin_form_conf(&self, prev: &Value, mode: &str, network: &str) -> Value {
        let mut conf = self.netbind_conf(None, Some(prev));
        conf["bindingMode"] = json!(mode);
        conf["args"] = json!({"cni": {"logicNetworkName": network}});
        conf
    }

    /// The pod network, then netbind-cni's ADD (configuration "nbtest") for the VMI network
    /// "default" of `vmi_text`, as Multus runs the first chain, asserted to succeed: (the
    /// entry, netbind-cni's result).
    fn default_network_add(&self, vmi_text: &str) -> (Value, Value) {
        let prev = self.pod_network_add();
        let mut conf = self.netbind_conf(Some(vmi_text), Some(&prev));
        conf["args"] = json!({"cni": {"logicNetworkName": "default"}});
        let (ok_add, result) = self.netbind("ADD", &self.pod_netns(), &conf);
        assert!(ok_add, "ADD default: {result}");
        (conf, result)
    }

    /// The secondary network "blue" of `examples/vmi-masquerade-multus.yaml`, as Multus adds
    /// it after the pod network: the bridge plugin's ADD for the pod interface KubeVirt names
    /// for it (its own bridge and subnet, a route to a remote subnet through its gateway), then
    /// netbind-cni's under the configuration name "blue-net", asserted to succeed: (the bridge
    /// plugin's entry, netbind-cni's entry).
    fn blue_add(&self, vmi_text: &str) -> (Value, Value) {
        let mut blue_conf = self.bridge_conf();
        blue_conf["name"] = json!("blue-net");
        blue_conf["bridge"] = json!(format!("{}bl", &self.tag[..self.tag.len().min(11)]));
        blue_conf["ipam"] = json!({
            "type": "host-local",
            "ranges": [[{"subnet": "192.168.100.8/30"}]],
            "routes": [{"dst": "172.16.0.0/16"}],
            "dataDir": self.dir.path().join("ipam-blue"),
        });
        let bridge = Path::new(CNI_BIN_DIR).join("bridge");
        let (ok_blue, blue_prev) =
            self.plugin_on(&bridge, "ADD", &self.pod_netns(), BLUE_IFNAME, &blue_conf);
        assert!(ok_blue, "bridge ADD for blue: {blue_prev}");
        let mut conf = self.netbind_conf(Some(vmi_text), Some(&blue_prev));
        conf["name"] = json!("blue-net");
        conf["args"] = json!({"cni": {"logicNetworkName": "blue"}});
        let netbind_cni = Path::new(env!("CARGO_BIN_EXE_netbind-cni"));
        let (ok_add, result) =
            self.plugin_on(netbind_cni, "ADD", &self.pod_netns(), BLUE_IFNAME, &conf);
        assert!(ok_add, "ADD blue: {result}");
        (blue_conf, conf)
    }

    fn sandbox(&self) -> PathBuf {
        self.run_dir().join(self.container_id())
    }

    fn netbind(&self, command: &str, netns: &str, conf: &Value) -> (bool, Value) {
        self.plugin(
            Path::new(env!("CARGO_BIN_EXE_netbind-cni")),
            command,
            netns,
            conf,
        )
    }

    fn pod_links(&self) -> Vec<String> {
        let out = ok(&format!("ip -n {} -j link show", self.pod()));
        let links: Vec<Value> = serde_json::from_str(&out).unwrap();
        links
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    fn alias(&self, link: &str) -> Option<String> {
        let out = ok(&format!("ip -n {} -j link show {link}", self.pod()));
        let links: Vec<Value> = serde_json::from_str(&out).unwrap();
        links.first()?["ifalias"].as_str().map(String::from)
    }

    fn nft_tables(&self) -> String {
        ok(&format!("ip netns exec {} nft list tables", self.pod()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let tag = &self.tag;
        let _ = sh(&format!(
            "ip netns del {tag}-pod 2>/dev/null; ip netns del {tag}-node 2>/dev/null"
        ));
    }
}

fn vmi(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

fn interface<'a>(result: &'a Value, name: &str) -> Option<&'a Value> {
    result["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == name)
}

/// `nat`: the `ip` table the binding makes (masquerade), which CHECK must miss once deleted.
fn add_check_del(vmi_path: &str, made: &[&str], nat: bool) {
    let node = Node::new();
    let prev = node.pod_network_add();
    let vmi_text = vmi(vmi_path);
    let conf = node.netbind_conf(Some(&vmi_text), Some(&prev));
    let (ok_add, result) = node.netbind("ADD", &node.pod_netns(), &conf);
    assert!(ok_add, "netbind-cni ADD: {result}");
    // The result: the previous one, plus the links phase 1 made, each in the pod's sandbox.
    assert_eq!(result["ips"], prev["ips"], "the pod IPs pass through");
    for name in made {
        let iface = interface(&result, name).unwrap_or_else(|| panic!("{name} in {result}"));
        assert_eq!(iface["sandbox"], node.pod_netns().as_str());
        assert_eq!(
            iface["mac"].as_str().map(str::len),
            Some(17),
            "{name}'s MAC: {iface}"
        );
        assert!(
            node.pod_links().contains(&name.to_string()),
            "{name} exists"
        );
    }
    assert!(
        node.handoff_file().is_file(),
        "the hand-off record for the launcher"
    );

    // CHECK with the chain's result: the kernel is as planned.
    let check_conf = node.netbind_conf(Some(&vmi_text), Some(&result));
    let (ok_check, out) = node.netbind("CHECK", &node.pod_netns(), &check_conf);
    assert!(ok_check && out.is_null(), "CHECK on a good pod: {out}");
    // Drift: the tap goes away behind phase 1's back.
    ok(&format!("ip -n {} link del tap0", node.pod()));
    let (ok_check, err) = node.netbind("CHECK", &node.pod_netns(), &check_conf);
    assert!(!ok_check, "CHECK must see the missing tap");
    assert_eq!(err["code"], 101, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("link tap0: missing"),
        "{err}"
    );
    // A table flushed behind phase 1's back is seen too (read back over netlink, no `nft`).
    if nat {
        assert!(node.nft_tables().contains("table ip nat"), "the NAT table");
        ok(&format!(
            "ip netns exec {} nft delete table ip nat",
            node.pod()
        ));
        let (ok_check, err) = node.netbind("CHECK", &node.pod_netns(), &check_conf);
        assert!(!ok_check, "CHECK must see the missing table");
        let msg = err["msg"].as_str().unwrap();
        assert!(msg.contains("nft table ip nat: missing"), "{err}");
        assert!(!msg.contains("nft table inet netbind"), "{err}");
    }

    // DEL as StopPodSandbox sends it, then the pod network's own DEL, then the second DEL
    // RemovePodSandbox sends (no namespace, no prevResult).
    let (ok_del, out) = node.netbind("DEL", &node.pod_netns(), &check_conf);
    assert!(ok_del, "DEL: {out}");
    // DEL hands the removal to a detached helper; the pod lives on here, so the helper
    // removes everything itself once its grace for the namespace's deletion is over.
    let removed = eventually(|| !node.run_dir().join(node.container_id()).exists());
    assert!(removed, "the detached removal finished");
    for name in made {
        assert!(
            !node.pod_links().contains(&name.to_string()),
            "{name} removed"
        );
    }
    assert!(
        !node.nft_tables().contains("netbind"),
        "netbind's nft tables removed:\n{}",
        node.nft_tables()
    );
    assert!(
        !node.run_dir().join(node.container_id()).exists(),
        "the sandbox's hand-off and state are removed"
    );
    let (ok_bridge_del, out) = node.plugin(
        &Path::new(CNI_BIN_DIR).join("bridge"),
        "DEL",
        &node.pod_netns(),
        &{
            let mut bridge = node.bridge_conf();
            bridge["prevResult"] = prev.clone();
            bridge
        },
    );
    assert!(ok_bridge_del, "the pod network's DEL after ours: {out}");
    let (ok_again, out) = node.netbind("DEL", "", &node.netbind_conf(Some(&vmi_text), None));
    assert!(ok_again && out.is_null(), "the second DEL: {out}");
}

#[test]
fn masquerade_add_check_del() {
    if !ready() {
        return;
    }
    add_check_del("examples/vmi-masquerade.yaml", &["k6t-eth0", "tap0"], true);
}

#[test]
fn bridge_binding_add_check_del() {
    if !ready() {
        return;
    }
    add_check_del("examples/vmi-bridge.yaml", &["k6t-eth0", "tap0"], false);
}

#[test]
fn a_failed_add_names_the_problem_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let node = Node::new();
    let prev = node.pod_network_add();
    let links_before = node.pod_links();
    // Admission rejects the annotation's VMI: a port out of range.
    let bad = vmi("examples/vmi-ports.yaml").replace("port: 80", "port: 70000");
    assert_ne!(bad, vmi("examples/vmi-ports.yaml"), "the test edits a port");
    let (ok_add, err) = node.netbind(
        "ADD",
        &node.pod_netns(),
        &node.netbind_conf(Some(&bad), Some(&prev)),
    );
    assert!(!ok_add, "ADD of an invalid VMI must fail");
    assert_eq!(err["code"], 7, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("pod annotation netbind.io/vmi") && msg.contains("ports[0]"),
        "the message names the annotation and the field: {msg}"
    );
    assert_eq!(node.pod_links(), links_before, "no link was added");
    assert!(
        !node.run_dir().join(node.container_id()).exists(),
        "no files"
    );

    // Not YAML at all.
    let (ok_add, err) = node.netbind(
        "ADD",
        &node.pod_netns(),
        &node.netbind_conf(Some("{not: [valid"), Some(&prev)),
    );
    assert!(!ok_add);
    assert!(
        err["msg"].as_str().unwrap().contains("netbind.io/vmi"),
        "{err}"
    );

    // A previous result whose address is not on eth0: refused before any change.
    let mut forged = prev.clone();
    forged["ips"][0]["address"] = json!("192.0.2.77/24");
    let (ok_add, err) = node.netbind(
        "ADD",
        &node.pod_netns(),
        &node.netbind_conf(Some(&vmi("examples/vmi-masquerade.yaml")), Some(&forged)),
    );
    assert!(!ok_add);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .starts_with("prevResult.ips: 192.0.2.77/24"),
        "{err}"
    );
    assert_eq!(node.pod_links(), links_before, "no link was added");

    // A chained plugin without a previous result.
    let (ok_add, err) = node.netbind(
        "ADD",
        &node.pod_netns(),
        &node.netbind_conf(Some(&vmi("examples/vmi-masquerade.yaml")), None),
    );
    assert!(!ok_add);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .starts_with("prevResult: missing"),
        "{err}"
    );
}

#[test]
fn kubevirt_binding_plugin_form_serves_the_named_network() {
    if !ready() {
        return;
    }
    // As KubeVirt runs a binding's CNI: no VMI, only the network's name in CNI args, and the
    // binding's mode in its NetworkAttachmentDefinition.
    let node = Node::new();
    let (conf, _, result) = node.plugin_form_add("masquerade", "default");
    for name in ["k6t-eth0", "tap0"] {
        assert!(interface(&result, name).is_some(), "{name} in {result}");
    }
    let record = node.handoff_record();
    assert!(record.contains("\"network\": \"default\""), "{record}");
    // The pod record for KubeVirt's hook sidecar, on the tap, readable by anyone in the pod.
    let alias = node.alias("tap0");
    assert_eq!(
        alias.as_deref(),
        Some("netbind/1 net=default pod=eth0 mode=masquerade"),
        "tap0's alias"
    );
    let (ok_del, out) = node.netbind("DEL", &node.pod_netns(), &conf);
    assert!(ok_del, "DEL: {out}");
    // The bridge binding records the pod interface's routes too, which phase 1 took away.
    let node = Node::new();
    let (conf, _, _) = node.plugin_form_add("bridge", "default");
    let record = node.alias("tap0").expect("tap0's alias");
    let decoded = netbind_model::pod_record::PodRecord::decode(&record).expect("a pod record");
    assert_eq!(decoded.mode, netbind_model::handoff::BindingKind::Bridge);
    assert!(
        decoded.routes.iter().any(|route| route.gateway.is_some()),
        "the default route's gateway: {record}"
    );
    let (ok_del, out) = node.netbind("DEL", &node.pod_netns(), &conf);
    assert!(ok_del, "DEL: {out}");
    assert!(eventually(|| !node
        .pod_links()
        .contains(&"tap0".to_string())));
}

#[test]
fn binding_plugin_form_refuses_a_second_network_and_keeps_the_first() {
    if !ready() {
        return;
    }
    // The binding-plugin form serves the pod network (its VMI is made from `bindingMode` and
    // `logicNetworkName` alone). A second netbind binding in the same pod, for another
    // network, used to be planned as if it were the pod network, and its call took the first
    // network's links away. It is refused now, before any change, and its DEL changes nothing.
    let node = Node::new();
    let (conf, prev, _) = node.plugin_form_add("masquerade", "default");
    let first = ifindexes(&node, &["k6t-eth0", "tap0"]);
    let record = node.handoff_record();

    let second = node.plugin_form_conf(&prev, "bridge", "blue");
    let (ok_add, result) = node.netbind("ADD", &node.pod_netns(), &second);
    assert!(
        !ok_add,
        "a second network in the plugin form was accepted: {result}"
    );
    let msg = result["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("\"blue\"") && msg.contains("\"default\""),
        "the error names both networks: {result}"
    );
    assert_eq!(result["code"], json!(7), "{result}");
    assert_eq!(
        ifindexes(&node, &["k6t-eth0", "tap0"]),
        first,
        "the first network was touched"
    );
    assert_eq!(node.handoff_record(), record);
    assert!(
        node.nft_tables().contains("netbind"),
        "{}",
        node.nft_tables()
    );

    // The runtime's DEL for the refused network: nothing of it was set up, nothing goes.
    let (ok_del, out) = node.netbind("DEL", &node.pod_netns(), &second);
    assert!(ok_del, "DEL blue: {out}");
    assert_eq!(
        ifindexes(&node, &["k6t-eth0", "tap0"]),
        first,
        "DEL blue took links"
    );
    assert_eq!(node.handoff_record(), record);

    let (ok_del, out) = node.netbind("DEL", &node.pod_netns(), &conf);
    assert!(ok_del, "DEL default: {out}");
    assert!(eventually(|| !node
        .pod_links()
        .contains(&"tap0".to_string())));
}

/// Polls `done` for a few seconds (a detached removal takes a fraction of one; the margin is
/// for a loaded test machine).
fn eventually(done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    done()
}

/// As every runtime does: DEL, then the namespace deleted at once. The detached helper finds
/// it gone, leaves the links to the kernel's own reclaim, and removes the sandbox's files.
#[test]
fn del_then_namespace_deletion_leaves_nothing() {
    if !ready() {
        return;
    }
    let node = Node::new();
    let prev = node.pod_network_add();
    let vmi_text =
        std::fs::read_to_string(netbind_testkit::repo_root().join("examples/vmi-masquerade.yaml"))
            .unwrap();
    let conf = node.netbind_conf(Some(&vmi_text), Some(&prev));
    let (ok_add, result) = node.netbind("ADD", &node.pod_netns(), &conf);
    assert!(ok_add, "ADD: {result}");
    let (ok_del, out) = node.netbind("DEL", &node.pod_netns(), &conf);
    assert!(ok_del, "DEL: {out}");
    ok(&format!("ip netns del {}", node.pod()));
    assert!(
        eventually(|| !node.run_dir().join(node.container_id()).exists()),
        "the sandbox's hand-off and state are removed"
    );
    // No helper is left behind either (it carries its job in its environment).
    let helper_running = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            std::fs::read(entry.path().join("environ")).is_ok_and(|environ| {
                let text = String::from_utf8_lossy(&environ);
                text.contains("NETBIND_TEARDOWN_HELPER=") && text.contains(&node.container_id())
            })
        })
    };
    assert!(eventually(|| !helper_running()), "the helper exited");
    let (ok_again, out) = node.netbind("DEL", "", &node.netbind_conf(Some(&vmi_text), None));
    assert!(ok_again && out.is_null(), "the second DEL: {out}");
}

#[test]
fn a_pod_without_the_annotation_passes_through() {
    if !ready() {
        return;
    }
    let node = Node::new();
    let prev = node.pod_network_add();
    let links_before = node.pod_links();
    let netbind_cni = Path::new(env!("CARGO_BIN_EXE_netbind-cni"));
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", &node.container_id()),
        ("CNI_NETNS", &node.pod_netns()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", CNI_BIN_DIR),
    ];
    // The runtime passed the pod's annotations, and there is no VMI among them.
    let mut conf = node.netbind_conf(None, Some(&prev));
    conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {"app": "web"}});
    let (ok_add, result, log) = node.run_plugin_logged(netbind_cni, &env, &conf);
    assert!(ok_add, "{result}");
    assert_eq!(result, prev, "the previous result, unchanged");
    assert_eq!(node.pod_links(), links_before);
    assert!(log.is_empty(), "nothing to say: {log}");
    // The entry lacks the capability, so the runtime passed no annotations: every pod passes
    // through, a VM's too; the plugin says so where the runtime keeps its log.
    let (ok_add, result, log) =
        node.run_plugin_logged(netbind_cni, &env, &node.netbind_conf(None, Some(&prev)));
    assert!(ok_add, "{result}");
    assert_eq!(result, prev, "the previous result, unchanged");
    assert_eq!(node.pod_links(), links_before);
    assert!(
        log.contains("no pod annotations") && log.contains("io.kubernetes.cri.pod-annotations"),
        "{log}"
    );
    // As text: a runtime's log is not a terminal.
    assert!(!log.contains('\u{1b}'), "no terminal colour codes: {log:?}");
    let (ok_del, _) = node.netbind(
        "DEL",
        &node.pod_netns(),
        &node.netbind_conf(None, Some(&prev)),
    );
    assert!(ok_del);
}

#[test]
fn version_answers_without_a_namespace() {
    let out = Command::new(env!("CARGO_BIN_EXE_netbind-cni"))
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(br#"{"cniVersion":"1.0.0"}"#)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["supportedVersions"], json!(["1.0.0", "1.1.0"]));
}

/// The ifindex of each named link of the pod.
fn ifindexes(node: &Node, names: &[&str]) -> Vec<u64> {
    let out = ok(&format!("ip -n {} -j link show", node.pod()));
    let links: Vec<Value> = serde_json::from_str(&out).unwrap();
    names
        .iter()
        .map(|name| {
            links
                .iter()
                .find(|link| link["ifname"] == *name)
                .and_then(|link| link["ifindex"].as_u64())
                .unwrap_or_else(|| panic!("{name} missing: {out}"))
        })
        .collect()
}

#[test]
fn one_call_per_network_keeps_the_other_networks() {
    if !ready() {
        return;
    }
    // Multus runs each network's chain in turn, netbind-cni last in each, told which VMI
    // network the call is for (`logicNetworkName`). The second call must add its network and
    // leave the first one's links as they are.
    let node = Node::new();
    let vmi_text = vmi("examples/vmi-masquerade-multus.yaml");
    let (default_conf, _) = node.default_network_add(&vmi_text);
    let first = ifindexes(&node, &["k6t-eth0", "tap0"]);
    let before_blue = node.pod_links();

    let (blue_conf, conf) = node.blue_add(&vmi_text);
    let (blue, bridge) = (BLUE_IFNAME, Path::new(CNI_BIN_DIR).join("bridge"));
    let netbind_cni = Path::new(env!("CARGO_BIN_EXE_netbind-cni"));
    assert_eq!(
        ifindexes(&node, &["k6t-eth0", "tap0"]),
        first,
        "the first network's links were remade"
    );
    ifindexes(&node, &["k6t-16477688c0e", "tap16477688c0e"]);
    let record = node.handoff_record();
    for network in ["\"network\": \"default\"", "\"network\": \"blue\""] {
        assert!(record.contains(network), "{network} in {record}");
    }
    // Multus removes blue from the running pod (a hot-unplug): its DEL takes blue's
    // hand-off entry away and gives its pod interface back (the bridge plugin's DEL, next,
    // deletes it by name) before returning, leaves deleting blue's links to a detached helper
    // (each deletion waits on the kernel), and leaves the first network as it is.
    let (ok_del, out) = node.plugin_on(netbind_cni, "DEL", &node.pod_netns(), blue, &conf);
    assert!(ok_del, "DEL blue: {out}");
    assert_eq!(ifindexes(&node, &["k6t-eth0", "tap0"]), first);
    let links = node.pod_links();
    assert!(links.iter().any(|link| link == blue), "{links:?}");
    let record = node.handoff_record();
    assert!(!record.contains("\"network\": \"blue\""), "{record}");
    // Then exactly the links there were before blue came, and its pod interface.
    let mut want: Vec<String> = before_blue.into_iter().chain([blue.to_string()]).collect();
    want.sort();
    let state = node.sandbox().join("state/state.json");
    let now = || {
        let mut links = node.pod_links();
        links.sort();
        links
    };
    assert!(
        eventually(|| now() == want
            && !std::fs::read_to_string(&state)
                .unwrap()
                .contains("pending_removal")),
        "blue's links and their pending removal are gone: {:?}, want {want:?}",
        now()
    );
    assert_eq!(ifindexes(&node, &["k6t-eth0", "tap0"]), first);
    // blue's configuration no longer uses the sandbox (GC of it must not take the pod away).
    assert!(!node.sandbox().join("networks/blue-net").exists());
    assert!(node.sandbox().join("networks/nbtest").is_file());
    let (ok_del, out) = node.plugin_on(&bridge, "DEL", &node.pod_netns(), blue, &blue_conf);
    assert!(ok_del, "bridge DEL for blue: {out}");
    // The last network's DEL removes the rest.
    let (ok_del, out) = node.netbind("DEL", &node.pod_netns(), &default_conf);
    assert!(ok_del, "DEL default: {out}");
    assert!(eventually(|| {
        let links = node.pod_links();
        !links
            .iter()
            .any(|link| link == "k6t-eth0" || link == "tap0")
    }));
}

#[test]
fn gc_removes_the_sandboxes_of_gone_attachments_and_only_its_own() {
    if !ready() {
        return;
    }
    // Three pods served by one node's plugin (one run directory). A is in the pod network's
    // configuration "nbtest" and in a Multus network "blue-net"; B is in "nbtest" and its pod
    // goes away without a DEL (a runtime that restarted); C is in "other-net" only.
    let a = Node::new();
    let mut b = Node::new();
    b.shared_run_dir = Some(a.run_dir());
    let mut c = Node::new();
    c.shared_run_dir = Some(a.run_dir());
    let multus = vmi("examples/vmi-masquerade-multus.yaml");
    let (conf_a, result_a) = a.default_network_add(&multus);
    a.blue_add(&multus);
    let masquerade = vmi("examples/vmi-masquerade.yaml");
    let add = |node: &Node, name: &str| {
        let prev = node.pod_network_add();
        let mut conf = node.netbind_conf(Some(&masquerade), Some(&prev));
        conf["name"] = json!(name);
        let (ok_add, result) = node.netbind("ADD", &node.pod_netns(), &conf);
        assert!(ok_add, "ADD {}: {result}", node.container_id());
        conf
    };
    add(&b, "nbtest");
    let conf_c = add(&c, "other-net");
    ok(&format!("ip netns del {}", b.pod()));
    let gc_conf = |name: &str| {
        let mut conf = a.netbind_conf(None, None);
        conf["name"] = json!(name);
        conf
    };
    let sandboxes = || {
        let mut ids: Vec<String> = std::fs::read_dir(a.run_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    };
    let all = {
        let mut ids = vec![a.container_id(), b.container_id(), c.container_id()];
        ids.sort();
        ids
    };
    assert_eq!(sandboxes(), all);

    // Without the runtime's list GC refuses, and removes nothing.
    let mut no_list = gc_conf("nbtest");
    no_list["cniVersion"] = json!("1.1.0");
    let (ok_gc, err) = a.run_plugin(
        Path::new(env!("CARGO_BIN_EXE_netbind-cni")),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", CNI_BIN_DIR)],
        &no_list,
    );
    assert!(!ok_gc, "GC without the list must fail");
    assert_eq!(err["code"], 7, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .starts_with("cni.dev/valid-attachments: missing"),
        "{err}"
    );
    assert_eq!(sandboxes(), all, "nothing removed");

    // "nbtest" still has A's attachments: B's sandbox goes, A's and C's stay.
    let (ok_gc, out) = a.gc(
        &gc_conf("nbtest"),
        &[(a.container_id(), "eth0"), (a.container_id(), BLUE_IFNAME)],
    );
    assert!(ok_gc && out.is_null(), "GC of nbtest: {out}");
    let mut kept = vec![a.container_id(), c.container_id()];
    kept.sort();
    assert_eq!(sandboxes(), kept, "B's sandbox is collected");
    let mut check_conf = conf_a.clone();
    check_conf["prevResult"] = result_a.clone();
    let (ok_check, out) = a.netbind("CHECK", &a.pod_netns(), &check_conf);
    assert!(ok_check, "A is as phase 1 made it: {out}");

    // A's pod network attachment is gone from "nbtest", but "blue-net" still uses the
    // sandbox: it loses only nbtest's mark.
    let (ok_gc, out) = a.gc(&gc_conf("nbtest"), &[]);
    assert!(ok_gc, "GC of nbtest: {out}");
    assert!(a.handoff_file().is_file(), "A's hand-off record stays");
    assert!(!a.sandbox().join("networks/nbtest").exists());
    assert!(a.sandbox().join("networks/blue-net").is_file());
    // Then "blue-net" has none of A's either: the sandbox goes.
    let (ok_gc, out) = a.gc(&gc_conf("blue-net"), &[]);
    assert!(ok_gc, "GC of blue-net: {out}");
    assert!(!a.sandbox().exists(), "A's sandbox is collected");

    // C belongs to "other-net" alone: kept while listed.
    let (ok_gc, out) = a.gc(&gc_conf("other-net"), &[(c.container_id(), "eth0")]);
    assert!(ok_gc, "GC of other-net: {out}");
    assert!(c.sandbox().join("handoff/handoff.json").is_file());
    // A sandbox no configuration marked (one an earlier version made) is no GC's to take:
    // only its DEL removes it.
    std::fs::remove_dir_all(c.sandbox().join("networks")).unwrap();
    for name in ["nbtest", "other-net"] {
        let (ok_gc, out) = a.gc(&gc_conf(name), &[]);
        assert!(ok_gc, "GC of {name}: {out}");
        assert!(c.sandbox().join("handoff/handoff.json").is_file(), "{name}");
    }
    // Its ADD again (a runtime's retry) marks it, and no longer listed it is collected.
    let (ok_add, result) = c.netbind("ADD", &c.pod_netns(), &conf_c);
    assert!(ok_add, "ADD C again: {result}");
    assert!(c.sandbox().join("networks/other-net").is_file());
    let (ok_gc, out) = a.gc(&gc_conf("other-net"), &[]);
    assert!(ok_gc, "GC of other-net: {out}");
    assert_eq!(sandboxes(), Vec::<String>::new());
}

#[test]
fn a_failed_add_of_another_network_keeps_the_running_ones() {
    if !ready() {
        return;
    }
    // A running pod with its pod network set up; then an ADD for a network the VMI does not
    // have (a NetworkAttachmentDefinition hot-plugged under the wrong name) fails in phase 1.
    // Its failure must take back only what it did: before, the sandbox was removed whole, and
    // the running VM's pod network with it.
    let node = Node::new();
    let vmi_text = vmi("examples/vmi-masquerade-multus.yaml");
    let (conf, result) = node.default_network_add(&vmi_text);
    let links = ifindexes(&node, &["k6t-eth0", "tap0"]);
    let record = node.handoff_record();

    let mut green = conf.clone();
    green["name"] = json!("green-net");
    green["args"] = json!({"cni": {"logicNetworkName": "green"}});
    let (ok_add, err) = node.netbind("ADD", &node.pod_netns(), &green);
    assert!(!ok_add, "ADD of a network the VMI does not have must fail");
    assert!(err["msg"].as_str().unwrap().contains("green"), "{err}");

    assert_eq!(
        ifindexes(&node, &["k6t-eth0", "tap0"]),
        links,
        "default's links"
    );
    assert_eq!(node.handoff_record(), record, "default's hand-off record");
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result;
    let (ok_check, out) = node.netbind("CHECK", &node.pod_netns(), &check_conf);
    assert!(ok_check, "default is as phase 1 made it: {out}");
    assert!(node.sandbox().join("networks/nbtest").is_file());
    assert!(
        !node.sandbox().join("networks/green-net").exists(),
        "the failed call's mark is taken back"
    );
}
