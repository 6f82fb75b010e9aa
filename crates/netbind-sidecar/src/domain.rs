//! Puts netbind's `<interface>` elements into a domain XML: each replaces the element with the
//! same alias (`ua-<network>`, as KubeVirt names them), or is appended to `<devices>`. The rest
//! of the document is kept byte for byte.

use netbind_contract::domxml::render_interface;
use netbind_contract::handoff::DomainInterface;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainXmlError {
    #[error("domainXML: not UTF-8")]
    NotUtf8,
    #[error("domainXML: {0}")]
    Parse(String),
    #[error("domainXML: no <domain><devices> element")]
    NoDevices,
}

/// The XML with `ifaces` in place.
pub fn splice(xml: &[u8], ifaces: &[DomainInterface]) -> Result<String, DomainXmlError> {
    let text = std::str::from_utf8(xml).map_err(|_| DomainXmlError::NotUtf8)?;
    let doc =
        roxmltree::Document::parse(text).map_err(|err| DomainXmlError::Parse(err.to_string()))?;
    let root = doc.root_element();
    let devices = (root.tag_name().name() == "domain")
        .then(|| root.children().find(|node| node.has_tag_name("devices")))
        .flatten()
        .ok_or(DomainXmlError::NoDevices)?;
    // (start, end, replacement), applied from the end so earlier ranges stay valid.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut appended = String::new();
    let indent_of = |pos: usize| {
        let line_start = text[..pos].rfind('\n').map_or(0, |at| at + 1);
        let lead = &text[line_start..pos];
        if lead.chars().all(char::is_whitespace) {
            lead.to_string()
        } else {
            String::new()
        }
    };
    for iface in ifaces {
        let existing = devices.children().find(|node| {
            node.has_tag_name("interface")
                && node.children().any(|child| {
                    child.has_tag_name("alias") && child.attribute("name") == Some(&iface.alias)
                })
        });
        match existing {
            Some(node) => {
                let range = node.range();
                let indent = indent_of(range.start);
                edits.push((range.start, range.end, indented(iface, &indent, false)));
            }
            None => {
                let indent = devices
                    .children()
                    .find(roxmltree::Node::is_element)
                    .map(|child| indent_of(child.range().start))
                    .unwrap_or_default();
                appended.push_str(&indented(iface, &indent, true));
            }
        }
    }
    if !appended.is_empty() {
        let range = devices.range();
        let element = &text[range.clone()];
        if element.ends_with("/>") {
            // `<devices/>` has no end tag to insert before: it becomes a start tag, the
            // interfaces on lines of their own, and an end tag.
            let start_tag = element.strip_suffix("/>").unwrap_or(element).trim_end();
            edits.push((
                range.start,
                range.end,
                format!("{start_tag}>\n{appended}</devices>"),
            ));
        } else {
            // Before `</devices>` (the element's own end tag, the last thing in its range):
            // after the last child, on lines of their own.
            let close = range.start + element.rfind("</").unwrap_or(element.len());
            let line_start = text[..close].rfind('\n').map_or(close, |at| at + 1);
            let at = if line_start >= range.start
                && text[line_start..close].chars().all(char::is_whitespace)
            {
                line_start
            } else {
                close
            };
            edits.push((at, at, appended));
        }
    }
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.0));
    let mut out = text.to_string();
    for (start, end, replacement) in edits {
        out.replace_range(start..end, &replacement);
    }
    Ok(out)
}

/// The element, each line but the first prefixed with `indent` (the first takes the place of
/// the element it replaces, whose own indentation stays); appended ones are whole lines.
fn indented(iface: &DomainInterface, indent: &str, whole_lines: bool) -> String {
    let rendered = render_interface(iface, 0);
    let mut out = String::new();
    for (number, line) in rendered.lines().enumerate() {
        if number > 0 || whole_lines {
            out.push_str(indent);
        }
        out.push_str(line);
        out.push('\n');
    }
    if !whole_lines {
        // The replaced element did not include its line end.
        out.pop();
    }
    out
}
