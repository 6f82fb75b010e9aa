//! Fixtures of the sidecar's tests: KubeVirt-shaped input from `testdata/`, the pod's facts
//! with a pod record, and a read-back of where the interfaces of a domain XML are.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)] // test code

use netbind_model::pod::ObservedPod;
use netbind_model::pod_record::PodRecord;
use netbind_sidecar::define::{Context, Defined, define};
use netbind_sidecar::facts::PodFacts;
use netbind_testkit::repo_root;

/// netbind-cni's pod record for the masquerade binding on the pod network.
pub const MASQUERADE: &str = "netbind/1 net=default pod=eth0 mode=masquerade";

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|err| panic!("{rel}: {err}"))
}

/// The observed v4 pod with `record` on its tap.
pub fn facts(record: &str) -> PodFacts {
    PodFacts::new(
        ObservedPod::from_json(&read("testdata/pods/pod-v4.json")).unwrap(),
        vec![PodRecord::decode(record).unwrap()],
    )
}

/// `OnDefineDomain` of the netbind-bound VMI fixture on `xml`, in a masquerade pod, with no
/// resolv.conf.
pub fn define_masquerade(xml: &str) -> Defined {
    let ctx = Context {
        plugin: "netbind",
        resolv_conf: "",
    };
    define(
        xml.as_bytes(),
        read("testdata/kubevirt/vmi-netbind.json").as_bytes(),
        &facts(MASQUERADE),
        &ctx,
    )
    .expect("defined")
}

/// `body` on the domain's own `<devices>` element of `xml` (which must be XML and have one).
pub fn with_devices<T>(xml: &str, body: impl FnOnce(roxmltree::Node<'_, '_>) -> T) -> T {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|err| panic!("{err}: {xml}"));
    let devices = doc
        .root_element()
        .children()
        .find(|node| node.has_tag_name("devices"))
        .unwrap_or_else(|| panic!("no <devices> in {xml}"));
    body(devices)
}

/// The interfaces in the domain's own `<devices>`, by their alias (`None` without one).
pub fn interfaces_in_devices(xml: &str) -> Vec<Option<String>> {
    with_devices(xml, |devices| {
        devices
            .children()
            .filter(|node| node.has_tag_name("interface"))
            .map(|iface| {
                iface
                    .children()
                    .find(|child| child.has_tag_name("alias"))
                    .and_then(|alias| alias.attribute("name"))
                    .map(String::from)
            })
            .collect()
    })
}
