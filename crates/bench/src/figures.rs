//! A benchmark's figures as files: the JSON (`--json FILE`) and the chart
//! drawn from that same JSON (`--svg FILE`), so a chart can be redrawn
//! from a saved run. The charts of `dns` and `lab` are here; they draw
//! with `ferry_trace::chart`, the drawing module trace shares.
//!
//! Pure, except [`write`] (the two files).

use std::path::Path;

use anyhow::Context;
use ferry_trace::chart::{Panel, Series, render};
use serde_json::Value;

/// Writes `figures` as JSON to `json` and `chart(figures)` to `svg`.
pub(crate) fn write(
    figures: &Value,
    json: Option<&Path>,
    svg: Option<&Path>,
    chart: fn(&Value) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = svg {
        std::fs::write(path, chart(figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn runs(figures: &Value) -> anyhow::Result<&Vec<Value>> {
    figures["runs"]
        .as_array()
        .context("figures: no \"runs\" array")
}

fn number(run: &Value, key: &str) -> f64 {
    run[key].as_f64().unwrap_or(f64::NAN)
}

/// One series per distinct `run[by]`, in order of appearance, with the
/// points (`run[x]`, `run[y]`).
fn series_by(runs: &[&Value], by: &str, x: &str, y: &str) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in runs {
        let name = r[by].as_str().unwrap_or("?").to_string();
        let point = (number(r, x), number(r, y));
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => out.push(Series {
                name,
                points: vec![point],
            }),
        }
    }
    out
}

/// `ferry bench dns`: queries per second and the p50 / p99 latency per
/// server against the zone's size (the runs with a `services` count; the
/// forward-cache runs have none and are left out).
pub fn dns_chart(figures: &Value) -> anyhow::Result<String> {
    let zone: Vec<&Value> = runs(figures)?
        .iter()
        .filter(|r| r["services"].is_u64())
        .collect();
    let panel = |title: &str, y_label: &str, key: &str| Panel {
        title: title.into(),
        x_label: "Services in the zone".into(),
        y_label: y_label.into(),
        series: series_by(&zone, "server", "services", key),
    };
    Ok(render(
        "ferry bench dns: ferry dns beside nsd and knot, same zone (dnsperf)",
        &[
            panel("queries per second (median)", "qps", "qps"),
            panel("latency p50 at 20k qps", "ms", "p50_ms"),
            panel("latency p99 at 20k qps", "ms", "p99_ms"),
        ],
    ))
}

/// `ferry bench lab`: `lab up` / `lab down` time and the idle memory of
/// an agent and of an echo pod against the number of pods.
pub fn lab_chart(figures: &Value) -> anyhow::Result<String> {
    let runs: Vec<&Value> = runs(figures)?.iter().collect();
    let series = |names: &[(&str, &str)]| -> Vec<Series> {
        names
            .iter()
            .map(|(name, key)| Series {
                name: name.to_string(),
                points: runs
                    .iter()
                    .map(|r| (number(r, "pods"), number(r, key)))
                    .collect(),
            })
            .collect()
    };
    Ok(render(
        "ferry bench lab: time to a Ready lab and idle memory, by size",
        &[
            Panel {
                title: "lab up (until Ready) and lab down".into(),
                x_label: "pods".into(),
                y_label: "s".into(),
                series: series(&[("lab up", "up_s"), ("lab down", "down_s")]),
            },
            Panel {
                title: "idle memory (median RSS)".into(),
                x_label: "pods".into(),
                y_label: "MiB".into(),
                series: series(&[("agent", "agent_rss_mib"), ("echo pod", "pod_rss_mib")]),
            },
        ],
    ))
}
