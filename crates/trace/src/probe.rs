//! `--probe`: one real TCP connection from FROM's namespace to the
//! destination, then its conntrack entry (original and reply tuples) on
//! the node that translated it, and in iptables mode the nat rules whose
//! packet counters moved.
//!
//! Touches the kernel and the network inside lab namespaces only: a
//! socket opened in FROM's namespace (`ferry_sys::netns::in_netns`);
//! runs `conntrack` and `iptables-save` in the node's namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ferry_sys::Tool;
use serde::Serialize;

use crate::kernel::netfilter::iptables_nat_counters;
use crate::{ProxyMode, TraceError};

#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    pub summary: String,
    /// The client's address as it connected.
    pub local: Option<String>,
    /// The first line of the answer.
    pub answer: Option<String>,
    /// conntrack's lines for the connection (original and reply tuples).
    pub conntrack: Vec<String>,
    /// iptables mode: `chain rule (+packets)` for every nat rule that moved.
    pub counters: Vec<String>,
    /// The endpoint the connection went to: the reply tuple's source.
    pub chosen: Option<String>,
    /// nftables mode: `nft monitor trace` lines of the probe's packets in
    /// ferry's tables (the rules and verdicts they met).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nftrace: Vec<String>,
}

/// The reply tuple's source address and port of a conntrack line (the
/// second `src=` and `sport=`): the endpoint after DNAT.
pub fn reply_source(line: &str) -> Option<String> {
    let field = |key: &str| -> Option<String> {
        line.split_whitespace()
            .filter_map(|w| w.strip_prefix(key))
            .nth(1)
            .map(str::to_string)
    };
    Some(format!("{}:{}", field("src=")?, field("sport=")?))
}

fn counters(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('[')?;
            let (c, rule) = rest.split_once("] ")?;
            let packets = c.split(':').next()?.parse().ok()?;
            rule.starts_with("-A KUBE-")
                .then(|| (rule.to_string(), packets))
        })
        .collect()
}

/// Connects from `from_netns` to `dest` and reads the entry on `node_netns`.
pub fn probe(
    from_netns: &str,
    node_netns: &str,
    source: std::net::IpAddr,
    dest: SocketAddr,
    mode: ProxyMode,
) -> Result<ProbeResult, TraceError> {
    let before = match mode {
        ProxyMode::Iptables => Some(iptables_nat_counters(node_netns)?),
        ProxyMode::Nftables => None,
    };
    let connect = || {
        ferry_sys::netns::in_netns(
            from_netns,
            move || -> std::io::Result<(SocketAddr, String)> {
                let mut s = TcpStream::connect_timeout(&dest, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let local = s.local_addr()?;
                s.write_all(
                    format!("GET / HTTP/1.0\r\nHost: {dest}\r\nUser-Agent: ferry-trace\r\n\r\n")
                        .as_bytes(),
                )?;
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let first = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                Ok((local, first))
            },
        )
        .map_err(|e| TraceError::Kernel {
            netns: from_netns.into(),
            why: e.to_string(),
        })
    };
    let (connected, nftrace) = match mode {
        ProxyMode::Nftables => crate::nftrace::traced(node_netns, source, dest, connect)?,
        ProxyMode::Iptables => (connect(), Vec::new()),
    };
    let connected = connected?;
    let (local, answer) = match connected {
        Ok((l, a)) => (Some(l), Some(a)),
        Err(e) => {
            return Ok(ProbeResult {
                summary: format!("connect to {dest} from {from_netns} failed: {e}"),
                local: None,
                answer: None,
                conntrack: Vec::new(),
                counters: Vec::new(),
                chosen: None,
                nftrace,
            });
        }
    };
    let mut conntrack = Vec::new();
    if let Some(l) = local {
        let out = Tool::new("conntrack")
            .args([
                "-L",
                "-p",
                "tcp",
                "-s",
                &l.ip().to_string(),
                "--sport",
                &l.port().to_string(),
            ])
            .netns(Some(node_netns))
            .run()
            .map_err(|e| TraceError::Kernel {
                netns: node_netns.into(),
                why: e.to_string(),
            })?;
        conntrack = out.stdout.lines().map(str::to_string).collect();
    }
    let mut moved = Vec::new();
    if let Some(before) = before {
        let after = iptables_nat_counters(node_netns)?;
        let old = counters(&before);
        for (rule, n) in counters(&after) {
            let was = old.iter().find(|(r, _)| *r == rule).map_or(0, |(_, n)| *n);
            if n > was {
                moved.push(format!("{rule} (+{} packets)", n - was));
            }
        }
    }
    Ok(ProbeResult {
        summary: format!(
            "connected {} -> {dest}{}",
            local.map(|l| l.to_string()).unwrap_or_default(),
            answer
                .as_deref()
                .map(|a| format!(": {a}"))
                .unwrap_or_default()
        ),
        local: local.map(|l| l.to_string()),
        answer,
        chosen: conntrack.iter().find_map(|l| reply_source(l)),
        conntrack,
        counters: moved,
        nftrace,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chosen_endpoint_is_the_reply_tuples_source() {
        let line = "tcp      6 118 TIME_WAIT src=10.204.0.13 dst=172.16.255.220 sport=40000 dport=80 src=10.204.1.3 dst=10.204.0.1 sport=80 dport=40000 [ASSURED] mark=0 use=1";
        assert_eq!(super::reply_source(line).as_deref(), Some("10.204.1.3:80"));
    }

    #[test]
    fn counters_are_read_from_iptables_save_c() {
        let c = super::counters(
            "[0:0] -A KUBE-SERVICES -j X\n[3:180] -A KUBE-SEP-A -j DNAT\n:KUBE-SEP-A - [0:0]\n[1:1] -A OTHER -j Y\n",
        );
        assert_eq!(
            c,
            vec![
                ("-A KUBE-SERVICES -j X".to_string(), 0),
                ("-A KUBE-SEP-A -j DNAT".to_string(), 3)
            ]
        );
    }
}
