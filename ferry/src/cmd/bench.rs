//! `ferry bench ...`: benchmarks that print tables.
//!
//! `model`: loading and normalizing a large cluster from YAML (time and
//! peak memory, each run in a fresh child process), and the cost of one
//! update at several cluster sizes (it must not grow with the cluster).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, bail};
use ferry_model::{ClusterState, Update};

use crate::synth;

/// Update rounds, interleaved across cluster sizes.
const ROUNDS: usize = 5;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Cluster model: YAML load + normalize, and per-update cost.
    Model(ModelArgs),
    /// The lab: time for `lab up` and `lab down`, memory of an idle agent (needs root).
    Lab(LabArgs),
    /// Both proxy modes side by side in scratch namespaces: syncs, ruleset size, memory and first-packet latency at growing sizes (needs root).
    Proxy(ProxyArgs),
    /// Cluster DNS: dnsperf against ferry dns, nsd and knot (same zone), and ferry's vs unbound's forward cache.
    Dns(crate::cmd::bench_dns::DnsArgs),
    /// One proxy measurement (run by `bench proxy` in a child process).
    #[command(hide = true)]
    ProxyChild {
        mode: String,
        services: usize,
        runs: usize,
    },
    /// One load measurement (run by `bench model` in a child process).
    #[command(hide = true)]
    ModelLoadChild { file: PathBuf },
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// Cluster sizes (services, 8 endpoints each).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000,100000")]
    sizes: Vec<usize>,
    /// One-change syncs timed per size (fewer where one takes seconds).
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Proxy modes: nftables, iptables-legacy, iptables-nft.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nftables,iptables-legacy,iptables-nft"
    )]
    modes: Vec<String>,
    /// Skip a size when the previous size's full sync predicts more than this many seconds.
    #[arg(long, default_value_t = 120.0)]
    max_predicted_s: f64,
}

#[derive(clap::Args)]
struct LabArgs {
    /// Runs per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Sizes as NODESxPODS.
    #[arg(long, value_delimiter = ',', default_value = "2x10,10x200")]
    sizes: Vec<String>,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Services to load from YAML.
    #[arg(long, default_value_t = 20_000)]
    services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 8)]
    endpoints: usize,
    /// Load runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Cluster sizes for the update-cost table.
    #[arg(long, value_delimiter = ',', default_value = "20000,100000")]
    update_sizes: Vec<usize>,
    /// Updates timed per size.
    #[arg(long, default_value_t = 1000)]
    updates: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Model(a) => model(a),
        What::Lab(a) => crate::cmd::bench_lab::run(a.runs, &a.sizes),
        What::Proxy(a) => {
            crate::cmd::bench_proxy::run(&a.sizes, a.changes, &a.modes, a.max_predicted_s)
        }
        What::ProxyChild {
            mode,
            services,
            runs,
        } => crate::cmd::bench_proxy::child(&mode, services, runs),
        What::Dns(a) => crate::cmd::bench_dns::run(a),
        What::ModelLoadChild { file } => model_load_child(&file),
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn model_load_child(file: &PathBuf) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let decoded = ferry_model::decode(&file.display().to_string(), &text);
    drop(text);
    let decode_s = start.elapsed().as_secs_f64();
    if !decoded.errors.is_empty() {
        bail!(
            "generated manifests did not validate: {}",
            decoded.errors[0]
        );
    }
    let t = Instant::now();
    let state = ClusterState::from_objects(decoded.objects.into_iter().map(|d| d.object));
    let build_s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "decode_s": decode_s, "build_s": build_s, "objects": state.len(),
            "ports": state.service_ports().count(), "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn model(a: ModelArgs) -> anyhow::Result<ExitCode> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; figures are not meaningful (use cargo run --release)"
        );
    }
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let file = dir.path().join("cluster.yaml");
    eprintln!(
        "generating {} services x {} endpoints as YAML ...",
        a.services, a.endpoints
    );
    let text = synth::manifests(a.services, a.endpoints);
    let yaml_mib = text.len() as f64 / (1024.0 * 1024.0);
    std::fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
    drop(text);

    let exe = std::env::current_exe().context("locating the ferry binary")?;
    let (mut decode, mut build, mut total, mut rss) = (vec![], vec![], vec![], vec![]);
    for run in 1..=a.runs {
        eprintln!("load run {run}/{} ...", a.runs);
        let out = Command::new(&exe)
            .args(["bench", "model-load-child"])
            .arg(&file)
            .output()
            .context("running the load child")?;
        if !out.status.success() {
            bail!(
                "load child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("reading the child's figures")?;
        let d = v["decode_s"].as_f64().unwrap_or(f64::NAN);
        let b = v["build_s"].as_f64().unwrap_or(f64::NAN);
        decode.push(d);
        build.push(b);
        total.push(d + b);
        rss.push(v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN));
    }
    let objects = a.services * 2;
    let total_s = median(&mut total);

    println!(
        "ferry bench model  ({} CPUs, {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "DEBUG build"
        } else {
            "release build"
        }
    );
    println!();
    println!(
        "Load from YAML: {} services x {} endpoints = {} objects, {:.1} MiB of YAML, median of {} runs (each in a fresh process)",
        a.services, a.endpoints, objects, yaml_mib, a.runs
    );
    println!("  {:<28} {:>10}", "step", "time");
    println!(
        "  {:<28} {:>9.3}s",
        "read + parse + validate",
        median(&mut decode)
    );
    println!(
        "  {:<28} {:>9.3}s",
        "normalize (ClusterState)",
        median(&mut build)
    );
    println!(
        "  {:<28} {:>9.3}s   ({:.0} objects/s)",
        "total",
        total_s,
        objects as f64 / total_s
    );
    println!("  {:<28} {:>8.0}MiB", "peak RSS", median(&mut rss));
    println!();

    println!(
        "One update at growing cluster sizes ({} updates each, interleaved across sizes in {ROUNDS} rounds so that machine noise hits all alike;",
        a.updates
    );
    println!(
        "  apply() of one object with its exact change set, old snapshot dropped; median and p99)"
    );
    let mut states = Vec::new();
    for &n in &a.update_sizes {
        eprintln!("building a state of {n} services ...");
        let t = Instant::now();
        let state = ClusterState::from_objects(synth::objects(n, a.endpoints));
        states.push((n, state, t.elapsed().as_secs_f64(), Vec::new(), Vec::new()));
    }
    let per_round = a.updates.div_ceil(ROUNDS);
    for round in 0..ROUNDS {
        for (n, state, _, slice_us, svc_us) in states.iter_mut() {
            for step in 0..per_round {
                let k = round * per_round + step;
                // Spread updates over the whole cluster, deterministically.
                let i = (k * 7919) % *n;
                let update = Update::Apply(synth::slice(i, a.endpoints, Some(k % a.endpoints)));
                let t = Instant::now();
                let (next, changes) = state.apply([update]);
                *state = next;
                slice_us.push(t.elapsed().as_secs_f64() * 1e6);
                if changes.endpoints.len() != 1 {
                    bail!("expected one endpoint change, got {}", changes.summary());
                }
                let update = Update::Apply(synth::service(i, 1000 + k as i32));
                let t = Instant::now();
                let (next, changes) = state.apply([update]);
                *state = next;
                svc_us.push(t.elapsed().as_secs_f64() * 1e6);
                if changes.service_ports.len() != 1 {
                    bail!(
                        "expected one service port change, got {}",
                        changes.summary()
                    );
                }
            }
        }
    }
    println!(
        "  {:>9}  {:>14}  {:>14}  {:>14}  {:>14}  {:>9}",
        "services", "slice p50", "slice p99", "service p50", "service p99", "build"
    );
    let mut p50s = Vec::new();
    for (n, _, build_s, slice_us, svc_us) in states.iter_mut() {
        let s50 = median(slice_us);
        p50s.push(s50);
        println!(
            "  {:>9}  {:>12.1}µs  {:>12.1}µs  {:>12.1}µs  {:>12.1}µs  {:>8.2}s",
            n,
            s50,
            percentile(slice_us, 0.99),
            median(svc_us),
            percentile(svc_us, 0.99),
            build_s
        );
    }
    if let (Some(first), Some(last)) = (p50s.first(), p50s.last())
        && p50s.len() > 1
    {
        println!(
            "  slice update p50, largest / smallest cluster: {:.2}x (persistent maps: O(log n) per change; 1.0 is perfectly flat)",
            last / first
        );
    }
    Ok(ExitCode::SUCCESS)
}
