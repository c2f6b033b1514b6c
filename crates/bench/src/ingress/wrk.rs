//! Running wrk (pinned to core 0) and reading its report: requests per
//! second, latency percentiles, non-2xx answers and socket errors.
//! `parse` is pure; `run` starts wrk through `ferry_sys::Tool`.

use std::time::Duration;

use anyhow::Context;
use ferry_sys::Tool;

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Report {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    /// connect, read, write, timeout.
    pub socket_errors: [u64; 4],
}

/// `wrk -t1 -cCONNS -dSECONDSs --latency -H 'Host: HOST' URL` on core 0.
pub(super) fn run(url: &str, host: &str, connections: u32, seconds: u32) -> anyhow::Result<Report> {
    let out = Tool::new("taskset")
        .args(["-c", "0", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "-H", &format!("Host: {host}"), url])
        .timeout(Duration::from_secs(u64::from(seconds) + 60))
        .run()?;
    parse(&out.stdout).with_context(|| format!("reading wrk's report:\n{}", out.stdout))
}

fn millis(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (s, 1.0)
    };
    Some(num.parse::<f64>().ok()? * scale)
}

pub(super) fn parse(text: &str) -> Option<Report> {
    let mut r = Report::default();
    let mut found_rps = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
            found_rps = true;
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50_ms = millis(v)?;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = millis(v)?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            for (i, part) in v.split(',').enumerate().take(4) {
                r.socket_errors[i] = part.split_whitespace().nth(1)?.parse().ok()?;
            }
        } else if line.contains(" requests in ") {
            r.requests = line.split_whitespace().next()?.parse().ok()?;
        }
    }
    found_rps.then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrk_report_is_read_with_its_units() {
        let text = "Running 10s test @ http://127.0.0.1:8080/\n  1 threads and 50 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.41ms  200.00us   9.00ms   90.00%\n  Latency Distribution\n     50%  650.00us\n     75%    1.50ms\n     90%    1.80ms\n     99%    2.22ms\n  354203 requests in 10.00s, 60.00MB read\n  Socket errors: connect 0, read 100, write 0, timeout 2\n  Non-2xx or 3xx responses: 7\nRequests/sec:  35410.12\nTransfer/sec:      6.00MB\n";
        let r = parse(text).unwrap();
        assert_eq!(r.requests, 354_203);
        assert_eq!(r.rps, 35410.12);
        assert!((r.p50_ms - 0.65).abs() < 1e-9);
        assert_eq!(r.p99_ms, 2.22);
        assert_eq!(r.non_2xx, 7);
        assert_eq!(r.socket_errors, [0, 100, 0, 2]);
        assert_eq!(parse("no report"), None);
    }
}
