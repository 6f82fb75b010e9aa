//! The manifests of `deploy/`, checked offline and strictly: Kubernetes objects against the
//! Kubernetes OpenAPI schemas (`kubernetes-validate --strict`, installed by scripts/setup.sh),
//! the VMI with `netbind validate` (KubeVirt's admission, with the CR's configuration), and the
//! KubeVirt CR patch and the NetworkAttachmentDefinitions with netbind's own strict reading.
//! A deliberately broken copy of each (an unknown field) must be rejected.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const KUBERNETES_VALIDATE: &str = "/opt/netbind/venv/bin/kubernetes-validate";

fn deploy(file: &str) -> PathBuf {
    common::root().join("deploy").join(file)
}

fn passes(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the checker runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn kubernetes_validate(file: &Path) -> (bool, String) {
    passes(Command::new(KUBERNETES_VALIDATE).arg("--strict").arg(file))
}

fn netbind_validate(args: &[&Path]) -> (bool, String) {
    passes(
        Command::new(env!("CARGO_BIN_EXE_netbind"))
            .arg("validate")
            .args(args),
    )
}

/// A copy of `file` with `after` followed by an unknown field at the same indentation.
fn broken(dir: &Path, file: &str, after: &str, field: &str) -> PathBuf {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(after))
        .unwrap_or_else(|| panic!("{file} has a line starting with {after}"));
    let indent = &line[..line.len() - line.trim_start().len()];
    let indent = indent.trim_start_matches("- ").replace('-', " ");
    let out = text.replacen(line, &format!("{line}\n{indent}{field}: 1"), 1);
    assert_ne!(out, text);
    let path = dir.join(format!("broken-{file}"));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn kubernetes_objects_pass_the_openapi_schemas_strictly() {
    let missing: Vec<String> = (!Path::new(KUBERNETES_VALIDATE).is_file())
        .then(|| format!("{KUBERNETES_VALIDATE} (scripts/setup.sh)"))
        .into_iter()
        .collect();
    if !netbind_testkit::ready(missing) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for file in ["netbind-cni-installer.yaml", "sidecar-container.yaml"] {
        let (ok, out) = kubernetes_validate(&deploy(file));
        assert!(ok && out.contains("passed"), "{file}: {out}");
        let bad = broken(dir.path(), file, "readOnlyRootFilesystem", "readOnlyRootFS");
        let (ok, out) = kubernetes_validate(&bad);
        assert!(
            !ok,
            "{file}: a misspelt securityContext field must be rejected:\n{out}"
        );
    }
}

#[test]
fn kubevirt_objects_pass_netbinds_strict_checks() {
    let cr = deploy("kubevirt-cr-patch.yaml");
    let nads = deploy("network-attachment-definitions.yaml");
    let vmi = deploy("vmi-netbind.yaml");
    let (ok, out) = netbind_validate(&[&cr, &nads, &vmi]);
    assert!(ok, "{out}");
    // The VMI with the cluster configuration the CR patch gives.
    let (ok, out) = passes(
        Command::new(env!("CARGO_BIN_EXE_netbind"))
            .arg("validate")
            .arg("--kubevirt-config")
            .arg(&cr)
            .arg(&vmi),
    );
    assert!(ok, "{out}");
    let dir = tempfile::tempdir().unwrap();
    for (file, after, field) in [
        (
            "kubevirt-cr-patch.yaml",
            "domainAttachmentType",
            "sidecarImageTag",
        ),
        ("network-attachment-definitions.yaml", "config:", "configs"),
    ] {
        let bad = broken(dir.path(), file, after, field);
        let (ok, out) = netbind_validate(&[&bad]);
        assert!(!ok, "{file} with {field} must be rejected:\n{out}");
        assert!(out.contains(&format!("unknown field `{field}`")), "{out}");
    }
    // A VMI's unknown fields are pruned (as the API server does); what KubeVirt's admission
    // rejects is rejected: here a second binding on the interface.
    let text = std::fs::read_to_string(&vmi).unwrap();
    let bad_vmi = dir.path().join("broken-vmi-netbind.yaml");
    std::fs::write(
        &bad_vmi,
        text.replace(
            "        binding:",
            "        masquerade: {}\n        binding:",
        ),
    )
    .unwrap();
    let (ok, out) = netbind_validate(&[&bad_vmi]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("must have exactly one binding method"),
        "{out}"
    );
}
