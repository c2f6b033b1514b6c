//! `ferry bench proxy`: both proxy modes side by side, each size and mode
//! in a fresh child process (for its peak memory, `child.rs`) and fresh
//! scratch namespaces (`scratch.rs`). Measured: full sync, one-change
//! syncs, ruleset size, memory, the first-packet latency of new connections
//! to a ClusterIP (TCP connect time through the router's rules) and new
//! connections per second; for iptables also the seeds' method (one
//! `iptables -A` process per rule). Then the time from a manifest change to
//! the rule in the kernel (nftables, `end_to_end.rs`). This file runs the
//! children and prints the tables.

mod child;
mod end_to_end;
mod scratch;

use anyhow::Context;

pub use child::child;
use child::parse_mode;
use scratch::Scratch;

use crate::child::{figure as f, figures};
use crate::stats::percentile;

/// Connections timed per target for the first-packet latency.
const CONNECTS: usize = 1000;

/// What `ferry bench proxy` measures.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Cluster sizes (services, 8 endpoints each).
    pub sizes: Vec<usize>,
    /// One-change syncs timed per size (fewer where one takes seconds).
    pub changes: usize,
    /// Proxy modes: nftables, iptables-legacy, iptables-nft.
    pub modes: Vec<String>,
    /// Skip a size when the previous size's full sync predicts more than this many seconds.
    pub max_predicted_s: f64,
    /// Write every figure as JSON here.
    pub json: Option<std::path::PathBuf>,
    /// Draw one change and first-packet latency against the number of
    /// Services (log axes, one line per mode) as SVG here.
    pub svg: Option<std::path::PathBuf>,
}

/// The seeds' story in one picture: one change and first-packet latency
/// against the number of Services, a line per mode, log axes.
fn chart(
    results: &std::collections::BTreeMap<(usize, String), serde_json::Value>,
    modes: &[String],
) -> String {
    use ferry_trace::chart::{Panel, Series, render};
    let series = |key: &str| -> Vec<Series> {
        modes
            .iter()
            .map(|m| Series {
                name: m.clone(),
                points: results
                    .iter()
                    .filter(|((_, mode), _)| mode == m)
                    .map(|((n, _), v)| (*n as f64, f(v, key)))
                    .collect(),
            })
            .collect()
    };
    render(
        "ferry bench proxy: nftables beside kube-proxy's iptables rules (8 endpoints per Service)",
        &[
            Panel {
                title: "one change (p50)".into(),
                x_label: "Services".into(),
                y_label: "ms".into(),
                series: series("one_p50_ms"),
            },
            Panel {
                title: "first packet to the last Service (p50)".into(),
                x_label: "Services".into(),
                y_label: "µs".into(),
                series: series("last_p50_us"),
            },
        ],
    )
}

/// Runs the benchmark (root needed) and prints its tables.
pub fn run(options: ProxyOptions) -> anyhow::Result<()> {
    let ProxyOptions {
        sizes,
        changes,
        modes,
        max_predicted_s,
        json,
        svg,
    } = options;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; figures are not meaningful (use cargo run --release)"
        );
    }
    for m in &modes {
        parse_mode(m)?;
    }
    println!("ferry bench proxy: nftables and iptables modes side by side, in scratch namespaces");
    println!(
        "(8 endpoints per service; full sync = cold ruleset, median of up to 3; one change = model apply + replan + sync of\n one EndpointSlice update; first packet = TCP connect time from a client namespace to a ClusterIP through the\n router namespace's rules, first and last service, {CONNECTS} connections each; conn/s = new connections per second\n to the last service, one client thread; seed = one `iptables -A` process adding one rule; RSS = the process\n holding model, plan and backend; for iptables, iptables-restore's own memory is not in it)\n"
    );
    println!(
        "  {:>7}  {:<16} {:>9} {:>9} {:>10} {:>10} {:>15} {:>15} {:>8} {:>8} {:>8}",
        "services",
        "mode",
        "rules/el",
        "full",
        "1-chg p50",
        "1-chg p99",
        "first svc p50/99",
        "last svc p50/99",
        "conn/s",
        "RSS",
        "seed"
    );
    let mut results: std::collections::BTreeMap<(usize, String), serde_json::Value> =
        Default::default();
    let mut last_full: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for &n in &sizes {
        for m in &modes {
            if let Some((prev_n, prev_s)) = last_full.get(m) {
                let predicted = prev_s * (n as f64 / *prev_n as f64).powi(2);
                if predicted > max_predicted_s {
                    println!(
                        "  {n:>7}  {m:<16} not run: its full sync at {prev_n} took {prev_s:.1} s, which predicts ~{predicted:.0} s here (limit {max_predicted_s:.0} s)"
                    );
                    continue;
                }
            }
            eprintln!("{m}: {n} services ...");
            let scratch = Scratch::create()?;
            let v = figures(&[
                "bench",
                "proxy-child",
                m,
                &n.to_string(),
                &changes.to_string(),
            ])
            .with_context(|| format!("{m} at {n} services"));
            drop(scratch);
            // One size that fails (a full sync past its tool's deadline on
            // a loaded machine) is a row of its own; the run goes on.
            let v = match v {
                Ok(v) => v,
                Err(e) => {
                    println!("  {n:>7}  {m:<16} failed: {e:#}");
                    last_full.insert(m.clone(), (n, f64::INFINITY));
                    continue;
                }
            };
            last_full.insert(m.clone(), (n, f(&v, "full_s")));
            println!(
                "  {:>7}  {:<16} {:>9} {:>8.2}s {:>8.2}ms {:>8.2}ms {:>7.0}/{:<5.0}us {:>7.0}/{:<5.0}us {:>8.0} {:>5.0}MiB {:>6}",
                n,
                m,
                v["size"],
                f(&v, "full_s"),
                f(&v, "one_p50_ms"),
                f(&v, "one_p99_ms"),
                f(&v, "first_p50_us"),
                f(&v, "first_p99_us"),
                f(&v, "last_p50_us"),
                f(&v, "last_p99_us"),
                f(&v, "cps"),
                f(&v, "peak_rss_mib"),
                if f(&v, "seed_rule_ms").is_nan() {
                    "-".to_string()
                } else {
                    format!("{:.0}ms", f(&v, "seed_rule_ms"))
                },
            );
            println!(
                "  {:>7}  {:<16} first change after the full sync: {:.2} ms",
                "",
                "",
                f(&v, "one_first_ms")
            );
            results.insert((n, m.clone()), v);
        }
    }
    println!("\n  ratios, iptables / nftables, same run (above 1: nftables is better):");
    println!(
        "  {:>7}  {:<16} {:>9} {:>10} {:>16} {:>14} {:>10}",
        "services", "iptables", "full", "1-chg p50", "last svc p50", "conn/s (n/i)", "RSS"
    );
    for &n in &sizes {
        let Some(nft) = results.get(&(n, "nftables".to_string())) else {
            continue;
        };
        for m in modes.iter().filter(|m| m.starts_with("iptables")) {
            let Some(ipt) = results.get(&(n, m.clone())) else {
                continue;
            };
            let r = |k: &str| f(ipt, k) / f(nft, k);
            println!(
                "  {:>7}  {:<16} {:>8.1}x {:>9.1}x {:>15.2}x {:>13.2}x {:>9.2}x",
                n,
                m,
                r("full_s"),
                r("one_p50_ms"),
                r("last_p50_us"),
                f(nft, "cps") / f(ipt, "cps"),
                r("peak_rss_mib"),
            );
            let seed = f(ipt, "seed_rule_ms");
            if !seed.is_nan() {
                println!(
                    "  {:>7}  {:<16} seeds' method: one rule {seed:.0} ms; a whole service (~35 rules, 9 chains) ~{:.1} s; {n} services one rule at a time ~{:.0} min (extrapolated, not run)",
                    "",
                    "",
                    seed * 35.0 / 1000.0,
                    seed * 35.0 * n as f64 / 60_000.0
                );
            }
        }
    }
    if let Some(path) = &json {
        let runs: Vec<serde_json::Value> = results
            .iter()
            .map(|((n, m), v)| serde_json::json!({"services": n, "mode": m, "figures": v}))
            .collect();
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::json!({"runs": runs}))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &svg {
        std::fs::write(path, chart(&results, &modes))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let _cleanup = Scratch::router_only()?;
    for (via, what) in [
        (
            end_to_end::Via::Manifests,
            "manifest change -> rule in the kernel (nftables, 1000 services, inotify + decode + plan + netlink)",
        ),
        (
            end_to_end::Via::Api,
            "the same change through the API (ferry apiserver's watch event, kube-rs watcher, 10 ms batching, plan, netlink)",
        ),
    ] {
        let mut e2e = end_to_end::end_to_end(1000, 50, via)
            .map_err(|e| anyhow::anyhow!("end to end ({via:?}): {e:#}"))?;
        println!(
            "\n  {what}: p50 {:.1} ms, p99 {:.1} ms over {} changes",
            percentile(&mut e2e, 0.5),
            percentile(&mut e2e, 0.99),
            e2e.len()
        );
    }
    Ok(())
}
