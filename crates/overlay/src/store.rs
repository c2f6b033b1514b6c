//! Where leases live, behind one interface, and taking one safely: a
//! subnet is created only if nobody holds it (compare-and-swap), so two
//! nodes never get one subnet even when they race. The file store (a
//! directory shared by the nodes of one machine, ferry's embedded
//! default) is here; etcd (flannel's keys, `etcd/`) and the Kubernetes
//! Node store implement the same trait.
//!
//! Touches files (the file store only).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::alloc::{AllocError, choose_subnet};
use crate::config::{ConfigError, NetworkConfig};
use crate::lease::{Lease, LeaseAttrs, parse_key, subnet_key};

/// flannel's lease time.
pub const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("the API: {0}")]
    Api(String),
    #[error("could not take a subnet after {0} tries (other nodes kept taking the chosen ones)")]
    Contended(usize),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error("no network config at {key} in etcd ({endpoints}); write flannel's config there")]
    NoConfig { key: String, endpoints: String },
    #[error("lease {key} is no longer this node's{}", holder.map(|h| format!(" (held by {h})")).unwrap_or_default())]
    LeaseLost {
        key: String,
        holder: Option<std::net::Ipv4Addr>,
    },
}

/// A store of the network config and the leases.
pub trait LeaseStore {
    fn config(&self) -> Result<NetworkConfig, StoreError>;
    /// Every lease that has not expired.
    fn leases(&self) -> Result<Vec<Lease>, StoreError>;
    /// Creates `lease` for `ttl` only if its subnet is free; false when
    /// another node holds it.
    fn create(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError>;
    /// Extends the caller's own lease.
    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError>;
}

/// Takes this node's subnet: chooses as flannel does (see `alloc`), then
/// creates it by compare-and-swap, choosing again when another node won.
pub fn acquire(
    store: &dyn LeaseStore,
    attrs: &LeaseAttrs,
    pod_cidr: Option<Ipv4Net>,
    previous: Option<Ipv4Net>,
    mut pick: impl FnMut(usize) -> usize,
) -> Result<Lease, StoreError> {
    let config = store.config()?;
    const TRIES: usize = 10;
    for _ in 0..TRIES {
        let leases = store.leases()?;
        let subnet = choose_subnet(
            &config,
            &leases,
            attrs.public_ip,
            pod_cidr,
            previous,
            &mut pick,
        )?;
        let lease = Lease {
            subnet,
            attrs: attrs.clone(),
        };
        if leases
            .iter()
            .any(|l| l.subnet == subnet && l.attrs.public_ip == attrs.public_ip)
        {
            store.renew(&lease, LEASE_TTL)?;
            return Ok(lease);
        }
        if store.create(&lease, LEASE_TTL)? {
            return Ok(lease);
        }
    }
    Err(StoreError::Contended(TRIES))
}

/// Leases as files: `DIR/config` (flannel's JSON) and one file per lease,
/// `DIR/subnets/a.b.c.d-N`, created with O_EXCL.
pub struct FileStore {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    attrs: LeaseAttrs,
    /// Seconds since the epoch.
    #[serde(rename = "Expiration")]
    expiration: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FileStore {
    pub fn new(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Deletes a subnet's lease (a node removed from the cluster); gone
    /// already is fine.
    pub fn delete(&self, subnet: Ipv4Net) -> Result<(), StoreError> {
        let path = self.subnets().join(subnet_key(subnet));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Self::io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Writes the network config (flannel's JSON), as an administrator
    /// puts it in etcd before the first node starts.
    pub fn put_config(&self, json: &str) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let path = self.dir.join("config");
        NetworkConfig::parse(json).map_err(|source| StoreError::Config {
            path: path.clone(),
            source,
        })?;
        let tmp = self.dir.join(".config.tmp");
        std::fs::write(&tmp, json).map_err(Self::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))
    }

    fn subnets(&self) -> PathBuf {
        self.dir.join("subnets")
    }

    fn write(&self, lease: &Lease, ttl: Duration, exclusive: bool) -> Result<bool, StoreError> {
        use std::io::Write;
        let dir = self.subnets();
        std::fs::create_dir_all(&dir).map_err(Self::io(&dir))?;
        let path = dir.join(subnet_key(lease.subnet));
        let text = serde_json::to_string(&Stored {
            attrs: lease.attrs.clone(),
            expiration: now() + ttl.as_secs(),
        })
        .unwrap_or_default();
        if exclusive {
            // An expired lease's file may still be there: it is free.
            if let Ok(old) = std::fs::read_to_string(&path)
                && serde_json::from_str::<Stored>(&old).is_ok_and(|s| s.expiration <= now())
            {
                let _ = std::fs::remove_file(&path);
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => f.write_all(text.as_bytes()).map_err(Self::io(&path))?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(Self::io(&path)(e)),
            }
        } else {
            let tmp = dir.join(format!(".{}.tmp", subnet_key(lease.subnet)));
            std::fs::write(&tmp, text).map_err(Self::io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(Self::io(&path))?;
        }
        Ok(true)
    }
}

impl LeaseStore for FileStore {
    fn config(&self) -> Result<NetworkConfig, StoreError> {
        let path = self.dir.join("config");
        let text = std::fs::read_to_string(&path).map_err(Self::io(&path))?;
        NetworkConfig::parse(&text).map_err(|source| StoreError::Config { path, source })
    }

    fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let dir = self.subnets();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&dir)(e)),
        };
        let now = now();
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(subnet) = parse_key(&name) else {
                continue;
            };
            // A file being created may be empty for an instant: skip it.
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            if let Ok(s) = serde_json::from_str::<Stored>(&text)
                && s.expiration > now
            {
                out.push(Lease {
                    subnet,
                    attrs: s.attrs,
                });
            }
        }
        out.sort_by_key(|l| l.subnet);
        Ok(out)
    }

    fn create(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.write(lease, ttl, true)
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        self.write(lease, ttl, false).map(drop)
    }
}
