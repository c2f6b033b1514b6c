//! `/healthz`, `/readyz`, `/livez` as kube-proxy serves them on 10256.
//! The proxy is healthy while no change has waited longer than the health
//! timeout to be programmed and its last sync did not fail; `/healthz`
//! also needs the node to be eligible (not being deleted, not tainted for
//! deletion by the cluster autoscaler), because cloud load balancers probe
//! it to decide where to send traffic. The body says when the rules were
//! last updated and, when unhealthy, why.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ferry_model::{Kind, Object};

use ferry_httpd::{Peer, Request, StatusCode, respond};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Published;

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proxy's sync health, as kube-proxy's proxier health server keeps
/// it: when the rules were last programmed, the oldest change still
/// waiting, and the error of the last sync if it failed.
#[derive(Debug, Default)]
pub(crate) struct SyncHealth {
    inner: Mutex<SyncState>,
}

#[derive(Debug, Default)]
struct SyncState {
    last_updated: Option<SystemTime>,
    oldest_queued: Option<Instant>,
    last_error: Option<String>,
}

/// What `/healthz` says of the proxy.
#[derive(Debug, PartialEq)]
pub(crate) struct Verdict {
    pub healthy: bool,
    pub synced_once: bool,
    pub last_updated: Option<SystemTime>,
    pub reason: Option<String>,
}

impl SyncHealth {
    fn with<T>(&self, f: impl FnOnce(&mut SyncState) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; the
        // fields are plain values, still usable.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A change arrived that is not programmed yet.
    pub(crate) fn queued(&self) {
        self.with(|s| {
            s.oldest_queued.get_or_insert_with(Instant::now);
        });
    }

    /// Everything received so far is programmed.
    pub(crate) fn synced(&self) {
        self.with(|s| {
            s.last_updated = Some(SystemTime::now());
            s.oldest_queued = None;
            s.last_error = None;
        });
    }

    /// A sync failed; what it was to program stays queued.
    pub(crate) fn failed(&self, error: String) {
        self.with(|s| {
            s.oldest_queued.get_or_insert_with(Instant::now);
            s.last_error = Some(error);
        });
    }

    pub(crate) fn failing(&self) -> bool {
        self.with(|s| s.last_error.is_some())
    }

    pub(crate) fn verdict(&self, timeout: Duration) -> Verdict {
        self.with(|s| {
            let waited = s.oldest_queued.map(|t| t.elapsed());
            let reason = if let Some(e) = &s.last_error {
                Some(format!("the last sync failed: {e}"))
            } else {
                waited.filter(|w| *w >= timeout).map(|w| {
                    format!(
                        "a change has waited {:.1}s to be programmed (limit {}s)",
                        w.as_secs_f64(),
                        timeout.as_secs()
                    )
                })
            };
            Verdict {
                healthy: reason.is_none(),
                synced_once: s.last_updated.is_some(),
                last_updated: s.last_updated,
                reason,
            }
        })
    }
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

pub(crate) async fn serve(
    listener: TcpListener,
    node: String,
    state: watch::Receiver<Published>,
    health: std::sync::Arc<SyncHealth>,
    timeout: Duration,
) {
    ferry_httpd::serve(listener, move |req: Request<_>, _peer: Peer| {
        let published = state.borrow().clone();
        let node = node.clone();
        let verdict = health.verdict(timeout);
        async move {
            let path = req.uri().path();
            let eligible = node_eligible(&published, &node);
            let mut body = serde_json::json!({
                "lastUpdated": verdict.last_updated.map(rfc3339),
                "currentTime": rfc3339(SystemTime::now()),
                "nodeEligible": eligible,
                "nodeName": node,
                "stateVersion": published.snapshot.state.version(),
                "objects": published.snapshot.state.len(),
                "manifestErrors": published.snapshot.errors.len(),
                "syncedResourceVersion": published.synced_resource_version,
            });
            let (ok, why) = match path {
                "/healthz" if !eligible => (false, Some("the node is being deleted".to_string())),
                "/readyz" if !verdict.synced_once => (
                    false,
                    Some("the rules have not been programmed yet".to_string()),
                ),
                _ => (verdict.healthy, verdict.reason.clone()),
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

    /// kube-proxy's health timeout: twice its default sync period of 30 s.
    const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn a_failed_sync_is_unhealthy_at_once_and_a_waiting_change_after_the_timeout() {
        let h = SyncHealth::default();
        assert!(!h.verdict(DEFAULT_HEALTH_TIMEOUT).synced_once);
        h.synced();
        assert!(h.verdict(DEFAULT_HEALTH_TIMEOUT).healthy);
        h.queued();
        assert!(
            h.verdict(DEFAULT_HEALTH_TIMEOUT).healthy,
            "queued, within the timeout"
        );
        assert!(
            !h.verdict(Duration::ZERO).healthy,
            "queued past the timeout"
        );
        h.synced();
        h.failed("iptables-restore: line 3 failed".into());
        let v = h.verdict(DEFAULT_HEALTH_TIMEOUT);
        assert!(!v.healthy);
        assert!(v.reason.unwrap().contains("line 3 failed"));
        h.synced();
        assert!(h.verdict(Duration::ZERO).healthy);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_088_800);
        assert_eq!(rfc3339(t), "2025-11-25T16:40:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
