//! `OnDefineDomain`'s splice against generated domain documents: whatever the shape of the
//! document virt-launcher sends (comments and CDATA that spell `</devices>`, a `<devices>`
//! nested elsewhere, a self-closing or empty `<devices>`, interfaces of other networks,
//! whitespace of any kind), the result is XML, netbind's interface is inside the domain's
//! `<devices>`, and nothing outside that element changes.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use proptest::prelude::*;

mod common;
use common::{define_masquerade, interfaces_in_devices, with_devices};

/// A piece of a document outside the domain's `<devices>`.
fn outside() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<name>default_vmi-netbind</name>".to_string()),
        Just("<!-- </devices> -->".to_string()),
        Just("<metadata><devices><interface/></devices></metadata>".to_string()),
        Just("<description><![CDATA[</devices><devices>]]></description>".to_string()),
        Just("<metadata><devices/></metadata>".to_string()),
        "[ \t\n]{0,3}",
    ]
}

/// A child of the domain's `<devices>`.
fn device() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"<interface type="ethernet"><alias name="ua-default"/></interface>"#.to_string()),
        Just(
            "<interface type=\"ethernet\">\n\t\t\t<target dev=\"tap0\" managed=\"no\"></target>\n\t\t\t<alias name=\"ua-default\"></alias>\n\t\t</interface>"
                .to_string()
        ),
        Just(r#"<interface type="ethernet"><alias name="ua-blue"/></interface>"#.to_string()),
        Just(r#"<interface type="ethernet"/>"#.to_string()),
        Just(r#"<disk type="file"><alias name="ua-default"/></disk>"#.to_string()),
        Just("<!-- <interface><alias name=\"ua-default\"/></interface> </devices> -->".to_string()),
        Just("<controller type=\"usb\" index=\"0\" model=\"none\"></controller>".to_string()),
        "[ \t\n]{0,4}",
    ]
}

/// `<devices>` as virt-launcher might write it: self-closing, or with children.
fn devices() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<devices/>".to_string()),
        Just("<devices />".to_string()),
        (prop::collection::vec(device(), 0..6), "[ \t\n]{0,3}")
            .prop_map(|(children, tail)| format!("<devices>{}{tail}</devices>", children.concat())),
    ]
}

fn document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(outside(), 0..4),
        devices(),
        prop::collection::vec(outside(), 0..4),
    )
        .prop_map(|(before, devices, after)| {
            format!(
                "<domain type=\"kvm\">{}{devices}{}</domain>\n",
                before.concat(),
                after.concat()
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn the_interface_lands_in_the_domains_devices_and_nothing_else_changes(xml in document()) {
        let defined = define_masquerade(&xml);
        let out = &defined.domain_xml;
        prop_assert!(roxmltree::Document::parse(out).is_ok(), "not XML: {out}");
        let before = interfaces_in_devices(&xml);
        let after = interfaces_in_devices(out);
        let ours = |list: &[Option<String>]| {
            list.iter().filter(|alias| alias.as_deref() == Some("ua-default")).count()
        };
        // The first of ours is replaced (or one appended); every other interface stays.
        prop_assert_eq!(ours(&after), ours(&before).max(1), "{}", out);
        prop_assert_eq!(after.len() - ours(&after), before.len() - ours(&before), "{}", out);
        prop_assert!(out.contains("<target dev='tap0' managed='no'/>"), "{}", out);
        // Outside the domain's <devices>, byte for byte the same.
        let range = |xml: &str| with_devices(xml, |devices| devices.range());
        let (was, is) = (range(&xml), range(out));
        prop_assert_eq!(&xml[..was.start], &out[..is.start]);
        prop_assert_eq!(&xml[was.end..], &out[is.end..]);
    }
}
