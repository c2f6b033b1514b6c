//! The ingress's own status port when it runs alone (`ferry ingress
//! --metrics ADDR`, as ingress-nginx's controller port 10254): `/healthz`
//! answers 200 once a route table built from the source is in use and 503
//! before it and while draining, `/metrics` the Prometheus registry. In the
//! agent the agent's `/healthz`, `/readyz` and `/metrics` cover the ingress.
//!
//! Touches the network: serves HTTP on the given listener.

use std::sync::Arc;

use ferry_httpd::{Peer, Request, StatusCode, respond};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::component::IngressHandle;

/// Serves `/healthz` and `/metrics` for `handle` until the task is dropped.
pub async fn serve(listener: TcpListener, handle: Arc<IngressHandle>, registry: Arc<Registry>) {
    ferry_httpd::serve(listener, move |req: Request<_>, _peer: Peer| {
        let handle = handle.clone();
        let registry = registry.clone();
        async move {
            match req.uri().path() {
                "/healthz" if handle.gateway.draining() => {
                    respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
                }
                "/healthz" => match *handle.applied.borrow() {
                    Some(version) => respond(
                        StatusCode::OK,
                        "text/plain",
                        format!("ok: routing by state version {version}\n"),
                    ),
                    None => respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "no route table from the source yet\n",
                    ),
                },
                "/metrics" => {
                    let mut text = String::new();
                    // Writing into a String cannot fail.
                    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                    respond(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    )
                }
                _ => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found: try /healthz or /metrics\n",
                ),
            }
        }
    })
    .await;
}
