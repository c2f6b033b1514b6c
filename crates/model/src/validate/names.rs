//! The name and value syntaxes of the Kubernetes API (apimachinery's
//! `validation` package): DNS labels and subdomains, IANA service names,
//! label keys and values, IPs and CIDRs. Each check returns the message the
//! user sees, or `None` when the value is fine.

use std::net::IpAddr;

use ipnet::IpNet;

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn label_shape(s: &str) -> bool {
    let mut chars = s.chars();
    let (Some(first), Some(last)) = (chars.next(), s.chars().last()) else {
        return false;
    };
    is_lower_alnum(first)
        && is_lower_alnum(last)
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
}

/// RFC 1123 label: namespaces, port names, hostnames.
pub(crate) fn dns1123_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some(format!("{s:?} must be no more than 63 characters"));
    }
    if !label_shape(s) {
        return Some(format!(
            "{s:?} is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    None
}

/// RFC 1035 label: Service names (they become DNS labels that must not start with a digit).
pub(crate) fn dns1035_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some(format!("{s:?} must be no more than 63 characters"));
    }
    if !label_shape(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!(
            "{s:?} is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)"
        ));
    }
    None
}

/// RFC 1123 subdomain: most object names, node names, hostnames in ExternalName.
pub(crate) fn dns1123_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some(format!("{s:?} must be no more than 253 characters"));
    }
    if s.is_empty() || !s.split('.').all(label_shape) {
        return Some(format!(
            "{s:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)"
        ));
    }
    None
}

/// A host name as Ingress rules take it: a subdomain, optionally with a leading `*.`.
pub(crate) fn wildcard_subdomain(s: &str) -> Option<String> {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    if s.parse::<IpAddr>().is_ok() {
        return Some(format!("{s:?} must be a DNS name, not an IP address"));
    }
    if s.contains(':') {
        return Some(format!("{s:?} must not contain a port"));
    }
    dns1123_subdomain(rest)
}

/// IANA service name: named container and target ports (`http`, `dns-tcp`).
pub(crate) fn iana_svc_name(s: &str) -> Option<String> {
    let bad = s.is_empty()
        || s.len() > 15
        || !s.chars().all(|c| is_lower_alnum(c) || c == '-')
        || !s.chars().any(|c| c.is_ascii_lowercase())
        || s.starts_with('-')
        || s.ends_with('-')
        || s.contains("--");
    bad.then(|| {
        format!(
            "{s:?} is not a port name (at most 15 lowercase letters, digits and '-', with at least one letter, no leading, trailing or double '-')"
        )
    })
}

fn qualified_part(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    s.len() <= 63
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Label and annotation keys: `[prefix/]name`.
pub(crate) fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix
        && dns1123_subdomain(prefix).is_some()
    {
        return Some(format!("{s:?}: prefix must be a DNS-1123 subdomain"));
    }
    if !qualified_part(name) {
        return Some(format!(
            "{s:?} is not a qualified name (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/')"
        ));
    }
    None
}

/// Label values: empty, or a qualified-name part.
pub(crate) fn label_value(s: &str) -> Option<String> {
    (!s.is_empty() && !qualified_part(s)).then(|| {
        format!(
            "{s:?} is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        )
    })
}

/// Keys of ConfigMap and Secret data.
pub(crate) fn config_key(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && !s.starts_with("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!ok).then(|| format!("{s:?} is not a valid key (letters, digits, '-', '_' or '.')"))
}

pub(crate) fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not a valid IP address"))
}

pub(crate) fn cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map_err(|_| format!("{s:?} is not a valid CIDR (for example 10.0.0.0/8)"))
}

/// The longest duration in seconds that a Kubernetes component can hold:
/// Go's `time.Duration` counts nanoseconds in an i64 (about 292 years).
/// Larger values overflow the arithmetic of whoever reads them.
pub(crate) const MAX_SECONDS: i64 = i64::MAX / 1_000_000_000;

/// Durations in seconds (grace periods): 0 or more, and representable.
pub(crate) fn seconds(value: i64) -> Option<String> {
    if value < 0 {
        Some(format!("{value} must be 0 or more"))
    } else if value > MAX_SECONDS {
        Some(format!(
            "{value} is too large: at most {MAX_SECONDS} seconds (about 292 years)"
        ))
    } else {
        None
    }
}

pub(crate) fn port(value: i32) -> Option<String> {
    (!(1..=65535).contains(&value)).then(|| format!("{value} is not in 1..65535"))
}

pub(crate) fn one_of(value: &str, allowed: &[&str]) -> Option<String> {
    (!allowed.contains(&value)).then(|| {
        let list = allowed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{value:?} is not one of {list}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains_follow_rfc_1123() {
        assert!(dns1123_label("web-1").is_none());
        assert!(dns1123_label("Web").is_some());
        assert!(dns1123_label("-web").is_some());
        assert!(dns1123_label(&"a".repeat(64)).is_some());
        assert!(dns1123_subdomain("a.b-c.d").is_none());
        assert!(dns1123_subdomain("a..b").is_some());
        assert!(dns1035_label("1web").is_some());
        assert!(dns1123_label("1web").is_none());
    }

    #[test]
    fn port_names_follow_iana_service_names() {
        assert!(iana_svc_name("http").is_none());
        assert!(iana_svc_name("dns-tcp").is_none());
        assert!(iana_svc_name("8080").is_some());
        assert!(iana_svc_name("a--b").is_some());
        assert!(iana_svc_name("averyveryverylongname").is_some());
    }

    #[test]
    fn label_keys_take_an_optional_prefix() {
        assert!(qualified_name("app").is_none());
        assert!(qualified_name("kubernetes.io/service-name").is_none());
        assert!(qualified_name("Bad_/x").is_some());
        assert!(qualified_name("-x").is_some());
        assert!(label_value("").is_none());
        assert!(label_value("v1.2_3").is_none());
        assert!(label_value("no spaces").is_some());
    }

    #[test]
    fn ingress_hosts_may_be_wildcards_but_not_ips() {
        assert!(wildcard_subdomain("*.example.com").is_none());
        assert!(wildcard_subdomain("10.0.0.1").is_some());
        assert!(wildcard_subdomain("a.com:80").is_some());
    }

    #[test]
    fn ipv4_with_leading_zeros_is_rejected() {
        assert!(ip("010.0.0.1").is_err());
        assert!(ip("fd00::1").is_ok());
        assert!(cidr("10.0.0.0/33").is_err());
    }
}
