//! `ferry bench dns`: dnsperf against `ferry dns`, nsd and knot serving the
//! same generated zone, and against ferry's and unbound's forward caches,
//! in one run. Each server is pinned to core 0 (all threads, re-pinned after
//! start), dnsperf to core 1; loopback only; every run bounded by `-l`;
//! every process killed on drop. Prints one table with ratios to nsd.
//! `files.rs` writes the inputs, `servers.rs` starts the servers,
//! `dnsperf.rs` drives the load; this file measures and prints.

mod dnsperf;
mod files;
mod servers;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::procs::Proc;
use crate::stats::median;
use dnsperf::{dnsperf, latency, warm};
use files::{PODS_FROM, write_files};
use servers::{ferry, knot, nsd, unbound};

/// What `ferry bench dns` measures.
#[derive(Clone, Debug)]
pub struct DnsOptions {
    /// Cluster sizes (services; 5 endpoints each).
    pub sizes: Vec<usize>,
    /// Saturated runs per server and size (the median is shown).
    pub runs: usize,
    /// Seconds per saturated run (dnsperf -l).
    pub seconds: u32,
    /// Write every row as JSON here.
    pub json: Option<std::path::PathBuf>,
    /// Draw qps and p50 / p99 latency per server against the zone's size
    /// as SVG here.
    pub svg: Option<std::path::PathBuf>,
}

struct Row {
    server: String,
    what: String,
    /// The zone's Services (None: the forward-cache rows).
    services: Option<usize>,
    qps: f64,
    range: (f64, f64),
    cpu: f64,
    per_core: f64,
    avg_ms: f64,
    p50: f64,
    p99: f64,
    lost: u64,
    rss: f64,
}

fn measure(
    p: &Proc,
    what: &str,
    services: Option<usize>,
    queries: &Path,
    args: &DnsOptions,
) -> anyhow::Result<Row> {
    let mut runs = Vec::new();
    for _ in 0..args.runs.max(1) {
        runs.push(dnsperf(p, queries, args.seconds)?);
    }
    let mut qps: Vec<f64> = runs.iter().map(|r| r.qps).collect();
    let mid = median(&mut qps.clone());
    let run = runs.iter().find(|r| r.qps == mid).unwrap_or(&runs[0]);
    let (p50, p99) = latency(p, queries)?;
    qps.sort_by(f64::total_cmp);
    Ok(Row {
        server: p.name.clone(),
        what: what.to_string(),
        services,
        qps: mid,
        range: (qps[0], qps[qps.len() - 1]),
        cpu: run.cpu,
        per_core: if run.cpu > 0.0 {
            mid / run.cpu.min(1.0)
        } else {
            f64::NAN
        },
        avg_ms: run.avg_ms,
        p50,
        p99,
        lost: runs.iter().map(|r| r.lost).sum(),
        rss: p.rss_mib(),
    })
}

/// Runs the benchmark and prints its table.
pub fn run(args: DnsOptions) -> anyhow::Result<()> {
    ferry_sys::require(["dnsperf", "nsd", "knotd", "unbound", "dig", "taskset"])?;
    println!(
        "ferry bench dns  (dnsperf -c 4 -q 200 -l {} on core 1, median of {} runs; servers pinned to core 0;\n  latency: dnsperf -Q 20000 -l 5 -v, open loop; per core = qps / server CPU share)",
        args.seconds, args.runs
    );
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        write_files(dir.path(), n)?;
        let q = dir.path().join("q.txt");
        let ns = nsd(dir.path())?;
        let t0 = Instant::now();
        let fe = ferry(dir.path(), ns.port)?;
        eprintln!(
            "  ferry dns ready with {n} services in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let what = if n >= PODS_FROM {
            format!("{n} svc + {} pods", n * 5)
        } else {
            format!("{n} svc")
        };
        rows.push(measure(&fe, &what, Some(n), &q, &args)?);
        rows.push(measure(&ns, &what, Some(n), &q, &args)?);
        {
            let kn = knot(dir.path())?;
            rows.push(measure(&kn, &what, Some(n), &q, &args)?);
        }
        if n == args.sizes[0] {
            let fq = dir.path().join("fq.txt");
            let ub = unbound(dir.path(), ns.port)?;
            warm(&ub, dir.path());
            warm(&fe, dir.path());
            rows.push(measure(&fe, "forwarded, cached", None, &fq, &args)?);
            rows.push(measure(&ub, "forwarded, cached", None, &fq, &args)?);
        }
    }
    println!();
    println!(
        "| server | load | qps (median) | qps min-max | server CPU | qps per server core | per core vs nsd | avg ms (sat.) | p50 / p99 ms @20k qps | lost | RSS MB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let nsd = rows
            .iter()
            .find(|o| o.server.starts_with("nsd") && o.what == r.what)
            .or_else(|| rows.iter().find(|o| o.server.starts_with("nsd")))
            .map_or(f64::NAN, |o| o.per_core);
        println!(
            "| {} | {} | {:.0} | {:.0}-{:.0} | {:.0}% | {:.0} | {:.2} | {:.3} | {:.3} / {:.3} | {} | {:.1} |",
            r.server,
            r.what,
            r.qps,
            r.range.0,
            r.range.1,
            r.cpu * 100.0,
            r.per_core,
            r.per_core / nsd,
            r.avg_ms,
            r.p50,
            r.p99,
            r.lost,
            r.rss
        );
    }
    crate::figures::write(
        &figures(&rows),
        args.json.as_deref(),
        args.svg.as_deref(),
        crate::figures::dns_chart,
    )
}

/// The rows as `--json` writes them.
fn figures(rows: &[Row]) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "server": r.server,
                "load": r.what,
                "services": r.services,
                "qps": r.qps,
                "qps_min": r.range.0,
                "qps_max": r.range.1,
                "server_cpu": r.cpu,
                "qps_per_core": r.per_core,
                "avg_ms": r.avg_ms,
                "p50_ms": r.p50,
                "p99_ms": r.p99,
                "lost": r.lost,
                "rss_mib": r.rss,
            })
        })
        .collect();
    serde_json::json!({ "runs": runs })
}
