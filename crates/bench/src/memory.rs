//! Memory figures from `/proc/PID/status`: the peak resident set of this
//! process (`VmHWM`), the current (`VmRSS`) and peak of another, in MiB.
//! Reads `/proc` only.

/// Peak resident memory of this process so far; NaN if it cannot be read.
pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_mib(&s, "VmHWM:"))
        .unwrap_or(f64::NAN)
}

/// Resident memory of process `pid` now; `None` if it is gone.
pub(crate) fn rss_mib(pid: u64) -> Option<f64> {
    status_mib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

/// Peak resident memory of process `pid` so far (`VmHWM`); `None` if it is gone.
pub(crate) fn peak_mib(pid: u64) -> Option<f64> {
    status_mib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmHWM:",
    )
}

/// The `key:  1234 kB` line of a status file, in MiB.
fn status_mib(status: &str, key: &str) -> Option<f64> {
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_mib() {
        let status = "Name:\tferry\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_mib(status, "VmHWM:"), Some(20.0));
        assert_eq!(status_mib(status, "VmRSS:"), Some(10.0));
        assert_eq!(status_mib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_a_peak() {
        assert!(peak_rss_mib() > 0.0);
        assert!(rss_mib(u64::from(std::process::id())).is_some_and(|m| m > 0.0));
    }
}
