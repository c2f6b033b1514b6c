//! One definition per set and map of ferry's table: its name, the fields
//! of its keys, what its elements map to (data fields or a verdict), its
//! flags. Everything else about a set comes from that definition: its
//! declaration in the ruleset text, the nft text of its elements (for
//! `nft -f`), and the kernel's byte layout of its elements, both ways
//! (netlink encoding, and decoding of what the kernel lists).
//!
//! Elements are typed values (addresses, protocols, ports, marks), never
//! text: tens of thousands of Services make hundreds of thousands of them.
//!
//! Pure.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferry_model::Protocol;
use ipnet::IpNet;

use crate::plan::Family;

/// The kind of one field of a concatenation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// An address of the table's family, network order.
    Addr,
    /// An IP protocol number (`inet_proto`), one byte.
    Proto,
    /// A transport port (`inet_service`), network order.
    Port,
    /// A packet mark holding a slot (see `ruleset.rs`), host order.
    Mark,
    /// Which of a slot's endpoints (`numgen random mod N`), host order.
    Index,
    /// An address prefix: a range of an interval set.
    Net,
}

impl Field {
    /// The nft type of the field in the IPv4 table (`ruleset::table` makes
    /// the IPv6 one by replacing `ipv4_addr`).
    fn nft_type(self) -> &'static str {
        match self {
            Field::Addr | Field::Net => "ipv4_addr",
            Field::Proto => "inet_proto",
            Field::Port => "inet_service",
            Field::Mark => "mark",
            Field::Index => "integer",
        }
    }

    /// The expression a `typeof` declaration names the field by. An
    /// address in a key is the packet's source (the affinity map's
    /// client), in data the destination (an endpoint).
    fn typeof_expr(self, in_key: bool) -> &'static str {
        match self {
            Field::Addr | Field::Net if in_key => "ip saddr",
            Field::Addr | Field::Net => "ip daddr",
            Field::Proto => "meta l4proto",
            Field::Port => "th dport",
            Field::Mark => "meta mark",
            Field::Index => "numgen random mod 1",
        }
    }
}

/// What the elements of a set map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDef {
    /// A set: keys only.
    None,
    /// A map to a concatenation of fields.
    Fields(&'static [Field]),
    /// A verdict map (`goto pick_N`).
    Verdict,
}

/// How the ruleset declares a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetDef {
    pub name: &'static str,
    pub key: &'static [Field],
    pub data: DataDef,
    /// Declared by `typeof` (its fields have no nft type name) rather than `type`.
    pub by_typeof: bool,
    /// `interval`, `dynamic,timeout` or empty.
    pub flags: &'static str,
    pub comment: &'static str,
}

const fn def(name: &'static str, key: &'static [Field], data: DataDef) -> SetDef {
    SetDef {
        name,
        key,
        data,
        by_typeof: false,
        flags: "",
        comment: "",
    }
}

use Field::{Addr, Index, Mark, Net, Port, Proto};

const SERVICE: &[Field] = &[Addr, Proto, Port];
const NODE_PORT: &[Field] = &[Proto, Port];
const SLOT: &[Field] = &[Mark];
const TO_SLOT: DataDef = DataDef::Fields(SLOT);

/// ferry's sets and maps, in the order the ruleset declares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Set {
    /// ClusterIP . protocol . port -> slot.
    ClusterIps,
    /// External and load-balancer IP . protocol . port -> slot.
    ExternalIps,
    /// protocol . NodePort -> slot.
    NodePorts,
    /// slot . index -> endpoint IP . port.
    Endpoints,
    /// endpoint count -> `goto pick_N`.
    Pick,
    /// Service addresses without endpoints (rejected).
    NoEndpoints,
    /// Every ClusterIP (unknown ports are rejected).
    ClusterAddresses,
    /// NodePorts without endpoints (rejected).
    NoEndpointNodePorts,
    /// External addresses of Local-policy Services without a local endpoint (dropped).
    DropExternal,
    /// NodePorts of Local-policy Services without a local endpoint (dropped).
    DropNodePorts,
    /// endpoint . endpoint: hairpin traffic (masqueraded).
    Hairpin,
    /// The cluster's pod CIDRs (interval).
    ClusterCidrs,
    /// Load-balancer IP . protocol . port with source ranges.
    FirewallKeys,
    /// Load-balancer IP . protocol . port . allowed source range (interval).
    FirewallAllow,
    /// Slots of external traffic with Cluster policy (masqueraded).
    MasqueradeSlots,
    /// Slots of external traffic with Local policy (client IP kept).
    KeepClientSlots,
    /// Slots of cluster traffic (masqueraded from outside the cluster CIDRs).
    ClusterSlots,
    /// One element, checked to notice the table being flushed.
    Canary,
    /// client . slot -> endpoint, filled by the kernel (session affinity).
    Affinity,
    /// Slots whose clients stick for this many seconds: `affinity_<timeout>`.
    AffinitySlots(u32),
}

impl Set {
    /// Every set with a fixed name, in declaration order (the
    /// `affinity_<timeout>` sets come after them, one per timeout in use).
    pub const FIXED: [Set; 19] = [
        Set::ClusterIps,
        Set::ExternalIps,
        Set::NodePorts,
        Set::Endpoints,
        Set::Pick,
        Set::NoEndpoints,
        Set::ClusterAddresses,
        Set::NoEndpointNodePorts,
        Set::DropExternal,
        Set::DropNodePorts,
        Set::Hairpin,
        Set::ClusterCidrs,
        Set::FirewallKeys,
        Set::FirewallAllow,
        Set::MasqueradeSlots,
        Set::KeepClientSlots,
        Set::ClusterSlots,
        Set::Canary,
        Set::Affinity,
    ];

    /// The definition of this set: the one place its layout is written.
    pub fn def(self) -> SetDef {
        match self {
            Set::ClusterIps => def("cluster_ips", SERVICE, TO_SLOT),
            Set::ExternalIps => def("external_ips", SERVICE, TO_SLOT),
            Set::NodePorts => def("node_ports", NODE_PORT, TO_SLOT),
            Set::Endpoints => SetDef {
                by_typeof: true,
                ..def("endpoints", &[Mark, Index], DataDef::Fields(&[Addr, Port]))
            },
            Set::Pick => def("pick", SLOT, DataDef::Verdict),
            Set::NoEndpoints => def("no_endpoints", SERVICE, DataDef::None),
            Set::ClusterAddresses => def("cluster_addresses", &[Addr], DataDef::None),
            Set::NoEndpointNodePorts => def("no_endpoint_node_ports", NODE_PORT, DataDef::None),
            Set::DropExternal => def("drop_external", SERVICE, DataDef::None),
            Set::DropNodePorts => def("drop_node_ports", NODE_PORT, DataDef::None),
            Set::Hairpin => def("hairpin", &[Addr, Addr], DataDef::None),
            Set::ClusterCidrs => SetDef {
                flags: "interval",
                ..def("cluster_cidrs", &[Net], DataDef::None)
            },
            Set::FirewallKeys => def("firewall_keys", SERVICE, DataDef::None),
            Set::FirewallAllow => SetDef {
                flags: "interval",
                ..def("firewall_allow", &[Addr, Proto, Port, Net], DataDef::None)
            },
            Set::MasqueradeSlots => def("masquerade_slots", SLOT, DataDef::None),
            Set::KeepClientSlots => def("keep_client_slots", SLOT, DataDef::None),
            Set::ClusterSlots => def("cluster_slots", SLOT, DataDef::None),
            Set::Canary => SetDef {
                comment: "one element, checked to notice the table being flushed from outside",
                ..def("canary", SLOT, DataDef::None)
            },
            Set::Affinity => SetDef {
                by_typeof: true,
                flags: "dynamic,timeout",
                ..def("affinity", &[Addr, Mark], DataDef::Fields(&[Addr, Port]))
            },
            Set::AffinitySlots(_) => def("affinity_", SLOT, DataDef::None),
        }
    }

    /// The set's name in the table.
    pub fn name(self) -> Cow<'static, str> {
        match self {
            Set::AffinitySlots(timeout) => Cow::Owned(format!("affinity_{timeout}")),
            s => Cow::Borrowed(s.def().name),
        }
    }

    /// The set named `name`, if it is one of ferry's.
    pub fn from_name(name: &str) -> Option<Set> {
        if let Some(t) = name.strip_prefix("affinity_") {
            return t.parse().ok().map(Set::AffinitySlots);
        }
        Set::FIXED.into_iter().find(|s| s.def().name == name)
    }

    /// Interval sets hold ranges: their elements go through `nft`, which
    /// splits them into the kernel's start and end elements.
    pub fn is_interval(self) -> bool {
        self.def().flags.contains("interval")
    }

    /// The set's declaration in the (IPv4) ruleset text, such as
    /// `map node_ports { type inet_proto . inet_service : mark; }`.
    pub fn declaration(self) -> String {
        let d = self.def();
        let fields = |fields: &[Field], in_key: bool| -> String {
            fields
                .iter()
                .map(|f| {
                    if d.by_typeof {
                        f.typeof_expr(in_key)
                    } else {
                        f.nft_type()
                    }
                })
                .collect::<Vec<_>>()
                .join(" . ")
        };
        let (kind, data) = match d.data {
            DataDef::None => ("set", String::new()),
            DataDef::Fields(f) => ("map", format!(" : {}", fields(f, false))),
            DataDef::Verdict => ("map", " : verdict".to_string()),
        };
        let mut s = format!(
            "{kind} {} {{ {} {}{data};",
            self.name(),
            if d.by_typeof { "typeof" } else { "type" },
            fields(d.key, true)
        );
        if !d.flags.is_empty() {
            s.push_str(&format!(" flags {};", d.flags));
        }
        if !d.comment.is_empty() {
            s.push_str(&format!(" comment \"{}\";", d.comment));
        }
        s.push_str(" }");
        s
    }
}

/// One field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Addr(IpAddr),
    Proto(Protocol),
    Port(u16),
    Mark(u32),
    Index(u32),
    Net(IpNet),
}

impl Value {
    pub fn field(self) -> Field {
        match self {
            Value::Addr(_) => Field::Addr,
            Value::Proto(_) => Field::Proto,
            Value::Port(_) => Field::Port,
            Value::Mark(_) => Field::Mark,
            Value::Index(_) => Field::Index,
            Value::Net(_) => Field::Net,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Addr(ip) => write!(f, "{ip}"),
            Value::Proto(p) => f.write_str(match p {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            }),
            Value::Port(p) => write!(f, "{p}"),
            Value::Mark(m) => write!(f, "{m:#x}"),
            Value::Index(i) => write!(f, "{i}"),
            Value::Net(n) => write!(f, "{n}"),
        }
    }
}

/// The key of an element, by the shape of its set's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `addr`
    Addr(IpAddr),
    /// `addr . proto . port`: a Service's address and port.
    Service(IpAddr, Protocol, u16),
    /// `proto . port`: a NodePort.
    NodePort(Protocol, u16),
    /// `mark`: a slot, or an endpoint count in `pick`.
    Mark(u32),
    /// `mark . index`: one endpoint of a slot.
    Endpoint(u32, u32),
    /// `addr . addr`: a hairpin pair.
    Pair(IpAddr, IpAddr),
    /// `addr . mark`: a client of a slot (session affinity).
    Client(IpAddr, u32),
    /// `prefix`
    Net(IpNet),
    /// `addr . proto . port . prefix`: a source range allowed to a load balancer.
    Allowed(IpAddr, Protocol, u16, IpNet),
}

/// Up to four field values, on the stack.
pub type Values = ([Value; 4], usize);

fn values(v: &[Value]) -> Values {
    let mut out = [Value::Mark(0); 4];
    out[..v.len()].copy_from_slice(v);
    (out, v.len())
}

impl Key {
    /// The key's fields in order.
    pub fn values(&self) -> Values {
        use Value as V;
        match *self {
            Key::Addr(a) => values(&[V::Addr(a)]),
            Key::Service(a, p, s) => values(&[V::Addr(a), V::Proto(p), V::Port(s)]),
            Key::NodePort(p, s) => values(&[V::Proto(p), V::Port(s)]),
            Key::Mark(m) => values(&[V::Mark(m)]),
            Key::Endpoint(m, i) => values(&[V::Mark(m), V::Index(i)]),
            Key::Pair(a, b) => values(&[V::Addr(a), V::Addr(b)]),
            Key::Client(a, m) => values(&[V::Addr(a), V::Mark(m)]),
            Key::Net(n) => values(&[V::Net(n)]),
            Key::Allowed(a, p, s, n) => values(&[V::Addr(a), V::Proto(p), V::Port(s), V::Net(n)]),
        }
    }

    /// The key made of these fields, if any key has that shape.
    pub fn from_values(v: &[Value]) -> Option<Key> {
        use Value as V;
        Some(match *v {
            [V::Addr(a)] => Key::Addr(a),
            [V::Addr(a), V::Proto(p), V::Port(s)] => Key::Service(a, p, s),
            [V::Proto(p), V::Port(s)] => Key::NodePort(p, s),
            [V::Mark(m)] => Key::Mark(m),
            [V::Mark(m), V::Index(i)] => Key::Endpoint(m, i),
            [V::Addr(a), V::Addr(b)] => Key::Pair(a, b),
            [V::Addr(a), V::Mark(m)] => Key::Client(a, m),
            [V::Net(n)] => Key::Net(n),
            [V::Addr(a), V::Proto(p), V::Port(s), V::Net(n)] => Key::Allowed(a, p, s, n),
            _ => return None,
        })
    }
}

/// What an element of a map maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Data {
    /// A slot mark.
    Mark(u32),
    /// An endpoint's address and port.
    Endpoint(IpAddr, u16),
    /// `goto pick_N`.
    GotoPick(u32),
}

impl Data {
    /// The data's fields in order (none for a verdict).
    pub fn values(&self) -> Values {
        match *self {
            Data::Mark(m) => values(&[Value::Mark(m)]),
            Data::Endpoint(a, p) => values(&[Value::Addr(a), Value::Port(p)]),
            Data::GotoPick(_) => values(&[]),
        }
    }

    pub fn from_values(v: &[Value]) -> Option<Data> {
        match *v {
            [Value::Mark(m)] => Some(Data::Mark(m)),
            [Value::Addr(a), Value::Port(p)] => Some(Data::Endpoint(a, p)),
            _ => None,
        }
    }

    /// The verdict's chain.
    pub fn chain(&self) -> Option<String> {
        match self {
            Data::GotoPick(n) => Some(format!("pick_{n}")),
            _ => None,
        }
    }

    /// The data of a verdict to `chain`, if it is one of ferry's pick chains.
    pub fn from_chain(chain: &str) -> Option<Data> {
        chain
            .strip_prefix("pick_")?
            .parse()
            .ok()
            .map(Data::GotoPick)
    }
}

/// One element of one of ferry's sets or maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub set: Set,
    pub key: Key,
    pub data: Option<Data>,
}

fn fields_match(v: &Values, def: &[Field]) -> bool {
    v.1 == def.len() && v.0[..v.1].iter().zip(def).all(|(v, f)| v.field() == *f)
}

impl Element {
    pub fn new(set: Set, key: Key, data: Option<Data>) -> Element {
        Element { set, key, data }
    }

    /// Whether the element has the shape its set's definition says.
    pub fn fits(&self) -> bool {
        let d = self.set.def();
        fields_match(&self.key.values(), d.key)
            && match (d.data, self.data) {
                (DataDef::None, None) => true,
                (DataDef::Fields(f), Some(data)) => fields_match(&data.values(), f),
                (DataDef::Verdict, Some(Data::GotoPick(_))) => true,
                _ => false,
            }
    }

    /// The element in nft syntax: `key` or `key : data`.
    pub fn text(&self, with_data: bool) -> String {
        let mut s = join(&self.key.values());
        if with_data && let Some(d) = self.data {
            s.push_str(" : ");
            match d.chain() {
                Some(chain) => s.push_str(&format!("goto {chain}")),
                None => s.push_str(&join(&d.values())),
            }
        }
        s
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.set.name(), self.text(true))
    }
}

fn join(v: &Values) -> String {
    v.0[..v.1]
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(" . ")
}

/// The kernel's layout of a concatenation: every field padded to four
/// bytes; addresses and ports in network order, marks and indexes in host
/// order. `None` for a prefix, which only exists as an interval's bounds.
pub fn encode(v: &Values) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(4 * 10);
    for value in &v.0[..v.1] {
        match *value {
            Value::Addr(IpAddr::V4(ip)) => pad(&mut out, &ip.octets()),
            Value::Addr(IpAddr::V6(ip)) => pad(&mut out, &ip.octets()),
            Value::Proto(p) => pad(&mut out, &[proto_number(p)]),
            Value::Port(p) => pad(&mut out, &p.to_be_bytes()),
            Value::Mark(m) | Value::Index(m) => pad(&mut out, &m.to_ne_bytes()),
            Value::Net(_) => return None,
        }
    }
    Some(out)
}

fn pad(out: &mut Vec<u8>, field: &[u8]) {
    ferry_sys::netlink::pad4(out, field)
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn protocol(n: u8) -> Option<Protocol> {
    match n {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

fn addr_len(family: Family) -> usize {
    match family {
        Family::V4 => 4,
        Family::V6 => 16,
    }
}

fn addr(family: Family, b: &[u8]) -> Option<IpAddr> {
    Some(match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?)),
    })
}

/// Decodes a concatenation of `fields` (a table of `family`). A `Net`
/// field decodes as its bound: a host prefix of the address.
pub fn decode(family: Family, fields: &[Field], bytes: &[u8]) -> Option<Values> {
    let mut out = [Value::Mark(0); 4];
    let mut at = 0;
    for (i, f) in fields.iter().enumerate() {
        let len = match f {
            Field::Addr | Field::Net => addr_len(family),
            Field::Proto => 1,
            Field::Port => 2,
            Field::Mark | Field::Index => 4,
        };
        let b = bytes.get(at..at + len)?;
        at += len.div_ceil(4) * 4;
        out[i] = match f {
            Field::Addr => Value::Addr(addr(family, b)?),
            Field::Net => {
                let a = addr(family, b)?;
                Value::Net(IpNet::new(a, if a.is_ipv4() { 32 } else { 128 }).ok()?)
            }
            Field::Proto => Value::Proto(protocol(b[0])?),
            Field::Port => Value::Port(u16::from_be_bytes(b.try_into().ok()?)),
            Field::Mark => Value::Mark(u32::from_ne_bytes(b.try_into().ok()?)),
            Field::Index => Value::Index(u32::from_ne_bytes(b.try_into().ok()?)),
        };
    }
    (at == bytes.len()).then_some((out, fields.len()))
}

/// The prefix covering exactly `first..=last`, if the range is one.
pub fn prefix(first: IpAddr, last: IpAddr) -> Option<IpNet> {
    let (a, b, bits) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    let span = b.checked_sub(a)?.checked_add(1);
    let host_bits = match span {
        None => 128,
        Some(s) if s.is_power_of_two() => s.trailing_zeros(),
        Some(_) => return None,
    };
    if host_bits > bits || (host_bits < 128 && a & ((1u128 << host_bits) - 1) != 0) {
        return None;
    }
    IpNet::new(first, (bits - host_bits) as u8).ok()
}

/// The first address after `net` (the exclusive end the kernel stores
/// for an interval), or `None` at the end of the address space.
pub fn after(net: IpNet) -> Option<IpAddr> {
    match net.broadcast() {
        IpAddr::V4(b) => u32::from(b)
            .checked_add(1)
            .map(|n| Ipv4Addr::from(n).into()),
        IpAddr::V6(b) => u128::from(b)
            .checked_add(1)
            .map(|n| Ipv6Addr::from(n).into()),
    }
}

/// The address before `ip` (to turn an exclusive end into an inclusive one).
pub fn before(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(a) => u32::from(a)
            .checked_sub(1)
            .map(|n| Ipv4Addr::from(n).into()),
        IpAddr::V6(a) => u128::from(a)
            .checked_sub(1)
            .map(|n| Ipv6Addr::from(n).into()),
    }
}

/// The last address of the family.
pub fn last_address(family: Family) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::BROADCAST.into(),
        Family::V6 => Ipv6Addr::from(u128::MAX).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenations_pad_every_field_to_four_bytes() {
        let ip: IpAddr = "10.96.0.1".parse().unwrap();
        assert_eq!(
            encode(&Key::Service(ip, Protocol::Tcp, 80).values()).unwrap(),
            vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(
            encode(&Data::Endpoint("10.0.0.2".parse().unwrap(), 8080).values()).unwrap(),
            vec![10, 0, 0, 2, 0x1f, 0x90, 0, 0]
        );
        assert_eq!(
            encode(&Key::Mark(0x1003).values()).unwrap(),
            0x1003u32.to_ne_bytes().to_vec()
        );
    }

    #[test]
    fn every_set_is_named_by_its_definition_and_found_by_its_name() {
        for set in Set::FIXED.into_iter().chain([Set::AffinitySlots(600)]) {
            assert_eq!(Set::from_name(&set.name()), Some(set));
        }
    }

    #[test]
    fn every_set_is_declared_in_the_table_by_its_definition() {
        let table = crate::nft::ruleset::table(Family::V4, &[1], &[600]);
        for set in Set::FIXED.into_iter().chain([Set::AffinitySlots(600)]) {
            assert!(
                table.contains(&format!("\t{}\n", set.declaration())),
                "{set:?}"
            );
        }
    }

    #[test]
    fn a_prefix_is_recovered_from_its_bounds() {
        let n: IpNet = "10.244.0.0/16".parse().unwrap();
        assert_eq!(prefix(n.network(), n.broadcast()), Some(n));
        assert_eq!(before(after(n).unwrap()), Some(n.broadcast()));
        let all: IpNet = "::/0".parse().unwrap();
        assert_eq!(prefix(all.network(), all.broadcast()), Some(all));
        assert_eq!(
            prefix("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()),
            None
        );
    }
}
