//! The host-side name of a pod's veth: `veth` and 8 hex digits of a hash
//! of the container ID and interface name, so DEL and GC find it again
//! without any state, and a retried ADD reuses it. Pure.

use sha2::{Digest, Sha256};

pub fn host_veth(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    format!(
        "veth{:02x}{:02x}{:02x}{:02x}",
        digest[0], digest[1], digest[2], digest[3]
    )
}

/// The pod end's name while it is still in the node's namespace (before
/// it moves into the pod and takes CNI_IFNAME).
pub fn pod_veth_temp(container_id: &str, ifname: &str) -> String {
    format!("tmp{}", &host_veth(container_id, ifname)[4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_distinct_and_fit_ifnamsiz() {
        let a = host_veth("c1", "eth0");
        assert_eq!(a, host_veth("c1", "eth0"));
        assert_ne!(a, host_veth("c2", "eth0"));
        assert_ne!(a, host_veth("c1", "eth1"));
        assert!(a.starts_with("veth") && a.len() == 12);
        assert!(pod_veth_temp("c1", "eth0").len() < 16);
    }
}
