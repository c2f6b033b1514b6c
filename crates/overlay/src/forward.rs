//! Forwarding for the pod network where the node's iptables FORWARD policy
//! is DROP (Docker sets it; some hardening guides too). An nftables
//! `accept` in ferry's own table cannot override a drop in another base
//! chain, so, as flannel does with its FLANNEL-FWD chain, ferry adds a
//! chain accepting the pod network to the iptables filter table of every
//! backend (nft, legacy) whose FORWARD policy is DROP, and a jump to it
//! first in FORWARD. Checked again every few seconds, as flannel does, so
//! a firewall reloaded later does not cut the pods off.
//!
//! `rules` is pure; `ensure` runs the iptables tools.

use ferry_sys::{Tool, ToolError};
use ipnet::Ipv4Net;

/// ferry's chain in the filter table.
pub const CHAIN: &str = "FERRY-POD-FORWARD";

/// The iptables backends checked.
const FLAVORS: [&str; 2] = ["iptables-nft", "iptables-legacy"];

/// `iptables-restore --noflush` input: the chain, flushed and refilled.
pub fn rules(cluster_cidr: Ipv4Net) -> String {
    let net = cluster_cidr.trunc();
    format!(
        "*filter\n:{CHAIN} - [0:0]\n\
         -A {CHAIN} -s {net} -m comment --comment \"ferry pod network\" -j ACCEPT\n\
         -A {CHAIN} -d {net} -m comment --comment \"ferry pod network\" -j ACCEPT\n\
         COMMIT\n"
    )
}

/// True when an `iptables-save -t filter` output drops forwarded packets by policy.
pub fn forward_policy_drops(save: &str) -> bool {
    save.lines().any(|l| l.starts_with(":FORWARD DROP"))
}

/// A backend's filter table as `iptables-save` prints it; None when its
/// tools or its tables are missing.
fn filter_table(flavor: &str) -> Option<String> {
    Tool::new(format!("{flavor}-save"))
        .args(["-t", "filter"])
        .run()
        .ok()
        .map(|o| o.stdout)
}

/// Makes sure the pod network is forwarded by every iptables backend that
/// would drop it; returns the backends it had to program.
pub fn ensure(cluster_cidr: Ipv4Net) -> Result<Vec<&'static str>, ToolError> {
    let mut programmed = Vec::new();
    for flavor in FLAVORS {
        // A backend whose tools are missing or whose tables do not exist
        // drops nothing.
        let Some(save) = filter_table(flavor) else {
            continue;
        };
        if !forward_policy_drops(&save) {
            continue;
        }
        Tool::new(format!("{flavor}-restore"))
            .args(["-w", "5", "--noflush"])
            .stdin(rules(cluster_cidr))
            .run()?;
        let jump = ["-w", "5", "-t", "filter", "-C", "FORWARD", "-j", CHAIN];
        if Tool::new(flavor).args(jump).run().is_err() {
            Tool::new(flavor)
                .args(["-w", "5", "-t", "filter", "-I", "FORWARD", "1", "-j", CHAIN])
                .run()?;
        }
        programmed.push(flavor);
    }
    Ok(programmed)
}

/// Removes the chain and its jump from every backend that has them;
/// returns the backends it cleaned.
pub fn remove() -> Result<Vec<&'static str>, ToolError> {
    let mut cleaned = Vec::new();
    for flavor in FLAVORS {
        let Some(save) = filter_table(flavor) else {
            continue;
        };
        if !save.contains(&format!(":{CHAIN} ")) {
            continue;
        }
        while Tool::new(flavor)
            .args(["-w", "5", "-t", "filter", "-D", "FORWARD", "-j", CHAIN])
            .run()
            .is_ok()
        {}
        Tool::new(flavor)
            .args(["-w", "5", "-t", "filter", "-F", CHAIN])
            .run()?;
        Tool::new(flavor)
            .args(["-w", "5", "-t", "filter", "-X", CHAIN])
            .run()?;
        cleaned.push(flavor);
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_accepts_the_pod_network_both_ways() {
        let text = rules("10.244.0.0/16".parse().unwrap());
        assert!(text.contains(":FERRY-POD-FORWARD - [0:0]"));
        assert!(text.contains("-A FERRY-POD-FORWARD -s 10.244.0.0/16 "));
        assert!(text.contains("-A FERRY-POD-FORWARD -d 10.244.0.0/16 "));
        assert!(text.ends_with("COMMIT\n"));
    }

    #[test]
    fn only_a_drop_policy_needs_the_chain() {
        assert!(forward_policy_drops(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [3:180]\nCOMMIT\n"
        ));
        assert!(!forward_policy_drops(
            "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
        ));
        assert!(!forward_policy_drops(""));
    }
}
