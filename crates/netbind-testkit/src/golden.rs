//! The golden cases (a VMI, a pod, a resolv.conf and cluster settings each) and the comparison
//! against `testdata/golden/CASE/`. The planner's test runs them through the library, the
//! CLI's through `netbind plan` / `netbind domxml`; both write the same files when blessing.

use std::path::Path;

/// One golden case.
#[derive(Debug)]
pub struct Case {
    /// The directory under `testdata/golden/`.
    pub name: &'static str,
    /// The VMI, relative to the repository root.
    pub vmi: &'static str,
    /// The observed pod: `testdata/pods/POD.json`.
    pub pod: &'static str,
    /// The launcher's resolv.conf: `testdata/RESOLV`.
    pub resolv: &'static str,
    pub feature_gates: &'static [&'static str],
    /// NetworkAttachmentDefinitions opted in to the spoofing check.
    pub spoof_check: &'static [&'static str],
    /// The tap's owner (uid, gid).
    pub owner: (u32, u32),
    /// A KubeVirt CR read as the cluster configuration (`--kubevirt-config`), relative to the
    /// repository root; the feature gates above are added to it.
    pub kubevirt_config: Option<&'static str>,
}

const QEMU: (u32, u32) = (107, 107);

#[rustfmt::skip]
pub const CASES: &[Case] = &[
    Case { name: "bridge-pod", vmi: "examples/vmi-bridge.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "masquerade-v4", vmi: "examples/vmi-masquerade.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "masquerade-v6", vmi: "examples/vmi-masquerade.yaml", pod: "pod-v6", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "masquerade-dual", vmi: "examples/vmi-dual-stack.yaml", pod: "pod-dual", resolv: "resolv-bad-search.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "masquerade-ports", vmi: "examples/vmi-ports.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "multus-bridge", vmi: "examples/vmi-masquerade-multus.yaml", pod: "pod-multus", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "multus-spoof-check", vmi: "examples/vmi-masquerade-multus.yaml", pod: "pod-multus", resolv: "resolv.conf", feature_gates: &[], spoof_check: &["blue-net"], owner: QEMU, kubevirt_config: None },
    Case { name: "multiqueue", vmi: "testdata/vmi/multiqueue.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "multiqueue-resources", vmi: "testdata/vmi/multiqueue-resources.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "launch-security-sev", vmi: "testdata/vmi/launch-security-sev.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &["WorkloadEncryptionSEV"], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "plugin-tap", vmi: "testdata/vmi/plugin-tap.yaml", pod: "pod-v4-tap", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: Some("testdata/kubevirt/binding-plugins.yaml") },
    Case { name: "plugin-managed-tap", vmi: "testdata/vmi/plugin-managed-tap.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: Some("testdata/kubevirt/binding-plugins.yaml") },
    Case { name: "istio-port-ranges", vmi: "testdata/vmi/istio-port-ranges.yaml", pod: "pod-dual", resolv: "resolv.conf", feature_gates: &["PortRangesSpec"], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "legacy-migration", vmi: "testdata/vmi/legacy-migration.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "pci-address-case", vmi: "testdata/vmi/pci-address-case.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "port-ranges", vmi: "testdata/vmi/port-ranges.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &["PortRangesSpec"], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "istio-dual", vmi: "testdata/vmi/istio.yaml", pod: "pod-dual", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "bridge-options", vmi: "testdata/vmi/bridge-options.yaml", pod: "pod-multus", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: (0, 0), kubevirt_config: None },
    Case { name: "passt", vmi: "testdata/vmi/passt.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &["PasstBinding"], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "passt-ports", vmi: "testdata/vmi/passt-ports.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &["PasstBinding"], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "passt-istio", vmi: "testdata/vmi/passt-istio.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &["PasstBinding"], spoof_check: &[], owner: QEMU, kubevirt_config: None },
    Case { name: "vm-template", vmi: "examples/vm-masquerade.yaml", pod: "pod-v4", resolv: "resolv.conf", feature_gates: &[], spoof_check: &[], owner: QEMU, kubevirt_config: None },
];

impl Case {
    /// `netbind plan` / `netbind domxml` arguments for this case (relative to the repository
    /// root).
    pub fn cli_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            self.vmi.into(),
            "--pod".into(),
            format!("testdata/pods/{}.json", self.pod),
            "--resolv-conf".into(),
            format!("testdata/{}", self.resolv),
        ];
        if let Some(config) = self.kubevirt_config {
            args.extend(["--kubevirt-config".into(), config.into()]);
        }
        for gate in self.feature_gates {
            args.extend(["--feature-gate".into(), (*gate).into()]);
        }
        for iface in self.spoof_check {
            args.extend(["--spoof-check".into(), (*iface).into()]);
        }
        if self.owner != QEMU {
            args.extend([
                "--uid".into(),
                self.owner.0.to_string(),
                "--gid".into(),
                self.owner.1.to_string(),
            ]);
        }
        args
    }
}

/// Compares `actual` with the golden file `path`, or (with `NETBIND_BLESS` set) rewrites it.
/// A difference is pushed onto `failures` so that one run reports every differing file.
pub fn compare(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("NETBIND_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, actual).expect("write golden");
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs (rerun with NETBIND_BLESS=1 after review)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(err) => failures.push(format!(
            "{}: {err} (create with NETBIND_BLESS=1)",
            path.display()
        )),
    }
}
