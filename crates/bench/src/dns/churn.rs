//! Endpoint churn for `ferry bench dns --churn RATE`: headless Services
//! `churn-K.ns-0`, each with its EndpointSlice in a manifest file of its
//! own, and a writer thread that rewrites one of those files every
//! 1/RATE s (written beside it and renamed in, as an editor or a config
//! sync would), moving the Service between one, two and three ready
//! endpoints. Every change therefore changes an answer; `probe` times how
//! long some of them take to reach the answers while the load runs, and at
//! the end the server must give each name the addresses of its last file.
//! The writer runs on the client's core, and the scratch directory is
//! memory-backed where the machine has one (`files::scratch`): in a
//! cluster the changes come from a control plane on other machines, so the
//! writer's own cost (an ext4 replace-by-rename here costs about 0.2 ms
//! and starts writeback) must not land on the server's core. Bounded in
//! time and count; touches only the scratch directory.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_sys::Tool;

use super::probe;
use crate::procs::Proc;

/// How many headless Services the churn cycles through.
pub(super) const NAMES: usize = 100;

/// The churned Service `k`'s name in the cluster zone.
fn name(k: usize) -> String {
    format!("churn-{k}.ns-0.svc.cluster.local")
}

/// The ready addresses of Service `k` at `generation`: one to three.
fn addresses(k: usize, generation: u64) -> Vec<Ipv4Addr> {
    let n = 1 + (generation % 3) as u8;
    (1..=n)
        .map(|j| Ipv4Addr::new(10, 200, k as u8, j))
        .collect()
}

/// The manifest of Service `k` at `generation`.
fn manifest(k: usize, generation: u64) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: churn-{k}, namespace: ns-0}}\nspec:\n  clusterIP: None\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: churn-{k}-abcde\n  namespace: ns-0\n  labels: {{{label}: churn-{k}}}\naddressType: IPv4\nports: [{{name: http, port: 80, protocol: TCP}}]\nendpoints:\n",
        label = ferry_model::SERVICE_NAME_LABEL,
    );
    for a in addresses(k, generation) {
        let _ = writeln!(s, "- addresses: [\"{a}\"]\n  conditions: {{ready: true}}");
    }
    s
}

/// Writes Service `k` at `generation` into `manifests` (beside, then renamed in).
fn write(manifests: &Path, k: usize, generation: u64) -> anyhow::Result<()> {
    let tmp = manifests.join(format!(".churn-{k}.tmp"));
    let file = manifests.join(format!("churn-{k}.yaml"));
    std::fs::write(&tmp, manifest(k, generation))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("renaming to {}", file.display()))
}

/// The churned Services at generation 0 in `manifests` (before the server
/// starts, or in a directory no server reads).
pub(super) fn write_initial(manifests: &Path) -> anyhow::Result<()> {
    (0..NAMES).try_for_each(|k| write(manifests, k, 0))
}

/// What the writer did.
pub(super) struct Written {
    pub(super) changes: u64,
    /// Each Service's last generation.
    generations: Vec<u64>,
    /// The writer's achieved rate, changes per second.
    pub(super) rate: f64,
    /// How soon the probed changes were answered (none when no server
    /// reads the files).
    pub(super) seen: probe::Seen,
}

/// A running churn writer, and its prober.
pub(super) struct Churn {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<anyhow::Result<(u64, Vec<u64>, f64)>>,
    prober: Option<JoinHandle<anyhow::Result<probe::Seen>>>,
}

/// Starts rewriting one Service's file every 1/`rate` s, for at most
/// `limit`, from a thread kept on `core`; with `server`, a port a server
/// reading these files answers on, a second thread on `core` times how
/// soon one change in [`probe::EVERY`] is answered there.
pub(super) fn start(
    manifests: PathBuf,
    rate: u32,
    limit: Duration,
    core: usize,
    server: Option<u16>,
) -> anyhow::Result<Churn> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (to_prober, changes) = mpsc::channel::<probe::Change>();
    let prober = server.map(|port| {
        std::thread::spawn(move || {
            ferry_sys::run_on_core(core)
                .with_context(|| format!("keeping the churn prober on core {core}"))?;
            probe::run(port, changes)
        })
    });
    let to_prober = prober.is_some().then_some(to_prober);
    let (pinned_tx, pinned) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        // The writer stands in for a control plane on other machines: it
        // shares the client's core, never the server's.
        let on_core = ferry_sys::run_on_core(core);
        let _ = pinned_tx.send(on_core);
        on_core.with_context(|| format!("keeping the churn writer on core {core}"))?;
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let mut generations = vec![0u64; NAMES];
        let t0 = Instant::now();
        let mut changes = 0u64;
        while !flag.load(Ordering::Relaxed) && t0.elapsed() < limit {
            let k = (changes as usize) % NAMES;
            generations[k] += 1;
            write(&manifests, k, generations[k])?;
            changes += 1;
            if changes.is_multiple_of(probe::EVERY)
                && let Some(tx) = &to_prober
            {
                let _ = tx.send(probe::Change {
                    name: name(k),
                    records: addresses(k, generations[k]).len() as u16,
                    written: Instant::now(),
                });
            }
            // Paced against the start, so a slow write is caught up.
            let due = period * u32::try_from(changes).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        // Dropping the sender ends the prober once it has looked for the
        // last change.
        Ok((
            changes,
            generations,
            changes as f64 / t0.elapsed().as_secs_f64(),
        ))
    });
    let churn = Churn {
        stop,
        handle,
        prober,
    };
    if let Ok(Ok(())) = pinned.recv() {
        return Ok(churn);
    }
    // The writer's thread says why.
    Err(match churn.stop() {
        Err(e) => e,
        Ok(_) => anyhow::anyhow!("the churn writer stopped before it began"),
    })
}

impl Churn {
    pub(super) fn stop(self) -> anyhow::Result<Written> {
        self.stop.store(true, Ordering::Relaxed);
        let (changes, generations, rate) = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the churn writer panicked"))??;
        let seen = match self.prober {
            Some(p) => p
                .join()
                .map_err(|_| anyhow::anyhow!("the churn prober panicked"))??,
            None => probe::Seen::default(),
        };
        Ok(Written {
            changes,
            generations,
            rate,
            seen,
        })
    }
}

/// How many churned names `p` answers with their last file's addresses,
/// asked with dig after the server had `settle` to catch up.
pub(super) fn check(p: &Proc, written: &Written, settle: Duration) -> anyhow::Result<usize> {
    std::thread::sleep(settle);
    let mut right = 0;
    for (k, generation) in written.generations.iter().enumerate() {
        let out = Tool::new("dig")
            .args(["+short", "+time=1", "+tries=2", "-p", &p.port.to_string()])
            .args(["@127.0.0.1", &name(k), "A"])
            .output()
            .context("running dig")?;
        let mut got: Vec<Ipv4Addr> = out
            .stdout
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        got.sort();
        if got == addresses(k, *generation) {
            right += 1;
        }
    }
    Ok(right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_generation_moves_the_service_to_another_endpoint_count() {
        let counts: Vec<usize> = (0..4).map(|g| addresses(7, g).len()).collect();
        assert_eq!(counts, [1, 2, 3, 1]);
        assert_eq!(addresses(7, 1)[1], Ipv4Addr::new(10, 200, 7, 2));
    }

    #[test]
    fn a_churned_service_is_a_headless_service_with_its_slice() {
        let docs = manifest(3, 2);
        assert!(docs.contains("name: churn-3, namespace: ns-0"));
        assert!(docs.contains("clusterIP: None"));
        assert_eq!(docs.matches("- addresses:").count(), 3);
        assert!(docs.contains("10.200.3.3"));
    }
}
