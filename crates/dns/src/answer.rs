//! What to answer a parsed query with: an authoritative answer from the
//! index (positive, NODATA, NXDOMAIN, SERVFAIL before the first state,
//! REFUSED for zone transfers), or "not ours" (forward), or "CNAME to an
//! outside name" (resolve the target upstream, then [`chased_answer`]).
//!
//! Pure: the index and the query in, answer bytes out.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::Record;

use crate::PodMode;
use crate::index::{Index, Node, Unresolved, Zone, push_soa};
use crate::names::{dashed, undashed};
use crate::wire::{
    self, QNAME, Query, Rcode, TYPE_A, TYPE_AAAA, TYPE_AXFR, TYPE_CNAME, TYPE_IXFR, TYPE_PTR,
    TYPE_SOA, begin, push_rr, set_counts,
};

pub(crate) enum Outcome {
    /// `out` holds the whole answer.
    Answered,
    /// Not a cluster name: forward it upstream.
    Forward,
    /// An ExternalName pointing outside the cluster zones: answer the CNAME
    /// followed by the target's records from upstream.
    Chase {
        target: Box<[u8]>,
        cname_rr: Box<[u8]>,
    },
}

/// Which configured zone holds the name (the longest), and how many labels
/// precede it.
pub(crate) fn find_zone(q: &Query<'_>, zones: &[Zone]) -> Option<(usize, usize)> {
    let labels = q.name.label_count();
    zones
        .iter()
        .enumerate()
        .filter(|(_, z)| {
            labels >= z.labels && q.name.suffix(labels - z.labels) == z.wire.as_slice()
        })
        .max_by_key(|(_, z)| z.labels)
        .map(|(i, z)| (i, labels - z.labels))
}

pub(crate) fn answer(
    q: &Query<'_>,
    index: Option<&Index>,
    zones: &[Zone],
    out: &mut Vec<u8>,
) -> Outcome {
    if matches!(q.qtype, TYPE_AXFR | TYPE_IXFR) {
        begin(out, q, Rcode::Refused, false);
        return finish(q, out, 0, 0, 0);
    }
    let zone = find_zone(q, zones);
    let Some(index) = index else {
        if zone.is_none() {
            return Outcome::Forward;
        }
        // CoreDNS: SERVFAIL for cluster names until the first sync.
        begin(out, q, Rcode::ServFail, false);
        return finish(q, out, 0, 0, 0);
    };
    if q.qclass != wire::CLASS_IN {
        if zone.is_none() {
            return Outcome::Forward;
        }
        begin(out, q, Rcode::Refused, false);
        return finish(q, out, 0, 0, 0);
    }
    if let Some(node) = index.get(q.name.wire()) {
        return positive(q, index, zones, node, zone, out);
    }
    if let Some(primary) = zones.first()
        && let Some(targets) = index.reverse_targets(&q.name, &primary.dotted)
    {
        begin(out, q, Rcode::NoError, true);
        if q.qtype != TYPE_PTR {
            return negative(q, index, zone, out);
        }
        for t in &targets {
            push_rr(out, &QNAME, TYPE_PTR, index.ttl(), t);
        }
        return finish(q, out, targets.len(), 0, 0);
    }
    let Some((zi, depth)) = zone else {
        // Reverse names not in the index, and every other name: upstream
        // (CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).
        return Outcome::Forward;
    };
    if let Some(ip) = pod_address(q, index, depth) {
        let rtype = if ip.is_ipv4() { TYPE_A } else { TYPE_AAAA };
        begin(out, q, Rcode::NoError, true);
        if rtype == q.qtype {
            let rdata = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            push_rr(out, &QNAME, rtype, index.ttl(), &rdata);
            return finish(q, out, 1, 0, 0);
        }
        return negative(q, index, Some((zi, depth)), out);
    }
    let ips = index.endpoint_addresses(&q.name, depth);
    if !ips.is_empty() {
        begin(out, q, Rcode::NoError, true);
        let mut an = 0;
        for ip in ips {
            match ip {
                IpAddr::V4(v4) if q.qtype == TYPE_A => {
                    push_rr(out, &QNAME, TYPE_A, index.ttl(), &v4.octets());
                }
                IpAddr::V6(v6) if q.qtype == TYPE_AAAA => {
                    push_rr(out, &QNAME, TYPE_AAAA, index.ttl(), &v6.octets());
                }
                _ => continue,
            }
            an += 1;
        }
        if an == 0 {
            return negative(q, index, zone, out);
        }
        return finish(q, out, an, 0, 0);
    }
    begin(out, q, Rcode::NxDomain, true);
    negative(q, index, zone, out)
}

/// `a-b-c-d.<ns>.pod.<zone>` when the namespace exists: with `pods
/// insecure` the address in the name; with `pods verified` only when a
/// Pod of that namespace has the address, and the name is the address's
/// own dashed form (as CoreDNS answers both from its Pod cache).
fn pod_address(q: &Query<'_>, index: &Index, depth: usize) -> Option<IpAddr> {
    if depth != 3 || q.name.label(2) != b"pod" {
        return None;
    }
    let ns = q.name.label(1);
    if index.pods() == PodMode::Disabled || !index.namespace_exposed(ns) {
        return None;
    }
    let ip = undashed(q.name.label(0))?;
    match index.pods() {
        PodMode::Insecure => Some(ip),
        PodMode::Verified => {
            (dashed(ip).as_bytes() == q.name.label(0) && index.pod_exists(ns, ip)).then_some(ip)
        }
        PodMode::Disabled => None,
    }
}

/// A CNAME chain inside the zones that ends at an endpoint name answered
/// per query: the chain, then the endpoint's addresses of the asked type
/// (owner written out). `None` when it has none of that type.
fn chain_to_endpoint(
    q: &Query<'_>,
    index: &Index,
    zones: &[Zone],
    end: &Unresolved,
    out: &mut Vec<u8>,
) -> Option<usize> {
    let records: Vec<(u16, Vec<u8>)> = index
        .endpoint_addresses_of(&end.target, zones)
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if q.qtype == TYPE_A => Some((TYPE_A, v4.octets().to_vec())),
            IpAddr::V6(v6) if q.qtype == TYPE_AAAA => Some((TYPE_AAAA, v6.octets().to_vec())),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        return None;
    }
    out.extend_from_slice(&end.chain);
    for (rtype, rdata) in &records {
        push_rr(out, &end.target, *rtype, index.ttl(), rdata);
    }
    Some(end.links as usize + records.len())
}

fn positive(
    q: &Query<'_>,
    index: &Index,
    zones: &[Zone],
    node: &Node,
    zone: Option<(usize, usize)>,
    out: &mut Vec<u8>,
) -> Outcome {
    begin(out, q, Rcode::NoError, true);
    if let Some(set) = node.set(q.qtype) {
        out.extend_from_slice(&set.answer);
        out.extend_from_slice(&set.additional);
        return finish(q, out, set.an as usize, 0, set.ar as usize);
    }
    if let Some(c) = &node.cname {
        if q.qtype != TYPE_CNAME
            && let Some(target) = &c.outside
        {
            return Outcome::Chase {
                target: target.clone(),
                cname_rr: c.rr.clone(),
            };
        }
        if q.qtype != TYPE_CNAME
            && let Some(end) = &c.unresolved
            && let Some(an) = chain_to_endpoint(q, index, zones, end, out)
        {
            return finish(q, out, an, 0, 0);
        }
        out.extend_from_slice(&c.rr);
        return finish(q, out, 1, 0, 0);
    }
    if q.qtype == TYPE_SOA
        && let Some((zi, 0)) = zone
    {
        let (rdata, ttl) = index.soa(zi);
        push_soa(out, &QNAME, rdata, ttl);
        return finish(q, out, 1, 0, 0);
    }
    negative(q, index, zone, out)
}

/// NODATA or NXDOMAIN (the header is written): the zone's SOA in the
/// authority section, its owner pointing into the question so the case echoes.
fn negative(
    q: &Query<'_>,
    index: &Index,
    zone: Option<(usize, usize)>,
    out: &mut Vec<u8>,
) -> Outcome {
    let Some((zi, depth)) = zone else {
        return finish(q, out, 0, 0, 0);
    };
    let (rdata, ttl) = index.soa(zi);
    let owner = wire::pointer(12 + q.name.suffix_offset(depth));
    push_soa(out, &owner, rdata, ttl);
    finish(q, out, 0, 1, 0)
}

fn finish(q: &Query<'_>, out: &mut Vec<u8>, an: usize, ns: usize, ar: usize) -> Outcome {
    set_counts(out, an, ns, ar);
    if q.edns.is_some() {
        wire::push_opt(out);
    }
    Outcome::Answered
}

/// The answer for an ExternalName whose target is outside the zones: the
/// CNAME, then the records upstream gave for the target, with upstream's
/// rcode. Goes through hickory-proto, since upstream's records may be
/// compressed against its own message; this is not the hot path.
pub(crate) fn chased_answer(
    query: &[u8],
    cname_rr: &[u8],
    upstream: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let q = wire::parse_query(query).ok()?;
    // The CNAME record alone, as a message hickory can read.
    let mut own = Vec::new();
    begin(&mut own, &q, Rcode::NoError, true);
    own.extend_from_slice(cname_rr);
    set_counts(&mut own, 1, 0, 0);
    let mut msg = Message::from_vec(&own).ok()?;
    msg.set_message_type(MessageType::Response);
    match upstream.and_then(|u| Message::from_vec(u).ok()) {
        Some(up) => {
            msg.set_response_code(up.response_code());
            let answers: Vec<Record> = up.answers().to_vec();
            msg.add_answers(answers);
        }
        None => {
            msg.set_response_code(ResponseCode::ServFail);
        }
    }
    if q.edns.is_some() {
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(wire::EDNS_UDP_LIMIT);
        msg.set_edns(edns);
    }
    msg.to_vec().ok()
}
