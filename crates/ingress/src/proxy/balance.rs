//! Which endpoint gets a request: round robin (the default, as in
//! ingress-nginx) or peak-EWMA with power of two choices (ingress-nginx's
//! `load-balance: ewma`), skipping endpoints already tried for this request
//! and endpoints marked down by passive health: an endpoint that refused or
//! timed out a connection is left alone for `down_for`, unless every
//! endpoint is down (then they are all tried, as nginx does).
//!
//! The per-endpoint state lives here, keyed by address, not in the route
//! table, so it survives table swaps. Touches nothing but clocks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::routes::Backend;

/// How endpoints are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Lowest (EWMA response time × (requests in flight + 1)) of two picked
    /// at random.
    Ewma,
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round_robin" | "round-robin" => Ok(Balance::RoundRobin),
            "ewma" => Ok(Balance::Ewma),
            other => Err(format!("{other:?}: balancing is round_robin or ewma")),
        }
    }
}

/// The EWMA's decay time (ingress-nginx uses 10 s).
const DECAY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct Stats {
    /// Microseconds since [`Endpoints::epoch`] until which the endpoint is
    /// skipped; 0: up.
    down_until: AtomicU64,
    /// Response time EWMA, microseconds.
    ewma_us: AtomicU64,
    /// When the EWMA was last updated, microseconds since the epoch.
    updated_us: AtomicU64,
    pub in_flight: AtomicU32,
}

pub(crate) struct Endpoints {
    epoch: Instant,
    stats: RwLock<HashMap<SocketAddr, Arc<Stats>>>,
    down_for: Duration,
    mode: Balance,
    rng: AtomicU64,
}

impl Endpoints {
    pub fn new(mode: Balance, down_for: Duration) -> Endpoints {
        Endpoints {
            epoch: Instant::now(),
            stats: RwLock::default(),
            down_for,
            mode,
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    pub fn stats(&self, addr: SocketAddr) -> Arc<Stats> {
        if let Some(s) = self.stats.read().ok().and_then(|m| m.get(&addr).cloned()) {
            return s;
        }
        let mut map = match self.stats.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(addr).or_default().clone()
    }

    fn is_up(&self, addr: SocketAddr, now: u64) -> bool {
        self.stats
            .read()
            .ok()
            .and_then(|m| m.get(&addr).map(|s| s.down_until.load(Ordering::Relaxed)))
            .is_none_or(|until| until <= now)
    }

    /// Passive health: skip `addr` for a while.
    pub fn mark_down(&self, addr: SocketAddr) {
        let until = self.now_us() + self.down_for.as_micros() as u64;
        self.stats(addr).down_until.store(until, Ordering::Relaxed);
    }

    /// Records a response time for EWMA.
    pub fn observe(&self, stats: &Stats, took: Duration) {
        if self.mode != Balance::Ewma {
            return;
        }
        let now = self.now_us();
        let last = stats.updated_us.swap(now, Ordering::Relaxed);
        let old = stats.ewma_us.load(Ordering::Relaxed) as f64;
        let sample = took.as_micros() as f64;
        let w = (-((now.saturating_sub(last)) as f64) / DECAY.as_micros() as f64).exp();
        let next = if old == 0.0 {
            sample
        } else {
            old * w + sample * (1.0 - w)
        };
        stats.ewma_us.store(next as u64, Ordering::Relaxed);
    }

    /// The next endpoint of `backend` not in `tried`; None when every
    /// endpoint has been tried.
    pub fn pick(&self, backend: &Backend, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let eps = &backend.endpoints;
        if eps.is_empty() {
            return None;
        }
        let now = self.now_us();
        let untried = |a: &SocketAddr| !tried.contains(a);
        let candidates: Vec<SocketAddr> = match self.mode {
            Balance::RoundRobin => {
                let start = backend.next.fetch_add(1, Ordering::Relaxed);
                let n = eps.len();
                let ordered = (0..n).map(|i| eps[(start + i) % n]);
                let mut fallback = None;
                for a in ordered.filter(untried) {
                    if self.is_up(a, now) {
                        return Some(a);
                    }
                    fallback.get_or_insert(a);
                }
                return fallback;
            }
            Balance::Ewma => eps.iter().copied().filter(untried).collect(),
        };
        let up: Vec<SocketAddr> = candidates
            .iter()
            .copied()
            .filter(|a| self.is_up(*a, now))
            .collect();
        let pool = if up.is_empty() { candidates } else { up };
        match pool.len() {
            0 => None,
            1 => Some(pool[0]),
            n => {
                let r = self.random();
                let a = pool[(r % n as u64) as usize];
                let mut b = pool[((r >> 32) % (n as u64 - 1)) as usize];
                if b == a {
                    b = pool[n - 1];
                }
                Some(if self.score(a) <= self.score(b) { a } else { b })
            }
        }
    }

    fn score(&self, addr: SocketAddr) -> u64 {
        let s = self.stats(addr);
        let ewma = s.ewma_us.load(Ordering::Relaxed).max(1);
        ewma * (u64::from(s.in_flight.load(Ordering::Relaxed)) + 1)
    }

    /// splitmix64 on a shared counter: cheap, good enough to spread picks.
    fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_model::NamespacedName;

    use super::*;
    use crate::routes::{PortRef, ServiceRef};

    fn backend(n: u8) -> Backend {
        let eps: Vec<SocketAddr> = (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect();
        Backend::new(
            None,
            ServiceRef {
                service: NamespacedName::new("default", "web"),
                port: PortRef::Number(80),
            },
            eps.into(),
        )
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_a_down_endpoint() {
        let e = Endpoints::new(Balance::RoundRobin, Duration::from_secs(60));
        let b = backend(3);
        let mut count = BTreeMap::new();
        for _ in 0..30 {
            *count.entry(e.pick(&b, &[]).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(count.values().collect::<Vec<_>>(), [&10, &10, &10]);
        e.mark_down(b.endpoints[1]);
        for _ in 0..10 {
            assert_ne!(e.pick(&b, &[]), Some(b.endpoints[1]));
        }
        // Every endpoint down: they are tried all the same.
        e.mark_down(b.endpoints[0]);
        e.mark_down(b.endpoints[2]);
        assert!(e.pick(&b, &[]).is_some());
    }

    #[test]
    fn a_retry_never_picks_an_endpoint_already_tried() {
        for mode in [Balance::RoundRobin, Balance::Ewma] {
            let e = Endpoints::new(mode, Duration::from_secs(60));
            let b = backend(3);
            let first = e.pick(&b, &[]).unwrap();
            let second = e.pick(&b, &[first]).unwrap();
            let third = e.pick(&b, &[first, second]).unwrap();
            assert!(first != second && second != third && first != third);
            assert_eq!(e.pick(&b, &[first, second, third]), None);
        }
    }

    #[test]
    fn ewma_prefers_the_faster_endpoint() {
        let e = Endpoints::new(Balance::Ewma, Duration::from_secs(60));
        let b = backend(2);
        e.observe(&e.stats(b.endpoints[0]), Duration::from_millis(50));
        e.observe(&e.stats(b.endpoints[1]), Duration::from_millis(1));
        let fast = (0..100)
            .filter(|_| e.pick(&b, &[]) == Some(b.endpoints[1]))
            .count();
        assert_eq!(fast, 100);
    }
}
