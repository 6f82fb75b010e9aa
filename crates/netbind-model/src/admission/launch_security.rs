//! `spec.domain.launchSecurity` (AMD SEV / SEV-SNP, Intel TDX, IBM Secure Execution), as
//! KubeVirt's VMI-create admitter checks it (`validateLaunchSecurity`, and on amd64
//! `ValidateLaunchSecurityAmd64`). It matters to networking because SEV, SNP and Secure
//! Execution put the NIC behind an IOMMU and refuse a NIC boot ROM. KubeVirt reports these
//! causes at `spec.launchSecurity` and `spec.architecture` (the spec's field path, not the
//! domain's), and so does netbind.

use super::Rules;
use crate::cluster::{ClusterConfig, FeatureGate};

/// The architecture KubeVirt's webhook gives a VMI that names none (netbind's nodes are amd64).
pub const DEFAULT_ARCHITECTURE: &str = "amd64";

pub(super) fn launch_security(rules: &mut Rules, cfg: &ClusterConfig) {
    let Some(security) = &rules.spec.domain.launch_security else {
        return;
    };
    let arch = rules
        .spec
        .architecture
        .as_deref()
        .filter(|arch| !arch.is_empty())
        .unwrap_or(DEFAULT_ARCHITECTURE);
    match arch {
        "amd64" => {}
        // IBM Secure Execution has no settings of its own.
        "s390x" => return,
        other => {
            let field = format!("{}.architecture", rules.root);
            rules.push(
                field,
                format!("No launchSecurity support for architecture: {other}"),
            );
            return;
        }
    }
    let field = format!("{}.launchSecurity", rules.root);
    let mut selected = Vec::new();
    let mut gate = None;
    if security.sev.is_some() {
        selected.push("SEV");
        gate = Some(FeatureGate::WorkloadEncryptionSEV);
    }
    if security.snp.is_some() {
        selected.push("SNP");
        gate = Some(FeatureGate::WorkloadEncryptionSEV);
    }
    if security.tdx.is_some() {
        selected.push("TDX");
        gate = Some(FeatureGate::WorkloadEncryptionTDX);
    }
    let (&[kind], Some(gate)) = (selected.as_slice(), gate) else {
        rules.push(field, "One and only one launchSecurity type can be set");
        return;
    };
    if !cfg.gate(gate.clone()) {
        rules.push(
            field,
            format!(
                "{} feature gate is not enabled in kubevirt-config",
                String::from(gate)
            ),
        );
        return;
    }
    let domain = &rules.spec.domain;
    let sev_or_snp = security.sev.is_some() || security.snp.is_some();
    let mut causes = Vec::new();
    let smm_on = domain
        .features
        .as_ref()
        .and_then(|features| features.smm.as_ref())
        .is_some_and(|smm| smm.enabled != Some(false));
    if security.tdx.is_some() && smm_on {
        causes.push("TDX does not work along with SMM".to_string());
    }
    let efi = domain
        .firmware
        .as_ref()
        .and_then(|firmware| firmware.bootloader.as_ref())
        .and_then(|bootloader| bootloader.efi.as_ref());
    match efi {
        None => causes.push(format!("{kind} requires OVMF (UEFI)")),
        Some(efi) => {
            // KubeVirt's EFI default is Secure Boot on.
            if sev_or_snp && efi.secure_boot != Some(false) {
                causes.push(format!("{kind} does not work along with SecureBoot"));
            }
            if (security.snp.is_some() || security.tdx.is_some()) && efi.persistent == Some(true) {
                causes.push(format!(
                    "{kind} does not work along with Persistent EFI variables"
                ));
            }
        }
    }
    let paused = rules.spec.start_strategy.as_deref() == Some("Paused");
    if security
        .sev
        .as_ref()
        .is_some_and(|sev| sev.attestation.is_some())
        && !paused
    {
        causes.push("SEV attestation requires VMI StartStrategy 'Paused'".into());
    }
    for iface in &domain.devices.interfaces {
        if iface.boot_order.is_some() {
            causes.push(format!(
                "{kind} does not work with bootable NICs: {}",
                iface.name
            ));
        }
    }
    for message in causes {
        rules.push(field.clone(), message);
    }
}
