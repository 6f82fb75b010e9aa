//! The domain side of a planned interface: the tap and its queues, and the `<interface>`
//! the launcher renders for libvirt.

use super::*;

impl Ctx<'_> {
    /// Queue count for this interface: vCPUs (capped at 256) with multiqueue on a virtio NIC.
    pub(super) fn queues(&self, iface: &Interface) -> u32 {
        let devices = &self.vmi.spec.domain.devices;
        let virtio = matches!(iface.model.as_deref(), None | Some("") | Some("virtio"));
        if devices.network_interface_multiqueue != Some(true) || !virtio {
            return 0;
        }
        let cpu = self.vmi.spec.domain.cpu.clone().unwrap_or_default();
        let vcpus = u64::from(cpu.sockets.unwrap_or(1).max(1))
            * u64::from(cpu.cores.unwrap_or(1).max(1))
            * u64::from(cpu.threads.unwrap_or(1).max(1));
        u32::try_from(vcpus.min(256)).unwrap_or(256)
    }

    pub(super) fn tap(
        &self,
        iface: &Interface,
        name: &IfName,
        mtu: u32,
        master: &IfName,
    ) -> LinkPlan {
        let queues = self.queues(iface);
        LinkPlan {
            network: iface.name.clone(),
            name: name.clone(),
            kind: LinkKind::Tap {
                owner: self.opts.owner.uid,
                group: self.opts.owner.gid,
                queues,
                // libvirt opens a single-queue tap without IFF_MULTI_QUEUE; the flags must
                // match or its TUNSETIFF fails with EINVAL.
                multi_queue: queues > 1,
            },
            mac: None,
            mtu: Some(mtu),
            master: Some(master.clone()),
            addresses: vec![],
            up: true,
            learning: None,
        }
    }

    pub(super) fn domain(
        &self,
        iface: &Interface,
        tap: &IfName,
        mac: MacAddr,
        mtu: u32,
    ) -> DomainInterface {
        let model = match iface.model.as_deref() {
            None | Some("") | Some("virtio") => {
                if self.vmi.spec.domain.devices.use_virtio_transitional == Some(true) {
                    "virtio-transitional".to_string()
                } else {
                    "virtio-non-transitional".to_string()
                }
            }
            Some(m) => m.to_string(),
        };
        let boot_order = iface
            .boot_order
            .and_then(|b| u32::try_from(b).ok())
            .filter(|b| *b > 0);
        let queues = self.queues(iface);
        DomainInterface {
            alias: format!("ua-{}", iface.name),
            tap: tap.clone(),
            mac,
            model,
            mtu,
            boot_order,
            rom_disabled: boot_order.is_none(),
            pci_address: iface
                .pci_address
                .as_deref()
                .and_then(parse_pci_address)
                .map(|(domain, bus, slot, function)| PciAddress {
                    domain,
                    bus,
                    slot,
                    function,
                }),
            acpi_index: iface
                .acpi_index
                .and_then(|a| u32::try_from(a).ok())
                .filter(|a| *a > 0),
            queues: (queues > 0).then_some(queues),
            link_down: iface.state.as_deref() == Some("down"),
        }
    }
}
