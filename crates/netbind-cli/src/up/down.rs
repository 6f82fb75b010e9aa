//! `down`: removes everything a pod record says exists, never stopping at the first error.

use super::*;

/// Removes everything the record says exists; never stops at the first error.
pub fn down_record(rec: &PodRecord) {
    let dir = rec.dir();
    if let Some(cri) = &rec.cri {
        containerd::down(rec, cri);
        remove_pod_dir(&dir);
        return;
    }
    let tun = podsim::run_dir().join("tun");
    if rec.boot == Some(Boot::Libvirt)
        && let Some(domain) = &rec.domain
    {
        // As the VM uid: whatever its directory holds, virsh acts with its rights only.
        let lv = Libvirt::new(&dir.join("vm"));
        let args: Vec<String> = ["-q", "-c", "qemu:///session", "destroy", domain]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Ok(vm_exec) = sibling("netbind-vm-exec") {
            let sandbox = vm::Sandbox {
                netns: &rec.netns,
                tun: &tun,
                pod_dir: &dir,
                vm_exec: &vm_exec,
            };
            let _ = sandbox.command(Some(&lv.env()), "virsh", &args).output();
        }
    }
    for process in [rec.vm, rec.passt, rec.launcher].into_iter().flatten() {
        vm::stop_sandbox(process);
    }
    // What the VM side started by itself (virtlogd, QEMU under libvirt) lives in the pod's
    // network namespace: found there by the kernel's record, not by its pid files.
    vm::stop_netns_processes(&rec.netns);
    if rec.phase1
        && let Ok(handler) = sibling("netbind-handler")
    {
        // The pod's namespace is deleted below: its deletion takes netbind's links and tables
        // with it, off this path.
        let cmd = Command::new(handler)
            .args(["teardown", "--namespace-deleted-next"])
            .args(["--netns", &format!("/run/netns/{}", rec.netns)])
            .arg("--handoff-dir")
            .arg(dir.join("handoff"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .output();
        if let Ok(cmd) = cmd
            && !cmd.status.success()
        {
            eprintln!(
                "netbind down: phase-1 teardown: {}",
                String::from_utf8_lossy(&cmd.stderr).trim()
            );
        }
    }
    if let Some(ip) = rec.pod_ip {
        podsim::delete_pod(&rec.netns, ip);
        podsim::release(ip);
    } else if podsim::netns_exists(&rec.netns) {
        let _ = Command::new("ip")
            .args(["netns", "del", &rec.netns])
            .output();
    }
    remove_pod_dir(&dir);
    // After a signal, do not wait for another `up` to release the lock: the node it shares
    // is left for the last pod's `down` to remove.
    if let Ok(_lock) = podsim::Lock::take_unless(&interrupted) {
        let _ = podsim::remove_node_if_unused();
    }
}

/// Removes the pod's directory even while a VM-uid process keeps writing into `vm/`: the
/// directory is first renamed out of every path the VM side knows and closed to it (0700),
/// then removed. remove_dir_all never follows a symlink.
pub(super) fn remove_pod_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let trash = dir.with_file_name(format!(
        ".removing-{}-{}",
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let target = match std::fs::rename(dir, &trash) {
        Ok(()) => {
            let _ = std::fs::set_permissions(&trash, std::fs::Permissions::from_mode(0o700));
            trash
        }
        Err(_) => dir.to_path_buf(),
    };
    for _ in 0..5 {
        if std::fs::remove_dir_all(&target).is_ok() || !target.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn down(name: &str) -> Result<(), UpError> {
    let rec = PodRecord::load(name).ok_or_else(|| {
        UpError::Invalid(format!("no pod named {name} (netbind status lists them)"))
    })?;
    down_record(&rec);
    Ok(())
}
