//! libvirt `<interface>` elements (KubeVirt §11) from hand-off data: `type='ethernet'` on a
//! pre-created tap, or `type='vhostuser'` with a passt backend for the passt binding.
//!
//! Rendered by hand, not through a serializer: the element order is part of the contract
//! (KubeVirt's struct order: address, source, target, model, mac, mtu, boot, link, alias,
//! driver, rom, acpi, backend, portForward) and every attribute value goes through `escape`.

use std::fmt::Write as _;

use crate::handoff::DomainInterface;

/// Escapes text for an XML attribute value in single or double quotes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            ch => out.push(ch),
        }
    }
    out
}

/// One `<interface>` element, indented by `indent` spaces.
pub fn render_interface(iface: &DomainInterface, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut xml = String::new();
    let kind = if iface.passt.is_some() {
        "vhostuser"
    } else {
        "ethernet"
    };
    let _ = writeln!(xml, "{pad}<interface type='{kind}'>");
    let mut line = |s: String| {
        let _ = writeln!(xml, "{pad}  {s}");
    };
    if let Some(pci) = iface.pci_address {
        let [domain, bus, slot, function] = match &pci.written {
            Some(text) => text.fields().map(String::from),
            None => [
                format!("{:04x}", pci.domain),
                format!("{:02x}", pci.bus),
                format!("{:02x}", pci.slot),
                format!("{:x}", pci.function),
            ],
        };
        line(format!(
            "<address type='pci' domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{function}'/>"
        ));
    }
    match &iface.passt {
        Some(passt) => {
            line(format!("<source dev='{}'/>", escape(passt.source.as_str())));
            line(format!("<model type='{}'/>", escape(&iface.model)));
            if let Some(mac) = passt.mac {
                line(format!("<mac address='{mac}'/>"));
            }
        }
        None => {
            line(format!(
                "<target dev='{}' managed='no'/>",
                escape(iface.tap.as_str())
            ));
            line(format!("<model type='{}'/>", escape(&iface.model)));
            line(format!("<mac address='{}'/>", iface.mac));
            line(format!("<mtu size='{}'/>", iface.mtu));
            if let Some(boot) = iface.boot_order {
                line(format!("<boot order='{boot}'/>"));
            }
            if iface.link_down {
                line("<link state='down'/>".into());
            }
        }
    }
    line(format!("<alias name='{}'/>", escape(&iface.alias)));
    // KubeVirt's converter writes a driver element for multiqueue or launch security, with
    // its attributes in this order.
    if iface.queues.is_some() || iface.iommu {
        let queues = iface
            .queues
            .map(|queues| format!(" queues='{queues}'"))
            .unwrap_or_default();
        let iommu = if iface.iommu { " iommu='on'" } else { "" };
        line(format!("<driver name='vhost'{queues}{iommu}/>"));
    }
    if iface.rom_disabled && iface.passt.is_none() {
        line("<rom enabled='no'/>".into());
    }
    if let Some(acpi) = iface.acpi_index {
        line(format!("<acpi index='{acpi}'/>"));
    }
    if let Some(passt) = &iface.passt {
        line(format!(
            "<backend type='passt' logFile='{}'/>",
            escape(&passt.log_file)
        ));
        for forward in &passt.port_forward {
            let proto = forward.proto.as_str();
            if forward.ranges.is_empty() {
                line(format!("<portForward proto='{proto}'/>"));
                continue;
            }
            line(format!("<portForward proto='{proto}'>"));
            for range in &forward.ranges {
                let exclude = if range.exclude { " exclude='yes'" } else { "" };
                line(format!("  <range start='{}'{exclude}/>", range.start));
            }
            line("</portForward>".into());
        }
    }
    let _ = writeln!(xml, "{pad}</interface>");
    xml
}

/// All interfaces, as a fragment for `<devices>`.
pub fn render_interfaces(ds: &[DomainInterface], indent: usize) -> String {
    ds.iter().map(|d| render_interface(d, indent)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_attribute_values() {
        assert_eq!(escape(r#"a'b"c<d>&"#), "a&apos;b&quot;c&lt;d&gt;&amp;");
    }
}
