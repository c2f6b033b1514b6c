//! The EndpointSlice as the data plane keeps it: the fields the model's
//! views read, decoded straight from JSON or YAML, with slim metadata.
//!
//! Who reads what: the model's views the address type, ports, and per
//! endpoint the addresses, conditions, hostname, nodeName, zone, hints and
//! the target Pod's name (`targetRef`); the lab its targetRefs (to keep
//! recorded Pods' addresses). Dropped: `deprecatedTopology`, and of
//! `targetRef` everything but kind, namespace and name.
//!
//! Field names are Kubernetes' own (and k8s-openapi's), so code reads
//! `slice.endpoints` as it would on the full type. Measured at 20,000
//! slices of 8 endpoints (`cargo run --release -p ferry --example
//! agent_heap`): k8s-openapi's EndpointSlice cost 4,312 B each.
//!
//! Pure.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use k8s_openapi::api::discovery::v1::{
    EndpointConditions, EndpointHints, EndpointPort, ForNode, ForZone,
};

use crate::meta::ObjectMeta;

/// An EndpointSlice, slim.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    pub endpoints: Option<Vec<Endpoint>>,
    pub ports: Option<Vec<EndpointPort>>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Addresses,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<EndpointConditions>,
    /// Boxed: set only with topology-aware routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hints: Option<Box<EndpointHints>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Box<str>>,
    /// Shared ([`crate::intern`]), as Pods' and views' node names.
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_name: Option<Arc<str>>,
    /// Boxed: absent on endpoints written by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<Box<TargetRef>>,
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub zone: Option<Arc<str>>,
}

/// An endpoint's addresses, as written. Nearly every endpoint has one IP
/// address, kept inline as the address itself: a `Vec<String>` cost two
/// allocations per endpoint (64 B of heap beside its 24 B), about 10 MiB
/// at 20,000 slices of 8 endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addresses {
    One(Address),
    Many(Box<[Address]>),
}

/// One address: an IP written the way Rust writes it back (so the text
/// round-trips), or the text as it came (FQDN slices, odd spellings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    Text(Box<str>),
}

impl Address {
    /// The address as an IP, however it was spelled; `None` for a name.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Text(t) => t.parse().ok(),
        }
    }

    /// The address as written.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Address::Ip(ip) => Cow::Owned(ip.to_string()),
            Address::Text(t) => Cow::Borrowed(t),
        }
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Address {
        use std::fmt::Write;
        if let Ok(ip) = s.parse::<IpAddr>() {
            // Kept as an IP only when it prints back as written.
            let mut back = heapless_text::Text::default();
            if write!(back, "{ip}").is_ok() && back.as_str() == s {
                return Address::Ip(ip);
            }
        }
        Address::Text(s.into())
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = Cow::<'de, str>::deserialize(d)?;
        Ok(Address::from(&*text))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Text(t) => f.write_str(t),
        }
    }
}

/// A stack buffer for an IP's text (at most 39 bytes, an IPv6 address
/// with an IPv4 tail), so a decoded address costs no allocation.
mod heapless_text {
    pub struct Text {
        buf: [u8; 48],
        len: usize,
    }

    impl Default for Text {
        fn default() -> Text {
            Text {
                buf: [0; 48],
                len: 0,
            }
        }
    }

    impl Text {
        pub fn as_str(&self) -> &str {
            std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
        }
    }

    impl std::fmt::Write for Text {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = self.len + s.len();
            let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}

impl Default for Addresses {
    fn default() -> Addresses {
        Addresses::Many(Box::new([]))
    }
}

impl Addresses {
    pub fn as_slice(&self) -> &[Address] {
        match self {
            Addresses::One(a) => std::slice::from_ref(a),
            Addresses::Many(all) => all,
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Address> {
        self.as_slice().iter()
    }

    pub fn first(&self) -> Option<&Address> {
        self.as_slice().first()
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Addresses {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Addresses {
        let mut all: Vec<Address> = iter.into_iter().map(|s| s.as_ref().into()).collect();
        if all.len() == 1 {
            Addresses::One(all.remove(0))
        } else {
            Addresses::Many(all.into())
        }
    }
}

impl Serialize for Addresses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|a| a.text()))
    }
}

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Addresses, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Addresses;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of addresses")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Addresses, A::Error> {
                let mut all: Vec<Address> = Vec::new();
                while let Some(s) = seq.next_element::<Cow<'de, str>>()? {
                    all.push(Address::from(&*s));
                }
                Ok(if all.len() == 1 {
                    Addresses::One(all.remove(0))
                } else {
                    Addresses::Many(all.into())
                })
            }
        }
        d.deserialize_seq(Visitor)
    }
}

/// What an endpoint points at: the parts of an `ObjectReference` read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Arc<str>>,
    #[serde(
        default,
        deserialize_with = "crate::intern::deserialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub namespace: Option<Arc<str>>,
    /// Shared with the views' `pod`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Arc<str>>,
}

impl From<k8s_openapi::api::core::v1::ObjectReference> for Box<TargetRef> {
    fn from(r: k8s_openapi::api::core::v1::ObjectReference) -> Box<TargetRef> {
        Box::new(TargetRef {
            kind: r.kind.as_deref().map(crate::intern::shared),
            namespace: r.namespace.as_deref().map(crate::intern::shared),
            name: r.name.map(Arc::from),
        })
    }
}

crate::object::manifest_serialize!(EndpointSlice, "discovery.k8s.io/v1", "EndpointSlice", {
    metadata => "metadata",
    address_type => "addressType",
    endpoints => "endpoints",
    ports => "ports",
});

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLLER_SLICE: &str = r#"{
      "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
      "metadata": {"name": "web-abc12", "namespace": "shop", "uid": "9f1", "resourceVersion": "41",
                   "generateName": "web-",
                   "labels": {"kubernetes.io/service-name": "web",
                              "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                   "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-03T09:00:00Z"},
                   "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "77"}]},
      "addressType": "IPv4",
      "endpoints": [{"addresses": ["10.244.1.5"],
                     "conditions": {"ready": true, "serving": true, "terminating": false},
                     "nodeName": "node-1", "zone": "a",
                     "hints": {"forZones": [{"name": "a"}]},
                     "deprecatedTopology": {"kubernetes.io/hostname": "node-1"},
                     "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "1c9e",
                                   "resourceVersion": "812"}}],
      "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }"#;

    #[test]
    fn a_controller_written_slice_keeps_what_the_views_read() {
        let slice: EndpointSlice = serde_json::from_str(CONTROLLER_SLICE).unwrap();
        let ep = &slice.endpoints.as_ref().unwrap()[0];
        assert_eq!(
            ep.addresses,
            Addresses::One(Address::Ip("10.244.1.5".parse().unwrap()))
        );
        assert_eq!(ep.conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(ep.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            ep.target_ref.as_ref().unwrap().name.as_deref(),
            Some("web-0")
        );
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        let json = serde_json::to_value(&slice).unwrap();
        assert_eq!(json["kind"], "EndpointSlice");
        assert_eq!(json["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(json["endpoints"][0].get("deprecatedTopology"), None);
        assert_eq!(json["endpoints"][0]["targetRef"].get("uid"), None);
        assert_eq!(json["metadata"].get("annotations"), None);
        let back: EndpointSlice = serde_json::from_value(json).unwrap();
        assert_eq!(back, slice, "what is written reads back the same");
    }

    #[test]
    fn addresses_are_written_back_as_they_came_and_read_as_ips_however_spelled() {
        let json = r#"["10.244.1.5","FD00::1","web.example.com"]"#;
        let addresses: Addresses = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&addresses).unwrap(), json);
        let ips: Vec<Option<IpAddr>> = addresses.iter().map(Address::ip).collect();
        assert_eq!(
            ips,
            [
                Some("10.244.1.5".parse().unwrap()),
                Some("fd00::1".parse().unwrap()),
                None
            ]
        );
        assert_eq!(addresses.as_slice()[1], Address::Text("FD00::1".into()));
        let one: Addresses = serde_json::from_str(r#"["fd00::1"]"#).unwrap();
        assert_eq!(one, Addresses::One(Address::Ip("fd00::1".parse().unwrap())));
        let none: Addresses = serde_json::from_str("[]").unwrap();
        assert!(none.is_empty());
        // One address costs no allocation and no more room than the Vec did.
        assert!(std::mem::size_of::<Addresses>() <= 24);
    }
}
