//! The nftables backend: ferry's own table, loaded whole at start (and
//! after a failure or an outside change), then kept in step with the plan
//! by element-only transactions.
//!
//! The table (and interval-set elements) go in with `nft -f`; every other
//! element change goes over netlink as one batch, one transaction per
//! sync. Transactions carry only changed elements and never verdict
//! changes, so their cost does not grow with the cluster (measured: about
//! 0.1 ms for one change at 20k and at 100k services).
//!
//! Elements are typed values (`sets.rs` defines every set once); the
//! backend keeps each ServicePort's elements and who wants which key
//! (`elements.rs`), and [`NftBackend::read_back`] decodes what the kernel
//! holds for comparison with [`NftBackend::programmed`].

pub mod elements;
pub mod netlink;
pub mod ruleset;
pub mod sets;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_sys::{Tool, ToolError};

use crate::{Backend, BackendError};

use ferry_model::ServicePortName;
use ipnet::IpNet;

use crate::plan::{Family, ProxyPlan, ServicePlan};
use elements::{Applied, SlotIds, contribution, render, render_into, slot_owned};
use ruleset::TABLE;
use sets::{Element, Key, Set};

/// A value that differs between loads (so a stale canary does not pass).
fn canary_value() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ (t.as_secs() as u32) ^ std::process::id()
}

/// Elements per netlink batch of a bulk load (each batch fits
/// `netlink::MAX_BATCH_BYTES`).
const BULK_BATCH: usize = 1500;

/// Endpoint counts whose pick chain is always there.
const PRESET_PICKS: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(transparent)]
    Run(ToolError),
    #[error("nft refused the transaction: {0}")]
    Refused(String),
}

pub use crate::SyncStats;

pub struct NftBackend {
    ids: SlotIds,
    /// The plan each ServicePort's elements in `applied` were made from
    /// (the proxy's own `Arc`, so this costs a pointer): when it changes,
    /// the old elements are made again from it rather than kept (keeping
    /// them cost 27 MiB at 20,000 Services x 8 endpoints). `contribution`
    /// gives the same elements again, since the ServicePort's slot ids
    /// are still those it was given then.
    applied_plans: BTreeMap<ServicePortName, Arc<ServicePlan>>,
    applied: Applied,
    picks: BTreeSet<u32>,
    /// Session-affinity timeouts the loaded table has rules for.
    timeouts: BTreeSet<u32>,
    cluster_cidrs: Vec<Element>,
    loaded: bool,
    family: Family,
    /// Run nft in this network namespace (benchmarks and tests); the agent
    /// itself already runs in its node's namespace.
    netns: Option<String>,
    /// Element transactions go over netlink; `nft` is used for loading the
    /// table and for what netlink here does not encode (interval sets).
    netlink: Option<netlink::Netlink>,
    /// The table's kernel handle and canary element after the last full
    /// load: if either changes, someone else altered the table.
    loaded_as: Option<(u64, Element, usize)>,
}

fn run_nft(netns: Option<&str>, text: &str) -> Result<(), NftError> {
    Tool::new("nft")
        .args(["-f", "-"])
        .netns(netns)
        .stdin(text)
        .run()
        .map(drop)
        .map_err(|e| match e {
            ToolError::Failed { stderr, .. } => NftError::Refused(stderr),
            other => NftError::Run(other),
        })
}

fn cidr_elements(family: Family, cidrs: &[IpNet]) -> Vec<Element> {
    let mut out: Vec<Element> = cidrs
        .iter()
        .filter(|c| family.has(&c.addr()))
        .map(|c| Element::new(Set::ClusterCidrs, Key::Net(c.trunc()), None))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl NftBackend {
    /// A backend for ferry's table of `family` (`ip ferry` or `ip6 ferry`).
    pub fn new(family: Family) -> Self {
        NftBackend {
            family,
            ids: SlotIds::default(),
            applied_plans: BTreeMap::new(),
            applied: Applied::default(),
            picks: BTreeSet::new(),
            timeouts: BTreeSet::new(),
            cluster_cidrs: Vec::new(),
            loaded: false,
            netns: None,
            netlink: None,
            loaded_as: None,
        }
    }

    /// A backend that programs the table of network namespace `netns`.
    pub fn in_netns(netns: &str, family: Family) -> Self {
        NftBackend {
            netns: Some(netns.to_string()),
            ..Self::new(family)
        }
    }

    /// Elements currently programmed.
    pub fn elements(&self) -> usize {
        self.applied.len()
    }

    /// Loads the whole table in one transaction (replacing any earlier one).
    pub fn full_sync(
        &mut self,
        plan: &ProxyPlan,
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, NftError> {
        let start = Instant::now();
        // Until this load succeeds nothing is known about the kernel.
        self.loaded = false;
        self.loaded_as = None;
        self.ids = SlotIds::default();
        self.applied_plans.clear();
        let mut all = Vec::new();
        for (name, p) in &plan.services {
            all.extend(contribution(p, &mut self.ids));
            self.applied_plans.insert(name.clone(), p.clone());
        }
        self.cluster_cidrs = cidr_elements(self.family, cluster_cidrs);
        all.extend_from_slice(&self.cluster_cidrs);
        let (applied, owned) = Applied::from_elements(all);
        self.applied = applied;
        // Pick chains for common endpoint counts exist from the start, so a
        // change rarely needs a new chain (which only a full load adds: nft
        // cannot add such a rule to a live table).
        let mut picks: BTreeSet<u32> = (1..=PRESET_PICKS).collect();
        picks.extend(self.applied.pick_counts());
        let picks: Vec<u32> = picks.into_iter().collect();
        let timeouts = self.applied.affinity_timeouts();
        let mut text = format!(
            "add table {f} {TABLE}\ndelete table {f} {TABLE}\n",
            f = self.family.nft()
        );
        text.push_str(&ruleset::table(self.family, &picks, &timeouts));
        let added = self.applied.len();
        // With no table of ours in the kernel yet (a first start) nothing
        // depends on atomicity: the table goes in with `nft`, and the
        // elements follow over netlink, several times faster than `nft`
        // parses them. A table being replaced is replaced in one transaction.
        let fresh = self
            .netlink()
            .is_some_and(|nl| matches!(nl.table_handle(TABLE), Ok(None)));
        let f = self.family.nft();
        if fresh {
            let by_nft = self.applied.kept().filter(|e| e.set.is_interval());
            render_into(&mut text, "add", by_nft, f, TABLE);
        } else {
            let all = self.applied.kept().chain(owned.iter().copied());
            render_into(&mut text, "add", all, f, TABLE);
        }
        let canary = Element::new(Set::Canary, Key::Mark(canary_value()), None);
        text.push_str(&format!(
            "add element {f} {TABLE} canary {{ {} }}\n",
            canary.text(false)
        ));
        run_nft(self.netns.as_deref(), &text)?;
        drop(text);
        if fresh {
            // Endpoints, picks and slot sets first, the maps that lead to
            // them last: each batch is its own transaction, and a Service
            // is found only once what it leads to is there.
            let lookup =
                |e: &Element| matches!(e.set, Set::ClusterIps | Set::ExternalIps | Set::NodePorts);
            let applied = &self.applied;
            let first = applied
                .kept()
                .filter(|e| !e.set.is_interval() && !lookup(e))
                .chain(owned.iter().copied());
            let last = applied.kept().filter(lookup);
            let mut batch = Vec::with_capacity(BULK_BATCH);
            let nl = match self.netlink.as_mut() {
                Some(nl) => nl,
                None => {
                    return Err(NftError::Refused(
                        "no netlink socket for the bulk load".into(),
                    ));
                }
            };
            for e in first.chain(last) {
                batch.push(e);
                if batch.len() == BULK_BATCH {
                    nl.apply(TABLE, &[], &batch)
                        .map_err(|e| NftError::Refused(e.to_string()))?;
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                nl.apply(TABLE, &[], &batch)
                    .map_err(|e| NftError::Refused(e.to_string()))?;
            }
        }
        self.loaded_as = self.netlink().and_then(|nl| {
            let handle = nl.table_handle(TABLE).ok().flatten()?;
            let rules = nl.rule_count(TABLE).ok()?;
            Some((handle, canary, rules))
        });
        self.picks = picks.into_iter().collect();
        self.timeouts = timeouts.into_iter().collect();
        self.loaded = true;
        Ok(SyncStats {
            full: true,
            added,
            deleted: 0,
            took: start.elapsed(),
        })
    }

    /// Applies what changed for the named ServicePorts (and the cluster CIDRs).
    pub fn sync(
        &mut self,
        plan: &ProxyPlan,
        changed: &[ServicePortName],
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, NftError> {
        if !self.loaded || self.ids.exhausted() {
            return self.full_sync(plan, cluster_cidrs);
        }
        let start = Instant::now();
        for name in changed {
            let old = match self.applied_plans.remove(name) {
                Some(p) => contribution(&p, &mut self.ids),
                None => Vec::new(),
            };
            let new = match plan.services.get(name) {
                Some(p) => {
                    self.applied_plans.insert(name.clone(), p.clone());
                    contribution(p, &mut self.ids)
                }
                None => {
                    self.ids_release(name);
                    Vec::new()
                }
            };
            self.applied.replace(&old, &new);
        }
        let cidrs = cidr_elements(self.family, cluster_cidrs);
        if cidrs != self.cluster_cidrs {
            let old = std::mem::replace(&mut self.cluster_cidrs, cidrs.clone());
            self.applied.replace(&old, &cidrs);
        }
        let delta = self.applied.take_delta();
        if delta.is_empty() {
            return Ok(SyncStats {
                took: start.elapsed(),
                ..Default::default()
            });
        }
        // A new pick chain or affinity rule is a change of rules: reload whole.
        let new_pick = self
            .applied
            .pick_counts()
            .iter()
            .any(|n| !self.picks.contains(n));
        let new_timeout = self
            .applied
            .affinity_timeouts()
            .iter()
            .any(|t| !self.timeouts.contains(t));
        if new_pick || new_timeout {
            return self.full_sync(plan, cluster_cidrs);
        }
        // Interval sets need start and end elements: nft encodes those.
        let via_netlink = !delta
            .delete
            .iter()
            .chain(&delta.add)
            .any(|e| e.set.is_interval());
        if via_netlink && let Some(nl) = self.netlink() {
            match nl.apply(TABLE, &delta.delete, &delta.add) {
                Ok(()) => {
                    return Ok(SyncStats {
                        full: false,
                        added: delta.add.len(),
                        deleted: delta.delete.len(),
                        took: start.elapsed(),
                    });
                }
                Err(netlink::NetlinkError::TooLarge) => {}
                Err(e) => {
                    self.loaded = false;
                    let sample: Vec<String> = delta
                        .delete
                        .iter()
                        .map(|e| format!("delete {e}"))
                        .chain(delta.add.iter().map(|e| format!("add {e}")))
                        .take(60)
                        .collect();
                    return Err(NftError::Refused(format!(
                        "{e} (transaction: {})",
                        sample.join("; ")
                    )));
                }
            }
        }
        let text = render(&delta, self.family.nft(), TABLE);
        match run_nft(self.netns.as_deref(), &text) {
            Ok(()) => Ok(SyncStats {
                full: false,
                added: delta.add.len(),
                deleted: delta.delete.len(),
                took: start.elapsed(),
            }),
            Err(e) => {
                // The kernel may now differ from what we think: reload whole next time.
                self.loaded = false;
                Err(e)
            }
        }
    }

    fn netlink(&mut self) -> Option<&mut netlink::Netlink> {
        if self.netlink.is_none() {
            self.netlink = match &self.netns {
                Some(ns) => netlink::Netlink::open_in(ns, self.family),
                None => netlink::Netlink::open(self.family),
            }
            .ok();
        }
        self.netlink.as_mut()
    }

    /// Whether ferry's table is still the one it loaded, untouched by
    /// others: same kernel handle (not deleted and made again), same number
    /// of rules (not flushed) and its canary element still there (sets not
    /// flushed). Three small netlink requests; element edits by others to
    /// ferry's maps are not noticed (nothing short of reading every element
    /// would).
    pub fn table_intact(&mut self) -> bool {
        let Some((handle, canary, rules)) = self.loaded_as else {
            return false;
        };
        let Some(nl) = self.netlink() else {
            return false;
        };
        nl.table_handle(TABLE).ok().flatten() == Some(handle)
            && nl.rule_count(TABLE).ok() == Some(rules)
            && nl.has_element(TABLE, &canary).unwrap_or(false)
    }

    /// Every element this backend has programmed (the canary included),
    /// as [`NftBackend::read_back`] should find them.
    pub fn programmed(&self) -> BTreeSet<Element> {
        let mut out: BTreeSet<Element> = self.applied.kept().collect();
        // The slot-owned ones, made again from the plans they came from.
        let mut ids = self.ids.clone();
        for p in self.applied_plans.values() {
            out.extend(
                contribution(p, &mut ids)
                    .into_iter()
                    .filter(|e| slot_owned(e.set)),
            );
        }
        out.extend(self.loaded_as.as_ref().map(|(_, canary, _)| *canary));
        out
    }

    /// Every element of the sets ferry programs, as the kernel holds them,
    /// decoded: a dump of each. The `affinity` map is left out: the
    /// kernel fills it (and the IPv6 table has none); `netlink::Netlink::elements`
    /// lists it.
    pub fn read_back(&mut self) -> Result<BTreeSet<Element>, NftError> {
        let sets: Vec<Set> = Set::FIXED
            .into_iter()
            .filter(|s| *s != Set::Affinity)
            .chain(self.timeouts.iter().map(|t| Set::AffinitySlots(*t)))
            .collect();
        let nl = self
            .netlink()
            .ok_or_else(|| NftError::Refused("no netlink socket".into()))?;
        let mut out = BTreeSet::new();
        for set in sets {
            out.extend(
                nl.elements(TABLE, set)
                    .map_err(|e| NftError::Refused(e.to_string()))?,
            );
        }
        Ok(out)
    }

    fn ids_release(&mut self, name: &ServicePortName) {
        self.ids.release(name);
    }

    /// Removes ferry's table (`ferry agent --cleanup`).
    pub fn cleanup() -> Result<(), NftError> {
        run_nft(
            None,
            &format!(
                "add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip6 {TABLE}\ndelete table ip6 {TABLE}\n"
            ),
        )
    }
}

impl Backend for NftBackend {
    fn mode(&self) -> &'static str {
        "nftables"
    }

    fn full_sync(
        &mut self,
        plan: &ProxyPlan,
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, BackendError> {
        Ok(NftBackend::full_sync(self, plan, cluster_cidrs)?)
    }

    fn sync(
        &mut self,
        plan: &ProxyPlan,
        changed: &[ServicePortName],
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, BackendError> {
        Ok(NftBackend::sync(self, plan, changed, cluster_cidrs)?)
    }

    fn intact(&mut self) -> bool {
        self.table_intact()
    }

    fn check_period(&self) -> Duration {
        // Three small netlink requests: cheap at any size.
        Duration::from_secs(1)
    }

    fn size(&self) -> usize {
        self.elements()
    }
}
