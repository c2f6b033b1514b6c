//! Lease allocation throughput: nodes taking their subnets with
//! `ferry_overlay::store::acquire` (choose, then create by
//! compare-and-swap, choosing again when another node won) from a few
//! threads at once, against a real etcd (Debian's etcd-server on
//! 127.0.0.1, free ports, a temporary data directory; started here and
//! killed and reaped when done) and against the file store. Every node
//! must end with a subnet of its own. Touches processes (`etcd`,
//! `etcdctl`), sockets (loopback only) and files (temporary directories).

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_overlay::etcd::{EtcdOptions, EtcdStore};
use ferry_overlay::store::{FileStore, LeaseStore, acquire};
use ferry_overlay::{BackendData, LeaseAttrs};
use ferry_sys::Tool;

/// Room for 4,096 /24s.
const CONFIG: &str = r#"{"Network":"10.64.0.0/12","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;

/// A running etcd; killed and reaped on drop.
pub(super) struct Etcd {
    child: Child,
    pub(super) url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    pub(super) fn start() -> anyhow::Result<Etcd> {
        let dir = tempfile::tempdir().context("creating etcd's data directory")?;
        let url = format!("http://127.0.0.1:{}", free_port()?);
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "ferry-bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("ferry-bench={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian's etcd-server)")?;
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while etcd.ctl(&["endpoint", "health"]).is_err() {
            if Instant::now() > deadline {
                bail!("etcd did not become healthy in 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(etcd)
    }

    fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(Tool::new("etcdctl")
            .arg(format!("--endpoints={}", self.url))
            .args(args.iter().copied())
            .timeout(Duration::from_secs(10))
            .run()?
            .stdout)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Node `k`'s lease value.
fn attrs(k: usize) -> LeaseAttrs {
    let (hi, lo) = ((k / 256) as u8, (k % 256) as u8);
    LeaseAttrs {
        public_ip: Ipv4Addr::new(172, 21, hi, lo),
        backend_type: "vxlan".into(),
        backend_data: Some(BackendData {
            vni: 1,
            vtep_mac: format!("02:fc:00:00:{hi:02x}:{lo:02x}"),
        }),
    }
}

/// `nodes` nodes acquire from `threads` threads; leases per second.
fn acquire_all(
    store: &(dyn LeaseStore + Sync),
    nodes: usize,
    threads: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let subnets = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> anyhow::Result<Vec<ipnet::Ipv4Net>> {
                    let mut seed = 0x9e37_79b9_u64.wrapping_mul(t as u64 + 1);
                    (t..nodes)
                        .step_by(threads)
                        .map(|k| {
                            let pick = |n: usize| {
                                seed = seed
                                    .wrapping_mul(6_364_136_223_846_793_005)
                                    .wrapping_add(1_442_695_040_888_963_407);
                                (seed >> 33) as usize % n.max(1)
                            };
                            Ok(acquire(store, &attrs(k), None, None, pick)
                                .with_context(|| format!("node {k} taking a lease"))?
                                .subnet)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let rate = nodes as f64 / start.elapsed().as_secs_f64();
    let mut all: Vec<_> = subnets.into_iter().flatten().collect();
    all.sort();
    all.dedup();
    if all.len() != nodes {
        bail!(
            "{nodes} nodes ended with only {} distinct subnets",
            all.len()
        );
    }
    Ok(rate)
}

/// One run against etcd, under a prefix of its own; leases per second.
pub(super) fn etcd_run(
    etcd: &Etcd,
    run: usize,
    nodes: usize,
    threads: usize,
) -> anyhow::Result<f64> {
    let prefix = format!("/ferry-bench/run-{run}");
    etcd.ctl(&["put", &format!("{prefix}/config"), CONFIG])?;
    let mut options = EtcdOptions::new(vec![etcd.url.clone()]);
    options.prefix = prefix;
    let store = EtcdStore::new(&options)?;
    acquire_all(&store, nodes, threads)
}

/// One run against a fresh file store; leases per second.
pub(super) fn file_run(nodes: usize, threads: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let store = FileStore::new(dir.path());
    store.put_config(CONFIG)?;
    acquire_all(&store, nodes, threads)
}
