//! DHCP search-list encoding (option 119, RFC 3397).

/// RFC 1035 label encoding without compression, as option 119 carries it.
pub fn encode_search(domains: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for domain in domains {
        for label in domain.split('.').filter(|l| !l.is_empty()) {
            out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }
    out
}
