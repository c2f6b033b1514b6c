//! Property: every set's elements survive the kernel's byte layout. An
//! element encoded as netlink carries it (intervals as their start and
//! end elements, or a key end) decodes to the very element, for every set
//! and map of the table, in both families. Pure; no kernel (the kernel
//! itself is checked in `read_back.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferry_model::Protocol;
use ferry_proxy::Family;
use ferry_proxy::nft::netlink::{decode_elements, raw_elements};
use ferry_proxy::nft::sets::{Data, DataDef, Element, Field, Key, Set, Value};
use ipnet::IpNet;
use proptest::prelude::*;

fn address(family: Family) -> BoxedStrategy<IpAddr> {
    match family {
        Family::V4 => any::<u32>()
            .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .boxed(),
        Family::V6 => any::<u128>()
            .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
            .boxed(),
    }
}

fn value(family: Family, field: Field) -> BoxedStrategy<Value> {
    match field {
        Field::Addr => address(family).prop_map(Value::Addr).boxed(),
        Field::Proto => prop_oneof![
            Just(Protocol::Tcp),
            Just(Protocol::Udp),
            Just(Protocol::Sctp)
        ]
        .prop_map(Value::Proto)
        .boxed(),
        Field::Port => any::<u16>().prop_map(Value::Port).boxed(),
        Field::Mark => any::<u32>().prop_map(Value::Mark).boxed(),
        Field::Index => any::<u32>().prop_map(Value::Index).boxed(),
        Field::Net => {
            let bits: u8 = if family == Family::V4 { 32 } else { 128 };
            (address(family), 0..=bits)
                .prop_map(|(a, len)| Value::Net(IpNet::new(a, len).unwrap().trunc()))
                .boxed()
        }
    }
}

fn values(family: Family, fields: &[Field]) -> BoxedStrategy<Vec<Value>> {
    fields
        .iter()
        .map(|f| value(family, *f))
        .collect::<Vec<_>>()
        .boxed()
}

/// Any element of `set` (a table of `family`).
fn element(family: Family, set: Set) -> BoxedStrategy<Element> {
    let def = set.def();
    let data: BoxedStrategy<Option<Data>> = match def.data {
        DataDef::None => Just(None).boxed(),
        DataDef::Verdict => (1..4096u32).prop_map(|n| Some(Data::GotoPick(n))).boxed(),
        DataDef::Fields(f) => values(family, f)
            .prop_map(|v| Some(Data::from_values(&v).expect("a data shape")))
            .boxed(),
    };
    (values(family, def.key), data)
        .prop_map(move |(key, data)| {
            Element::new(set, Key::from_values(&key).expect("a key shape"), data)
        })
        .boxed()
}

fn any_set() -> impl Strategy<Value = Set> {
    prop_oneof![
        proptest::sample::select(Set::FIXED.to_vec()),
        (1..100_000u32).prop_map(Set::AffinitySlots),
    ]
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::V4), Just(Family::V6)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_sets_elements_decode_to_what_was_encoded(
        (family, e) in (family(), any_set())
            .prop_flat_map(|(family, set)| (Just(family), element(family, set)))
    ) {
        prop_assert!(e.fits(), "{e}");
        let raw = raw_elements(&e).expect("an element of its set's shape encodes");
        let decoded = decode_elements(family, e.set, &raw)
            .unwrap_or_else(|why| panic!("{e}: {why}"));
        prop_assert_eq!(decoded, vec![e]);
    }
}

#[test]
fn an_element_of_another_sets_shape_does_not_encode() {
    let e = Element::new(Set::ClusterIps, Key::Mark(1), Some(Data::Mark(1)));
    assert!(!e.fits());
    assert!(raw_elements(&e).is_none());
}
