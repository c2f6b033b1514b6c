//! The proxy's sync health, as kube-proxy's proxier health server keeps
//! it: when the rules were last programmed, the oldest change still
//! waiting, and the error of the last sync if it failed. The agent's
//! `/healthz` and the health-check node ports report it. Pure state.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The proxy's sync health, as kube-proxy's proxier health server keeps
/// it: when the rules were last programmed, the oldest change still
/// waiting, and the error of the last sync if it failed.
#[derive(Debug, Default)]
pub struct SyncHealth {
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
pub struct Verdict {
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
    pub fn queued(&self) {
        self.with(|s| {
            s.oldest_queued.get_or_insert_with(Instant::now);
        });
    }

    /// Everything received so far is programmed.
    pub fn synced(&self) {
        self.with(|s| {
            s.last_updated = Some(SystemTime::now());
            s.oldest_queued = None;
            s.last_error = None;
        });
    }

    /// A sync failed; what it was to program stays queued.
    pub fn failed(&self, error: String) {
        self.with(|s| {
            s.oldest_queued.get_or_insert_with(Instant::now);
            s.last_error = Some(error);
        });
    }

    pub fn failing(&self) -> bool {
        self.with(|s| s.last_error.is_some())
    }

    pub fn verdict(&self, timeout: Duration) -> Verdict {
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

#[cfg(test)]
mod tests {
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
}
