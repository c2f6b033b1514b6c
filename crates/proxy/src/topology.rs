//! Which endpoints a ServicePort's traffic may use on this node, following
//! kube-proxy's rules (`CategorizeEndpoints`): ready endpoints, falling back
//! to serving-and-terminating ones when none is ready; same-node or
//! same-zone endpoints when every ready endpoint carries hints and one
//! fits this node; only local endpoints where a traffic policy is Local.
//!
//! Pure.

use ferry_model::Endpoint;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    All,
    SameNode,
    SameZone,
}

fn mode(endpoints: &[&Endpoint], node: &str, zone: Option<&str>) -> Mode {
    let ready: Vec<&&Endpoint> = endpoints.iter().filter(|e| e.ready).collect();
    if ready.is_empty() {
        return Mode::All;
    }
    let all_node_hints = ready.iter().all(|e| e.node_hints().next().is_some());
    if all_node_hints && ready.iter().any(|e| e.node_hints().any(|n| n == node)) {
        return Mode::SameNode;
    }
    let all_zone_hints = ready.iter().all(|e| e.zone_hints().next().is_some());
    if let Some(zone) = zone
        && all_zone_hints
        && ready.iter().any(|e| e.zone_hints().any(|z| z == zone))
    {
        return Mode::SameZone;
    }
    Mode::All
}

fn fits(e: &Endpoint, mode: Mode, node: &str, zone: Option<&str>) -> bool {
    match mode {
        Mode::All => true,
        Mode::SameNode => e.node_hints().any(|n| n == node),
        Mode::SameZone => zone.is_some_and(|z| e.zone_hints().any(|h| h == z)),
    }
}

/// Ready endpoints that pass `keep`; if there are none, serving-and-terminating ones.
fn usable<'a>(endpoints: &[&'a Endpoint], keep: impl Fn(&Endpoint) -> bool) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = endpoints
        .iter()
        .copied()
        .filter(|e| e.ready && keep(e))
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints
        .iter()
        .copied()
        .filter(|e| e.serving && e.terminating && keep(e))
        .collect()
}

/// Endpoints for traffic that may go anywhere in the cluster (topology applied).
pub(crate) fn cluster<'a>(
    endpoints: &[&'a Endpoint],
    node: &str,
    zone: Option<&str>,
) -> Vec<&'a Endpoint> {
    let m = mode(endpoints, node, zone);
    usable(endpoints, |e| fits(e, m, node, zone))
}

/// Endpoints on this node only.
pub(crate) fn local<'a>(endpoints: &[&'a Endpoint], node: &str) -> Vec<&'a Endpoint> {
    usable(endpoints, |e| e.node_name() == Some(node))
}
