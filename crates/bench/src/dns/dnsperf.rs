//! Running dnsperf against one server: saturated runs (qps, average
//! latency, lost queries, the server's CPU share) on core 1, the open-loop
//! latency distribution at 20k qps, and warming a forward cache. dnsperf
//! runs under `taskset` as a plain `std::process::Command` (it is bounded
//! by `-l`); the warm-up through `ferry_sys::Tool`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use ferry_sys::Tool;

use crate::procs::Proc;
use crate::stats::percentile;

/// One saturated run.
pub(super) struct Run {
    pub(super) qps: f64,
    pub(super) avg_ms: f64,
    pub(super) lost: u64,
    pub(super) cpu: f64,
}

fn field(out: &str, key: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(super) fn dnsperf(p: &Proc, queries: &Path, seconds: u32) -> anyhow::Result<Run> {
    let cpu0 = p.cpu_secs();
    let t0 = Instant::now();
    let out = Command::new("taskset")
        .args([
            "-c",
            &super::CLIENT_CORE.to_string(),
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            &p.port.to_string(),
            "-d",
        ])
        .arg(queries)
        .args([
            "-l",
            &seconds.to_string(),
            "-c",
            "4",
            "-q",
            "200",
            "-t",
            "2",
        ])
        .output()
        .context("running dnsperf")?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (p.cpu_secs() - cpu0) / wall;
    let text = String::from_utf8_lossy(&out.stdout);
    let qps = field(&text, "Queries per second:").context("dnsperf printed no qps")?;
    Ok(Run {
        qps,
        avg_ms: field(&text, "Average Latency (s):").unwrap_or(0.0) * 1000.0,
        lost: field(&text, "Queries lost:").unwrap_or(0.0) as u64,
        cpu,
    })
}

/// The open-loop latency run: p50 / p99 in ms and the queries lost.
pub(super) struct Latency {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) lost: u64,
}

/// p50 / p99 at a fixed 20k qps (open loop), from dnsperf -v's per-query times.
pub(super) fn latency(p: &Proc, queries: &Path) -> anyhow::Result<Latency> {
    let out = Command::new("taskset")
        .args([
            "-c",
            &super::CLIENT_CORE.to_string(),
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            &p.port.to_string(),
            "-d",
        ])
        .arg(queries)
        .args(["-l", "5", "-Q", "20000", "-v", "-t", "2"])
        .output()
        .context("running dnsperf -v")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lost = field(&text, "Queries lost:").unwrap_or(0.0) as u64;
    let mut lat: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    if lat.is_empty() {
        return Ok(Latency {
            p50: f64::NAN,
            p99: f64::NAN,
            lost,
        });
    }
    Ok(Latency {
        p50: percentile(&mut lat, 0.5),
        p99: percentile(&mut lat, 0.99),
        lost,
    })
}

pub(super) fn warm(p: &Proc, dir: &Path) {
    let _ = Tool::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &p.port.to_string(), "-d"])
        .arg(dir.join("warm.txt").display().to_string())
        .args(["-n", "1", "-Q", "20000"])
        .output();
}
