//! `ferry bench ingress`: `ferry ingress` against Debian's nginx, in the
//! same run, on loopback, in front of the same two nginx backends.
//!
//! Throughput: wrk (`-t1`, core 0) through each proxy (one worker, core 1,
//! with the backends) to one host: requests/s, p50/p99, the proxy's CPU
//! per request and memory; median of `runs` runs. Configuration changes:
//! with `size` hosts configured (one server block / one Ingress each),
//! while wrk loads an existing host, a new host is added `changes` times:
//! nginx by rewriting its configuration and `nginx -s reload` (what
//! ingress-nginx does for a new Ingress), ferry by a new Ingress manifest
//! (its route table is rebuilt and swapped); the time until the new host
//! answers, and what wrk saw meanwhile (non-2xx, socket errors: a read
//! error is a keep-alive connection the proxy closed); then where ferry's
//! time goes, phase by phase, measured in-process (`phases.rs`).
//!
//! Touches processes (nginx, wrk, taskset, the ferry binary), a temporary
//! directory, loopback sockets, `/proc`.

mod phases;
mod servers;
mod wrk;

use std::time::Duration;

use anyhow::Context;

use crate::procs::Proc;
use crate::stats::median;

pub struct IngressOptions {
    /// Throughput runs per proxy (the median is shown).
    pub runs: usize,
    /// Seconds per throughput run.
    pub seconds: u32,
    /// wrk connections in the throughput runs.
    pub connections: u32,
    /// Hosts configured for the change measurements.
    pub change_sizes: Vec<usize>,
    /// Changes per size and proxy.
    pub changes: usize,
}

struct Throughput {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu_us: f64,
    cpu_share: f64,
    rss: f64,
    errors: u64,
}

fn throughput(
    proxy: &Proc,
    url: &str,
    host: &str,
    o: &IngressOptions,
) -> anyhow::Result<Throughput> {
    let mut rows = Vec::new();
    for run in 0..o.runs {
        eprintln!("  {}: run {}/{}", proxy.name, run + 1, o.runs);
        let cpu0 = proxy.cpu_secs();
        let r = wrk::run(url, host, o.connections, o.seconds)?;
        let cpu = proxy.cpu_secs() - cpu0;
        rows.push((r, cpu));
    }
    let pick = |f: &dyn Fn(&(wrk::Report, f64)) -> f64| {
        median(&mut rows.iter().map(f).collect::<Vec<_>>())
    };
    Ok(Throughput {
        rps: pick(&|(r, _)| r.rps),
        p50: pick(&|(r, _)| r.p50_ms),
        p99: pick(&|(r, _)| r.p99_ms),
        cpu_us: pick(&|(r, cpu)| cpu * 1e6 / r.requests.max(1) as f64),
        cpu_share: pick(&|(_, cpu)| cpu / f64::from(o.seconds) * 100.0),
        rss: proxy.rss_mib(),
        errors: rows
            .iter()
            .map(|(r, _)| r.non_2xx + r.socket_errors.iter().sum::<u64>())
            .sum(),
    })
}

struct Changes {
    live_ms: f64,
    live_max_ms: f64,
    report: wrk::Report,
}

/// Runs wrk for the whole change series on a thread while `change(i)`
/// adds host `new-i` and the time until it answers is taken.
fn changes(
    port: u16,
    o: &IngressOptions,
    mut change: impl FnMut(usize, &str) -> anyhow::Result<()>,
) -> anyhow::Result<Changes> {
    let seconds = (o.changes as u32 * 2 + 4).max(6);
    let url = format!("http://127.0.0.1:{port}/");
    let load = std::thread::spawn(move || wrk::run(&url, &servers::host(0), 20, seconds));
    std::thread::sleep(Duration::from_secs(2));
    let mut live = Vec::new();
    for i in 0..o.changes {
        let host = format!("new-{i}.example.test");
        let start = std::time::Instant::now();
        change(i, &host)?;
        servers::wait_live(port, &host, Duration::from_secs(60))?;
        live.push(start.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let report = load
        .join()
        .map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??;
    let live_max_ms = live.iter().copied().fold(0.0, f64::max);
    Ok(Changes {
        live_ms: median(&mut live),
        live_max_ms,
        report,
    })
}

pub fn run(o: IngressOptions) -> anyhow::Result<()> {
    ferry_sys::require(["nginx", "wrk", "taskset"])?;
    let dir = tempfile::Builder::new()
        .prefix("ferry-bench-ingress-")
        .tempdir()
        .context("creating a scratch directory")?;
    std::fs::create_dir_all(dir.path().join("tmp"))?;
    let b1 = servers::backend(dir.path(), "backend-1")?;
    let b2 = servers::backend(dir.path(), "backend-2")?;
    let backends = [b1.port, b2.port];
    let one = vec![servers::host(0)];

    println!(
        "## Throughput: wrk -t1 -c{} -d{}s on core 0; proxy and 2 nginx backends on core 1 (a 2-worker proxy on cores 0-1, sharing core 0 with wrk); median of {} runs\n",
        o.connections, o.seconds, o.runs
    );
    println!(
        "| proxy | workers | req/s | p50 ms | p99 ms | proxy CPU | CPU µs / request | RSS MiB | errors (all runs) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut figures = Vec::new();
    for workers in [1, 2] {
        let label = if workers > 1 {
            "2 (cores 0-1, shared with wrk)"
        } else {
            "1 (core 1)"
        };
        {
            let nginx = servers::NginxProxy::start(dir.path(), &backends, &one, workers)?;
            let url = format!("http://127.0.0.1:{}/", nginx.proc.port);
            figures.push(("nginx", label, throughput(&nginx.proc, &url, &one[0], &o)?));
        }
        {
            let ferry = servers::FerryIngress::start(dir.path(), &backends, &one, workers)?;
            let url = format!("http://127.0.0.1:{}/", ferry.proc.port);
            figures.push(("ferry", label, throughput(&ferry.proc, &url, &one[0], &o)?));
        }
    }
    for (name, label, t) in &figures {
        println!(
            "| {name} | {label} | {:.0} | {:.3} | {:.3} | {:.0}% | {:.1} | {:.1} | {} |",
            t.rps, t.p50, t.p99, t.cpu_share, t.cpu_us, t.rss, t.errors
        );
    }
    println!();
    for pair in figures.chunks(2) {
        if let [(_, label, n), (_, _, f)] = pair {
            println!(
                "ferry / nginx, {label} worker(s): req/s {:.2}×, p99 {:.2}×, CPU per request {:.2}×",
                f.rps / n.rps,
                f.p99 / n.p99,
                f.cpu_us / n.cpu_us
            );
        }
    }
    println!();

    println!(
        "## A new host while wrk -t1 -c20 loads an existing one ({} changes per row)\n",
        o.changes
    );
    println!(
        "| proxy | hosts | change → new host live, ms (median / max) | requests | non-2xx | socket errors (connect/read/write/timeout) | p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|");
    let mut phases = Vec::new();
    for &size in &o.change_sizes {
        let hosts: Vec<String> = (0..size.max(1)).map(servers::host).collect();
        eprintln!("  changes at {size} hosts: nginx");
        let c = {
            let nginx = servers::NginxProxy::start(dir.path(), &backends, &hosts, 1)?;
            let mut all = hosts.clone();
            changes(nginx.proc.port, &o, |_, host| {
                all.push(host.to_string());
                nginx.change(&all)
            })?
        };
        print_changes("nginx (conf + reload)", size, &c);
        eprintln!("  changes at {size} hosts: ferry");
        let c = {
            let ferry = servers::FerryIngress::start(dir.path(), &backends, &hosts, 1)?;
            changes(ferry.proc.port, &o, |i, host| {
                ferry.add(host, &format!("new-{i}"))
            })?
        };
        print_changes("ferry (table swap)", size, &c);
        eprintln!("  phases at {size} Ingresses");
        phases.push((
            size,
            phases::measure(dir.path(), &backends, &hosts, o.changes)?,
        ));
    }
    println!(
        "\n## Where ferry's change time goes (in-process, median of {} new Ingresses per row)\n",
        o.changes
    );
    println!(
        "| Ingresses | source: file → state + change set, ms | route table from the change set, ms | route table built whole, ms | certificate table, ms |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (size, p) in &phases {
        println!(
            "| {size} | {:.2} | {:.3} | {:.2} | {:.3} |",
            p.source, p.followed, p.whole, p.certs
        );
    }
    drop((b1, b2));
    Ok(())
}

fn print_changes(name: &str, size: usize, c: &Changes) {
    let e = c.report.socket_errors;
    println!(
        "| {name} | {size} | {:.1} / {:.1} | {} | {} | {}/{}/{}/{} | {:.3} |",
        c.live_ms,
        c.live_max_ms,
        c.report.requests,
        c.report.non_2xx,
        e[0],
        e[1],
        e[2],
        e[3],
        c.report.p99_ms
    );
}
