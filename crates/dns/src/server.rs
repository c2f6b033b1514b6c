//! The sockets: one receive loop per UDP socket (answers from the index and
//! cache hits are written inline, with no task per packet), one task per TCP
//! connection, and a task per forwarded query. Everything a client can make
//! the server hold is bounded by `Config`: forwarded queries in flight
//! (`max_forwards`), TCP connections (`tcp_max_connections`), and the time
//! a TCP connection may sit idle, send half a query or not read its answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

use crate::Config;
use crate::answer::{self, Outcome};
use crate::cache::Cache;
use crate::index::{Index, Zone};
use crate::metrics::Metrics;
use crate::upstream;
use crate::wire::{self, Rcode};

/// The largest DNS message over TCP: its length prefix is 16 bits.
const TCP_MAX_MESSAGE: usize = u16::MAX as usize;

pub(crate) struct Shared {
    pub config: Config,
    pub zones: Vec<Zone>,
    pub index: ArcSwapOption<Index>,
    /// Held while a new index is made, so no change is made twice or lost.
    pub writer: Mutex<()>,
    pub cache: Mutex<Cache>,
    pub metrics: Metrics,
    /// One permit per forwarded query in flight (`max_forwards`).
    in_flight: Arc<Semaphore>,
    /// One permit per open TCP connection (`tcp_max_connections`).
    tcp_connections: Arc<Semaphore>,
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
        let permits = |n: usize| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        Shared {
            in_flight: permits(config.max_forwards),
            tcp_connections: permits(config.tcp_max_connections),
            config,
            zones,
            index: ArcSwapOption::empty(),
            writer: Mutex::new(()),
            cache: Mutex::new(cache),
            metrics,
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
        fit(out, &q, udp);
        Handled::Reply
    }

    /// A slot for one forwarded query, or None when `max_forwards` are in flight.
    pub fn forward_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// The answer to a query that needs upstream when no slot is free:
    /// SERVFAIL now, so a flood of forwarded names queues nothing. Returns
    /// false when nothing is to be sent.
    pub fn overloaded(&self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        let Ok(q) = wire::parse_query(packet) else {
            return false;
        };
        self.metrics.forward_rejected.inc();
        self.servfail(&q, out);
        true
    }

    /// Answers what needs upstream, holding `_permit` (from
    /// [`Shared::forward_permit`]) until done. Returns false when nothing is
    /// to be sent.
    pub async fn slow(
        &self,
        packet: &[u8],
        udp: bool,
        job: Slow,
        _permit: OwnedSemaphorePermit,
        out: &mut Vec<u8>,
    ) -> bool {
        let Ok(q) = wire::parse_query(packet) else {
            return false;
        };
        match job {
            Slow::Forward => {
                let up = wire::upstream_query(&q, wire::question_name(&q));
                match self.forward(&up).await {
                    // `forward` checked that the answer holds this question.
                    Some(answer) if answer.len() >= q.question_end => {
                        *out = answer;
                        out[..2].copy_from_slice(&q.id.to_be_bytes());
                        // Upstream may change the case; the client gets its own.
                        out[12..q.question_end].copy_from_slice(&packet[12..q.question_end]);
                        wire::copy_rd(out, &q);
                    }
                    _ => self.servfail(&q, out),
                }
            }
            Slow::Chase { target, cname_rr } => {
                let up = self.forward(&wire::upstream_query(&q, &target)).await;
                match answer::chased_answer(packet, &cname_rr, up.as_deref()) {
                    Some(a) => *out = a,
                    None => self.servfail(&q, out),
                }
            }
        }
        fit(out, &q, udp);
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

/// Makes an answer fit its transport: the client's UDP size (cut to the
/// question with TC, so it retries over TCP), or TCP's 65535 bytes (whole
/// records dropped, with TC).
fn fit(out: &mut Vec<u8>, q: &wire::Query<'_>, udp: bool) {
    if udp {
        wire::truncate(out, q.question_end, q.edns.is_some(), q.udp_limit());
    } else {
        wire::truncate_records(out, q.question_end, q.edns.is_some(), TCP_MAX_MESSAGE);
    }
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
                let Some(permit) = shared.forward_permit() else {
                    if shared.overloaded(&buf[..n], &mut out) {
                        shared.metrics.response(&out);
                        let _ = sock.send_to(&out, peer).await;
                    }
                    continue;
                };
                let packet = buf[..n].to_vec();
                let (shared, sock) = (shared.clone(), sock.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    if shared.slow(&packet, true, job, permit, &mut out).await {
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
            Ok((stream, peer)) => match shared.tcp_connections.clone().try_acquire_owned() {
                Ok(slot) => {
                    tokio::spawn(tcp_connection(shared.clone(), stream, peer, slot));
                }
                Err(_) => {
                    // Closed at once: a flood of idle connections must not
                    // hold the process's file descriptors.
                    shared.metrics.tcp_rejected.inc();
                    drop(stream);
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves one TCP connection, holding `_slot` until it is closed. Every
/// wait is bounded: the next query's length by the idle timeout, the rest
/// of the query by the read timeout, the answer by the write timeout.
async fn tcp_connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let config = &shared.config;
    let mut packet = Vec::new();
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match timeout(config.tcp_idle_timeout, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            // EOF, a reset, or idle too long.
            _ => return,
        }
        // Zeroed, so no byte of an earlier query can survive into this one.
        packet.clear();
        packet.resize(usize::from(u16::from_be_bytes(len)), 0);
        match timeout(config.tcp_read_timeout, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "TCP query cut short");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TCP query not sent in time");
                return;
            }
        }
        let start = Instant::now();
        let send = match shared.handle(&packet, false, &mut out) {
            Handled::Reply => true,
            Handled::Drop => false,
            Handled::Slow(job) => match shared.forward_permit() {
                Some(permit) => shared.slow(&packet, false, job, permit, &mut out).await,
                None => shared.overloaded(&packet, &mut out),
            },
        };
        if !send {
            continue;
        }
        // `handle` and `slow` fit TCP answers into 65535 bytes; anything
        // else would be cut mid-record, so it is not sent.
        let Ok(n) = u16::try_from(out.len()) else {
            tracing::warn!(len = out.len(), "TCP answer over 65535 bytes not sent");
            return;
        };
        shared.metrics.response(&out);
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&out);
        match timeout(config.tcp_write_timeout, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "TCP send failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TCP answer not taken in time");
                return;
            }
        }
        shared
            .metrics
            .duration
            .observe(start.elapsed().as_secs_f64());
    }
}
