//! The domain side of a planned interface: the tap and its queues, and the `<interface>`
//! the launcher renders for libvirt.

use super::*;
use netbind_model::admitted::NicModel;

impl Planner<'_> {
    /// Queue count for this interface: vCPUs (capped at 256) with multiqueue on a virtio NIC.
    pub(super) fn queues(&self, iface: &AdmittedInterface) -> u32 {
        if !self.vmi.multiqueue || iface.model != NicModel::Virtio {
            return 0;
        }
        let cpu = self.vmi.cpu;
        let vcpus = u64::from(cpu.sockets) * u64::from(cpu.cores) * u64::from(cpu.threads);
        u32::try_from(vcpus.min(256)).unwrap_or(256)
    }

    pub(super) fn tap(
        &self,
        iface: &AdmittedInterface,
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
        iface: &AdmittedInterface,
        tap: &IfName,
        mac: MacAddr,
        mtu: u32,
    ) -> DomainInterface {
        let model = match iface.model {
            NicModel::Virtio if self.vmi.virtio_transitional => "virtio-transitional",
            NicModel::Virtio => "virtio-non-transitional",
            other => other.as_str(),
        }
        .to_string();
        let boot_order = iface.boot_order;
        let queues = self.queues(iface);
        let protected = self
            .vmi
            .launch_security
            .is_some_and(|kind| kind.protects_devices());
        DomainInterface {
            alias: format!("ua-{}", iface.name),
            tap: tap.clone(),
            mac,
            model,
            mtu,
            boot_order,
            // KubeVirt: ROM tuning where the architecture has it, when the NIC is not
            // bootable or launch security forbids option ROMs.
            rom_disabled: self.vmi.rom_tuning && (boot_order.is_none() || protected),
            pci_address: iface.pci_address,
            acpi_index: iface.acpi_index,
            queues: (queues > 0).then_some(queues),
            // Only a virtio NIC gets a driver element.
            iommu: protected && iface.model == NicModel::Virtio,
            link_down: iface.state == InterfaceState::Down,
            passt: None,
        }
    }
}
