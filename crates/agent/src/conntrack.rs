//! UDP conntrack cleanup, as kube-proxy does it: UDP has no connection to
//! end, so a conntrack entry keeps sending a client's datagrams to an
//! endpoint that is gone (or, for a Service that had no endpoint, nowhere)
//! until it times out. After each sync the entries that would be stale are
//! deleted with the `conntrack` tool, in this node's namespace.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ferry_proxy::{PlannedEndpoint, ServicePlan};

fn conntrack(args: &[String]) {
    let tool = ferry_sys::Tool::new("conntrack")
        .args(args.iter().cloned())
        .timeout(std::time::Duration::from_secs(5));
    match tool.output() {
        // Exit status 1 means no entry matched: nothing to clean.
        Ok(_) => tracing::debug!(args = ?args, "conntrack entries deleted"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot run conntrack; stale UDP flows stay until they time out")
        }
    }
}

fn endpoints(p: Option<&ServicePlan>) -> BTreeSet<PlannedEndpoint> {
    p.map(|p| {
        p.cluster_endpoints
            .iter()
            .chain(&p.external_endpoints)
            .cloned()
            .collect()
    })
    .unwrap_or_default()
}

fn addresses(p: &ServicePlan) -> Vec<IpAddr> {
    p.cluster_ips
        .iter()
        .chain(&p.external_ips)
        .chain(&p.load_balancer_ips)
        .copied()
        .collect()
}

/// Deletes UDP flows made stale by the change from `before` to `after`.
pub(crate) fn clean(before: Option<&ServicePlan>, after: Option<&ServicePlan>) {
    let old = endpoints(before);
    let new = endpoints(after);
    // Flows still going to an endpoint that is gone.
    for gone in old.difference(&new) {
        if new.iter().any(|e| e.ip == gone.ip && e.port == gone.port) {
            continue;
        }
        conntrack(
            &[
                "-D",
                "-p",
                "udp",
                "--reply-src",
                &gone.ip.to_string(),
                "--reply-port-src",
                &gone.port.to_string(),
            ]
            .map(String::from),
        );
    }
    // A Service that had no endpoint has entries that never were DNATed.
    if let Some(after) = after
        && old.is_empty()
        && !new.is_empty()
    {
        for ip in addresses(after) {
            conntrack(
                &[
                    "-D",
                    "-p",
                    "udp",
                    "--orig-dst",
                    &ip.to_string(),
                    "--orig-port-dst",
                    &after.port.to_string(),
                ]
                .map(String::from),
            );
        }
        if let Some(np) = after.node_port {
            conntrack(&["-D", "-p", "udp", "--orig-port-dst", &np.to_string()].map(String::from));
        }
    }
}
