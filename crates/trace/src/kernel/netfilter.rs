//! The proxy's kernel state in one node namespace: ferry's nft maps and
//! sets read back as typed elements (`ferry_proxy::nft::netlink`), or the
//! nat table as `iptables-save` prints it.
//!
//! Touches the kernel: netlink inside the namespace; runs `iptables-save`
//! there (through `ferry_sys::Tool`).

use ferry_proxy::Family;
use ferry_proxy::nft::netlink::Netlink;
use ferry_proxy::nft::ruleset::TABLE;
use ferry_proxy::nft::sets::{Element, Set};
use ferry_sys::Tool;

use crate::TraceError;
use crate::iptables::{Rule, parse_rules};

/// The sets a trace reads.
const SETS: [Set; 6] = [
    Set::ClusterIps,
    Set::ExternalIps,
    Set::NodePorts,
    Set::Endpoints,
    Set::Pick,
    Set::Hairpin,
];

/// Every element of the sets a trace reads, from the `ip ferry` table of
/// `netns`.
pub fn nft_elements(netns: &str) -> Result<Vec<Element>, TraceError> {
    let fail = |why: String| TraceError::Kernel {
        netns: netns.to_string(),
        why,
    };
    let mut nl = Netlink::open_in(netns, Family::V4).map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    for set in SETS {
        out.extend(
            nl.elements(TABLE, set)
                .map_err(|e| fail(format!("reading ip {TABLE} {}: {e}", set.name())))?,
        );
    }
    Ok(out)
}

/// The nat table's rules in `netns`, as `iptables-save -t nat` prints them.
pub fn iptables_nat(netns: &str) -> Result<Vec<Rule>, TraceError> {
    let out = Tool::new("iptables-save")
        .args(["-t", "nat"])
        .netns(Some(netns))
        .run()
        .map_err(|e| TraceError::Kernel {
            netns: netns.to_string(),
            why: e.to_string(),
        })?;
    Ok(parse_rules(&out.stdout))
}

/// The same with packet counters (`-c`), for the probe.
pub fn iptables_nat_counters(netns: &str) -> Result<String, TraceError> {
    Tool::new("iptables-save")
        .args(["-c", "-t", "nat"])
        .netns(Some(netns))
        .run()
        .map(|o| o.stdout)
        .map_err(|e| TraceError::Kernel {
            netns: netns.to_string(),
            why: e.to_string(),
        })
}
