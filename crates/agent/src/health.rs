//! `/healthz`, `/readyz`, `/livez` as kube-proxy serves them on 10256.
//! The proxy is healthy while no change has waited longer than the health
//! timeout to be programmed and its last sync did not fail; `/healthz`
//! also needs the node to be eligible (not being deleted, not tainted for
//! deletion by the cluster autoscaler), because cloud load balancers probe
//! it to decide where to send traffic. The body says when the rules were
//! last updated and, when unhealthy, why. Before the source's first state
//! (the API server unreachable at start) `/healthz` and `/readyz` are 503
//! and the body says the source is stale and why.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_model::{Kind, Object};

use ferry_httpd::{Peer, Request, StatusCode, respond};
use tokio::net::TcpListener;
use tokio::sync::watch;

use ferry_proxy::component::SyncHealth;

use crate::{Progress, Published};

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Whether this node may receive load-balancer traffic: false while its
/// Node is being deleted or tainted `ToBeDeletedByClusterAutoscaler`.
fn node_eligible(published: &Published, node: &str) -> bool {
    !published
        .snapshot
        .state
        .objects_of(Kind::Node)
        .any(|o| match o {
            Object::Node(n) if n.metadata.name.as_deref() == Some(node) => {
                n.metadata.deletion_timestamp.is_some()
                    || n.spec.as_ref().is_some_and(|s| {
                        s.taints
                            .iter()
                            .flatten()
                            .any(|t| t.key == "ToBeDeletedByClusterAutoscaler")
                    })
            }
            _ => false,
        })
}

/// What the health endpoints read.
pub(crate) struct Context {
    pub node: String,
    pub state: watch::Receiver<Published>,
    /// The proxy's sync health; `None` when the agent runs no proxy.
    pub proxy: Option<Arc<SyncHealth>>,
    pub timeout: Duration,
    pub progress: Arc<Progress>,
    /// Whether the source is in step (the Kubernetes API source is stale
    /// while its watches fail; the last good state keeps being served).
    pub source: watch::Receiver<ferry_source::SourceHealth>,
}

/// `/healthz`: the proxy's sync health and `nodeEligible`, as kube-proxy
/// (load balancers probe it; a DNS fault must not take the node out of
/// rotation). `/livez`: the proxy's sync health. `/readyz`: every enabled
/// component has applied a state, and the proxy is healthy.
pub(crate) async fn serve(listener: TcpListener, ctx: Context) {
    let ctx = Arc::new(ctx);
    ferry_httpd::serve(listener, move |req: Request<_>, _peer: Peer| {
        let ctx = ctx.clone();
        let published = ctx.state.borrow().clone();
        async move {
            let path = req.uri().path();
            let verdict = ctx.proxy.as_ref().map(|h| h.verdict(ctx.timeout));
            let (healthy, reason, last_updated) = match &verdict {
                Some(v) => (v.healthy, v.reason.clone(), v.last_updated),
                None => (true, None, Some(published.at)),
            };
            let eligible = node_eligible(&published, &ctx.node);
            let waiting = ctx.progress.waiting();
            let mut body = serde_json::json!({
                "lastUpdated": last_updated.map(rfc3339),
                "currentTime": rfc3339(SystemTime::now()),
                "nodeEligible": eligible,
                "nodeName": ctx.node,
                "stateVersion": published.snapshot.state.version(),
                "objects": published.snapshot.state.len(),
                "manifestErrors": published.snapshot.errors.len(),
                "syncedResourceVersion": ctx.progress.synced_resource_version(),
            });
            let source = ctx.source.borrow().clone();
            if let Some(since) = source.stale_since {
                body["sourceStaleSince"] = rfc3339(since).into();
                body["sourceStaleReason"] = source.reason.unwrap_or_default().into();
            }
            let (ok, why) = match path {
                // Nothing programmed from the cluster yet: a load balancer
                // must not send traffic here, nor may the node count as ready.
                "/healthz" | "/readyz" if !published.listed => (
                    false,
                    Some(format!(
                        "the source has no state yet: {}",
                        body["sourceStaleReason"].as_str().unwrap_or("starting")
                    )),
                ),
                "/healthz" if !eligible => (false, Some("the node is being deleted".to_string())),
                "/readyz" if !waiting.is_empty() => (
                    false,
                    Some(format!("not programmed yet: {}", waiting.join(", "))),
                ),
                _ => (healthy, reason),
            };
            if let Some(why) = why {
                body["reason"] = why.into();
            }
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            match path {
                "/healthz" | "/readyz" | "/livez" => {
                    respond(status, "application/json", format!("{body}\n"))
                }
                _ => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found: try /healthz, /readyz, /livez\n",
                ),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_088_800);
        assert_eq!(rfc3339(t), "2025-11-25T16:40:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
