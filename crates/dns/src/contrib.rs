//! What each source of names contributes to the index: the zones' own names,
//! a namespace, a Service (with its EndpointSlices, through its view) or a
//! Pod. A name's records are the union of its sources' parts, so the index
//! can take one source's parts out and put its new ones in without looking
//! at the rest of the cluster.
//!
//! Pure: no I/O, no clocks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ferry_model::{ClusterState, Kind, NamespacedName, Object, ServiceType, ServiceView};

use crate::index::Zone;
use crate::names::dashed;
use crate::wire::{TYPE_A, TYPE_AAAA, TYPE_NS, TYPE_SRV, TYPE_TXT, encode_name};
use crate::{Config, PodMode};

/// The schema version of the Kubernetes DNS specification ferry follows.
const SCHEMA_VERSION: &str = "1.1.0";
/// CoreDNS hard-codes this TTL for `dns-version`.
const SCHEMA_TTL: u32 = 28800;

/// Something the index derives names from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Source {
    /// The apex, `ns.dns`, `dns-version`, `svc` and `pod` of every zone:
    /// fixed by the configuration.
    Zones,
    /// An exposed namespace (lowercase): `<ns>.svc` and `<ns>.pod`.
    Namespace(Box<[u8]>),
    /// A Service's view, EndpointSlices included.
    Service(NamespacedName),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rec {
    pub rtype: u16,
    pub ttl: u32,
    /// Boxed, not a `Vec`: the index keeps hundreds of thousands.
    pub rdata: Box<[u8]>,
}

/// What one source gives one name; an empty part still makes the name exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Part {
    pub recs: Vec<Rec>,
    /// The CNAME target (ExternalName Services).
    pub cname: Option<Box<[u8]>>,
    /// The NS answer carries glue (the apex).
    pub glue: bool,
}

/// The settings contributions depend on.
pub(crate) struct Ctx<'a> {
    pub config: &'a Config,
    pub zones: &'a [Zone],
}

/// Names whose namespace exists and is served, lowercase.
pub(crate) type Exposed = imbl::OrdSet<Box<[u8]>>;

/// The parts `source` gives in `state`, by name (wire form, lowercase).
pub(crate) fn contribute(
    source: &Source,
    state: &ClusterState,
    exposed: &Exposed,
    ctx: &Ctx<'_>,
) -> HashMap<Vec<u8>, Part> {
    let mut b = Parts {
        names: HashMap::new(),
        ttl: ctx.config.ttl,
    };
    match source {
        Source::Zones => {
            for zone in ctx.zones {
                b.zone_apex(zone, ctx.config);
            }
        }
        Source::Namespace(ns) => {
            if exposed.contains(ns) {
                let ns = String::from_utf8_lossy(ns);
                for zone in ctx.zones {
                    b.touch(&format!("{ns}.svc.{}", zone.dotted));
                    if ctx.config.pods != PodMode::Disabled {
                        b.touch(&format!("{ns}.pod.{}", zone.dotted));
                    }
                }
            }
        }
        Source::Service(name) => {
            if let Some(svc) = state.service(name)
                && exposed.contains(svc.name.namespace.as_bytes())
            {
                for zone in ctx.zones {
                    b.service(svc, zone);
                }
            }
        }
    }
    b.names
}

/// A Pod's addresses as `pods verified` answers them: (its namespace
/// lowercase, each IP of `status.podIPs` and `status.podIP`, once). The
/// namespace is the Pod's own shared copy when it is lowercase, as a
/// valid one always is: one string for all the Pods of a namespace.
pub(crate) fn pod_addresses(o: &Object) -> Vec<(Arc<str>, IpAddr)> {
    let Object::Pod(pod) = o else {
        return Vec::new();
    };
    let Some(ns) = pod.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    let ns: Arc<str> = match &pod.metadata.namespace {
        Some(shared) if !shared.bytes().any(|b| b.is_ascii_uppercase()) => shared.clone(),
        _ => Arc::from(ns.to_ascii_lowercase()),
    };
    let mut ips: Vec<IpAddr> = pod
        .status
        .iter()
        .flat_map(|s| s.pod_ips.iter().flat_map(|p| p.iter()).chain(&s.pod_ip))
        .filter_map(|a| a.ip())
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter().map(|ip| (ns.clone(), ip)).collect()
}

/// The namespace (lowercase) an object makes exist: a Namespace's own
/// name, or the namespace of a Service or Pod (the manifests source does
/// not require Namespace objects).
pub(crate) fn namespace_of(o: &Object) -> Option<Box<[u8]>> {
    let meta = o.metadata();
    let ns = match o.kind() {
        Kind::Namespace => meta.name(),
        Kind::Service | Kind::Pod => meta.namespace(),
        _ => None,
    }?;
    Some(ns.to_ascii_lowercase().into_bytes().into_boxed_slice())
}

/// Whether the configuration serves namespace `ns` (CoreDNS `namespaces`).
pub(crate) fn allowed(config: &Config, ns: &[u8]) -> bool {
    config
        .namespaces
        .as_ref()
        .is_none_or(|list| list.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(ns)))
}

pub(crate) fn address_rr(ip: IpAddr) -> (u16, Vec<u8>) {
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

struct Parts {
    names: HashMap<Vec<u8>, Part>,
    ttl: u32,
}

impl Parts {
    fn node(&mut self, name: &[u8]) -> &mut Part {
        if !self.names.contains_key(name) {
            self.names.insert(name.to_vec(), Part::default());
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
        self.node(name).recs.push(Rec {
            rtype,
            ttl,
            rdata: rdata.into(),
        });
    }

    fn zone_apex(&mut self, zone: &Zone, config: &Config) {
        let ttl = self.ttl;
        let ns = encode_name(&format!("ns.dns.{}", zone.dotted)).unwrap_or_else(|| vec![0]);
        let apex = self.node(&zone.wire);
        apex.recs.push(Rec {
            rtype: TYPE_NS,
            ttl,
            rdata: ns.clone().into(),
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

    fn service(&mut self, svc: &ServiceView, zone: &Zone) {
        let ttl = self.ttl;
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
                self.node(&name).cname = Some(t.into());
            }
            return;
        }
        let ready: Vec<_> = svc
            .addresses
            .iter()
            .filter(|a| a.ready || svc.publish_not_ready_addresses)
            .map(|a| {
                let label = a
                    .hostname()
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| dashed(a.ip));
                (a.ip, encode_name(&format!("{label}.{fqdn}")))
            })
            .filter_map(|(ip, n)| Some((ip, n?)))
            .collect();
        // Endpoint names exist for every service kind; those of Services
        // with a ClusterIP, and every reverse name, are answered on the fly
        // (`addresses.rs`). A headless Service's are held here, since its
        // SRV answers carry them as additionals.
        if svc.headless {
            for (ip, ep_name) in &ready {
                let (t, r) = address_rr(*ip);
                self.add(ep_name, t, ttl, r);
            }
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
                rdata: r.into(),
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
    }
}
