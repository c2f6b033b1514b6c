//! The names Kubernetes DNS derives from addresses: reverse (`in-addr.arpa`,
//! `ip6.arpa`) owner names and the dashed endpoint and pod labels
//! (`10-1-2-3`, `2001-db8--1`). Pure.

use std::fmt::Write;
use std::net::IpAddr;

/// `4.3.2.1.in-addr.arpa` or the 32-nibble `ip6.arpa` name, without the trailing dot.
pub(crate) fn reverse(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", byte & 0x0F, byte >> 4);
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The label CoreDNS gives an endpoint or pod without a hostname: the IP
/// with `.`/`:` replaced by `-`; an IPv6 label that would start or end with
/// `-` gets a `0` there, so it stays a valid DNS label.
pub(crate) fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s.push('0');
            }
            if s.starts_with('-') {
                s.insert(0, '0');
            }
            s
        }
    }
}

/// Reads a pod label back as an address, as CoreDNS does: exactly three
/// dashes and no `--` means IPv4, anything else is tried as IPv6.
pub(crate) fn undashed(label: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(label).ok()?;
    let dashes = text.bytes().filter(|b| *b == b'-').count();
    if dashes == 3 && !text.contains("--") {
        text.replace('-', ".").parse().ok()
    } else {
        text.replace('-', ":").parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_follow_the_spec() {
        assert_eq!(
            reverse("10.96.0.10".parse().unwrap()),
            "10.0.96.10.in-addr.arpa"
        );
        let v6 = reverse("2001:db8::1".parse().unwrap());
        assert!(v6.starts_with("1.0.0.0.0.0.0.0."));
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
        assert_eq!(v6.split('.').count(), 34);
    }

    #[test]
    fn dashed_labels_round_trip() {
        for ip in ["10.1.2.3", "2001:db8::1", "fd00::", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let label = dashed(ip);
            assert!(!label.starts_with('-') && !label.ends_with('-'), "{label}");
            assert_eq!(undashed(label.as_bytes()), Some(ip), "{label}");
        }
        assert_eq!(dashed("fd00::".parse().unwrap()), "fd00--0");
        assert_eq!(undashed(b"10-1-2"), None);
        assert_eq!(undashed(b"010-1-2-3"), None);
    }
}
