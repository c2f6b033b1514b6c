//! `ferry bench dns`: dnsperf against `ferry dns`, nsd and knot serving the
//! same generated zone, and against ferry's and unbound's forward caches,
//! in one run. Each server is pinned to core 0 (all threads, re-pinned after
//! start), dnsperf (and the churn writer and prober) to core 1; loopback
//! only; every run bounded by `-l`; every process killed on drop. Prints
//! one table with ratios to nsd. `files.rs` writes the inputs,
//! `servers.rs` starts the servers, `dnsperf.rs` drives the load,
//! `churn.rs` and `probe.rs` change the cluster and time the changes; this
//! file measures and prints.

mod churn;
mod dnsperf;
mod files;
mod probe;
mod servers;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::procs::Proc;
use crate::stats::median;
use dnsperf::{Latency, dnsperf, latency, warm};
use files::{PODS_FROM, write_files};
use servers::{ferry, knot, nsd, unbound};

/// The core dnsperf (and the churn writer and prober) run on; the servers
/// run on `servers::SERVER_CORE`.
const CLIENT_CORE: usize = 1;

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
    /// EndpointSlice changes per second written during ferry's extra
    /// open-loop runs at the largest size, compared with nsd's static zone
    /// in the same run (0: no churn runs).
    pub churn: u32,
}

/// One open-loop series under churn (or its static comparison).
struct ChurnRow {
    server: String,
    what: String,
    rate: f64,
    /// The churn writer ran during the series (ferry's churn, or nsd's
    /// beside it).
    writer: bool,
    p50: f64,
    p99: f64,
    lost: u64,
    /// Churned names answering their last addresses at the end, of `churn::NAMES`.
    right: Option<usize>,
    /// Runs in which this series' p99 was at or below nsd's static zone
    /// measured in the same run, and the runs.
    at_or_below_nsd: Option<(usize, usize)>,
    /// From a change's rename to its first answer (ms: p50, p99, max), the
    /// changes probed and those not answered within `probe::LIMIT`.
    answered: Option<Answered>,
}

struct Answered {
    p50: f64,
    p99: f64,
    max: f64,
    probed: usize,
    unseen: usize,
}

impl Answered {
    fn of(mut lags: Vec<f64>, unseen: usize) -> Option<Answered> {
        let probed = lags.len() + unseen;
        let max = lags.iter().copied().fold(f64::NAN, f64::max);
        (probed > 0).then(|| Answered {
            p50: crate::stats::percentile(&mut lags, 0.5),
            p99: crate::stats::percentile(&mut lags, 0.99),
            max,
            probed,
            unseen,
        })
    }
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
    let Latency { p50, p99, .. } = latency(p, queries)?;
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
        "ferry bench dns  (dnsperf -c 4 -q 200 -l {} on core {CLIENT_CORE}, median of {} runs; servers pinned to core {};\n  latency: dnsperf -Q 20000 -l 5 -v, open loop; per core = qps / server CPU share)",
        args.seconds,
        args.runs,
        servers::SERVER_CORE
    );
    let mut rows = Vec::new();
    let mut churned = Vec::new();
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    for &n in &args.sizes {
        let dir = files::scratch()?;
        write_files(dir.path(), n)?;
        let churns = args.churn > 0 && n == largest;
        if churns {
            churn::write_initial(&dir.path().join("manifests"))?;
        }
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
        if churns {
            churned.extend(under_churn(&fe, &ns, dir.path(), &what, &args)?);
        }
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
    if !churned.is_empty() {
        print_churn(&churned, args.churn);
    }
    crate::figures::write(
        &figures(&rows, &churned),
        args.json.as_deref(),
        args.svg.as_deref(),
        crate::figures::dns_chart,
    )
}

/// ferry's open-loop latency without and with `args.churn` changes a
/// second, and nsd's static zone without and with the same writer running
/// (into a directory no server reads, so it loads the machine as it does in
/// ferry's series and changes nothing nsd serves), interleaved `args.runs`
/// times; the median of each series.
fn under_churn(
    fe: &Proc,
    ns: &Proc,
    dir: &Path,
    what: &str,
    args: &DnsOptions,
) -> anyhow::Result<Vec<ChurnRow>> {
    let q = dir.join("q.txt");
    let unread = dir.join("unread");
    std::fs::create_dir_all(&unread).context("creating the unread churn directory")?;
    churn::write_initial(&unread)?;
    let runs = args.runs.max(1);
    let (mut quiet, mut busy, mut still, mut beside) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut right = usize::MAX;
    let (mut rate, mut rate_beside) = (f64::INFINITY, f64::INFINITY);
    let (mut lags, mut unseen) = (Vec::new(), 0);
    for run in 0..runs {
        eprintln!(
            "  churn run {}/{runs}: ferry static, ferry with {} changes/s, nsd static, nsd static beside the writer",
            run + 1,
            args.churn
        );
        quiet.push(latency(fe, &q)?);
        // Bounded: the open-loop run takes 5 s; the writer stops at 15 s.
        let writer = churn::start(
            dir.join("manifests"),
            args.churn,
            Duration::from_secs(15),
            CLIENT_CORE,
            Some(fe.port),
        )?;
        busy.push(latency(fe, &q)?);
        let written = writer.stop()?;
        rate = rate.min(written.rate);
        right = right.min(churn::check(fe, &written, Duration::from_secs(1))?);
        let these: Vec<f64> = written
            .seen
            .lags
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        eprintln!(
            "    {} changes written ({:.0}/s); {} probed: answered after {} ms, {} not within {} ms; {right}/{} churned names right at the end",
            written.changes,
            written.rate,
            these.len() + written.seen.unseen,
            these
                .iter()
                .map(|l| format!("{l:.0}"))
                .collect::<Vec<_>>()
                .join(" "),
            written.seen.unseen,
            probe::LIMIT.as_millis(),
            churn::NAMES
        );
        lags.extend(these);
        unseen += written.seen.unseen;
        still.push(latency(ns, &q)?);
        let writer = churn::start(
            unread.clone(),
            args.churn,
            Duration::from_secs(15),
            CLIENT_CORE,
            None,
        )?;
        beside.push(latency(ns, &q)?);
        rate_beside = rate_beside.min(writer.stop()?.rate);
        let last = |series: &[Latency]| series.last().map_or(f64::NAN, |l| l.p99);
        eprintln!(
            "    p99 ms: ferry static {:.3}, ferry under churn {:.3}, nsd static {:.3}, nsd beside the writer {:.3}",
            last(&quiet),
            last(&busy),
            last(&still),
            last(&beside)
        );
    }
    let row = |server: &str, what: String, writer: bool, rate: f64, series: &[Latency], right| {
        let mut p50: Vec<f64> = series.iter().map(|l| l.p50).collect();
        let mut p99: Vec<f64> = series.iter().map(|l| l.p99).collect();
        ChurnRow {
            server: server.to_string(),
            what,
            rate,
            writer,
            p50: median(&mut p50),
            p99: median(&mut p99),
            lost: series.iter().map(|l| l.lost).sum(),
            right,
            // A sign test beside the medians, robust to a noisy minute:
            // the runs in which this series was at or below nsd's static
            // zone measured next to it.
            at_or_below_nsd: server.starts_with("ferry").then(|| {
                let runs = series.len().min(still.len());
                let below = series
                    .iter()
                    .zip(&still)
                    .filter(|(l, n)| l.p99 <= n.p99)
                    .count();
                (below, runs)
            }),
            answered: None,
        }
    };
    let mut rows = vec![
        row(
            &fe.name,
            format!("{what}, static"),
            false,
            0.0,
            &quiet,
            None,
        ),
        row(
            &fe.name,
            format!("{what}, {} changes/s", args.churn),
            true,
            rate,
            &busy,
            Some(right),
        ),
        row(
            &ns.name,
            format!("{what}, static"),
            false,
            0.0,
            &still,
            None,
        ),
        row(
            &ns.name,
            format!("{what}, static, writer beside"),
            true,
            rate_beside,
            &beside,
            None,
        ),
    ];
    rows[1].answered = Answered::of(lags, unseen);
    Ok(rows)
}

fn print_churn(rows: &[ChurnRow], churn: u32) {
    println!();
    println!(
        "Under churn: open loop at 20k qps for 5 s; during ferry's second series a writer on the client's core\n\
         rewrites one headless Service's EndpointSlice file {churn} times a second. nsd serves its static zone\n\
         alone, and then beside the same writer rewriting files no server reads (the writer's own load, shown\n\
         for reference). Every row is compared with nsd's static zone alone. Median of the runs, lost summed;\n\
         \"runs at or below\" counts the runs whose series was at or below nsd's static series of the same run;\n\
         \"change to answer\" times one change in {every} from its file's rename to ferry's first answer with it\n\
         (asked every 0.5 ms from the client's core while the load runs).",
        every = probe::EVERY
    );
    println!();
    println!(
        "| server | load | changes/s (achieved, slowest run) | p50 ms | p99 ms | p99 vs nsd static | lost | churned names right at the end | runs at or below nsd static | change to answer ms: p50 / p99 / max (probed, not within 0.9 s) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let nsd = rows
        .iter()
        .find(|r| r.server.starts_with("nsd") && !r.writer)
        .map_or(f64::NAN, |r| r.p99);
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.2} | {} | {} | {} | {} |",
            r.server,
            r.what,
            r.rate,
            r.p50,
            r.p99,
            r.p99 / nsd,
            r.lost,
            r.right
                .map_or("-".to_string(), |k| format!("{k}/{}", churn::NAMES)),
            r.at_or_below_nsd
                .map_or("-".to_string(), |(k, n)| format!("{k} of {n}")),
            r.answered.as_ref().map_or("-".to_string(), |a| format!(
                "{:.1} / {:.1} / {:.1} ({}, {})",
                a.p50, a.p99, a.max, a.probed, a.unseen
            )),
        );
    }
}

/// The rows as `--json` writes them.
fn figures(rows: &[Row], churned: &[ChurnRow]) -> serde_json::Value {
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
    let churn: Vec<serde_json::Value> = churned
        .iter()
        .map(|r| {
            serde_json::json!({
                "server": r.server,
                "load": r.what,
                "changes_per_second": r.rate,
                "p50_ms": r.p50,
                "p99_ms": r.p99,
                "lost": r.lost,
                "churned_names_right": r.right,
                "runs_at_or_below_nsd_static": r.at_or_below_nsd.map(|(k, _)| k),
                "runs": r.at_or_below_nsd.map(|(_, n)| n),
                "writer_running": r.writer,
                "change_to_answer_ms": r.answered.as_ref().map(|a| serde_json::json!({
                    "p50": a.p50,
                    "p99": a.p99,
                    "max": a.max,
                    "probed": a.probed,
                    "not_within_limit": a.unseen,
                })),
            })
        })
        .collect();
    serde_json::json!({ "runs": runs, "churn": churn })
}
