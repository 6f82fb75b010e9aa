//! DNS data for the DHCP servers (KubeVirt §8.1, §9.3): resolv.conf parsing, the subdomain
//! search entry, and search-domain validation.
//!
//! Difference from KubeVirt (on purpose): an invalid search domain is skipped with a warning
//! instead of stopping the DHCP server (KubeVirt issues #3187, #4541, #12615).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    pub search: Vec<String>,
}

/// Parses resolv.conf as KubeVirt does; `warnings` gets a line per skipped entry.
pub fn parse_resolv_conf(text: &str, warnings: &mut Vec<String>) -> DnsConfig {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut search = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first().copied() {
            Some("nameserver") => {
                if fields.len() != 2 {
                    warnings.push(format!(
                        "resolv.conf: skipping malformed nameserver line {line:?}"
                    ));
                    continue;
                }
                match fields[1].parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) => v4.push(ip),
                    Ok(IpAddr::V6(ip)) => v6.push(ip),
                    Err(_) => warnings.push(format!(
                        "resolv.conf: skipping nameserver {:?}: not an IP address",
                        fields[1]
                    )),
                }
            }
            Some("search") => search.extend(fields[1..].iter().map(|s| s.to_lowercase())),
            _ => {}
        }
    }
    if v4.is_empty() && v6.is_empty() {
        v4.push(Ipv4Addr::new(8, 8, 8, 8));
    }
    if search.is_empty() {
        search.push("cluster.local".into());
    }
    DnsConfig { v4, v6, search }
}

/// `sub + "." + the longest search entry containing ".svc."`, unless that entry already starts
/// with `sub.` or there is none (KubeVirt `DomainNameWithSubdomain`).
pub fn subdomain_search_entry(search: &[String], sub: &str) -> Option<String> {
    let longest = longest(search.iter().filter(|s| s.contains(".svc.")))?;
    if longest.starts_with(&format!("{sub}.")) {
        return None;
    }
    Some(format!("{sub}.{longest}"))
}

/// The longest string; the first one wins ties.
pub fn longest<'a>(it: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    it.fold(None, |best: Option<&String>, cand| match best {
        Some(longer) if longer.len() >= cand.len() => Some(longer),
        _ => Some(cand),
    })
}

/// KubeVirt's check: ≤ 253 chars and
/// `^(?:[_a-z0-9](?:[_a-z0-9-]{0,61}[a-z0-9])?\.)*(?:[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)?$`.
pub fn valid_search_domain(domain: &str) -> bool {
    if domain.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let (last, init) = match labels.split_last() {
        Some(valid) => valid,
        None => return false,
    };
    let label_ok = |l: &str, first_ok: fn(u8) -> bool, mid_ok: fn(u8) -> bool| {
        let bytes = l.as_bytes();
        match bytes {
            [] => false,
            [one] => first_ok(*one),
            [first, mid @ .., last] => {
                bytes.len() <= 63
                    && first_ok(*first)
                    && mid.iter().all(|c| mid_ok(*c))
                    && (last.is_ascii_lowercase() || last.is_ascii_digit())
            }
        }
    };
    let lead = |c: u8| c == b'_' || c.is_ascii_lowercase() || c.is_ascii_digit();
    let inner = |c: u8| c == b'_' || c == b'-' || c.is_ascii_lowercase() || c.is_ascii_digit();
    let single = |c: u8| c == b'_' || c.is_ascii_lowercase() || c.is_ascii_digit();
    // Non-final labels: [_a-z0-9] then optional [_a-z0-9-]{0,61}[a-z0-9].
    let init_ok = init.iter().all(|l| {
        if l.len() == 1 {
            single(l.as_bytes()[0])
        } else {
            label_ok(l, lead, inner)
        }
    });
    // Final label: empty, or [a-z] then optional [a-z0-9-]{0,61}[a-z0-9].
    let last_ok = last.is_empty()
        || label_ok(
            last,
            |c| c.is_ascii_lowercase(),
            |c| c == b'-' || c.is_ascii_lowercase() || c.is_ascii_digit(),
        );
    init_ok && last_ok && !(init.is_empty() && last.is_empty())
}

pub use netbind_contract::dns::encode_search;

/// Keeps the valid domains in order, skipping (with a warning) invalid ones and any that would
/// push option 119 past 255 bytes.
pub fn sanitize_search(domains: Vec<String>, warnings: &mut Vec<String>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for domain in domains {
        if !valid_search_domain(&domain) {
            warnings.push(format!("DHCP: skipping invalid search domain {domain:?}"));
            continue;
        }
        let mut next = kept.clone();
        next.push(domain.clone());
        if encode_search(&next).len() > 255 {
            warnings.push(format!(
                "DHCP: skipping search domain {domain:?}: option 119 would exceed 255 bytes"
            ));
            continue;
        }
        kept = next;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_like_kubevirt() {
        let mut warnings = Vec::new();
        let conf = parse_resolv_conf(
            "nameserver 10.96.0.10\nnameserver fd00::10\nnameserver 1.2.3.4 extra\nsearch Default.svc.cluster.local svc.cluster.local\nsearch cluster.local\noptions ndots:5\n",
            &mut warnings,
        );
        assert_eq!(conf.v4, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(conf.v6, vec!["fd00::10".parse::<Ipv6Addr>().expect("v6")]);
        assert_eq!(
            conf.search,
            vec![
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(warnings.len(), 1);
        let conf = parse_resolv_conf("", &mut warnings);
        assert_eq!(conf.v4, vec![Ipv4Addr::new(8, 8, 8, 8)]);
        assert_eq!(conf.search, vec!["cluster.local"]);
    }

    #[test]
    fn subdomain() {
        let search: Vec<String> = [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            subdomain_search_entry(&search, "mysub"),
            Some("mysub.default.svc.cluster.local".into())
        );
        let s2: Vec<String> = vec!["mysub.default.svc.cluster.local".into()];
        assert_eq!(subdomain_search_entry(&s2, "mysub"), None);
        assert_eq!(
            subdomain_search_entry(&["example.com".to_string()], "x"),
            None
        );
    }

    #[test]
    fn search_domain_validation() {
        for ok in [
            "cluster.local",
            "a.b",
            "_srv.example.com",
            "x",
            "default.svc.cluster.local",
            "a-b.c-d",
        ] {
            assert!(valid_search_domain(ok), "{ok}");
        }
        for bad in [
            "114.114.114.114",
            "HABANA-LABS.COM",
            "-a.com",
            "a..b",
            "",
            "a.-b",
            &"a".repeat(254),
        ] {
            assert!(!valid_search_domain(bad), "{bad}");
        }
        let mut warnings = Vec::new();
        let kept = sanitize_search(
            vec!["DHCP".into(), "ok.local".into(), "1.2.3.4".into()],
            &mut warnings,
        );
        assert_eq!(kept, vec!["ok.local"]);
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn option_119_encoding() {
        assert_eq!(
            encode_search(&["a.bc".into()]),
            vec![1, b'a', 2, b'b', b'c', 0]
        );
    }
}
