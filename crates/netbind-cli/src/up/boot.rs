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

/// Starts passt for the passt binding, as the VM uid with no capability in a sandbox of its
/// own in the pod (PID and mount namespaces), its socket in the VM's own directory, and waits
/// for it to listen.
///
/// Not under the VM sandbox's syscall filter: passt confines itself first of all by making a
/// user namespace to drop into, which that filter refuses (passt 2023.03 then exits). passt
/// runs before any guest traffic reaches it and seals itself with its own, narrower seccomp
/// filter; QEMU, which the guest drives, stays under netbind's.
fn start_passt(
    rec: &mut PodRecord,
    env: &BootEnv,
    passt: &netbind_model::handoff::PasstAttachment,
    guest_ports: &[u16],
    socket: &Path,
) -> Result<(), UpError> {
    // KubeVirt forwards every port when the VMI lists none; passt's `all` binds a socket per
    // port, beyond a 20000-descriptor limit such as this machine's: the guest's own ports
    // stand in for "every port" then.
    let args = vm::passt_args(socket, &passt.port_forward, guest_ports);
    let cmd = env.sandbox.command_with(&[], false, None, "passt", &args);
    let log = env.dir.join("passt.log");
    let child = vm::spawn_detached(cmd, &log)?;
    rec.passt = vm::Proc::of(child.id());
    rec.save()?;
    // Root reads passt's log, a file root made, never the VM directory the socket is in.
    vm::wait_for_line(
        &log,
        "UNIX domain socket bound",
        Duration::from_secs(10),
        &|| interrupted() || !rec.passt.is_some_and(vm::Proc::alive),
    )
    .ok_or_else(|| {
        step_err(
            "passt",
            format!(
                "passt did not listen: {}",
                vm::read_console_tail(&log, super::LOG_TAIL_LINES)
                    .unwrap_or_default()
                    .trim()
            ),
        )
    })?;
    Ok(())
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
    let cmdline = vm::cmdline_with(
        &listen.ports(),
        rec.family.v4(),
        (rec.family.v4() && egress_skipped(rec).is_none()).then_some(egress.as_str()),
        guest_v6(rec),
        guest_v6(rec).then_some(egress6.as_str()),
    );
    let started = Instant::now();
    match boot {
        Boot::Qemu => {
            let domain = &env.first.domain;
            let passt_socket = env.vm_dir.join("passt.sock");
            let net = match &domain.passt {
                Some(passt) => {
                    start_passt(rec, env, passt, &listen.ports(), &passt_socket)?;
                    vm::QemuNet::Passt {
                        socket: &passt_socket,
                    }
                }
                None => vm::QemuNet::Tap {
                    name: env.first.tap.as_str(),
                    mtu: domain.mtu,
                    rom_disabled: domain.rom_disabled,
                },
            };
            let mac = domain
                .passt
                .as_ref()
                .and_then(|passt| passt.mac)
                .unwrap_or(domain.mac);
            let args = vm::qemu_args(&img, env.console, net, &mac.to_string(), &cmdline);
            let cmd = env.sandbox.command(None, "qemu-system-x86_64", &args);
            let child = vm::spawn_detached(cmd, &env.dir.join("qemu.log"))?;
            rec.boot = Some(Boot::Qemu);
            rec.vm = vm::Proc::of(child.id());
            rec.save()?;
            let on = match &domain.passt {
                Some(_) => format!("passt's socket on {}", env.first.pod_interface),
                None => env.first.tap.to_string(),
            };
            p.done(
                "boot",
                format!(
                    "qemu in sandbox pid {} (TCG, uid {}, no capabilities) on {on}",
                    child.id(),
                    vm::VM_UID,
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
