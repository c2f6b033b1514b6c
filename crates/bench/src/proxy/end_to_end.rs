//! `ferry bench proxy`'s last line: the time from a manifest file change
//! to the rule in the kernel (nftables), through the real manifests source
//! (inotify, decode, plan, netlink). Touches a temporary directory and the
//! router namespace's `ip ferry` table.

use std::time::{Duration, Instant};

use anyhow::bail;
use ferry_proxy::nft::NftBackend;
use ferry_proxy::{Family, plan};
use ferry_source::ManifestWatcher;

use super::child::ctx;
use super::scratch::ROUTER;
use crate::synth;

/// Manifest file change -> rule in the kernel, through the real manifests source.
pub(super) fn end_to_end(services: usize, runs: usize) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("cluster.yaml"),
        synth::manifests(services, 8),
    )?;
    let slice_file = dir.path().join("changing.json");
    let write_slice = |k: usize| -> anyhow::Result<()> {
        let o = synth::slice(services, 8, Some(k % 8));
        let tmp = dir.path().join(".changing.tmp");
        std::fs::write(&tmp, o.to_json()?)?;
        std::fs::rename(&tmp, &slice_file)?;
        Ok(())
    };
    std::fs::write(
        dir.path().join("svc.json"),
        synth::service(services, 80).to_json()?,
    )?;
    write_slice(0)?;
    let (mut watcher, first) =
        ManifestWatcher::open(&[dir.path().to_path_buf()], false, Duration::from_millis(1))?;
    let c = ctx();
    let cidrs = vec!["10.128.0.0/9".parse()?];
    let mut p = plan(&first.state, &c);
    let mut backend = NftBackend::in_netns(ROUTER, Family::V4);
    backend.full_sync(&p, &cidrs)?;
    let mut out = Vec::new();
    for k in 1..=runs {
        let t = Instant::now();
        write_slice(k)?;
        loop {
            let Some(snap) = watcher.next(Duration::from_secs(5)) else {
                bail!("no change seen within 5 s")
            };
            let snap = snap?;
            let changed = p.update(&snap.state, &snap.changes, &c);
            backend.sync(&p, &changed.changed, &cidrs)?;
            if !changed.changed.is_empty() {
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}
