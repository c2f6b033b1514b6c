//! The route table kept up to date from change sets: what a whole build
//! computes, kept between states so that a change costs what it touches.
//! Each owned Ingress is checked and its backends resolved once, when it
//! (or a Service it names) changes; each host's [`HostRoutes`] is built
//! again only when an Ingress with rules for it, or one of their backends,
//! changed; the others are shared (`Arc`) with the previous table. The
//! table itself stays immutable and is swapped whole: only the host maps
//! (pointers) and the problem list are copied per change.
//!
//! A whole build is this with everything changed ([`RouteTable::build`]),
//! so the two cannot drift apart; a unit test checks random change
//! sequences against fresh builds. A change set that does not start at the
//! indexed version (or does not advance it), or a changed IngressClass
//! rebuilds everything; a changed Service of the controller's default
//! backend only resolves that backend again (hosts refer to it through the
//! table).
//!
//! Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ferry_model::k8s_openapi::api::networking::v1::Ingress;
use ferry_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use ferry_model::{ChangeSet, ClusterState, Kind, NamespacedName, Object, ObjectKey};

use super::build::{HostKey, Plan, backend_for, name_of, plan};
use super::class::Classes;
use super::path::PathMatch;
use super::{Backend, HostRoutes, Problem, RouteTable, RoutesConfig, ServiceRef};

/// The order in which Ingresses claim hosts and paths: oldest first
/// (creationTimestamp; none counts as newest), then namespace/name.
pub(crate) type Age = (bool, Option<Time>, NamespacedName);

pub(crate) fn age_of(i: &Ingress) -> Age {
    let created = i.metadata.creation_timestamp.clone();
    (created.is_none(), created, name_of(i))
}

/// Where a problem goes in [`RouteTable::problems`]: the controller's own
/// first, then by the Ingress's age; inside one Ingress its missing
/// endpoints, then its lost catch-all, then its lost paths in rule order.
type Rank = (Option<Age>, u8, usize, usize);

/// An owned Ingress, checked, with its backends.
struct Entry {
    age: Age,
    /// Err: the Ingress is skipped (the problem says why).
    plan: Result<Plan, Box<Problem>>,
    /// One per Service port it names, shared by its paths (one round robin).
    backends: HashMap<ServiceRef, Arc<Backend>>,
    /// Its backends without endpoints.
    no_endpoints: Vec<Problem>,
    has_tls: bool,
    ingress: Arc<Ingress>,
}

impl Entry {
    fn hosts(&self) -> impl Iterator<Item = &HostKey> {
        self.plan
            .iter()
            .flat_map(|p| p.rules.iter().map(|(h, _)| h))
    }

    fn is_catch_all(&self) -> bool {
        self.plan
            .as_ref()
            .is_ok_and(|p| p.rules.is_empty() && p.default.is_some())
    }

    fn default(&self) -> Option<&Arc<Backend>> {
        let (target, _) = self.plan.as_ref().ok()?.default.as_ref()?;
        self.backends.get(target)
    }

    /// Resolves every Service port the plan names against `state`.
    fn resolve(&mut self, state: &ClusterState) {
        self.backends.clear();
        self.no_endpoints.clear();
        let Ok(plan) = &self.plan else { return };
        let default = plan.default.iter().map(|(t, f)| (t, f.as_str()));
        let paths = plan
            .rules
            .iter()
            .flat_map(|(_, paths)| paths.iter().map(|p| (&p.target, p.field.as_str())));
        for (target, field) in default.chain(paths) {
            if !self.backends.contains_key(target) {
                let (b, problem) = backend_for(state, Some(&self.age.2), target, field, plan.grpc);
                self.no_endpoints.extend(problem);
                self.backends.insert(target.clone(), b);
            }
        }
    }
}

/// The route table's inputs and parts, kept from one state to the next.
pub struct RouteIndex {
    config: RoutesConfig,
    /// The state version of the last table; None before the first.
    version: Option<u64>,
    classes: Classes,
    entries: HashMap<NamespacedName, Entry>,
    /// The Ingresses with rules for each host, oldest first.
    host_users: HashMap<HostKey, BTreeSet<Age>>,
    /// Ingresses with a defaultBackend and no rules, oldest first.
    catch_alls: BTreeSet<Age>,
    /// Service -> the Ingresses naming it.
    users: HashMap<NamespacedName, BTreeSet<NamespacedName>>,
    controller_default: Option<(Arc<Backend>, Option<Problem>)>,
    hosts: HashMap<Arc<str>, Arc<HostRoutes>>,
    wildcards: HashMap<Arc<str>, Arc<HostRoutes>>,
    /// Lost paths per host (only hosts with some).
    conflicts: HashMap<HostKey, Vec<(Rank, Problem)>>,
    /// The valid Ingresses, by name; `names` is their list, rebuilt when
    /// the set changes.
    valid: BTreeSet<NamespacedName>,
    names: Option<Arc<[NamespacedName]>>,
    /// Valid Ingresses with `spec.tls`, oldest first.
    tls: BTreeMap<Age, Arc<Ingress>>,
}

impl RouteIndex {
    pub fn new(config: RoutesConfig) -> RouteIndex {
        RouteIndex {
            classes: Classes::of([], &config.classes),
            config,
            version: None,
            entries: HashMap::new(),
            host_users: HashMap::new(),
            catch_alls: BTreeSet::new(),
            users: HashMap::new(),
            controller_default: None,
            hosts: HashMap::new(),
            wildcards: HashMap::new(),
            conflicts: HashMap::new(),
            valid: BTreeSet::new(),
            names: None,
            tls: BTreeMap::new(),
        }
    }

    /// The table for `state`, where `changes` (None: unknown) is what
    /// changed since the state of the previous table.
    pub fn apply(&mut self, state: &ClusterState, changes: Option<&ChangeSet>) -> RouteTable {
        // A change set that does not advance the version is not trusted
        // (two unrelated states may share a version number): rebuilt.
        let incremental = changes.filter(|c| {
            Some(c.from_version) == self.version
                && c.from_version < c.to_version
                && c.to_version == state.version()
                && !c.objects.iter().any(|k| k.kind == Kind::IngressClass)
        });
        let mut dirty = HashSet::new();
        match incremental {
            Some(changes) => self.follow(state, changes, &mut dirty),
            None => self.reset(state, &mut dirty),
        }
        for host in dirty {
            self.rebuild_host(host);
        }
        self.version = Some(state.version());
        self.table(state.version())
    }

    /// Forgets everything and takes every Ingress of `state`.
    fn reset(&mut self, state: &ClusterState, dirty: &mut HashSet<HostKey>) {
        *self = RouteIndex::new(std::mem::take(&mut self.config));
        self.classes = Classes::new(state, &self.config.classes);
        self.controller_default = self
            .config
            .default_backend
            .as_ref()
            .map(|t| backend_for(state, None, t, "--default-backend-service", false));
        for o in state.objects_of(Kind::Ingress) {
            if let Object::Ingress(i) = o {
                self.put(state, i, dirty);
            }
        }
    }

    fn follow(&mut self, state: &ClusterState, changes: &ChangeSet, dirty: &mut HashSet<HostKey>) {
        let mut services: BTreeSet<NamespacedName> = changes.services.iter().cloned().collect();
        let port_service = |p: &ferry_model::ServicePortName| {
            NamespacedName::new(p.namespace.clone(), p.name.clone())
        };
        services.extend(changes.service_ports.iter().map(port_service));
        services.extend(changes.endpoints.iter().map(port_service));
        if let Some(d) = &self.config.default_backend
            && services.contains(&d.service)
        {
            self.controller_default = Some(backend_for(
                state,
                None,
                d,
                "--default-backend-service",
                false,
            ));
        }
        for name in changes.ingresses() {
            self.remove(name, dirty);
            let key = ObjectKey::new(Kind::Ingress, name.namespace.clone(), name.name.clone());
            if let Some(Object::Ingress(i)) = state.get(&key) {
                self.put(state, i, dirty);
            }
        }
        for service in &services {
            let Some(users) = self.users.get(service) else {
                continue;
            };
            for name in users {
                if let Some(entry) = self.entries.get_mut(name) {
                    entry.resolve(state);
                    dirty.extend(entry.hosts().cloned());
                }
            }
        }
    }

    /// Takes an Ingress of the state (if ferry owns it).
    fn put(&mut self, state: &ClusterState, ingress: &Arc<Ingress>, dirty: &mut HashSet<HostKey>) {
        if !self.classes.owns(ingress) {
            return;
        }
        let mut entry = Entry {
            age: age_of(ingress),
            plan: plan(ingress),
            backends: HashMap::new(),
            no_endpoints: Vec::new(),
            has_tls: ingress
                .spec
                .as_ref()
                .is_some_and(|s| s.tls.as_ref().is_some_and(|t| !t.is_empty())),
            ingress: ingress.clone(),
        };
        entry.resolve(state);
        let name = entry.age.2.clone();
        if let Ok(plan) = &entry.plan {
            for host in entry.hosts() {
                self.host_users
                    .entry(host.clone())
                    .or_default()
                    .insert(entry.age.clone());
                dirty.insert(host.clone());
            }
            if entry.is_catch_all() {
                self.catch_alls.insert(entry.age.clone());
            }
            for target in plan_targets(plan) {
                self.users
                    .entry(target.service.clone())
                    .or_default()
                    .insert(name.clone());
            }
            if entry.has_tls {
                self.tls.insert(entry.age.clone(), entry.ingress.clone());
            }
            self.valid.insert(name.clone());
            self.names = None;
        }
        self.entries.insert(name, entry);
    }

    /// Forgets an Ingress (changed or deleted).
    fn remove(&mut self, name: &NamespacedName, dirty: &mut HashSet<HostKey>) {
        let Some(entry) = self.entries.remove(name) else {
            return;
        };
        for host in entry.hosts() {
            if let Some(users) = self.host_users.get_mut(host) {
                users.remove(&entry.age);
                if users.is_empty() {
                    self.host_users.remove(host);
                }
            }
            dirty.insert(host.clone());
        }
        self.catch_alls.remove(&entry.age);
        if let Ok(plan) = &entry.plan {
            for target in plan_targets(plan) {
                if let Some(users) = self.users.get_mut(&target.service) {
                    users.remove(name);
                    if users.is_empty() {
                        self.users.remove(&target.service);
                    }
                }
            }
        }
        self.tls.remove(&entry.age);
        if self.valid.remove(name) {
            self.names = None;
        }
    }

    /// Builds one host's routes again from the Ingresses that have rules
    /// for it, oldest first: the first claim of a path wins.
    fn rebuild_host(&mut self, host: HostKey) {
        let routes = self.host_routes(&host);
        let (map, key) = match &host {
            HostKey::Exact(h) => (&mut self.hosts, h),
            HostKey::Wildcard(h) => (&mut self.wildcards, h),
            // Rebuilt with every table (see `table`).
            HostKey::Any => return,
        };
        match routes {
            Some((routes, conflicts)) => {
                map.insert(Arc::from(&**key), Arc::new(routes));
                if conflicts.is_empty() {
                    self.conflicts.remove(&host);
                } else {
                    self.conflicts.insert(host, conflicts);
                }
            }
            None => {
                map.remove(&**key);
                self.conflicts.remove(&host);
            }
        }
    }

    /// The routes of `host` and the paths lost to older Ingresses; None:
    /// no Ingress has rules for it.
    fn host_routes(&self, host: &HostKey) -> Option<(HostRoutes, Vec<(Rank, Problem)>)> {
        let users = self.host_users.get(host)?;
        let mut routes = HostRoutes::default();
        let mut conflicts = Vec::new();
        let mut claims: HashMap<(&str, bool), &NamespacedName> = HashMap::new();
        for (n, age) in users.iter().enumerate() {
            let Some(entry) = self.entries.get(&age.2) else {
                continue;
            };
            let Ok(plan) = &entry.plan else { continue };
            if n == 0 && *host != HostKey::Any {
                // The Ingress that brings a host gives it its fallback
                // (none: the controller's, through the table).
                routes.fallback = entry.default().cloned();
            }
            for (ri, (h, paths)) in plan.rules.iter().enumerate() {
                if h != host {
                    continue;
                }
                for (pi, p) in paths.iter().enumerate() {
                    let exact = p.kind == PathMatch::Exact;
                    if let Some(winner) = claims.get(&(&*p.key, exact)) {
                        let problem = Problem::Conflict {
                            what: format!("{host} path {:?} ({:?})", p.key, p.kind),
                            winner: (*winner).clone(),
                            loser: age.2.clone(),
                        };
                        conflicts.push(((Some(age.clone()), 2, ri, pi), problem));
                        continue;
                    }
                    claims.insert((&p.key, exact), &age.2);
                    let Some(backend) = entry.backends.get(&p.target) else {
                        continue;
                    };
                    let map = if exact {
                        &mut routes.exact
                    } else {
                        &mut routes.prefix
                    };
                    map.insert(p.key.clone(), backend.clone());
                }
            }
        }
        Some((routes, conflicts))
    }

    /// The rules without a host, with the catch-all default as fallback:
    /// built with every table (few Ingresses have them).
    fn any_host(&self, problems: &mut Vec<(Rank, Problem)>) -> HostRoutes {
        let (mut routes, conflicts) = self
            .host_routes(&HostKey::Any)
            .unwrap_or_else(|| (HostRoutes::default(), Vec::new()));
        problems.extend(conflicts);
        let mut catch_alls = self
            .catch_alls
            .iter()
            .filter_map(|age| self.entries.get(&age.2));
        let first = catch_alls.next();
        for loser in catch_alls {
            if let Some(winner) = first {
                problems.push((
                    (Some(loser.age.clone()), 1, 0, 0),
                    Problem::Conflict {
                        what: "the catch-all spec.defaultBackend".into(),
                        winner: winner.age.2.clone(),
                        loser: loser.age.2.clone(),
                    },
                ));
            }
        }
        routes.fallback = first.and_then(Entry::default).cloned();
        routes
    }

    fn table(&mut self, version: u64) -> RouteTable {
        let mut problems: Vec<(Rank, Problem)> = Vec::new();
        let any_host = Arc::new(self.any_host(&mut problems));
        if let Some((_, Some(p))) = &self.controller_default {
            problems.push(((None, 0, 0, 0), p.clone()));
        }
        for entry in self.entries.values() {
            match &entry.plan {
                Err(p) => problems.push(((Some(entry.age.clone()), 0, 0, 0), (**p).clone())),
                Ok(_) => problems.extend(
                    entry
                        .no_endpoints
                        .iter()
                        .enumerate()
                        .map(|(i, p)| ((Some(entry.age.clone()), 0, i, 0), p.clone())),
                ),
            }
        }
        problems.extend(self.conflicts.values().flatten().cloned());
        problems.sort_by(|a, b| a.0.cmp(&b.0));
        let names = self
            .names
            .get_or_insert_with(|| self.valid.iter().cloned().collect())
            .clone();
        RouteTable {
            version,
            hosts: self.hosts.clone(),
            wildcards: self.wildcards.clone(),
            any_host,
            default_backend: self.controller_default.as_ref().map(|(b, _)| b.clone()),
            ingresses: names,
            problems: problems.into_iter().map(|(_, p)| p).collect(),
            tls: self.tls.values().cloned().collect(),
        }
    }
}

/// Every Service port a plan names.
fn plan_targets(plan: &Plan) -> impl Iterator<Item = &ServiceRef> {
    let paths = plan
        .rules
        .iter()
        .flat_map(|(_, paths)| paths.iter().map(|p| &p.target));
    plan.default.iter().map(|(t, _)| t).chain(paths)
}
