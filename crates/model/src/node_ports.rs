//! Node ports across Services. The API server allocates every `nodePort` and
//! `healthCheckNodePort` from one cluster-wide pool, by port number (a TCP
//! and a UDP port of two Services may not share a number), so a second
//! Service asking for a taken port is never created. A source without an
//! API server (manifests) tracks the claims here and reports each later
//! claimant, the way it reports an object defined in two files.
//!
//! Pure. Incremental: a Service's claims are recomputed only when it changes,
//! and only ports with more than one claimant are kept as conflicts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::service::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::error::FieldError;
use crate::object::NamespacedName;

/// Which of two claimants came first: the earlier `creationTimestamp`
/// (Services without one count as created after those with one), then the
/// order in which [`NodePortClaims::update`] first saw them, then the name
/// (only to make the order total).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    no_creation_time: bool,
    created: Option<Time>,
    seen: u64,
}

#[derive(Clone, Debug)]
struct Claimant {
    order: Order,
    /// Port number -> the field that asks for it (the first such field).
    claims: BTreeMap<u16, String>,
}

/// A node port claimed by a Service after another one already had it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePortConflict {
    pub service: NamespacedName,
    /// `spec.ports[i].nodePort` or `spec.healthCheckNodePort`, with a message
    /// naming the Service that holds the port.
    pub field: FieldError,
}

/// Every Service's node port claims, and the ports claimed more than once.
#[derive(Clone, Debug, Default)]
pub struct NodePortClaims {
    services: HashMap<NamespacedName, Claimant>,
    ports: BTreeMap<u16, BTreeSet<(Order, NamespacedName)>>,
    conflicts: BTreeSet<u16>,
    next_seen: u64,
}

/// The node ports a Service asks for, each with the first field naming it.
fn claims_of(svc: &Service) -> BTreeMap<u16, String> {
    let mut out = BTreeMap::new();
    let Some(spec) = &svc.spec else {
        return out;
    };
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        if let Some(n) = p.node_port.and_then(|n| u16::try_from(n).ok())
            && n != 0
        {
            out.entry(n)
                .or_insert_with(|| format!("spec.ports[{i}].nodePort"));
        }
    }
    if let Some(n) = spec
        .health_check_node_port
        .and_then(|n| u16::try_from(n).ok())
        && n != 0
    {
        out.entry(n)
            .or_insert_with(|| "spec.healthCheckNodePort".to_string());
    }
    out
}

impl NodePortClaims {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records every Service `changes` names as `state` (the state those
    /// changes led to) holds it: what a source calls after each apply.
    pub fn follow(&mut self, state: &crate::ClusterState, changes: &crate::ChangeSet) {
        for key in changes
            .objects
            .iter()
            .filter(|k| k.kind == crate::Kind::Service)
        {
            let svc = match state.get(key) {
                Some(crate::Object::Service(svc)) => Some(svc.as_ref()),
                _ => None,
            };
            self.update(&key.name, svc);
        }
    }

    /// Records the current version of Service `name` (`None`: deleted). A
    /// Service first seen here (or seen again after a deletion) counts as
    /// created after every Service already known.
    pub fn update(&mut self, name: &NamespacedName, service: Option<&Service>) {
        let old = self.services.remove(name);
        if let Some(old) = &old {
            for port in old.claims.keys() {
                self.release(*port, &old.order, name);
            }
        }
        let Some(svc) = service else {
            return;
        };
        let order = match old {
            Some(old) => Order {
                no_creation_time: svc.metadata.creation_timestamp.is_none(),
                created: svc.metadata.creation_timestamp.clone(),
                seen: old.order.seen,
            },
            None => {
                self.next_seen += 1;
                Order {
                    no_creation_time: svc.metadata.creation_timestamp.is_none(),
                    created: svc.metadata.creation_timestamp.clone(),
                    seen: self.next_seen,
                }
            }
        };
        let claims = claims_of(svc);
        for port in claims.keys() {
            let claimants = self.ports.entry(*port).or_default();
            claimants.insert((order.clone(), name.clone()));
            if claimants.len() > 1 {
                self.conflicts.insert(*port);
            }
        }
        self.services
            .insert(name.clone(), Claimant { order, claims });
    }

    fn release(&mut self, port: u16, order: &Order, name: &NamespacedName) {
        if let Some(claimants) = self.ports.get_mut(&port) {
            claimants.remove(&(order.clone(), name.clone()));
            if claimants.len() <= 1 {
                self.conflicts.remove(&port);
            }
            if claimants.is_empty() {
                self.ports.remove(&port);
            }
        }
    }

    /// Every claim on a port that an earlier Service holds, in port order.
    /// O(conflicting ports), not O(Services).
    pub fn conflicts(&self) -> Vec<NodePortConflict> {
        let mut out = Vec::new();
        for port in &self.conflicts {
            let Some(claimants) = self.ports.get(port) else {
                continue;
            };
            let mut claimants = claimants.iter().map(|(_, name)| name);
            let Some(holder) = claimants.next() else {
                continue;
            };
            let held_by = self
                .services
                .get(holder)
                .and_then(|c| c.claims.get(port))
                .map_or("", String::as_str);
            for later in claimants {
                let Some(path) = self.services.get(later).and_then(|c| c.claims.get(port)) else {
                    continue;
                };
                out.push(NodePortConflict {
                    service: later.clone(),
                    field: FieldError::new(
                        path,
                        format!(
                            "Duplicate value: {port} is already allocated to Service {holder} ({held_by})"
                        ),
                    ),
                });
            }
        }
        out
    }
}
