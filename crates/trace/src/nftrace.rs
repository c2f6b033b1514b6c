//! nftables' packet tracing for `--probe` in nftables mode, where ferry's
//! maps carry no per-Service counters: a temporary table `ip ferry-trace`
//! sets `nftrace` on the probe's packets (by source, destination and
//! port, before any NAT), `nft monitor trace` prints every rule they meet
//! while the probe runs, and the table is deleted again, also on failure.
//!
//! Touches the kernel: the table, in one node namespace; runs `nft` (and
//! `timeout` around `nft monitor trace`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ferry_sys::Tool;

use crate::TraceError;

const TABLE: &str = "ferry-trace";

/// Deletes the table when dropped.
struct Table<'a> {
    netns: &'a str,
}

impl Drop for Table<'_> {
    fn drop(&mut self) {
        let _ = Tool::new("nft")
            .args(["delete", "table", "ip", TABLE])
            .netns(Some(self.netns))
            .run();
    }
}

/// Runs `probe` while tracing packets from `source` to `dest` in
/// `netns`; returns its result and the trace lines that name ferry's
/// tables.
pub fn traced<T>(
    netns: &str,
    source: IpAddr,
    dest: SocketAddr,
    probe: impl FnOnce() -> T,
) -> Result<(T, Vec<String>), TraceError> {
    let fail = |why: String| TraceError::Kernel {
        netns: netns.to_string(),
        why,
    };
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (source, dest.ip()) else {
        return Ok((probe(), Vec::new()));
    };
    let port = dest.port();
    let rule = format!("ip saddr {src} ip daddr {dst} tcp dport {port} meta nftrace set 1");
    let text = format!(
        "table ip {TABLE} {{\n\tchain pre {{ type filter hook prerouting priority -350; {rule}; }}\n\tchain out {{ type filter hook output priority -350; {rule}; }}\n}}\n"
    );
    Tool::new("nft")
        .args(["-f", "-"])
        .stdin(text)
        .netns(Some(netns))
        .run()
        .map_err(|e| fail(e.to_string()))?;
    let _table = Table { netns };
    let ns = netns.to_string();
    let monitor = std::thread::spawn(move || {
        Tool::new("timeout")
            .args(["2", "nft", "monitor", "trace"])
            .netns(Some(&ns))
            .timeout(Duration::from_secs(5))
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    });
    // Let the monitor subscribe before the first packet.
    std::thread::sleep(Duration::from_millis(300));
    let result = probe();
    let lines = monitor.join().unwrap_or_default();
    Ok((result, rules_met(&lines)))
}

/// The rules the traced packets met in ferry's tables, in order, each
/// once (NAT decides on a connection's first packet; later packets meet
/// the same filter rules again).
pub(crate) fn rules_met(monitor: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in monitor.lines() {
        // `trace id 1a2b3c4d ip ferry services rule ... (verdict ...)`
        let rest = line
            .trim()
            .strip_prefix("trace id ")
            .and_then(|r| r.split_once(' '));
        let Some((_, what)) = rest else { continue };
        let ours = what.starts_with("ip ferry ") || what.starts_with("ip ferry-overlay ");
        if ours && what.contains(" rule ") && !out.iter().any(|l| l == what) {
            out.push(what.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_rules_met_in_ferrys_tables_are_kept_once() {
        let monitor = "trace id ab ip ferry nat_prerouting packet: iif \"cni0\" ip saddr 10.204.0.13
trace id ab ip ferry services rule meta mark set ip daddr . meta l4proto . th dport map @cluster_ips jump dispatch (verdict jump dispatch)
trace id ab ip ferry pick_3 rule meta l4proto { tcp, udp, sctp } dnat ip to meta mark . numgen random mod 3 map @endpoints (verdict accept)
trace id cd ip ferry-overlay forward rule ip saddr 10.204.0.0/16 accept (verdict accept)
trace id ef ip ferry-overlay forward rule ip saddr 10.204.0.0/16 accept (verdict accept)
trace id ef ip ferry-trace pre rule ip saddr 10.204.0.13 meta nftrace set 1 (verdict continue)
";
        let met = super::rules_met(monitor);
        assert_eq!(met.len(), 3, "{met:#?}");
        assert!(met[1].starts_with("ip ferry pick_3 rule"));
    }
}
