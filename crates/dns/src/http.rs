//! CoreDNS-style health endpoints and metrics over HTTP: `/health` answers
//! `OK` while the process runs, `/ready` is 200 once the first cluster
//! state is loaded (503 before), `/metrics` is the Prometheus text.

use std::sync::Arc;

use ferry_httpd::{Peer, Request, StatusCode, respond};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::Server;

/// Serves health, readiness and `registry` on `listener` until dropped.
pub async fn serve_http(listener: TcpListener, server: Server, registry: Arc<Registry>) {
    serve(listener, server, Some(registry)).await
}

/// Serves only `/health` and `/ready` (where the metrics are served
/// elsewhere, as in the agent's `/metrics`).
pub async fn serve_health(listener: TcpListener, server: Server) {
    serve(listener, server, None).await
}

async fn serve(listener: TcpListener, server: Server, registry: Option<Arc<Registry>>) {
    ferry_httpd::serve(listener, move |req: Request<_>, _peer: Peer| {
        let server = server.clone();
        let registry = registry.clone();
        async move {
            match req.uri().path() {
                "/health" => respond(StatusCode::OK, "text/plain", "OK"),
                "/ready" if server.is_ready() => respond(StatusCode::OK, "text/plain", "OK"),
                "/ready" => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no cluster state loaded yet",
                ),
                "/metrics" if registry.is_some() => {
                    let Some(registry) = registry else {
                        return respond(StatusCode::NOT_FOUND, "text/plain", "not found");
                    };
                    let mut text = String::new();
                    if let Some(c) = server.cache_len() {
                        server.shared.metrics.cache_entries.set(c as i64);
                    }
                    match encode(&mut text, &registry) {
                        Ok(()) => respond(
                            StatusCode::OK,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            text,
                        ),
                        Err(e) => respond(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            e.to_string(),
                        ),
                    }
                }
                _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found"),
            }
        }
    })
    .await
}
