//! TCP services: every accepted connection goes to the next endpoint of
//! its port's backend (round robin); a connect that fails or times out
//! moves on to the next endpoint (up to `tries`); then bytes are copied
//! both ways until either side closes. The backend is read once per
//! connection, so a swapped table never touches a connection under way.
//!
//! Touches the network: the listener it is given, TCP to endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::server::L4Settings;
use super::table::L4Backend;
use crate::proxy_protocol;

/// Accepts on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    backend: Arc<ArcSwap<L4Backend>>,
    settings: L4Settings,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "L4 accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let backend = backend.load_full();
        tokio::spawn(async move {
            if let Err(e) = proxy(client, peer, &backend, &settings).await {
                tracing::debug!(client = %peer, service = %backend.target, error = %e, "L4 TCP connection not proxied");
            }
        });
    }
}

async fn proxy(
    mut client: TcpStream,
    peer: SocketAddr,
    backend: &L4Backend,
    settings: &L4Settings,
) -> Result<(), String> {
    let local = client.local_addr().map_err(|e| e.to_string())?;
    let (src, dst) = if backend.decode_proxy {
        proxy_protocol::read(&mut client)
            .await?
            .unwrap_or((peer, local))
    } else {
        (peer, local)
    };
    let mut upstream = connect(backend, settings).await?;
    if backend.encode_proxy {
        upstream
            .write_all(proxy_protocol::header(src, dst).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The next endpoint that takes the connection.
async fn connect(backend: &L4Backend, settings: &L4Settings) -> Result<TcpStream, String> {
    let endpoints = &backend.endpoints;
    if endpoints.is_empty() {
        return Err("no ready endpoints".into());
    }
    let first = backend.next.fetch_add(1, Ordering::Relaxed);
    let mut last = String::new();
    for i in 0..endpoints.len().min(settings.tries.max(1)) {
        let addr = endpoints[(first + i) % endpoints.len()];
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: connect timed out"),
        }
    }
    Err(format!("no endpoint took the connection (last: {last})"))
}
