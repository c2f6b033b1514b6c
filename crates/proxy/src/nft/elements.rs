//! The elements of ferry's maps and sets for each ServicePort, and the
//! difference between what is in the kernel and what should be. Each
//! ServicePort contributes its own elements; elements several ServicePorts
//! share (hairpin pairs, pick verdicts) are reference-counted, so removing
//! one ServicePort never removes what another still needs.
//!
//! Pure.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[cfg(test)]
use ferry_model::Protocol;
use ferry_model::ServicePortName;

use super::ruleset::{COUNT_BITS, MASQUERADE_BIT, MAX_ENDPOINTS};
pub use super::sets::{Data, Element, Key, Set};
use crate::plan::{PlannedEndpoint, ServicePlan};

/// Which traffic of a ServicePort a slot serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    Cluster,
    External,
}

/// Stable small numbers for (ServicePort, path), reused after release.
#[derive(Clone, Debug, Default)]
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

/// Slot ids fit in the mark above the endpoint count, around the
/// masquerade bit (ARCHITECTURE.md, "Settled between issues").
const MAX_ID: u32 = (1 << (32 - COUNT_BITS - 1)) - 1;

/// The bits below the masquerade bit that an id uses.
const ID_LOW_BITS: u32 = MASQUERADE_BIT.trailing_zeros() - COUNT_BITS;

/// A slot mark: the endpoint count in the low 12 bits, the id in the
/// bits above, skipping the masquerade bit 0x4000 so that only the
/// masquerade decision ever sets it.
pub(crate) fn slot(id: u32, n: usize) -> u32 {
    let low = id & ((1 << ID_LOW_BITS) - 1);
    let high = id >> ID_LOW_BITS;
    (high << (MASQUERADE_BIT.trailing_zeros() + 1))
        | (low << COUNT_BITS)
        | (n as u32).min(MAX_ENDPOINTS)
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

fn endpoint_elements(out: &mut Vec<Element>, mark: u32, endpoints: &[PlannedEndpoint]) {
    for (i, e) in endpoints.iter().take(MAX_ENDPOINTS as usize).enumerate() {
        out.push(Element::new(
            Set::Endpoints,
            Key::Endpoint(mark, i as u32),
            Some(Data::Endpoint(e.ip, e.port)),
        ));
        out.push(Element::new(Set::Hairpin, Key::Pair(e.ip, e.ip), None));
    }
    let n = endpoints.len().min(MAX_ENDPOINTS as usize) as u32;
    out.push(Element::new(
        Set::Pick,
        Key::Mark(n),
        Some(Data::GotoPick(n)),
    ));
}

fn set(set: Set, key: Key) -> Element {
    Element::new(set, key, None)
}

/// The elements one ServicePort needs in the table of its plan's IP
/// family, sorted and without duplicates.
pub fn contribution(p: &ServicePlan, ids: &mut SlotIds) -> Vec<Element> {
    let mut out = Vec::new();
    let pr = p.protocol;
    let mut used = Vec::new();
    // The plan holds the addresses of its IP family only.
    for ip in &p.cluster_ips {
        out.push(set(Set::ClusterAddresses, Key::Addr(*ip)));
    }
    let service = |ip: &IpAddr| Key::Service(*ip, pr, p.port);
    if p.cluster_endpoints.is_empty() {
        for ip in &p.cluster_ips {
            out.push(set(Set::NoEndpoints, service(ip)));
        }
    } else if !p.cluster_ips.is_empty() {
        let g = generation(p, &p.cluster_endpoints);
        used.push((Path::Cluster, g));
        let mark = slot(
            ids.get(&p.name, Path::Cluster, g),
            p.cluster_endpoints.len(),
        );
        if let Some(t) = affinity(p) {
            out.push(set(Set::AffinitySlots(t), Key::Mark(mark)));
        }
        for ip in &p.cluster_ips {
            out.push(Element::new(
                Set::ClusterIps,
                service(ip),
                Some(Data::Mark(mark)),
            ));
        }
        out.push(set(Set::ClusterSlots, Key::Mark(mark)));
        endpoint_elements(&mut out, mark, &p.cluster_endpoints);
    }
    if !p.source_ranges.is_empty() {
        for ip in &p.load_balancer_ips {
            for r in &p.source_ranges {
                out.push(set(
                    Set::FirewallAllow,
                    Key::Allowed(*ip, pr, p.port, r.trunc()),
                ));
            }
            out.push(set(Set::FirewallKeys, service(ip)));
        }
    }
    if p.is_external() {
        let external = || p.external_ips.iter().chain(&p.load_balancer_ips);
        let node_port = p.node_port.map(|np| Key::NodePort(pr, np));
        if p.external_endpoints.is_empty() {
            let (ips, ports) = if p.external_local {
                (Set::DropExternal, Set::DropNodePorts)
            } else {
                (Set::NoEndpoints, Set::NoEndpointNodePorts)
            };
            for ip in external() {
                out.push(set(ips, service(ip)));
            }
            if let Some(k) = node_port {
                out.push(set(ports, k));
            }
        } else {
            let g = generation(p, &p.external_endpoints);
            used.push((Path::External, g));
            let mark = slot(
                ids.get(&p.name, Path::External, g),
                p.external_endpoints.len(),
            );
            if let Some(t) = affinity(p) {
                out.push(set(Set::AffinitySlots(t), Key::Mark(mark)));
            }
            let m = Some(Data::Mark(mark));
            for ip in external() {
                out.push(Element::new(Set::ExternalIps, service(ip), m));
            }
            if let Some(k) = node_port {
                out.push(Element::new(Set::NodePorts, k, m));
            }
            let policy = if p.external_local {
                Set::KeepClientSlots
            } else {
                Set::MasqueradeSlots
            };
            out.push(set(policy, Key::Mark(mark)));
            endpoint_elements(&mut out, mark, &p.external_endpoints);
        }
    }
    ids.release_unused(&p.name, &used);
    out.sort_unstable();
    out.dedup();
    out
}

/// The values one key is wanted with, each with its number of owners.
/// Nearly every key has one owner and one value, kept inline.
#[derive(Debug)]
enum Wanted {
    One(Option<Data>, u32),
    Many(BTreeMap<Option<Data>, u32>),
}

impl Wanted {
    /// The value the kernel should hold: the smallest wanted.
    fn winner(&self) -> Option<Data> {
        match self {
            Wanted::One(v, _) => *v,
            Wanted::Many(m) => m.keys().next().copied().flatten(),
        }
    }

    fn add(&mut self, value: Option<Data>) {
        match self {
            Wanted::One(v, refs) if *v == value => *refs += 1,
            Wanted::One(v, refs) => {
                *self = Wanted::Many(BTreeMap::from([(*v, *refs), (value, 1)]));
            }
            Wanted::Many(m) => *m.entry(value).or_default() += 1,
        }
    }

    /// Drops one owner of `value`; true when nobody wants the key any more.
    fn remove(&mut self, value: Option<Data>) -> bool {
        match self {
            Wanted::One(v, refs) => {
                if *v == value {
                    *refs -= 1;
                }
                *refs == 0
            }
            Wanted::Many(m) => {
                if let Some(refs) = m.get_mut(&value) {
                    *refs -= 1;
                    if *refs == 0 {
                        m.remove(&value);
                    }
                }
                if m.len() == 1
                    && let Some((v, refs)) = m.pop_first()
                {
                    *self = Wanted::One(v, refs);
                    return false;
                }
                m.is_empty()
            }
        }
    }
}

/// What the kernel holds for a key: nothing, or an element with this data.
type Held = Option<Option<Data>>;

/// Sets whose every key holds a slot mark, so only the one ServicePort
/// path the slot is for ever wants it: `endpoints` (slot . index). There
/// is nothing to count or to arbitrate, and [`Applied`] does not keep
/// them: the owner's plan makes them again when they change
/// (`contribution` is deterministic for a slot already given). At 20,000
/// Services x 8 endpoints that is 160,000 of the table's 400,000
/// elements, about 11 MiB.
pub fn slot_owned(set: Set) -> bool {
    matches!(set, Set::Endpoints)
}

/// A hairpin pair of one endpoint with itself (the only pairs ferry
/// makes): counted by address alone, 24 B a pair instead of 72.
fn self_pair(set: Set, key: &Key) -> Option<IpAddr> {
    match (set, key) {
        (Set::Hairpin, Key::Pair(a, b)) if a == b => Some(*a),
        _ => None,
    }
}

fn elements_of<'a>(
    (set, keys): (&'a Set, &'a BTreeMap<Key, Wanted>),
) -> impl Iterator<Item = Element> + 'a {
    keys.iter()
        .map(|(key, w)| Element::new(*set, *key, w.winner()))
}

/// Who wants which element, and what the kernel holds. Several ServicePorts
/// may want the same key (hairpin pairs, pick verdicts, and, with odd input,
/// one address claimed by two Services with different values): each value
/// a key is wanted with is counted, the smallest value wins, and the delta
/// is worked out per key from what the kernel had before to the winner
/// now, so that one transaction never deletes what is not there or adds a
/// key twice.
///
/// The kernel holds the winner of every key, except for keys replaced
/// since the last [`Applied::take_delta`]: for those, `pending` keeps what
/// the kernel held before.
///
/// Elements of [`slot_owned`] sets are counted, not kept: for those
/// replaced since the last delta, `owned_pending` keeps what the kernel
/// held before and what it should hold now.
#[derive(Debug, Default)]
pub struct Applied {
    wanted: BTreeMap<Set, BTreeMap<Key, Wanted>>,
    pending: BTreeMap<(Set, Key), Held>,
    /// How many slot-owned elements the kernel holds once the pending
    /// changes are applied.
    owned: usize,
    owned_pending: BTreeMap<(Set, Key), (Held, Held)>,
    /// The `hairpin` pairs of an address with itself, with how many
    /// owners want each (every other key is in `wanted`).
    hairpins: BTreeMap<IpAddr, u32>,
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

    /// What takes the kernel from holding `held` for a key to holding `now`.
    fn change(&mut self, set: Set, key: Key, held: Held, now: Held) {
        if held == now {
            return;
        }
        if let Some(old) = held {
            self.delete.push(Element::new(set, key, old));
        }
        if let Some(data) = now {
            self.add.push(Element::new(set, key, data));
        }
    }
}

impl Applied {
    fn winner(&self, set: Set, key: &Key) -> Held {
        if let Some(ip) = self_pair(set, key) {
            return self.hairpins.contains_key(&ip).then_some(None);
        }
        self.wanted.get(&set)?.get(key).map(Wanted::winner)
    }

    fn touch(&mut self, set: Set, key: Key) {
        if !self.pending.contains_key(&(set, key)) {
            let held = self.winner(set, &key);
            self.pending.insert((set, key), held);
        }
    }

    /// What the kernel holds after a full load of these elements, each
    /// counted once per copy: each owner's contribution must come without
    /// duplicates, as [`contribution`] makes it. Built sorted, so the
    /// maps' nodes are full: at 20,000 Services x 8 endpoints, 31 MiB
    /// instead of the 48 MiB that one owner's `replace` after another left
    /// (by heaptrack), with no pending entry per element on the way.
    ///
    /// Also returns the [`slot_owned`] elements, sorted: they are to be
    /// loaded with [`Applied::kept`]'s, and are not kept here.
    pub fn from_elements(mut elements: Vec<Element>) -> (Self, Vec<Element>) {
        elements.sort_unstable();
        let mut wanted: BTreeMap<Set, BTreeMap<Key, Wanted>> = BTreeMap::new();
        let mut hairpins: Vec<(IpAddr, u32)> = Vec::new();
        let mut owned = 0;
        let mut rest = elements.as_slice();
        while let Some(first) = rest.first() {
            let set = first.set;
            let n = rest.partition_point(|e| e.set == set);
            let (of_set, after) = rest.split_at(n);
            rest = after;
            if slot_owned(set) {
                owned += of_set.len();
                continue;
            }
            let mut keys: Vec<(Key, Wanted)> = Vec::new();
            for same_key in of_set.chunk_by(|a, b| a.key == b.key) {
                if let Some(ip) = self_pair(set, &same_key[0].key) {
                    hairpins.push((ip, same_key.len() as u32));
                    continue;
                }
                let mut values = same_key.chunk_by(|a, b| a.data == b.data);
                let mut w = match values.next() {
                    Some(v) => Wanted::One(v[0].data, v.len() as u32),
                    None => unreachable!("chunks are never empty"),
                };
                for v in values {
                    for _ in 0..v.len() {
                        w.add(v[0].data);
                    }
                }
                keys.push((same_key[0].key, w));
            }
            if !keys.is_empty() {
                wanted.insert(set, keys.into_iter().collect());
            }
        }
        elements.retain(|e| slot_owned(e.set));
        elements.shrink_to_fit();
        let applied = Applied {
            wanted,
            pending: BTreeMap::new(),
            owned,
            owned_pending: BTreeMap::new(),
            hairpins: hairpins.into_iter().collect(),
        };
        (applied, elements)
    }

    /// Replaces one owner's elements by others (both sorted, as
    /// [`contribution`] makes them); [`Applied::take_delta`] then says what
    /// the kernel must change.
    pub fn replace(&mut self, old: &[Element], new: &[Element]) {
        for e in old.iter().filter(|e| new.binary_search(e).is_err()) {
            if slot_owned(e.set) {
                // Its one owner had it: the kernel holds it (or did
                // before an earlier replace in this batch).
                let p = self
                    .owned_pending
                    .entry((e.set, e.key))
                    .or_insert((Some(e.data), Some(e.data)));
                p.1 = None;
                self.owned = self.owned.saturating_sub(1);
                continue;
            }
            self.touch(e.set, e.key);
            if let Some(ip) = self_pair(e.set, &e.key) {
                if let Some(n) = self.hairpins.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.hairpins.remove(&ip);
                    }
                }
                continue;
            }
            if let Some(keys) = self.wanted.get_mut(&e.set)
                && let Some(w) = keys.get_mut(&e.key)
                && w.remove(e.data)
            {
                keys.remove(&e.key);
            }
        }
        for e in new.iter().filter(|e| old.binary_search(e).is_err()) {
            if slot_owned(e.set) {
                // Nobody else has the key: unless this owner's old value
                // went above, the kernel holds nothing for it.
                let p = self
                    .owned_pending
                    .entry((e.set, e.key))
                    .or_insert((None, None));
                p.1 = Some(e.data);
                self.owned += 1;
                continue;
            }
            self.touch(e.set, e.key);
            if let Some(ip) = self_pair(e.set, &e.key) {
                *self.hairpins.entry(ip).or_default() += 1;
                continue;
            }
            let keys = self.wanted.entry(e.set).or_default();
            match keys.get_mut(&e.key) {
                Some(w) => w.add(e.data),
                None => {
                    keys.insert(e.key, Wanted::One(e.data, 1));
                }
            }
        }
    }

    /// The kernel changes for everything replaced since the last call.
    pub fn take_delta(&mut self) -> Delta {
        let mut delta = Delta::default();
        for ((set, key), held) in std::mem::take(&mut self.pending) {
            let winner = self.winner(set, &key);
            delta.change(set, key, held, winner);
        }
        for ((set, key), (held, now)) in std::mem::take(&mut self.owned_pending) {
            delta.change(set, key, held, now);
        }
        delta
    }

    /// How many elements the kernel holds.
    pub fn len(&self) -> usize {
        let wanted: usize =
            self.wanted.values().map(BTreeMap::len).sum::<usize>() + self.hairpins.len();
        let pending = self.pending.iter().map(|((set, key), held)| {
            i64::from(held.is_some()) - i64::from(self.winner(*set, key).is_some())
        });
        let owned = self
            .owned_pending
            .values()
            .map(|(held, now)| i64::from(held.is_some()) - i64::from(now.is_some()));
        (wanted as i64 + pending.sum::<i64>() + self.owned as i64 + owned.sum::<i64>()) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element the kernel holds once the last delta is applied, set
    /// by set, but for the [`slot_owned`] ones, which are not kept.
    pub fn kept(&self) -> impl Iterator<Item = Element> + '_ {
        use std::ops::Bound::{Excluded, Unbounded};
        let hairpins = self
            .hairpins
            .keys()
            .map(|ip| Element::new(Set::Hairpin, Key::Pair(*ip, *ip), None));
        (self.wanted.range(..=Set::Hairpin).flat_map(elements_of))
            .chain(hairpins)
            .chain((self.wanted.range((Excluded(Set::Hairpin), Unbounded))).flat_map(elements_of))
    }

    /// Session-affinity timeouts in use (each needs its set and rule).
    pub fn affinity_timeouts(&self) -> Vec<u32> {
        self.wanted
            .iter()
            .filter(|(_, keys)| !keys.is_empty())
            .filter_map(|(set, _)| match set {
                Set::AffinitySlots(t) => Some(*t),
                _ => None,
            })
            .collect()
    }

    /// Endpoint counts that need a pick chain.
    pub fn pick_counts(&self) -> Vec<u32> {
        self.wanted
            .get(&Set::Pick)
            .into_iter()
            .flat_map(|keys| keys.keys())
            .filter_map(|k| match k {
                Key::Mark(n) => Some(*n),
                _ => None,
            })
            .collect()
    }
}

/// nft commands for a delta; deletes come first so a changed value can be re-added.
pub fn render(delta: &Delta, family: &str, table: &str) -> String {
    let mut s = String::new();
    render_into(
        &mut s,
        "delete",
        delta.delete.iter().copied(),
        family,
        table,
    );
    render_into(&mut s, "add", delta.add.iter().copied(), family, table);
    s
}

/// Appends `verb element` commands for `elements` (keys only for deletes),
/// grouped by set.
pub fn render_into(
    s: &mut String,
    verb: &str,
    elements: impl IntoIterator<Item = Element>,
    family: &str,
    table: &str,
) {
    let with_data = verb != "delete";
    let mut by_set: BTreeMap<Cow<'static, str>, Vec<String>> = BTreeMap::new();
    for e in elements {
        by_set
            .entry(e.set.name())
            .or_default()
            .push(e.text(with_data));
    }
    for (set, items) in by_set {
        for chunk in items.chunks(4096) {
            s.push_str(&format!(
                "{verb} element {family} {table} {set} {{ {} }}\n",
                chunk.join(", ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slots_never_use_the_masquerade_bit_and_stay_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for id in (0..2_000).chain(super::MAX_ID - 2_000..=super::MAX_ID) {
            let s = super::slot(id, 3);
            assert_eq!(s & super::MASQUERADE_BIT, 0, "id {id}");
            assert_eq!(s & 0xfff, 3);
            assert!(seen.insert(s), "id {id} collides");
        }
    }

    use super::*;

    fn hairpin(ip: &str) -> Element {
        let ip: IpAddr = ip.parse().unwrap();
        Element::new(Set::Hairpin, Key::Pair(ip, ip), None)
    }

    fn external(mark: u32) -> Element {
        Element::new(
            Set::ExternalIps,
            Key::Service("1.2.3.4".parse().unwrap(), Protocol::Tcp, 80),
            Some(Data::Mark(mark)),
        )
    }

    #[test]
    fn a_key_two_owners_want_stays_until_both_let_go() {
        let mut a = Applied::default();
        let x = [hairpin("10.0.0.1")];
        a.replace(&[], &x);
        a.replace(&[], &x);
        assert_eq!(a.take_delta().add.len(), 1, "added once");
        a.replace(&x, &[]);
        assert!(a.take_delta().is_empty(), "still wanted by the other owner");
        a.replace(&x, &[]);
        assert_eq!(a.take_delta().delete.len(), 1);
        assert!(a.is_empty());
    }

    #[test]
    fn conflicting_values_for_one_key_resolve_without_losing_an_owner() {
        let mut a = Applied::default();
        let one = [external(0x1001)];
        let two = [external(0x2001)];
        // Both in one batch: one add of the winner, no delete of what is not there.
        a.replace(&[], &two);
        a.replace(&[], &one);
        let d = a.take_delta();
        assert!(d.delete.is_empty());
        assert_eq!(d.add, one.to_vec());
        // The winner goes: the other owner's value takes its place.
        a.replace(&one, &[]);
        let d = a.take_delta();
        assert_eq!(d.delete.len(), 1);
        assert_eq!(d.add, two.to_vec());
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn a_full_load_holds_what_one_replace_after_another_would() {
        let owners = [
            vec![hairpin("10.0.0.1"), external(0x2001)],
            vec![hairpin("10.0.0.1"), external(0x1001)],
            vec![hairpin("10.0.0.2")],
            vec![external(0x2001)],
        ];
        let mut one_by_one = Applied::default();
        for c in &owners {
            one_by_one.replace(&[], c);
        }
        one_by_one.take_delta();
        let (mut loaded, owned) = Applied::from_elements(owners.concat());
        assert!(owned.is_empty());
        let all: Vec<Element> = one_by_one.kept().collect();
        assert_eq!(loaded.kept().collect::<Vec<_>>(), all);
        assert_eq!(loaded.len(), 3);
        assert!(loaded.take_delta().is_empty());
        // Owners count alike: the smaller external value goes, the other stays.
        for a in [&mut one_by_one, &mut loaded] {
            a.replace(&owners[1], &[]);
            a.replace(&owners[0], &[]);
        }
        assert_eq!(loaded.take_delta(), one_by_one.take_delta());
        assert_eq!(
            loaded.kept().collect::<Vec<_>>(),
            one_by_one.kept().collect::<Vec<_>>()
        );
        assert_eq!(
            loaded.kept().collect::<Vec<_>>(),
            [external(0x2001), hairpin("10.0.0.2")]
        );
    }

    fn endpoint(slot: u32, i: u32, ip: &str) -> Element {
        Element::new(
            Set::Endpoints,
            Key::Endpoint(slot, i),
            Some(Data::Endpoint(ip.parse().unwrap(), 8080)),
        )
    }

    #[test]
    fn slot_owned_elements_are_counted_and_changed_but_not_kept() {
        let a0 = [endpoint(0x1001, 0, "10.0.0.1"), hairpin("10.0.0.1")];
        let (mut a, owned) = Applied::from_elements(a0.to_vec());
        assert_eq!(owned, [a0[0]], "to be loaded by the caller");
        assert_eq!(a.kept().collect::<Vec<_>>(), [a0[1]]);
        assert_eq!(a.len(), 2);
        // The endpoint moves: its old value goes, the new one comes.
        let a1 = [endpoint(0x1001, 0, "10.0.0.2"), hairpin("10.0.0.2")];
        a.replace(&a0, &a1);
        assert_eq!(a.len(), 2, "the kernel's count before the delta");
        let d = a.take_delta();
        let mut deleted = d.delete.clone();
        deleted.sort();
        assert_eq!(
            deleted,
            [a0[0], a0[1]]
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(d.add.contains(&a1[0]) && d.add.contains(&a1[1]));
        // Two changes in one batch: the kernel only sees the net one.
        let a2 = [
            endpoint(0x1001, 0, "10.0.0.3"),
            endpoint(0x1001, 1, "10.0.0.4"),
        ];
        a.replace(&a1, &a2);
        a.replace(&a2, &a1);
        let d = a.take_delta();
        assert!(d.is_empty(), "{d:?}");
        a.replace(&a1, &[]);
        assert_eq!(a.take_delta().delete.len(), 2);
        assert!(a.is_empty());
    }

    #[test]
    fn elements_take_little_memory() {
        // Hundreds of thousands of them at 20k Services.
        assert!(
            std::mem::size_of::<Element>() <= 72,
            "{}",
            std::mem::size_of::<Element>()
        );
    }
}
