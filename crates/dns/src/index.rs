//! The name index: every name of the cluster zones, built from a
//! `ClusterState` off the hot path, with each RRset pre-encoded as answer
//! bytes whose owner is a pointer to the question name. A name is in the
//! index exactly when it exists (NOERROR, maybe NODATA); a cluster name not
//! in it is NXDOMAIN, which is how CoreDNS's kubernetes plugin decides.
//! Pod names (`a-b-c-d.<ns>.pod.<zone>`) are the exception: they are
//! answered on the fly from the name itself (`pods insecure`) or from the
//! index's Pod addresses (`pods verified`), as CoreDNS does. So are the
//! endpoint names of Services with a ClusterIP and reverse names, from the
//! state and the index's address owners (`addresses.rs`).
//!
//! The index follows change sets: each name keeps the parts its sources
//! gave it (`contrib`), so a change re-derives only the sources the change
//! set names, re-encodes only the names whose parts changed (and the names
//! that read them: SRV and NS additionals, CNAMEs inside the zones), and
//! shares everything else with the previous version through persistent
//! maps. [`Index::apply`] returns a new version; the old one stays whole
//! for the queries still reading it.
//!
//! Pure: no I/O, no clocks (the SOA serial is passed in).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ferry_model::{ChangeSet, ClusterState, Kind, Object};

use crate::addresses::{self, Owners};
use crate::contrib::{
    Ctx, Exposed, Part, Source, allowed, contribute, namespace_of, pod_addresses,
};
use crate::encode::{self, Parts};
use crate::wire::{self, TYPE_SOA, encode_name};
use crate::{Config, PodMode};

/// One configured zone.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    pub dotted: String,
    pub wire: Vec<u8>,
    pub labels: usize,
}

impl Zone {
    pub fn new(name: &str) -> Option<Zone> {
        let wire = encode_name(name)?;
        let dotted = wire::dotted(&wire).trim_end_matches('.').to_string();
        let labels = dotted.split('.').filter(|l| !l.is_empty()).count();
        Some(Zone {
            dotted,
            wire,
            labels,
        })
    }
}

/// One RRset of a name, ready to copy into an answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RrSet {
    pub rtype: u16,
    pub answer: Box<[u8]>,
    pub an: u16,
    pub additional: Box<[u8]>,
    pub ar: u16,
}

/// A name's CNAME (ExternalName Services).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cname {
    /// The CNAME record, owner = the question name.
    pub rr: Box<[u8]>,
    /// The target, when it lies outside the cluster zones and must be resolved upstream.
    pub outside: Option<Box<[u8]>>,
    /// Where a chain inside the zones reached a name the index does not
    /// hold: an endpoint name, answered per query (`addresses.rs`).
    pub unresolved: Option<Box<Unresolved>>,
}

/// The CNAME records of a chain up to a name the index does not hold, and that name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unresolved {
    /// The chain's CNAME records (the first owned by the question name).
    pub chain: Box<[u8]>,
    pub links: u16,
    /// The name the chain ends at, wire form.
    pub target: Box<[u8]>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Node {
    pub sets: Box<[RrSet]>,
    /// Boxed: rare (ExternalName Services), and every name has a node.
    pub cname: Option<Box<Cname>>,
}

impl Node {
    pub fn set(&self, rtype: u16) -> Option<&RrSet> {
        self.sets.iter().find(|s| s.rtype == rtype)
    }
}

/// A name in wire form, lowercase; cheap to clone, as persistent maps do.
type Name = Arc<[u8]>;

/// One name: what queries read, and what it was made from.
struct Slot {
    node: Node,
    /// Never empty: a name with no part does not exist. One allocation
    /// for all of them, shared by the next version when they do not change
    /// (measured at issue 13's target case: an `Arc` per part, the spare
    /// capacity of record vectors and new names for each Pod source cost
    /// 55 MiB of 268).
    parts: Arc<[(Source, Part)]>,
    /// Other names whose records `node` holds.
    reads: Box<[Name]>,
}

#[derive(Clone)]
pub(crate) struct Index {
    names: imbl::OrdMap<Name, Arc<Slot>>,
    /// For each name, the other names whose nodes hold its records.
    readers: imbl::OrdMap<Name, Arc<[Name]>>,
    /// Existing namespaces (lowercase), with how many objects make them exist.
    namespaces: imbl::OrdMap<Box<[u8]>, u32>,
    /// Existing namespaces whose names are served.
    exposed: Exposed,
    /// `pods verified`: each Pod address (namespace lowercase, IP) with how
    /// many Pods have it. Pod names are answered from it on the fly
    /// (`answer.rs`), as CoreDNS answers them from its Pod cache, instead
    /// of holding a name each (100,000 Pods cost about 40 MiB as names).
    pod_ips: imbl::OrdMap<(Arc<str>, IpAddr), u32>,
    /// Which Services have each address: endpoint names of Services with
    /// a ClusterIP and reverse names are answered from it and the state
    /// on the fly (`addresses.rs`), not held as names.
    owners: Owners,
    /// The state this version was built from.
    state: ClusterState,
    /// SOA RDATA per zone (config order); the owner is written per answer.
    soa: Arc<[Box<[u8]>]>,
    soa_ttl: u32,
    ttl: u32,
    pods: PodMode,
}

impl Index {
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.names.get(name).map(|s| &s.node)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn soa(&self, zone: usize) -> (&[u8], u32) {
        (self.soa.get(zone).map_or(&[][..], |s| s), self.soa_ttl)
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    pub fn pods(&self) -> PodMode {
        self.pods
    }

    pub fn namespace_exposed(&self, ns: &[u8]) -> bool {
        self.exposed.contains(ns)
    }

    /// `pods verified`: a Pod in namespace `ns` (lowercase) has address `ip`.
    pub fn pod_exists(&self, ns: &[u8], ip: IpAddr) -> bool {
        std::str::from_utf8(ns).is_ok_and(|ns| self.pod_ips.contains_key(&(Arc::from(ns), ip)))
    }

    fn count_pod(&mut self, pod: Option<&Object>, up: bool) {
        for key in pod.map(pod_addresses).unwrap_or_default() {
            let n = self.pod_ips.get(&key).copied().unwrap_or(0);
            let n = if up { n + 1 } else { n.saturating_sub(1) };
            if n == 0 {
                self.pod_ips.remove(&key);
            } else {
                self.pod_ips.insert(key, n);
            }
        }
    }

    /// The addresses of an endpoint name of a Service with a ClusterIP
    /// (`depth` labels before its zone); empty when it is not one.
    pub fn endpoint_addresses(&self, name: &wire::Name, depth: usize) -> Vec<IpAddr> {
        if depth != 4 || name.label(3) != b"svc" {
            return Vec::new();
        }
        addresses::endpoint_addresses(
            &self.state,
            &self.exposed,
            [name.label(0), name.label(1), name.label(2)],
        )
    }

    /// The addresses of `name` (wire form) when it is an endpoint name of a
    /// Service with a ClusterIP in one of `zones`.
    pub fn endpoint_addresses_of(&self, name: &[u8], zones: &[Zone]) -> Vec<IpAddr> {
        let labels = wire::labels(name);
        let Some(zone) = zones
            .iter()
            .filter(|z| name.ends_with(&z.wire) && labels.len() >= z.labels)
            .max_by_key(|z| z.labels)
        else {
            return Vec::new();
        };
        match labels[..labels.len() - zone.labels] {
            [label, service, namespace, b"svc"] => addresses::endpoint_addresses(
                &self.state,
                &self.exposed,
                [label, service, namespace],
            ),
            _ => Vec::new(),
        }
    }

    /// The PTR targets of a reverse name, in the zone `zone` (dotted);
    /// None when it is not the reverse name of an address some served
    /// Service has.
    pub fn reverse_targets(&self, name: &wire::Name, zone: &str) -> Option<Vec<Vec<u8>>> {
        let ip = addresses::reverse_address(name)?;
        let targets =
            addresses::reverse_targets(&self.state, &self.exposed, &self.owners, ip, zone);
        (!targets.is_empty()).then_some(targets)
    }

    /// The state version this index was built from.
    pub fn version(&self) -> u64 {
        self.state.version()
    }

    /// The state this index was built from.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Builds the index of `state` for `config`'s zones.
    pub fn build(state: &ClusterState, config: &Config, zones: &[Zone], serial: u32) -> Index {
        let mut index = Index {
            names: imbl::OrdMap::new(),
            readers: imbl::OrdMap::new(),
            namespaces: imbl::OrdMap::new(),
            exposed: Exposed::new(),
            pod_ips: imbl::OrdMap::new(),
            owners: Owners::new(),
            state: state.clone(),
            soa: soa(zones, serial, config.ttl),
            soa_ttl: config.ttl.min(300),
            ttl: config.ttl,
            pods: config.pods,
        };
        for kind in [Kind::Namespace, Kind::Service, Kind::Pod] {
            for o in state.objects_of(kind) {
                if let Some(ns) = namespace_of(o) {
                    *index.namespaces.entry(ns).or_default() += 1;
                }
            }
        }
        let mut sources = BTreeSet::from([Source::Zones]);
        for ns in index.namespaces.keys() {
            if allowed(config, ns) {
                index.exposed.insert(ns.clone());
                sources.insert(Source::Namespace(ns.clone()));
            }
        }
        sources.extend(state.services().map(|s| Source::Service(s.name.clone())));
        // Both sets are filled in `packing`'s order: their nodes end up full.
        let mut owned: Vec<_> = state
            .services()
            .flat_map(|svc| {
                let name = Arc::new(svc.name.clone());
                addresses::addresses_of(svc).map(move |ip| (ip, name.clone()))
            })
            .collect();
        owned.sort_unstable();
        owned.dedup();
        index
            .owners
            .extend(ferry_model::packing::insertion_order(owned));
        if config.pods == PodMode::Verified {
            let mut counts: BTreeMap<(Arc<str>, IpAddr), u32> = BTreeMap::new();
            for pod in state.objects_of(Kind::Pod) {
                for key in pod_addresses(pod) {
                    *counts.entry(key).or_default() += 1;
                }
            }
            let counts: Vec<_> = counts.into_iter().collect();
            index
                .pod_ips
                .extend(ferry_model::packing::insertion_order(counts));
        }
        let ctx = Ctx { config, zones };
        index.change(&sources, None, &ctx);
        index
    }

    /// The index of `state`, given `changes` from the state this index was
    /// built from. Returns the new version and how many names it re-encoded;
    /// `self` is untouched.
    pub fn apply(
        &self,
        state: &ClusterState,
        changes: &ChangeSet,
        config: &Config,
        zones: &[Zone],
        serial: u32,
    ) -> (Index, usize) {
        let mut next = self.clone();
        next.state = state.clone();
        next.soa = soa(zones, serial, config.ttl);
        let verified = config.pods == PodMode::Verified;
        let mut sources = BTreeSet::new();
        let mut counted = BTreeSet::new();
        for key in &changes.objects {
            if !matches!(key.kind, Kind::Namespace | Kind::Service | Kind::Pod) {
                continue;
            }
            let old = self.state.get(key).and_then(namespace_of);
            let new = state.get(key).and_then(namespace_of);
            if old != new {
                if let Some(ns) = old {
                    next.count(&ns, false);
                    counted.insert(ns);
                }
                if let Some(ns) = new {
                    next.count(&ns, true);
                    counted.insert(ns);
                }
            }
            if key.kind == Kind::Pod && verified {
                next.count_pod(self.state.get(key), false);
                next.count_pod(state.get(key), true);
            }
        }
        for ns in counted {
            let now = next.namespaces.contains_key(&ns) && allowed(config, &ns);
            if now == self.exposed.contains(&ns) {
                continue;
            }
            if now {
                next.exposed.insert(ns.clone());
            } else {
                next.exposed.remove(&ns);
            }
            // Only the namespace's own names follow: a Service or Pod in
            // it makes it exist, so their exposure cannot change while
            // they do not (a Service named in another case than its
            // namespace's lowercase name is never served either way).
            sources.insert(Source::Namespace(ns));
        }
        for name in &changes.services {
            let (old, new) = (self.state.service(name), state.service(name));
            if old != new {
                if let Some(svc) = old {
                    addresses::own(&mut next.owners, svc, false);
                }
                if let Some(svc) = new {
                    addresses::own(&mut next.owners, svc, true);
                }
            }
        }
        sources.extend(changes.services.iter().cloned().map(Source::Service));
        let ctx = Ctx { config, zones };
        let encoded = next.change(&sources, Some((&self.state, &self.exposed)), &ctx);
        (next, encoded)
    }

    fn count(&mut self, ns: &[u8], up: bool) {
        let n = self.namespaces.get(ns).copied().unwrap_or(0);
        let n = if up { n + 1 } else { n.saturating_sub(1) };
        if n == 0 {
            self.namespaces.remove(ns);
        } else {
            self.namespaces.insert(ns.into(), n);
        }
    }

    /// Re-derives `sources` (their parts in `old`, the state and exposed
    /// namespaces before, or none for a new index, against those in
    /// `self.state`) and re-encodes every name whose parts changed, with
    /// the names that read it. Returns how many names were encoded.
    fn change(
        &mut self,
        sources: &BTreeSet<Source>,
        old: Option<(&ClusterState, &Exposed)>,
        ctx: &Ctx<'_>,
    ) -> usize {
        // The new parts of every name whose parts change.
        let mut staged = Staged::new();
        for source in sources {
            let before = old
                .map(|(state, exposed)| contribute(source, state, exposed, ctx))
                .unwrap_or_default();
            let after = contribute(source, &self.state, &self.exposed, ctx);
            for name in before.keys() {
                if !after.contains_key(name) {
                    let parts = stage(&mut staged, &self.names, name);
                    if let Ok(i) = parts.binary_search_by(|(s, _)| s.cmp(source)) {
                        parts.remove(i);
                    }
                }
            }
            for (name, mut part) in after {
                if before.get(&name) == Some(&part) {
                    continue;
                }
                part.recs.shrink_to_fit();
                let parts = stage(&mut staged, &self.names, &name);
                match parts.binary_search_by(|(s, _)| s.cmp(source)) {
                    Ok(i) => parts[i].1 = part,
                    Err(i) => parts.insert(i, (source.clone(), part)),
                }
            }
        }
        let mut dirty: BTreeSet<Name> = staged.keys().cloned().collect();
        for name in staged.keys() {
            if let Some(r) = self.readers.get(name) {
                dirty.extend(r.iter().cloned());
            }
        }
        let lookup = |name: &[u8]| -> Option<&Parts> {
            match staged.get(name) {
                Some(p) => Some(p).filter(|p| !p.is_empty()).map(|p| &p[..]),
                None => self.names.get(name).map(|s| &s.parts[..]),
            }
        };
        let mut nodes = Vec::with_capacity(dirty.len());
        for name in &dirty {
            nodes.push(
                lookup(name)
                    .map(|parts| encode::node(name, parts, ctx.config.ttl, ctx.zones, &lookup)),
            );
        }
        let slots: Vec<Option<Slot>> = dirty
            .iter()
            .zip(nodes)
            .map(|(name, node)| {
                let (node, reads) = node?;
                let parts = match staged.remove(name) {
                    Some(staged) => Arc::from(staged),
                    None => self.names.get(name)?.parts.clone(),
                };
                Some(Slot {
                    node,
                    parts,
                    reads: reads.into_iter().map(Name::from).collect(),
                })
            })
            .collect();
        let encoded = dirty.len();
        let mut slots: Vec<(Name, Option<Slot>)> = dirty.into_iter().zip(slots).collect();
        for (name, slot) in &slots {
            let before = self.names.get(name).map(|s| s.reads.clone());
            let after = slot.as_ref().map(|s| s.reads.clone());
            self.reread(
                name,
                before.as_deref().unwrap_or(&[]),
                after.as_deref().unwrap_or(&[]),
            );
        }
        if slots.len() >= ferry_model::packing::PACKED_BATCH {
            slots = ferry_model::packing::insertion_order(slots);
        }
        for (name, slot) in slots {
            match slot {
                Some(s) => {
                    self.names.insert(name, Arc::new(s));
                }
                None => {
                    self.names.remove(&name);
                }
            }
        }
        encoded
    }

    /// Records that `reader` now reads `after` instead of `before`.
    fn reread(&mut self, reader: &Name, before: &[Name], after: &[Name]) {
        for t in before.iter().filter(|t| !after.contains(t)) {
            let Some(rs) = self.readers.get(t) else {
                continue;
            };
            let rest: Vec<Name> = rs.iter().filter(|r| *r != reader).cloned().collect();
            if rest.is_empty() {
                self.readers.remove(t);
            } else {
                self.readers.insert(t.clone(), rest.into());
            }
        }
        for t in after.iter().filter(|t| !before.contains(t)) {
            let mut rs: Vec<Name> = self.readers.get(t).map(|r| r.to_vec()).unwrap_or_default();
            rs.push(reader.clone());
            self.readers.insert(t.clone(), rs.into());
        }
    }
}

type Staged = HashMap<Name, Vec<(Source, Part)>>;

/// The staged parts of `name`, starting from its parts in `names`.
fn stage<'s>(
    staged: &'s mut Staged,
    names: &imbl::OrdMap<Name, Arc<Slot>>,
    name: &[u8],
) -> &'s mut Vec<(Source, Part)> {
    if !staged.contains_key(name) {
        let parts = names
            .get(name)
            .map(|s| s.parts.to_vec())
            .unwrap_or_default();
        staged.insert(name.into(), parts);
    }
    staged
        .get_mut(name)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

fn soa(zones: &[Zone], serial: u32, ttl: u32) -> Arc<[Box<[u8]>]> {
    zones
        .iter()
        .map(|z| soa_rdata(z, serial, ttl).into_boxed_slice())
        .collect()
}

fn soa_rdata(zone: &Zone, serial: u32, ttl: u32) -> Vec<u8> {
    let mut r = encode_name(&format!("ns.dns.{}", zone.dotted)).unwrap_or_else(|| vec![0]);
    r.extend(encode_name(&format!("hostmaster.{}", zone.dotted)).unwrap_or_else(|| vec![0]));
    for v in [serial, 7200, 1800, 86400, ttl] {
        r.extend_from_slice(&v.to_be_bytes());
    }
    r
}

/// The SOA record for a negative answer or the apex, owner given.
pub(crate) fn push_soa(out: &mut Vec<u8>, owner: &[u8], rdata: &[u8], ttl: u32) {
    wire::push_rr(out, owner, TYPE_SOA, ttl, rdata);
}

#[cfg(test)]
mod tests;
