//! UDP services: one flow per client address. A client's first datagram
//! picks the next endpoint (round robin) and opens a socket connected to
//! it; the flow's replies go back to the client from the port it sent to.
//! A flow that carried nothing either way for the idle timeout is closed,
//! so a client sending again later may get another endpoint. Flows keep
//! the endpoint they started with when the table changes.
//!
//! Touches the network: the socket it is given, UDP to endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;

use super::server::L4Settings;
use super::table::L4Backend;

/// The largest datagram carried.
const MAX_DATAGRAM: usize = 65_535;

pub(crate) struct Flow {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    /// The task carrying replies back.
    replies: tokio::task::AbortHandle,
}

/// The flows of one listening socket.
pub(crate) type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

pub(crate) fn flows() -> Flows {
    Arc::new(Mutex::new(HashMap::new()))
}

pub(crate) fn count(flows: &Flows) -> usize {
    flows.lock().map_or(0, |f| f.len())
}

/// Ends every flow (the port is no longer served).
pub(crate) fn close_all(flows: &Flows) {
    if let Ok(mut f) = flows.lock() {
        for (_, flow) in f.drain() {
            flow.replies.abort();
        }
    }
}

/// Serves `socket` until the task is dropped.
pub(crate) async fn serve(
    socket: UdpSocket,
    backend: Arc<ArcSwap<L4Backend>>,
    settings: L4Settings,
    flows: Flows,
) {
    let socket = Arc::new(socket);
    let epoch = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "L4 UDP receive failed");
                continue;
            }
        };
        let now = epoch.elapsed().as_millis() as u64;
        let existing = flows.lock().ok().and_then(|f| {
            f.get(&client)
                .map(|flow| (flow.upstream.clone(), flow.last.clone()))
        });
        let upstream = match existing {
            Some((upstream, last)) => {
                last.store(now, Ordering::Relaxed);
                upstream
            }
            None => match open(&backend.load(), &socket, client, &settings, &flows, epoch).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(client = %client, error = %e, "L4 UDP datagram dropped");
                    continue;
                }
            },
        };
        if let Err(e) = upstream.send(&buf[..n]).await {
            tracing::debug!(client = %client, error = %e, "L4 UDP send to endpoint failed");
        }
    }
}

/// A new flow for `client`: a socket connected to the next endpoint, and
/// a task carrying its replies back until it is idle.
async fn open(
    backend: &L4Backend,
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    settings: &L4Settings,
    flows: &Flows,
    epoch: Instant,
) -> Result<Arc<UdpSocket>, String> {
    let endpoints = &backend.endpoints;
    if endpoints.is_empty() {
        return Err(format!("Service {}: no ready endpoints", backend.target));
    }
    let addr = endpoints[backend.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|e: std::net::AddrParseError| e.to_string())?;
    let upstream = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    upstream.connect(addr).await.map_err(|e| e.to_string())?;
    let upstream = Arc::new(upstream);
    let last = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
    let task = tokio::spawn(replies(
        upstream.clone(),
        socket.clone(),
        client,
        last.clone(),
        settings.udp_idle_timeout,
        flows.clone(),
        epoch,
    ));
    if let Ok(mut f) = flows.lock() {
        f.insert(
            client,
            Flow {
                upstream: upstream.clone(),
                last,
                replies: task.abort_handle(),
            },
        );
    }
    Ok(upstream)
}

/// Carries an endpoint's replies to the client until the flow is idle.
async fn replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    idle: Duration,
    flows: Flows,
    epoch: Instant,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let quiet_until = since + idle;
        let now = epoch.elapsed();
        if now >= quiet_until {
            break;
        }
        match tokio::time::timeout(quiet_until - now, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                let _ = socket.send_to(&buf[..n], client).await;
            }
            // An ICMP error (nothing listening there): the flow stays
            // until idle, as the client may send again.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            // Checked again at the top: the client may have sent meanwhile.
            Err(_) => {}
        }
    }
    if let Ok(mut f) = flows.lock()
        && f.get(&client)
            .is_some_and(|flow| Arc::ptr_eq(&flow.upstream, &upstream))
    {
        f.remove(&client);
    }
}
