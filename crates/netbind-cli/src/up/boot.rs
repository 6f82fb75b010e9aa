//! Booting the guest on the pre-created tap: QEMU in the pod's sandbox, or an unprivileged
//! libvirt session daemon there that defines and starts a domain around the launcher's
//! `<interface>`.

use netbind_model::handoff::HandoffInterface;

use super::*;

/// Where the guest boots from and into.
pub(super) struct BootEnv<'a> {
    /// The pod's root-owned directory (guest image copy, logs, domain XML).
    pub dir: &'a Path,
    /// The VM uid's own directory (libvirt's home and runtime directory).
    pub vm_dir: &'a Path,
    pub console: &'a Path,
    /// The launcher's `<interface>` output (root made the file).
    pub domain_out: &'a Path,
    pub sandbox: &'a vm::Sandbox<'a>,
    pub first: &'a HandoffInterface,
}

/// Boots the guest and records its first process; returns when it started (for the time to
/// lease).
pub(super) fn boot(
    boot: Boot,
    rec: &mut PodRecord,
    p: &mut Progress,
    env: &BootEnv,
    listen: Listen,
) -> Result<Instant, UpError> {
    let img = GuestImage::locate()?.copy_to(env.dir)?;
    let egress = format!("{}:{}", podsim::NODE_IP, podsim::NODE_LISTEN_PORT);
    let egress6 = format!("{},{}", podsim::NODE_IP6, podsim::NODE_LISTEN_PORT);
    let cmdline = vm::cmdline(
        &listen.ports(),
        rec.family.v4().then_some(egress.as_str()),
        guest_v6(rec).then_some(egress6.as_str()),
    );
    let started = Instant::now();
    match boot {
        Boot::Qemu => {
            let domain = &env.first.domain;
            let args = vm::qemu_args(
                &img,
                env.console,
                env.first.tap.as_str(),
                &domain.mac.to_string(),
                domain.mtu,
                domain.rom_disabled,
                &cmdline,
            );
            let cmd = env.sandbox.command(None, "qemu-system-x86_64", &args);
            let child = vm::spawn_detached(cmd, &env.dir.join("qemu.log"))?;
            rec.boot = Some(Boot::Qemu);
            rec.vm = vm::Proc::of(child.id());
            rec.save()?;
            p.done(
                "boot",
                format!(
                    "qemu in sandbox pid {} (TCG, uid {}, no capabilities) on {}",
                    child.id(),
                    vm::VM_UID,
                    env.first.tap
                ),
            );
        }
        Boot::Libvirt => {
            let lv = Libvirt::new(env.vm_dir);
            let vars = lv.env();
            let child = vm::spawn_detached(
                env.sandbox
                    .command(Some(&vars), "sh", &Libvirt::daemon_args()),
                &env.dir.join("libvirtd.log"),
            )?;
            rec.boot = Some(Boot::Libvirt);
            rec.vm = vm::Proc::of(child.id());
            rec.domain = Some(rec.name.clone());
            rec.save()?;
            let begun = Instant::now();
            while !lv.socket().exists() {
                check_interrupt()?;
                if begun.elapsed() > Duration::from_secs(20) {
                    return Err(step_err(
                        "libvirt",
                        "session libvirtd did not open its socket",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The launcher's output goes back to the VM side (libvirt, uid 107) unchanged;
            // root only reads it from the file root made, capped.
            let interfaces = netbind_model::input::read_text(env.domain_out, vm::MAX_LOG_BYTES)
                .map_err(|e| step_err("libvirt", e.to_string()))?;
            let xml = vm::libvirt_domain(&rec.name, &img, &interfaces, &cmdline, env.console);
            let xml_path = env.dir.join("domain.xml");
            vm::create_new(&xml_path, 0o644)
                .and_then(|mut f| f.write_all(xml.as_bytes()))
                .map_err(|source| SimError::Io {
                    op: "write",
                    path: xml_path.clone(),
                    source,
                })?;
            let virsh = |args: &[&str]| {
                let mut virsh_args: Vec<String> =
                    vec!["-q".into(), "-c".into(), "qemu:///session".into()];
                virsh_args.extend(args.iter().map(|s| s.to_string()));
                env.sandbox.command(Some(&vars), "virsh", &virsh_args)
            };
            podsim::run(
                "virsh define",
                &mut virsh(&["define", &xml_path.display().to_string()]),
            )?;
            podsim::run("virsh start", &mut virsh(&["start", &rec.name]))?;
            p.done("boot", format!("libvirt session daemon in sandbox pid {} (uid {}, no capabilities) started domain {} from the launcher's <interface>", child.id(), vm::VM_UID, rec.name));
        }
    }
    Ok(started)
}
