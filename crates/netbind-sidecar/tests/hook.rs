//! The hook sidecar against KubeVirt-shaped input: the domain XML virt-launcher writes for an
//! interface with `domainAttachmentType: tap`, and a VMI as the API serves it (status, managed
//! fields and all). Through the library, and over the socket with the binary running as uid 107
//! with no capability, as virt-launcher calls it.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netbind_model::pod::ObservedPod;
use netbind_model::pod_record::PodRecord;
use netbind_sidecar::client::HookClient;
use netbind_sidecar::define::{Context, DefineError, define};
use netbind_sidecar::facts::PodFacts;
use netbind_testkit::repo_root;

mod common;
use common::{MASQUERADE, define_masquerade, facts, interfaces_in_devices, read};

/// The `<interface>` elements of a domain XML, each line trimmed (indentation is the
/// document's; the golden file is indented by the renderer alone).
fn interfaces(xml: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in xml.lines() {
        let line = line.trim();
        if line.starts_with("<interface") {
            inside = true;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
        if line == "</interface>" {
            inside = false;
        }
    }
    out
}

fn golden(case: &str) -> String {
    interfaces(&read(&format!("testdata/golden/{case}/interfaces.xml")))
}

#[test]
fn on_define_domain_puts_the_golden_interface_in_place() {
    let xml = read("testdata/kubevirt/domain-tap.xml");
    let ctx = Context {
        plugin: "netbind",
        resolv_conf: &read("testdata/resolv.conf"),
    };
    let defined = define(
        xml.as_bytes(),
        read("testdata/kubevirt/vmi-netbind.json").as_bytes(),
        &facts(MASQUERADE),
        &ctx,
    )
    .expect("defined");
    assert_eq!(interfaces(&defined.domain_xml), golden("masquerade-v4"));
    // Everything else is KubeVirt's, byte for byte.
    let before = xml.split("\t\t<interface").next().unwrap();
    assert!(defined.domain_xml.starts_with(before));
    let after = xml.split("\t\t</interface>\n").nth(1).unwrap();
    assert!(
        defined.domain_xml.ends_with(after),
        "{}",
        defined.domain_xml
    );
    roxmltree::Document::parse(&defined.domain_xml).expect("still XML");
    // And the DHCP the sidecar serves is masquerade's: the guest's 10.0.2.2 on the bridge.
    let dhcp = defined.handoff.interfaces[0]
        .dhcpv4
        .as_ref()
        .expect("DHCPv4");
    assert_eq!(dhcp.interface.as_str(), "k6t-eth0");
    assert_eq!(dhcp.client_ip.to_string(), "10.0.2.2");
}

#[test]
fn a_domain_without_the_interface_gets_it_appended() {
    let xml = read("testdata/kubevirt/domain-tap.xml");
    let start = xml.find("\t\t<interface").unwrap();
    let end = xml.find("\t\t</interface>\n").unwrap() + "\t\t</interface>\n".len();
    let without = format!("{}{}", &xml[..start], &xml[end..]);
    let defined = define_masquerade(&without);
    assert_eq!(interfaces(&defined.domain_xml), golden("masquerade-v4"));
    assert!(!interfaces_in_devices(&defined.domain_xml).is_empty());
}

#[test]
fn an_empty_self_closing_devices_element_gets_the_interface_inside() {
    // `<devices/>` has no end tag to insert before: the interface went after the element (a
    // child of <domain>, which libvirt ignores), or into an earlier comment that spelled
    // `</devices>`.
    for xml in [
        "<domain type=\"kvm\"><name>default_vmi-netbind</name><devices/></domain>\n",
        "<domain type=\"kvm\">\n  <!-- </devices> -->\n  <devices />\n</domain>\n",
    ] {
        let defined = define_masquerade(xml);
        assert!(
            !interfaces_in_devices(&defined.domain_xml).is_empty(),
            "{}",
            defined.domain_xml
        );
        assert_eq!(interfaces(&defined.domain_xml), golden("masquerade-v4"));
        assert!(defined.domain_xml.contains("<!-- </devices> -->") || !xml.contains("<!--"));
    }
}

#[test]
fn bad_input_is_named_not_fatal() {
    let vmi = read("testdata/kubevirt/vmi-netbind.json");
    let xml = read("testdata/kubevirt/domain-tap.xml");
    let ctx = Context {
        plugin: "netbind",
        resolv_conf: "",
    };
    let err = define(
        b"<domain><devices>",
        vmi.as_bytes(),
        &facts(MASQUERADE),
        &ctx,
    )
    .expect_err("unclosed XML");
    assert!(matches!(err, DefineError::Domain(_)), "{err}");
    let err = define(xml.as_bytes(), b"{\"spec\":", &facts(MASQUERADE), &ctx)
        .expect_err("truncated JSON");
    assert!(matches!(err, DefineError::VmiJson(_)), "{err}");
    // A record for another network only: this interface's pod was not set up by netbind-cni.
    let err = define(
        xml.as_bytes(),
        vmi.as_bytes(),
        &facts("netbind/1 net=blue pod=eth0 mode=masquerade"),
        &ctx,
    )
    .expect_err("no record");
    assert!(err.to_string().contains("\"default\""), "{err}");
    // Interfaces of another plugin are left alone.
    let other = Context {
        plugin: "someone-else",
        resolv_conf: "",
    };
    let defined = define(xml.as_bytes(), vmi.as_bytes(), &facts(MASQUERADE), &other).unwrap();
    assert_eq!(defined.domain_xml, xml);
    assert!(defined.handoff.interfaces.is_empty());
}

/// The sidecar binary, as uid 107 with no capability (it refuses to run otherwise).
struct Sidecar {
    child: Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sidecar_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_netbind-sidecar"))
}

fn unprivileged(bin: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=107",
        "--regid=107",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ])
    .arg(bin);
    cmd
}

fn start_offline(record: &str) -> Sidecar {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("netbind.sock");
    let mut child = unprivileged(&sidecar_bin())
        .arg("--socket")
        .arg(&socket)
        .arg("--pod")
        .arg(repo_root().join("testdata/pods/pod-v4.json"))
        .arg("--record")
        .arg(record)
        .arg("--resolv-conf")
        .arg(repo_root().join("testdata/resolv.conf"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("netbind-sidecar");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("\"event\":\"ready\""), "ready line: {line:?}");
    Sidecar {
        child,
        socket,
        _dir: dir,
    }
}

fn root_ready() -> bool {
    netbind_testkit::ready(netbind_testkit::missing_tools(&["setpriv"]))
}

#[test]
fn virt_launcher_calls_over_the_socket() {
    if !root_ready() {
        return;
    }
    let mut sidecar = start_offline(MASQUERADE);
    let client = HookClient::connect(&sidecar.socket).expect("dial");
    let info = client.info().expect("Info");
    assert_eq!(info.name, "netbind");
    assert_eq!(info.versions, ["v1alpha3", "v1alpha2"]);
    let points: Vec<_> = info.hook_points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(points, ["OnDefineDomain", "Shutdown"]);
    let xml = read("testdata/kubevirt/domain-tap.xml");
    let vmi = read("testdata/kubevirt/vmi-netbind.json");
    for v1alpha2 in [false, true] {
        let out = if v1alpha2 {
            client.on_define_domain_v1alpha2(xml.as_bytes(), vmi.as_bytes())
        } else {
            client.on_define_domain(xml.as_bytes(), vmi.as_bytes())
        }
        .expect("OnDefineDomain");
        assert_eq!(
            interfaces(&String::from_utf8(out).unwrap()),
            golden("masquerade-v4")
        );
    }
    // Malformed requests get gRPC errors naming what is wrong, and the sidecar keeps serving.
    let err = client
        .on_define_domain(b"<domain", vmi.as_bytes())
        .expect_err("bad XML");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("domainXML"), "{err}");
    let err = client
        .on_define_domain(xml.as_bytes(), b"[1, 2")
        .expect_err("bad VMI");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("vmi"), "{err}");
    let bad_spec = vmi.replace(
        "\"pod\": {}",
        "\"pod\": {\"vmNetworkCIDR\": \"10.0.2.0/31\"}",
    );
    let err = client
        .on_define_domain(xml.as_bytes(), bad_spec.as_bytes())
        .expect_err("bad spec");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("vmNetworkCIDR"), "{err}");
    assert_eq!(client.info().expect("still serving").name, "netbind");
    // Shutdown ends it, and it takes its socket with it.
    client.shutdown().expect("Shutdown");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = sidecar.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the sidecar did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!sidecar.socket.exists());
}

#[test]
fn it_refuses_to_run_with_a_capability() {
    if !root_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(sidecar_bin())
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CapEff=cap_"), "{err}");
    assert!(!dir.path().join("s.sock").exists());
}

/// The bridge binding after phase 1: the pod interface's name is a dummy with its MAC, MTU and
/// addresses but no routes (they left with the addresses); the record brings them back, and
/// the guest is offered the pod's address with the pod's gateway.
#[test]
fn bridge_mode_plans_from_the_dummy_and_the_recorded_routes() {
    let mut pod = ObservedPod::from_json(&read("testdata/pods/pod-v4.json")).unwrap();
    let routes = std::mem::take(&mut pod.interfaces[0].routes);
    let record = PodRecord {
        network: "default".into(),
        pod_interface: pod.interfaces[0].name.clone(),
        mode: netbind_model::handoff::BindingKind::Bridge,
        routes,
    };
    let text = record.encode().unwrap();
    let facts = PodFacts::new(pod, vec![PodRecord::decode(&text).unwrap()]);
    let ctx = Context {
        plugin: "netbind",
        resolv_conf: &read("testdata/resolv.conf"),
    };
    let defined = define(
        read("testdata/kubevirt/domain-tap.xml").as_bytes(),
        read("testdata/kubevirt/vmi-netbind.json").as_bytes(),
        &facts,
        &ctx,
    )
    .expect("defined");
    assert_eq!(interfaces(&defined.domain_xml), golden("bridge-pod"));
    let dhcp = defined.handoff.interfaces[0]
        .dhcpv4
        .as_ref()
        .expect("DHCPv4");
    assert_eq!(dhcp.client_ip.to_string(), "10.244.0.5");
    assert_eq!(
        dhcp.router.map(|gw| gw.to_string()).as_deref(),
        Some("10.244.0.1")
    );
    // Without the record's routes there is no gateway to offer: the plan says so.
    let mut bare = ObservedPod::from_json(&read("testdata/pods/pod-v4.json")).unwrap();
    bare.interfaces[0].routes.clear();
    let mut no_routes = record.clone();
    no_routes.routes.clear();
    let err = define(
        read("testdata/kubevirt/domain-tap.xml").as_bytes(),
        read("testdata/kubevirt/vmi-netbind.json").as_bytes(),
        &PodFacts::new(bare, vec![no_routes]),
        &ctx,
    )
    .expect_err("no gateway");
    assert!(matches!(err, DefineError::Plan { .. }), "{err}");
}
