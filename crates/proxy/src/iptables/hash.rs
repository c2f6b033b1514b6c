//! Chain names as kube-proxy's iptables mode makes them, so that a ferry
//! node's `iptables-save` names each Service's chains exactly as kube-proxy
//! would: the prefix and the first 16 characters of the standard base32
//! encoding of sha256(servicePortName + protocol [+ endpoint]).
//!
//! Pure.

use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The first 16 base32 characters of sha256(`input`): the first 80 bits.
fn hash16(input: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in input {
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut bits: u128 = 0;
    for b in &digest[..10] {
        bits = (bits << 8) | u128::from(*b);
    }
    (0..16)
        .rev()
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` and `KUBE-FW-` share this suffix.
/// `service_port` is kube-proxy's ServicePortName string (`ns/name:port`,
/// or `ns/name` for an unnamed port); `protocol` is lower case.
pub fn port_proto_hash(service_port: &str, protocol: &str) -> String {
    hash16(&[service_port, protocol])
}

/// `KUBE-SEP-` suffix; `endpoint` is `IP:port` (`[IPv6]:port`).
pub fn endpoint_hash(service_port: &str, protocol: &str, endpoint: &str) -> String {
    hash16(&[service_port, protocol, endpoint])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names kube-proxy's own tests and real clusters show.
    #[test]
    fn hashes_match_kube_proxy() {
        assert_eq!(port_proto_hash("ns1/svc1:p80", "tcp"), "XPGD46QRK7WJZT7O");
        assert_eq!(
            port_proto_hash("kube-system/kube-dns:dns", "udp"),
            "TCOU7JCQXEZGVUNU"
        );
        assert_eq!(
            port_proto_hash("default/kubernetes:https", "tcp"),
            "NPX46M4PTMTKRN6Y"
        );
        assert_eq!(port_proto_hash("ns4/svc4:p80", "tcp"), "4SW47YFZTEDKD3PK");
        assert_eq!(
            endpoint_hash("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "SXIVWICOYRO3J4NJ"
        );
    }
}
