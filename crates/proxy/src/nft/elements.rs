//! The elements of ferry's maps and sets for each ServicePort, and the
//! difference between what is in the kernel and what should be. Each
//! ServicePort contributes its own elements; elements several ServicePorts
//! share (hairpin pairs, pick verdicts) are reference-counted, so removing
//! one ServicePort never removes what another still needs.
//!
//! Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferry_model::{Protocol, ServicePortName};

use super::ruleset::{COUNT_BITS, MAX_ENDPOINTS};
use crate::plan::{PlannedEndpoint, ServicePlan};

/// One element: the set or map it is in, its key, and (for maps) its value,
/// all in nft syntax.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub set: &'static str,
    pub key: String,
    pub value: Option<String>,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Which traffic of a ServicePort a slot serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    Cluster,
    External,
}

/// Stable small numbers for (ServicePort, path), reused after release.
#[derive(Debug, Default)]
pub struct SlotIds {
    /// Keyed by ServicePort, path and generation: Services with session
    /// affinity get a new slot whenever their endpoints change, so that
    /// affinity entries pointing at removed endpoints are never used again
    /// (they expire on their own).
    ids: BTreeMap<(ServicePortName, Path, u64), u32>,
    free: Vec<u32>,
    next: u32,
}

impl SlotIds {
    fn get(&mut self, name: &ServicePortName, path: Path, generation: u64) -> u32 {
        if let Some(id) = self.ids.get(&(name.clone(), path, generation)) {
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.ids.insert((name.clone(), path, generation), id);
        id
    }

    /// True when no id is left to give (after about a million endpoint
    /// changes of session-affinity Services): a full reload starts afresh.
    pub fn exhausted(&self) -> bool {
        self.next >= MAX_ID && self.free.is_empty()
    }

    /// Releases every id of `name`.
    pub fn release(&mut self, name: &ServicePortName) {
        self.release_unused(name, &[]);
    }

    /// Releases the ids of `name` not in `used`.
    fn release_unused(&mut self, name: &ServicePortName, used: &[(Path, u64)]) {
        let stale: Vec<(ServicePortName, Path, u64)> = self
            .ids
            .range((name.clone(), Path::Cluster, 0)..)
            .take_while(|((n, _, _), _)| n == name)
            .filter(|((_, p, g), _)| !used.contains(&(*p, *g)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(id) = self.ids.remove(&k) {
                // An id that carried session affinity (generation != 0) is
                // not reused: the kernel's affinity map may still hold
                // entries for it until they time out. Ids are 20 bits, so
                // this only matters after a million such changes.
                if k.2 == 0 || self.next >= MAX_ID {
                    self.free.push(id);
                }
            }
        }
    }
}

/// Slot ids fit in the mark above the endpoint count.
const MAX_ID: u32 = (1 << (32 - COUNT_BITS)) - 1;

fn slot(id: u32, n: usize) -> u32 {
    (id << COUNT_BITS) | (n as u32).min(MAX_ENDPOINTS)
}

fn el(set: &'static str, key: String, value: Option<String>) -> Element {
    Element { set, key, value }
}

/// The set of slots whose clients stick for `timeout` seconds: one set
/// (and one postrouting rule) per distinct timeout in use. Names are
/// interned: there are few distinct timeouts, and each is named once.
pub fn affinity_set(timeout: u32) -> &'static str {
    use std::sync::Mutex;
    static NAMES: Mutex<BTreeMap<u32, &'static str>> = Mutex::new(BTreeMap::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    names
        .entry(timeout)
        .or_insert_with(|| Box::leak(format!("affinity_{timeout}").into_boxed_str()))
}

/// Session affinity in effect: asked for, and IPv4 (see `ruleset::table`).
fn affinity(p: &ServicePlan) -> Option<u32> {
    p.affinity_timeout
        .filter(|_| !p.cluster_ips.first().is_some_and(IpAddr::is_ipv6))
}

fn generation(p: &ServicePlan, endpoints: &[PlannedEndpoint]) -> u64 {
    if affinity(p).is_none() {
        return 0;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    endpoints.hash(&mut h);
    h.finish()
}

fn endpoint_elements(out: &mut BTreeSet<Element>, mark: u32, endpoints: &[PlannedEndpoint]) {
    for (i, e) in endpoints.iter().take(MAX_ENDPOINTS as usize).enumerate() {
        out.insert(el(
            "endpoints",
            format!("{mark:#x} . {i}"),
            Some(format!("{} . {}", e.ip, e.port)),
        ));
        out.insert(el("hairpin", format!("{} . {}", e.ip, e.ip), None));
    }
    let n = endpoints.len().min(MAX_ENDPOINTS as usize);
    out.insert(el(
        "pick",
        format!("{n:#x}"),
        Some(format!("goto pick_{n}")),
    ));
}

/// The elements one ServicePort needs in the table of its plan's IP family.
pub fn contribution(p: &ServicePlan, ids: &mut SlotIds) -> BTreeSet<Element> {
    let mut out = BTreeSet::new();
    let pr = proto(p.protocol);
    // The plan holds the addresses of its IP family only.
    let v4 = |ips: &[IpAddr]| -> Vec<IpAddr> { ips.to_vec() };
    let mut used = Vec::new();
    for ip in &p.cluster_ips {
        out.insert(el("cluster_addresses", ip.to_string(), None));
    }
    let cluster_keys: Vec<String> = v4(&p.cluster_ips)
        .iter()
        .map(|ip| format!("{ip} . {pr} . {}", p.port))
        .collect();
    if p.cluster_endpoints.is_empty() {
        for k in &cluster_keys {
            out.insert(el("no_endpoints", k.clone(), None));
        }
    } else if !cluster_keys.is_empty() {
        let g = generation(p, &p.cluster_endpoints);
        used.push((Path::Cluster, g));
        let mark = slot(
            ids.get(&p.name, Path::Cluster, g),
            p.cluster_endpoints.len(),
        );
        if let Some(t) = affinity(p) {
            out.insert(el(affinity_set(t), format!("{mark:#x}"), None));
        }
        for k in &cluster_keys {
            out.insert(el("cluster_ips", k.clone(), Some(format!("{mark:#x}"))));
        }
        out.insert(el("cluster_slots", format!("{mark:#x}"), None));
        endpoint_elements(&mut out, mark, &p.cluster_endpoints);
    }
    if !p.source_ranges.is_empty() {
        for ip in v4(&p.load_balancer_ips) {
            let k = format!("{ip} . {pr} . {}", p.port);
            for r in p.source_ranges.iter() {
                out.insert(el("firewall_allow", format!("{k} . {r}"), None));
            }
            out.insert(el("firewall_keys", k, None));
        }
    }
    if p.is_external() {
        let ext_keys: Vec<String> = v4(&p.external_ips)
            .into_iter()
            .chain(v4(&p.load_balancer_ips))
            .map(|ip| format!("{ip} . {pr} . {}", p.port))
            .collect();
        let np_key = p.node_port.map(|np| format!("{pr} . {np}"));
        if p.external_endpoints.is_empty() {
            let (ips, ports) = if p.external_local {
                ("drop_external", "drop_node_ports")
            } else {
                ("no_endpoints", "no_endpoint_node_ports")
            };
            for k in ext_keys {
                out.insert(el(ips, k, None));
            }
            if let Some(k) = np_key {
                out.insert(el(ports, k, None));
            }
        } else {
            let g = generation(p, &p.external_endpoints);
            used.push((Path::External, g));
            let mark = slot(
                ids.get(&p.name, Path::External, g),
                p.external_endpoints.len(),
            );
            if let Some(t) = affinity(p) {
                out.insert(el(affinity_set(t), format!("{mark:#x}"), None));
            }
            let m = Some(format!("{mark:#x}"));
            for k in &ext_keys {
                out.insert(el("external_ips", k.clone(), m.clone()));
            }
            if let Some(k) = np_key {
                out.insert(el("node_ports", k, m.clone()));
            }
            let policy = if p.external_local {
                "keep_client_slots"
            } else {
                "masquerade_slots"
            };
            out.insert(el(policy, format!("{mark:#x}"), None));
            endpoint_elements(&mut out, mark, &p.external_endpoints);
        }
    }
    ids.release_unused(&p.name, &used);
    out
}

/// Who wants which element, and what the kernel holds. Several ServicePorts
/// may want the same key (hairpin pairs, pick verdicts, and, with odd input,
/// one address claimed by two Services with different values): each value
/// a key is wanted with is counted, the smallest value wins, and the delta
/// is worked out per key from what the kernel had before to the winner
/// now, so that one transaction never deletes what is not there or adds a
/// key twice.
#[derive(Debug, Default)]
pub struct Applied {
    wanted: BTreeMap<&'static str, BTreeMap<String, BTreeMap<Option<String>, u32>>>,
    kernel: BTreeMap<&'static str, BTreeMap<String, Option<String>>>,
    touched: BTreeSet<(&'static str, String)>,
}

/// Element changes for one transaction: deletes first, then adds.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub delete: Vec<Element>,
    pub add: Vec<Element>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }
}

impl Applied {
    /// Replaces one owner's elements by others; [`Applied::take_delta`]
    /// then says what the kernel must change.
    pub fn replace(&mut self, old: &BTreeSet<Element>, new: &BTreeSet<Element>) {
        for e in old.difference(new) {
            let keys = self.wanted.entry(e.set).or_default();
            if let Some(values) = keys.get_mut(&e.key) {
                if let Some(refs) = values.get_mut(&e.value) {
                    *refs -= 1;
                    if *refs == 0 {
                        values.remove(&e.value);
                    }
                }
                if values.is_empty() {
                    keys.remove(&e.key);
                }
            }
            self.touched.insert((e.set, e.key.clone()));
        }
        for e in new.difference(old) {
            *self
                .wanted
                .entry(e.set)
                .or_default()
                .entry(e.key.clone())
                .or_default()
                .entry(e.value.clone())
                .or_default() += 1;
            self.touched.insert((e.set, e.key.clone()));
        }
    }

    /// The kernel changes for everything replaced since the last call.
    pub fn take_delta(&mut self) -> Delta {
        let mut delta = Delta::default();
        for (set, key) in std::mem::take(&mut self.touched) {
            let winner = self
                .wanted
                .get(set)
                .and_then(|k| k.get(&key))
                .and_then(|v| v.keys().next().cloned());
            let programmed = self.kernel.get(set).and_then(|k| k.get(&key)).cloned();
            if winner == programmed {
                continue;
            }
            let kernel = self.kernel.entry(set).or_default();
            if let Some(old) = programmed {
                delta.delete.push(Element {
                    set,
                    key: key.clone(),
                    value: old,
                });
                kernel.remove(&key);
            }
            if let Some(value) = winner {
                delta.add.push(Element {
                    set,
                    key: key.clone(),
                    value: value.clone(),
                });
                kernel.insert(key, value);
            }
        }
        delta
    }

    pub fn len(&self) -> usize {
        self.kernel.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element the kernel holds, as a full sync adds them.
    pub fn all(&self) -> Vec<Element> {
        self.kernel
            .iter()
            .flat_map(|(set, elems)| {
                elems.iter().map(|(key, value)| Element {
                    set,
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect()
    }

    /// Session-affinity timeouts in use (each needs its set and rule).
    pub fn affinity_timeouts(&self) -> Vec<u32> {
        self.kernel
            .iter()
            .filter(|(_, elems)| !elems.is_empty())
            .filter_map(|(set, _)| set.strip_prefix("affinity_")?.parse().ok())
            .collect()
    }

    /// Endpoint counts that need a pick chain.
    pub fn pick_counts(&self) -> Vec<u32> {
        self.kernel
            .get("pick")
            .into_iter()
            .flat_map(|s| s.keys())
            .filter_map(|k| u32::from_str_radix(k.trim_start_matches("0x"), 16).ok())
            .collect()
    }
}

/// nft commands for a delta; deletes come first so a changed value can be re-added.
pub fn render(delta: &Delta, family: &str, table: &str) -> String {
    let mut s = String::new();
    let mut group = |verb: &str, elems: &[Element], with_value: bool| {
        let mut by_set: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for e in elems {
            let text = match (&e.value, with_value) {
                (Some(v), true) => format!("{} : {v}", e.key),
                _ => e.key.clone(),
            };
            by_set.entry(e.set).or_default().push(text);
        }
        for (set, items) in by_set {
            for chunk in items.chunks(4096) {
                s.push_str(&format!(
                    "{verb} element {family} {table} {set} {{ {} }}\n",
                    chunk.join(", ")
                ));
            }
        }
    };
    group("delete", &delta.delete, false);
    group("add", &delta.add, true);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&'static str, &str, Option<&str>)]) -> BTreeSet<Element> {
        items
            .iter()
            .map(|(s, k, v)| Element {
                set: s,
                key: k.to_string(),
                value: v.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn a_key_two_owners_want_stays_until_both_let_go() {
        let mut a = Applied::default();
        let x = set(&[("hairpin", "10.0.0.1 . 10.0.0.1", None)]);
        a.replace(&BTreeSet::new(), &x);
        a.replace(&BTreeSet::new(), &x);
        assert_eq!(a.take_delta().add.len(), 1, "added once");
        a.replace(&x, &BTreeSet::new());
        assert!(a.take_delta().is_empty(), "still wanted by the other owner");
        a.replace(&x, &BTreeSet::new());
        assert_eq!(a.take_delta().delete.len(), 1);
    }

    #[test]
    fn conflicting_values_for_one_key_resolve_without_losing_an_owner() {
        let mut a = Applied::default();
        let one = set(&[("external_ips", "1.2.3.4 . tcp . 80", Some("0x1001"))]);
        let two = set(&[("external_ips", "1.2.3.4 . tcp . 80", Some("0x2001"))]);
        // Both in one batch: one add of the winner, no delete of what is not there.
        a.replace(&BTreeSet::new(), &two);
        a.replace(&BTreeSet::new(), &one);
        let d = a.take_delta();
        assert!(d.delete.is_empty());
        assert_eq!(d.add, one.iter().cloned().collect::<Vec<_>>());
        // The winner goes: the other owner's value takes its place.
        a.replace(&one, &BTreeSet::new());
        let d = a.take_delta();
        assert_eq!(d.delete.len(), 1);
        assert_eq!(d.add, two.iter().cloned().collect::<Vec<_>>());
        assert_eq!(a.len(), 1);
    }
}
