use super::*;

fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
    let map: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Env::read(|name| map.get(name).cloned())
}

const PREV: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:01"},{"name":"veth1","mac":"aa:bb:cc:dd:ee:02"},{"name":"eth0","mac":"0a:58:0a:58:00:05","sandbox":"/run/netns/p1"}],"ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":2}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{},"futureField":7}"#;

fn conf(extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"pods","type":"netbind-cni"{extra},"prevResult":{PREV}}}"#
    )
}

#[test]
fn environment_needs_what_each_command_uses() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/p1"),
        ("CNI_IFNAME", "eth0"),
    ];
    assert_eq!(env(&add).expect("ADD env").command, Command::Add);
    let err = env(&add[..3]).expect_err("no CNI_IFNAME");
    assert_eq!(err.code, ErrorCode::InvalidEnvironment as u32);
    assert!(err.msg.starts_with("CNI_IFNAME"), "{}", err.msg);
    // containerd's second DEL: no namespace, and that is fine.
    let del = env(&[
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", ""),
    ])
    .expect("DEL without netns");
    assert_eq!(del.netns, None);
    let err = env(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "../../etc"),
        ("CNI_NETNS", "/x"),
        ("CNI_IFNAME", "eth0"),
    ])
    .expect_err("path in the container id");
    assert!(err.msg.starts_with("CNI_CONTAINERID"), "{}", err.msg);
    // No slash, but the run directory's parent or a hidden name all the same.
    for id in ["..", ".", ".hidden"] {
        let err = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
        ])
        .expect_err("a dot first");
        assert!(
            err.msg.contains("starting with a letter or digit"),
            "{id}: {}",
            err.msg
        );
    }
    let err = env(&[("CNI_COMMAND", "FROB")]).expect_err("unknown command");
    assert!(err.msg.contains("FROB"), "{}", err.msg);
}

#[test]
fn bad_stdin_names_the_field() {
    let err = NetConf::parse(b"not json").expect_err("not JSON");
    assert_eq!(err.code, ErrorCode::Decode as u32);
    assert!(err.msg.contains("not JSON"), "{}", err.msg);
    let err = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"x"}"#).expect_err("old version");
    assert_eq!(err.code, ErrorCode::IncompatibleVersion as u32);
    assert!(err.msg.starts_with("cniVersion \"0.3.1\""), "{}", err.msg);
    let err = NetConf::parse(br#"{"name":"x"}"#).expect_err("no version");
    assert_eq!(err.msg, "cniVersion: missing");
    let err = NetConf::parse(conf(r#","runDirr":"/tmp""#).as_bytes()).expect_err("typo");
    assert_eq!(err.code, ErrorCode::UnsupportedField as u32);
    assert!(err.msg.contains("runDirr"), "{}", err.msg);
    let err = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"x"}"#)
        .expect("parses")
        .require_prev_result()
        .expect_err("no prevResult");
    assert_eq!(err.code, ErrorCode::InvalidConfig as u32);
    assert!(err.msg.starts_with("prevResult: missing"), "{}", err.msg);
    let err = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"x","args":{"cni":{"logicNetworkName":3}}}"#,
    )
    .expect_err("number as network name");
    assert!(
        err.msg.starts_with("args.cni.logicNetworkName"),
        "{}",
        err.msg
    );
    let err = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"a":1}}}"#,
    )
    .expect_err("annotation values are strings");
    assert!(
        err.msg
            .starts_with("runtimeConfig[\"io.kubernetes.cri.pod-annotations\"]"),
        "{}",
        err.msg
    );
}

#[test]
fn settings_annotations_and_network_are_read() {
    let extra = r#","runDir":"/run/x","vmUser":[1000,1001],"args":{"cni":{"logicNetworkName":"default"}},"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"netbind.io/vmi":"kind: VirtualMachineInstance","other":"x"}},"capabilities":{"io.kubernetes.cri.pod-annotations":true}"#;
    let net_conf = NetConf::parse(conf(extra).as_bytes()).expect("parses");
    assert_eq!(net_conf.settings.run_dir, PathBuf::from("/run/x"));
    assert_eq!(net_conf.settings.vm_user, (1000, 1001));
    assert_eq!(net_conf.logic_network_name.as_deref(), Some("default"));
    assert_eq!(
        net_conf.vmi().map(|(_, text)| text).as_deref(),
        Some("kind: VirtualMachineInstance")
    );
    let prev = net_conf.require_prev_result().expect("prevResult");
    assert_eq!(
        prev.addresses_of("eth0", "/run/netns/p1")
            .expect("eth0's address"),
        vec!["10.88.0.5/16".to_string()]
    );
    let err = prev
        .addresses_of("eth0", "/run/netns/other")
        .expect_err("other sandbox");
    assert!(err.starts_with("prevResult.interfaces"), "{err}");
    let defaults = NetConf::parse(conf("").as_bytes()).expect("defaults");
    assert_eq!(defaults.settings.run_dir, PathBuf::from("/run/netbind/cni"));
    assert_eq!(defaults.settings.vm_user, (107, 107));
    assert_eq!(defaults.vmi(), None);
}

#[test]
fn result_is_the_previous_one_plus_what_phase_1_made() {
    let net_conf = NetConf::parse(conf("").as_bytes()).expect("parses");
    let made = [
        ResultInterface {
            name: "k6t-eth0".into(),
            mac: "02:00:00:00:00:00".into(),
            sandbox: "/run/netns/p1".into(),
        },
        ResultInterface {
            name: "tap0".into(),
            mac: "aa:00:00:00:00:01".into(),
            sandbox: "/run/netns/p1".into(),
        },
    ];
    let result = compose_result(&net_conf, &made);
    let names: Vec<&str> = result["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["cni0", "veth1", "eth0", "k6t-eth0", "tap0"]);
    assert_eq!(result["interfaces"][4]["sandbox"], "/run/netns/p1");
    assert_eq!(result["interfaces"][4]["mac"], "aa:00:00:00:00:01");
    // The IPs still point at eth0, and what netbind does not model passes through.
    assert_eq!(result["ips"][0]["interface"], 2);
    assert_eq!(result["futureField"], 7);
    assert_eq!(result["cniVersion"], "1.0.0");
}

#[test]
fn version_and_errors_serialise_as_the_spec_says() {
    let version = version_result("1.0.0");
    assert_eq!(
        version["supportedVersions"],
        serde_json::json!(["1.0.0", "1.1.0"])
    );
    let err = CniError::new(ErrorCode::InvalidConfig, "prevResult: missing").in_version("1.1.0");
    let json = serde_json::to_value(&err).expect("serialises");
    assert_eq!(
        json,
        serde_json::json!({"cniVersion": "1.1.0", "code": 7, "msg": "prevResult: missing"})
    );
    let err = err.with_details("more");
    assert_eq!(
        serde_json::to_value(&err).expect("serialises")["details"],
        "more"
    );
}

#[test]
fn binding_plugin_form_makes_the_vmi_from_the_network_name() {
    let extra = r#","bindingMode":"bridge","args":{"cni":{"logicNetworkName":"blue"}}"#;
    let net_conf = NetConf::parse(conf(extra).as_bytes()).expect("parses");
    let (origin, text) = net_conf.vmi().expect("a VMI from the binding mode");
    assert_eq!(origin, "bindingMode bridge for network \"blue\"");
    let vmi = netbind_model::check::check_vmi(&text, &ClusterConfig::default())
        .expect("the made VMI is admitted");
    let iface = vmi.interface("blue").expect("interface blue");
    assert_eq!(iface.binding, netbind_model::admitted::Binding::Bridge);
    assert!(iface.network.is_primary(), "on the pod network");
    // Without the network's name there is nothing to serve.
    let net_conf =
        NetConf::parse(conf(r#","bindingMode":"masquerade""#).as_bytes()).expect("parses");
    assert_eq!(net_conf.vmi(), None);
    let err =
        NetConf::parse(conf(r#","bindingMode":"sriov""#).as_bytes()).expect_err("unknown mode");
    assert!(err.msg.contains("sriov"), "{}", err.msg);
}

#[test]
fn the_cluster_configuration_can_be_kubevirts_cr() {
    let dir = tempfile::tempdir().expect("tmp");
    let cr = dir.path().join("kubevirt.yaml");
    std::fs::write(
        &cr,
        "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {name: kubevirt}\nspec:\n  configuration:\n    developerConfiguration:\n      featureGates: [PortRangesSpec]\n    network:\n      defaultNetworkInterface: masquerade\n",
    )
    .expect("write");
    let extra = format!(r#","kubevirtConfig":{:?}"#, cr.display().to_string());
    let net_conf = NetConf::parse(conf(&extra).as_bytes()).expect("parses");
    assert_eq!(
        net_conf.settings.cluster.default_network_interface,
        "masquerade"
    );
    assert!(
        net_conf
            .settings
            .cluster
            .gate(netbind_model::admission::FeatureGate::PortRangesSpec)
    );
    std::fs::write(&cr, "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {name: kubevirt}\nspec:\n  configuration:\n    netwrk: {}\n").expect("write");
    let err = NetConf::parse(conf(&extra).as_bytes()).expect_err("a typo in the CR");
    assert_eq!(err.code, ErrorCode::InvalidConfig as u32);
    assert!(err.msg.contains("netwrk"), "{}", err.msg);
}

#[test]
fn gc_reads_the_valid_attachments_and_never_takes_their_absence_for_none() {
    // GC needs only the command (1.1.0 § GC: no attachment parameters).
    assert_eq!(
        env(&[("CNI_COMMAND", "GC")]).expect("GC env").command,
        Command::Gc
    );
    let gc = |extra: &str| {
        NetConf::parse(
            format!(r#"{{"cniVersion":"1.1.0","name":"pods","type":"netbind-cni"{extra}}}"#)
                .as_bytes(),
        )
    };
    let valid = gc(r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2","ifname":"net1"}]"#)
        .expect("the specification's key");
    assert_eq!(
        valid.require_valid_attachments().expect("a list"),
        [
            Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            },
            Attachment {
                container_id: "c2".into(),
                ifname: "net1".into()
            }
        ]
    );
    // The key of the specification's first text, which libcni also sets.
    let legacy = gc(r#","cni.dev/attachments":[]"#).expect("the older key");
    assert_eq!(legacy.require_valid_attachments().expect("empty list"), []);
    // No list is not an empty list: that would collect every sandbox.
    let err = gc("")
        .expect("parses")
        .require_valid_attachments()
        .expect_err("no list");
    assert_eq!(err.code, ErrorCode::InvalidConfig as u32);
    assert!(
        err.msg.starts_with("cni.dev/valid-attachments: missing"),
        "{}",
        err.msg
    );
    assert_eq!(
        err.cni_version, "1.1.0",
        "answered in the runtime's version"
    );
    let err = gc(r#","cni.dev/valid-attachments":[{"containerID":7}]"#).expect_err("bad entry");
    assert!(
        err.msg
            .starts_with("cni.dev/valid-attachments: must be a list"),
        "{}",
        err.msg
    );
    // Other `cni.dev/` keys are the runtime's, not settings with a typo.
    gc(r#","cni.dev/valid-attachments":[],"cni.dev/future":1"#).expect("a runtime key");
}

#[test]
fn the_network_name_must_be_a_file_name() {
    let named = |name: &str| {
        NetConf::parse(
            format!(
                r#"{{"cniVersion":"1.0.0","name":{},"type":"netbind-cni"}}"#,
                serde_json::json!(name)
            )
            .as_bytes(),
        )
        .expect("parses")
    };
    assert_eq!(
        named("pod-net_1.v2").network_name().expect("valid"),
        "pod-net_1.v2"
    );
    for bad in ["", "../x", "a/b", ".hidden", "-x", &"n".repeat(129)] {
        let err = named(bad).network_name().expect_err(bad);
        assert_eq!(err.code, ErrorCode::InvalidConfig as u32);
        assert!(err.msg.starts_with("name "), "{}", err.msg);
    }
}
