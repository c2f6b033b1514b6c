//! Which pods should run: one per bare Pod, `replicas` per ReplicaSet and
//! Deployment; where (nodeName, nodeSelector, else the node with fewest
//! pods); with which IP (an explicit `status.podIP` that fits, an address
//! recorded in a controller-managed EndpointSlice, else the lowest free one
//! of the node's pod CIDR); and which pods to terminate or remove.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use ferry_model::k8s_openapi::api::core::v1::PodSpec;
use ferry_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use ferry_model::{Kind, NamespacedName, Object, SERVICE_NAME_LABEL};

use super::{Inputs, NodeInfo, Owner, PodInfo};

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The alphabet Kubernetes uses for generated name suffixes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

#[derive(Debug, Default)]
pub struct PodChanges {
    pub create: Vec<PodInfo>,
    /// Pods to start terminating, with their grace period in ms.
    pub terminate: Vec<(NamespacedName, u64)>,
    /// Pods to remove now (grace period over, or replaced in place).
    pub remove: Vec<NamespacedName>,
    /// Pods that cannot be placed, and why.
    pub unschedulable: Vec<String>,
}

/// A pod recorded in a controller-managed EndpointSlice of the manifests:
/// the lab recreates it with the same name, node and IP.
#[derive(Clone, Debug)]
pub struct Hint {
    pub namespace: String,
    pub pod: String,
    pub node: String,
    pub ip: IpAddr,
}

pub fn hints_from_slices(inputs: &Inputs) -> Vec<Hint> {
    let mut out = Vec::new();
    for o in inputs.values().filter(|o| o.kind() == Kind::EndpointSlice) {
        let Object::EndpointSlice(s) = o else {
            continue;
        };
        if s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .is_none()
        {
            continue;
        }
        let namespace = s.metadata.namespace.clone().unwrap_or_default();
        for ep in s.endpoints.iter().flatten() {
            let (Some(r), Some(node), Some(ip)) = (
                ep.target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod")),
                ep.node_name.clone(),
                ep.addresses
                    .first()
                    .and_then(ferry_model::slice::Address::ip),
            ) else {
                continue;
            };
            if let Some(pod) = r.name.clone() {
                out.push(Hint {
                    namespace: namespace.to_string(),
                    pod: pod.to_string(),
                    node: node.to_string(),
                    ip,
                });
            }
        }
    }
    out
}

struct Want {
    owner: Owner,
    namespace: String,
    /// Bare pods have their own name.
    name: Option<String>,
    labels: BTreeMap<String, String>,
    spec: Arc<PodSpec>,
    hash: String,
    replicas: usize,
    explicit_ip: Option<IpAddr>,
}

fn template_hash(labels: &BTreeMap<String, String>, spec: &PodSpec) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(serde_json::to_string(labels).unwrap_or_default().as_bytes());
    h.write(serde_json::to_string(spec).unwrap_or_default().as_bytes());
    encode(h.finish(), 10)
}

fn encode(mut v: u64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        s.push(ALPHABET[(v % ALPHABET.len() as u64) as usize] as char);
        v /= ALPHABET.len() as u64;
    }
    s
}

fn owned_by(owners: Option<&[OwnerReference]>, kind: &str) -> bool {
    owners.into_iter().flatten().any(|r| r.kind == kind)
}

fn wants(inputs: &Inputs) -> Vec<Want> {
    let mut out = Vec::new();
    for o in inputs.values() {
        match o {
            Object::Pod(p) if !owned_by(p.metadata.owner_references.as_deref(), "ReplicaSet") => {
                let Some(spec) = inputs.pod_spec(&o.key()) else {
                    continue;
                };
                let labels = p
                    .metadata
                    .labels
                    .as_ref()
                    .map(ferry_model::Labels::to_map)
                    .unwrap_or_default();
                out.push(Want {
                    owner: Owner::Pod,
                    namespace: p.metadata.namespace.as_deref().unwrap_or_default().into(),
                    name: p.metadata.name.as_deref().map(String::from),
                    hash: template_hash(&labels, spec),
                    labels,
                    spec: spec.clone(),
                    replicas: 1,
                    explicit_ip: p
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_ref())
                        .and_then(|a| a.ip()),
                });
            }
            Object::ReplicaSet(rs)
                if !owned_by(rs.metadata.owner_references.as_deref(), "Deployment") =>
            {
                let Some(t) = &rs.spec.template else { continue };
                let owner = Owner::ReplicaSet(rs.metadata.name.clone().unwrap_or_default());
                out.push(from_template(owner, &rs.metadata, t, rs.spec.replicas));
            }
            Object::Deployment(d) => {
                let owner = Owner::Deployment(d.metadata.name.clone().unwrap_or_default());
                out.push(from_template(
                    owner,
                    &d.metadata,
                    &d.spec.template,
                    d.spec.replicas,
                ));
            }
            _ => {}
        }
    }
    out
}

/// What a ReplicaSet or Deployment wants: `replicas` pods of its template.
fn from_template(
    owner: Owner,
    meta: &ferry_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    template: &ferry_model::k8s_openapi::api::core::v1::PodTemplateSpec,
    replicas: Option<i32>,
) -> Want {
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let spec = template.spec.clone().unwrap_or_default();
    Want {
        owner,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: None,
        hash: template_hash(&labels, &spec),
        labels,
        spec: Arc::new(spec),
        replicas: replicas.unwrap_or(1).max(0) as usize,
        explicit_ip: None,
    }
}

fn grace_ms(spec: &PodSpec) -> u64 {
    spec.termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0) as u64
        * 1000
}

/// Counters the controller keeps across plans.
pub struct Counters {
    pub next_id: u32,
    pub next_seq: u64,
}

/// Decides the pod changes that bring `pods` to what `inputs` ask for.
pub fn plan_pods(
    inputs: &Inputs,
    nodes: &[NodeInfo],
    pods: &BTreeMap<NamespacedName, PodInfo>,
    now_ms: u64,
    hints: &[Hint],
    counters: &mut Counters,
) -> PodChanges {
    let mut changes = PodChanges::default();
    // Grace periods that are over.
    for p in pods.values() {
        if let Some((since, grace)) = p.deleting
            && now_ms >= since + grace
        {
            changes.remove.push(p.name.clone());
        }
    }
    let mut taken_names: BTreeSet<NamespacedName> = pods.keys().cloned().collect();
    let mut taken_ips: BTreeSet<IpAddr> = pods
        .values()
        .filter(|p| !p.host_network)
        .map(|p| p.ip)
        .collect();
    let mut load: BTreeMap<String, usize> = nodes.iter().map(|n| (n.name.clone(), 0)).collect();
    for p in pods.values().filter(|p| !p.terminating()) {
        *load.entry(p.node.clone()).or_default() += 1;
    }
    let mut claimed = BTreeSet::new();
    let wants = wants(inputs);
    for want in &wants {
        let mut live: Vec<&PodInfo> = pods
            .values()
            .filter(|p| {
                !p.terminating() && p.owner == want.owner && *p.name.namespace == want.namespace
            })
            .filter(|p| want.name.as_ref().is_none_or(|n| *p.name.name == **n))
            .collect();
        for p in &live {
            claimed.insert(p.name.clone());
        }
        let (current, outdated): (Vec<&PodInfo>, Vec<&PodInfo>) =
            live.drain(..).partition(|p| p.template_hash == want.hash);
        for p in outdated {
            if want.owner == Owner::Pod {
                // A bare pod keeps its name: replace it in place.
                changes.remove.push(p.name.clone());
                taken_names.remove(&p.name);
                if !p.host_network {
                    taken_ips.remove(&p.ip);
                }
            } else {
                changes.terminate.push((p.name.clone(), grace_ms(&p.spec)));
            }
            if let Some(n) = load.get_mut(&p.node) {
                *n = n.saturating_sub(1);
            }
        }
        let mut current = current;
        if current.len() > want.replicas {
            current.sort_by_key(|p| (p.ready, std::cmp::Reverse(p.seq)));
            for p in current.iter().take(current.len() - want.replicas) {
                changes.terminate.push((p.name.clone(), grace_ms(&p.spec)));
                if let Some(n) = load.get_mut(&p.node) {
                    *n = n.saturating_sub(1);
                }
            }
            continue;
        }
        for _ in current.len()..want.replicas {
            match create(
                want,
                nodes,
                hints,
                &mut taken_names,
                &mut taken_ips,
                &load,
                counters,
            ) {
                Ok(pod) => {
                    *load.entry(pod.node.clone()).or_default() += 1;
                    changes.create.push(pod);
                }
                Err(why) => {
                    changes.unschedulable.push(why);
                    break;
                }
            }
        }
    }
    // Pods nothing asks for any more.
    for p in pods.values() {
        if !p.terminating() && !claimed.contains(&p.name) {
            changes.terminate.push((p.name.clone(), grace_ms(&p.spec)));
        }
    }
    changes
}

fn create(
    want: &Want,
    nodes: &[NodeInfo],
    hints: &[Hint],
    taken_names: &mut BTreeSet<NamespacedName>,
    taken_ips: &mut BTreeSet<IpAddr>,
    load: &BTreeMap<String, usize>,
    counters: &mut Counters,
) -> Result<PodInfo, String> {
    let host_network = want.spec.host_network.unwrap_or(false);
    let owner_name = match &want.owner {
        Owner::Pod => want.name.clone().unwrap_or_default(),
        Owner::ReplicaSet(n) | Owner::Deployment(n) => n.clone(),
    };
    if let Some(name) = &want.name
        && taken_names.contains(&NamespacedName::new(want.namespace.as_str(), name.as_str()))
    {
        return Err(format!(
            "Pod {}/{name}: waiting for the previous pod of that name to finish terminating",
            want.namespace
        ));
    }
    let eligible: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| {
            want.spec
                .node_name
                .as_ref()
                .is_none_or(|want| *want == n.name)
        })
        .filter(|n| {
            want.spec
                .node_selector
                .iter()
                .flatten()
                .all(|(k, v)| n.labels.get(k) == Some(v))
        })
        .collect();
    if eligible.is_empty() {
        return Err(format!(
            "{}/{owner_name}: no node fits (nodeName {:?}, nodeSelector {:?})",
            want.namespace,
            want.spec.node_name,
            want.spec.node_selector.clone().unwrap_or_default()
        ));
    }
    // A recorded pod of this owner, if one is unused and still fits.
    let hint = (want.name.is_none())
        .then(|| {
            hints.iter().find(|h| {
                h.namespace == want.namespace
                    && h.pod.starts_with(&format!("{owner_name}-"))
                    && !taken_names
                        .contains(&NamespacedName::new(h.namespace.as_str(), h.pod.as_str()))
                    && !taken_ips.contains(&h.ip)
                    && eligible.iter().any(|n| {
                        n.name == h.node
                            && matches!(h.ip, IpAddr::V4(v4) if n.pod_cidr.contains(&v4))
                    })
            })
        })
        .flatten();
    let node = match hint {
        Some(h) => eligible.iter().copied().find(|n| n.name == h.node),
        None => eligible
            .iter()
            .copied()
            .min_by_key(|n| (load.get(&n.name).copied().unwrap_or(0), n.name.clone())),
    }
    .ok_or_else(|| format!("{}/{owner_name}: no node fits", want.namespace))?;

    let name = match (&want.name, hint) {
        (Some(n), _) => n.clone(),
        (None, Some(h)) => h.pod.clone(),
        (None, None) => loop {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(owner_name.as_bytes());
            h.write_u64(counters.next_seq);
            h.write_u32(counters.next_id);
            let suffix = encode(h.finish(), 5);
            let candidate = match &want.owner {
                Owner::Deployment(_) => format!("{owner_name}-{}-{suffix}", &want.hash[..9]),
                _ => format!("{owner_name}-{suffix}"),
            };
            counters.next_seq += 1;
            if !taken_names.contains(&NamespacedName::new(
                want.namespace.as_str(),
                candidate.as_str(),
            )) {
                break candidate;
            }
        },
    };
    let ip = if host_network {
        IpAddr::V4(node.ip)
    } else {
        let wanted = want.explicit_ip.or(hint.map(|h| h.ip));
        match wanted.filter(|ip| !taken_ips.contains(ip) && matches!(ip, IpAddr::V4(v4) if node.pod_cidr.contains(v4) && *v4 != node.gateway() && *v4 != node.pod_cidr.network() && *v4 != node.pod_cidr.broadcast())) {
            Some(ip) => ip,
            None => node
                .pod_cidr
                .hosts()
                .skip(1)
                .map(IpAddr::V4)
                .find(|ip| !taken_ips.contains(ip))
                .ok_or_else(|| format!("node {}: pod CIDR {} is full", node.name, node.pod_cidr))?,
        }
    };
    let key = NamespacedName::new(want.namespace.as_str(), name.as_str());
    taken_names.insert(key.clone());
    if !host_network {
        taken_ips.insert(ip);
    }
    let id = counters.next_id;
    counters.next_id += 1;
    let seq = counters.next_seq;
    counters.next_seq += 1;
    Ok(PodInfo {
        name: key,
        owner: want.owner.clone(),
        template_hash: want.hash.clone(),
        labels: want.labels.clone(),
        spec: want.spec.clone(),
        node: node.name.clone(),
        ip,
        host_network,
        id,
        seq,
        started: false,
        ready: false,
        deleting: None,
    })
}
