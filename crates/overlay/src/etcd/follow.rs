//! Following the other nodes' leases in etcd, as flannel's watch does:
//! list every lease with the store's revision, then wait (bounded) for the
//! changes after that revision. A put is a lease added or changed (a node
//! renewed or took a new MAC), a delete a lease removed or expired (etcd
//! deletes the key when its etcd lease runs out). When the revision is
//! older than etcd keeps (compacted), the answer is a fresh list instead,
//! and `PeerFollower` turns it into the events that bring its view there.
//!
//! Touches sockets (through the store's client).

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::EtcdStore;
use super::api::WatchRead;
use crate::lease::{Lease, LeaseAttrs};
use crate::store::StoreError;

/// Every lease, as of `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseList {
    pub leases: Vec<Lease>,
    pub revision: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A new lease, or a lease whose value changed.
    Added(Lease),
    /// Deleted or expired.
    Removed(Ipv4Net),
}

/// What happened after a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseChanges {
    /// The changes up to `revision` (none when the wait ran out).
    Events {
        events: Vec<LeaseEvent>,
        revision: i64,
    },
    /// The revision was compacted away: everything, anew.
    Relisted(LeaseList),
}

impl EtcdStore {
    /// Every lease and the revision they are as of. Keys or values that
    /// are not flannel's are skipped, as flannel skips them.
    pub fn list(&self) -> Result<LeaseList, StoreError> {
        let r = self.client.get_prefix(&self.subnets_prefix())?;
        let mut leases: Vec<Lease> = r
            .kvs
            .iter()
            .filter_map(|kv| self.parse_lease(&kv.key, &kv.value))
            .collect();
        leases.sort_by_key(|l| l.subnet);
        Ok(LeaseList {
            leases,
            revision: r.header.revision,
        })
    }

    /// The changes after `revision`, waiting up to `wait` for the first.
    pub fn changes(&self, revision: i64, wait: Duration) -> Result<LeaseChanges, StoreError> {
        match self
            .client
            .watch_once(&self.subnets_prefix(), revision + 1, wait)?
        {
            WatchRead::Compacted => Ok(LeaseChanges::Relisted(self.list()?)),
            WatchRead::Events { events, revision } => {
                let events = events
                    .into_iter()
                    .filter_map(|e| {
                        if e.deleted {
                            self.parse_subnet(&e.kv.key).map(LeaseEvent::Removed)
                        } else {
                            self.parse_lease(&e.kv.key, &e.kv.value)
                                .map(LeaseEvent::Added)
                        }
                    })
                    .collect();
                Ok(LeaseChanges::Events { events, revision })
            }
        }
    }
}

/// A node's view of its peers' leases, kept current from etcd.
pub struct PeerFollower {
    known: BTreeMap<Ipv4Net, LeaseAttrs>,
    revision: i64,
}

impl PeerFollower {
    /// Lists the leases: the view starts with them.
    pub fn start(store: &EtcdStore) -> Result<PeerFollower, StoreError> {
        let mut f = PeerFollower {
            known: BTreeMap::new(),
            revision: 0,
        };
        f.replace(store.list()?);
        Ok(f)
    }

    pub fn leases(&self) -> impl Iterator<Item = Lease> + '_ {
        self.known.iter().map(|(s, a)| Lease {
            subnet: *s,
            attrs: a.clone(),
        })
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Waits up to `wait` for changes and applies them; returns them (an
    /// empty list when nothing changed). After a compaction the events are
    /// the difference between the old view and the fresh list.
    pub fn next(
        &mut self,
        store: &EtcdStore,
        wait: Duration,
    ) -> Result<Vec<LeaseEvent>, StoreError> {
        match store.changes(self.revision, wait)? {
            LeaseChanges::Events { events, revision } => {
                for e in &events {
                    match e {
                        LeaseEvent::Added(l) => {
                            self.known.insert(l.subnet, l.attrs.clone());
                        }
                        LeaseEvent::Removed(s) => {
                            self.known.remove(s);
                        }
                    }
                }
                self.revision = self.revision.max(revision);
                Ok(events)
            }
            LeaseChanges::Relisted(list) => Ok(self.replace(list)),
        }
    }

    /// Makes the view `list`; the events that took it there.
    fn replace(&mut self, list: LeaseList) -> Vec<LeaseEvent> {
        let fresh: BTreeMap<Ipv4Net, LeaseAttrs> = list
            .leases
            .into_iter()
            .map(|l| (l.subnet, l.attrs))
            .collect();
        let mut events: Vec<LeaseEvent> = self
            .known
            .keys()
            .filter(|s| !fresh.contains_key(s))
            .map(|s| LeaseEvent::Removed(*s))
            .collect();
        events.extend(
            fresh
                .iter()
                .filter(|(s, a)| self.known.get(s) != Some(a))
                .map(|(s, a)| {
                    LeaseEvent::Added(Lease {
                        subnet: *s,
                        attrs: a.clone(),
                    })
                }),
        );
        self.known = fresh;
        self.revision = list.revision;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(subnet: &str, ip: [u8; 4]) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs {
                public_ip: ip.into(),
                backend_type: "host-gw".into(),
                backend_data: None,
            },
        }
    }

    #[test]
    fn a_relist_yields_exactly_what_changed_in_between() {
        let mut f = PeerFollower {
            known: BTreeMap::new(),
            revision: 0,
        };
        let a = lease("10.1.1.0/24", [10, 0, 0, 1]);
        let b = lease("10.1.2.0/24", [10, 0, 0, 2]);
        let b2 = lease("10.1.2.0/24", [10, 0, 0, 9]);
        let c = lease("10.1.3.0/24", [10, 0, 0, 3]);
        f.replace(LeaseList {
            leases: vec![a.clone(), b],
            revision: 5,
        });
        let events = f.replace(LeaseList {
            leases: vec![b2.clone(), c.clone()],
            revision: 9,
        });
        assert_eq!(
            events,
            vec![
                LeaseEvent::Removed(a.subnet),
                LeaseEvent::Added(b2.clone()),
                LeaseEvent::Added(c.clone())
            ]
        );
        assert_eq!(f.leases().collect::<Vec<_>>(), vec![b2, c]);
        assert_eq!(f.revision(), 9);
    }
}
