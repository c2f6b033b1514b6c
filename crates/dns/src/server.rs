//! The sockets: one receive loop per UDP socket (answers from the index and
//! cache hits are written inline, with no task per packet), one task per TCP
//! connection, and a task per forwarded query (bounded in number).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::Config;
use crate::answer::{self, Outcome};
use crate::cache::Cache;
use crate::index::{Index, Zone};
use crate::metrics::Metrics;
use crate::upstream;
use crate::wire::{self, Rcode};

/// Forwarded queries in flight at once, as CoreDNS's `max_concurrent 1000`;
/// beyond it a query is REFUSED rather than queued.
const MAX_IN_FLIGHT: usize = 1000;
/// A TCP connection idle this long is closed (CoreDNS: 10 s).
const TCP_IDLE: Duration = Duration::from_secs(10);

pub(crate) struct Shared {
    pub config: Config,
    pub zones: Vec<Zone>,
    pub index: ArcSwapOption<Index>,
    pub cache: Mutex<Cache>,
    pub metrics: Metrics,
    in_flight: Arc<Semaphore>,
    started: Instant,
    last_malformed_log: AtomicU64,
    malformed_unlogged: AtomicU64,
}

/// What to do with a packet after the inline pass.
pub(crate) enum Handled {
    Reply,
    Drop,
    Slow(Slow),
}

pub(crate) enum Slow {
    Forward,
    Chase {
        target: Box<[u8]>,
        cname_rr: Box<[u8]>,
    },
}

impl Shared {
    pub fn new(config: Config, zones: Vec<Zone>, metrics: Metrics) -> Shared {
        let cache = Cache::new(config.cache_entries, config.cache_bytes);
        Shared {
            config,
            zones,
            index: ArcSwapOption::empty(),
            cache: Mutex::new(cache),
            metrics,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            started: Instant::now(),
            last_malformed_log: AtomicU64::new(u64::MAX),
            malformed_unlogged: AtomicU64::new(0),
        }
    }

    /// Answers what can be answered without waiting: the zones, cache hits,
    /// errors. `udp`: the answer must fit the client's UDP size.
    pub fn handle(&self, packet: &[u8], udp: bool, out: &mut Vec<u8>) -> Handled {
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(m) => {
                self.malformed(&m);
                return if wire::malformed_answer(out, packet, &m) {
                    Handled::Reply
                } else {
                    Handled::Drop
                };
            }
        };
        self.metrics.request(q.qtype, udp);
        let index = self.index.load();
        match answer::answer(&q, index.as_deref(), &self.zones, out) {
            Outcome::Answered => {}
            Outcome::Forward if self.config.upstreams.is_empty() => {
                wire::begin(out, &q, Rcode::Refused, false);
            }
            Outcome::Forward => {
                let hit = self
                    .cache
                    .lock()
                    .is_ok_and(|mut c| c.get(&q, Instant::now(), out));
                if !hit {
                    self.metrics.cache_misses.inc();
                    return Handled::Slow(Slow::Forward);
                }
                self.metrics.cache_hits.inc();
            }
            Outcome::Chase { target, cname_rr } => {
                return Handled::Slow(Slow::Chase { target, cname_rr });
            }
        }
        if udp {
            wire::truncate(out, q.question_end, q.edns.is_some(), q.udp_limit());
        }
        Handled::Reply
    }

    /// Answers what needs upstream. Returns false when nothing is to be sent.
    pub async fn slow(&self, packet: &[u8], udp: bool, job: Slow, out: &mut Vec<u8>) -> bool {
        let Ok(q) = wire::parse_query(packet) else {
            return false;
        };
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            wire::begin(out, &q, Rcode::Refused, false);
            return true;
        };
        match job {
            Slow::Forward => match self.forward(packet).await {
                Some(answer) => {
                    *out = answer;
                    // Upstream may change the case; the client gets its own.
                    if out.len() >= q.question_end {
                        out[12..q.question_end].copy_from_slice(&packet[12..q.question_end]);
                    }
                }
                None => self.servfail(&q, out),
            },
            Slow::Chase { target, cname_rr } => {
                let target_query = question_for(&q, &target);
                let up = self.forward(&target_query).await;
                match answer::chased_answer(packet, &cname_rr, up.as_deref()) {
                    Some(a) => *out = a,
                    None => self.servfail(&q, out),
                }
            }
        }
        if udp {
            wire::truncate(out, q.question_end, q.edns.is_some(), q.udp_limit());
        }
        true
    }

    fn servfail(&self, q: &wire::Query<'_>, out: &mut Vec<u8>) {
        wire::begin(out, q, Rcode::ServFail, false);
        if q.edns.is_some() {
            wire::push_opt(out);
        }
    }

    /// Upstream's answer to `query`, from the cache when it holds one.
    async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        let q = wire::parse_query(query).ok()?;
        let mut out = Vec::new();
        if self
            .cache
            .lock()
            .is_ok_and(|mut c| c.get(&q, Instant::now(), &mut out))
        {
            return Some(out);
        }
        match upstream::exchange(&self.config.upstreams, query, self.config.upstream_timeout).await
        {
            Ok(answer) => {
                if let Ok(mut c) = self.cache.lock() {
                    c.put(&q, &answer, Instant::now());
                    self.metrics.cache_entries.set(c.len() as i64);
                }
                Some(answer)
            }
            Err(e) => {
                self.metrics.forward_errors.inc();
                tracing::debug!(error = %e, name = %wire::dotted(q.name.wire()), "forwarding failed");
                None
            }
        }
    }

    /// Counts a malformed packet and logs at most one line a second.
    fn malformed(&self, m: &wire::Malformed) {
        self.metrics.malformed.inc();
        let now = self.started.elapsed().as_secs();
        let last = self.last_malformed_log.load(Ordering::Relaxed);
        if last != u64::MAX && now <= last {
            self.malformed_unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self
            .last_malformed_log
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let skipped = self.malformed_unlogged.swap(0, Ordering::Relaxed);
            let reason = match m {
                wire::Malformed::Drop(r) => r,
                wire::Malformed::Respond { reason, .. } => reason,
            };
            tracing::warn!(
                reason,
                not_logged_since_last = skipped,
                "malformed DNS request"
            );
        }
    }
}

/// A query for `target` with the client's flags, type, class and EDNS.
fn question_for(q: &wire::Query<'_>, target: &[u8]) -> Vec<u8> {
    let mut p = q.packet[..12].to_vec();
    p[6..12].fill(0);
    p.extend_from_slice(target);
    p.extend_from_slice(&q.qtype.to_be_bytes());
    p.extend_from_slice(&q.qclass.to_be_bytes());
    if let Some(e) = q.edns {
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&e.udp_size.to_be_bytes());
        p.extend_from_slice(&[0, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
        p[11] = 1;
    }
    p
}

pub(crate) async fn serve_udp(shared: Arc<Shared>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        let start = Instant::now();
        match shared.handle(&buf[..n], true, &mut out) {
            Handled::Reply => {
                shared.metrics.response(&out);
                if let Err(e) = sock.send_to(&out, peer).await {
                    tracing::debug!(error = %e, %peer, "UDP send failed");
                }
                shared
                    .metrics
                    .duration
                    .observe(start.elapsed().as_secs_f64());
            }
            Handled::Drop => {}
            Handled::Slow(job) => {
                let packet = buf[..n].to_vec();
                let (shared, sock) = (shared.clone(), sock.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    if shared.slow(&packet, true, job, &mut out).await {
                        shared.metrics.response(&out);
                        let _ = sock.send_to(&out, peer).await;
                        shared
                            .metrics
                            .duration
                            .observe(start.elapsed().as_secs_f64());
                    }
                });
            }
        }
    }
}

pub(crate) async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(tcp_connection(shared.clone(), stream, peer));
            }
            Err(e) => {
                tracing::debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn tcp_connection(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let mut packet = Vec::new();
    let mut out = Vec::with_capacity(4096);
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            _ => return,
        };
        packet.resize(len, 0);
        if tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .is_err()
        {
            return;
        }
        let start = Instant::now();
        let send = match shared.handle(&packet, false, &mut out) {
            Handled::Reply => true,
            Handled::Drop => false,
            Handled::Slow(job) => shared.slow(&packet, false, job, &mut out).await,
        };
        if !send {
            continue;
        }
        shared.metrics.response(&out);
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len().min(u16::MAX as usize) as u16).to_be_bytes());
        framed.extend_from_slice(&out[..out.len().min(u16::MAX as usize)]);
        if let Err(e) = stream.write_all(&framed).await {
            tracing::debug!(error = %e, %peer, "TCP send failed");
            return;
        }
        shared
            .metrics
            .duration
            .observe(start.elapsed().as_secs_f64());
    }
}
