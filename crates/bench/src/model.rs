//! `ferry bench model`: loading and normalizing a large cluster from YAML
//! (time and peak memory, each run in a fresh child process), and the cost
//! of one update at several cluster sizes (it must not grow with the
//! cluster). Touches a temporary directory and runs the ferry binary.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use ferry_model::{ClusterState, Update};

use crate::child::{figure, figures};
use crate::memory::peak_rss_mib;
use crate::stats::{median, percentile};
use crate::synth;

/// Update rounds, interleaved across cluster sizes.
const ROUNDS: usize = 5;

/// What `ferry bench model` measures.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// Services to load from YAML.
    pub services: usize,
    /// Endpoints per service.
    pub endpoints: usize,
    /// Load runs (the median is reported).
    pub runs: usize,
    /// Cluster sizes for the update-cost table.
    pub update_sizes: Vec<usize>,
    /// Updates timed per size.
    pub updates: usize,
}

/// One load measurement, in this (child) process: prints one JSON line.
pub fn load_child(file: &Path) -> anyhow::Result<()> {
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
    Ok(())
}

/// Runs the benchmark and prints its tables.
pub fn run(a: ModelOptions) -> anyhow::Result<()> {
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

    let file = file
        .to_str()
        .context("the scratch directory's path is not UTF-8")?;
    let (mut decode, mut build, mut total, mut rss) = (vec![], vec![], vec![], vec![]);
    for run in 1..=a.runs {
        eprintln!("load run {run}/{} ...", a.runs);
        let v = figures(&["bench", "model-load-child", file]).context("the load child")?;
        let d = figure(&v, "decode_s");
        let b = figure(&v, "build_s");
        decode.push(d);
        build.push(b);
        total.push(d + b);
        rss.push(figure(&v, "peak_rss_mib"));
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
    Ok(())
}
