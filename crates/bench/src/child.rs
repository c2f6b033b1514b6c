//! Running the ferry binary itself (`std::env::current_exe`) for one of its
//! commands: a measurement that needs a fresh process (its peak memory is
//! its own), or a real command timed as a user would run it. Through
//! `ferry_sys::Tool`, so the child is always waited for, its stderr is in
//! the error when it fails, and a hung one is killed.

use std::time::Duration;

use anyhow::Context;
use ferry_sys::{Tool, ToolOutput};

/// Longer than any measurement the defaults make (iptables' full syncs at
/// 100k Services take minutes); only a hung child meets it.
const DEADLINE: Duration = Duration::from_secs(3 * 60 * 60);

/// Runs `ferry ARGS...`; a non-zero exit is an error with its stderr.
pub(crate) fn ferry<S: AsRef<str>>(args: &[S]) -> anyhow::Result<ToolOutput> {
    let exe = std::env::current_exe().context("locating the ferry binary")?;
    let exe = exe
        .to_str()
        .with_context(|| format!("the ferry binary's path {} is not UTF-8", exe.display()))?;
    Ok(Tool::new(exe)
        .args(args.iter().map(|a| a.as_ref()))
        .timeout(DEADLINE)
        .run()?)
}

/// Runs a child measurement, `ferry ARGS...`, and reads the one JSON object
/// of figures it prints.
pub(crate) fn figures<S: AsRef<str>>(args: &[S]) -> anyhow::Result<serde_json::Value> {
    let out = ferry(args)?;
    serde_json::from_str(&out.stdout)
        .with_context(|| format!("reading the child's figures: {}", out.stdout))
}

/// A figure of a child's JSON, NaN when it is missing.
pub(crate) fn figure(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}
