//! host-local-style address management for the node's subnet, on disk:
//! in `dataDir/<network name>`, one file per allocated address (named by
//! the address, holding `containerID\r\nifname` as host-local writes it),
//! `last_reserved_ip.0` for round-robin, and a `lock` file whose exclusive
//! flock serialises every plugin run on this network (runtimes call ADDs
//! for different pods at once). Touches files.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

use crate::config::Attachment;
use crate::error::{CniError, Code};
use crate::range::Range;

const LAST_RESERVED: &str = "last_reserved_ip.0";

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("IPAM state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no free address in {subnet}: all {size} pod addresses are allocated (state in {dir}; DEL or GC frees them)"
    )]
    Exhausted {
        subnet: Ipv4Net,
        size: u32,
        dir: PathBuf,
    },
    #[error("requested address {ip} cannot be given to a pod: {why}")]
    Refused { ip: Ipv4Addr, why: &'static str },
    #[error("requested address {ip} is already allocated to container {by}")]
    Taken { ip: Ipv4Addr, by: String },
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        let code = match &e {
            IpamError::Io { .. } => Code::Io,
            IpamError::Exhausted { .. } => Code::RangeExhausted,
            IpamError::Refused { .. } | IpamError::Taken { .. } => Code::InvalidConfig,
        };
        CniError::new(code, e.to_string())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The network's IPAM state, locked for as long as this lives.
pub struct Ipam {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Ipam {
    /// Creates the directory if needed and waits for the lock.
    pub fn lock(dir: &Path) -> Result<Ipam, IpamError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| IpamError::Io {
            path: path.clone(),
            source: std::io::Error::from_raw_os_error(e as i32),
        })?;
        Ok(Ipam {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Every allocation: address -> attachment.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, Attachment)>, IpamError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // Freed by nobody else (we hold the lock), but be lenient.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            let mut lines = text.lines().map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_string();
            let ifname = lines.next().unwrap_or_default().to_string();
            out.push((
                ip,
                Attachment {
                    container_id,
                    ifname,
                },
            ));
        }
        out.sort();
        Ok(out)
    }

    /// The address of this attachment, if it has one.
    pub fn find(&self, who: &Attachment) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|(_, a)| a == who)
            .map(|(ip, _)| ip))
    }

    /// An address for `who`: the one it already has (a retried ADD), else
    /// the first requested one, else the next free one.
    pub fn allocate(
        &self,
        range: &Range,
        who: &Attachment,
        requested: &[Ipv4Addr],
    ) -> Result<Ipv4Addr, IpamError> {
        let taken = self.allocations()?;
        if let Some((ip, _)) = taken.iter().find(|(_, a)| a == who) {
            return Ok(*ip);
        }
        if let Some(&ip) = requested.first() {
            if let Some(why) = range.refuse(ip) {
                return Err(IpamError::Refused { ip, why });
            }
            if let Some((_, by)) = taken.iter().find(|(t, _)| *t == ip) {
                return Err(IpamError::Taken {
                    ip,
                    by: by.container_id.clone(),
                });
            }
            self.reserve(ip, who)?;
            return Ok(ip);
        }
        let last = std::fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let used: std::collections::BTreeSet<Ipv4Addr> = taken.iter().map(|(ip, _)| *ip).collect();
        let ip = range
            .candidates(last)
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| IpamError::Exhausted {
                subnet: range.subnet,
                size: range.size(),
                dir: self.dir.clone(),
            })?;
        self.reserve(ip, who)?;
        let path = self.dir.join(LAST_RESERVED);
        std::fs::write(&path, ip.to_string()).map_err(io(&path))?;
        Ok(ip)
    }

    fn reserve(&self, ip: Ipv4Addr, who: &Attachment) -> Result<(), IpamError> {
        let path = self.dir.join(ip.to_string());
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        std::io::Write::write_all(
            &mut f,
            format!("{}\r\n{}", who.container_id, who.ifname).as_bytes(),
        )
        .map_err(io(&path))
    }

    /// Frees the addresses of `who` (none is fine: DEL is idempotent).
    pub fn release(&self, who: &Attachment) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut freed = Vec::new();
        for (ip, a) in self.allocations()? {
            if &a == who {
                let path = self.dir.join(ip.to_string());
                match std::fs::remove_file(&path) {
                    Ok(()) => freed.push(ip),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path)(e)),
                }
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(c: &str) -> Attachment {
        Attachment {
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn allocations_persist_as_host_local_files_and_release_frees_them() {
        let dir = tempfile::tempdir().unwrap();
        let range = Range::new("10.244.1.0/24".parse().unwrap());
        let ipam = Ipam::lock(dir.path()).unwrap();
        let a = ipam.allocate(&range, &who("a"), &[]).unwrap();
        let b = ipam.allocate(&range, &who("b"), &[]).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(b, Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(
            ipam.allocate(&range, &who("a"), &[]).unwrap(),
            a,
            "a retried ADD keeps its address"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("10.244.1.2")).unwrap(),
            "a\r\neth0"
        );
        assert_eq!(ipam.release(&who("a")).unwrap(), vec![a]);
        assert!(ipam.release(&who("a")).unwrap().is_empty());
        // Round-robin: the freed .2 is not reused at once.
        assert_eq!(
            ipam.allocate(&range, &who("c"), &[]).unwrap(),
            Ipv4Addr::new(10, 244, 1, 4)
        );
    }

    #[test]
    fn requested_addresses_are_honoured_or_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let range = Range::new("10.244.1.0/24".parse().unwrap());
        let ipam = Ipam::lock(dir.path()).unwrap();
        let want = Ipv4Addr::new(10, 244, 1, 77);
        assert_eq!(ipam.allocate(&range, &who("a"), &[want]).unwrap(), want);
        let e = ipam.allocate(&range, &who("b"), &[want]).unwrap_err();
        assert!(e.to_string().contains("container a"), "{e}");
        let e = ipam
            .allocate(&range, &who("b"), &[Ipv4Addr::new(10, 244, 1, 1)])
            .unwrap_err();
        assert!(e.to_string().contains("gateway"), "{e}");
    }

    #[test]
    fn an_exhausted_range_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let range = Range::new("10.0.0.0/29".parse().unwrap());
        let ipam = Ipam::lock(dir.path()).unwrap();
        for i in 0..range.size() {
            ipam.allocate(&range, &who(&format!("c{i}")), &[]).unwrap();
        }
        let e = CniError::from(ipam.allocate(&range, &who("late"), &[]).unwrap_err());
        assert_eq!(e.code, Code::RangeExhausted);
        assert!(
            e.msg.contains("no free address in 10.0.0.0/29") && e.msg.contains("all 5"),
            "{e}"
        );
    }
}
