//! Masquerade for pod traffic leaving the pod network, flannel's rules
//! (FLANNEL-POSTRTG) in ferry's own nftables table `ip ferry-overlay`:
//! packets the service proxy masquerades (mark 0x4000, see
//! ARCHITECTURE.md "Settled between issues") are left alone; pod to pod
//! keeps its address; pod to anywhere else but multicast, and anything
//! from outside to the pod network, is masqueraded with random ports.
//! `ruleset` is pure; `apply` is the only place that runs `nft` for it.

use ipnet::Ipv4Net;

/// The table's name.
pub const TABLE: &str = "ferry-overlay";

/// The whole table for a node whose subnet is `pod_cidr` in the cluster's
/// pod network `cluster_cidr` (replaces any earlier version atomically).
pub fn ruleset(cluster_cidr: Ipv4Net, pod_cidr: Ipv4Net) -> String {
    format!(
        "table ip {TABLE} {{}}
delete table ip {TABLE}
table ip {TABLE} {{
\tcomment \"ferry pod network: managed by ferry agent, do not edit\"
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat + 10; policy accept;
\t\tmeta mark & 0x4000 == 0x4000 return
\t\tip saddr {pod} ip daddr {cluster} return
\t\tip saddr {cluster} ip daddr {pod} return
\t\tip saddr != {cluster} ip daddr {pod} return
\t\tip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random
\t\tip saddr != {cluster} ip daddr {cluster} masquerade fully-random
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr {cluster} accept
\t\tip daddr {cluster} accept
\t}}
}}
",
        cluster = cluster_cidr.trunc(),
        pod = pod_cidr.trunc(),
    )
}

/// Loads the table (in network namespace `netns`, or here).
pub fn apply(
    cluster_cidr: Ipv4Net,
    pod_cidr: Ipv4Net,
    netns: Option<&str>,
) -> Result<(), ferry_sys::ToolError> {
    ferry_sys::Tool::new("nft")
        .args(["-f", "-"])
        .netns(netns)
        .stdin(ruleset(cluster_cidr, pod_cidr))
        .run()
        .map(drop)
}

/// Deletes the table (here) if it exists; true when it did.
pub fn remove() -> Result<bool, ferry_sys::ToolError> {
    let listed = ferry_sys::Tool::new("nft")
        .args(["list", "tables", "ip"])
        .run()?;
    if !listed
        .stdout
        .lines()
        .any(|l| l.trim() == format!("table ip {TABLE}"))
    {
        return Ok(false);
    }
    ferry_sys::Tool::new("nft")
        .args(["delete", "table", "ip", TABLE])
        .run()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannels_rules_in_order_with_the_proxys_mark_first() {
        let text = ruleset(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        );
        let rules: Vec<&str> = text.lines().map(str::trim).collect();
        let at = |r: &str| {
            rules
                .iter()
                .position(|l| *l == r)
                .unwrap_or_else(|| panic!("{r}: {text}"))
        };
        let order = [
            "meta mark & 0x4000 == 0x4000 return",
            "ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return",
            "ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
            "ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
            "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
            "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
        ];
        let positions: Vec<usize> = order.iter().map(|r| at(r)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }
}
