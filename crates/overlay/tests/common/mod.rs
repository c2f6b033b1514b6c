//! What the store tests share: a node's lease value. Pure.

use std::net::Ipv4Addr;

use ferry_overlay::{BackendData, LeaseAttrs};

/// Node `i`'s value: PublicIP 172.18.0.(10+i), VXLAN, MAC 02:00:00:00:00:i.
pub fn attrs(i: u8) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: Ipv4Addr::new(172, 18, 0, 10 + i),
        backend_type: "vxlan".into(),
        backend_data: Some(BackendData {
            vni: 1,
            vtep_mac: format!("02:00:00:00:00:{i:02x}"),
        }),
    }
}
