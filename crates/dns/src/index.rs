//! The name index: every name of the cluster zones, built from a
//! `ClusterState` off the hot path, with each RRset pre-encoded as answer
//! bytes whose owner is a pointer to the question name. A name is in the
//! index exactly when it exists (NOERROR, maybe NODATA); a cluster name not
//! in it is NXDOMAIN, which is how CoreDNS's kubernetes plugin decides.
//!
//! Pure: no I/O, no clocks (the SOA serial is passed in).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ferry_model::{ClusterState, Kind, Object, ServiceType, ServiceView};

use crate::names::{dashed, reverse};
use crate::wire::{
    self, QNAME, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT,
    encode_name,
};
use crate::{Config, PodMode};

/// The schema version of the Kubernetes DNS specification ferry follows.
const SCHEMA_VERSION: &str = "1.1.0";
/// CoreDNS hard-codes this TTL for `dns-version`.
const SCHEMA_TTL: u32 = 28800;
/// How many CNAMEs inside the cluster zones are followed.
const MAX_CHAIN: usize = 8;

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
pub(crate) struct RrSet {
    pub rtype: u16,
    pub answer: Box<[u8]>,
    pub an: u16,
    pub additional: Box<[u8]>,
    pub ar: u16,
}

/// A name's CNAME (ExternalName Services).
pub(crate) struct Cname {
    /// The CNAME record, owner = the question name.
    pub rr: Box<[u8]>,
    /// The target, when it lies outside the cluster zones and must be resolved upstream.
    pub outside: Option<Box<[u8]>>,
}

#[derive(Default)]
pub(crate) struct Node {
    pub sets: Box<[RrSet]>,
    pub cname: Option<Cname>,
}

impl Node {
    pub fn set(&self, rtype: u16) -> Option<&RrSet> {
        self.sets.iter().find(|s| s.rtype == rtype)
    }
}

pub(crate) struct Index {
    names: HashMap<Box<[u8]>, Node>,
    /// SOA RDATA per zone (config order); the owner is written per answer.
    soa: Vec<Box<[u8]>>,
    soa_ttl: u32,
    ttl: u32,
    pods: PodMode,
    /// Namespaces whose names are served (lowercase).
    exposed: HashSet<Box<[u8]>>,
}

impl Index {
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.names.get(name)
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

    /// Builds the index of `state` for `config`'s zones.
    pub fn build(state: &ClusterState, config: &Config, zones: &[Zone], serial: u32) -> Index {
        let mut b = Builder {
            names: HashMap::new(),
            ttl: config.ttl,
        };
        let exposed = exposed_namespaces(state, config);
        let ttl = config.ttl;
        for (zi, zone) in zones.iter().enumerate() {
            b.zone_apex(zone, config, ttl);
            for ns in &exposed {
                b.touch(&format!("{ns}.svc.{}", zone.dotted));
                if config.pods != PodMode::Disabled {
                    b.touch(&format!("{ns}.pod.{}", zone.dotted));
                }
            }
            for svc in state.services() {
                if exposed.contains(svc.name.namespace.as_ref()) {
                    b.service(svc, zone, zi == 0, ttl);
                }
            }
            if config.pods == PodMode::Verified {
                b.pods(state, &exposed, zone, ttl);
            }
        }
        let soa = zones
            .iter()
            .map(|z| soa_rdata(z, serial, ttl).into_boxed_slice())
            .collect();
        let names = b.finish(zones);
        Index {
            names,
            soa,
            soa_ttl: ttl.min(300),
            ttl,
            pods: config.pods,
            exposed: exposed
                .iter()
                .map(|n| n.to_ascii_lowercase().into_bytes().into_boxed_slice())
                .collect(),
        }
    }
}

/// Namespaces that exist (a Namespace object, or a Service or Pod in them:
/// the manifests source does not require Namespace objects) and that the
/// configuration exposes.
fn exposed_namespaces(state: &ClusterState, config: &Config) -> HashSet<String> {
    let mut out = HashSet::new();
    for o in state.objects_of(Kind::Namespace) {
        if let Some(n) = &o.metadata().name {
            out.insert(n.to_ascii_lowercase());
        }
    }
    for kind in [Kind::Service, Kind::Pod] {
        for o in state.objects_of(kind) {
            if let Some(n) = &o.metadata().namespace {
                out.insert(n.to_ascii_lowercase());
            }
        }
    }
    if let Some(allowed) = &config.namespaces {
        out.retain(|n| allowed.iter().any(|a| a.eq_ignore_ascii_case(n)));
    }
    out
}

fn soa_rdata(zone: &Zone, serial: u32, ttl: u32) -> Vec<u8> {
    let mut r = encode_name(&format!("ns.dns.{}", zone.dotted)).unwrap_or_else(|| vec![0]);
    r.extend(encode_name(&format!("hostmaster.{}", zone.dotted)).unwrap_or_else(|| vec![0]));
    for v in [serial, 7200, 1800, 86400, ttl] {
        r.extend_from_slice(&v.to_be_bytes());
    }
    r
}

fn address_rr(ip: IpAddr) -> (u16, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
        IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
    }
}

fn srv_rdata(weight: u16, port: u16, target: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(6 + target.len());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&weight.to_be_bytes());
    r.extend_from_slice(&port.to_be_bytes());
    r.extend_from_slice(target);
    r
}

/// CoreDNS's SRV weight: 100 split evenly over the records of one priority,
/// counted before identical records are merged.
fn srv_weight(records: usize) -> u16 {
    (100 / records.max(1)).max(1) as u16
}

struct Rec {
    rtype: u16,
    ttl: u32,
    rdata: Vec<u8>,
}

#[derive(Default)]
struct BNode {
    recs: Vec<Rec>,
    cname: Option<Vec<u8>>,
    /// Additional records for the apex NS answer (glue).
    glue: bool,
}

struct Builder {
    names: HashMap<Vec<u8>, BNode>,
    ttl: u32,
}

impl Builder {
    fn node(&mut self, name: &[u8]) -> &mut BNode {
        if !self.names.contains_key(name) {
            self.names.insert(name.to_vec(), BNode::default());
        }
        self.names
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Makes `name` exist without records (NODATA for every type).
    fn touch(&mut self, name: &str) {
        if let Some(w) = encode_name(name) {
            self.node(&w);
        }
    }

    fn add(&mut self, name: &[u8], rtype: u16, ttl: u32, rdata: Vec<u8>) {
        self.node(name).recs.push(Rec { rtype, ttl, rdata });
    }

    fn zone_apex(&mut self, zone: &Zone, config: &Config, ttl: u32) {
        let ns = encode_name(&format!("ns.dns.{}", zone.dotted)).unwrap_or_else(|| vec![0]);
        let apex = self.node(&zone.wire);
        apex.recs.push(Rec {
            rtype: TYPE_NS,
            ttl,
            rdata: ns.clone(),
        });
        apex.glue = true;
        for ip in &config.nameserver_ips {
            let (t, r) = address_rr(*ip);
            self.add(&ns, t, ttl, r);
        }
        self.node(&ns);
        if let Some(v) = encode_name(&format!("dns-version.{}", zone.dotted)) {
            let mut txt = vec![SCHEMA_VERSION.len() as u8];
            txt.extend_from_slice(SCHEMA_VERSION.as_bytes());
            self.add(&v, TYPE_TXT, SCHEMA_TTL, txt);
        }
        self.touch(&format!("svc.{}", zone.dotted));
        self.touch(&format!("pod.{}", zone.dotted));
    }

    fn service(&mut self, svc: &ServiceView, zone: &Zone, primary: bool, ttl: u32) {
        let fqdn = format!(
            "{}.{}.svc.{}",
            svc.name.name, svc.name.namespace, zone.dotted
        );
        let Some(name) = encode_name(&fqdn) else {
            return;
        };
        if svc.service_type == ServiceType::ExternalName {
            let Some(target) = svc.external_name.as_deref() else {
                return;
            };
            // CoreDNS does not serve an ExternalName that is an IP address.
            if target.trim_end_matches('.').parse::<IpAddr>().is_ok() {
                return;
            }
            if let Some(t) = encode_name(target) {
                self.node(&name).cname = Some(t);
            }
            return;
        }
        let ready: Vec<_> = svc
            .addresses
            .iter()
            .filter(|a| a.ready || svc.publish_not_ready_addresses)
            .map(|a| {
                let label = a
                    .hostname
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| dashed(a.ip));
                (a.ip, encode_name(&format!("{label}.{fqdn}")))
            })
            .filter_map(|(ip, n)| Some((ip, n?)))
            .collect();
        // Endpoint names (and their reverse names) exist for every service kind.
        for (ip, ep_name) in &ready {
            let (t, r) = address_rr(*ip);
            self.add(ep_name, t, ttl, r);
            if primary && let Some(rev) = encode_name(&reverse(*ip)) {
                self.add(&rev, TYPE_PTR, ttl, ep_name.clone());
            }
        }
        if svc.headless {
            // Spec 2.4: no ready endpoints means NXDOMAIN for the service name.
            if ready.is_empty() {
                return;
            }
            let ports: Vec<_> = svc.endpoint_ports.iter().collect();
            let bare_weight = srv_weight(ready.len() * ports.len());
            for (ip, ep_name) in &ready {
                let (t, r) = address_rr(*ip);
                self.add(&name, t, ttl, r);
                for p in &ports {
                    let srv = srv_rdata(bare_weight, p.port, ep_name);
                    self.add(&name, TYPE_SRV, ttl, srv);
                }
            }
            for p in ports.iter().filter(|p| !p.name.is_empty()) {
                let same = ports
                    .iter()
                    .filter(|q| q.name == p.name && q.protocol == p.protocol)
                    .count();
                let Some(pname) = encode_name(&format!(
                    "_{}._{}.{fqdn}",
                    p.name.to_ascii_lowercase(),
                    p.protocol.as_str().to_ascii_lowercase()
                )) else {
                    continue;
                };
                let w = srv_weight(ready.len() * same);
                for (ip, ep_name) in &ready {
                    let (t, r) = address_rr(*ip);
                    self.add(&pname, t, ttl, r);
                    self.add(&pname, TYPE_SRV, ttl, srv_rdata(w, p.port, ep_name));
                }
            }
            return;
        }
        let node = self.node(&name);
        for ip in &svc.cluster_ips {
            let (t, r) = address_rr(*ip);
            node.recs.push(Rec {
                rtype: t,
                ttl,
                rdata: r,
            });
        }
        let ips = svc.cluster_ips.len().max(1);
        let bare_weight = srv_weight(svc.ports.len() * ips);
        for p in &svc.ports {
            for _ in 0..ips {
                let srv = srv_rdata(bare_weight, p.port, &name);
                self.add(&name, TYPE_SRV, ttl, srv);
            }
        }
        for p in svc.ports.iter().filter(|p| !p.name.is_empty()) {
            let Some(pname) = encode_name(&format!(
                "_{}._{}.{fqdn}",
                p.name.to_ascii_lowercase(),
                p.protocol.as_str().to_ascii_lowercase()
            )) else {
                continue;
            };
            for ip in &svc.cluster_ips {
                let (t, r) = address_rr(*ip);
                self.add(&pname, t, ttl, r);
            }
            self.add(
                &pname,
                TYPE_SRV,
                ttl,
                srv_rdata(srv_weight(ips), p.port, &name),
            );
        }
        if primary {
            for ip in &svc.cluster_ips {
                if let Some(rev) = encode_name(&reverse(*ip)) {
                    self.add(&rev, TYPE_PTR, ttl, name.clone());
                }
            }
        }
    }

    fn pods(&mut self, state: &ClusterState, exposed: &HashSet<String>, zone: &Zone, ttl: u32) {
        for o in state.objects_of(Kind::Pod) {
            let Object::Pod(pod) = o else { continue };
            let Some(ns) = pod.metadata.namespace.as_deref() else {
                continue;
            };
            let ns = ns.to_ascii_lowercase();
            if !exposed.contains(&ns) {
                continue;
            }
            let Some(status) = &pod.status else { continue };
            let ips = status
                .pod_ips
                .iter()
                .flatten()
                .map(|p| p.ip.as_str())
                .chain(status.pod_ip.as_deref());
            for ip in ips.filter_map(|s| s.parse::<IpAddr>().ok()) {
                if let Some(n) = encode_name(&format!("{}.{ns}.pod.{}", dashed(ip), zone.dotted)) {
                    let (t, r) = address_rr(ip);
                    self.add(&n, t, ttl, r);
                }
            }
        }
    }

    /// Encodes every name's RRsets, resolves CNAMEs inside the zones and
    /// adds the additional records of SRV and NS answers.
    fn finish(mut self, zones: &[Zone]) -> HashMap<Box<[u8]>, Node> {
        for n in self.names.values_mut() {
            n.recs
                .sort_by(|a, b| (a.rtype, &a.rdata).cmp(&(b.rtype, &b.rdata)));
            n.recs
                .dedup_by(|a, b| a.rtype == b.rtype && a.rdata == b.rdata);
        }
        let in_zone = |t: &[u8]| zones.iter().any(|z| t.ends_with(&z.wire));
        let mut out = HashMap::with_capacity(self.names.len());
        for (name, n) in &self.names {
            let mut sets = Vec::new();
            let mut cname = None;
            if let Some(target) = &n.cname {
                let mut rr = Vec::new();
                wire::push_rr(&mut rr, &QNAME, TYPE_CNAME, self.ttl, target);
                if in_zone(target) {
                    sets = self.chased(&rr, target);
                    cname = Some(Cname {
                        rr: rr.into_boxed_slice(),
                        outside: None,
                    });
                } else {
                    cname = Some(Cname {
                        rr: rr.into_boxed_slice(),
                        outside: Some(target.clone().into_boxed_slice()),
                    });
                }
            } else {
                let mut i = 0;
                while i < n.recs.len() {
                    let rtype = n.recs[i].rtype;
                    let end = i + n.recs[i..].iter().take_while(|r| r.rtype == rtype).count();
                    let group = &n.recs[i..end];
                    let mut answer = Vec::new();
                    for r in group {
                        wire::push_rr(&mut answer, &QNAME, rtype, r.ttl, &r.rdata);
                    }
                    let (additional, ar) = match rtype {
                        TYPE_SRV => self.addresses_of(group.iter().map(|r| &r.rdata[6..])),
                        TYPE_NS if n.glue => self.addresses_of(group.iter().map(|r| &r.rdata[..])),
                        _ => (Vec::new(), 0),
                    };
                    sets.push(RrSet {
                        rtype,
                        answer: answer.into_boxed_slice(),
                        an: group.len() as u16,
                        additional: additional.into_boxed_slice(),
                        ar,
                    });
                    i = end;
                }
            }
            out.insert(
                name.clone().into_boxed_slice(),
                Node {
                    sets: sets.into_boxed_slice(),
                    cname,
                },
            );
        }
        out
    }

    /// The RRsets of a CNAME whose target is inside the zones: the CNAME
    /// followed by the target's records (owner written out in full).
    fn chased(&self, cname_rr: &[u8], target: &[u8]) -> Vec<RrSet> {
        let mut chain = cname_rr.to_vec();
        let mut links = 1u16;
        let mut target = target.to_vec();
        for _ in 0..MAX_CHAIN {
            let Some(t) = self.names.get(&target) else {
                break;
            };
            match &t.cname {
                Some(next) => {
                    wire::push_rr(&mut chain, &target, TYPE_CNAME, self.ttl, next);
                    links += 1;
                    target = next.clone();
                }
                None => {
                    let mut sets: Vec<RrSet> = Vec::new();
                    for r in &t.recs {
                        let pos = match sets.iter().position(|s| s.rtype == r.rtype) {
                            Some(p) => p,
                            None => {
                                sets.push(RrSet {
                                    rtype: r.rtype,
                                    answer: chain.clone().into_boxed_slice(),
                                    an: links,
                                    additional: Box::default(),
                                    ar: 0,
                                });
                                sets.len() - 1
                            }
                        };
                        let mut answer = sets[pos].answer.to_vec();
                        wire::push_rr(&mut answer, &target, r.rtype, r.ttl, &r.rdata);
                        sets[pos].answer = answer.into_boxed_slice();
                        sets[pos].an += 1;
                    }
                    return sets;
                }
            }
        }
        Vec::new()
    }

    /// A and AAAA records of `targets`, owner written out, each target once.
    fn addresses_of<'a>(&self, targets: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, u16) {
        let mut out = Vec::new();
        let mut n = 0;
        let mut seen: Vec<&[u8]> = Vec::new();
        for t in targets {
            if seen.contains(&t) {
                continue;
            }
            seen.push(t);
            let Some(node) = self.names.get(t) else {
                continue;
            };
            for r in node
                .recs
                .iter()
                .filter(|r| matches!(r.rtype, TYPE_A | TYPE_AAAA))
            {
                wire::push_rr(&mut out, t, r.rtype, r.ttl, &r.rdata);
                n += 1;
            }
        }
        (out, n)
    }
}

/// The SOA record for a negative answer or the apex, owner given.
pub(crate) fn push_soa(out: &mut Vec<u8>, owner: &[u8], rdata: &[u8], ttl: u32) {
    wire::push_rr(out, owner, TYPE_SOA, ttl, rdata);
}
