//! `ferry bench proxy`: the nftables proxy against a scratch network
//! namespace: one full sync and many one-change syncs at growing cluster
//! sizes (each size in a fresh process, for its peak memory), and the time
//! from a manifest file change to the rule being in the kernel.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_model::{ClusterState, Update};
use ferry_proxy::nft::NftBackend;
use ferry_proxy::{Family, NodeContext, plan};
use ferry_source::{ManifestSource, ManifestWatcher};

use crate::synth;

const NETNS: &str = "ferry-bench-proxy";

fn netns(add: bool) -> anyhow::Result<()> {
    let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    if add {
        let ok = Command::new("ip")
            .args(["netns", "add", NETNS])
            .status()
            .context("ip netns add")?
            .success();
        if !ok {
            bail!("cannot create the scratch network namespace {NETNS} (root needed)");
        }
    }
    Ok(())
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ctx() -> NodeContext {
    NodeContext {
        node_name: "node-0".into(),
        zone: None,
        family: Family::V4,
    }
}

/// One size, in this (child) process; prints one JSON line.
pub fn child(services: usize, runs: usize) -> anyhow::Result<ExitCode> {
    let cidrs = vec!["10.128.0.0/9".parse()?];
    let mut state = ClusterState::from_objects(synth::objects(services, 8));
    let c = ctx();
    let mut p = plan(&state, &c);
    // Full syncs into a fresh table, three times (the table is dropped in
    // between); the median is reported.
    let mut fulls = Vec::new();
    let mut stats = Default::default();
    let mut backend = NftBackend::in_netns(NETNS, Family::V4);
    for run in 0..3 {
        if run > 0 {
            let dropped = Command::new("ip")
                .args([
                    "netns", "exec", NETNS, "nft", "delete", "table", "ip", "ferry",
                ])
                .status()
                .context("dropping the table")?;
            if !dropped.success() {
                bail!("cannot drop the table between runs");
            }
            backend = NftBackend::in_netns(NETNS, Family::V4);
        }
        let t = Instant::now();
        stats = backend.full_sync(&p, &cidrs).context("full sync")?;
        fulls.push(t.elapsed().as_secs_f64());
    }
    let full_s = pct(&mut fulls, 0.5);
    // The kernel resizes its hash tables in the background after a bulk
    // load; let that settle so the one-change figures measure steady state.
    std::thread::sleep(Duration::from_secs(3));
    let mut one = Vec::new();
    for k in 0..runs {
        let i = (k * 7919) % services;
        let t = Instant::now();
        let (next, changes) = state.apply([Update::Apply(synth::slice(i, 8, Some(k % 8)))]);
        let t_apply = t.elapsed();
        state = next;
        let t_drop = t.elapsed();
        let changed = p.update(&state, &changes, &c);
        let t_sync = Instant::now();
        if std::env::var("FERRY_BENCH_DEBUG").is_ok() && k < 2 {
            eprintln!(
                "apply {:?}, drop {:?}, plan {:?}",
                t_apply,
                t_drop - t_apply,
                t_sync - t - t_drop
            );
        }
        let s = backend
            .sync(&p, &changed.changed, &cidrs)
            .context("one-change sync")?;
        if std::env::var("FERRY_BENCH_DEBUG").is_ok() {
            eprintln!(
                "model+plan {:.3} ms, sync {:.3} ms ({s:?})",
                (t_sync - t).as_secs_f64() * 1000.0,
                t_sync.elapsed().as_secs_f64() * 1000.0
            );
        }
        one.push(t.elapsed().as_secs_f64() * 1000.0);
        if s.full || s.added + s.deleted == 0 {
            bail!("expected a partial sync with changes, got {s:?}");
        }
    }
    if std::env::var("FERRY_BENCH_DEBUG").is_ok() {
        // Add-only and delete-only transactions of a brand-new service.
        for k in 0..5 {
            let i = services + 10 + k;
            let t = Instant::now();
            let (next, changes) = state.apply([
                Update::Apply(synth::service(i, 80)),
                Update::Apply(synth::slice(i, 8, None)),
            ]);
            state = next;
            let changed = p.update(&state, &changes, &c);
            let s = backend.sync(&p, &changed.changed, &cidrs)?;
            eprintln!(
                "add-only: {:.3} ms {s:?}",
                t.elapsed().as_secs_f64() * 1000.0
            );
            let t = Instant::now();
            let (next, changes) = state.apply([
                Update::Delete(synth::service(i, 80).key()),
                Update::Delete(synth::slice(i, 8, None).key()),
            ]);
            state = next;
            let changed = p.update(&state, &changes, &c);
            let s = backend.sync(&p, &changed.changed, &cidrs)?;
            eprintln!(
                "delete-only: {:.3} ms {s:?}",
                t.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "full_s": full_s, "elements": stats.added,
            "one_p50_ms": pct(&mut one, 0.5), "one_p99_ms": pct(&mut one, 0.99),
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Manifest file change -> rule in the kernel, through the real manifests source.
fn end_to_end(services: usize, runs: usize) -> anyhow::Result<Vec<f64>> {
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
    let (source, first) = ManifestSource::open(&[dir.path().to_path_buf()], false)?;
    let c = ctx();
    let cidrs = vec!["10.128.0.0/9".parse()?];
    let mut p = plan(&first.state, &c);
    let mut backend = NftBackend::in_netns(NETNS, Family::V4);
    backend.full_sync(&p, &cidrs)?;
    let mut watcher = ManifestWatcher::new(source, Duration::from_millis(1))?;
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

pub fn run(sizes: &[usize], changes: usize) -> anyhow::Result<ExitCode> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; figures are not meaningful (use cargo run --release)"
        );
    }
    let exe = std::env::current_exe()?;
    println!("ferry bench proxy: nftables, ferry's data-only table in a scratch namespace");
    println!(
        "(8 endpoints per service; full sync = a fresh table: rules by nft -f, elements over netlink, median of 3;\n one change = model apply + replan + one netlink transaction for one EndpointSlice update, median of the changes)\n"
    );
    println!(
        "  {:>8}  {:>10}  {:>10}  {:>14}  {:>14}  {:>12}",
        "services", "elements", "full sync", "one change p50", "one change p99", "peak RSS"
    );
    for &n in sizes {
        netns(true)?;
        eprintln!("{n} services ...");
        let out = Command::new(&exe)
            .args(["bench", "proxy-child", &n.to_string(), &changes.to_string()])
            .output()?;
        netns(false)?;
        if !out.status.success() {
            bail!("{n} services: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        println!(
            "  {:>8}  {:>10}  {:>9.3}s  {:>12.2}ms  {:>12.2}ms  {:>9.0}MiB",
            n,
            v["elements"],
            v["full_s"].as_f64().unwrap_or(f64::NAN),
            v["one_p50_ms"].as_f64().unwrap_or(f64::NAN),
            v["one_p99_ms"].as_f64().unwrap_or(f64::NAN),
            v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        );
    }
    netns(true)?;
    let mut e2e = end_to_end(1000, 50);
    netns(false)?;
    let e2e = e2e
        .as_mut()
        .map_err(|e| anyhow::anyhow!("end to end: {e}"))?;
    println!(
        "\n  manifest change -> rule in the kernel (1000 services, inotify + decode + plan + netlink): p50 {:.1} ms, p99 {:.1} ms over {} changes",
        pct(e2e, 0.5),
        pct(e2e, 0.99),
        e2e.len()
    );
    Ok(ExitCode::SUCCESS)
}
