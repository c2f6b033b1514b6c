//! The etcd lease store, speaking flannel's keys so that ferry nodes and
//! flannel nodes share one etcd: the config at `<prefix>/config`, one key
//! per lease at `<prefix>/subnets/a.b.c.d-N` holding flannel's JSON value
//! and attached to an etcd lease of 24 h, so that etcd itself deletes the
//! key of a node that stopped renewing.
//!
//! As flannel's `pkg/subnet/etcd/registry.go` does: a lease is created by
//! granting an etcd lease and putting the key in a transaction that
//! requires the key not to exist (create_revision 0; flannel compares the
//! version, which is 0 exactly then), so two nodes never get one subnet;
//! the grant is revoked when the transaction fails. Renewal grants a fresh
//! etcd lease and puts the value again with it. Where ferry is stricter:
//! flannel's renewal put is unconditional, ferry's is a transaction on the
//! key's mod_revision, so a node whose lease expired and was taken by
//! another node is told so instead of overwriting it; and the etcd lease
//! the key left behind is revoked rather than left to expire.
//!
//! Following peers (list, then watch from the list's revision, relist
//! when etcd compacted that revision away) is in `follow`. The JSON
//! gateway client is `api` over `http` (ARCHITECTURE.md says why not
//! gRPC). No TLS yet (flanneld's `--etcd-certfile/keyfile/cafile`).
//!
//! Touches sockets (etcd's client port).

mod api;
mod follow;
mod http;

use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

pub use api::EtcdError;
pub use follow::{LeaseChanges, LeaseEvent, LeaseList, PeerFollower};
pub use http::HttpError;

use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseAttrs, parse_key, subnet_key};
use crate::store::{LeaseStore, StoreError};

/// flanneld's `--etcd-prefix` default.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";

/// How to reach etcd: flanneld's `--etcd-endpoints` and `--etcd-prefix`,
/// and the bounds on each request.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `http://host:port` URLs, tried in order.
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub connect_timeout: Duration,
    /// The bound on one request's answer (not on a watch's wait).
    pub request_timeout: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Leases in etcd, as flannel keeps them.
pub struct EtcdStore {
    client: api::Client,
    prefix: String,
}

impl EtcdStore {
    /// Checks the endpoint URLs; connects only when first used.
    pub fn new(options: &EtcdOptions) -> Result<EtcdStore, StoreError> {
        let client = api::Client::new(
            &options.endpoints,
            options.connect_timeout,
            options.request_timeout,
        )?;
        Ok(EtcdStore {
            client,
            prefix: options.prefix.trim_end_matches('/').to_string(),
        })
    }

    /// `<prefix>/config`.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets/`: every lease key starts with it.
    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// `<prefix>/subnets/a.b.c.d-N`.
    pub fn lease_key(&self, subnet: Ipv4Net) -> String {
        format!("{}{}", self.subnets_prefix(), subnet_key(subnet))
    }

    /// The time left on `subnet`'s lease; `None` when nobody holds it.
    pub fn time_left(&self, subnet: Ipv4Net) -> Result<Option<Duration>, StoreError> {
        let r = self.client.get(&self.lease_key(subnet))?;
        match r.kvs.first() {
            Some(kv) if kv.lease != 0 => Ok(self.client.time_to_live(kv.lease)?),
            // A key without a lease never expires.
            Some(_) => Ok(Some(Duration::MAX)),
            None => Ok(None),
        }
    }

    /// Deletes `subnet`'s lease (a node leaving the cluster).
    pub fn delete(&self, subnet: Ipv4Net) -> Result<(), StoreError> {
        Ok(self.client.delete(&self.lease_key(subnet))?)
    }

    /// Compacts etcd's history up to `revision`, as an operator's
    /// `etcdctl compaction` (or etcd's auto-compaction) does.
    pub fn compact(&self, revision: i64) -> Result<(), StoreError> {
        Ok(self.client.compact(revision)?)
    }

    /// Puts `lease` under a fresh etcd lease of `ttl`, if the key does not
    /// exist (`mod_revision` None) or was last changed at `mod_revision`;
    /// the grant is revoked when the put does not happen.
    fn put_leased(
        &self,
        lease: &Lease,
        ttl: Duration,
        mod_revision: Option<i64>,
    ) -> Result<bool, StoreError> {
        let key = self.lease_key(lease.subnet);
        let id = self.client.grant(ttl)?;
        let put = self
            .client
            .put_if(&key, lease.attrs.to_json().as_bytes(), id, mod_revision);
        if !matches!(put, Ok(true)) {
            // Best effort: an unused grant expires by itself anyway.
            let _ = self.client.revoke(id);
        }
        Ok(put?)
    }
}

impl LeaseStore for EtcdStore {
    fn config(&self) -> Result<NetworkConfig, StoreError> {
        let key = self.config_key();
        let r = self.client.get(&key)?;
        let kv = r.kvs.first().ok_or_else(|| StoreError::NoConfig {
            key: key.clone(),
            endpoints: self.client.endpoint_list(),
        })?;
        NetworkConfig::parse(&String::from_utf8_lossy(&kv.value)).map_err(|source| {
            StoreError::Config {
                path: PathBuf::from(key),
                source,
            }
        })
    }

    fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.list()?.leases)
    }

    fn create(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.put_leased(lease, ttl, None)
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let key = self.lease_key(lease.subnet);
        let current = self.client.get(&key)?.kvs.into_iter().next();
        let Some(kv) = current else {
            // Expired meanwhile: take it again if still free.
            return if self.put_leased(lease, ttl, None)? {
                Ok(())
            } else {
                Err(self.lost(&key))
            };
        };
        let holder = LeaseAttrs::from_json(&String::from_utf8_lossy(&kv.value))
            .map(|a| a.public_ip)
            .ok();
        if holder != Some(lease.attrs.public_ip) {
            return Err(self.lost(&key));
        }
        if !self.put_leased(lease, ttl, Some(kv.mod_revision))? {
            return Err(self.lost(&key));
        }
        if kv.lease != 0 {
            // The key now lives on the new grant; the old one holds nothing.
            let _ = self.client.revoke(kv.lease);
        }
        Ok(())
    }
}

impl EtcdStore {
    fn lost(&self, key: &str) -> StoreError {
        let holder = self
            .client
            .get(key)
            .ok()
            .and_then(|r| r.kvs.into_iter().next())
            .and_then(|kv| LeaseAttrs::from_json(&String::from_utf8_lossy(&kv.value)).ok())
            .map(|a| a.public_ip);
        StoreError::LeaseLost {
            key: key.to_string(),
            holder,
        }
    }

    fn parse_lease(&self, key: &[u8], value: &[u8]) -> Option<Lease> {
        let key = std::str::from_utf8(key).ok()?;
        let name = key.strip_prefix(&self.subnets_prefix())?;
        let subnet = parse_key(name).ok()?;
        let attrs = LeaseAttrs::from_json(std::str::from_utf8(value).ok()?).ok()?;
        Some(Lease { subnet, attrs })
    }

    fn parse_subnet(&self, key: &[u8]) -> Option<Ipv4Net> {
        let key = std::str::from_utf8(key).ok()?;
        parse_key(key.strip_prefix(&self.subnets_prefix())?).ok()
    }
}
