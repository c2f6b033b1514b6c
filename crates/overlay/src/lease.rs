//! A subnet lease as flannel stores it: the key `a.b.c.d-N` under
//! `<prefix>/subnets/`, and the JSON value `{"PublicIP", "BackendType",
//! "BackendData": {"VNI", "VtepMAC"}}`. A ferry node and a flannel node
//! read each other's leases. Pure.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The VXLAN backend's part of a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    /// The node's VTEP MAC, `aa:bb:cc:dd:ee:ff`.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// A lease's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "BackendType")]
    pub backend_type: String,
    /// `null` for host-gw.
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<BackendData>,
}

/// A subnet and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Ipv4Net,
    pub attrs: LeaseAttrs,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key:?} is not a flannel subnet key (a.b.c.d-N)")]
pub struct LeaseKeyError {
    pub key: String,
}

/// The key of a subnet: `10.244.1.0-24`.
pub fn subnet_key(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// The subnet of a key (the last path element of an etcd key).
pub fn parse_key(key: &str) -> Result<Ipv4Net, LeaseKeyError> {
    let bad = || LeaseKeyError {
        key: key.to_string(),
    };
    let name = key.rsplit('/').next().unwrap_or(key);
    // An IPv6 part (`&fd00::-64`) may follow; ferry's overlay is IPv4.
    let v4 = name.split('&').next().unwrap_or(name);
    let (addr, len) = v4.split_once('-').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let net = Ipv4Net::new(addr, len).map_err(|_| bad())?;
    if net.trunc() != net {
        return Err(bad());
    }
    Ok(net)
}

/// The value exactly as flannel marshals it: `PublicIPv6` is a pointer
/// without `omitempty` there, so an IPv4-only lease carries `null`.
#[derive(Serialize)]
struct FlannelValue<'a> {
    #[serde(rename = "PublicIP")]
    public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6")]
    public_ipv6: Option<()>,
    #[serde(rename = "BackendType")]
    backend_type: &'a str,
    #[serde(rename = "BackendData", skip_serializing_if = "Option::is_none")]
    backend_data: Option<&'a BackendData>,
}

impl LeaseAttrs {
    /// The value flannel would write for this lease, byte for byte.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(&FlannelValue {
            public_ip: self.public_ip,
            public_ipv6: None,
            backend_type: &self.backend_type,
            backend_data: self.backend_data.as_ref(),
        })
        .unwrap_or_default()
    }

    pub fn from_json(json: &str) -> Result<LeaseAttrs, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_flannels() {
        let net: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        assert_eq!(subnet_key(net), "10.244.1.0-24");
        assert_eq!(
            parse_key("/coreos.com/network/subnets/10.244.1.0-24").unwrap(),
            net
        );
        assert_eq!(parse_key("10.244.1.0-24&fd00:10:244:1::-64").unwrap(), net);
        for bad in ["10.244.1.0", "10.244.1.5-24", "x-24", "10.244.1.0-40"] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
        // A value flannel wrote.
        let flannel = r#"{"PublicIP":"172.18.0.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}}"#;
        let attrs = LeaseAttrs::from_json(flannel).unwrap();
        assert_eq!(attrs.public_ip, Ipv4Addr::new(172, 18, 0, 12));
        assert_eq!(
            attrs.backend_data.as_ref().unwrap().vtep_mac,
            "12:c6:65:89:b4:e3"
        );
        assert_eq!(
            attrs.to_json(),
            flannel,
            "the value flannel wrote, byte for byte"
        );
    }
}
