//! The ADD result in the shape of the version asked for (`ips[].version`
//! before 1.0.0, `interfaces[].mtu` from 1.1.0), appended to a previous
//! plugin's result when ferry is not first in a chain, and read back from
//! `prevResult` for CHECK. Pure.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::version::Version;

/// What ADD did: the host and pod interfaces, the pod's address, its routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub bridge: Iface,
    pub host: Iface,
    /// The pod's end, with the path of its network namespace.
    pub pod: Iface,
    pub sandbox: String,
    /// The pod's address with the subnet's prefix length.
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub routes: Vec<Ipv4Net>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
}

impl Attached {
    /// The result JSON, after `prev` (its interfaces, ips and routes
    /// kept, ours appended with their interface indexes shifted).
    pub fn render(&self, version: Version, prev: Option<&Value>) -> Value {
        let mut interfaces: Vec<Value> = list(prev, "interfaces");
        let mut ips: Vec<Value> = list(prev, "ips");
        let mut routes: Vec<Value> = list(prev, "routes");
        let first = interfaces.len();
        let iface = |i: &Iface, sandbox: Option<&str>| {
            let mut v = json!({"name": i.name, "mac": i.mac});
            if version.interfaces_have_mtu() {
                v["mtu"] = json!(i.mtu);
            }
            if let Some(s) = sandbox {
                v["sandbox"] = json!(s);
            }
            v
        };
        interfaces.push(iface(&self.bridge, None));
        interfaces.push(iface(&self.host, None));
        interfaces.push(iface(&self.pod, Some(&self.sandbox)));
        let mut ip = json!({
            "address": self.address.to_string(),
            "gateway": self.gateway.to_string(),
            "interface": first + 2,
        });
        if version.ips_have_version() {
            ip["version"] = json!("4");
        }
        ips.push(ip);
        for dst in &self.routes {
            routes.push(json!({"dst": dst.to_string(), "gw": self.gateway.to_string()}));
        }
        let mut out = json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": prev.and_then(|p| p.get("dns")).cloned().unwrap_or_else(|| json!({})),
        });
        if let Some(obj) = out.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        out
    }
}

fn list(prev: Option<&Value>, key: &str) -> Vec<Value> {
    prev.and_then(|p| p.get(key))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// What CHECK needs from `prevResult`: the address ferry gave to the
/// interface `ifname` in `sandbox`.
pub fn address_of(prev: &Value, ifname: &str) -> Option<Ipv4Net> {
    let interfaces = prev.get("interfaces")?.as_array()?;
    let index = interfaces.iter().position(|i| {
        i.get("name").and_then(Value::as_str) == Some(ifname) && i.get("sandbox").is_some()
    })?;
    prev.get("ips")?
        .as_array()?
        .iter()
        .find(|ip| ip.get("interface").and_then(Value::as_u64) == Some(index as u64))?
        .get("address")?
        .as_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached() -> Attached {
        let i = |n: &str, m: &str| Iface {
            name: n.into(),
            mac: m.into(),
            mtu: 1450,
        };
        Attached {
            bridge: i("cni0", "aa:00:00:00:00:01"),
            host: i("veth0123abcd", "aa:00:00:00:00:02"),
            pod: i("eth0", "aa:00:00:00:00:03"),
            sandbox: "/run/netns/pod".into(),
            address: "10.244.1.2/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 244, 1, 1),
            routes: vec!["0.0.0.0/0".parse().unwrap()],
        }
    }

    #[test]
    fn each_version_gets_its_result_shape() {
        let old = attached().render(Version::V0_3_1, None);
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][2].get("mtu").is_none());
        let v1 = attached().render(Version::V1_0_0, None);
        assert!(v1["ips"][0].get("version").is_none());
        assert!(v1["interfaces"][2].get("mtu").is_none());
        let v11 = attached().render(Version::V1_1_0, None);
        assert_eq!(v11["interfaces"][2]["mtu"], 1450);
        assert_eq!(v11["interfaces"][2]["sandbox"], "/run/netns/pod");
        assert_eq!(v11["ips"][0]["interface"], 2);
        assert_eq!(v11["ips"][0]["address"], "10.244.1.2/24");
        assert_eq!(
            v11["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"})
        );
        assert_eq!(
            address_of(&v11, "eth0"),
            Some("10.244.1.2/24".parse().unwrap())
        );
        assert_eq!(address_of(&v11, "eth1"), None);
    }

    #[test]
    fn a_previous_result_is_kept_and_ours_appended() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo", "sandbox": "/run/netns/pod"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            "dns": {"nameservers": ["10.96.0.10"]}
        });
        let r = attached().render(Version::V1_0_0, Some(&prev));
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 4);
        assert_eq!(r["ips"][1]["interface"], 3);
        assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
        assert_eq!(
            address_of(&r, "eth0"),
            Some("10.244.1.2/24".parse().unwrap())
        );
    }
}
